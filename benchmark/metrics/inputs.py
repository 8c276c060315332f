"""Validation of what ``PixelMetrics.update`` receives: arrays or tensors, ids, finite scores, class masks."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np


class MetricsError(ValueError):
    """Bad input to the evaluator, or a metric that is undefined for the data seen (named in the message)."""


def to_numpy(value: Any, what: str) -> np.ndarray:
    """numpy view of an array or a (CPU or GPU) torch tensor, as [B, H, W]."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # a torch tensor; avoids importing torch here
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16":  # numpy has no bfloat16; float32 holds every bfloat16 exactly
            value = value.float()
        value = value.numpy()
    array = np.asarray(value)
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3:
        raise MetricsError(f"{what} must have shape [B, H, W] (or [H, W]); got {tuple(array.shape)}")
    return array


def as_scores(maps: np.ndarray) -> np.ndarray:
    """Maps as float32 or float64, without merging scores that the input tells apart.

    float32 and float64 stay; bool, 8/16-bit integers and float16 become float32 (exact). Wider integers become
    float64: float32 holds integers exactly only up to 2**24, so int32/int64 maps of large values (e.g. around 1e15)
    would collapse onto a few values and lose their ranking. float64 is exact up to 2**53; beyond that, integers that
    round to the same float64 fall into one grid bin anyway (bins are at least 2**-50 of the largest magnitude wide),
    so ``grid_error_bound`` counts them as possible error. Wider floats (longdouble) become float64 likewise.
    """
    if maps.dtype in (np.float32, np.float64):
        return maps
    if maps.dtype.kind in "fiub":
        exact_in_float32 = maps.dtype.itemsize <= 2
        return maps.astype(np.float32 if exact_in_float32 else np.float64)
    raise MetricsError(f"anomaly maps must be real numbers; got dtype {maps.dtype}")


def as_class_mask(masks: np.ndarray, ids: Sequence[str]) -> np.ndarray:
    """Masks as uint8 / uint16 class indices (0 = normal); bool, integer and integral float masks are accepted."""
    if masks.dtype == bool:
        return masks.view(np.uint8)
    if masks.dtype.kind not in "iuf":
        raise MetricsError(f"masks must hold integer class indices (0 = normal); got dtype {masks.dtype}")
    flat = masks.reshape(masks.shape[0], -1)
    low, high = flat.min(axis=1), flat.max(axis=1)
    for i in range(masks.shape[0]):
        if not (np.isfinite(low[i]) and np.isfinite(high[i])) or low[i] < 0:
            raise MetricsError(f"mask of image {ids[i]!r} has negative or non-finite values; "
                               "masks hold class indices (0 = normal, >0 anomalous)")
    if masks.dtype.kind == "f" and not np.array_equal(masks, np.floor(masks)):
        bad = int(np.flatnonzero((flat != np.floor(flat)).any(axis=1))[0])
        raise MetricsError(f"mask of image {ids[bad]!r} has fractional values; masks hold class indices")
    top = float(high.max()) if high.size else 0.0
    if top <= np.iinfo(np.uint8).max:
        return masks.astype(np.uint8, copy=False)
    if top <= np.iinfo(np.uint16).max:
        return masks.astype(np.uint16, copy=False)
    raise MetricsError(f"mask class indices go up to {top:g}; at most 65535 classes are supported")


def check_finite(low: np.ndarray, high: np.ndarray, ids: Sequence[str]) -> None:
    """Per-image min/max carry NaN and ±inf through, so checking them checks every pixel."""
    bad = np.flatnonzero(~(np.isfinite(low) & np.isfinite(high)))
    if bad.size:
        i = int(bad[0])
        kind = "NaN" if np.isnan(low[i]) or np.isnan(high[i]) else "infinite value"
        raise MetricsError(f"{kind} in anomaly map of image {ids[i]!r}"
                           + (f" (and {bad.size - 1} more image(s) in this batch)" if bad.size > 1 else ""))


def check_ids(ids: Sequence[Any] | None, count: int, seen: set[str], first_index: int) -> list[str]:
    """Image ids as strings, unique over everything seen; ``#k`` (running index) when none are given."""
    if ids is None:
        return [f"#{first_index + i}" for i in range(count)]
    if isinstance(ids, str) or len(ids) != count:
        raise MetricsError(f"ids must be a sequence of {count} image ids (one per map)")
    names = [str(i) for i in ids]
    repeated = sorted({n for n in names if n in seen} | {n for n, c in Counter(names).items() if c > 1})
    if repeated:
        raise MetricsError(f"image id(s) {repeated[:5]} given more than once; each test image must be added once")
    return names
