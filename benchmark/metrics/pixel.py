"""``PixelMetrics``: pixel AUROC / AP / F1-max / AUPRO pooled over a whole test set, streamed in bounded memory.

Maps arrive batch by batch. Each batch is quantised onto a power-of-two grid (see ``histogram``) and only counts are
kept: per bin, normal pixels, anomalous pixels of each class, and region-overlap weights (per size class and per
class). The metrics are exact for the quantised scores; ``compute()`` also reports, under ``grid_error_bound``, the
largest possible difference to the same metric on the raw float scores (see ``curves.error_bounds``; with the default
2**18 bins the observed score range spans at least 130,944 bins). The bound is conservative (ties in the raw scores
count as possible error); integer maps (8/16-bit images, or wider integers below 2**50 in magnitude) over a range
below 2**17 are lossless and report 0. Wide integers are evaluated in float64 (see ``inputs.as_scores``).

Per image a few kilobytes are kept for the paired bootstrap and the image-level metrics: the map maximum, a coarse
histogram of ``bootstrap_bins`` bins (normal pixels for every image; anomalous pixels and region weights for images
with anomalies), and per ground-truth region its area, class, size class and the score half of its pixels reach.
Memory therefore grows by about 4 KB per image plus ~40 bytes per region, never with the number of pixels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import state, summary
from .histogram import Grid, covering_grid, minimum_exponent, rebin, remap
from .inputs import MetricsError, as_class_mask, as_scores, check_finite, check_ids, to_numpy
from .regions import SIZE_NAMES, ground_truth_regions, pro_weights, size_class

DEFAULT_BINS = 1 << 18
DEFAULT_BOOTSTRAP_BINS = 1024
# Region area as a fraction of its image: at the paper's 512×512 patches these are COCO's 32² and 96² pixels.
SIZE_CUTOFFS = (1 / 256, 9 / 256)
COMPAT_RECIPES = ("mvtec", "anomalyclip")
# Each class keeps two fine histograms (2**18 bins each): a cap keeps instance-id or noisy masks from eating memory.
MAX_CLASSES = 32
# Pixels quantised together: bounds the int64 temporaries whatever batch the caller passes.
_CHUNK_PIXELS = 1 << 22


class PixelMetrics:
    """Streaming evaluator: ``update(maps, masks, ids)`` per batch, then ``compute()``.

    Args:
        fpr_limit: FPR up to which the PRO curve is integrated (AUPRO).
        class_names: names of mask class indices 1..K, for the per-class breakdown.
        compat: ``"mvtec"`` (default) or ``"anomalyclip"``: which recipe ``aupro`` follows (the MVTec value is then
            also returned as ``aupro_mvtec``).
        bins: fine grid size (power of two).
        bootstrap_bins: per-image histogram size for the bootstrap (power of two, ≤ bins).
        size_cutoffs: region area fractions separating small / medium / large regions.
    """

    def __init__(self, fpr_limit: float = 0.3, class_names: Sequence[str] | None = None, compat: str = "mvtec",
                 bins: int = DEFAULT_BINS, bootstrap_bins: int = DEFAULT_BOOTSTRAP_BINS,
                 size_cutoffs: tuple[float, float] = SIZE_CUTOFFS) -> None:
        if not 0 < fpr_limit <= 1:
            raise MetricsError(f"fpr_limit must be in (0, 1]; got {fpr_limit}")
        if compat not in COMPAT_RECIPES:
            raise MetricsError(f"unknown compat {compat!r}; choose from {COMPAT_RECIPES}")
        for name, value in (("bins", bins), ("bootstrap_bins", bootstrap_bins)):
            if value < 16 or value & (value - 1):
                raise MetricsError(f"{name} must be a power of two ≥ 16; got {value}")
        if bootstrap_bins > bins:
            raise MetricsError(f"bootstrap_bins ({bootstrap_bins}) must not exceed bins ({bins})")
        if not 0 < size_cutoffs[0] < size_cutoffs[1] < 1:
            raise MetricsError(f"size_cutoffs must be increasing fractions in (0, 1); got {size_cutoffs}")
        self.fpr_limit = float(fpr_limit)
        self.class_names = tuple(class_names) if class_names is not None else None
        self.compat = compat
        self.bins = int(bins)
        self.bootstrap_bins = int(bootstrap_bins)
        self.size_cutoffs = (float(size_cutoffs[0]), float(size_cutoffs[1]))
        self.reset()

    @property
    def align(self) -> int:
        """Fine bins per bootstrap bin."""
        return self.bins // self.bootstrap_bins

    def reset(self) -> None:
        """Forget every map added so far."""
        self.grid: Grid | None = None
        self.score_min, self.score_max = math.inf, -math.inf
        self.class_values = np.zeros(0, np.int64)  # sorted mask values > 0 seen so far; row order of per-class arrays
        self.neg = np.zeros(self.bins, np.int64)
        self.pos = np.zeros((0, self.bins), np.int64)
        self.pro_size = np.zeros((len(SIZE_NAMES), self.bins))
        self.pro_class = np.zeros((0, self.bins))
        self.ids: list[str] = []
        self.count = 0  # images whose statistics are stored
        self.integer_scores = True  # every map so far had an integer dtype (8/16-bit images): see summary
        self._id_set: set[str] = set()
        # Per image / per region, as lists of per-batch arrays (concatenated on demand).
        self.images: dict[str, list[np.ndarray]] = {k: [] for k in state.IMAGE_FIELDS}
        self.anomalous_images: dict[str, list[np.ndarray]] = {k: [] for k in state.ANOMALOUS_FIELDS}
        self.regions: dict[str, list[np.ndarray]] = {k: [] for k in state.REGION_FIELDS}

    # ------------------------------------------------------------------ streaming
    def update(self, maps: Any, masks: Any, ids: Sequence[Any] | None = None) -> None:
        """Add a batch: ``maps`` float [B, H, W], ``masks`` class indices [B, H, W] (0 normal, >0 anomalous).

        numpy arrays or torch tensors; a single [H, W] map is one image. ``ids`` (one per image, unique over the
        whole set) name images in error messages and pair images in ``paired_bootstrap``; default ``#0, #1, ...``.
        The batch is validated before anything is counted, so a failed update leaves the evaluator unchanged.
        """
        maps = to_numpy(maps, "maps")
        masks = to_numpy(masks, "masks")
        if maps.shape != masks.shape:
            raise MetricsError(f"maps {tuple(maps.shape)} and masks {tuple(masks.shape)} differ in shape")
        if maps.shape[0] == 0:
            return
        names = check_ids(ids, maps.shape[0], self._id_set, len(self.ids))
        integer_scores = maps.dtype.kind in "iub"
        # C order keeps every later pass (and ravel) copy-free; views of larger arrays or transposes come in too.
        maps = np.ascontiguousarray(as_scores(maps))
        masks = np.ascontiguousarray(as_class_mask(masks, names))
        flat = maps.reshape(maps.shape[0], -1)
        if flat.shape[1] == 0:
            raise MetricsError(f"maps have no pixels (shape {tuple(maps.shape)})")
        low, high = flat.min(axis=1), flat.max(axis=1)
        check_finite(low, high, names)
        mask_max = masks.reshape(masks.shape[0], -1).max(axis=1)
        self._add_classes(masks[mask_max > 0], names, mask_max)
        self._fit_grid(float(low.min()), float(high.max()))
        per_chunk = max(1, _CHUNK_PIXELS // max(1, flat.shape[1]))
        for start in range(0, maps.shape[0], per_chunk):
            stop = start + per_chunk
            self._add_chunk(maps[start:stop], masks[start:stop], high[start:stop], mask_max[start:stop] > 0)
        self.ids.extend(names)
        self._id_set.update(names)
        self.integer_scores &= integer_scores

    def _add_classes(self, anomalous_masks: np.ndarray, names: list[str], mask_max: np.ndarray) -> None:
        if anomalous_masks.size == 0:
            return
        present = np.flatnonzero(np.bincount(anomalous_masks.ravel()))
        present = present[present > 0]
        if self.class_names is not None and present.max() > len(self.class_names):
            image = names[int(np.flatnonzero(mask_max > len(self.class_names))[0])]
            raise MetricsError(f"mask of image {image!r} holds class index {int(present.max())} but class_names has "
                               f"{len(self.class_names)} entries (masks stored as 0/255? leave class_names unset)")
        new = np.setdiff1d(present, self.class_values)
        if new.size == 0:
            return
        values = np.union1d(self.class_values, new)
        if values.size > MAX_CLASSES:
            raise MetricsError(f"masks hold {values.size} distinct non-zero values (at most {MAX_CLASSES} classes are "
                               "kept apart); pass class indices or binary masks (JPEG-compressed masks?)")
        rows = np.searchsorted(values, self.class_values)
        pos = np.zeros((values.size, self.bins), np.int64)
        pro = np.zeros((values.size, self.bins))
        pos[rows], pro[rows] = self.pos, self.pro_class
        self.class_values, self.pos, self.pro_class = values, pos, pro

    def _fit_grid(self, low: float, high: float) -> None:
        self.score_min, self.score_max = min(self.score_min, low), max(self.score_max, high)
        target = covering_grid(self.score_min, self.score_max, self.bins, self.align,
                               minimum_exponent(self.score_min, self.score_max))
        old = self.grid
        if old is not None and old.exponent == target.exponent and old.contains(self.score_min, self.score_max):
            return
        self.grid = target
        if old is None:
            return
        shift, factor = remap(old, target)
        self.neg = rebin(self.neg, shift, factor, self.bins)
        self.pos = rebin(self.pos, shift, factor, self.bins)
        self.pro_size = rebin(self.pro_size, shift, factor, self.bins)
        self.pro_class = rebin(self.pro_class, shift, factor, self.bins)
        # Offsets are multiples of ``align``, so the coarse bins move by whole bins too.
        coarse_shift = shift // self.align
        for store in (self.images, self.anomalous_images):
            for key in state.COARSE_FIELDS & store.keys():
                store[key] = [rebin(a, coarse_shift, factor, self.bootstrap_bins) for a in store[key]]

    def _add_chunk(self, maps: np.ndarray, masks: np.ndarray, image_max: np.ndarray, anomalous: np.ndarray) -> None:
        assert self.grid is not None
        count, n_bins, n_coarse = maps.shape[0], self.bins, self.bootstrap_bins
        slots = self.class_values.size + 1
        # Bin index plus (class slot + 1) · n_bins for anomalous pixels: one bincount fills every histogram. Only
        # images with anomalies have such pixels, and few, so they are offset one image at a time.
        offset = np.zeros(int(self.class_values.max(initial=0)) + 1, np.int64)
        offset[self.class_values] = (np.arange(self.class_values.size) + 1) * n_bins
        index = self.grid.quantise(maps)
        for i in np.flatnonzero(anomalous):
            positive = np.nonzero(masks[i])
            index[i][positive] += offset[masks[i][positive]]
        counts = np.bincount(index.ravel(), minlength=slots * n_bins).reshape(slots, n_bins)
        self.neg += counts[0]
        self.pos += counts[1:]
        # Per image coarse histograms (n_bins and the slot offsets are multiples of align, so a shift maps a fine
        # index with its slot offset onto the coarse index with its slot offset).
        shift = int(self.align).bit_length() - 1
        per_image = np.stack([np.bincount(np.right_shift(index[i].ravel(), shift), minlength=slots * n_coarse)
                              for i in range(count)]).reshape(count, slots, n_coarse)
        start = self.count
        self.count += count
        self.images["max"].append(image_max.astype(np.float64))
        self.images["pixels"].append(np.full(count, maps.shape[1] * maps.shape[2], np.int64))
        self.images["anomalous"].append(anomalous.copy())
        self.images["neg"].append(per_image[:, 0].astype(np.int32))
        if anomalous.any():
            self._add_regions(maps, masks, index, np.flatnonzero(anomalous), start, per_image)

    def _add_regions(self, maps: np.ndarray, masks: np.ndarray, index: np.ndarray, which: np.ndarray, start: int,
                     per_image: np.ndarray) -> None:
        n_bins, n_coarse, shift = self.bins, self.bootstrap_bins, int(self.align).bit_length() - 1
        pixels = maps.shape[1] * maps.shape[2]
        bins, weights, sizes, slots, owner = [], [], [], [], []
        for row, i in enumerate(which):
            found = ground_truth_regions(masks[i], maps[i])
            region_size = size_class(found.area, pixels, self.size_cutoffs)
            region_slot = np.searchsorted(self.class_values, found.class_value)
            bins.append(index[i].ravel()[found.pixel_flat] & (n_bins - 1))  # drop the class slot offset
            weights.append(pro_weights(found, maps[i]))  # ≈ 1/area, exact in any summation order
            sizes.append(region_size[found.pixel_region])
            slots.append(region_slot[found.pixel_region])
            owner.append(np.full(found.pixel_flat.size, row, np.int64))
            for key, value in (("image", np.full(found.area.size, start + i, np.int64)), ("area", found.area),
                               ("class_value", found.class_value), ("size", region_size),
                               ("half_score", found.half_score), ("max_score", found.max_score)):
                self.regions[key].append(np.asarray(value))
        b, w, s, c, o = (np.concatenate(x) for x in (bins, weights, sizes, slots, owner))
        self.pro_size += np.bincount(b + s * n_bins, weights=w, minlength=self.pro_size.size).reshape(-1, n_bins)
        self.pro_class += np.bincount(b + c * n_bins, weights=w, minlength=self.pro_class.size).reshape(-1, n_bins)
        pro = np.bincount((b >> shift) + o * n_coarse, weights=w, minlength=which.size * n_coarse)
        self.anomalous_images["index"].append(start + which)
        self.anomalous_images["pos"].append(per_image[which, 1:].sum(axis=1).astype(np.int32))
        self.anomalous_images["pro"].append(pro.reshape(which.size, n_coarse))

    # ------------------------------------------------------------------ results
    def compute(self) -> dict[str, Any]:
        """Metrics over everything added so far (see ``summary`` for the keys); raises ``MetricsError`` if undefined."""
        return summary.summarise(self)

    def curves(self, max_points: int = 1000) -> dict[str, dict[str, list[float]]]:
        """ROC (fpr, tpr), PR (recall, precision) and PRO (fpr ≤ limit, pro) points with thresholds, for figures."""
        return summary.curve_data(self, max_points)

    def save(self, path: str | Path) -> None:
        """Save the sufficient statistics (.npz); ``PixelMetrics.load`` restores an equivalent evaluator."""
        state.save(self, path)

    @classmethod
    def load(cls, path: str | Path) -> PixelMetrics:
        """An evaluator restored from ``save``: compute, bootstrap, or keep streaming."""
        saved = state.read(path)
        m = cls(**saved.settings)
        state.restore(m, saved)
        m._id_set = set(m.ids)
        return m

    def __repr__(self) -> str:
        return (f"PixelMetrics(images={self.count}, fpr_limit={self.fpr_limit}, compat={self.compat!r}, "
                f"bins={self.bins})")
