"""Dataset fingerprints: equal exactly when the data (files or decoded samples) and classes are equal."""

from __future__ import annotations

import dataclasses
import shutil

import numpy as np

from scrapbench.datasets.fingerprint import (
    array_fingerprint,
    dataset_fingerprint,
    file_digest,
    manifest_fingerprint,
)
from scrapbench.datasets.folder import read_folder_dataset
from scrapbench.datasets.types import Dataset, Sample, Split


def _copy(dataset, root):
    shutil.copytree(dataset.root, root)
    return read_folder_dataset(root)


def test_folder_fingerprint_follows_the_files_not_the_place(smoke_dataset, tmp_path):
    base = dataset_fingerprint(smoke_dataset)
    assert base.startswith("sha256:") and len(base) == len("sha256:") + 64
    assert dataset_fingerprint(_copy(smoke_dataset, tmp_path / "moved")) == base  # relative paths only

    changed = _copy(smoke_dataset, tmp_path / "mask")
    mask = next((changed.root / "test" / "masks").glob("*.png"))
    mask.write_bytes(mask.read_bytes() + b"\0")  # one byte more: same pixels for PIL, another file
    assert dataset_fingerprint(changed) != base

    moved = _copy(smoke_dataset, tmp_path / "split")
    image = next((moved.root / "test" / "images").glob("*.png"))
    image.rename(moved.root / "train" / "images" / image.name)  # another split, same bytes
    assert dataset_fingerprint(moved) != base

    renamed = dataclasses.replace(smoke_dataset, class_names=("a", "b", "c"))
    assert dataset_fingerprint(renamed) != base


def test_folder_fingerprint_is_the_documented_manifest(smoke_dataset):
    root = smoke_dataset.root
    entries = []
    for path in sorted(root.glob("*/*/*.png")):
        entries.append((path.relative_to(root).as_posix(), *file_digest(path)))
    assert dataset_fingerprint(smoke_dataset) == manifest_fingerprint(entries, smoke_dataset.class_names)


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
    assert dataset_fingerprint(_in_memory()) == dataset_fingerprint(_in_memory())
    assert dataset_fingerprint(_in_memory(pixel=1)) != dataset_fingerprint(_in_memory())
    assert dataset_fingerprint(_in_memory()) == array_fingerprint(_in_memory())


def test_a_fingerprint_set_by_the_reader_is_used_as_is(smoke_dataset):
    given = dataclasses.replace(smoke_dataset, fingerprint="sha256:feed")
    assert dataset_fingerprint(given) == "sha256:feed"
