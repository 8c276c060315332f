"""The per-image viewer's files and data: thumbnails of every test image, its ground truth and each method's
anomaly map, and the per-image numbers the page sorts and filters by.

Written under ``figures/viewer/`` of the report (one folder, staged and swapped in whole)::

    image/<i>.jpg     test image i (its position in the test split, 5 digits), at most ``max_side`` pixels a side
    truth/<i>.jpg     its ground truth: the image dimmed, each anomaly class in its colour (the qualitative figure's)
    m<k>/<i>.png      method k's map, 8-bit grey: code = round(255 · clip((score − lo) / (hi − lo), 0, 1))

File names are positions, never ids or method names, so no user text reaches a path. The page thresholds a
map without reading its pixels (a browser refuses ``getImageData`` on a file:// image): an SVG filter turns
the grey codes into a mask at a score threshold from the method's ``lo`` and ``hi``, which are chosen to
include its F1-max threshold. Per-image AP / AUROC / max score come from the run's evaluator state
(:func:`scrapbench.metrics.summary.per_image`), so they need no pass over the maps.
"""

from __future__ import annotations

import io
import math
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from scrapbench.metrics.regions import SIZE_NAMES
from scrapbench.report.drawing import class_overlay, robust_range
from scrapbench.report.figure_selection import lowest_seed, run_dataset
from scrapbench.storage.atomic import swap_in
from scrapbench.storage.npz import read_npz
from scrapbench.storage.outdir import clean_stale_staging, make_staging
from scrapbench.storage.writers import release

VIEWER_DIR = "figures/viewer"
MAX_SIDE = 160  # thumbnail side: 2,418 images × 12 thumbnails stay a few hundred MB at most
_JPEG_QUALITY = 88
_MAX_MAPS_FOR_LIMITS = 64  # as the qualitative figure: colour limits from at most this many maps per method


def write_viewer(methods: Sequence[str], labels: Mapping[str, str], records: dict, out_dir: Path,
                 max_side: int = MAX_SIDE) -> dict[str, Any] | None:
    """Write the thumbnails of ``methods`` (each its lowest seed with saved maps) and return the viewer's data
    (JSON-ready, see :mod:`scrapbench.report.html.page`); None when no method saved maps."""
    chosen = [(m, *found) for m in methods if (found := lowest_seed(records, m, "maps.npz")) is not None]
    if not chosen:
        return None
    dataset = run_dataset(chosen[0][2]["run"])
    test = dataset.test
    ids = [str(i) for i in test.ids]
    position = {sample_id: i for i, sample_id in enumerate(ids)}
    target = out_dir / VIEWER_DIR
    target.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_staging(target.parent)
    staging = make_staging(target)
    try:
        anomalous, pixels, classes = _write_images(test, staging, max_side)
        sizes: list[int] | None = None
        columns = []
        for k, (method, seed, rec) in enumerate(tqdm(chosen, desc="report: viewer thumbnails", unit="method",
                                                     leave=False, disable=None)):
            column, image_sizes = _write_maps(rec, position, staging / f"m{k}", max_side)
            sizes = sizes or image_sizes
            columns.append({"name": method, "label": labels.get(method, method), "seed": seed, "dir": f"m{k}",
                            **column})
        release(staging)  # its writer record goes; the folder is complete
        swap_in(staging, target, make_staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return {"dir": VIEWER_DIR, "side": max_side, "ids": ids, "anomalous": anomalous, "pixels": pixels,
            "classes": classes,
            "class_names": [str(c) for c in dataset.class_names], "sizes": sizes or [0] * len(ids),
            "size_names": list(SIZE_NAMES), "methods": columns}


def _thumbnail(image: Image.Image, max_side: int, resample: int) -> Image.Image:
    scale = max_side / max(image.size)
    if scale >= 1:
        return image
    return image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), resample)


def _jpeg(image: np.ndarray, path: Path, max_side: int) -> None:
    buffer = io.BytesIO()
    _thumbnail(Image.fromarray(image), max_side, Image.Resampling.LANCZOS).save(buffer, "JPEG", quality=_JPEG_QUALITY)
    path.write_bytes(buffer.getvalue())  # inside the staging folder: swapped in whole


def _write_images(test, folder: Path, max_side: int) -> tuple[list[int], list[int], list[int]]:
    """Image and ground-truth thumbnails; per image: anomalous (0/1), anomalous pixels, class bit mask."""
    (folder / "image").mkdir(parents=True)
    (folder / "truth").mkdir()
    anomalous, pixels, classes = [], [], []
    for i in range(len(test)):
        sample = test[i]
        image = np.asarray(sample.image)
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=-1)
        image = image[..., :3].astype(np.uint8)
        mask = np.asarray(sample.mask)
        _jpeg(image, folder / "image" / f"{i:05d}.jpg", max_side)
        # the image dimmed and each class in full colour: a thumbnail's few anomalous pixels must stand out
        _jpeg(class_overlay((image * 0.45).astype(np.uint8), mask, alpha=1.0), folder / "truth" / f"{i:05d}.jpg",
              max_side)
        values = np.unique(mask[mask > 0]).astype(np.int64)
        anomalous.append(int(bool(sample.is_anomalous)))
        pixels.append(int((mask > 0).sum()))
        classes.append(int(np.bitwise_or.reduce(1 << (values - 1))) if values.size else 0)
    return anomalous, pixels, classes


def encoding_range(maps: Sequence[np.ndarray], threshold: float | None) -> tuple[float, float]:
    """(lo, hi) of a method's grey codes: its robust colour limits, widened to hold its F1-max threshold
    strictly inside (so that the mask at that threshold is exact on the 8-bit codes)."""
    lo, hi = robust_range(maps)
    if threshold is not None and math.isfinite(threshold):
        span = hi - lo
        lo = min(lo, threshold - 0.02 * span)
        hi = max(hi, threshold + 0.02 * span)
    return lo, hi


def _write_maps(rec: dict, position: Mapping[str, int], folder: Path,
                max_side: int) -> tuple[dict[str, Any], list[int] | None]:
    """One method's map thumbnails; its column of the viewer data, and the images' size bit masks."""
    from scrapbench.metrics import PixelMetrics
    from scrapbench.metrics.summary import per_image

    folder.mkdir()
    threshold = rec["metrics"].get("f1max_threshold")
    threshold = float(threshold) if isinstance(threshold, (int, float)) else None
    n = len(position)
    ap, auroc, top = [None] * n, [None] * n, [None] * n
    sizes = None
    with read_npz(rec["folder"] / "maps.npz") as archive:
        names = [name for name in archive.files if name in position]
        lo, hi = encoding_range([archive[k] for k in sorted(names)[:_MAX_MAPS_FOR_LIMITS]] or [np.zeros(1)], threshold)
        for name in names:
            score = np.asarray(archive[name], np.float32)
            i = position[name]
            top[i] = _round(float(np.nanmax(score)))
            grey = Image.fromarray(np.ascontiguousarray(score.reshape(score.shape[-2:])))  # float32: mode "F"
            grey = np.asarray(_thumbnail(grey, max_side, Image.Resampling.BOX), np.float32)
            codes = np.round(np.clip((grey - lo) / (hi - lo), 0.0, 1.0) * 255).astype(np.uint8)
            buffer = io.BytesIO()
            Image.fromarray(codes).save(buffer, "PNG", compress_level=4)  # half the time of level 6, 3 % larger
            (folder / f"{i:05d}.png").write_bytes(buffer.getvalue())
    state_path = rec["folder"] / "metrics_state.npz"
    if state_path.is_file():
        values = per_image(PixelMetrics.load(state_path))
        size_masks = [0] * n
        for j, name in enumerate(values["ids"]):
            if name not in position:
                continue
            i = position[name]
            ap[i], auroc[i] = _round(values["ap"][j]), _round(values["auroc"][j])
            top[i] = top[i] if top[i] is not None else _round(values["max"][j])
            size_masks[i] = int(values["sizes"][j])
        sizes = size_masks
    saved = set(names)
    missing = [i for name, i in position.items() if name not in saved]  # images without a saved map
    return {"lo": lo, "hi": hi, "threshold": threshold, "missing": missing, "ap": ap, "auroc": auroc,
            "max": top}, sizes


def _round(value: float) -> float | None:
    """4 significant digits (the page shows 3); None for NaN (JSON has no NaN)."""
    value = float(value)
    return None if not math.isfinite(value) else float(f"{value:.4g}")
