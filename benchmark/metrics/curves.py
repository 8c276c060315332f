"""Metrics from score histograms: AUROC, AP, F1-max, AUPRO, their error bounds and curve points.

Every function takes counts per bin along the last axis, bins in *ascending* score order, and works on any number of
leading axes at once (the bootstrap evaluates a thousand resampled histograms in one call). A threshold at the lower
edge of a bin predicts "anomalous" for every score in that bin and above, so each bin edge is one operating point, and
a histogram whose bins each hold a single distinct score reproduces the sort-based definitions exactly:

- AUROC: trapezoid over the ROC points at distinct scores, ties as one point (sklearn ``roc_auc_score``).
- AP: ``Σ (R_n − R_{n−1}) P_n`` over distinct scores (sklearn ``average_precision_score``), no interpolation.
- F1-max: ``max 2TP / (2TP + FP + FN)`` over distinct scores.
- AUPRO (MVTec AD): PRO = mean over all ground-truth regions of the covered fraction; FPR over all normal pixels;
  trapezoid from (0, 0) up to the FPR limit with linear interpolation at the limit, divided by the limit.

Counts are summed in float64, exact while below 2**53.
"""

from __future__ import annotations

import numpy as np


def _descending(counts: np.ndarray) -> np.ndarray:
    return np.asarray(counts, dtype=np.float64)[..., ::-1]


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num, den = np.broadcast_arrays(np.asarray(num, np.float64), np.asarray(den, np.float64))
    return np.divide(num, den, out=np.full(num.shape, np.nan), where=den > 0)


def auroc(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """Area under the ROC curve; NaN where a row has no positive or no negative."""
    pos_d, neg_d = _descending(pos), _descending(neg)
    tp = np.cumsum(pos_d, axis=-1)
    # Trapezoid: Σ ΔFP · (TP_i + TP_{i−1}) with TP_{i−1} = TP_i − pos_i.
    area2 = np.sum(neg_d * (2.0 * tp - pos_d), axis=-1)
    return _ratio(area2, 2.0 * tp[..., -1] * np.sum(neg_d, axis=-1))


def average_precision(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """Step-sum AP; NaN where a row has no positive."""
    pos_d, neg_d = _descending(pos), _descending(neg)
    tp = np.cumsum(pos_d, axis=-1)
    seen = tp + np.cumsum(neg_d, axis=-1)
    precision = np.divide(tp, seen, out=np.zeros_like(tp), where=seen > 0)
    return _ratio(np.sum(pos_d * precision, axis=-1), tp[..., -1])


def f1_max(pos: np.ndarray, neg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(F1-max, ascending index of the bin whose lower edge is the best threshold)."""
    pos_d, neg_d = _descending(pos), _descending(neg)
    tp = np.cumsum(pos_d, axis=-1)
    fp = np.cumsum(neg_d, axis=-1)
    total_pos = tp[..., -1:]
    f1 = np.divide(2.0 * tp, tp + fp + total_pos, out=np.zeros_like(tp), where=(tp + fp + total_pos) > 0)
    # argmax takes the first maximum in descending order: the highest threshold reaching it, a non-empty bin.
    best = np.argmax(f1, axis=-1)
    value = np.take_along_axis(f1, best[..., None], axis=-1)[..., 0]
    value = np.where(total_pos[..., 0] > 0, value, np.nan)
    return value, pos_d.shape[-1] - 1 - best


def _pro_curve(pro: np.ndarray, neg: np.ndarray, n_regions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(FPR, PRO) points from (0, 0) over descending thresholds, clipped to ≤ 1 as MVTec AD does."""
    neg_d, pro_d = _descending(neg), _descending(pro)
    fp = np.cumsum(neg_d, axis=-1)
    fpr = _ratio(fp, fp[..., -1:])
    pro_rate = _ratio(np.cumsum(pro_d, axis=-1), np.asarray(n_regions, np.float64)[..., None])
    zeros = np.zeros((*fpr.shape[:-1], 1))
    return (np.concatenate([zeros, np.minimum(fpr, 1.0)], axis=-1),
            np.concatenate([zeros, np.minimum(pro_rate, 1.0)], axis=-1))


def aupro(pro: np.ndarray, neg: np.ndarray, n_regions: np.ndarray | float, limit: float) -> np.ndarray:
    """Normalised area under the PRO curve up to FPR ``limit`` (MVTec AD definition).

    ``pro`` holds, per bin, the sum over anomalous pixels of 1 / (area of the pixel's region), so that its
    cumulative sum over thresholds divided by the number of regions is the mean per-region overlap.
    """
    fpr, pro_rate = _pro_curve(pro, neg, n_regions)
    f0, f1 = fpr[..., :-1], fpr[..., 1:]
    p0, p1 = pro_rate[..., :-1], pro_rate[..., 1:]
    full = np.where(f1 <= limit, 0.5 * (f1 - f0) * (p0 + p1), 0.0)
    crossing = (f0 < limit) & (f1 > limit)
    slope = np.divide(p1 - p0, f1 - f0, out=np.zeros_like(p0), where=crossing)
    p_limit = p0 + slope * (limit - f0)
    partial = np.where(crossing, 0.5 * (limit - f0) * (p0 + p_limit), 0.0)
    return np.sum(full + partial, axis=-1) / limit


def aupro_anomalyclip(pro: np.ndarray, neg: np.ndarray, n_regions: float, bins_above: np.ndarray,
                      limit: float) -> float:
    """AnomalyCLIP's own AUPRO recipe from histograms (one row).

    Its recipe: at each of ~200 linear thresholds ``th`` between the smallest and largest score, pixels with score
    ``> th`` are positive; keep the points with FPR < limit, rescale their FPR to [0, 1] by min-max, and take the
    trapezoid area (sklearn ``auc``). ``bins_above[j]`` is the first bin lying wholly above threshold ``j``; pixels in
    the bin that contains the threshold count as below it, an error of at most that one fine bin per threshold.
    """
    neg_cum = np.concatenate([[0.0], np.cumsum(np.asarray(neg, np.float64))])
    pro_cum = np.concatenate([[0.0], np.cumsum(np.asarray(pro, np.float64))])
    fprs = (neg_cum[-1] - neg_cum[bins_above]) / neg_cum[-1]
    pros = (pro_cum[-1] - pro_cum[bins_above]) / n_regions
    keep = fprs < limit
    fprs, pros = fprs[keep], pros[keep]
    if fprs.size < 2 or fprs.max() == fprs.min():
        raise ValueError("AnomalyCLIP AUPRO recipe is undefined here: fewer than two distinct thresholds have "
                         f"FPR < {limit} (the recipe min-max rescales them); use the default mvtec definition")
    fprs = (fprs - fprs.min()) / (fprs.max() - fprs.min())
    # Thresholds rise, so FPR falls: sklearn's auc flips the sign for a decreasing x.
    return float(-np.trapezoid(pros, fprs))


def error_bounds(pos: np.ndarray, neg: np.ndarray, pro: np.ndarray, n_regions: float,
                 limit: float) -> dict[str, float]:
    """Largest possible difference between each metric on the grid and on the raw float scores (one row).

    A threshold at a bin edge classifies raw and quantised scores alike, so the grid curves pass exactly through the
    raw curves' points at bin edges. Inside one bin the raw curve is some monotone path across the bin's box
    (TP ∈ [TP_above, TP_above + P_b], FP ∈ [FP_above, FP_above + N_b]); the bounds below are the worst case of that
    path, bin by bin. They are zero when every bin holds a single distinct score.
    """
    pos_d, neg_d, pro_d = _descending(pos), _descending(neg), _descending(pro)
    tp, fp = np.cumsum(pos_d), np.cumsum(neg_d)
    total_pos, total_neg = tp[-1], fp[-1]
    tp_above, fp_above = tp - pos_d, fp - neg_d
    roc = float(np.sum(pos_d * neg_d) / (2 * total_pos * total_neg))
    # AP: every raw precision inside bin b lies in [lo_b, hi_b]; so does the grid's (its value at the bin edge).
    hi = _ratio(tp, tp + fp_above)
    lo = _ratio(tp_above + 1, tp_above + 1 + fp)
    # (Bins with positives only count too: AP changes when tied positives are split.)
    ap = float(np.sum(np.where(pos_d > 0, pos_d * (hi - lo), 0.0)) / total_pos)
    # F1: inside bin b F1 is at most its value with all of the bin's positives and none of its negatives.
    f1_upper = np.max(2 * tp / (tp + fp_above + total_pos))
    f1 = float(f1_max(pos, neg)[0])
    # AUPRO: half of each box below the limit, the whole clipped box at the limit.
    fpr_hi = fp / total_neg
    fpr_lo = fp_above / total_neg
    pro_step = pro_d / n_regions
    boxes = np.where(fpr_hi <= limit, 0.5 * (fpr_hi - fpr_lo) * pro_step,
                     np.where(fpr_lo < limit, (limit - fpr_lo) * pro_step, 0.0))
    return {"auroc": roc, "ap": ap, "f1max": max(float(f1_upper) - f1, 0.0),
            "aupro": float(np.sum(boxes) / limit)}


def _downsample(x: np.ndarray, y: np.ndarray, max_points: int) -> np.ndarray:
    """Indices of at most ``max_points`` points spread evenly along the curve's length, ends kept."""
    if x.size <= max_points:
        return np.arange(x.size)
    length = np.concatenate([[0.0], np.cumsum(np.hypot(np.diff(x), np.diff(y)))])
    targets = np.linspace(0.0, length[-1], max_points)
    picked = np.unique(np.clip(np.searchsorted(length, targets), 0, x.size - 1))
    picked[0], picked[-1] = 0, x.size - 1
    return np.unique(picked)


def curve_points(pos: np.ndarray, neg: np.ndarray, pro: np.ndarray, n_regions: float, edges: np.ndarray,
                 top_edge: float, limit: float, max_points: int = 1000) -> dict[str, dict[str, list[float]]]:
    """ROC, PR and PRO (up to the FPR limit) points at distinct thresholds, for figures.

    ``edges`` are the ascending lower bin edges (the thresholds); ``top_edge`` lies above every score.
    """
    keep = (np.asarray(pos) + np.asarray(neg)) > 0
    pos_d, neg_d, pro_d = (_descending(a[keep]) for a in (pos, neg, pro))
    thresholds = np.concatenate([[top_edge], edges[keep][::-1]])
    tp = np.concatenate([[0.0], np.cumsum(pos_d)])
    fp = np.concatenate([[0.0], np.cumsum(neg_d)])
    pro_rate = np.minimum(np.concatenate([[0.0], np.cumsum(pro_d)]) / n_regions, 1.0)
    fpr, tpr = fp / fp[-1], tp / tp[-1]
    precision = np.divide(tp, tp + fp, out=np.ones_like(tp), where=(tp + fp) > 0)

    def pack(names: tuple[str, ...], arrays: tuple[np.ndarray, ...], index: np.ndarray) -> dict[str, list[float]]:
        return {name: [float(v) for v in array[index]] for name, array in zip(names, arrays, strict=True)}

    roc = _downsample(fpr, tpr, max_points)
    pr = _downsample(tpr, precision, max_points)
    below = np.flatnonzero(fpr <= limit)
    pro_idx = below[_downsample(fpr[below], pro_rate[below], max_points)]
    return {
        "roc": pack(("fpr", "tpr", "threshold"), (fpr, tpr, thresholds), roc),
        "pr": pack(("recall", "precision", "threshold"), (tpr, precision, thresholds), pr),
        "pro": pack(("fpr", "pro", "threshold"), (fpr, pro_rate, thresholds), pro_idx),
    }


def counts_by_score(scores: np.ndarray, labels: np.ndarray,
                    weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(distinct scores ascending, positive counts, negative counts): a histogram with one bin per distinct score."""
    values, inverse = np.unique(scores, return_inverse=True)
    w = np.ones(scores.shape, np.float64) if weights is None else np.asarray(weights, np.float64)
    labels = np.asarray(labels, bool)
    pos = np.bincount(inverse, weights=w * labels, minlength=values.size)
    neg = np.bincount(inverse, weights=w * ~labels, minlength=values.size)
    return values, pos, neg
