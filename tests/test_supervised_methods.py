"""YOLO+SAM and Mask R-CNN: weights from files, clear errors, offline training that writes only to workdir.

The generic contract (shape, dtype, same seed same maps, save/load) is ``test_methods.py``; this file
covers what is specific to the supervised baselines.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from scrapbench.core.method import FitContext, WeightsError
from scrapbench.core.registry import create_method
from scrapbench.methods.common.sam_refiner import SamBoxRefiner, build_sam

REPO = Path(__file__).resolve().parents[1]


def _ctx(workdir: Path, classes, seed: int = 0) -> FitContext:
    return FitContext(seed=seed, device="cpu", workdir=workdir, class_names=tuple(classes), show_progress=False)


# -- SAM -----------------------------------------------------------------------------------------
def test_tiny_sam_checkpoint_loads_through_the_config_path(tmp_path):
    saved = build_sam("tiny", None, seed=3)
    assert saved.weights_info["sam_random_init"] is True
    checkpoint = tmp_path / "sam_tiny.pth"
    torch.save(saved.model.state_dict(), checkpoint)

    loaded = build_sam("tiny", checkpoint, seed=0)  # another seed: weights must come from the file
    assert loaded.weights_info == {"sam_model": "tiny", "sam_checkpoint": str(checkpoint), "sam_random_init": False,
                                   "sam_sha256": hashlib.sha256(checkpoint.read_bytes()).hexdigest(),
                                   "sam_checksum": "none published"}
    for name, value in saved.model.state_dict().items():
        torch.testing.assert_close(loaded.model.state_dict()[name], value, msg=name)
    other_seed = build_sam("tiny", None, seed=0).model.state_dict()
    assert any(not torch.equal(other_seed[k], v) for k, v in saved.model.state_dict().items())


def test_sam_checkpoint_errors_name_the_file(tmp_path):
    with pytest.raises(WeightsError, match=r"sam_vit_b_01ec64\.pth.*sam_model='vit_b'.*dl\.fbaipublicfiles"):
        build_sam("vit_b", tmp_path / "sam_vit_b_01ec64.pth")
    state = build_sam("tiny", None).model.state_dict()
    state.pop("mask_decoder.iou_token.weight")
    torch.save(state, tmp_path / "wrong.pth")
    with pytest.raises(WeightsError, match=r"wrong\.pth does not fit sam_model='tiny'"):
        build_sam("tiny", tmp_path / "wrong.pth")
    (tmp_path / "garbage.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match=r"garbage\.pth could not be read"):
        build_sam("tiny", tmp_path / "garbage.pth")
    with pytest.raises(ValueError, match="unknown SAM architecture"):
        build_sam("vit_xxl", None)


def test_sam_box_refiner_masks_stay_in_their_boxes():
    refiner = SamBoxRefiner(build_sam("tiny", None, seed=0).model, soft_masks=True, clip_to_box=True)
    image = np.random.default_rng(0).integers(0, 255, (40, 56, 3), dtype=np.uint8)
    masks = refiner.masks(image, np.array([[4.0, 6.0, 20.0, 30.0], [30.0, 0.0, 56.0, 40.0]]))
    assert masks.shape == (2, 40, 56) and masks.dtype == np.float32
    assert masks.min() >= 0.0 and masks.max() <= 1.0 and masks[0, 6:30, 4:20].max() > 0
    assert not masks[0, :, 21:].any() and not masks[0, 31:].any()
    assert refiner.masks(image, np.zeros((0, 4))).shape == (0, 40, 56)


# -- missing weights -----------------------------------------------------------------------------
def test_missing_weights_fail_before_training_with_the_file_name(smoke_dataset, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    classes = smoke_dataset.class_names
    cases = [
        ("yolov8_sam", {}, r"yolov8x-seg\.pt not found"),
        ("yolo11_sam", {}, r"yolo11x-seg\.pt not found"),
        ("yolo11_sam", {"yolo_weights": None}, r"sam_vit_h_4b8939\.pth.*not found"),
        ("mask_rcnn", {}, r"torch_home/hub/checkpoints/maskrcnn_resnet50_fpn_coco-bf2d0c1e\.pth not found"),
        ("mask_rcnn", {"weights": "nowhere/mask.pth"}, r"nowhere/mask\.pth not found"),
    ]
    for name, overrides, message in cases:
        method = create_method(name, classes, preset="paper", overrides=overrides)
        with pytest.raises(WeightsError, match=message):
            method.fit(smoke_dataset.train, _ctx(tmp_path / name, classes))
        assert not (tmp_path / name).exists() or not any((tmp_path / name).iterdir()), f"{name} did work first"
        assert method.weights_info()["random_init"] is False


# -- Mask R-CNN ----------------------------------------------------------------------------------
@pytest.mark.slow
def test_mask_rcnn_fine_tunes_from_a_coco_style_checkpoint(smoke_dataset, tmp_path):
    classes = smoke_dataset.class_names
    donor = create_method("mask_rcnn", ("x",) * 90, preset="smoke", overrides={"weights": "coco"})
    torch.manual_seed(5)
    coco_like = donor._build(64, None).state_dict()  # a 91-class head, as torchvision's COCO checkpoint
    checkpoint = tmp_path / "coco_like.pth"
    torch.save(coco_like, checkpoint)

    method = create_method("mask_rcnn", classes, preset="smoke", overrides={"weights": str(checkpoint)})
    method.fit(smoke_dataset.train, _ctx(tmp_path / "work", classes))
    assert method.weights_info() == {"random_init": False, "weights": str(checkpoint),
                                     "checkpoint": str(checkpoint), "architecture": "maskrcnn_resnet50_fpn",
                                     "frozen_bn_eps": 1e-5,
                                     "sha256": hashlib.sha256(checkpoint.read_bytes()).hexdigest()}
    state = method.state_dict()["model"]
    assert state["roi_heads.box_predictor.cls_score.weight"].shape[0] == len(classes) + 1  # new head
    frozen = "backbone.body.layer1.0.conv1.weight"  # smoke trains no backbone stage: weights stay as loaded
    torch.testing.assert_close(state[frozen], coco_like[frozen])
    trained = "backbone.fpn.layer_blocks.0.0.weight"
    assert not torch.equal(state[trained], coco_like[trained])
    maps = method.predict([s.image for s in smoke_dataset.test[:2]])
    assert all(np.isfinite(m).all() and m.dtype == np.float32 for m in maps)


# -- YOLO + SAM ----------------------------------------------------------------------------------
_OFFLINE_SCRIPT = textwrap.dedent("""
    import hashlib, json, socket, sys
    from pathlib import Path

    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(repr(args[:2]))
        raise OSError("network disabled in this test")

    socket.getaddrinfo = refuse
    socket.create_connection = refuse
    socket.socket.connect = lambda self, *a: refuse(*a)

    import torch
    from scrapbench.datasets import load_dataset
    from scrapbench.core.method import FitContext
    from scrapbench.methods.common.sam_refiner import build_sam
    from scrapbench.methods.yolo_sam.offline import import_ultralytics
    from scrapbench.core.registry import create_method

    tmp = Path(sys.argv[1])
    data = load_dataset("synthetic", preset="smoke", seed=0, cache_dir=tmp / "cache")
    torch.save(build_sam("tiny", None, seed=7).model.state_dict(), tmp / "weights" / "sam_tiny.pth")
    from scrapbench.methods.yolo_sam.offline import third_party_output

    with third_party_output(tmp / "setup.log", verbose=False):  # the test's own set-up: not what is checked
        import_ultralytics(tmp / "work" / "ultralytics_config")
        from ultralytics import YOLO
        YOLO("yolo11n-seg.yaml").save(str(tmp / "weights" / "yolo11n-seg.pt"))  # a pretrained-format checkpoint
    pin = hashlib.sha256((tmp / "weights" / "yolo11n-seg.pt").read_bytes()).hexdigest()

    method = create_method("yolo11_sam", data.class_names, preset="smoke", overrides={
        "yolo_weights": str(tmp / "weights" / "{yolo_family}{yolo_scale}-seg.pt"), "yolo_weights_sha256": pin,
        "sam_checkpoint": str(tmp / "weights" / "sam_tiny.pth")})
    method.fit(data.train, FitContext(seed=0, device="cpu", workdir=tmp / "work", class_names=data.class_names,
                                      show_progress=True))
    maps = method.predict([s.image for s in data.test[:3]])
    result = {"attempts": attempts, "info": method.weights_info(), "threads": torch.get_num_threads(),
              "max": [float(m.max()) for m in maps]}
    print("RESULT " + json.dumps(result))
""")


_ARTEFACT_SUFFIXES = (".pt", ".pth", ".ttf", ".cache", ".csv", ".yaml", ".json")
_SKIP_DIRS = {".git", ".venv", "__pycache__", ".pytest_cache", ".ruff_cache", "node_modules", "runs"}


def _ultralytics_artefacts(root: Path) -> set[str]:
    """Files of the kinds ultralytics writes (settings, fonts, checkpoints, caches, run logs) under root.

    Not a full snapshot: other people may be editing source files in the same checkout meanwhile, and
    `runs/` (git-ignored benchmark output) may be written by a benchmark running beside the tests.
    """
    found = set()
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d not in _SKIP_DIRS]
        found.update(str(Path(folder, f)) for f in files if f.endswith(_ARTEFACT_SUFFIXES))
    return found


@pytest.mark.slow
def test_yolo_trains_offline_and_writes_only_into_workdir(tmp_path):
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    for folder in (home, cwd, tmp_path / "weights"):
        folder.mkdir()
    env = {k: v for k, v in os.environ.items()
           if k not in ("YOLO_OFFLINE", "YOLO_CONFIG_DIR", "HF_HUB_OFFLINE", "XDG_CONFIG_HOME")}
    env.update(HOME=str(home), OMP_NUM_THREADS="2")
    # ultralytics' package dir: under pytest it would put relative runs in ../tests/tmp. Found without
    # importing it, since importing patches PIL process-wide (see yolo_offline.import_ultralytics).
    package_dir = Path(importlib.util.find_spec("ultralytics").origin).parent
    watched = [REPO, package_dir.parent / "tests"]
    before = [_ultralytics_artefacts(root) for root in watched]
    proc = subprocess.run([sys.executable, "-c", _OFFLINE_SCRIPT, str(tmp_path)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith("RESULT ") and proc.stdout.count("\n") == 1, proc.stdout[:3000]
    result = json.loads(proc.stdout.removeprefix("RESULT "))

    assert result["attempts"] == [], "ultralytics tried to reach the network"
    assert list(home.rglob("*")) == [] and list(cwd.rglob("*")) == []
    assert [_ultralytics_artefacts(root) for root in watched] == before, "written into the repo or site-packages"
    work = tmp_path / "work"
    assert (work / "ultralytics_config" / "Ultralytics" / "settings.json").is_file()
    assert not list(work.rglob("*.ttf")), "a font was fetched"
    assert (work / "ultralytics_runs" / "train" / "weights" / "last.pt").is_file()
    assert (work / "yolo_data" / "data.yaml").is_file()
    assert _console_chatter(proc.stderr, "yolo11_sam fit") == []  # only our progress bar reached the console
    assert "yolo11_sam fit" in proc.stderr
    log = (work / "ultralytics.log").read_text()
    assert "Epoch" in log and "Validating" in log  # training and validation output
    assert "Creating new Ultralytics Settings" in (tmp_path / "setup.log").read_text()  # logged while importing
    assert result["threads"] == 2  # ultralytics' select_device() pinning undone

    info = result["info"]
    assert info["yolo_random_init"] is False and info["yolo_weights"] == str(tmp_path / "weights" / "yolo11n-seg.pt")
    assert info["sam_random_init"] is False and info["random_init"] is False
    assert all(np.isfinite(v) for v in result["max"])


def _console_chatter(text: str, bar: str) -> list[str]:
    """Pieces of console output that are not our progress bar ``bar`` (tqdm redraws it after a carriage return)."""
    pieces = re.split(r"[\r\n]", re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", text))
    return [p for p in pieces if p.strip() and not p.startswith(bar)]


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.mark.parametrize("verbose", [False, True])
def test_ultralytics_output_stays_in_the_log_file_unless_verbose(smoke_dataset, tmp_path, capfd, verbose):
    from scrapbench.methods.yolo_sam.offline import import_ultralytics

    import_ultralytics(tmp_path / "config")  # earlier tests may have imported it already; the subprocess test
    records = _Records()  # checks the import itself. ultralytics' console handler is bound to whatever
    logging.getLogger("ultralytics").addHandler(records)  # stdout it met at import: watch its logger instead.
    classes = smoke_dataset.class_names
    method = create_method("yolov8_sam", classes, preset="smoke")
    capfd.readouterr()
    try:
        method.fit(smoke_dataset.train, FitContext(seed=0, device="cpu", workdir=tmp_path / "work",
                                                   class_names=tuple(classes), show_progress=True, verbose=verbose))
        method.predict([s.image for s in smoke_dataset.test[:2]])
    finally:
        logging.getLogger("ultralytics").removeHandler(records)
    out, err = capfd.readouterr()
    log = tmp_path / "work" / "ultralytics.log"
    if verbose:
        assert any("Epoch" in m for m in records.messages)
        assert not log.exists()
    else:
        assert out == "" and _console_chatter(err, "yolov8_sam fit") == [], (out + err)[:3000]
        assert "yolov8_sam fit" in err  # our own progress bar stays
        assert records.messages == []
        assert "Epoch" in log.read_text() and "Validating" in log.read_text()


@pytest.fixture(scope="module")
def fitted_yolo(smoke_dataset, tmp_path_factory):
    method = create_method("yolov8_sam", smoke_dataset.class_names, preset="smoke")
    method.fit(smoke_dataset.train, _ctx(tmp_path_factory.mktemp("yolo_work"), smoke_dataset.class_names))
    return method


def test_yolo_sam_maps_follow_detections(fitted_yolo, smoke_dataset):
    images = [s.image for s in smoke_dataset.test[:4]]
    maps = fitted_yolo.predict(images)
    assert any(m.max() > 0 for m in maps), "smoke preset should detect something to exercise SAM"
    detections = fitted_yolo._detect(images)
    for amap, (_, scores, labels) in zip(maps, detections, strict=True):
        assert amap.max() <= (scores.max() if len(scores) else 0.0) + 1e-6
        assert ((labels >= 1) & (labels <= len(smoke_dataset.class_names))).all()
    class_maps = fitted_yolo.predict_classes(images)
    for amap, per_class in zip(maps, class_maps, strict=True):
        assert per_class.shape == (len(smoke_dataset.class_names), *amap.shape)
        np.testing.assert_allclose(per_class.max(axis=0), amap, rtol=1e-6)
    assert fitted_yolo.weights_info()["random_init"] is True


def test_predict_before_fit_is_a_clear_error():
    for name in ("yolov8_sam", "mask_rcnn"):
        method = create_method(name, ("motor",), preset="smoke")
        with pytest.raises(RuntimeError, match="before predict"):
            method.predict([np.zeros((8, 8, 3), np.uint8)])


def test_importing_ultralytics_leaves_pil_alone(tmp_path):
    """Our folder reader must still report a corrupt image as such after a YOLO run in the process."""
    from PIL import Image

    from scrapbench.datasets.io.images import read_image
    from scrapbench.datasets.types import DatasetError
    from scrapbench.methods.yolo_sam.offline import import_ultralytics

    import_ultralytics(tmp_path / "config")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(DatasetError, match=r"bad\.png"):
        read_image(bad)
    assert Image.open.__module__.startswith("PIL")


_LOAD_AND_PREDICT = """
import os, sys
import numpy as np
from scrapbench.core.method import AnomalyMethod
from scrapbench.methods.yolo_sam import _fallback_config_dir
if sys.argv[2] == "killed":
    _fallback_config_dir()
    os._exit(1)  # killed: nothing cleans up
AnomalyMethod.load(sys.argv[1]).predict([np.zeros((64, 64, 3), np.uint8)])
"""


def test_a_loaded_yolo_leaves_no_config_folder_in_the_temp_folder(fitted_yolo, tmp_path):
    """``predict`` from a model folder gives ultralytics a config folder in the temp folder: gone at exit, and one
    a killed process left is removed by the next."""
    fitted_yolo.save(tmp_path / "model")
    temp = tmp_path / "temp"
    temp.mkdir()
    env = {**os.environ, "TMPDIR": str(temp)}
    for how in ("killed", "exits"):
        proc = subprocess.run([sys.executable, "-c", _LOAD_AND_PREDICT, str(tmp_path / "model"), how], env=env,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == (1 if how == "killed" else 0), proc.stderr[-3000:]
        assert len(list(temp.glob("scrapbench-ultralytics-*"))) == (how == "killed")
