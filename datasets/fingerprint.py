"""A digest of a dataset's content: two datasets with the same fingerprint hold the same data.

A run's identity includes it, so a results folder never reuses numbers computed on other data that
carries the same name (a dataset re-prepared with another split, a synthetic set of another seed).
Every fingerprint is built here, by one digest (:func:`digest`: a JSON header, then one line per
entry), from one of three kinds of entries:

- the dataset folder reader: each file's relative name, size and SHA-256 (:func:`manifest_fingerprint`);
- the public-benchmark readers: each record's id, label and files, split by split (:func:`records_fingerprint`);
- any other dataset (in memory, or from a reader that sets none): its decoded samples (:func:`array_fingerprint`).

The values are part of every recorded run identity, so the byte layout of each kind never changes.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from scrapbench.datasets.types import Dataset

if TYPE_CHECKING:
    from scrapbench.datasets.io.filecheck import FileFacts
    from scrapbench.datasets.split import ImageRecord

PREFIX = "sha256:"


def digest(header: Mapping[str, object], entries: Iterable[str | bytes]) -> str:
    """``sha256:<hex>`` over ``header`` (JSON, sorted keys, then a newline) and each entry's bytes in order."""
    hasher = hashlib.sha256(json.dumps(dict(header), sort_keys=True).encode() + b"\n")
    for entry in entries:
        hasher.update(entry.encode() if isinstance(entry, str) else entry)
    return PREFIX + hasher.hexdigest()


def dataset_fingerprint(dataset: Dataset) -> str:
    """``dataset.fingerprint`` when its reader set one, else :func:`array_fingerprint`."""
    return dataset.fingerprint or array_fingerprint(dataset)


def array_fingerprint(dataset: Dataset) -> str:
    """Digest of the class names and every decoded sample (id, image and mask: dtype, shape, bytes)."""

    def entries() -> Iterable[str | bytes]:
        for split in (dataset.train, dataset.test):
            yield f"split {split.name} {len(split)}\n"
            for sample in split:
                for kind, array in (("image", sample.image), ("mask", sample.mask)):
                    array = np.ascontiguousarray(array)
                    yield f"{sample.id}\t{kind}\t{array.dtype.str}\t{array.shape}\n"
                    yield array.tobytes()

    return digest({"classes": list(dataset.class_names)}, entries())


def manifest_fingerprint(class_names: Sequence[str], files: Mapping[str, FileFacts]) -> str:
    """Digest of the class names and each file's relative name, size and content hash (in name order)."""
    return digest({"classes": list(class_names)},
                  (f"{name}\t{files[name].size}\t{files[name].sha256}\n" for name in sorted(files)))


def records_fingerprint(header: Mapping[str, object], splits: Mapping[str, Sequence[ImageRecord]],
                        facts: Mapping[Path, FileFacts], root: Path) -> str:
    """Digest of ``header`` (benchmark, category, class names...) and, split by split, each record's id,
    label and its files' names (relative to ``root``), sizes and content hashes.

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

    def entries() -> Iterable[str]:
        for name, records in splits.items():
            yield f"split {name} {len(records)}\n"
            for record in records:
                yield f"{record.id}\t{record.label}\t{entry(record.image)}\t{entry(record.mask)}\n"

    return digest(header, entries())
