"""Image records → one checked, lazily loaded :class:`Split`: the one way every reader builds a split.

A reader only lists files: one :class:`ImageRecord` per image (its path, its mask's path, its
label). The dataset folder reader (:mod:`scrapbench.datasets.folder`) and the public-benchmark
readers (:mod:`scrapbench.datasets.public.mvtec`, :mod:`scrapbench.datasets.public.visa`) then
build their splits here, from the facts of one full pass over the files
(:mod:`scrapbench.datasets.io.filecheck`: every image and mask read, hashed and decoded once before
any method runs). Masks are checked against their images and labels here, every error names the
file, and pixels are decoded again only when a method asks for a sample. The dataset's fingerprint
comes from the same facts (:mod:`scrapbench.datasets.fingerprint`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from scrapbench.datasets.io.filecheck import FileFacts, check_files, check_one_size
from scrapbench.datasets.io.images import decode_mask, mask_size_error, mask_values_error, read_image, read_mask
from scrapbench.datasets.types import DatasetError, Sample, SampleFiles, Split


@dataclass(frozen=True)
class ImageRecord:
    """One image of a split.

    ``label``: 0 for a normal image; for an anomalous one the class index (1..K) its mask's
    anomalous pixels get (benchmark masks are binary: any value > 0 is anomalous, MVTec AD stores
    0/255, VisA small non-zero values). ``None``: the mask holds class indices itself (the dataset
    folder format), and the image is anomalous when its mask has a non-zero pixel. ``group``: the
    stratum used by per-seed splits (MVTec AD: the defect type, ``good`` for normal images; VisA:
    ``normal`` / ``anomaly``).
    """

    id: str
    image: Path
    mask: Path | None
    label: int | None
    group: str = ""

    @property
    def is_anomalous(self) -> bool:
        """Whether the label says anomalous (False for a class-index mask: its mask decides)."""
        return bool(self.label)


def read_binary_mask(path: Path, image_size: tuple[int, int] | None) -> np.ndarray:
    """Decode a single-channel mask → bool (value > 0), checking its size against its image's (H, W)."""
    mask = decode_mask(path)
    if image_size is not None and mask.shape != tuple(image_size):
        raise mask_size_error(path, mask.shape, image_size)
    return mask > 0


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
    """Read, hash and fully decode every image and mask once (see :func:`scrapbench.datasets.io.filecheck.check_files`).

    ``root``: the folder whose remembered checks are used (one per category: a check of one category
    then never forgets another's). ``cache_dir``: where checks are remembered (None: nowhere).
    """
    return check_files(_record_files(records), root, cache_dir=cache_dir, show_progress=show_progress,
                       workers=workers)


def _record_classes(record: ImageRecord, facts: Mapping[Path, FileFacts], num_classes: int | None) -> frozenset[int]:
    """The classes present in ``record``'s image, after checking its mask against the image and the label."""
    image = facts[record.image]
    if record.mask is None:
        if record.is_anomalous:
            raise DatasetError(f"{record.image}: anomalous image without a ground-truth mask")
        return frozenset()
    mask = facts[record.mask]
    if (mask.height, mask.width) != (image.height, image.width):
        raise mask_size_error(record.mask, (mask.height, mask.width), (image.height, image.width))
    values = mask.values or ()
    if record.label is None:
        if num_classes is None:
            raise ValueError("records with class-index masks need num_classes")
        bad = [v for v in values if not 0 <= v <= num_classes]
        if bad:
            raise mask_values_error(record.mask, bad, num_classes)
        return frozenset(v for v in values if v)
    anomalous = any(v > 0 for v in values)
    if record.is_anomalous and not anomalous:
        # The image label says anomalous, the mask says normal: metrics would silently count it normal.
        raise DatasetError(f"{record.mask}: mask of the anomalous image {record.image.name} has no anomalous pixel")
    if not record.is_anomalous and anomalous:
        raise DatasetError(f"{record.mask}: mask of the normal image {record.image.name} has anomalous pixels")
    return frozenset({record.label}) if record.is_anomalous else frozenset()


def checked_split(name: str, records: Sequence[ImageRecord], facts: Mapping[Path, FileFacts],
                  description: str = "", one_size: bool = True, num_classes: int | None = None,
                  size_fix: str = "") -> Split:
    """A lazily loading :class:`Split` of checked records (``facts`` from :func:`check_records`).

    Ids must be unique within the split; masks must match their images, and labels their masks; with
    ``one_size`` the images must share one size (``size_fix`` ends that message: what to do).
    ``description`` names the split in messages. Masks load as class-index arrays: for a labelled
    record, its ``label`` where the mask is > 0, else 0; for a class-index mask, its values, which
    must lie in 0..``num_classes``.
    """
    records = list(records)
    description = description or name
    if not records:
        raise DatasetError(f"{description}: empty split")
    seen: dict[str, Path] = {}
    presence: list[frozenset[int]] = []
    for record in records:
        if record.id in seen:
            raise DatasetError(f"{record.image}: sample id {record.id!r} also used by {seen[record.id]}")
        seen[record.id] = record.image
        presence.append(_record_classes(record, facts, num_classes))
    if one_size:
        check_one_size([r.image for r in records], facts, description, size_fix)

    def load(i: int) -> Sample:
        record = records[i]
        image = read_image(record.image)
        if record.mask is None:
            mask = np.zeros(image.shape[:2], np.uint8)
        elif record.label is None:
            mask = read_mask(record.mask, image.shape[:2], num_classes)
        else:
            mask = read_binary_mask(record.mask, image.shape[:2]).astype(np.uint8) * np.uint8(record.label)
        return Sample(image=image, mask=mask, id=record.id)

    files = [tuple((str(path), facts[path].sha256) for path in (r.image, r.mask) if path is not None)
             for r in records]
    return Split(name, [r.id for r in records], load, [bool(c) for c in presence], presence, files)


def validated_split(name: str, records: Sequence[ImageRecord], show_progress: bool = False,
                    description: str = "", workers: int | None = None, one_size: bool = True) -> Split:
    """Check every record (full decode of images and masks, no remembered checks), then a lazy split."""
    records = list(records)
    if not records:
        raise DatasetError(f"{description or name}: empty split")
    root = Path(os.path.commonpath([os.path.abspath(r.image) for r in records]))
    facts = check_records(records, root, show_progress=show_progress, workers=workers)
    return checked_split(name, records, facts, description, one_size)


def concat_splits(name: str, parts: Sequence[tuple[str, Split]]) -> Split:
    """One lazy split from several; each part's ids get the prefix ``"<prefix>_"`` (kept unique)."""
    owners: list[tuple[Split, int]] = []
    ids: list[str] = []
    has_anomaly: list[bool] = []
    presence: list[frozenset[int]] = []
    files: list[SampleFiles] = []
    for prefix, split in parts:
        for i, sample_id in enumerate(split.ids):
            owners.append((split, i))
            ids.append(f"{prefix}_{sample_id}")
        has_anomaly += split.has_anomaly
        presence += split.class_presence
        files += split.files
    if len(set(ids)) != len(ids):
        raise DatasetError(f"{name}: sample ids clash after prefixing with their part's name")

    def load(i: int) -> Sample:
        split, j = owners[i]
        sample = split[j]
        return Sample(image=sample.image, mask=sample.mask, id=ids[i])

    return Split(name, ids, load, has_anomaly, presence, files)
