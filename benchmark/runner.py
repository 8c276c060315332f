"""``scrapbench run``: every (method, seed) pair on one dataset, resumable, written atomically.

Each run folder is complete only when ``run.json`` exists (it is written last), so an interrupted
benchmark loses at most the run in progress; a second invocation skips finished runs.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from scrapbench import __version__
from scrapbench.datasets.types import Dataset
from scrapbench.environment import PeakMemory, device_description, git_commit, library_versions
from scrapbench.method import AnomalyMethod, FitContext, check_maps, config_to_dict
from scrapbench.registry import create_method, get_spec
from scrapbench.seeding import seed_everything
from scrapbench.store import atomic_write_bytes, atomic_write_json, atomic_write_text, is_finished, run_dir

MAX_MAPS_SAVED_BY_DEFAULT = 500


@dataclass(frozen=True)
class RunOptions:
    """Everything that decides a run besides the method name and the seed."""

    preset: str = "cpu"
    device: str = "cpu"
    out: Path = Path("runs")
    dataset_spec: str = "synthetic"
    data_seed: int = 0
    save_maps: bool | None = None  # None: save when the test split is small
    batch_size: int = 8
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)  # method → field → value
    overwrite: bool = False
    show_progress: bool = True


@dataclass
class RunResult:
    method: str
    seed: int
    directory: Path
    status: str  # "done", "skipped", "failed"
    metrics: dict[str, Any] | None = None
    error: str | None = None


class ConfigMismatchError(RuntimeError):
    """A finished run exists with another configuration than the one asked for."""


def dataset_slug(dataset: Dataset, options: RunOptions) -> str:
    if options.dataset_spec == "synthetic":
        return f"synthetic-seed{options.data_seed}"
    return dataset.name


def run_benchmark(
    dataset: Dataset,
    methods: Sequence[str],
    seeds: Sequence[int],
    options: RunOptions,
    on_result: Callable[[RunResult], None] | None = None,
) -> list[RunResult]:
    """Run every (method, seed); finished runs are skipped, failures are recorded and reported."""
    results = []
    pairs = [(m, s) for m in methods for s in seeds]
    for method_name, seed in tqdm(pairs, desc="runs", unit="run", disable=not options.show_progress):
        result = run_one(dataset, method_name, seed, options)
        results.append(result)
        if on_result is not None:
            on_result(result)
    return results


def run_one(dataset: Dataset, method_name: str, seed: int, options: RunOptions) -> RunResult:
    """Fit, predict and evaluate one method with one seed; write its run folder."""
    directory = run_dir(options.out, dataset_slug(dataset, options), options.preset, method_name, seed)
    method = create_method(method_name, dataset.class_names, options.preset, options.overrides.get(method_name))
    config = config_to_dict(method.config)
    if is_finished(directory):
        done = json.loads((directory / "run.json").read_text())
        same_config = done.get("config") == json.loads(json.dumps(config))
        if same_config and not options.overwrite:
            return RunResult(method_name, seed, directory, "skipped", _read_metrics(directory))
        if not same_config and not options.overwrite:
            raise ConfigMismatchError(
                f"{directory}: a finished run with a different config exists; use another --out, "
                f"or --overwrite to replace it"
            )
    if directory.exists():  # an interrupted or failed attempt: start it again from scratch
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    try:
        metrics = _execute(dataset, method, method_name, seed, options, directory)
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # one broken method must not stop the others; the record says why
        atomic_write_json(directory / "error.json", {"method": method_name, "seed": seed, "error": repr(exc),
                                                     "traceback": traceback.format_exc()})
        return RunResult(method_name, seed, directory, "failed", error=f"{type(exc).__name__}: {exc}")
    return RunResult(method_name, seed, directory, "done", metrics)


def _execute(
    dataset: Dataset, method: AnomalyMethod, name: str, seed: int, options: RunOptions, directory: Path
) -> dict[str, Any]:
    from scrapbench.metrics import PixelMetrics

    workdir = directory / "work"
    workdir.mkdir()
    seed_everything(seed)
    ctx = FitContext(seed=seed, device=options.device, workdir=workdir, class_names=dataset.class_names,
                     show_progress=options.show_progress)
    with PeakMemory() as memory:
        start = time.perf_counter()
        method.fit(dataset.train, ctx)
        fit_s = time.perf_counter() - start

        metrics = PixelMetrics(class_names=dataset.class_names)
        save_maps = options.save_maps
        if save_maps is None:
            save_maps = len(dataset.test) <= MAX_MAPS_SAVED_BY_DEFAULT
        kept_maps: dict[str, np.ndarray] = {}
        rows = []
        predict_s = 0.0
        batches = range(0, len(dataset.test), options.batch_size)
        for begin in tqdm(batches, desc=f"{name} seed {seed}: predict", unit="batch", leave=False,
                          disable=not options.show_progress):
            samples = dataset.test[begin:begin + options.batch_size]
            images = [s.image for s in samples]
            start = time.perf_counter()
            maps = check_maps(method.predict(images), images, name)
            predict_s += time.perf_counter() - start
            ids = [s.id for s in samples]
            metrics.update(np.stack(maps), np.stack([s.mask for s in samples]), ids=ids)
            for sample, amap in zip(samples, maps, strict=True):
                rows.append({"id": sample.id, "is_anomalous": int(sample.is_anomalous),
                             "image_score": float(amap.max()), "anomalous_pixels": int((sample.mask > 0).sum())})
                if save_maps:
                    kept_maps[sample.id] = amap.astype(np.float16)
    result = metrics.compute()

    atomic_write_json(directory / "metrics.json", result)
    metrics.save(directory / "metrics_state.npz")
    atomic_write_text(directory / "per_image.csv", _csv(rows))
    if save_maps:
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **kept_maps)
        atomic_write_bytes(directory / "maps.npz", buffer.getvalue())
    method.save(directory / "model")
    spec = get_spec(name)
    record = {
        "scrapbench_version": __version__,
        "method": name,
        "description": spec.description,
        "suites": list(spec.suites),
        "learning_type": getattr(method.learning_type, "value", str(method.learning_type)),
        "seed": seed,
        "preset": options.preset,
        "dataset": {"name": dataset.name, "spec": options.dataset_spec, "seed": options.data_seed,
                    "class_names": list(dataset.class_names), "num_train": len(dataset.train),
                    "num_test": len(dataset.test)},
        "config": config_to_dict(method.config),
        "weights": method.weights_info(),
        "device": device_description(options.device),
        "timings": {"fit_s": round(fit_s, 3), "predict_s": round(predict_s, 3),
                    "predict_images_per_s": round(len(dataset.test) / predict_s, 3) if predict_s else None,
                    "peak_rss_mb": round(memory.peak_mb, 1)},
        "versions": library_versions(),
        "git": git_commit(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    atomic_write_json(directory / "run.json", record)  # last: marks the run finished
    return result


def _csv(rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["id", "is_anomalous", "image_score", "anomalous_pixels"])
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _read_metrics(directory: Path) -> dict[str, Any] | None:
    path = directory / "metrics.json"
    return json.loads(path.read_text()) if path.is_file() else None
