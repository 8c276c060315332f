"""Merge evaluators that saw disjoint parts of one test set (sharded prediction) into one.

Every statistic is a histogram on an absolute power-of-two grid (see ``histogram``), so a part's counts move onto the
grid the whole set would have ended on without error, and adding them gives the counts of one evaluator that saw
every map: ``merge([a, b]).compute()`` equals, bit for bit, the metrics of one evaluator updated with a's maps and
then b's. The per-image and per-region records are concatenated in part order, so part order is image order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from . import state
from .histogram import covering_grid, minimum_exponent, rebin, remap
from .inputs import MetricsError

if TYPE_CHECKING:
    from .pixel import PixelMetrics

_SETTINGS = ("fpr_limit", "class_names", "compat", "bins", "bootstrap_bins", "size_cutoffs")


def merge(parts: Sequence[PixelMetrics]) -> PixelMetrics:
    """One evaluator holding every image of ``parts`` (same settings, no image id twice), in part order."""
    from .pixel import MAX_CLASSES, PixelMetrics

    if not parts:
        raise MetricsError("nothing to merge: no evaluators given")
    first = parts[0]
    for part in parts[1:]:
        differing = [name for name in _SETTINGS if getattr(part, name) != getattr(first, name)]
        if differing:
            raise MetricsError(f"cannot merge evaluators with different settings: {', '.join(differing)}")
    merged = PixelMetrics(**{name: getattr(first, name) for name in _SETTINGS})
    filled = [part for part in parts if part.count]
    for part in filled:
        repeated = merged._id_set.intersection(part.ids)
        if repeated:
            raise MetricsError(f"image id {sorted(repeated)[0]!r} is in two of the merged evaluators")
        merged._id_set.update(part.ids)
        merged.ids.extend(part.ids)
    if not filled:
        return merged
    merged.score_min = min(part.score_min for part in filled)
    merged.score_max = max(part.score_max for part in filled)
    # The grid one evaluator ends on depends only on the global minimum and maximum (see ``histogram``).
    merged.grid = covering_grid(merged.score_min, merged.score_max, merged.bins, merged.align,
                                minimum_exponent(merged.score_min, merged.score_max))
    merged.class_values = np.unique(np.concatenate([part.class_values for part in filled]))
    if merged.class_values.size > MAX_CLASSES:
        raise MetricsError(f"the merged masks hold {merged.class_values.size} distinct non-zero values (at most "
                           f"{MAX_CLASSES} classes are kept apart)")
    merged.pos = np.zeros((merged.class_values.size, merged.bins), np.int64)
    merged.pro_class = np.zeros((merged.class_values.size, merged.bins))
    for part in filled:
        _add_part(merged, part)
    merged.integer_scores = all(part.integer_scores for part in filled)
    return merged


def _add_part(merged: PixelMetrics, part: PixelMetrics) -> None:
    assert merged.grid is not None and part.grid is not None
    if part.grid.exponent > merged.grid.exponent:
        raise MetricsError("internal error: a part's grid is coarser than the merged grid")
    shift, factor = remap(part.grid, merged.grid)
    coarse_shift = shift // merged.align  # offsets are multiples of align: the coarse bins move by whole bins

    def fine(counts: np.ndarray) -> np.ndarray:
        return rebin(counts, shift, factor, merged.bins)

    def coarse(rows: np.ndarray) -> np.ndarray:
        return rebin(rows, coarse_shift, factor, merged.bootstrap_bins)

    rows = np.searchsorted(merged.class_values, part.class_values)
    merged.neg += fine(part.neg)
    merged.pos[rows] += fine(part.pos)
    merged.pro_size += fine(part.pro_size)
    merged.pro_class[rows] += fine(part.pro_class)
    first_image = merged.count
    for key in state.IMAGE_FIELDS:
        values = state.gather(part, "images", key)
        merged.images[key].append(coarse(values) if key in state.COARSE_FIELDS else values.copy())
    for key in state.ANOMALOUS_FIELDS:
        values = state.gather(part, "anomalous_images", key)
        if key == "index":
            values = values + first_image
        elif key in state.COARSE_FIELDS:
            values = coarse(values)
        merged.anomalous_images[key].append(values)
    for key in state.REGION_FIELDS:
        values = state.gather(part, "regions", key)
        merged.regions[key].append(values + first_image if key == "image" else values.copy())
    merged.count += part.count
