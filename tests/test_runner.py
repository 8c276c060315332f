"""The runner: files written, resume after interruption, failures recorded, determinism, CLI."""

from __future__ import annotations

import json
import os

import pytest
from toy_method import ColourDistance, LoadsWeightsWhenBuilt

from scrapbench.core import registry
from scrapbench.run.grid import run_benchmark
from scrapbench.run.plan import RunIdentityError, RunOptions


@pytest.fixture(autouse=True)
def toy_methods(monkeypatch):
    registry.list_methods()  # load the built-ins first
    monkeypatch.setitem(registry._REGISTRY, "toy", registry.MethodSpec("toy", ColourDistance, "toy", ("table2",)))
    monkeypatch.setitem(registry._REGISTRY, "toy_noisy",
                        registry.MethodSpec("toy_noisy", ColourDistance, "noisy toy", (), {"noise": 5.0}))
    monkeypatch.setitem(registry._REGISTRY, "toy_broken",
                        registry.MethodSpec("toy_broken", ColourDistance, "fails", (), {"fail_on_predict": True}))


def _options(tmp_path, **kw):
    return RunOptions(preset="smoke", out=tmp_path / "runs", show_progress=False, **kw)


def test_run_writes_a_complete_record(smoke_dataset, tmp_path):
    [result] = run_benchmark(smoke_dataset, ["toy"], [0], _options(tmp_path))
    assert result.status == "done"
    folder = result.directory
    for name in ("run.json", "metrics.json", "metrics_state.npz", "per_image.csv", "maps.npz", "model/method.json"):
        assert (folder / name).exists(), name
    record = json.loads((folder / "run.json").read_text())
    assert record["method"] == "toy" and record["seed"] == 0 and record["preset"] == "smoke"
    assert record["timings"]["fit_s"] >= 0 and record["timings"]["peak_rss_mb"] > 0
    assert record["versions"]["torch"] and record["config"]["max_images"] == 4
    metrics = json.loads((folder / "metrics.json").read_text())
    assert all(0.0 <= metrics[k] <= 1.0 for k in ("auroc", "aupro", "ap", "f1max"))
    assert not list(folder.glob("**/.*.tmp*")) and not list(folder.glob(".*"))  # no temp files left


def test_finished_runs_are_skipped_and_interrupted_ones_redone(smoke_dataset, tmp_path):
    options = _options(tmp_path)
    first = run_benchmark(smoke_dataset, ["toy"], [0, 1], options)
    assert [r.status for r in first] == ["done", "done"]
    # Simulate a crash during seed 1: its folder exists but has no run.json.
    (first[1].directory / "run.json").unlink()
    stamp = (first[0].directory / "run.json").stat().st_mtime_ns
    second = run_benchmark(smoke_dataset, ["toy"], [0, 1], options)
    assert [r.status for r in second] == ["skipped", "done"]
    assert (first[0].directory / "run.json").stat().st_mtime_ns == stamp
    assert second[0].metrics == first[0].metrics


def test_changed_config_is_not_silently_mixed(smoke_dataset, tmp_path):
    run_benchmark(smoke_dataset, ["toy"], [0], _options(tmp_path))
    changed = _options(tmp_path, overrides={"toy": {"max_images": 2}})
    with pytest.raises(RunIdentityError, match="another identity"):
        run_benchmark(smoke_dataset, ["toy"], [0], changed)
    [redone] = run_benchmark(smoke_dataset, ["toy"], [0], _options(tmp_path, overrides={"toy": {"max_images": 2}},
                                                                  overwrite=True))
    assert redone.status == "done"


def test_a_failing_method_is_recorded_and_others_go_on(smoke_dataset, tmp_path):
    results = run_benchmark(smoke_dataset, ["toy_broken", "toy"], [0], _options(tmp_path))
    assert [r.status for r in results] == ["failed", "done"]
    error = json.loads((results[0].directory / "error.json").read_text())
    assert "toy failure" in error["error"] and not (results[0].directory / "run.json").exists()


def test_same_seed_same_numbers(smoke_dataset, tmp_path):
    a = run_benchmark(smoke_dataset, ["toy_noisy"], [3], _options(tmp_path / "a"))[0]
    b = run_benchmark(smoke_dataset, ["toy_noisy"], [3], _options(tmp_path / "b"))[0]
    c = run_benchmark(smoke_dataset, ["toy_noisy"], [4], _options(tmp_path / "c"))[0]
    assert a.metrics == b.metrics
    assert a.metrics != c.metrics


def test_cli_run_and_resume(smoke_dataset, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from scrapbench.cli.main import app

    monkeypatch.setenv("SCRAPBENCH_CACHE", str(tmp_path / "cache"))
    args = ["run", "--methods", "toy", "--seeds", "2", "--preset", "smoke", "--out", str(tmp_path / "runs"),
            "--no-progress"]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "toy seed 1" in first.output
    second = CliRunner().invoke(app, args)
    assert second.exit_code == 0 and "↷ toy seed 0" in second.output
    bad = CliRunner().invoke(app, ["run", "--methods", "toy", "--set", "ours.epochs=1", "--preset", "smoke",
                                   "--out", str(tmp_path / "runs")])
    assert bad.exit_code == 2 and "not being run" in bad.output
    unknown = CliRunner().invoke(app, ["run", "--methods", "tooy", "--out", str(tmp_path / "runs")])
    assert unknown.exit_code == 2 and "did you mean toy" in unknown.output


# -- run identity: no stale numbers ---------------------------------------------------------------


def _folder_copy(dataset, root, swap=False):
    """``dataset`` written as a folder named like it; ``swap``: other test data (the train/test split redone)."""
    from scrapbench.datasets.folder import read_folder_dataset, write_folder_dataset

    train, test = list(dataset.train), list(dataset.test)
    if swap:  # move the first anomalous test image into train and a normal train image into test
        moved = next(i for i, s in enumerate(test) if s.is_anomalous)
        back = next(i for i, s in enumerate(train) if not s.is_anomalous)
        train[back], test[moved] = test[moved], train[back]
    write_folder_dataset(root, dataset.class_names, {"train": train, "test": test}, meta={"name": "plant-a"})
    return read_folder_dataset(root)


def test_identity_is_recorded_in_run_json(smoke_dataset, tmp_path):
    import torch

    from scrapbench.datasets.fingerprint import dataset_fingerprint
    from scrapbench.metrics import EVALUATOR_VERSION
    from scrapbench.run.provenance import cpu_model, cpu_vendor

    [result] = run_benchmark(smoke_dataset, ["toy"], [1], _options(tmp_path))
    identity = json.loads((result.directory / "run.json").read_text())["identity"]
    assert set(identity) == {"method", "seed", "preset", "config", "dataset_fingerprint", "evaluator_version",
                             "compute"}
    assert identity["method"] == "toy" and identity["seed"] == 1 and identity["preset"] == "smoke"
    assert identity["config"]["max_images"] == 4
    assert identity["dataset_fingerprint"] == dataset_fingerprint(smoke_dataset)
    assert identity["evaluator_version"] == EVALUATOR_VERSION
    compute = identity["compute"]
    assert compute["device"] == "cpu" and compute["torch_threads"] == torch.get_num_threads()
    assert compute["deterministic_algorithms"] is True and compute["predict_batch_size"] == 8
    assert compute["cpu_vendor"] == cpu_vendor() and compute["cpu_model"] == cpu_model() != ""


def test_resume_refuses_other_data_under_the_same_name(smoke_dataset, tmp_path):
    first = _folder_copy(smoke_dataset, tmp_path / "a")
    redone = _folder_copy(smoke_dataset, tmp_path / "b", swap=True)
    assert first.name == redone.name == "plant-a"
    options = _options(tmp_path, dataset_spec=str(tmp_path / "a"))
    [old] = run_benchmark(first, ["toy"], [0], options)
    with pytest.raises(RunIdentityError, match="dataset_fingerprint") as refused:
        run_benchmark(redone, ["toy"], [0], options)
    assert "Nothing was run" in str(refused.value) and "--overwrite" in str(refused.value)
    assert json.loads((old.directory / "metrics.json").read_text()) == old.metrics  # untouched
    [new] = run_benchmark(redone, ["toy"], [0], _options(tmp_path, dataset_spec=str(tmp_path / "a"), overwrite=True))
    [truth] = run_benchmark(redone, ["toy"], [0], _options(tmp_path / "fresh"))
    assert new.status == "done" and new.metrics == truth.metrics != old.metrics


def test_synthetic_folders_of_other_seeds_are_told_apart(tmp_path):
    """Two `scrapbench synth` folders of different seeds carry the same name; their runs must not mix."""
    from scrapbench.core.presets import SYNTHETIC_PRESETS
    from scrapbench.datasets.folder import read_folder_dataset
    from scrapbench.datasets.synthetic.generator import write_synthetic

    a = read_folder_dataset(write_synthetic(tmp_path / "s0", SYNTHETIC_PRESETS["smoke"], seed=0))
    b = read_folder_dataset(write_synthetic(tmp_path / "s1", SYNTHETIC_PRESETS["smoke"], seed=1))
    assert a.name == b.name
    run_benchmark(a, ["toy"], [0], _options(tmp_path, dataset_spec="folder"))
    with pytest.raises(RunIdentityError, match="dataset_fingerprint"):
        run_benchmark(b, ["toy"], [0], _options(tmp_path, dataset_spec="folder"))


def test_thread_count_is_part_of_the_identity(smoke_dataset, tmp_path):
    import torch

    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        run_benchmark(smoke_dataset, ["toy"], [0], _options(tmp_path))
        torch.set_num_threads(2)
        with pytest.raises(RunIdentityError, match=r"compute\.torch_threads: 1 → 2"):
            run_benchmark(smoke_dataset, ["toy"], [0], _options(tmp_path))
    finally:
        torch.set_num_threads(threads)


def test_cpu_vendor_and_model_are_part_of_a_cpu_runs_identity(smoke_dataset, tmp_path):
    """Another CPU of the same SIMD level, or a folder written before the CPU was recorded: refused, with advice."""
    from scrapbench.run import provenance

    [result] = run_benchmark(smoke_dataset, ["toy"], [0], _options(tmp_path))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(provenance, "cpu_model", lambda: "Another CPU 9000")
        with pytest.raises(RunIdentityError, match=r"compute\.cpu_model: '.*' → 'Another CPU 9000'") as refused:
            run_benchmark(smoke_dataset, ["toy"], [0], _options(tmp_path))
        assert "OMP_NUM_THREADS=N" in str(refused.value) and "cannot be pinned" in str(refused.value)
        patch.setattr(provenance, "cpu_vendor", lambda: "OtherVendor")
        with pytest.raises(RunIdentityError, match=r"compute\.cpu_vendor: '.*' → 'OtherVendor'"):
            run_benchmark(smoke_dataset, ["toy"], [0], _options(tmp_path))
    record = json.loads((result.directory / "run.json").read_text())
    for key in ("cpu_vendor", "cpu_model"):  # as written before the CPU was part of the identity
        del record["identity"]["compute"][key]
    (result.directory / "run.json").write_text(json.dumps(record))
    with pytest.raises(RunIdentityError, match=r"compute\.cpu_model: '\(absent\)' → ") as old:
        run_benchmark(smoke_dataset, ["toy"], [0], _options(tmp_path))
    assert "compute.cpu_vendor: '(absent)'" in str(old.value) and "Nothing was run" in str(old.value)


def test_cli_refuses_a_folder_written_before_the_cpu_was_recorded(smoke_dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("SCRAPBENCH_CACHE", str(smoke_dataset.root.parents[1]))
    args = ["run", "--methods", "toy", "--preset", "smoke", "--out", tmp_path / "runs", "--no-progress", "--seeds", "1"]
    assert _cli(*args).exit_code == 0
    [path] = (tmp_path / "runs").glob("*/smoke/toy/seed0/run.json")
    record = json.loads(path.read_text())
    del record["identity"]["compute"]["cpu_model"]
    path.write_text(json.dumps(record))
    _assert_clean_error(_cli(*args), "compute.cpu_model: '(absent)' →", "OMP_NUM_THREADS=N", "Nothing was run")


def test_gpu_identity_records_no_cpu(monkeypatch):
    """A GPU run's identity keeps its fields: the CPU vendor and model are CPU runs' alone."""
    from scrapbench.run import provenance

    monkeypatch.setattr(provenance, "gpu_name", lambda device: "NVIDIA H100 80GB HBM3" if device == "cuda" else None)
    gpu = provenance.compute_settings("cuda", 8)
    assert set(gpu) == {"device", "hardware", "torch_threads", "deterministic_algorithms", "deterministic_warn_only",
                        "cudnn_deterministic", "cudnn_benchmark", "float32_matmul_precision", "predict_batch_size",
                        "precision"}
    assert gpu["hardware"].startswith("NVIDIA H100 80GB HBM3, CUDA ")
    assert set(provenance.compute_settings("cpu", 8)) == set(gpu) | {"cpu_vendor", "cpu_model"}


def test_unreadable_records_fail_that_run_only(smoke_dataset, tmp_path):
    first = run_benchmark(smoke_dataset, ["toy"], [0, 1, 2], _options(tmp_path))
    (first[0].directory / "run.json").write_text("{not json")
    (first[1].directory / "metrics.json").write_bytes(b"\x00\xff")
    second = run_benchmark(smoke_dataset, ["toy"], [0, 1, 2], _options(tmp_path))
    assert [r.status for r in second] == ["failed", "failed", "skipped"]
    assert "seed0/run.json: corrupt" in second[0].error and "--overwrite" in second[0].error
    assert "seed1/metrics.json: corrupt" in second[1].error
    assert (first[0].directory / "run.json").read_text() == "{not json"  # nothing deleted behind the user's back
    third = run_benchmark(smoke_dataset, ["toy"], [0, 1, 2], _options(tmp_path, overwrite=True))
    assert [r.status for r in third] == ["done", "done", "skipped"]
    assert third[0].metrics == first[0].metrics


def test_a_folder_scrapbench_did_not_write_is_not_replaced(smoke_dataset, tmp_path):
    options = _options(tmp_path)
    [result] = run_benchmark(smoke_dataset, ["toy"], [0], options)
    (result.directory / "run.json").unlink()  # looks unfinished ...
    (result.directory / "my_notes.txt").write_text("precious")  # ... but holds someone's file
    [again] = run_benchmark(smoke_dataset, ["toy"], [0], options)
    assert again.status == "failed" and "my_notes.txt" in again.error
    assert (result.directory / "my_notes.txt").read_text() == "precious"


def test_a_failed_run_replaces_nothing_until_it_is_complete(smoke_dataset, tmp_path):
    [result] = run_benchmark(smoke_dataset, ["toy_broken"], [0], _options(tmp_path))
    error = json.loads((result.directory / "error.json").read_text())
    assert error["message"] == "RuntimeError: toy failure" and error["identity"]["method"] == "toy_broken"
    assert sorted(p.name for p in result.directory.parent.iterdir()) == [".seed0.lease", "seed0"]


def test_dataset_names_stay_inside_out(smoke_dataset, tmp_path):
    import dataclasses

    from scrapbench.storage.run_folder import path_component

    assert path_component("../../x") == "x" and path_component("/abs/path") == "abs-path"
    assert path_component("..") == "dataset" and path_component(".hidden") == "hidden"
    assert path_component("a\\b:c*?") == "a-b_c_"
    for name in ("../../escaped", str(tmp_path / "elsewhere"), ".."):
        evil = dataclasses.replace(smoke_dataset, name=name)
        [result] = run_benchmark(evil, ["toy"], [0], _options(tmp_path, dataset_spec="folder"))
        assert result.status == "done"
        relative = result.directory.resolve().relative_to((tmp_path / "runs").resolve())
        assert len(relative.parts) == 4 and not relative.parts[0].startswith(".")
    assert not (tmp_path.parent / "escaped").exists() and not (tmp_path / "elsewhere").exists()


@pytest.mark.parametrize("level", [0, 1, 2, 3])  # seed<k>, <method>, <preset>, <dataset>
def test_a_symlinked_folder_below_out_is_refused(level, smoke_dataset, tmp_path, monkeypatch):
    import shutil

    from scrapbench.storage.run_folder import RunFolderError

    options = _options(tmp_path)
    [first] = run_benchmark(smoke_dataset, ["toy"], [0], options)
    linked = [first.directory, *first.directory.parents][level]
    elsewhere = tmp_path / "elsewhere"
    shutil.move(linked, elsewhere)
    linked.symlink_to(elsewhere, target_is_directory=True)
    before = sorted(p.relative_to(elsewhere) for p in elsewhere.rglob("*"))
    for again in (options, _options(tmp_path, overwrite=True)):
        with pytest.raises(RunFolderError, match=f"{linked}: a symbolic link") as refused:
            run_benchmark(smoke_dataset, ["toy"], [0], again)
        assert "\n" not in str(refused.value)
    assert sorted(p.relative_to(elsewhere) for p in elsewhere.rglob("*")) == before
    monkeypatch.setenv("SCRAPBENCH_CACHE", str(smoke_dataset.root.parents[1]))
    result = _cli("run", "--methods", "toy", "--seeds", "1", "--preset", "smoke", "--out", tmp_path / "runs",
                  "--no-progress")
    _assert_clean_error(result, "a symbolic link")


def test_any_test_image_name_keeps_its_map(smoke_dataset, tmp_path):
    """Names that numpy's savez takes as its own arguments (file, allow_pickle), or that np.load confuses (a and
    a.npy), or that pandas reads as numbers (007) each keep their own map, and the report draws them."""
    import dataclasses

    import numpy as np

    from scrapbench.datasets.folder import read_folder_dataset, write_folder_dataset
    from scrapbench.report.figure_selection import _qualitative
    from scrapbench.storage.npz import read_npz

    names = iter(["file", "allow_pickle", "a.npy", "007", "a", "x y", "nan"])  # the anomalous images first
    order = smoke_dataset.test.anomalous_indices() + smoke_dataset.test.normal_indices()
    renamed = {i: next(names, None) for i in order}
    test = [dataclasses.replace(s, id=renamed[i] or s.id) for i, s in enumerate(smoke_dataset.test)]
    write_folder_dataset(tmp_path / "data", smoke_dataset.class_names, {"train": list(smoke_dataset.train),
                                                                       "test": test})
    dataset = read_folder_dataset(tmp_path / "data")
    [result] = run_benchmark(dataset, ["toy"], [0], _options(tmp_path, dataset_spec=str(tmp_path / "data")))
    assert result.status == "done", result.error
    method = ColourDistance.load(result.directory / "model")
    with read_npz(result.directory / "maps.npz") as maps:
        assert sorted(maps.files) == sorted(dataset.test.ids)
        for sample in dataset.test:
            [expected] = method.predict([sample.image])
            np.testing.assert_array_equal(maps[sample.id], expected.astype(np.float16))
    record = {"folder": result.directory, "run": json.loads((result.directory / "run.json").read_text())}
    assert _qualitative(["toy"], {}, {("toy", 0): record}, tmp_path / "qualitative.png", n_rows=4)


# -- the command line: one clear line per bad input, no traceback ------------------------------------


def _cli(*args):
    from typer.testing import CliRunner

    from scrapbench.cli.main import app

    return CliRunner().invoke(app, [str(a) for a in args])


def _assert_clean_error(result, *fragments, code=2):
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    for fragment in fragments:
        assert fragment in result.output, result.output


@pytest.mark.parametrize("seeds", ["0", "-2"])
def test_cli_rejects_seed_counts_below_one(tmp_path, seeds):
    result = _cli("run", "--methods", "toy", "--seeds", seeds, "--preset", "smoke", "--out", tmp_path / "runs")
    _assert_clean_error(result, "--seeds")
    assert not (tmp_path / "runs").exists()


def test_cli_unwritable_out_is_one_line(smoke_dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("SCRAPBENCH_CACHE", str(smoke_dataset.root.parents[1]))
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    result = _cli("run", "--methods", "toy", "--seeds", "1", "--preset", "smoke", "--out", blocker / "runs",
                  "--no-progress")
    _assert_clean_error(result, f"{blocker / 'runs'}: cannot write results here")
    readonly = tmp_path / "readonly"
    readonly.mkdir()
    readonly.chmod(0o555)
    try:
        if os.access(readonly, os.W_OK):
            return  # root writes into read-only folders; the file above stood in for them
        result = _cli("run", "--methods", "toy", "--seeds", "1", "--preset", "smoke", "--out", readonly,
                      "--no-progress")
        _assert_clean_error(result, f"{readonly}: cannot write results here")
    finally:
        readonly.chmod(0o755)


def test_cli_user_text_is_printed_literally(tmp_path):
    folder = tmp_path / "data[/x]" / "[bold]set"
    folder.mkdir(parents=True)
    result = _cli("run", "--methods", "toy", "--dataset", folder, "--out", tmp_path / "runs")
    # The hint keeps its example list, and "[/x]" in the path neither vanishes nor crashes rich.
    _assert_clean_error(result, f"{folder / 'dataset.yaml'}: missing", "[motor, cable, spray_can]")


def test_cli_list_prints_descriptions_literally(monkeypatch):
    monkeypatch.setitem(registry._REGISTRY, "toy", registry.MethodSpec(
        "toy", ColourDistance, "[bold]brackets[/] stay :smile:", ("table2",)))
    from scrapbench.cli.console import console

    monkeypatch.setattr(console, "width", 250)  # the table's columns wide enough not to wrap the description
    result = _cli("list")
    assert result.exit_code == 0 and "[bold]brackets[/] stay :smile:" in result.output


def test_cli_corrupt_records_fail_only_their_run(smoke_dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("SCRAPBENCH_CACHE", str(smoke_dataset.root.parents[1]))
    args = ["run", "--methods", "toy", "--seeds", "2", "--preset", "smoke", "--out", tmp_path / "runs", "--no-progress"]
    assert _cli(*args).exit_code == 0
    [record] = (tmp_path / "runs").glob("*/smoke/toy/seed0/run.json")
    record.write_text("[")
    result = _cli(*args)
    _assert_clean_error(result, f"{record}: corrupt", "↷ toy seed 1", "1 of 2 run(s) failed", code=1)
    assert _cli(*args, "--overwrite").exit_code == 0


def test_cli_bad_weights_are_one_line_naming_the_file(tmp_path, monkeypatch, smoke_dataset):
    monkeypatch.setenv("SCRAPBENCH_CACHE", str(smoke_dataset.root.parents[1]))
    garbage = tmp_path / "weights.pt"
    garbage.write_bytes(os.urandom(512))
    result = _cli("run", "--methods", "winclip", "--weights", garbage, "--seeds", "2", "--preset", "smoke",
                  "--out", tmp_path / "runs", "--no-progress")
    _assert_clean_error(result, str(garbage), "nothing was run")


def test_a_method_that_cannot_be_built_fails_its_runs_only(smoke_dataset, tmp_path, monkeypatch):
    """Building a method (which may read its weights) happens inside the run: the others go on."""
    monkeypatch.setitem(registry._REGISTRY, "toy_loader", registry.MethodSpec(
        "toy_loader", LoadsWeightsWhenBuilt, "reads its weights in __init__", ()))
    garbage = tmp_path / "weights.bin"
    garbage.write_bytes(b"garbage")
    results = run_benchmark(smoke_dataset, ["toy_loader", "toy"], [0, 1],
                            _options(tmp_path, overrides={"toy_loader": {"weights": str(garbage)}}))
    assert [r.status for r in results] == ["failed", "failed", "done", "done"]
    assert results[0].error == (f"MethodBuildError: toy_loader could not be built from weights {garbage} "
                                f"(ValueError: not a checkpoint)")
    assert json.loads((results[1].directory / "error.json").read_text())["message"] == results[1].error


def test_cli_identity_mismatch_is_refused_before_anything_runs(smoke_dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("SCRAPBENCH_CACHE", str(smoke_dataset.root.parents[1]))
    args = ["run", "--methods", "toy", "--preset", "smoke", "--out", tmp_path / "runs", "--no-progress"]
    assert _cli(*args, "--seeds", "1").exit_code == 0
    result = _cli(*args, "--seeds", "2", "--set", "toy.max_images=2")
    _assert_clean_error(result, "config.max_images: 4 → 2", "Nothing was run")
    assert not list((tmp_path / "runs").glob("*/smoke/toy/seed1"))


@pytest.mark.parametrize("setting, message", [
    ("toy.max_images=abc", "--set toy.max_images = 'abc': expected int"),
    ("toy.max_images=true", "--set toy.max_images = True: expected int"),
    ("toy.max_images=.nan", "--set toy.max_images = nan: expected int"),
    ("toy.noise=.inf", "--set toy.noise = inf: expected float"),
    ("toy.fail_on_predict=[1", "--set toy.fail_on_predict: invalid YAML"),
])
def test_cli_set_values_are_checked_before_anything_runs(tmp_path, setting, message):
    """A --set value that does not fit its field's type is one line, exit 2, and nothing is written (issue #22.7)."""
    result = _cli("run", "--methods", "toy", "--seeds", "1", "--preset", "smoke", "--out", tmp_path / "runs",
                  "--no-progress", "--set", setting)
    _assert_clean_error(result, message)
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()


def test_cli_preset_file_values_are_checked_before_anything_runs(tmp_path):
    preset_file = tmp_path / "p.yaml"
    preset_file.write_text("base: smoke\nmethods:\n  toy: {max_images: 2.5}\n")
    result = _cli("run", "--methods", "toy", "--seeds", "1", "--preset", preset_file, "--out", tmp_path / "runs",
                  "--no-progress")
    _assert_clean_error(result, "p.yaml: methods.toy.max_images = 2.5: expected int")
    assert not (tmp_path / "runs").exists()
    weights = _cli("weights", "check", "-m", "toy", "--preset", preset_file)
    _assert_clean_error(weights, "p.yaml: methods.toy.max_images = 2.5: expected int")


# -- a full disk fails one run, not the grid --------------------------------------------------------


def _in_staging_of(seed):
    return lambda path: f".seed{seed}.tmp-" in str(path)


def test_a_full_disk_fails_that_run_only_even_when_error_json_cannot_be_written(smoke_dataset, tmp_path, full_disk):
    full_disk(_in_staging_of(0))  # every file of seed 0's attempt, error.json included
    results = run_benchmark(smoke_dataset, ["toy"], [0, 1], _options(tmp_path))
    assert [r.status for r in results] == ["failed", "done"]
    seed0 = results[0].directory
    assert results[0].error.startswith(f"disk full: could not write {seed0 / 'model'}")  # the file, by its own name
    assert "error.json" in results[0].error and "\n" not in results[0].error
    assert sorted(p.name for p in seed0.parent.iterdir()) == [".seed0.lease", ".seed1.lease", "seed1"]  # no partial


def test_a_full_disk_in_a_methods_fit_is_recorded_without_its_partial_files(smoke_dataset, tmp_path, monkeypatch):
    import errno

    fit = ColourDistance.fit

    def fit_filling_the_disk(self, train, ctx):
        if ctx.seed == 0:
            (ctx.workdir / "checkpoint.bin").write_bytes(b"half")
            raise RuntimeError("saving the checkpoint failed") from OSError(errno.ENOSPC, "No space left on device")
        fit(self, train, ctx)

    monkeypatch.setattr(ColourDistance, "fit", fit_filling_the_disk)
    options = _options(tmp_path)
    results = run_benchmark(smoke_dataset, ["toy"], [0, 1], options)
    assert [r.status for r in results] == ["failed", "done"]
    seed0 = results[0].directory
    assert results[0].error.startswith(f"disk full: could not write the run folder {seed0} (No space left on device)")
    assert sorted(p.name for p in seed0.iterdir()) == ["error.json"]  # the partial work/ was removed
    assert json.loads((seed0 / "error.json").read_text())["message"] == results[0].error
    monkeypatch.setattr(ColourDistance, "fit", fit)
    assert [r.status for r in run_benchmark(smoke_dataset, ["toy"], [0, 1], options)] == ["done", "skipped"]


def test_cli_a_full_disk_is_one_line_per_run_and_the_grid_goes_on(smoke_dataset, tmp_path, monkeypatch, full_disk):
    monkeypatch.setenv("SCRAPBENCH_CACHE", str(smoke_dataset.root.parents[1]))
    full_disk(_in_staging_of(1))
    result = _cli("run", "--methods", "toy", "--seeds", "3", "--preset", "smoke", "--out", tmp_path / "runs",
                  "--no-progress")
    _assert_clean_error(result, "✗ toy seed 1: disk full: could not write", "✓ toy seed 2", "1 of 3 run(s) failed",
                        code=1)
