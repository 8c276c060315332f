"""Dataset fingerprints: the reader's when it set one, else a digest of the decoded samples and classes.

The folder reader's manifest fingerprint is tested with the reader (tests/test_folder.py).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from scrapbench.datasets.fingerprint import array_fingerprint, dataset_fingerprint
from scrapbench.datasets.types import Dataset, Sample, Split


def _in_memory(pixel=0):
    rng = np.random.default_rng(0)
    samples = []
    for i in range(3):
        image = rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)
        mask = np.zeros((8, 8), np.uint8)
        mask[2:4, 2:4] = i % 2
        samples.append(Sample(image, mask, f"s{i}"))
    samples[0].image[0, 0, 0] = pixel
    return Dataset("mem", ("x",), Split.from_samples("train", samples[:1]), Split.from_samples("test", samples[1:]))


def test_in_memory_datasets_are_fingerprinted_by_their_arrays():
    base = dataset_fingerprint(_in_memory())
    assert base.startswith("sha256:") and len(base) == len("sha256:") + 64
    assert dataset_fingerprint(_in_memory()) == base == array_fingerprint(_in_memory())
    assert dataset_fingerprint(_in_memory(pixel=1)) != base
    assert dataset_fingerprint(dataclasses.replace(_in_memory(), class_names=("y",))) != base
    moved = _in_memory()
    moved = dataclasses.replace(moved, train=moved.test, test=moved.train)  # same samples, other split
    assert dataset_fingerprint(moved) != base


def test_a_fingerprint_set_by_the_reader_is_used_as_is(smoke_dataset):
    assert smoke_dataset.fingerprint.startswith("sha256:")  # the folder reader sets it
    assert dataset_fingerprint(smoke_dataset) == smoke_dataset.fingerprint
    given = dataclasses.replace(_in_memory(), fingerprint="sha256:feed")
    assert dataset_fingerprint(given) == "sha256:feed"
