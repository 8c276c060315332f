"""Readers for raw annotated images: class-index PNG masks, COCO instance JSON, the MVTec AD layout.

Each reader returns :class:`SourceImage` records (one per raw image) and the class names. Everything
that can be checked without decoding pixels (missing files, unknown images and categories, polygons
outside the image or with non-finite points, RLE run lengths, declared sizes against the image
headers) is checked when the annotations are read, so a bad file fails before any output is written.
Masks are decoded one image at a time, when asked for: a COCO file with many RLEs on large frames
never holds more than one frame's masks in memory. Every error is a :class:`DatasetError` naming the
file.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import numpy as np

from scrapbench.datasets.folder import IMAGE_SUFFIXES, check_class_names, files_by_stem, read_json_file
from scrapbench.datasets.io.images import check_pixel_limit, image_size, open_image, read_mask
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
    found = files_by_stem(folder, IMAGE_SUFFIXES, "duplicate image stem")
    if not found:
        raise DatasetError(f"{folder}: no images with suffix {IMAGE_SUFFIXES}")
    return found


def _png_masks_in(folder: Path) -> dict[str, Path]:
    """PNG files by stem, the suffix in any case (``a.PNG``); two masks for one stem are refused."""
    return files_by_stem(folder, (".png",), "two masks for")


# -- class-index PNG masks ---------------------------------------------------------------------


def read_mask_folder(
    images_dir: str | Path, masks_dir: str | Path, class_names: Sequence[str], missing_is_normal: bool = False
) -> list[SourceImage]:
    """Images plus ``masks_dir/<stem>.png`` class-index masks (values 0..K)."""
    images_dir, masks_dir = Path(images_dir), Path(masks_dir)
    if not class_names:
        raise DatasetError(f"{masks_dir}: class-index masks need the class names (index 1..K), e.g. --classes a,b")
    check_class_names(class_names, "--classes")
    if not masks_dir.is_dir():
        raise DatasetError(f"{masks_dir}: mask folder does not exist")
    images = _images_in(images_dir)
    masks = _png_masks_in(masks_dir)
    orphans = sorted(p.name for stem, p in masks.items() if stem not in images)
    if orphans:
        raise DatasetError(f"{masks_dir}: masks without an image in {images_dir} (names must match, letter case "
                           f"included): {orphans[:5]}")
    num_classes = len(class_names)
    sources = []
    for stem, path in images.items():
        mask_path = masks.get(stem)
        if mask_path is not None:
            def load(size: tuple[int, int], mask_path: Path = mask_path) -> np.ndarray:
                return read_mask(mask_path, size, num_classes)
        elif missing_is_normal:
            def load(size: tuple[int, int]) -> np.ndarray:
                return np.zeros(size, np.uint8)
        else:
            raise DatasetError(
                f"{masks_dir / (stem + '.png')}: missing annotation for image {path.name} (write an all-zero mask "
                f"for a normal image, or pass --missing-mask-normal)"
            )
        sources.append(SourceImage(stem, path, load, annotation_path=mask_path))
    return sources


# -- COCO instance segmentation ----------------------------------------------------------------


@dataclass(frozen=True)
class _Instance:
    """One annotation, checked but not decoded: pycocotools' RLE (dict) or polygons (lists of floats)."""

    segmentation: Any
    class_index: int
    area: float  # computed from the geometry (the file's own "area" is not trusted)


def read_coco(
    images_dir: str | Path, annotation_file: str | Path, class_names: Sequence[str] | None = None
) -> tuple[list[SourceImage], tuple[str, ...]]:
    """Images listed in a COCO JSON; polygons and RLE (compressed or not) painted as class indices.

    Masks are rasterised with pycocotools, COCO's reference implementation. Class indices follow
    ``class_names`` when given (every used category must be among them), else the categories sorted
    by id. Overlapping instances: larger ones are painted first, so a small object lying on a large
    one stays visible. ``file_name`` must name a file inside ``images_dir``.
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

    categories = _coco_categories(doc["categories"], annotation_file)
    if class_names:
        class_names = check_class_names(class_names, "--classes")
    else:
        class_names = tuple(categories[k] for k in sorted(categories))
    index_of = {name: i + 1 for i, name in enumerate(class_names)}
    images = _coco_images(doc["images"], images_dir, annotation_file)

    by_image: dict[Any, list[_Instance]] = {key: [] for key in images}
    for ann in doc["annotations"]:
        where = f"{annotation_file}: annotation {ann.get('id')!r}"
        image_id = ann["image_id"]
        if not isinstance(image_id, (int, str)) or isinstance(image_id, bool) or image_id not in images:
            raise DatasetError(f"{where}: image_id {image_id!r} is not among the images the file lists")
        category = ann["category_id"]
        if not isinstance(category, (int, str)) or isinstance(category, bool) or category not in categories:
            raise DatasetError(f"{where}: unknown category_id {category!r}; categories lists {sorted(categories)}")
        name = categories[category]
        if name not in index_of:
            raise DatasetError(f"{where}: unknown category {name!r}; expected one of {list(class_names)}")
        _, height, width = images[image_id]
        segmentation, area = _coco_segmentation(ann["segmentation"], height, width, where)
        by_image[image_id].append(_Instance(segmentation, index_of[name], area))

    sources = []
    for image_id, (path, height, width) in images.items():
        stem = _coco_stem(path, images_dir)
        # Stable sort: equal areas keep the file's order, so the result does not depend on chance.
        instances = sorted(by_image[image_id], key=lambda inst: -inst.area)

        def load(size: tuple[int, int], instances=instances, path=path, h=height, w=width) -> np.ndarray:
            if tuple(size) != (h, w):
                raise DatasetError(f"{path}: image is {size[1]}x{size[0]} but {annotation_file} says {w}x{h}")
            return _paint(instances, (h, w))

        sources.append(SourceImage(stem, path, load, annotation_path=annotation_file))
    if not sources:
        raise DatasetError(f"{annotation_file}: lists no images")
    return sources, tuple(class_names)


def _is_id(value: object) -> bool:
    return isinstance(value, (int, str)) and not isinstance(value, bool)


def _coco_categories(entries: list[dict], annotation_file: Path) -> dict[Any, str]:
    categories: dict[Any, str] = {}
    for entry in entries:
        if not _is_id(entry["id"]):
            raise DatasetError(f"{annotation_file}: category id {entry['id']!r} is not a number or a name")
        if entry["id"] in categories:
            raise DatasetError(f"{annotation_file}: category id {entry['id']!r} is listed twice")
        categories[entry["id"]] = entry["name"]
    # The dataset reader would refuse these names later; refuse them before anything is written.
    check_class_names(list(categories.values()), f"{annotation_file}: category names")
    return categories


def _safe_file_name(file_name: object, where: str) -> PurePosixPath:
    """A relative path without ``..``: COCO's ``file_name`` may not point outside the image folder."""
    if not isinstance(file_name, str) or not file_name.strip():
        raise DatasetError(f"{where}: file_name must be a relative path, got {file_name!r}")
    posix = PurePosixPath(file_name)
    if posix.is_absolute() or PureWindowsPath(file_name).is_absolute() or PureWindowsPath(file_name).drive \
            or ".." in posix.parts or ".." in PureWindowsPath(file_name).parts:
        raise DatasetError(f"{where}: file_name {file_name!r} points outside the image folder; COCO file names "
                           f"are relative to it, without '..'")
    return posix


def _coco_images(entries: list[dict], images_dir: Path, annotation_file: Path) -> dict[Any, tuple[Path, int, int]]:
    images: dict[Any, tuple[Path, int, int]] = {}
    seen: dict[str, Any] = {}
    for info in entries:
        where = f"{annotation_file}: image {info['id']!r}"
        if not _is_id(info["id"]):
            raise DatasetError(f"{annotation_file}: image id {info['id']!r} is not a number or a name")
        if info["id"] in images:
            raise DatasetError(f"{where}: image id listed twice")
        name = _safe_file_name(info["file_name"], where)
        path = images_dir / name
        if not path.is_file():
            raise DatasetError(f"{path}: image listed in {annotation_file} is missing")
        if name.as_posix() in seen:
            raise DatasetError(f"{annotation_file}: image {info['file_name']!r} listed twice")
        seen[name.as_posix()] = info["id"]
        width, height = info["width"], info["height"]
        if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (width, height)):
            raise DatasetError(f"{where}: width and height must be positive whole numbers, got {width!r}x{height!r}")
        check_pixel_limit(path, width, height)
        actual = image_size(path)
        if actual != (height, width):
            raise DatasetError(f"{path}: image is {actual[1]}x{actual[0]} but {annotation_file} says {width}x{height}")
        images[info["id"]] = (path, height, width)
    return images


def _coco_stem(path: Path, images_dir: Path) -> str:
    return path.relative_to(images_dir).with_suffix("").as_posix().replace("/", "__")


def _coco_segmentation(seg: object, height: int, width: int, where: str) -> tuple[Any, float]:
    """Check one segmentation without decoding it: (what pycocotools will decode, its area)."""
    if isinstance(seg, list):
        return _coco_polygons(seg, height, width, where)
    if isinstance(seg, dict) and "counts" in seg and "size" in seg:
        size = seg["size"]
        if not (isinstance(size, list) and len(size) == 2 and list(size) == [height, width]):
            raise DatasetError(f"{where}: RLE size {size!r} differs from the image size [{height}, {width}]")
        counts = seg["counts"]
        try:
            runs = rle_runs(counts)
        except ValueError as exc:
            raise DatasetError(f"{where}: {exc}") from exc
        if sum(runs) != height * width:
            raise DatasetError(f"{where}: RLE covers {sum(runs)} pixels, the image has {height * width}")
        rle = {"size": [height, width], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
        return rle, float(sum(runs[1::2]))
    raise DatasetError(f"{where}: segmentation must be a list of polygons or an RLE dict with size and counts")


def _coco_polygons(seg: list, height: int, width: int, where: str) -> tuple[list[list[float]], float]:
    polygons, area = [], 0.0
    for flat in seg:
        try:
            points = np.asarray(flat, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise DatasetError(f"{where}: a polygon must be a flat list of numbers [x1, y1, x2, y2, ...]") from exc
        if points.ndim != 1 or points.size < 6 or points.size % 2:
            raise DatasetError(f"{where}: a polygon needs at least 3 (x, y) points, got {points.size} numbers")
        if not np.isfinite(points).all():
            raise DatasetError(f"{where}: polygon has non-finite coordinates (NaN or infinity)")
        points = points.reshape(-1, 2)
        tol = _POLYGON_TOLERANCE_PX
        if (points[:, 0].min() < -tol or points[:, 1].min() < -tol or points[:, 0].max() > width + tol
                or points[:, 1].max() > height + tol):
            raise DatasetError(
                f"{where}: polygon outside the image ({width}x{height}): x in "
                f"[{points[:, 0].min():.1f}, {points[:, 0].max():.1f}], y in "
                f"[{points[:, 1].min():.1f}, {points[:, 1].max():.1f}]"
            )
        x, y = points[:, 0], points[:, 1]
        area += 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))  # shoelace
        polygons.append(points.reshape(-1).tolist())
    if not polygons:
        raise DatasetError(f"{where}: empty segmentation")
    return polygons, area


def _paint(instances: Sequence[_Instance], size: tuple[int, int]) -> np.ndarray:
    """Class indices of one image; each instance is decoded, painted and dropped in turn."""
    from pycocotools import mask as coco_mask

    height, width = size
    mask = np.zeros(size, np.uint8)
    for inst in instances:
        if isinstance(inst.segmentation, dict):
            rle = inst.segmentation
            if isinstance(rle["counts"], list):
                rle = coco_mask.frPyObjects(rle, height, width)
        else:
            rle = coco_mask.merge(coco_mask.frPyObjects(inst.segmentation, height, width))
        x, y, w, h = (int(v) for v in coco_mask.toBbox(rle))
        if w == 0 or h == 0:
            continue
        with warnings.catch_warnings():  # pycocotools' array protocol trips a NumPy 2 deprecation warning
            warnings.simplefilter("ignore", DeprecationWarning)
            inside = coco_mask.decode(rle)[y:y + h, x:x + w] > 0
        mask[y:y + h, x:x + w][inside] = inst.class_index  # within the box only: fast on large frames
    return mask


def rle_runs(counts: object) -> list[int]:
    """The run lengths of a COCO RLE ``counts`` (a list of ints or the compressed string), checked.

    Only to check an RLE before pycocotools decodes it: its decoder does not check that the runs
    cover exactly height × width pixels (too few leaves the rest of the mask uninitialised, measured
    with pycocotools 2.0.11) and reads malformed strings past their end. The string format: runs
    alternate background/foreground, 5 bits per character offset by 48, continuation bit 0x20, sign
    bit 0x10 on the last group, and runs after the second stored as differences from two runs before.
    """
    if isinstance(counts, list):
        if not all(isinstance(c, int) and not isinstance(c, bool) for c in counts):
            raise ValueError("RLE counts must be whole numbers")
        runs = list(counts)
    elif isinstance(counts, (str, bytes)):
        runs = _rle_string_to_counts(counts)
    else:
        raise ValueError(f"RLE counts must be a list of run lengths or a compressed string, got {counts!r}"[:200])
    if any(r < 0 for r in runs):
        raise ValueError("RLE has a negative run length")
    return runs


def decode_rle(counts: list[int] | str | bytes, size: tuple[int, int]) -> np.ndarray:
    """A COCO run-length encoding → bool H×W mask (checked, then decoded by pycocotools)."""
    from pycocotools import mask as coco_mask

    height, width = size
    runs = rle_runs(counts)
    if sum(runs) != height * width:
        raise ValueError(f"RLE covers {sum(runs)} pixels, the image has {height * width}")
    if isinstance(counts, list):
        rle = coco_mask.frPyObjects({"size": [height, width], "counts": counts}, height, width)
    else:
        rle = {"size": [height, width], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
    with warnings.catch_warnings():  # see _paint
        warnings.simplefilter("ignore", DeprecationWarning)
        return coco_mask.decode(rle).astype(bool)


def _rle_string_to_counts(counts: str | bytes) -> list[int]:
    try:
        data = counts.encode("ascii") if isinstance(counts, str) else counts
    except UnicodeEncodeError as exc:
        raise ValueError("compressed RLE must be ASCII") from exc
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
    truth_dir = root / "ground_truth"
    truth = {d.name: _png_masks_in(d) for d in sorted(truth_dir.iterdir()) if d.is_dir()} \
        if truth_dir.is_dir() else {}
    used: set[Path] = set()
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
                    mask_path = truth.get(defect, {}).get(f"{stem}_mask")
                    if mask_path is None:
                        raise DatasetError(f"{truth_dir / defect / (stem + '_mask.png')}: missing ground truth "
                                           f"for {path}")
                    used.add(mask_path)

                    def load(size: tuple[int, int], mask_path: Path = mask_path) -> np.ndarray:
                        return _binary_mask(mask_path, size)
                sources.append(SourceImage(source_id, path, load, split=split, annotation_path=mask_path))
    if not sources:
        raise DatasetError(f"{root}: no images in train/*/ or test/*/")
    orphans = sorted(str(p.relative_to(root)) for masks in truth.values() for p in masks.values() if p not in used)
    if orphans:
        raise DatasetError(f"{truth_dir}: masks without a test image (test/<defect>/<stem>.png ↔ "
                           f"ground_truth/<defect>/<stem>_mask.png): {orphans[:5]}")
    return sources, (class_name,)


def _binary_mask(path: Path, size: tuple[int, int]) -> np.ndarray:
    """Any value > 0 is the anomaly (MVTec stores 0/255; grey or colour masks are accepted)."""
    with open_image(path) as img:
        try:
            mask = np.asarray(img) if img.mode.startswith("I") else np.asarray(img.convert("L"))
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise DatasetError(f"{path}: cannot decode mask ({exc})") from exc
    if mask.ndim != 2:
        raise DatasetError(f"{path}: cannot read as a single-channel mask (shape {mask.shape})")
    if mask.shape != size:
        raise DatasetError(f"{path}: mask is {mask.shape[1]}x{mask.shape[0]}, its image {size[1]}x{size[0]}")
    return (mask > 0).astype(np.uint8)
