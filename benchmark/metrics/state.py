"""The sufficient statistics of a ``PixelMetrics``: what they are, their field layout, and the ``.npz`` file.

This is the module the others build on (``summary``, ``bootstrap`` and ``pixel`` read statistics through
:class:`Statistics`), so it imports none of them: ``pixel`` builds the evaluator and calls :func:`read` and
:func:`restore` to load one.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .histogram import Grid
from .inputs import MetricsError

FORMAT = "scrapbench.metrics/1"
# name -> (dtype, coarse: has a bootstrap-bin axis)
IMAGE_FIELDS = {"max": (np.float64, False), "pixels": (np.int64, False), "anomalous": (np.bool_, False),
                "neg": (np.int32, True)}
ANOMALOUS_FIELDS = {"index": (np.int64, False), "pos": (np.int32, True), "pro": (np.float64, True)}
REGION_FIELDS = {"image": (np.int64, False), "area": (np.int64, False), "class_value": (np.int64, False),
                 "size": (np.int64, False), "half_score": (np.float64, False), "max_score": (np.float64, False)}
COARSE_FIELDS = {"neg", "pos", "pro"}
_ALL_FIELDS = {**IMAGE_FIELDS, **ANOMALOUS_FIELDS, **REGION_FIELDS}  # names are unique across groups
_GROUPS = (("image", "images", IMAGE_FIELDS), ("anomalous", "anomalous_images", ANOMALOUS_FIELDS),
           ("region", "regions", REGION_FIELDS))


class Statistics(Protocol):
    """The settings and accumulated counts of an evaluator (``PixelMetrics`` is the implementation)."""

    fpr_limit: float
    class_names: tuple[str, ...] | None
    compat: str
    bins: int
    bootstrap_bins: int
    size_cutoffs: tuple[float, float]
    grid: Grid | None
    score_min: float
    score_max: float
    class_values: np.ndarray  # sorted mask values > 0 seen so far; row order of per-class arrays
    neg: np.ndarray  # [bins] normal pixels per fine bin
    pos: np.ndarray  # [classes, bins] anomalous pixels per class and fine bin
    pro_size: np.ndarray  # [size classes, bins] region-overlap weights
    pro_class: np.ndarray  # [classes, bins]
    ids: list[str]
    count: int
    integer_scores: bool
    # Per image / per region, as lists of per-batch arrays (concatenated on demand by ``gather``).
    images: dict[str, list[np.ndarray]]
    anomalous_images: dict[str, list[np.ndarray]]
    regions: dict[str, list[np.ndarray]]

    @property
    def align(self) -> int: ...


def gather(m: Statistics, group: str, key: str) -> np.ndarray:
    """One field over all batches as a single array (and keep it that way: later calls are free)."""
    store = getattr(m, group)
    dtype, coarse = _ALL_FIELDS[key]
    parts = store[key]
    if not parts:
        return np.zeros((0, m.bootstrap_bins) if coarse else (0,), dtype)
    if len(parts) > 1:
        store[key] = [np.concatenate(parts)]
    return store[key][0]


def save(m: Statistics, path: str | Path) -> None:
    """Write every statistic of ``m`` to ``path`` (.npz, compressed, atomic)."""
    from scrapbench.storage.atomic import atomic_write_bytes
    from scrapbench.storage.npz import npz_bytes

    meta = {"format": FORMAT, "fpr_limit": m.fpr_limit, "class_names": m.class_names, "compat": m.compat,
            "bins": m.bins, "bootstrap_bins": m.bootstrap_bins, "size_cutoffs": m.size_cutoffs,
            "grid": None if m.grid is None else [m.grid.exponent, m.grid.offset],
            "score_min": m.score_min if m.count else None, "score_max": m.score_max if m.count else None,
            "integer_scores": m.integer_scores}
    arrays = {"meta": np.array(json.dumps(meta)), "class_values": m.class_values, "neg": m.neg, "pos": m.pos,
              "pro_size": m.pro_size, "pro_class": m.pro_class, "ids": np.array(m.ids, dtype=np.str_)}
    for prefix, group, fields in _GROUPS:
        for key in fields:
            arrays[f"{prefix}_{key}"] = gather(m, group, key)
    atomic_write_bytes(path, npz_bytes(arrays))


@dataclass(frozen=True)
class Saved:
    """The contents of a statistics file: the evaluator's settings and its counts."""

    path: Path
    meta: dict[str, Any]
    arrays: dict[str, np.ndarray]

    @property
    def settings(self) -> dict[str, Any]:
        """Keyword arguments that build an empty evaluator with the saved settings."""
        meta = self.meta
        return {"fpr_limit": meta["fpr_limit"], "class_names": meta["class_names"], "compat": meta["compat"],
                "bins": meta["bins"], "bootstrap_bins": meta["bootstrap_bins"],
                "size_cutoffs": tuple(meta["size_cutoffs"])}


def read(path: str | Path) -> Saved:
    """Read and check a file written by ``save``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such metrics state file")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
        meta = json.loads(str(arrays["meta"]))
    except (OSError, ValueError, KeyError) as exc:
        raise MetricsError(f"{path}: not a metrics state file ({exc})") from exc
    if meta.get("format") != FORMAT:
        raise MetricsError(f"{path}: unknown metrics state format {meta.get('format')!r} (expected {FORMAT})")
    return Saved(path, meta, arrays)


def restore(m: Statistics, saved: Saved) -> None:
    """Fill an empty evaluator built from ``saved.settings`` with the saved counts."""
    meta, arrays = saved.meta, saved.arrays
    if meta["grid"] is not None:
        m.grid = Grid(meta["grid"][0], meta["grid"][1], m.bins, m.align)
        m.score_min, m.score_max = meta["score_min"], meta["score_max"]
    m.class_values, m.neg, m.pos = arrays["class_values"], arrays["neg"], arrays["pos"]
    m.pro_size, m.pro_class = arrays["pro_size"], arrays["pro_class"]
    m.integer_scores = bool(meta["integer_scores"])
    m.ids = [str(i) for i in arrays["ids"]]
    m.count = len(m.ids)
    for prefix, group, fields in _GROUPS:
        store = getattr(m, group)
        for key in fields:
            value = arrays[f"{prefix}_{key}"]
            store[key] = [value] if len(value) else []
    if not math.isfinite(m.score_min) and m.count:
        raise MetricsError(f"{saved.path}: corrupt metrics state (images without a score range)")
