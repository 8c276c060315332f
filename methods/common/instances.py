"""Instances for the supervised detectors, and the rule that turns their detections into anomaly maps.

Training: a class-index mask (0 = normal, 1..K = anomaly classes) becomes one instance per
8-connected component of each class, with its box and outer polygon. Components smaller than
``min_area`` pixels are dropped (annotation specks cannot be learned as objects and make
degenerate boxes); an anomalous image whose every component is that small is used neither as an
anomalous nor as a background image, because its unlabeled anomaly pixels would teach "normal".

Prediction: each detection is a confidence ``s`` in [0, 1] and a soft mask ``m`` in [0, 1] at
image resolution. The anomaly map is, per pixel, ``max_i s_i · m_i`` (0 where no detection
covers the pixel, all zeros without detections). Overlapping detections do not add up: the most
confident coverage wins, so a pixel's score never exceeds the best detection's confidence, and
ties are harmless because the maximum of equal values is that value.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from scipy import ndimage

from scrapbench.datasets.types import Split

DEFAULT_MIN_AREA = 9  # pixels: a 3×3 speck is the smallest object a detector can be asked to box
_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)  # diagonal pixels join: thin cables stay one object


@dataclass(frozen=True)
class Instance:
    """One object: its class (1..K, as in the mask), its pixels and its box.

    ``box`` is ``(x0, y0, x1, y1)`` in pixels with exclusive ``x1``/``y1``, so ``x1 > x0`` always
    (torchvision rejects zero-width boxes) and ``x1 - x0`` is the width in pixels.
    """

    class_index: int
    mask: np.ndarray
    box: tuple[int, int, int, int]

    @property
    def area(self) -> int:
        return int(self.mask.sum())


def mask_to_instances(class_index_mask: np.ndarray, min_area: int = DEFAULT_MIN_AREA) -> list[Instance]:
    """Connected components (8-connected) of every anomaly class, largest-first within a class."""
    mask = np.asarray(class_index_mask)
    if mask.ndim != 2:
        raise ValueError(f"class-index mask must be H×W, got shape {mask.shape}")
    instances = []
    for class_index in (int(v) for v in np.unique(mask) if v):
        labels, count = ndimage.label(mask == class_index, structure=_EIGHT_CONNECTED)
        if count == 0:
            continue
        areas = np.bincount(labels.ravel(), minlength=count + 1)[1:]
        slices = ndimage.find_objects(labels)
        for label in np.argsort(-areas, kind="stable") + 1:
            if areas[label - 1] < min_area:
                continue
            rows, cols = slices[label - 1]
            box = (cols.start, rows.start, cols.stop, rows.stop)
            instances.append(Instance(class_index, labels == label, box))
    return instances


def instance_polygon(mask: np.ndarray) -> np.ndarray:
    """Outer boundary of one component as a (P, 2) float32 array of (x, y) pixel centres, P ≥ 3.

    Holes are not represented (YOLO labels hold one polygon per object). A component too thin to
    give a 3-point contour (a single row or column of pixels) gets its box corners instead.
    """
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if contours:
        contour = max(contours, key=cv2.contourArea).reshape(-1, 2)
        if len(contour) >= 3 and cv2.contourArea(contour) > 0:
            return contour.astype(np.float32)
    ys, xs = np.nonzero(mask)
    x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float32)


def training_indices(
    split: Split, max_background_fraction: float, seed: int, min_area: int = DEFAULT_MIN_AREA
) -> tuple[list[int], list[int]]:
    """Indices of the anomalous training images and of a seeded subsample of normal ones.

    Normal images (background images: no labels) make up at most ``max_background_fraction`` of
    the returned images; ``1.0`` keeps every normal image. Anomalous images whose components are
    all smaller than ``min_area`` are left out (see the module docstring).
    """
    if not 0.0 <= max_background_fraction <= 1.0:
        raise ValueError(f"max_background_fraction must be in [0, 1], got {max_background_fraction}")
    anomalous = [i for i in split.anomalous_indices() if mask_to_instances(split[i].mask, min_area)]
    if not anomalous:
        raise ValueError(
            f"split {split.name!r} has no anomalous image with an object of at least {min_area} pixels; "
            "a supervised detector needs labelled anomalies to train on"
        )
    normal = split.normal_indices()
    if max_background_fraction >= 1.0:
        n_background = len(normal)
    else:
        n_background = int(max_background_fraction / (1.0 - max_background_fraction) * len(anomalous))
    n_background = min(n_background, len(normal))
    rng = np.random.default_rng(seed)
    background = sorted(int(i) for i in rng.choice(normal, size=n_background, replace=False)) if n_background else []
    return anomalous, background


def detections_to_anomaly_map(
    scores: Sequence[float] | np.ndarray, masks: np.ndarray, shape: tuple[int, int]
) -> np.ndarray:
    """Per pixel, the highest ``score × mask`` over detections (float32 H×W; zeros if none).

    ``scores``: N confidences in [0, 1]; ``masks``: N×H×W soft (probabilities) or binary masks.
    """
    scores = np.asarray(scores, dtype=np.float32).reshape(-1)
    anomaly_map = np.zeros(shape, dtype=np.float32)
    if scores.size == 0:
        return anomaly_map
    masks = np.asarray(masks)
    if masks.shape != (scores.size, *shape):
        raise ValueError(f"expected {scores.size} masks of shape {shape}, got array of shape {masks.shape}")
    for score, mask in zip(scores, masks, strict=True):
        # A loop, not one max over an N×H×W product: N can be 100+ at 512×512 pixels.
        np.maximum(anomaly_map, score * mask.astype(np.float32, copy=False), out=anomaly_map)
    return anomaly_map


def detections_to_class_maps(
    scores: Sequence[float] | np.ndarray,
    masks: np.ndarray,
    labels: Sequence[int] | np.ndarray,
    num_classes: int,
    shape: tuple[int, int],
) -> np.ndarray:
    """The same rule per class: K×H×W, channel ``k`` from the detections labelled ``k + 1``."""
    scores = np.asarray(scores, dtype=np.float32).reshape(-1)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    masks = np.asarray(masks).reshape(-1, *shape)
    return np.stack([
        detections_to_anomaly_map(scores[labels == k + 1], masks[labels == k + 1], shape)
        for k in range(num_classes)
    ]) if num_classes else np.zeros((0, *shape), dtype=np.float32)
