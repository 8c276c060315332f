"""Sharded prediction: one fitted method, its test set predicted in parts, the parts' statistics merged exactly.

A run with ``--shards N`` is fitted once and saved (``model/``); each part of the test set is predicted by the
method loaded from that folder, as a worker on another GPU would, and evaluated into its own evaluator; the
evaluators are merged (``scrapbench.metrics.merge``), which is exact, so the metrics equal the unsharded run's bit
for bit. Parts split the test set at batch boundaries: every batch a method sees is the one it sees unsharded.

Nothing here needs Ray: :func:`predict_in_shards` runs the parts one after another in this process (what the local
executor does, and what tests compare against); the Ray executor runs the same :func:`predict_shard` on workers.
"""

from __future__ import annotations

from pathlib import Path

from scrapbench.core.method import AnomalyMethod
from scrapbench.datasets.types import Split
from scrapbench.run.lifecycle import Predictions, RunOptions, RunPlan, predict_part


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


def predict_shard(model_dir: Path, test: Split, bounds: tuple[int, int], options: RunOptions, plan: RunPlan,
                  label: str = "") -> Predictions:
    """Load the fitted method from ``model_dir`` and predict ``test[lo:hi]`` (read lazily, batch by batch)."""
    method = AnomalyMethod.load(model_dir, device=options.device)
    method.precision = plan.identity["compute"]["precision"]  # the run's resolved --precision, as fit had it
    lo, hi = bounds
    return predict_part(method, test.subset(range(lo, hi)), options, plan, num_test=len(test), label=label)


def predict_in_shards(model_dir: Path, test: Split, options: RunOptions, plan: RunPlan) -> list[Predictions]:
    """Every part of ``test`` predicted here, one after another, by a method loaded from ``model_dir``."""
    bounds = shard_bounds(len(test), options.shards, options.batch_size)
    return [predict_shard(model_dir, test, part, options, plan, label=f" shard {index + 1}/{len(bounds)}")
            for index, part in enumerate(bounds)]
