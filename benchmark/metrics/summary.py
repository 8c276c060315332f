"""Turn the statistics of an evaluator (``state.Statistics``) into the metrics dictionary and the curves for figures.

Breakdowns (all at the F1-max threshold where a threshold is needed, so they describe the operating point a user of
``scrapbench predict`` gets):

- ``per_class[name]``: the test is binary, so per class we report how well that class is *found*: ``pixel_auroc``
  (its pixels against all normal pixels), ``aupro`` (its regions, FPR over all normal pixels), ``pixel_recall`` and
  ``region_recall`` (share of its regions with at least half of their pixels at or above the threshold). A region's
  class is the most frequent class index inside it.
- ``per_size[small|medium|large]``: the same region measures by region area as a fraction of its image
  (``area_fraction`` gives the cut-offs; at 512×512 they are COCO's 32² and 96² pixels).

Undefined secondary values (a class absent from the test set, image metrics when all images are anomalous) are None.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import curves
from .inputs import MetricsError
from .regions import PRO_WEIGHT_BITS, SIZE_NAMES
from .state import Statistics, gather

#: The headline metrics of every run's metrics.json (pixel, then image level), in the order reports show them.
PIXEL_METRICS = ("auroc", "aupro", "ap", "f1max")
IMAGE_METRICS = ("image_auroc", "image_ap")
HEADLINE_METRICS = PIXEL_METRICS + IMAGE_METRICS

ANOMALYCLIP_STEPS = 200  # AnomalyCLIP's AUPRO recipe: linear thresholds between the smallest and largest score


def _pooled(m: Statistics) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    if m.count == 0 or m.grid is None:
        raise MetricsError("no maps were added: call update(maps, masks) first")
    pos, pro = m.pos.sum(axis=0), m.pro_size.sum(axis=0)
    total_pos, total_neg = int(pos.sum()), int(m.neg.sum())
    if total_pos == 0:
        raise MetricsError(f"no anomalous pixel in the {m.count} images evaluated: pixel AUROC, AP, F1-max and "
                           "AUPRO are undefined (are the masks all 0?)")
    if total_neg == 0:
        raise MetricsError(f"no normal pixel in the {m.count} images evaluated: pixel AUROC and AUPRO are undefined")
    return pos, m.neg, pro, len(gather(m, "regions", "size"))


def _value(x: Any) -> float | None:
    x = float(x)
    return None if np.isnan(x) else x


def summarise(m: Statistics) -> dict[str, Any]:
    """The metrics dictionary returned by ``PixelMetrics.compute()`` (JSON-serialisable)."""
    pos, neg, pro, n_regions = _pooled(m)
    assert m.grid is not None
    f1, best = curves.f1_max(pos, neg)
    threshold = float(m.grid.edge(int(best)))
    aupro_mvtec = float(curves.aupro(pro, neg, n_regions, m.fpr_limit))
    result: dict[str, Any] = {
        "auroc": float(curves.auroc(pos, neg)),
        "aupro": aupro_mvtec if m.compat == "mvtec" else _aupro_anomalyclip(m, pro, neg, n_regions),
        "ap": float(curves.average_precision(pos, neg)),
        "f1max": float(f1),
        "f1max_threshold": threshold,
    }
    if m.compat != "mvtec":
        result["aupro_mvtec"] = aupro_mvtec
    result.update(_image_level(m))
    result["per_class"] = _per_class(m, neg, int(best), threshold)
    result["per_size"] = _per_size(m, neg, threshold)
    result.update({
        "fpr_limit": m.fpr_limit,
        "compat": m.compat,
        "num_images": m.count,
        "num_anomalous_images": int(gather(m, "images", "anomalous").sum()),
        "num_regions": n_regions,
        "anomalous_pixels": int(pos.sum()),
        "normal_pixels": int(neg.sum()),
        "grid": {"bins": m.bins, "bin_width": m.grid.width, "score_min": m.score_min, "score_max": m.score_max,
                 "bins_spanned": m.grid.bin_of(m.score_max) - m.grid.bin_of(m.score_min) + 1},
        "grid_error_bound": _error_bounds(m, pos, neg, pro, n_regions),
    })
    return result


def _error_bounds(m: Statistics, pos: np.ndarray, neg: np.ndarray, pro: np.ndarray,
                  n_regions: int) -> dict[str, float]:
    assert m.grid is not None
    if m.integer_scores and m.grid.width <= 1:
        # Integer scores on bins at most 1 wide: each bin holds one distinct score, so the grid is lossless.
        bounds = dict.fromkeys(("auroc", "ap", "f1max", "aupro"), 0.0)
    else:
        bounds = curves.error_bounds(pos, neg, pro, n_regions, m.fpr_limit)
    # Region weights are whole 2**-32 units (regions.pro_weights): PRO is within that of pixels / area.
    bounds["aupro"] += 2.0 ** -PRO_WEIGHT_BITS
    return bounds


def _aupro_anomalyclip(m: Statistics, pro: np.ndarray, neg: np.ndarray, n_regions: int) -> float:
    assert m.grid is not None
    low, high = m.score_min, m.score_max
    if high <= low:
        raise MetricsError("AnomalyCLIP AUPRO recipe is undefined: every score is equal")
    thresholds = np.arange(low, high, (high - low) / ANOMALYCLIP_STEPS)
    first_above = np.floor(np.ldexp(thresholds, -m.grid.exponent)).astype(np.int64) - m.grid.offset + 1
    try:
        return curves.aupro_anomalyclip(pro, neg, n_regions, np.clip(first_above, 0, m.bins), m.fpr_limit)
    except ValueError as exc:
        raise MetricsError(str(exc)) from exc


def _image_level(m: Statistics) -> dict[str, float | None]:
    scores, labels = gather(m, "images", "max"), gather(m, "images", "anomalous")
    if labels.all() or not labels.any():
        return {"image_auroc": None, "image_ap": None}
    _, pos, neg = curves.counts_by_score(scores, labels)
    return {"image_auroc": float(curves.auroc(pos, neg)), "image_ap": float(curves.average_precision(pos, neg))}


def _region_measures(m: Statistics, selected: np.ndarray, pro: np.ndarray, neg: np.ndarray,
                     threshold: float) -> dict[str, Any]:
    half = gather(m, "regions", "half_score")[selected]
    count = int(selected.sum())
    return {"regions": count,
            "aupro": _value(curves.aupro(pro, neg, count, m.fpr_limit)) if count else None,
            "region_recall": float(np.mean(half >= threshold)) if count else None}


def _per_class(m: Statistics, neg: np.ndarray, best: int, threshold: float) -> dict[str, dict[str, Any]]:
    if m.class_names is not None:
        named = [(v, name) for v, name in enumerate(m.class_names, start=1)]
    else:
        named = [(int(v), f"class_{int(v)}") for v in m.class_values]
    region_class = gather(m, "regions", "class_value")
    out = {}
    for value, name in named:
        rows = np.flatnonzero(m.class_values == value)
        class_pos = m.pos[rows[0]] if rows.size else np.zeros(m.bins, np.int64)
        class_pro = m.pro_class[rows[0]] if rows.size else np.zeros(m.bins)
        pixels = int(class_pos.sum())
        entry = {"pixels": pixels,
                 "pixel_auroc": _value(curves.auroc(class_pos, neg)) if pixels else None,
                 "pixel_recall": float(class_pos[best:].sum() / pixels) if pixels else None}
        entry.update(_region_measures(m, region_class == value, class_pro, neg, threshold))
        out[name] = entry
    return out


def _per_size(m: Statistics, neg: np.ndarray, threshold: float) -> dict[str, dict[str, Any]]:
    sizes = gather(m, "regions", "size")
    bounds = (0.0, *m.size_cutoffs, None)
    out = {}
    for index, name in enumerate(SIZE_NAMES):
        entry: dict[str, Any] = {"area_fraction": [bounds[index], bounds[index + 1]]}
        entry.update(_region_measures(m, sizes == index, m.pro_size[index], neg, threshold))
        out[name] = entry
    return out


def curve_data(m: Statistics, max_points: int = 1000) -> dict[str, dict[str, list[float]]]:
    """ROC, PR and PRO points (each ≤ ``max_points``) for figures."""
    pos, neg, pro, n_regions = _pooled(m)
    assert m.grid is not None
    edges = m.grid.edge(np.arange(m.bins))
    top = float(m.grid.edge(m.grid.bin_of(m.score_max) + 1))
    return curves.curve_points(pos, neg, pro, n_regions, edges, top, m.fpr_limit, max_points)


def per_image(m: Statistics) -> dict[str, Any]:
    """Per test image, in ``m.ids`` order: ``ap`` and ``auroc`` of its own pixels (NaN on an image without
    anomalous pixels), computed on the per-image histograms the bootstrap resamples (``bootstrap_bins`` bins, so
    close to, not bit-equal with, an exact per-image value); ``max``, its highest score (exact); ``sizes``, a
    bit mask of the size classes of its regions (bit k: ``SIZE_NAMES[k]``); ``classes``, a bit mask of its
    regions' class values (bit v − 1: class value v)."""
    n = m.count
    neg = gather(m, "images", "neg")
    rows = gather(m, "anomalous_images", "index")
    pos = gather(m, "anomalous_images", "pos")
    ap, auroc = np.full(n, np.nan), np.full(n, np.nan)
    if rows.size:
        ap[rows] = curves.average_precision(pos, neg[rows])
        auroc[rows] = curves.auroc(pos, neg[rows])
    region_image = gather(m, "regions", "image")
    sizes, classes = np.zeros(n, np.int64), np.zeros(n, np.int64)
    np.bitwise_or.at(sizes, region_image, 1 << gather(m, "regions", "size"))
    np.bitwise_or.at(classes, region_image, 1 << (gather(m, "regions", "class_value") - 1))
    return {"ids": list(m.ids), "ap": ap, "auroc": auroc, "max": gather(m, "images", "max").astype(np.float64),
            "sizes": sizes, "classes": classes}
