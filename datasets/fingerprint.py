"""A digest of a dataset's content: two datasets with the same fingerprint hold the same data.

A run's identity includes it, so a results folder never reuses numbers computed on other data that
carries the same name (a dataset re-prepared with another split, a synthetic set of another seed).

Folder datasets are fingerprinted by their manifest — one line per image and mask file::

    <path relative to the dataset root, with />\\t<size in bytes>\\t<sha256 of the bytes>

sorted by path, after a first line holding the class names. Readers that already read every file
while validating hash the bytes they read (:func:`manifest_fingerprint`) and set
``Dataset.fingerprint``; :func:`dataset_fingerprint` computes it otherwise.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from scrapbench.datasets.types import Dataset

PREFIX = "sha256:"
_CHUNK = 1 << 20


def dataset_fingerprint(dataset: Dataset) -> str:
    """``dataset.fingerprint`` when a reader set it, else a digest computed here.

    A folder in the scrapbench layout (``ROOT/dataset.yaml``) is fingerprinted by its manifest; any
    other dataset (in memory, or a layout this module does not know) by its decoded samples.
    """
    if dataset.fingerprint:
        return dataset.fingerprint
    if dataset.root is not None and (Path(dataset.root) / "dataset.yaml").is_file():
        return folder_fingerprint(Path(dataset.root), dataset.class_names)
    return array_fingerprint(dataset)


def manifest_fingerprint(entries: Iterable[tuple[str, int, str]], class_names: Sequence[str]) -> str:
    """The fingerprint of a manifest: ``(relative path, size, sha256 hex)`` per file, any order."""
    digest = hashlib.sha256(json.dumps({"classes": list(class_names)}).encode() + b"\n")
    for relative, size, content in sorted(entries):
        digest.update(f"{relative}\t{size}\t{content}\n".encode())
    return PREFIX + digest.hexdigest()


def folder_fingerprint(root: Path, class_names: Sequence[str]) -> str:
    """Hash every image and mask of ``ROOT/{train,test}/{images,masks}`` once (in threads: hashlib
    releases the GIL, so reading and hashing overlap on several cores)."""
    from scrapbench.datasets.folder import IMAGE_SUFFIXES, SPLITS

    files: list[Path] = []
    for split in SPLITS:
        for kind, suffixes in (("images", IMAGE_SUFFIXES), ("masks", (".png",))):
            folder = root / split / kind
            if folder.is_dir():
                files += [p for p in folder.iterdir()
                          if p.suffix.lower() in suffixes and not p.name.startswith(".") and p.is_file()]
    workers = max(1, min(8, os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        hashed = list(pool.map(file_digest, files, chunksize=64))
    entries = [(path.relative_to(root).as_posix(), size, content)
               for path, (size, content) in zip(files, hashed, strict=True)]
    return manifest_fingerprint(entries, class_names)


def file_digest(path: Path) -> tuple[int, str]:
    """``(size in bytes, sha256 hex)`` of a file, read once."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def array_fingerprint(dataset: Dataset) -> str:
    """Digest of the class names and every decoded sample (id, image and mask: dtype, shape, bytes)."""
    digest = hashlib.sha256(json.dumps({"classes": list(dataset.class_names)}).encode() + b"\n")
    for split in (dataset.train, dataset.test):
        digest.update(f"split {split.name} {len(split)}\n".encode())
        for sample in split:
            for kind, array in (("image", sample.image), ("mask", sample.mask)):
                array = np.ascontiguousarray(array)
                digest.update(f"{sample.id}\t{kind}\t{array.dtype.str}\t{array.shape}\n".encode())
                digest.update(array.tobytes())
    return PREFIX + digest.hexdigest()
