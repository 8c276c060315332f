"""Image records of a public benchmark → a validated, lazily loaded :class:`Split`.

The MVTec AD and VisA readers only list files: one :class:`ImageRecord` per image (its path, its
mask's path, its label). Everything else is here, once: every image and mask is decoded fully
before any method runs, masks are binarised (any value > 0 is anomalous: MVTec AD stores 0/255,
VisA small non-zero values) and take the record's class index, and every error names the file.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm

from scrapbench.datasets.folder import read_image
from scrapbench.datasets.types import DatasetError, Sample, Split

# Single-channel PIL modes: binary / grey / palette index / 16- and 32-bit grey.
_MASK_MODES = ("1", "L", "P", "I", "I;16", "I;16B", "I;16L")


@dataclass(frozen=True)
class ImageRecord:
    """One image of a benchmark split.

    ``label``: 0 for a normal image; for an anomalous one the class index (1..K) its mask's
    anomalous pixels get. ``group``: the stratum used by per-seed splits (MVTec AD: the defect type,
    ``good`` for normal images; VisA: ``normal`` / ``anomaly``).
    """

    id: str
    image: Path
    mask: Path | None
    label: int
    group: str

    @property
    def is_anomalous(self) -> bool:
        return self.label > 0


def _decoded_size(path: Path) -> tuple[int, int]:
    """(height, width) after a full decode: a truncated file fails here, not in the middle of a run."""
    try:
        with Image.open(path) as img:
            img.load()
            width, height = img.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DatasetError(f"{path}: cannot decode image ({exc}); re-export it as PNG or JPEG") from exc
    return height, width


def read_binary_mask(path: Path, image_size: tuple[int, int] | None) -> np.ndarray:
    """Decode a mask → bool (value > 0), checking its size against its image's.

    Grey, palette and 16-bit masks are read as they are; an RGB mask is anomalous where any channel
    is > 0; other modes (RGBA: the alpha channel is not a mask) are refused.
    """
    try:
        with Image.open(path) as img:
            mode = img.mode
            mask = np.asarray(img)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DatasetError(f"{path}: cannot decode mask ({exc})") from exc
    if mode == "RGB":  # a grey mask saved as colour: anomalous where any channel is > 0
        mask = mask.max(axis=2)
    elif mode not in _MASK_MODES:
        raise DatasetError(f"{path}: mask has mode {mode!r}; expected a single-channel (grey) PNG")
    if image_size is not None and mask.shape != image_size:
        raise DatasetError(
            f"{path}: mask is {mask.shape[1]}x{mask.shape[0]} but its image is "
            f"{image_size[1]}x{image_size[0]} (width x height); masks must match their image"
        )
    return mask > 0


def _check_record(record: ImageRecord) -> None:
    size = _decoded_size(record.image)
    if record.mask is None:
        if record.is_anomalous:
            raise DatasetError(f"{record.image}: anomalous image without a ground-truth mask")
        return
    anomalous = read_binary_mask(record.mask, size)
    if record.is_anomalous and not anomalous.any():
        # The image label says anomalous, the mask says normal: metrics would silently count it normal.
        raise DatasetError(f"{record.mask}: mask of the anomalous image {record.image.name} has no anomalous pixel")
    if not record.is_anomalous and anomalous.any():
        raise DatasetError(f"{record.mask}: mask of the normal image {record.image.name} has anomalous pixels")


def _default_workers() -> int:
    return min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def validated_split(name: str, records: Sequence[ImageRecord], show_progress: bool = False,
                    description: str = "", workers: int | None = None) -> Split:
    """Check every record (full decode of images and masks), then a lazily loading :class:`Split`.

    Ids must be unique within the split. Masks load as class-index arrays: the record's ``label``
    where the mask is > 0, else 0. ``workers``: decoding threads (default: usable CPUs, at most 8).
    """
    records = list(records)
    if not records:
        raise DatasetError(f"{description or name}: empty split")
    seen: dict[str, Path] = {}
    for record in records:
        if record.id in seen:
            raise DatasetError(f"{record.image}: sample id {record.id!r} also used by {seen[record.id]}")
        seen[record.id] = record.image
    # Pillow releases the GIL while it decodes, so threads can check several files at once on a
    # many-core machine (no gain on the loaded 2-core build machine: scripts/bench_public_data.py);
    # map() hands back results in record order, so the error raised is always the first bad record's.
    with ThreadPoolExecutor(max_workers=max(1, workers or _default_workers())) as pool:
        for _ in tqdm(pool.map(_check_record, records), total=len(records), desc=f"checking {description or name}",
                      unit="img", disable=not show_progress, leave=False):
            pass

    def load(i: int) -> Sample:
        record = records[i]
        image = read_image(record.image)
        if record.mask is None:
            mask = np.zeros(image.shape[:2], np.uint8)
        else:
            mask = read_binary_mask(record.mask, image.shape[:2]).astype(np.uint8) * np.uint8(record.label)
        return Sample(image=image, mask=mask, id=record.id)

    return Split(name, [r.id for r in records], load, [r.is_anomalous for r in records],
                 [frozenset({r.label}) if r.is_anomalous else frozenset() for r in records])


def concat_splits(name: str, parts: Sequence[tuple[str, Split]]) -> Split:
    """One lazy split from several; each part's ids get the prefix ``"<prefix>_"`` (kept unique)."""
    owners: list[tuple[Split, int]] = []
    ids: list[str] = []
    has_anomaly: list[bool] = []
    presence: list[frozenset[int]] = []
    for prefix, split in parts:
        for i, sample_id in enumerate(split.ids):
            owners.append((split, i))
            ids.append(f"{prefix}_{sample_id}")
        has_anomaly += split.has_anomaly
        presence += split.class_presence
    if len(set(ids)) != len(ids):
        raise DatasetError(f"{name}: sample ids clash after prefixing with their part's name")

    def load(i: int) -> Sample:
        split, j = owners[i]
        sample = split[j]
        return Sample(image=sample.image, mask=sample.mask, id=ids[i])

    return Split(name, ids, load, has_anomaly, presence)
