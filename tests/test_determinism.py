"""Same seed, same numbers: alone or after other methods in one process, with or without CPU load."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import warnings

import pytest
import torch

from scrapbench.run.provenance import NondeterminismMonitor, seed_everything

_RUNS_SCRIPT = textwrap.dedent("""
    import hashlib, json, sys
    from pathlib import Path

    import numpy as np
    from scrapbench.datasets import load_dataset
    from scrapbench.run.lifecycle import run_one
    from scrapbench.run.plan import RunOptions, plan_run

    cache, out, methods = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3].split(",")
    data = load_dataset("synthetic", preset="smoke", seed=0, cache_dir=cache)
    results = {}
    for name in methods:
        options = RunOptions(preset="smoke", out=out, show_progress=False, save_maps=True)
        run = run_one(data, plan_run(data, name, 0, options), options)
        assert run.status == "done", run.error
        with np.load(run.directory / "maps.npz") as maps:
            digest = hashlib.sha256(b"".join(maps[k].tobytes() for k in sorted(maps.files))).hexdigest()
        metrics = {k: run.metrics[k] for k in ("auroc", "aupro", "ap", "f1max", "image_auroc")}
        record = json.loads((run.directory / "run.json").read_text())["determinism"]
        results[name] = {"metrics": metrics, "maps": digest, "deterministic": record["deterministic"]}
    print("RESULT " + json.dumps(results))
""")

_BUSY = "while True: pass"


def _start_runs(tmp_path, tag: str, methods: list[str]) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "2", "PYTHONHASHSEED": str(len(tag))}  # threads fixed, hashes not
    return subprocess.Popen([sys.executable, "-c", _RUNS_SCRIPT, str(tmp_path / "cache"), str(tmp_path / tag),
                             ",".join(methods)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _result(proc: subprocess.Popen) -> dict:
    out, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1].removeprefix("RESULT "))


@pytest.mark.slow
def test_detectors_give_identical_numbers_alone_after_other_methods_and_under_load(tmp_path):
    from scrapbench.datasets import load_dataset

    load_dataset("synthetic", preset="smoke", seed=0, cache_dir=tmp_path / "cache")  # generated once, then shared
    # Each detector runs once per process: first in one (alone), after other methods in the other (mask_rcnn and
    # yolo11_sam), or after different methods (yolov8_sam). The two processes and two busy loops share the cores.
    burners = [subprocess.Popen([sys.executable, "-c", _BUSY]) for _ in range(2)]
    try:
        forward = _start_runs(tmp_path, "forward", ["mask_rcnn", "yolov8_sam", "yolo11_sam"])
        backward = _start_runs(tmp_path, "backward", ["yolo11_sam", "anomalyclip", "yolov8_sam", "mask_rcnn"])
        a, b = _result(forward), _result(backward)
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()
    for name in ("mask_rcnn", "yolov8_sam", "yolo11_sam"):
        assert a[name] == b[name], name
        assert a[name]["deterministic"] is True, name  # no kernel without a deterministic variant ran on CPU


def test_seed_everything_asks_every_backend_for_deterministic_kernels():
    torch.use_deterministic_algorithms(False)
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = True, False
    torch.backends.mkldnn.deterministic = False
    seed_everything(3)
    assert torch.are_deterministic_algorithms_enabled()
    assert torch.backends.cudnn.benchmark is False and torch.backends.cudnn.deterministic is True
    assert torch.backends.mkldnn.deterministic is True
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] in (":4096:8", ":16:8")


def test_ultralytics_training_leaves_the_determinism_flags_as_they_were(tmp_path):
    from scrapbench.methods.yolo_sam.offline import import_ultralytics, restored_torch_state

    import_ultralytics(tmp_path / "config")
    from ultralytics.utils.torch_utils import init_seeds, unset_deterministic

    seed_everything(0)
    threads = torch.get_num_threads()
    with restored_torch_state():
        init_seeds(1, deterministic=True)  # what an ultralytics trainer does on start ...
        torch.set_num_threads(1)
        unset_deterministic()  # ... and at its end
    assert torch.are_deterministic_algorithms_enabled() and torch.get_num_threads() == threads
    assert torch.backends.cudnn.deterministic is True and torch.backends.cudnn.benchmark is False
    assert torch.backends.mkldnn.deterministic is True
    assert torch.utils.deterministic.fill_uninitialized_memory is True


def _nondeterministic_kernel() -> None:
    # put_ without accumulate has no deterministic implementation (repeated indices: the last write wins).
    torch.zeros(4).put_(torch.tensor([1, 1]), torch.tensor([1.0, 2.0]))


def test_monitor_records_kernels_without_a_deterministic_implementation():
    seed_everything(0)
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("default")
        with NondeterminismMonitor() as first:
            _nondeterministic_kernel()
            _nondeterministic_kernel()
            warnings.warn("unrelated", UserWarning, stacklevel=1)
        with NondeterminismMonitor() as later_run:  # the same code location again: still recorded
            _nondeterministic_kernel()
        with NondeterminismMonitor() as clean:
            torch.ones(3).sum()
    assert first.ops == later_run.ops == {"put_"}
    assert [str(w.message) for w in shown].count("unrelated") == 1  # other warnings pass through
    assert sum("put_ does not have" in str(w.message) for w in shown) == 2  # once per run, not per call
    record = first.record()
    assert record["deterministic"] is False and record["nondeterministic_ops"] == ["put_"]
    assert clean.record()["deterministic"] is True and clean.record()["cpu_model"]




@pytest.fixture(autouse=True)
def _restore_torch_flags():
    """These tests change process-wide torch flags; put them back for the tests that follow."""
    saved = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic, torch.backends.mkldnn.deterministic,
             torch.get_num_threads())
    yield
    torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = saved[2], saved[3]
    torch.backends.mkldnn.deterministic = saved[4]
    torch.set_num_threads(saved[5])
