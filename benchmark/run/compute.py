"""Computing one run's files: fit the method, predict the test set (whole or in parts), finish the folder.

:class:`Compute` says where each step happens. Its default computes everything in this process; an executor that
computes elsewhere overrides a step (the Ray executor: the whole folder on a worker, or the fit on one worker and
the prediction parts on others). Whatever runs where, :func:`finish_run` merges the parts' evaluator statistics
exactly (``scrapbench.metrics.merge``), so a run predicted in parts has the unsharded run's metrics bit for bit.
Parts split the test set at batch boundaries: every batch a method sees is the one it sees unsharded.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from scrapbench import __version__
from scrapbench.core.method import AnomalyMethod, FitContext, LearningType, check_maps, check_scores, config_to_dict
from scrapbench.core.registry import create_method, get_spec
from scrapbench.datasets.protocols import benchmark_record
from scrapbench.datasets.types import Dataset, Sample, Split
from scrapbench.run.cost import cost_record, flops_per_image
from scrapbench.run.plan import RunOptions, RunPlan
from scrapbench.run.provenance import (
    NondeterminismMonitor,
    PeakMemory,
    device_description,
    git_commit,
    library_versions,
    seed_everything,
)
from scrapbench.storage.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text
from scrapbench.storage.npz import npz_bytes

MAX_MAPS_SAVED_BY_DEFAULT = 500


@dataclass
class FitRecord:
    """What fitting a run recorded, wherever it ran: the method's facts, the cost, the environment."""

    learning_type: str
    config: dict[str, Any]
    weights: dict[str, Any]
    fit_s: float
    peak_rss_mb: float
    nondeterministic_ops: list[str]
    environment: dict[str, Any]  # device, versions, git commit, CPU model of the fitting process
    peak_cuda_mb: float | None = None  # torch's allocator peak on a CUDA device, else None
    parameters: tuple[int, int] | None = None  # (total, trained) of the fitted method, None: no torch networks


@dataclass
class Predictions:
    """A fitted method's output on (part of) the test set, in test order: evaluator statistics, rows, maps."""

    metrics: Any  # scrapbench.metrics.PixelMetrics
    rows: list[dict[str, Any]]
    maps: dict[str, np.ndarray]  # float16 maps by image id, when kept
    predict_s: float
    peak_rss_mb: float
    nondeterministic_ops: list[str]
    peak_cuda_mb: float | None = None
    flops_per_image: int | None = None  # counted on the part's first image when asked (scrapbench.run.cost)
    flops_error: str | None = None  # why the count failed (the predictions stand)


class Compute:
    """Where a run's files are computed: this class computes every step in this process.

    :meth:`files` fills an empty folder (``run.json`` last) and returns the metrics; it fits (:meth:`fit`),
    predicts the test set (:meth:`predict`: whole, or in ``options.shards`` parts) and finishes the folder here.
    Override :meth:`files` to compute the whole folder elsewhere, or :meth:`fit` and :meth:`predict` to compute
    those steps elsewhere and merge and write the folder here.
    """

    def files(self, dataset: Dataset, plan: RunPlan, options: RunOptions, folder: Path, attempt: str) -> dict[str, Any]:
        method, fitted = self.fit(dataset, plan, options, folder)
        parts = self.predict(method, dataset, plan, options, folder)
        return finish_run(folder, dataset, plan, options, fitted, parts, attempt)

    def fit(self, dataset: Dataset, plan: RunPlan, options: RunOptions,
            folder: Path) -> tuple[AnomalyMethod | None, FitRecord]:
        """The fitted method (``None`` when it was fitted elsewhere) and its record; ``folder/model`` holds it."""
        return fit_run(dataset, plan, options, folder)

    def predict(self, method: AnomalyMethod | None, dataset: Dataset, plan: RunPlan, options: RunOptions,
                folder: Path) -> list[Predictions]:
        """The test set's predictions, in parts when ``options.shards`` > 1 (each part from ``folder/model``)."""
        if options.shards > 1:
            bounds = shard_bounds(len(dataset.test), options.shards, options.batch_size)
            return [predict_shard(folder / "model", dataset.test, part, options, plan, shard_label(index, bounds))
                    for index, part in enumerate(bounds)]
        assert method is not None
        return [predict_part(method, dataset.test, options, plan)]


def one_line_error(exc: BaseException) -> str:
    """``Type: first line of the message`` (the full text and traceback stay in error.json)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[0] if lines else ""
    if len(lines) > 1 or len(text) > 300:
        text = text[:300] + " …"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class MethodBuildError(RuntimeError):
    """A method could not be built from its config (often: its weights file); says which file."""


def build_method(name: str, dataset: Dataset, options: RunOptions) -> AnomalyMethod:
    """``create_method``, with the configured weights named in the error when building fails."""
    try:
        return create_method(name, dataset.class_names, options.preset, options.overrides.get(name))
    except Exception as exc:
        field_name = get_spec(name).load_class().weights_field
        weights = (options.overrides.get(name) or {}).get(field_name) if field_name else None
        source = f" from weights {weights}" if weights is not None else ""
        raise MethodBuildError(f"{name} could not be built{source} ({one_line_error(exc)})") from exc


def fit_run(dataset: Dataset, plan: RunPlan, options: RunOptions, directory: Path) -> tuple[AnomalyMethod, FitRecord]:
    """Build and fit the method (scratch space ``directory/work``) and save it to ``directory/model``."""
    seed_everything(plan.seed)  # a method may draw its initial weights when built
    method = build_method(plan.method, dataset, options)
    workdir = directory / "work"
    workdir.mkdir()
    seed_everything(plan.seed)
    ctx = FitContext(seed=plan.seed, device=options.device, workdir=workdir, class_names=dataset.class_names,
                     show_progress=options.show_progress, verbose=options.verbose, object_name=dataset.object_name,
                     precision=plan.identity["compute"]["precision"])
    with PeakMemory(device=options.device) as memory, NondeterminismMonitor() as nondeterminism:
        start = time.perf_counter()
        method.fit(dataset.train, ctx)
        fit_s = time.perf_counter() - start
    method.save(directory / "model")
    record = FitRecord(
        learning_type=LearningType(type(method).learning_type_for(method.config)).value,
        config=config_to_dict(method.config), weights=method.weights_info(), fit_s=fit_s,
        peak_rss_mb=memory.peak_mb, nondeterministic_ops=sorted(nondeterminism.ops),
        environment={"device": device_description(options.device), "versions": library_versions(),
                     "git": git_commit(), "cpu_model": nondeterminism.record()["cpu_model"]},
        peak_cuda_mb=memory.peak_cuda_mb, parameters=method.parameter_counts())
    return method, record


def keep_maps(options: RunOptions, num_test: int) -> bool:
    return options.save_maps if options.save_maps is not None else num_test <= MAX_MAPS_SAVED_BY_DEFAULT


def predict_part(method: AnomalyMethod, samples: Sequence[Sample], options: RunOptions, plan: RunPlan, *,
                 num_test: int | None = None, label: str = "", count_flops: bool = True) -> Predictions:
    """Predict ``samples`` in batches of ``options.batch_size`` and evaluate them (``num_test``: the whole test
    set's size, which decides whether maps are kept; default ``len(samples)``). ``count_flops``: then count the
    FLOPs of predicting the first sample, outside the timed and measured loop (``scrapbench.run.cost``)."""
    from scrapbench.metrics import PixelMetrics

    save_maps = keep_maps(options, len(samples) if num_test is None else num_test)
    metrics = PixelMetrics(class_names=method.class_names)
    kept_maps: dict[str, np.ndarray] = {}
    rows = []
    predict_s = 0.0
    batches = range(0, len(samples), options.batch_size)
    with PeakMemory(device=options.device) as memory, NondeterminismMonitor() as nondeterminism:
        for begin in tqdm(batches, desc=f"{plan.method} seed {plan.seed}: predict{label}", unit="batch", leave=False,
                          disable=not options.show_progress):
            batch = samples[begin:begin + options.batch_size]
            images = [s.image for s in batch]
            start = time.perf_counter()
            maps, scores = method.predict_with_scores(images)
            maps, scores = check_maps(maps, images, plan.method), check_scores(scores, images, plan.method)
            predict_s += time.perf_counter() - start
            metrics.update(np.stack(maps), np.stack([s.mask for s in batch]), ids=[s.id for s in batch])
            for sample, amap, score in zip(batch, maps, scores, strict=True):
                rows.append({"id": sample.id, "is_anomalous": int(sample.is_anomalous),
                             "image_score": score, "anomalous_pixels": int((sample.mask > 0).sum())})
                if save_maps:
                    kept_maps[sample.id] = amap.astype(np.float16)
    flops, flops_error = None, None
    if count_flops and len(samples):
        try:
            flops = flops_per_image(method, samples[0].image, options.device)
        except Exception as exc:  # a count the counter cannot make must not cost the run its predictions
            flops_error = one_line_error(exc)
    return Predictions(metrics, rows, kept_maps, predict_s, memory.peak_mb, sorted(nondeterminism.ops),
                       memory.peak_cuda_mb, flops, flops_error)


def shard_bounds(num_samples: int, shards: int, batch_size: int) -> list[tuple[int, int]]:
    """``[lo, hi)`` of at most ``shards`` non-empty parts, each a run of whole batches, as even as batches allow."""
    if shards < 1 or batch_size < 1:
        raise ValueError(f"shards and batch size must be at least 1 (got {shards}, {batch_size})")
    batches = -(-num_samples // batch_size)
    parts = min(shards, batches)
    if parts == 0:
        return []
    base, extra = divmod(batches, parts)
    bounds, start = [], 0
    for index in range(parts):
        stop = start + base + (index < extra)
        bounds.append((start * batch_size, min(stop * batch_size, num_samples)))
        start = stop
    return bounds


def shard_label(index: int, bounds: Sequence[tuple[int, int]]) -> str:
    """The progress bar's name of a part: `` shard 2/4``."""
    return f" shard {index + 1}/{len(bounds)}"


def predict_shard(model_dir: Path, test: Split, bounds: tuple[int, int], options: RunOptions, plan: RunPlan,
                  label: str = "") -> Predictions:
    """Load the fitted method from ``model_dir`` (as a worker on another GPU would) and predict ``test[lo:hi]``
    (read lazily, batch by batch). The part that starts the test set counts the FLOPs per image, on the image
    an unsharded run counts them on."""
    method = AnomalyMethod.load(model_dir, device=options.device)
    method.precision = plan.identity["compute"]["precision"]  # the run's resolved --precision, as fit had it
    lo, hi = bounds
    return predict_part(method, test.subset(range(lo, hi)), options, plan, num_test=len(test), label=label,
                        count_flops=lo == 0)


def finish_run(directory: Path, dataset: Dataset, plan: RunPlan, options: RunOptions, fitted: FitRecord,
               parts: Sequence[Predictions], attempt: str) -> dict[str, Any]:
    """Merge the parts' statistics (exactly: ``metrics.merge``), write the run's files, ``run.json`` last."""
    from scrapbench.metrics.merge import merge

    metrics = parts[0].metrics if len(parts) == 1 else merge([part.metrics for part in parts])
    result = metrics.compute()
    rows = [row for part in parts for row in part.rows]
    kept_maps = {key: value for part in parts for key, value in part.maps.items()}
    atomic_write_json(directory / "metrics.json", result)
    metrics.save(directory / "metrics_state.npz")
    atomic_write_text(directory / "per_image.csv", _csv(rows))
    if keep_maps(options, len(dataset.test)):
        atomic_write_bytes(directory / "maps.npz", npz_bytes(kept_maps))  # keyed by test image id
    predict_s = sum(part.predict_s for part in parts)
    ops = sorted(set(fitted.nondeterministic_ops).union(*(part.nondeterministic_ops for part in parts)))
    spec = get_spec(plan.method)
    environment = fitted.environment
    record = {
        "scrapbench_version": __version__,
        "method": plan.method,
        "description": spec.description,
        "display_name": spec.load_class().display_name,
        "suites": list(spec.suites),
        "learning_type": fitted.learning_type,
        "seed": plan.seed,
        "preset": options.preset,
        "identity": plan.identity,
        "attempt": attempt,
        "dataset": {"name": dataset.name, "spec": options.dataset_spec, "seed": options.data_seed,
                    "fingerprint": plan.identity["dataset_fingerprint"],
                    "class_names": list(dataset.class_names), "num_train": len(dataset.train),
                    "num_test": len(dataset.test), **benchmark_record(dataset)},
        "config": fitted.config,
        "weights": fitted.weights,
        "device": environment["device"],
        "precision": plan.identity["compute"]["precision"],  # the resolved --precision
        # kernels without a deterministic variant that ran, CPU model
        "determinism": {"deterministic": not ops, "nondeterministic_ops": ops, "cpu_model": environment["cpu_model"]},
        "timings": {"fit_s": round(fitted.fit_s, 3), "predict_s": round(predict_s, 3),
                    "predict_images_per_s": round(len(dataset.test) / predict_s, 3) if predict_s else None,
                    "peak_rss_mb": round(max([fitted.peak_rss_mb, *(part.peak_rss_mb for part in parts)]), 1)},
        "cost": cost_record(fitted, parts),
        "execution": {**(options.execution or {"executor": "local"}), "shards": len(parts)},
        "versions": environment["versions"],
        "git": environment["git"],
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
