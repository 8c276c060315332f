"""The on-disk folder format: a round trip, and every validation error names the offending file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from scrapbench.datasets.folder import read_folder_dataset, write_folder_dataset
from scrapbench.datasets.types import DatasetError, Sample

CLASSES = ("motor", "cable", "spray_can")


def _sample(name: str, label: int = 0, size: int = 16) -> Sample:
    rng = np.random.default_rng([ord(c) for c in name])
    mask = np.zeros((size, size), np.uint8)
    if label:
        mask[4:9, 5:11] = label
    return Sample(image=rng.integers(0, 256, (size, size, 3), dtype=np.uint8), mask=mask, id=name)


@pytest.fixture
def root(tmp_path) -> Path:
    splits = {
        "train": [_sample("a"), _sample("b", 1), _sample("c", 3)],
        "test": [_sample("d"), _sample("e", 2)],
    }
    return write_folder_dataset(tmp_path / "data", CLASSES, splits, meta={"name": "toy"})


def _error(root: Path) -> str:
    with pytest.raises(DatasetError) as info:
        read_folder_dataset(root)
    return str(info.value)


def test_round_trip(root):
    data = read_folder_dataset(root)
    assert data.name == "toy" and data.class_names == CLASSES
    assert data.train.has_anomaly == [False, True, True]
    assert data.train.class_presence[2] == frozenset({3})
    sample = data.test[1]
    assert sample.id == "e" and np.array_equal(sample.mask, _sample("e", 2).mask)
    assert np.array_equal(sample.image, _sample("e", 2).image)
    assert not (root / "train" / "masks" / "a.png").exists()  # all-normal masks are not written


def test_writer_is_atomic_and_rejects_duplicate_ids(tmp_path):
    with pytest.raises(ValueError, match="duplicate sample id"):
        write_folder_dataset(tmp_path / "dup", CLASSES, {"train": [_sample("a"), _sample("a")]})
    assert list(tmp_path.iterdir()) == []  # nothing half-written is left behind


def test_corrupt_image(root):
    bad = root / "train" / "images" / "b.png"
    bad.write_bytes(b"not a png at all")
    assert str(bad) in _error(root)


def test_truncated_image(root):
    bad = root / "test" / "images" / "d.png"
    bad.write_bytes(bad.read_bytes()[:60])
    assert str(bad) in _error(root)


def test_mask_size_mismatch(root):
    bad = root / "train" / "masks" / "b.png"
    Image.fromarray(np.ones((8, 16), np.uint8)).save(bad)
    message = _error(root)
    assert str(bad) in message and "16x8" in message


def test_mask_value_above_class_count(root):
    bad = root / "train" / "masks" / "c.png"
    mask = np.zeros((16, 16), np.uint8)
    mask[0, 0] = 255
    Image.fromarray(mask).save(bad)
    message = _error(root)
    assert str(bad) in message and "255" in message


def test_rgb_mask_is_rejected(root):
    bad = root / "train" / "masks" / "b.png"
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(bad)
    assert str(bad) in _error(root)


def test_mask_in_other_format(root):
    bad = root / "train" / "masks" / "a.bmp"
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(bad)
    message = _error(root)
    assert str(bad.parent) in message and "a.bmp" in message


def test_orphan_mask(root):
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(root / "test" / "masks" / "zzz.png")
    assert "zzz.png" in _error(root)


def test_empty_split(root):
    for path in (root / "train" / "images").iterdir():
        path.unlink()
    for path in (root / "train" / "masks").iterdir():
        path.unlink()
    assert str(root / "train" / "images") in _error(root)


def test_missing_split_folder(root):
    for path in sorted((root / "test").rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    (root / "test").rmdir()
    assert str(root / "test" / "images") in _error(root)


def test_duplicate_stems(root):
    dup = root / "train" / "images" / "a.jpg"
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(dup)
    message = _error(root)
    assert "'a'" in message and ("a.jpg" in message and "a.png" in message)


def test_missing_dataset_yaml(root):
    (root / "dataset.yaml").unlink()
    assert str(root / "dataset.yaml") in _error(root)


@pytest.mark.parametrize("text", ["classes: []", "- motor\n- cable", "classes: [motor, motor]", "classes: [1, 2"])
def test_bad_dataset_yaml(root, text):
    (root / "dataset.yaml").write_text(text)
    assert str(root / "dataset.yaml") in _error(root)


def test_no_anomaly_in_test_split(root):
    (root / "test" / "masks" / "e.png").unlink()
    assert str(root / "test") in _error(root)


def test_missing_root(tmp_path):
    assert str(tmp_path / "nope") in _error(tmp_path / "nope")
