"""What runs in the Ray tasks: plain functions (``driver`` wraps them as tasks); a worker imports this module.

Each task first checks that its worker computes what the grid planned: the dataset's fingerprint and splits, and
the numerics (threads, hardware, libraries' flags); otherwise it fails with a message saying what differs.
"""

from __future__ import annotations

import socket
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from scrapbench.core.registry import MethodSpec, adopt_specs
from scrapbench.datasets.fingerprint import dataset_fingerprint
from scrapbench.datasets.types import Dataset
from scrapbench.run.compute import Compute, FitRecord, Predictions, fit_run, predict_shard
from scrapbench.run.executors import ExecutorError
from scrapbench.run.executors.ray.transfer import DataSource, layout, pack, unpack
from scrapbench.run.lifecycle import run_one
from scrapbench.run.plan import RunOptions, RunPlan, RunResult, process_numerics
from scrapbench.run.provenance import identity_differences, seed_everything
from scrapbench.storage.writers import scratch_folder

_DATASETS: dict[tuple, Dataset] = {}  # this worker process's dataset, loaded once for all its tasks


def probe(path: str, token: str, data_path: str | None) -> tuple[str, bool, bool]:
    """(host, sees the driver's token under --out, sees the dataset folder)."""
    try:
        sees_out = Path(path).read_text() == token
    except OSError:
        sees_out = False
    return socket.gethostname(), sees_out, data_path is None or Path(data_path).exists()


def measure_numerics(options: RunOptions, threads: int) -> dict[str, Any]:
    """The numerics a run's task computes with (``scrapbench.run.plan.process_numerics``) at ``threads`` threads."""
    _set_threads(threads)
    seed_everything(0)
    return process_numerics(options)


def _set_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _enter(source: DataSource, specs: Sequence[MethodSpec], options: RunOptions, seed: int) -> Dataset:
    """Set a task up on its worker: threads, methods, numerics and data checked against the driver's."""
    planned = dict(options.compute_settings or {})
    _set_threads(int(planned.get("torch_threads", 1)))
    adopt_specs(specs)  # methods registered in the driver (plugins, tests) are known here too
    seed_everything(seed)
    here = process_numerics(options)
    if here != planned:
        changes = "; ".join(identity_differences(planned, here))
        raise ExecutorError(f"worker {socket.gethostname()} computes with other numerics than the grid was planned "
                            f"with ({changes}); give every node the same hardware and libraries, or keep runs on one "
                            "kind of node with Ray resources")
    return _dataset(source)


def _dataset(source: DataSource) -> Dataset:
    import ray

    from scrapbench.datasets import load_dataset

    key = (source.mode, source.spec, source.preset, source.seed, source.fingerprint, source.layout)
    if key not in _DATASETS:
        if source.mode == "shipped":
            dataset = ray.get(source.shipped)
        else:
            dataset = load_dataset(source.spec, preset=source.preset, seed=source.seed)
        found = dataset_fingerprint(dataset)
        if found != source.fingerprint or layout(dataset) != source.layout:
            raise ExecutorError(f"the dataset {source.spec!r} on worker {socket.gethostname()} is not the driver's "
                                f"(fingerprint {found[:19]}… here, {source.fingerprint[:19]}… there, or other "
                                "splits); give every node the same files, or let the driver ship them "
                                "(--ray-storage ship)")
        _DATASETS.clear()  # one dataset per worker process
        _DATASETS[key] = dataset
    return _DATASETS[key]


def run_whole(source: DataSource, specs: Sequence[MethodSpec], plan: RunPlan, options: RunOptions,
              wait_for_holder: bool, retry: str | None, token: tuple[str, str] | None) -> RunResult:
    """Shared storage: the run's whole life on the worker, lease included."""
    if token is None or not probe(*token, None)[1]:
        raise ExecutorError(f"worker {socket.gethostname()} does not see the results folder {options.out} (not "
                            "shared with the driver); use --ray-storage ship")
    dataset = _enter(source, specs, options, plan.seed)
    return run_one(dataset, plan, options, wait=wait_for_holder, retry=retry)


@contextmanager
def _worker_folder() -> Iterator[Path]:
    """A temporary folder on the worker's disk; folders of killed workers are removed here."""
    with scratch_folder(Path(tempfile.gettempdir()), "scrapbench-ray-") as tmp:
        yield tmp


def compute_folder(source: DataSource, specs: Sequence[MethodSpec], plan: RunPlan, options: RunOptions,
                   attempt: str) -> bytes:
    """No shared storage: compute the run into a local temporary folder and return it as a tar archive."""
    dataset = _enter(source, specs, options, plan.seed)
    with _worker_folder() as tmp:
        folder = tmp / "run"
        folder.mkdir()
        Compute().files(dataset, plan, options, folder, attempt)
        return pack(folder)


def fit(source: DataSource, specs: Sequence[MethodSpec], plan: RunPlan, options: RunOptions) -> tuple[FitRecord, bytes]:
    """The first step of a sharded run: fit, save; the fit record and the model and work folders as a tar."""
    dataset = _enter(source, specs, options, plan.seed)
    with _worker_folder() as tmp:
        _, record = fit_run(dataset, plan, options, tmp)
        return record, pack(tmp)


def predict(source: DataSource, specs: Sequence[MethodSpec], plan: RunPlan, options: RunOptions,
            model: bytes, bounds: tuple[int, int], label: str) -> Predictions:
    """One part of a sharded run: load the fitted model, predict and evaluate ``test[lo:hi]``."""
    dataset = _enter(source, specs, options, plan.seed)
    with _worker_folder() as tmp:
        unpack(model, tmp / "model")
        return predict_shard(tmp / "model", dataset.test, bounds, options, plan, label)
