"""Readers for raw annotated images: class-index PNG masks, COCO instance JSON, the MVTec AD layout.

Each reader returns :class:`SourceImage` records (one per raw image) and the class names. Everything
that can be checked without decoding pixels (missing files, unknown categories, polygons outside the
image, RLE sizes) is checked when the annotations are read, so a bad file fails before any output is
written; pixel-level checks (mask values, mask size) happen when a mask is decoded. Every error is a
:class:`DatasetError` naming the file.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, UnidentifiedImageError

from scrapbench.datasets.folder import IMAGE_SUFFIXES, read_json_file, read_mask
from scrapbench.datasets.types import DatasetError

ANNOTATION_FORMATS = ("masks", "coco", "mvtec")
# Annotation tools often put vertices exactly on, or half a pixel beyond, the image border.
_POLYGON_TOLERANCE_PX = 1.0


@dataclass(frozen=True)
class SourceImage:
    """One raw image and how to get its class-index mask (uint8, 0 = normal, 1..K)."""

    id: str
    image_path: Path
    load_mask: Callable[[tuple[int, int]], np.ndarray]  # (height, width) → mask
    split: str | None = None  # a split fixed by the source layout (MVTec), used with keep_split
    annotation_path: Path | None = None


def _images_in(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        raise DatasetError(f"{folder}: image folder does not exist")
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        if path.stem in found:
            raise DatasetError(f"{path}: duplicate image stem {path.stem!r} (also {found[path.stem].name})")
        found[path.stem] = path
    if not found:
        raise DatasetError(f"{folder}: no images with suffix {IMAGE_SUFFIXES}")
    return found


# -- class-index PNG masks ---------------------------------------------------------------------


def read_mask_folder(
    images_dir: str | Path, masks_dir: str | Path, class_names: Sequence[str], missing_is_normal: bool = False
) -> list[SourceImage]:
    """Images plus ``masks_dir/<stem>.png`` class-index masks (values 0..K)."""
    images_dir, masks_dir = Path(images_dir), Path(masks_dir)
    if not class_names:
        raise DatasetError(f"{masks_dir}: class-index masks need the class names (index 1..K), e.g. --classes a,b")
    if not masks_dir.is_dir():
        raise DatasetError(f"{masks_dir}: mask folder does not exist")
    images = _images_in(images_dir)
    orphans = sorted(p.name for p in masks_dir.glob("*.png") if p.stem not in images)
    if orphans:
        raise DatasetError(f"{masks_dir}: masks without an image in {images_dir}: {orphans[:5]}")
    num_classes = len(class_names)
    sources = []
    for stem, path in images.items():
        mask_path = masks_dir / f"{stem}.png"
        if mask_path.is_file():
            def load(size: tuple[int, int], mask_path: Path = mask_path) -> np.ndarray:
                return read_mask(mask_path, size, num_classes)
        elif missing_is_normal:
            def load(size: tuple[int, int]) -> np.ndarray:
                return np.zeros(size, np.uint8)
            mask_path = None
        else:
            raise DatasetError(
                f"{mask_path}: missing annotation for image {path.name} (write an all-zero mask for a normal "
                f"image, or pass --missing-mask-normal)"
            )
        sources.append(SourceImage(stem, path, load, annotation_path=mask_path))
    return sources


# -- COCO instance segmentation ----------------------------------------------------------------


def read_coco(
    images_dir: str | Path, annotation_file: str | Path, class_names: Sequence[str] | None = None
) -> tuple[list[SourceImage], tuple[str, ...]]:
    """Images listed in a COCO JSON; polygons and RLE (compressed or not) painted as class indices.

    Class indices follow ``class_names`` when given (every used category must be among them),
    else the categories sorted by id. Overlapping instances: larger ones are painted first, so a
    small object lying on a large one stays visible.
    """
    images_dir, annotation_file = Path(images_dir), Path(annotation_file)
    doc = read_json_file(annotation_file, "COCO annotation file")
    if not isinstance(doc, dict):
        raise DatasetError(f"{annotation_file}: expected a JSON object (a COCO instances file)")
    for key in ("images", "annotations", "categories"):
        if not isinstance(doc.get(key), list):
            raise DatasetError(f"{annotation_file}: missing list {key!r} (is this a COCO instances file?)")

    for key, fields in (("categories", ("id", "name")), ("images", ("id", "file_name", "width", "height")),
                        ("annotations", ("image_id", "category_id", "segmentation"))):
        for entry in doc[key]:
            missing = [f for f in fields if not isinstance(entry, dict) or f not in entry]
            if missing:
                raise DatasetError(f"{annotation_file}: an entry of {key!r} lacks {missing}: {str(entry)[:120]}")
    categories = {c["id"]: c["name"] for c in doc["categories"]}
    class_names = tuple(class_names) if class_names else tuple(categories[k] for k in sorted(categories))
    index_of = {name: i + 1 for i, name in enumerate(class_names)}

    by_image: dict[Any, list[dict]] = {}
    for ann in doc["annotations"]:
        where = f"{annotation_file}: annotation {ann.get('id')!r}"
        if ann.get("category_id") not in categories:
            raise DatasetError(f"{where}: unknown category_id {ann.get('category_id')!r}; categories lists "
                               f"{sorted(categories)}")
        name = categories[ann["category_id"]]
        if name not in index_of:
            raise DatasetError(f"{where}: unknown category {name!r}; expected one of {list(class_names)}")
        by_image.setdefault(ann.get("image_id"), []).append(ann)

    sources = []
    seen: set[str] = set()
    for info in doc["images"]:
        path = images_dir / info["file_name"]
        if not path.is_file():
            raise DatasetError(f"{path}: image listed in {annotation_file} is missing")
        stem = Path(info["file_name"]).with_suffix("").as_posix().replace("/", "__")
        if stem in seen:
            raise DatasetError(f"{annotation_file}: image {info['file_name']!r} listed twice")
        seen.add(stem)
        height, width = int(info["height"]), int(info["width"])
        anns = by_image.get(info["id"], [])
        shapes = [(_coco_shape(a, height, width, f"{annotation_file}: annotation {a.get('id')!r}"),
                   index_of[categories[a["category_id"]]], float(a.get("area") or 0.0)) for a in anns]
        shapes.sort(key=lambda s: -s[2])

        def load(size: tuple[int, int], shapes=shapes, path=path, h=height, w=width) -> np.ndarray:
            if size != (h, w):
                raise DatasetError(f"{path}: image is {size[1]}x{size[0]} but {annotation_file} says {w}x{h}")
            return _paint(shapes, size)

        sources.append(SourceImage(stem, path, load, annotation_path=annotation_file))
    if not sources:
        raise DatasetError(f"{annotation_file}: lists no images")
    return sources, class_names


def _coco_shape(ann: dict, height: int, width: int, where: str) -> list[np.ndarray] | np.ndarray:
    """Validated polygons (list of N×2 arrays) or a decoded RLE mask (bool H×W)."""
    seg = ann.get("segmentation")
    if isinstance(seg, list):
        polygons = []
        for flat in seg:
            points = np.asarray(flat, dtype=np.float64)
            if points.ndim != 1 or points.size < 6 or points.size % 2:
                raise DatasetError(f"{where}: a polygon needs at least 3 (x, y) points, got {points.size} numbers")
            points = points.reshape(-1, 2)
            tol = _POLYGON_TOLERANCE_PX
            if (points[:, 0].min() < -tol or points[:, 1].min() < -tol or points[:, 0].max() > width + tol
                    or points[:, 1].max() > height + tol):
                raise DatasetError(
                    f"{where}: polygon outside the image ({width}x{height}): x in "
                    f"[{points[:, 0].min():.1f}, {points[:, 0].max():.1f}], y in "
                    f"[{points[:, 1].min():.1f}, {points[:, 1].max():.1f}]"
                )
            polygons.append(points)
        if not polygons:
            raise DatasetError(f"{where}: empty segmentation")
        return polygons
    if isinstance(seg, dict) and "counts" in seg and "size" in seg:
        if list(seg["size"]) != [height, width]:
            raise DatasetError(f"{where}: RLE size {seg['size']} differs from the image size [{height}, {width}]")
        try:
            return decode_rle(seg["counts"], (height, width))
        except ValueError as exc:
            raise DatasetError(f"{where}: {exc}") from exc
    raise DatasetError(f"{where}: segmentation must be a list of polygons or an RLE dict with size and counts")


def _paint(shapes: list[tuple[Any, int, float]], size: tuple[int, int]) -> np.ndarray:
    mask = np.zeros(size, np.uint8)
    for shape, index, _ in shapes:
        if isinstance(shape, np.ndarray):  # a decoded RLE
            mask[shape] = index
            continue
        canvas = Image.new("1", (size[1], size[0]), 0)
        draw = ImageDraw.Draw(canvas)
        for points in shape:
            draw.polygon([tuple(p) for p in points.tolist()], fill=1, outline=1)
        mask[np.asarray(canvas, dtype=bool)] = index
    return mask


def decode_rle(counts: list[int] | str | bytes, size: tuple[int, int]) -> np.ndarray:
    """A COCO run-length encoding → bool H×W mask.

    Hand-written because pycocotools (a C extension) is not among our dependencies and the format is
    small: runs alternate background/foreground starting with background, over pixels in column-major
    order; the compressed string stores each run in 5-bit groups offset by 48 (ASCII), and runs
    after the second as differences from the run two places before.
    """
    height, width = size
    runs = _rle_string_to_counts(counts) if isinstance(counts, (str, bytes)) else [int(c) for c in counts]
    if any(r < 0 for r in runs):
        raise ValueError("RLE has a negative run length")
    if sum(runs) != height * width:
        raise ValueError(f"RLE covers {sum(runs)} pixels, the image has {height * width}")
    values = np.zeros(len(runs), dtype=bool)
    values[1::2] = True
    flat = np.repeat(values, runs)
    return flat.reshape((width, height)).T.copy()


def _rle_string_to_counts(counts: str | bytes) -> list[int]:
    data = counts.encode("ascii") if isinstance(counts, str) else counts
    runs: list[int] = []
    pos = 0
    while pos < len(data):
        value, shift, more = 0, 0, True
        while more:
            if pos >= len(data):
                raise ValueError("truncated compressed RLE string")
            chunk = data[pos] - 48
            if not 0 <= chunk < 64:
                raise ValueError(f"invalid character {chr(data[pos])!r} in compressed RLE")
            value |= (chunk & 0x1F) << shift
            more = bool(chunk & 0x20)
            pos += 1
            shift += 5
            if not more and chunk & 0x10:  # sign bit of the last group: negative difference
                value |= -1 << shift
        if len(runs) > 2:
            value += runs[-2]
        runs.append(value)
    return runs


# -- MVTec AD ----------------------------------------------------------------------------------


def read_mvtec(root: str | Path, class_name: str = "anomaly") -> tuple[list[SourceImage], tuple[str, ...]]:
    """One MVTec AD category folder: ``train/good``, ``test/<defect>``, ``ground_truth/<defect>/<stem>_mask.png``.

    Binary masks (any value > 0) become the one anomaly class ``class_name``; every defect type
    maps to it. The layout's own split is kept in :attr:`SourceImage.split`.
    """
    root = Path(root)
    for sub in ("train", "test"):
        if not (root / sub).is_dir():
            raise DatasetError(f"{root / sub}: missing; expected an MVTec AD category folder (train/, test/, "
                               f"ground_truth/)")
    sources: list[SourceImage] = []
    for split in ("train", "test"):
        for defect_dir in sorted(p for p in (root / split).iterdir() if p.is_dir()):
            defect = defect_dir.name
            for stem, path in _images_in(defect_dir).items():
                source_id = f"{split}_{defect}_{stem}"
                if defect == "good":
                    def load(size: tuple[int, int]) -> np.ndarray:
                        return np.zeros(size, np.uint8)
                    mask_path = None
                else:
                    mask_path = root / "ground_truth" / defect / f"{stem}_mask.png"
                    if not mask_path.is_file():
                        raise DatasetError(f"{mask_path}: missing ground truth for {path}")

                    def load(size: tuple[int, int], mask_path: Path = mask_path) -> np.ndarray:
                        return _binary_mask(mask_path, size)
                sources.append(SourceImage(source_id, path, load, split=split, annotation_path=mask_path))
    if not sources:
        raise DatasetError(f"{root}: no images in train/*/ or test/*/")
    return sources, (class_name,)


def _binary_mask(path: Path, size: tuple[int, int]) -> np.ndarray:
    try:
        with Image.open(path) as img:
            mask = np.asarray(img.convert("L"))
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise DatasetError(f"{path}: cannot decode mask ({exc})") from exc
    if mask.shape != size:
        raise DatasetError(f"{path}: mask is {mask.shape[1]}x{mask.shape[0]}, its image {size[1]}x{size[0]}")
    return (mask > 0).astype(np.uint8)
