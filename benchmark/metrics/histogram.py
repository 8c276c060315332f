"""A score grid that grows while maps stream in, and exact re-binning onto a coarser grid.

Why this design (the calibration problem): the score range is unknown until the last map has been seen. The bins
here are *absolute*: bin ``j`` covers ``[j·w, (j+1)·w)`` with ``w = 2**e`` a power of two. Quantising a score is then
exact float arithmetic (scaling by a power of two, ``floor``), and doubling ``w`` merges pairs of neighbouring bins
exactly, so data already counted on a fine grid can be moved onto a coarser one without error. A histogram holds a
window of ``n_bins`` bins starting at ``offset·w``; the offset is a multiple of ``align`` so that coarse histograms
(``n_bins / align`` bins of width ``align·w``, used for the bootstrap) nest in the fine ones.

When a batch falls outside the window, the smallest ``w`` (never smaller than the current one) whose window holds
[global min, global max] is chosen and every stored histogram is merged into it. That ``w`` depends only on the global
minimum and maximum, so the final grid, and every metric computed from it, does not depend on batch order or size.

Resolution: the smallest fitting ``w`` satisfies ``(max - min) / w ≥ (n_bins - align) / 2``, so the observed score
range always spans at least that many bins (130,944 for the default 2**18 bins and align 256), usually more.
Bins are never finer than ``2**-50 · max|score|`` (about float64 resolution), which keeps indices exact in int64
and float64; only a score range narrower than that spans fewer bins.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# Bins finer than 2**-50 of the largest score magnitude resolve nothing even in float64; the cap keeps |index| < 2**51.
_RELATIVE_RESOLUTION_BITS = 50
_MIN_EXPONENT = -1000
# Scaling by 2**-e stays exact in float32 only while 2**-e is a normal float32.
_FLOAT32_EXPONENTS = range(-126, 127)


@dataclass(frozen=True)
class Grid:
    """Window of ``n_bins`` bins of width ``2**exponent`` starting at score ``offset · 2**exponent``."""

    exponent: int
    offset: int
    n_bins: int
    align: int

    @property
    def width(self) -> float:
        return math.ldexp(1.0, self.exponent)

    def edge(self, index: int | np.ndarray) -> float | np.ndarray:
        """Lower score edge of bin ``index`` (exact: an integer times a power of two)."""
        if isinstance(index, np.ndarray):
            return np.ldexp((index + self.offset).astype(np.float64), self.exponent)
        return math.ldexp(float(index + self.offset), self.exponent)

    def bin_of(self, score: float) -> int:
        """Window index of ``score`` (may lie outside ``[0, n_bins)``)."""
        return math.floor(math.ldexp(score, -self.exponent)) - self.offset

    def contains(self, low: float, high: float) -> bool:
        return self.bin_of(low) >= 0 and self.bin_of(high) < self.n_bins

    def quantise(self, maps: np.ndarray) -> np.ndarray:
        """Window index (int64) of every score; every score must lie inside the window."""
        use_float32 = (maps.dtype == np.float32 and -self.exponent in _FLOAT32_EXPONENTS
                       and float(np.float32(self.offset)) == self.offset)
        dtype = np.float32 if use_float32 else np.float64
        scaled = np.multiply(maps, dtype(math.ldexp(1.0, -self.exponent)), dtype=dtype)
        np.floor(scaled, out=scaled)
        # floor(x / w) and the offset are representable integers and the difference lies in [0, n_bins), so this
        # subtraction is exact even in float32.
        np.subtract(scaled, dtype(self.offset), out=scaled)
        return scaled.astype(np.int64, order="C")


def minimum_exponent(low: float, high: float) -> int:
    """Finest allowed bin exponent for scores within [low, high]."""
    magnitude = max(abs(low), abs(high))
    return max(math.frexp(magnitude)[1] - _RELATIVE_RESOLUTION_BITS, _MIN_EXPONENT)


def covering_grid(low: float, high: float, n_bins: int, align: int, min_exponent: int) -> Grid:
    """The finest grid (bin width ≥ ``2**min_exponent``) whose window holds [low, high]."""
    span = high - low
    exponent = min_exponent
    if span > 0:
        # Any w ≤ span / (n_bins + 1) cannot hold the span, so start just below the first candidate.
        exponent = max(min_exponent, math.frexp(span / (n_bins + 1))[1] - 1)
    while True:
        first = math.floor(math.ldexp(low, -exponent))
        offset = (first // align) * align
        if math.floor(math.ldexp(high, -exponent)) - offset < n_bins:
            return Grid(exponent, offset, n_bins, align)
        exponent += 1


def remap(old: Grid, new: Grid) -> tuple[int, int]:
    """``(shift, factor)`` such that old bin ``i`` lies inside new bin ``(i + shift) // factor``."""
    factor = 1 << (new.exponent - old.exponent)
    return old.offset - new.offset * factor, factor


def rebin(counts: np.ndarray, shift: int, factor: int, n_out: int) -> np.ndarray:
    """Merge bins along the last axis: old bin ``i`` is added to new bin ``(i + shift) // factor``.

    Old bins that fall outside ``[0, n_out)`` must be empty (the caller chose a window that holds all data).
    ``shift`` and ``factor`` are Python ints and may exceed int64 (the grid grew from tiny scores to large ones).
    """
    n_in = counts.shape[-1]
    whole, rest = divmod(shift, factor)
    position = np.arange(n_in, dtype=np.int64)
    # When one new bin spans more than the old window, at most one boundary (clamped to stay in int64) falls inside.
    relative = ((position >= min(factor - rest, n_in)).astype(np.int64) if factor > n_in
                else (position + rest) // factor)
    # target = whole + relative, with relative in [0, n_in]; compare against clamped bounds to stay in int64.
    low = min(max(-whole, -1), n_in + 1)
    high = min(max(n_out - whole, -1), n_in + 1)
    inside = (relative >= low) & (relative < high)
    if not inside.all() and np.any(counts[..., ~inside]):
        raise RuntimeError("internal error: re-binning would drop counted scores")
    out = np.zeros((*counts.shape[:-1], n_out), dtype=counts.dtype)
    kept = np.flatnonzero(inside)
    if kept.size == 0:
        return out
    part = counts[..., kept[0]:kept[-1] + 1]
    part_target = relative[kept[0]:kept[-1] + 1] + whole  # in [0, n_out): fits int64
    starts = np.flatnonzero(np.r_[True, part_target[1:] != part_target[:-1]])
    out[..., part_target[starts]] = np.add.reduceat(part, starts, axis=-1)
    return out
