"""Image records of a public benchmark → validated, lazily loaded :class:`Split` objects and a fingerprint.

The MVTec AD and VisA readers only list files: one :class:`ImageRecord` per image (its path, its
mask's path, its label). Everything else is here, once, through the same file checks as dataset
folders (:mod:`scrapbench.datasets.io.filecheck`): every image and mask is read once, hashed and
decoded fully before any method runs (16-bit images, the pixel limit and remembered checks work as
for folders), masks are binarised (any value > 0 is anomalous: MVTec AD stores 0/255, VisA small
non-zero values) and take the record's class index, every error names the file, and the dataset's
fingerprint comes from the same pass (no second decode anywhere).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from scrapbench.datasets.io.filecheck import FileFacts, check_files, check_one_size
from scrapbench.datasets.io.images import decode_mask, read_image
from scrapbench.datasets.types import DatasetError, Sample, Split


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


def read_binary_mask(path: Path, image_size: tuple[int, int] | None) -> np.ndarray:
    """Decode a single-channel mask → bool (value > 0), checking its size against its image's (H, W)."""
    mask = decode_mask(path)
    if image_size is not None and mask.shape != tuple(image_size):
        raise DatasetError(_size_mismatch(path, mask.shape, image_size))
    return mask > 0


def _size_mismatch(path: Path, mask: tuple[int, ...], image: tuple[int, ...]) -> str:
    return (f"{path}: mask is {mask[1]}x{mask[0]} but its image is {image[1]}x{image[0]} (width x height); "
            f"masks must match their image")


def _record_files(records: Sequence[ImageRecord]) -> list[tuple[Path, str]]:
    # Image, then its mask, record by record: the first bad file reported is the first in reading order.
    files: list[tuple[Path, str]] = []
    for record in records:
        files.append((record.image, "image"))
        if record.mask is not None:
            files.append((record.mask, "mask"))
    return files


def check_records(records: Sequence[ImageRecord], root: Path, cache_dir: Path | None = None,
                  show_progress: bool | None = None, workers: int | None = None) -> dict[Path, FileFacts]:
    """Read, hash and fully decode every image and mask once (see :func:`filecheck.check_files`).

    ``root``: the folder whose remembered checks are used (one per category: a check of one category
    then never forgets another's). ``cache_dir``: where checks are remembered (None: nowhere).
    """
    return check_files(_record_files(records), root, cache_dir=cache_dir, show_progress=show_progress,
                       workers=workers)


def _check_record(record: ImageRecord, facts: Mapping[Path, FileFacts]) -> None:
    image = facts[record.image]
    if record.mask is None:
        if record.is_anomalous:
            raise DatasetError(f"{record.image}: anomalous image without a ground-truth mask")
        return
    mask = facts[record.mask]
    if (mask.height, mask.width) != (image.height, image.width):
        raise DatasetError(_size_mismatch(record.mask, (mask.height, mask.width), (image.height, image.width)))
    anomalous = any(v > 0 for v in mask.values or ())
    if record.is_anomalous and not anomalous:
        # The image label says anomalous, the mask says normal: metrics would silently count it normal.
        raise DatasetError(f"{record.mask}: mask of the anomalous image {record.image.name} has no anomalous pixel")
    if not record.is_anomalous and anomalous:
        raise DatasetError(f"{record.mask}: mask of the normal image {record.image.name} has anomalous pixels")


def records_split(name: str, records: Sequence[ImageRecord], facts: Mapping[Path, FileFacts],
                  description: str = "", one_size: bool = True) -> Split:
    """A lazily loading :class:`Split` of checked records (``facts`` from :func:`check_records`).

    Ids must be unique within the split; labels must agree with the masks; with ``one_size`` the
    images must share one size. Masks load as class-index arrays: the record's ``label`` where the
    mask is > 0, else 0.
    """
    records = list(records)
    description = description or name
    if not records:
        raise DatasetError(f"{description}: empty split")
    seen: dict[str, Path] = {}
    for record in records:
        if record.id in seen:
            raise DatasetError(f"{record.image}: sample id {record.id!r} also used by {seen[record.id]}")
        seen[record.id] = record.image
        _check_record(record, facts)
    if one_size:
        check_one_size([r.image for r in records], facts, description, "")

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


def records_fingerprint(header: Mapping[str, object], splits: Mapping[str, Sequence[ImageRecord]],
                        facts: Mapping[Path, FileFacts], root: Path) -> str:
    """``sha256:<hex>`` over ``header`` (benchmark, category, class names...) and, split by split, each
    record's id, label and its files' names (relative to ``root``), sizes and content hashes.

    The records are part of it, not only the files: VisA's split file decides which image is in
    which split, so the same files under another split file give another fingerprint.
    """
    prefix = os.path.abspath(root).rstrip(os.sep) + os.sep

    def entry(path: Path | None) -> str:
        if path is None:
            return "-\t-\t-"
        full = os.path.abspath(path)  # the usual case is a plain prefix: no path parsing
        name = full[len(prefix):] if full.startswith(prefix) else os.path.relpath(full, prefix)
        return f"{name.replace(os.sep, '/')}\t{facts[path].size}\t{facts[path].sha256}"

    digest = hashlib.sha256(json.dumps(dict(header), sort_keys=True).encode() + b"\n")
    for name, records in splits.items():
        digest.update(f"split {name} {len(records)}\n".encode())
        for record in records:
            digest.update(f"{record.id}\t{record.label}\t{entry(record.image)}\t{entry(record.mask)}\n".encode())
    return f"sha256:{digest.hexdigest()}"


def validated_split(name: str, records: Sequence[ImageRecord], show_progress: bool = False,
                    description: str = "", workers: int | None = None, one_size: bool = True) -> Split:
    """Check every record (full decode of images and masks, no remembered checks), then a lazy split."""
    records = list(records)
    if not records:
        raise DatasetError(f"{description or name}: empty split")
    root = Path(os.path.commonpath([os.path.abspath(r.image) for r in records]))
    facts = check_records(records, root, show_progress=show_progress, workers=workers)
    return records_split(name, records, facts, description, one_size)


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
