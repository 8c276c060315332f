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


def find_regions(class_mask: np.ndarray, scores: np.ndarray) -> ImageRegions:
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


def size_class(area: np.ndarray, image_pixels: int, cutoffs: tuple[float, float]) -> np.ndarray:
    """0 / 1 / 2 for small / medium / large: region area as a fraction of the image, split at ``cutoffs``."""
    fraction = np.asarray(area, np.float64) / image_pixels
    return np.searchsorted(np.asarray(cutoffs, np.float64), fraction, side="right")
