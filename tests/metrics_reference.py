"""Independent, sort-based reference implementations and small test sets for the evaluator tests.

Written from the published definitions, deliberately naive (everything in memory, one sort), so they share no code or
trick with ``scrapbench.metrics``.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from sklearn.metrics import precision_recall_curve

EIGHT = np.ones((3, 3), bool)
FOUR = ndimage.generate_binary_structure(2, 1)


def make_set(seed: int, n: int = 12, size: int = 24, levels: int | None = None,
             normal_share: float = 0.4) -> tuple[np.ndarray, np.ndarray]:
    """(maps float32 [n, size, size], class masks uint8) with blobs of classes 1–3 and some normal images.

    ``levels`` rounds scores to multiples of 1/levels: heavy ties, and scores that lie exactly on the grid.
    """
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, size, size), np.uint8)
    for i in range(n):
        if rng.random() < normal_share:
            continue
        for _ in range(rng.integers(1, 4)):
            h, w = rng.integers(1, size // 3, 2)
            y, x = rng.integers(0, size - h), rng.integers(0, size - w)
            masks[i, y:y + h, x:x + w] = rng.integers(1, 4)
    maps = rng.normal(0, 1, masks.shape) + 1.5 * rng.random() * (masks > 0)
    maps = ndimage.gaussian_filter(maps, (0, 1, 1)).astype(np.float32)
    if levels is not None:
        maps = (np.round(maps * levels) / levels).astype(np.float32)
    return maps, masks


def f1_max(labels: np.ndarray, scores: np.ndarray) -> float:
    precision, recall, _ = precision_recall_curve(labels, scores)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros_like(precision),
                   where=(precision + recall) > 0)
    return float(f1.max())


def _trapezoid_to(x: np.ndarray, y: np.ndarray, x_max: float) -> float:
    """Area under the polyline (x ascending) from x[0] to x_max, linearly interpolated at x_max."""
    area = 0.0
    for i in range(1, len(x)):
        if x[i - 1] >= x_max:
            break
        if x[i] <= x_max:
            area += 0.5 * (x[i] - x[i - 1]) * (y[i] + y[i - 1])
        else:
            y_max = y[i - 1] + (y[i] - y[i - 1]) * (x_max - x[i - 1]) / (x[i] - x[i - 1])
            area += 0.5 * (x_max - x[i - 1]) * (y_max + y[i - 1])
    return area


def aupro(maps: np.ndarray, masks: np.ndarray, limit: float = 0.3, structure: np.ndarray = EIGHT) -> float:
    """MVTec AD AUPRO: regions per image, PRO averaged over all regions, FPR over all normal pixels."""
    labelled = [ndimage.label(mask > 0, structure=structure) for mask in masks]
    regions = sum(count for _, count in labelled)
    pro_change = []
    for labels, _count in labelled:
        areas = np.bincount(labels.ravel())
        pro_change.append(np.where(labels > 0, 1.0 / (areas[labels] * regions), 0.0).ravel())
    scores = maps.astype(np.float64).ravel()
    order = np.argsort(-scores, kind="stable")
    scores = scores[order]
    last_of_tie = np.r_[scores[1:] != scores[:-1], True]
    pro = np.r_[0.0, np.minimum(np.cumsum(np.concatenate(pro_change)[order])[last_of_tie], 1.0)]
    # FPR from counts (a running sum of 1/N drifts; counts put a point meant to be at 0.3 exactly on 0.3).
    normal = (masks.ravel() == 0)[order]
    fpr = np.r_[0.0, np.cumsum(normal)[last_of_tie] / normal.sum()]
    return _trapezoid_to(fpr, pro, limit) / limit


def aupro_anomalyclip(maps: np.ndarray, masks: np.ndarray, max_step: int = 200, expect_fpr: float = 0.3) -> float:
    """AnomalyCLIP's recipe, literally: linear thresholds, ``score > th``, min-max rescaled FPR below the limit."""
    low, high = float(maps.min()), float(maps.max())
    delta = (high - low) / max_step
    regions = [ndimage.label(mask > 0, structure=EIGHT)[0] for mask in masks]
    normal = masks == 0
    pros, fprs = [], []
    for th in np.arange(low, high, delta):
        binary = maps > th
        overlaps = []
        for labels, predicted in zip(regions, binary, strict=True):
            for r in range(1, labels.max() + 1):
                region = labels == r
                overlaps.append(predicted[region].sum() / region.sum())
        pros.append(np.mean(overlaps))
        fprs.append(np.logical_and(normal, binary).sum() / normal.sum())
    pros, fprs = np.array(pros), np.array(fprs)
    keep = fprs < expect_fpr
    fprs = fprs[keep]
    fprs = (fprs - fprs.min()) / (fprs.max() - fprs.min())
    return float(abs(np.trapezoid(pros[keep], fprs)))
