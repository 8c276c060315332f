"""The on-disk dataset format that people can write by hand.

    ROOT/dataset.yaml                 # classes: [motor, cable, spray_can]  (index 1..K)
    ROOT/{train,test}/images/<stem>.<png|jpg|jpeg|bmp|tif|tiff>
    ROOT/{train,test}/masks/<stem>.png  # uint8 class indices; missing = all normal

Everything is checked when the dataset is opened (sizes, mask values, duplicates, empty splits)
so that a run never dies half-way on a bad file; pixels are decoded lazily.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import yaml
from PIL import Image, UnidentifiedImageError

from scrapbench.datasets.types import Dataset, DatasetError, Sample, Split

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
SPLITS = ("train", "test")


def read_image(path: Path) -> np.ndarray:
    """Decode an RGB uint8 image or raise DatasetError naming the file."""
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DatasetError(f"{path}: cannot decode image ({exc}); re-export it as PNG or JPEG") from exc


def read_mask(path: Path, image_size: tuple[int, int] | None, num_classes: int) -> np.ndarray:
    """Decode a class-index mask and check its size and values."""
    try:
        with Image.open(path) as img:
            if img.mode not in ("L", "P", "1", "I", "I;16"):
                raise DatasetError(
                    f"{path}: mask has mode {img.mode!r}; expected a single-channel PNG of class indices"
                )
            mask = np.asarray(img)
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise DatasetError(f"{path}: cannot decode mask ({exc})") from exc
    if image_size is not None and mask.shape != image_size:
        raise DatasetError(
            f"{path}: mask is {mask.shape[1]}x{mask.shape[0]} but its image is "
            f"{image_size[1]}x{image_size[0]} (width x height); masks must match their image"
        )
    bad = np.unique(mask[mask > num_classes]) if mask.size else np.array([])
    if bad.size:
        raise DatasetError(
            f"{path}: mask has values {bad.tolist()[:5]} but dataset.yaml declares {num_classes} "
            f"classes (allowed 0..{num_classes}); binary 0/255 masks need `scrapbench prepare --format mvtec`"
        )
    return mask.astype(np.uint8)


def _image_size(path: Path) -> tuple[int, int]:
    try:
        with Image.open(path) as img:
            img.verify()
        with Image.open(path) as img:
            width, height = img.size
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise DatasetError(f"{path}: not a readable image ({exc})") from exc
    return height, width


def read_json_file(path: Path, what: str) -> object:
    """Parse a JSON file, or raise DatasetError naming it (missing file, bad JSON)."""
    if not path.is_file():
        raise DatasetError(f"{path}: {what} does not exist")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: not valid JSON ({exc})") from exc


def read_class_names(root: Path) -> tuple[tuple[str, ...], dict]:
    meta_path = root / "dataset.yaml"
    if not meta_path.is_file():
        raise DatasetError(f"{meta_path}: missing; write e.g. `classes: [motor, cable, spray_can]`")
    try:
        meta = yaml.safe_load(meta_path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise DatasetError(f"{meta_path}: invalid YAML ({exc})") from exc
    if not isinstance(meta, dict):
        raise DatasetError(f"{meta_path}: expected a mapping like `classes: [motor, cable, spray_can]`")
    classes = meta.get("classes")
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
        raise DatasetError(f"{meta_path}: `classes` must be a non-empty list of anomaly class names")
    if len(set(classes)) != len(classes):
        raise DatasetError(f"{meta_path}: duplicate class names in {classes}")
    return tuple(classes), meta


def _read_split(root: Path, split: str, num_classes: int) -> Split:
    image_dir, mask_dir = root / split / "images", root / split / "masks"
    if not image_dir.is_dir():
        raise DatasetError(f"{image_dir}: missing folder (expected ROOT/{split}/images/*.png)")
    images: dict[str, Path] = {}
    for path in sorted(image_dir.iterdir()):
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        if path.stem in images:
            raise DatasetError(f"{path}: duplicate stem {path.stem!r} (also {images[path.stem].name})")
        images[path.stem] = path
    if not images:
        raise DatasetError(f"{image_dir}: empty split, no images with suffix {IMAGE_SUFFIXES}")
    if mask_dir.is_dir():
        # A mask in another format would be skipped silently and its image counted as normal.
        foreign = sorted(
            p.name for p in mask_dir.iterdir() if p.suffix.lower() != ".png" and not p.name.startswith(".")
        )
        if foreign:
            raise DatasetError(f"{mask_dir}: masks must be PNG files of class indices, found {foreign[:5]}")
        orphans = sorted(p.name for p in mask_dir.glob("*.png") if p.stem not in images)
        if orphans:
            raise DatasetError(f"{mask_dir}: masks without an image: {orphans[:5]}")

    ids, has_anomaly, presence = [], [], []
    for stem, path in images.items():
        size = _image_size(path)
        mask_path = mask_dir / f"{stem}.png"
        classes: frozenset[int] = frozenset()
        if mask_path.is_file():
            mask = read_mask(mask_path, size, num_classes)
            classes = frozenset(int(v) for v in np.unique(mask) if v)
        ids.append(stem)
        has_anomaly.append(bool(classes))
        presence.append(classes)

    def load(i: int) -> Sample:
        stem = ids[i]
        image = read_image(images[stem])
        mask_path = mask_dir / f"{stem}.png"
        if mask_path.is_file():
            mask = read_mask(mask_path, image.shape[:2], num_classes)
        else:
            mask = np.zeros(image.shape[:2], np.uint8)
        return Sample(image=image, mask=mask, id=stem)

    return Split(split, ids, load, has_anomaly, presence)


def read_folder_dataset(root: str | Path) -> Dataset:
    """Open ``root`` in the on-disk format, validating every file's header and every mask."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset folder does not exist")
    class_names, meta = read_class_names(root)
    train = _read_split(root, "train", len(class_names))
    test = _read_split(root, "test", len(class_names))
    if not any(test.has_anomaly):
        raise DatasetError(f"{root / 'test'}: no anomalous pixel in the test split; pixel metrics need some")
    name = str(meta.get("name", root.name))
    return Dataset(name, class_names, train, test, root=root, notes=dict(meta.get("notes") or {}))


def write_folder_dataset(
    out: str | Path, class_names: Iterable[str], splits: dict[str, Iterable[Sample]], meta: dict | None = None
) -> Path:
    """Write samples in the on-disk format, atomically: a half-written folder never appears at ``out``."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    seen: set[tuple[str, str]] = set()
    try:
        tmp.chmod(0o755)  # mkdtemp makes it private; the final folder should read like any other
        doc = {"classes": list(class_names), **(meta or {})}
        (tmp / "dataset.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
        for split, samples in splits.items():
            (tmp / split / "images").mkdir(parents=True)
            (tmp / split / "masks").mkdir(parents=True)
            for sample in samples:
                if (split, sample.id) in seen:
                    raise ValueError(f"duplicate sample id {sample.id!r} in split {split!r}")
                seen.add((split, sample.id))
                Image.fromarray(sample.image).save(tmp / split / "images" / f"{sample.id}.png")
                if sample.mask.any():
                    Image.fromarray(sample.mask).save(tmp / split / "masks" / f"{sample.id}.png")
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
