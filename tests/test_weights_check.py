"""`scrapbench weights check` and the check `scrapbench run` makes before it generates any data."""

from __future__ import annotations

import pickle

import pytest
import torch
from crafted_torchscript import NEW_MODULE, finishes_within, module_graph, script_pickle, write_script_archive
from official_formats import register_tiny_openai_config, tiny_openai_clip, write_openai_torchscript
from typer.testing import CliRunner

import scrapbench.cli.main as cli
from scrapbench.cli.console import console as cli_console

OFFICIAL_FILES = ("ViT-L-14-336px.pt", "vit_b_16_plus_240-laion400m_e31-8fb26589.pt", "yolov8x-seg.pt",
                  "yolo11x-seg.pt", "sam_vit_h_4b8939.pth", "maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth")


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """No weights anywhere: empty caches and working folder; a console wide enough not to fold paths."""
    import huggingface_hub.constants

    for name in ("home", "torch", "hf", "cwd", "data_cache"):
        (tmp_path / name).mkdir()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("SCRAPBENCH_CACHE", str(tmp_path / "data_cache"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.chdir(tmp_path / "cwd")
    # The one console every command prints through: wide and colourless, so that lines can be matched.
    monkeypatch.setattr(cli_console, "width", 400)
    monkeypatch.setattr(cli_console, "_color_system", None)
    return tmp_path


def _invoke(*args: str):
    result = CliRunner().invoke(cli.app, list(args))
    return result, result.output + (result.stderr if result.stderr_bytes is not None else "")


def test_weights_check_names_every_official_file_of_the_paper_preset(isolated):
    result, output = _invoke("weights", "check", "--preset", "paper")
    assert result.exit_code == 1, output
    for name in OFFICIAL_FILES:
        assert name in output, name
    assert "✗ missing" in output and "random init" not in output
    assert "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth" in output
    assert "https://download.pytorch.org/models/maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth" in output
    assert "https://github.com/ultralytics/assets/releases" in output


@pytest.fixture(scope="module")
def openai_archive(tmp_path_factory):
    folder = tmp_path_factory.mktemp("openai")
    register_tiny_openai_config(folder / "configs")
    path = folder / "tiny-openai.pt"
    write_openai_torchscript(path, tiny_openai_clip(seed=1))
    return path


def test_weights_check_verifies_format_architecture_and_checksum(isolated, openai_archive):
    # --weights reaches the paper CLIP as QuickGELU; this tiny file does not fit ViT-L/14@336.
    result, output = _invoke("weights", "check", "--preset", "paper", "-m", "anomalyclip", "--weights",
                             str(openai_archive))
    assert result.exit_code == 1
    assert "ViT-L-14-336-quickgelu, QuickGELU (OpenAI TorchScript archive)" in output
    assert "does not fit ViT-L-14-336-quickgelu" in output and "shape mismatches" in output

    result, output = _invoke("weights", "check", "--preset", "paper", "-m", "anomalyclip", "--set",
                             "anomalyclip.clip_model=scrapbench-test-openai", "--weights", str(openai_archive))
    assert result.exit_code == 0, output
    assert "✓ found" in output and "torchscript" in output and "keys and shapes match" in output
    assert "scrapbench-test-openai-quickgelu, QuickGELU (OpenAI TorchScript archive)" in output
    import hashlib

    assert hashlib.sha256(openai_archive.read_bytes()).hexdigest()[:16] in output
    assert "all 1 weights ready" in output

    result, set_output = _invoke("weights", "check", "--preset", "paper", "-m", "anomalyclip", "--set",
                                 "anomalyclip.clip_model=scrapbench-test-openai", "--set",
                                 f"anomalyclip.clip_pretrained={openai_archive}")  # the --set route
    assert result.exit_code == 0 and "scrapbench-test-openai-quickgelu, QuickGELU" in set_output


def test_run_checks_every_weight_before_it_generates_data(isolated):
    result, output = _invoke("run", "--preset", "paper", "-m", "anomalyclip,yolov8_sam", "--out",
                             str(isolated / "runs"))
    assert result.exit_code == 2, output
    for name in ("ViT-L-14-336px.pt", "yolov8x-seg.pt", "sam_vit_h_4b8939.pth"):
        assert name in output
    assert "nothing was run" in output
    assert not any((isolated / "data_cache").iterdir()), "data was generated before the weights were checked"
    assert not (isolated / "runs").exists()


class _RunsCodeOnLoad:
    def __init__(self, code: str) -> None:
        self.code = code

    def __reduce__(self):
        return exec, (self.code,)


def test_run_refuses_a_crafted_clip_checkpoint_and_runs_nothing(isolated):
    marker = isolated / "marker"
    crafted = isolated / "clip.pt"
    torch.save({"visual.proj": _RunsCodeOnLoad(f"open({str(marker)!r}, 'w').close()")}, crafted)
    result, output = _invoke("run", "--preset", "smoke", "-m", "anomalyclip", "--weights", str(crafted),
                             "--out", str(isolated / "runs"))
    assert result.exit_code == 2, output
    assert "clip.pt could not be read safely" in output and "Unsupported global" in output
    assert not marker.exists()
    assert not any((isolated / "data_cache").iterdir())


@pytest.mark.parametrize("data_pkl, reason", [
    (module_graph([{"me": 0}]), "module 'me' is module <root> again (a cycle or a shared submodule"),
    (script_pickle(NEW_MODULE + pickle.EMPTY_LIST + pickle.BUILD), "built from state of type list"),
], ids=["module containing itself", "BUILD with a list"])
def test_a_crafted_torchscript_archive_is_one_line_in_weights_check_and_run(isolated, data_pkl, reason):
    archive = write_script_archive(isolated / "crafted.pt", data_pkl)
    line = f"{archive} could not be read safely: UnpicklingError: "
    with finishes_within(60):
        result, output = _invoke("weights", "check", "--preset", "smoke", "-m", "anomalyclip", "--weights",
                                 str(archive))
    assert result.exit_code == 1, output
    assert "✗ invalid" in output and "Traceback" not in output
    assert any(line in row and reason in row for row in output.splitlines()), output

    with finishes_within(60):
        result, output = _invoke("run", "--preset", "smoke", "-m", "anomalyclip", "--weights", str(archive),
                                 "--out", str(isolated / "runs"))
    assert result.exit_code == 2, output
    assert any(line in row and reason in row for row in output.splitlines()), output
    assert "nothing was run" in output and "Traceback" not in output
    assert not any((isolated / "data_cache").iterdir()) and not (isolated / "runs").exists()


def test_run_shows_progress_with_eta_while_it_renders_the_synthetic_data(isolated, monkeypatch):
    import scrapbench.run.grid

    monkeypatch.setattr(scrapbench.run.grid, "run_benchmark", lambda *args, **kwargs: [])
    result, output = _invoke("run", "--preset", "smoke", "-m", "winclip", "--seeds", "1", "--out",
                             str(isolated / "runs"))
    assert result.exit_code == 0, output
    assert "synthetic smoke train" in output and "synthetic smoke test" in output
    assert "img/s]" in output and "<" in output  # tqdm's "[elapsed<remaining, rate]"
