"""``scrapbench prepare``: raw annotated images → the on-disk dataset format, as in the paper.

Pipeline per raw image: region of interest (crop file, text prompt, or the whole image) → crop →
fixed-size patches (512×512 in the paper; optional overlap), the mask tiled identically → patches
without anomalous pixels are normal. The train/test split is drawn per *source image*, so patches
of one image never land on both sides, and is stratified by whether the image holds an anomaly.

Tiles cover the crop completely: along each axis they start every ``patch_size - overlap`` pixels
and the last one is moved back to end at the border (so it may overlap its neighbour more). A crop
smaller than a patch is padded with black (mask 0) to the patch size. With a polygon or a text-prompted
region, a tile is kept when at least ``min_roi_fraction`` of it lies inside the region; its pixels
outside the region are kept as they are (blacking them out would teach methods a false edge).
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from scrapbench.datasets.folder import check_class_names, write_folder_dataset
from scrapbench.datasets.io.annotations import SourceImage, read_coco, read_mask_folder, read_mvtec
from scrapbench.datasets.io.cache import default_cache_dir
from scrapbench.datasets.io.filecheck import check_files
from scrapbench.datasets.io.images import read_image
from scrapbench.datasets.prepare.roi import Roi, full_image_roi, save_roi_preview
from scrapbench.datasets.types import DatasetError, Sample

RoiProvider = Callable[[np.ndarray, Path, str], Roi]
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class PrepareConfig:
    """How raw images become patches and splits."""

    patch_size: int = 512
    overlap: int = 0
    test_fraction: float = 0.2
    seed: int = 0  # of the split
    keep_split: bool = False  # use the split the source layout defines (MVTec) instead of drawing one
    min_roi_fraction: float = 0.5  # keep a tile only if this much of it lies inside the region

    def __post_init__(self) -> None:
        if self.patch_size < 8:
            raise ValueError(f"patch_size must be ≥ 8, got {self.patch_size}")
        if not 0 <= self.overlap < self.patch_size:
            raise ValueError(f"overlap must be in [0, patch_size), got {self.overlap}")
        if not 0.0 < self.test_fraction < 1.0:
            raise ValueError(f"test_fraction must be in (0, 1), got {self.test_fraction}")


def read_sources(
    annotation_format: str,
    images: str | Path,
    annotations: str | Path | None = None,
    class_names: Sequence[str] | None = None,
    missing_mask_is_normal: bool = False,
) -> tuple[list[SourceImage], tuple[str, ...]]:
    """Read raw images and annotations in one of ``masks`` / ``coco`` / ``mvtec``.

    ``masks``: ``images`` folder + ``annotations`` folder of class-index PNGs (needs class names);
    ``coco``: ``images`` folder + ``annotations`` JSON file; ``mvtec``: ``images`` is a category folder.
    """
    if annotation_format == "masks":
        if annotations is None:
            raise DatasetError("--format masks needs --annotations MASK_FOLDER")
        return read_mask_folder(images, annotations, tuple(class_names or ()), missing_mask_is_normal), \
            tuple(class_names or ())
    if annotation_format == "coco":
        if annotations is None:
            raise DatasetError("--format coco needs --annotations INSTANCES.json")
        return read_coco(images, annotations, class_names)
    if annotation_format == "mvtec":
        names = tuple(class_names or ("anomaly",))
        if len(names) != 1:
            raise DatasetError(f"{images}: MVTec masks are binary, give one class name, not {list(names)}")
        return read_mvtec(images, names[0])
    raise DatasetError(f"unknown annotation format {annotation_format!r}; choose from masks, coco, mvtec")


def tile_starts(length: int, patch: int, overlap: int) -> list[int]:
    """Start offsets covering ``length`` with windows of ``patch`` (last one aligned to the end)."""
    if length <= patch:
        return [0]
    stride = patch - overlap
    starts = list(range(0, length - patch + 1, stride))
    if starts[-1] + patch < length:
        starts.append(length - patch)
    return starts


def tile_boxes(height: int, width: int, patch: int, overlap: int) -> list[tuple[int, int, int, int]]:
    """(x0, y0, x1, y1) boxes, row by row, covering an H×W image (boxes may exceed a small image)."""
    return [(x, y, x + patch, y + patch) for y in tile_starts(height, patch, overlap)
            for x in tile_starts(width, patch, overlap)]


def split_sources(anomalous: dict[str, bool], test_fraction: float, seed: int) -> dict[str, str]:
    """``train``/``test`` per source id: deterministic, stratified by anomalous vs normal images.

    Sources are ordered by a hash of (seed, id), so the split does not depend on file order, and
    each stratum sends ``round(fraction · n)`` sources (at least one when it has two) to test.
    """
    split: dict[str, str] = {}
    for flag in (True, False):
        ids = sorted((i for i, a in anomalous.items() if a == flag),
                     key=lambda i: hashlib.sha256(f"{seed}:{i}".encode()).hexdigest())
        n_test = round(test_fraction * len(ids))
        if len(ids) >= 2:
            n_test = min(max(n_test, 1), len(ids) - 1)
        for position, source_id in enumerate(ids):
            split[source_id] = "test" if position < n_test else "train"
    return split


def source_inputs(sources: Sequence[SourceImage]) -> list[Path]:
    """The folders and files ``sources`` are read from: an output may not overlap any of them."""
    found = {s.image_path.parent for s in sources}
    found |= {s.annotation_path if s.annotation_path.suffix.lower() == ".json" else s.annotation_path.parent
              for s in sources if s.annotation_path is not None}
    return sorted(found)


def check_source_images(
    sources: Sequence[SourceImage], show_progress: bool | None = None
) -> dict[str, tuple[int, int]]:
    """Decode every source image completely (a bad file fails before anything is written); sizes by id."""
    paths = [s.image_path for s in sources]
    root = Path(os.path.commonpath([str(p.parent.absolute()) for p in paths]))
    facts = check_files([(p, "image") for p in paths], root, cache_dir=default_cache_dir(),
                        show_progress=show_progress)
    return {s.id: (facts[s.image_path].height, facts[s.image_path].width) for s in sources}


def _safe_id(source_id: str) -> str:
    return _UNSAFE.sub("_", source_id).strip("_") or "image"


@dataclass(frozen=True)
class _PatchRecord:
    patch_id: str
    source_id: str
    source_path: str
    split: str
    x0: int
    y0: int
    x1: int
    y1: int
    anomalous: int


def prepare_dataset(
    sources: Sequence[SourceImage],
    class_names: Sequence[str],
    out: str | Path,
    roi: RoiProvider | None = None,
    config: PrepareConfig = PrepareConfig(),
    name: str | None = None,
    preview_dir: str | Path | None = None,
    inputs: Sequence[str | Path | None] = (),
    show_progress: bool | None = None,
    force: bool = False,
) -> Path:
    """Write the patches of ``sources`` to ``out`` in the on-disk format (atomically); return ``out``.

    Also writes ``out/sources.csv`` (patch → source image, split and box in source pixels) and, with
    ``preview_dir``, one PNG per source image showing its region and kept tiles. ``out`` follows
    :mod:`scrapbench.storage.outdir`: it may not overlap ``inputs`` nor the folders ``sources`` come from, and
    an existing folder is replaced only if ``prepare`` wrote it (``force``: any scrapbench command). Every
    source image and mask is checked before anything is written.
    """
    from scrapbench.storage.outdir import check_no_overlap, guard_output

    out = Path(out)
    if not sources:
        raise DatasetError("no source images to prepare")
    class_names = check_class_names(list(class_names), "class names")
    inputs = [*inputs, *source_inputs(sources)]
    guard_output(out, inputs, command="prepare", force=force)
    if preview_dir is not None:
        check_no_overlap(preview_dir, [*inputs, out], option="--preview")
    ids = [_safe_id(s.id) for s in sources]
    if len(set(ids)) != len(ids):
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        raise DatasetError(f"source images with clashing names after sanitising: {dupes[:5]}")

    # First pass: decode every image and mask (fails before anything is written); stratify the split.
    sizes = check_source_images(sources, show_progress)
    anomalous = {}
    for source, source_id in zip(sources, ids, strict=True):
        anomalous[source_id] = bool(source.load_mask(sizes[source.id]).any())
    if config.keep_split:
        missing = [s.image_path for s in sources if s.split not in ("train", "test")]
        if missing:
            raise DatasetError(f"{missing[0]}: keep_split needs a train/test split from the source layout")
        split = {i: s.split for s, i in zip(sources, ids, strict=True)}
    else:
        split = split_sources(anomalous, config.test_fraction, config.seed)

    records: list[_PatchRecord] = []

    def patches(which: str) -> Iterator[Sample]:
        count = anomalous_count = 0
        for source, source_id in zip(sources, ids, strict=True):
            if split[source_id] != which:
                continue
            for sample, record in _tile_source(source, source_id, which, roi, config, preview_dir):
                records.append(record)
                count += 1
                anomalous_count += record.anomalous
                yield sample
        if count == 0:
            raise DatasetError(f"the {which} split has no patches (too few source images, or every tile was "
                               f"outside its region of interest)")
        if which == "test" and anomalous_count == 0:
            raise DatasetError("no anomalous patch in the test split; pixel metrics need some "
                               "(add annotated images or change --test-fraction / --split-seed)")

    meta = {
        "name": name or out.name,
        "notes": {
            "prepared_by": "scrapbench prepare",
            **asdict(config),
            "roi": getattr(roi, "description", type(roi).__name__) if roi is not None else "whole image",
            "sources_train": sum(v == "train" for v in split.values()),
            "sources_test": sum(v == "test" for v in split.values()),
        },
    }
    write_folder_dataset(out, class_names, {"train": patches("train"), "test": patches("test")}, meta,
                         inputs=inputs, command="prepare", force=force,
                         finish=lambda folder: _write_manifest(folder / "sources.csv", records))
    return out


def _tile_source(
    source: SourceImage, source_id: str, split: str, roi: RoiProvider | None, config: PrepareConfig,
    preview_dir: str | Path | None,
) -> Iterator[tuple[Sample, _PatchRecord]]:
    image = read_image(source.image_path)
    mask = source.load_mask(image.shape[:2])
    region = roi(image, source.image_path, source_id) if roi is not None else full_image_roi(*image.shape[:2])
    x0, y0, x1, y1 = region.box
    crop, crop_mask = image[y0:y1, x0:x1], mask[y0:y1, x0:x1]
    patch = config.patch_size
    kept = []
    for bx0, by0, bx1, by1 in tile_boxes(crop.shape[0], crop.shape[1], patch, config.overlap):
        if region.inside_fraction(bx0, by0, bx1, by1) < config.min_roi_fraction:
            continue
        tile = np.zeros((patch, patch, 3), np.uint8)
        tile_mask = np.zeros((patch, patch), np.uint8)
        part = crop[by0:by1, bx0:bx1]
        tile[: part.shape[0], : part.shape[1]] = part
        tile_mask[: part.shape[0], : part.shape[1]] = crop_mask[by0:by1, bx0:bx1]
        sx, sy = x0 + bx0, y0 + by0
        patch_id = f"{source_id}_y{sy:05d}_x{sx:05d}"
        kept.append((sx, sy, sx + part.shape[1], sy + part.shape[0]))
        record = _PatchRecord(patch_id, source.id, str(source.image_path), split, sx, sy, sx + part.shape[1],
                              sy + part.shape[0], int(tile_mask.any()))
        yield Sample(image=tile, mask=tile_mask, id=patch_id), record
    if preview_dir is not None:
        save_roi_preview(image, region, Path(preview_dir) / f"{source_id}.png", tiles=kept)


def preview_rois(sources: Sequence[SourceImage], roi: RoiProvider, out_dir: str | Path,
                 config: PrepareConfig = PrepareConfig(), inputs: Sequence[str | Path | None] = ()) -> list[Path]:
    """Only the previews: each image with its region and the tiles that would be kept."""
    from scrapbench.storage.outdir import check_no_overlap

    check_no_overlap(out_dir, [*inputs, *source_inputs(sources)], option="--preview")
    paths = []
    for source in sources:
        image = read_image(source.image_path)
        source_id = _safe_id(source.id)
        region = roi(image, source.image_path, source_id)
        x0, y0, _, _ = region.box
        crop_h, crop_w = region.box[3] - region.box[1], region.box[2] - region.box[0]
        tiles = [(x0 + a, y0 + b, x0 + min(c, crop_w), y0 + min(d, crop_h))
                 for a, b, c, d in tile_boxes(crop_h, crop_w, config.patch_size, config.overlap)
                 if region.inside_fraction(a, b, c, d) >= config.min_roi_fraction]
        paths.append(save_roi_preview(image, region, Path(out_dir) / f"{source_id}.png", tiles=tiles))
    return paths


def _write_manifest(path: Path, records: list[_PatchRecord]) -> None:
    from scrapbench.storage.atomic import atomic_write_text

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(_PatchRecord.__dataclass_fields__))
    writer.writeheader()
    writer.writerows(asdict(r) for r in records)
    atomic_write_text(path, buffer.getvalue())
