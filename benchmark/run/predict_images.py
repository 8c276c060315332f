"""``scrapbench predict``: apply a fitted method to a folder of images of any size.

Large images are cut into patches the way ``prepare`` cuts training data (same tiling rule), each
patch goes through the method, and the patch maps are stitched back (averaged where tiles overlap).
Per image we write an overlay PNG, the raw map, and the connected regions above a threshold (by
default the F1-max threshold the run found on its test set) to ``regions.json`` / ``regions.csv``.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from tqdm.auto import tqdm

from scrapbench.core.method import AnomalyMethod, check_maps
from scrapbench.datasets.folder import IMAGE_SUFFIXES, read_json_file
from scrapbench.datasets.io.cache import default_cache_dir
from scrapbench.datasets.io.filecheck import check_files
from scrapbench.datasets.io.images import image_size, read_image
from scrapbench.datasets.prepare.tiling import tile_starts
from scrapbench.datasets.types import DatasetError
from scrapbench.storage.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text

_FLOAT16_MAX = 65504.0


@dataclass(frozen=True)
class Region:
    """One connected area of the map at or above the threshold (pixel box: x, y, width, height)."""

    image: str
    region: int
    x: int
    y: int
    width: int
    height: int
    area: int
    max_score: float
    mean_score: float
    class_name: str | None = None
    class_score: float | None = None


def _tiles(height: int, width: int, patch: int, overlap: int) -> list[tuple[int, int, int, int]]:
    return [(x, y, min(x + patch, width), min(y + patch, height))
            for y in tile_starts(height, patch, overlap) for x in tile_starts(width, patch, overlap)]


def predict_tiled(
    method: AnomalyMethod, image: np.ndarray, patch_size: int, overlap: int = 0, batch_size: int = 8,
    with_classes: bool = True,
) -> tuple[np.ndarray, np.ndarray | None]:
    """The stitched anomaly map (H×W float32) and per-class maps (K×H×W, or None) of one image.

    Overlapping tiles are averaged; sums run in float64 so that identical tile values average back
    to exactly that value.
    """
    height, width = image.shape[:2]
    boxes = _tiles(height, width, patch_size, overlap)
    total = np.zeros((height, width), np.float64)
    count = np.zeros((height, width), np.int32)
    class_total: np.ndarray | None = None
    name = method.registry_name or type(method).__name__
    for begin in range(0, len(boxes), batch_size):
        batch = boxes[begin:begin + batch_size]
        tiles = [np.ascontiguousarray(image[y0:y1, x0:x1]) for x0, y0, x1, y1 in batch]
        maps, class_maps = method.predict_with_classes(tiles) if with_classes else (method.predict(tiles), None)
        maps = check_maps(maps, tiles, name)
        if class_maps is None:
            with_classes = False
        for i, (x0, y0, x1, y1) in enumerate(batch):
            total[y0:y1, x0:x1] += maps[i]
            count[y0:y1, x0:x1] += 1
            if with_classes:
                per_class = np.asarray(class_maps[i], dtype=np.float64)
                if class_total is None:
                    class_total = np.zeros((per_class.shape[0], height, width), np.float64)
                class_total[:, y0:y1, x0:x1] += per_class
    stitched = (total / count).astype(np.float32)
    classes = (class_total / count).astype(np.float32) if with_classes and class_total is not None else None
    return stitched, classes


def predicted_regions(
    image_name: str, amap: np.ndarray, threshold: float, class_maps: np.ndarray | None = None,
    class_names: Sequence[str] = (), min_area: int = 1,
) -> list[Region]:
    """Predicted regions: 8-connected components of ``amap >= threshold`` with their box, area and scores.

    With per-class maps, a region's class is the one with the highest mean score over its pixels.
    """
    from scipy import ndimage

    labels, _ = ndimage.label(amap >= threshold, structure=np.ones((3, 3), bool))
    regions = []
    for index, where in enumerate(ndimage.find_objects(labels), start=1):
        if where is None:
            continue
        inside = labels[where] == index
        area = int(inside.sum())
        if area < min_area:
            continue
        scores = amap[where][inside]
        class_name = class_score = None
        if class_maps is not None and len(class_names):
            means = class_maps[(slice(None), *where)][:, inside].mean(axis=1)
            best = int(np.argmax(means))
            class_name, class_score = class_names[best], float(means[best])
        regions.append(Region(image_name, len(regions) + 1, where[1].start, where[0].start,
                              where[1].stop - where[1].start, where[0].stop - where[0].start, area,
                              float(scores.max()), float(scores.mean()), class_name, class_score))
    return regions


def render_overlay(image: np.ndarray, amap: np.ndarray, threshold: float, regions: Sequence[Region],
                   alpha: float = 0.55) -> np.ndarray:
    """The image with pixels at/above ``threshold`` tinted (yellow → red as scores rise) and boxes."""
    from matplotlib import colormaps

    out = image.astype(np.float32).copy()
    above = amap >= threshold
    if above.any():
        top = float(amap[above].max())
        scaled = (amap[above] - threshold) / (top - threshold) if top > threshold else np.ones(int(above.sum()))
        colours = colormaps["autumn_r"](0.15 + 0.85 * np.clip(scaled, 0, 1))[:, :3] * 255
        out[above] = (1 - alpha) * out[above] + alpha * colours
    canvas = Image.fromarray(out.round().astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    side = max(image.shape[:2])
    line, font_size = max(1, side // 400), max(10, side // 60)
    try:
        font = ImageFont.load_default(size=font_size)
    except TypeError:  # Pillow < 10.1 has one bitmap size
        font = ImageFont.load_default()
    for r in regions:
        draw.rectangle([r.x, r.y, r.x + r.width - 1, r.y + r.height - 1], outline=(0, 255, 255), width=line)
        label = f"{r.class_name + ' ' if r.class_name else ''}{r.max_score:.3g}"
        position = (r.x + line + 1, max(0, r.y - font_size - 4))
        draw.rectangle(draw.textbbox(position, label, font=font), fill=(0, 0, 0))  # readable on any background
        draw.text(position, label, fill=(0, 255, 255), font=font)
    return np.asarray(canvas)


def default_threshold(model_dir: Path) -> float:
    """The F1-max threshold the run found on its test set (``metrics.json`` next to ``model/``)."""
    path = model_dir.parent / "metrics.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no metrics next to the model; pass --threshold")
    metrics = read_json_file(path, "run metrics")
    value = metrics.get("f1max_threshold") if isinstance(metrics, dict) else None
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not np.isfinite(value):
        raise ValueError(f"{path}: has no usable f1max_threshold; pass --threshold")
    return float(value)


def training_patch_size(model_dir: Path) -> int | None:
    """The size of the patches the method was trained and evaluated on, from the run record."""
    record_path = model_dir.parent / "run.json"
    if not record_path.is_file():
        return None
    record = read_json_file(record_path, "run record")
    if not isinstance(record, dict):
        return None
    dataset = record.get("dataset") or {}
    if dataset.get("patch_size"):
        return int(dataset["patch_size"])
    spec = dataset.get("spec")
    if spec == "synthetic":
        from scrapbench.core.presets import SYNTHETIC_PRESETS

        preset = record.get("preset")
        return SYNTHETIC_PRESETS[preset].patch_size if preset in SYNTHETIC_PRESETS else None
    if spec and Path(spec).is_dir():
        from scrapbench.datasets.folder import read_class_names

        try:
            _, meta = read_class_names(Path(spec))
        except DatasetError:
            meta = {}
        size = (meta.get("notes") or {}).get("patch_size") if isinstance(meta.get("notes"), dict) else None
        if isinstance(size, int) and size > 0:
            return size
        first = next(iter(sorted((Path(spec) / "train" / "images").glob("*"))), None)
        if first is not None and first.suffix.lower() in IMAGE_SUFFIXES:
            return max(image_size(first))
    return None


def _list_images(images: Path) -> list[Path]:
    if images.is_file():
        return [images]
    if not images.is_dir():
        raise FileNotFoundError(f"{images}: no such image or folder")
    found = sorted(p for p in images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
    if not found:
        raise FileNotFoundError(f"{images}: no images with suffix {IMAGE_SUFFIXES}")
    return found


def predict_folder(
    model_dir: str | Path,
    images_dir: str | Path,
    out_dir: str | Path,
    threshold: float | None = None,
    patch_size: int | None = None,
    overlap: int = 0,
    batch_size: int = 8,
    min_area: int = 1,
    device: str = "cpu",
    save_maps: bool = True,
    show_progress: bool = True,
    precision: str = "auto",
    force: bool = False,
) -> dict[str, Any]:
    """Predict every image under ``images_dir`` with the method saved in ``model_dir``; returns the summary.

    Writes ``out_dir/overlays/<stem>.png``, ``out_dir/maps/<stem>.npy`` (float16 unless values exceed
    its range), ``regions.json`` (summary + regions per image) and ``regions.csv`` (one row per region).
    ``out_dir`` follows :mod:`scrapbench.storage.outdir`: never the model's or the images' folder, replaced
    only if ``predict`` wrote it (``force``: any scrapbench command), and only once every image is done.
    Every image is decoded once before the first prediction, so a bad file fails before any work is done.
    ``precision``: the networks' precision (``scrapbench.core.precision``; ``auto`` is fp32 on CPU), recorded
    in the summary.
    """
    from scrapbench.core.precision import resolve_precision
    from scrapbench.storage.outdir import guard_output, staged_output

    model_dir, out_dir, images_dir = Path(model_dir), Path(out_dir), Path(images_dir)
    inputs = [model_dir, images_dir]
    resolved = resolve_precision(precision, device)
    guard_output(out_dir, inputs, command="predict", force=force)
    method = AnomalyMethod.load(model_dir, device=device)
    method.precision = resolved
    threshold_source = "given"
    if threshold is None:
        threshold, threshold_source = default_threshold(model_dir), "f1max_threshold of the run's test set"
    if patch_size is None:
        patch_size = training_patch_size(model_dir)
        if patch_size is None:
            raise ValueError(f"{model_dir}: cannot tell the training patch size from the run; pass --patch-size")
    if not 0 <= overlap < patch_size:
        raise ValueError(f"overlap must be in [0, {patch_size}), got {overlap}")
    paths = _list_images(images_dir)
    stems = [p.stem for p in paths]
    if len(set(stems)) != len(stems):
        raise ValueError(f"{images_dir}: several images share a stem; rename them")
    check_files([(p, "image") for p in paths], paths[0].parent, cache_dir=default_cache_dir(),
                show_progress=None if show_progress else False)

    per_image, all_regions = [], []
    with staged_output(out_dir, "predict", inputs=inputs, force=force) as staging:
        for path in tqdm(paths, desc="predict", unit="image", disable=not show_progress):
            image = read_image(path)
            amap, class_maps = predict_tiled(method, image, patch_size, overlap, batch_size)
            regions = predicted_regions(path.name, amap, threshold, class_maps, method.class_names, min_area)
            all_regions.extend(regions)
            buffer = io.BytesIO()
            Image.fromarray(render_overlay(image, amap, threshold, regions)).save(buffer, format="PNG")
            atomic_write_bytes(staging / "overlays" / f"{path.stem}.png", buffer.getvalue())
            if save_maps:
                buffer = io.BytesIO()
                fits = float(np.abs(amap).max(initial=0.0)) <= _FLOAT16_MAX
                np.save(buffer, amap.astype(np.float16 if fits else np.float32))
                atomic_write_bytes(staging / "maps" / f"{path.stem}.npy", buffer.getvalue())
            per_image.append({"image": path.name, "height": image.shape[0], "width": image.shape[1],
                              "max_score": float(amap.max()), "anomalous": bool(regions),
                              "regions": [asdict(r) for r in regions]})
        summary = {
            "model": str(model_dir),
            "method": method.registry_name or type(method).__name__,
            "class_names": list(method.class_names),
            "threshold": threshold,
            "threshold_source": threshold_source,
            "patch_size": patch_size,
            "overlap": overlap,
            "min_area": min_area,
            "precision": resolved,
            "images": per_image,
        }
        atomic_write_json(staging / "regions.json", summary)
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(Region.__dataclass_fields__))
        writer.writeheader()
        writer.writerows(asdict(r) for r in all_regions)
        atomic_write_text(staging / "regions.csv", buffer.getvalue())
    return summary
