"""Bootstrap over test images: a confidence interval for one run, and the paired comparison of two runs.

Images are resampled with replacement; each replicate's pooled histograms are the per-image histograms summed with
the resampling counts (one matrix product for many replicates), and the pooled metrics are recomputed from them.
The per-image histograms are coarse (``bootstrap_bins``, 1024 by default, nested in the fine grid), so replicate values
carry a small grid bias; each replicate is shifted by ``(fine estimate − coarse estimate)`` on the full set, so the
intervals sit around the exact point estimate. Region counts, image maxima and labels are exact.

``paired_bootstrap`` resamples the *same* images for both runs, so it measures the method difference, not the test-set
sampling noise shared by both. Its p-value is the two-sided bootstrap test: twice the share of replicates whose
difference lies on the far side of zero (with +1 smoothing), capped at 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from . import curves, summary
from .inputs import MetricsError
from .state import Statistics, gather
from .summary import IMAGE_METRICS, PIXEL_METRICS

_CHUNK = 100  # replicates per matrix product: bounds memory to a few MB


@dataclass(frozen=True)
class _ImageStats:
    neg: np.ndarray  # [n, bins] normal-pixel counts per image
    anomalous_rows: np.ndarray  # rows (image positions) of images with anomalous pixels
    pos: np.ndarray  # [a, bins]
    pro: np.ndarray  # [a, bins]
    regions: np.ndarray  # [n] regions per image
    image_max: np.ndarray  # [n]
    anomalous: np.ndarray  # [n] bool
    pixels: np.ndarray  # [n]
    fpr_limit: float


def _stats(m: Statistics, order: np.ndarray | None = None) -> _ImageStats:
    """Per-image statistics, rows permuted so that row ``p`` is stored image ``order[p]``."""
    n = m.count
    order = np.arange(n) if order is None else order
    position = np.empty(n, np.int64)
    position[order] = np.arange(n)
    regions = np.bincount(gather(m, "regions", "image"), minlength=n).astype(np.float64)
    return _ImageStats(
        neg=gather(m, "images", "neg")[order].astype(np.float64),
        anomalous_rows=position[gather(m, "anomalous_images", "index")],
        pos=gather(m, "anomalous_images", "pos").astype(np.float64),
        pro=gather(m, "anomalous_images", "pro"),
        regions=regions[order],
        image_max=gather(m, "images", "max")[order],
        anomalous=gather(m, "images", "anomalous")[order],
        pixels=gather(m, "images", "pixels")[order],
        fpr_limit=m.fpr_limit,
    )


def _values(stats: _ImageStats, metric: str, counts: np.ndarray) -> np.ndarray:
    """Metric for each row of resampling ``counts`` [replicates, images]."""
    if metric in IMAGE_METRICS:
        order = np.argsort(stats.image_max, kind="stable")
        scores = stats.image_max[order]
        starts = np.flatnonzero(np.r_[True, scores[1:] != scores[:-1]])
        weights = counts[:, order]
        label = stats.anomalous[order]
        pos = np.add.reduceat(weights * label, starts, axis=1)
        neg = np.add.reduceat(weights * ~label, starts, axis=1)
        return curves.auroc(pos, neg) if metric == "image_auroc" else curves.average_precision(pos, neg)
    neg = counts @ stats.neg
    anomalous_counts = counts[:, stats.anomalous_rows]
    pos = anomalous_counts @ stats.pos
    if metric == "auroc":
        return curves.auroc(pos, neg)
    if metric == "ap":
        return curves.average_precision(pos, neg)
    if metric == "f1max":
        return curves.f1_max(pos, neg)[0]
    pro = anomalous_counts @ stats.pro
    return curves.aupro(pro, neg, counts @ stats.regions, stats.fpr_limit)


def _replicates(stats: list[_ImageStats], metric: str, n_boot: int, seed: int) -> list[np.ndarray]:
    n = len(stats[0].image_max)
    rng = np.random.default_rng(seed)
    out: list[list[np.ndarray]] = [[] for _ in stats]
    for start in range(0, n_boot, _CHUNK):
        counts = rng.multinomial(n, np.full(n, 1.0 / n), size=min(_CHUNK, n_boot - start)).astype(np.float64)
        for values, s in zip(out, stats, strict=True):
            values.append(_values(s, metric, counts))
    return [np.concatenate(v) for v in out]


def _point(m: Statistics, metric: str, stats: _ImageStats) -> tuple[float, float]:
    """(exact value, value on the coarse per-image grid) of ``metric`` on the full set."""
    if metric not in PIXEL_METRICS + IMAGE_METRICS:
        raise MetricsError(f"cannot bootstrap {metric!r}; choose from {PIXEL_METRICS + IMAGE_METRICS}")
    if metric == "aupro" and m.compat != "mvtec":
        raise MetricsError("the bootstrap uses the MVTec AUPRO; evaluate with compat='mvtec'")
    value = summary.summarise(m)[metric]
    if value is None:
        raise MetricsError(f"{metric} is undefined for this test set (needs normal and anomalous images)")
    coarse = float(_values(stats, metric, np.ones((1, m.count)))[0])
    return float(value), coarse


def _check(n_boot: int, ci: float) -> None:
    if n_boot < 1:
        raise MetricsError(f"n_boot must be ≥ 1; got {n_boot}")
    if not 0 < ci < 1:
        raise MetricsError(f"ci must be in (0, 1); got {ci}")


def _interval(values: np.ndarray, ci: float) -> tuple[float, float, int]:
    valid = values[~np.isnan(values)]
    if valid.size == 0:
        raise MetricsError("every bootstrap replicate was undefined (too few anomalous or normal images)")
    low, high = np.percentile(valid, [50 * (1 - ci), 50 * (1 + ci)])
    return float(low), float(high), int(valid.size)


def bootstrap_ci(m: Statistics, metric: str, n_boot: int = 1000, seed: int = 0,
                 ci: float = 0.95) -> dict[str, Any]:
    """Percentile confidence interval of ``metric`` over bootstrap resamples of the test images."""
    _check(n_boot, ci)
    stats = _stats(m)
    value, coarse = _point(m, metric, stats)
    values = _replicates([stats], metric, n_boot, seed)[0] + (value - coarse)
    low, high, valid = _interval(values, ci)
    return {"metric": metric, "value": value, "low": low, "high": high, "std": float(np.nanstd(values)),
            "ci": ci, "n_boot": n_boot, "n_valid": valid}


def _aligned_order(a: Statistics, b: Statistics) -> np.ndarray:
    """Positions in ``b`` of ``a``'s images, after checking both saw the same images and masks."""
    if len(a.ids) != len(b.ids) or set(a.ids) != set(b.ids):
        only_a, only_b = sorted(set(a.ids) - set(b.ids)), sorted(set(b.ids) - set(a.ids))
        raise MetricsError(f"a and b were evaluated on different images ({len(a.ids)} vs {len(b.ids)}; "
                           f"only in a: {only_a[:5]}, only in b: {only_b[:5]})")
    where = {image: i for i, image in enumerate(b.ids)}
    return np.array([where[image] for image in a.ids], np.int64)


def paired_bootstrap(a: Statistics, b: Statistics, metric: str, n_boot: int = 1000, seed: int = 0,
                     ci: float = 0.95) -> dict[str, Any]:
    """Difference ``metric(a) − metric(b)`` with a paired bootstrap interval and two-sided p-value."""
    _check(n_boot, ci)
    stats_a, stats_b = _stats(a), _stats(b, _aligned_order(a, b))
    if not (np.array_equal(stats_a.anomalous, stats_b.anomalous) and np.array_equal(stats_a.pixels, stats_b.pixels)
            and np.array_equal(stats_a.regions, stats_b.regions)):
        raise MetricsError("a and b share image ids but not the same masks (anomalous images, sizes or regions "
                           "differ); a paired comparison needs the same ground truth")
    value_a, coarse_a = _point(a, metric, stats_a)
    value_b, coarse_b = _point(b, metric, stats_b)
    diff = value_a - value_b
    reps_a, reps_b = _replicates([stats_a, stats_b], metric, n_boot, seed)
    diffs = (reps_a - reps_b) + (diff - (coarse_a - coarse_b))
    low, high, valid = _interval(diffs, ci)
    finite = diffs[~np.isnan(diffs)]
    below, above = (np.sum(finite <= 0) + 1) / (finite.size + 1), (np.sum(finite >= 0) + 1) / (finite.size + 1)
    return {"metric": metric, "a": value_a, "b": value_b, "diff": diff, "low": low, "high": high,
            "p_value": float(min(1.0, 2 * min(below, above))), "ci": ci, "n_boot": n_boot, "n_valid": valid}
