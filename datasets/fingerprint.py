"""A digest of a dataset's content: two datasets with the same fingerprint hold the same data.

A run's identity includes it, so a results folder never reuses numbers computed on other data that
carries the same name (a dataset re-prepared with another split, a synthetic set of another seed).
Readers that check every file set ``Dataset.fingerprint`` from the bytes they read (the folder
reader: a manifest of relative file names, sizes and SHA-256, see ``datasets/folder.py``); any
other dataset (in memory, or from a reader that sets none) is fingerprinted by its decoded samples.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np

from scrapbench.datasets.types import Dataset

PREFIX = "sha256:"


def dataset_fingerprint(dataset: Dataset) -> str:
    """``dataset.fingerprint`` when its reader set one, else :func:`array_fingerprint`."""
    return dataset.fingerprint or array_fingerprint(dataset)


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
