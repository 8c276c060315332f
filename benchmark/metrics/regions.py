"""Ground-truth regions of one image: 8-connected components of the anomalous pixels.

A region's pixels are few next to the image, so everything per region here is exact on the raw scores: its area,
its class (the most frequent class index inside it, ties to the smaller index) and the score that at least half of its
pixels reach. That last value makes region recall at *any* threshold ``t`` exact after streaming: a region is
recalled (≥ 50 % of its pixels at or above ``t``) exactly when its ``half_score ≥ t``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)
SIZE_NAMES = ("small", "medium", "large")


@dataclass(frozen=True)
class ImageRegions:
    """Regions of one image; pixel arrays list its anomalous pixels in flat (row-major) order."""

    pixel_flat: np.ndarray  # flat index of each anomalous pixel
    pixel_region: np.ndarray  # region (0-based) of each anomalous pixel
    area: np.ndarray  # pixels per region
    class_value: np.ndarray  # majority class index per region
    half_score: np.ndarray  # ceil(area/2)-th largest score per region
    max_score: np.ndarray  # largest score per region


def ground_truth_regions(class_mask: np.ndarray, scores: np.ndarray) -> ImageRegions:
    """Regions of ``class_mask > 0`` (8-connected) with their statistics from the raw ``scores``."""
    labels, n_regions = ndimage.label(class_mask > 0, structure=EIGHT_CONNECTED)
    flat = np.flatnonzero(labels)
    region = labels.ravel()[flat].astype(np.int64) - 1
    area = np.bincount(region, minlength=n_regions)
    values = class_mask.ravel()[flat]
    distinct, value_index = np.unique(values, return_inverse=True)
    per_class = np.bincount(region * distinct.size + value_index, minlength=n_regions * distinct.size)
    class_value = distinct[per_class.reshape(n_regions, distinct.size).argmax(axis=1)].astype(np.int64)
    region_scores = scores.ravel()[flat].astype(np.float64)
    ordered = region_scores[np.lexsort((region_scores, region))]  # by region, then ascending score
    end = np.cumsum(area)
    return ImageRegions(
        pixel_flat=flat,
        pixel_region=region,
        area=area,
        class_value=class_value,
        half_score=ordered[end - (area + 1) // 2],
        max_score=ordered[end - 1],
    )


# Region weights are whole multiples of 2**-PRO_WEIGHT_BITS: see ``pro_weights``.
PRO_WEIGHT_BITS = 32


def pro_weights(found: ImageRegions, scores: np.ndarray) -> np.ndarray:
    """Per anomalous pixel (in ``found.pixel_flat`` order) its share of its region: about 1/area, summing to 1.

    Why not 1/area itself: sums of 1/area round, so the PRO histogram would depend on the order pixels are added in,
    and evaluators of parts of a test set could not be merged bit-identically (sharded prediction). Each weight is
    instead a whole number of 2**-32 units, so every sum below 2**21 regions is exact in float64 in any order. A
    region's 2**32 units go to its pixels by descending score (ties by position), the k-th pixel getting
    floor(k·2**32/area) - floor((k-1)·2**32/area): at every threshold the pixels at or above it hold
    floor(m·2**32/area) units for m such pixels, so the PRO curve is within 2**-32 of the 1/area one.
    """
    region, area = found.pixel_region, found.area
    region_scores = scores.ravel()[found.pixel_flat]
    order = np.lexsort((found.pixel_flat, -region_scores, region))  # by region, then descending score
    start = np.cumsum(area) - area
    rank = np.arange(order.size, dtype=np.int64) - start[region[order]]  # 0-based rank inside its region
    size = area[region[order]].astype(np.int64)
    units = ((rank + 1) << PRO_WEIGHT_BITS) // size - (rank << PRO_WEIGHT_BITS) // size
    weights = np.empty(order.size)
    weights[order] = np.ldexp(units.astype(np.float64), -PRO_WEIGHT_BITS)
    return weights


def size_class(area: np.ndarray, image_pixels: int, cutoffs: tuple[float, float]) -> np.ndarray:
    """0 / 1 / 2 for small / medium / large: region area as a fraction of the image, split at ``cutoffs``."""
    fraction = np.asarray(area, np.float64) / image_pixels
    return np.searchsorted(np.asarray(cutoffs, np.float64), fraction, side="right")
