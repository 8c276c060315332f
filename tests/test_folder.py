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


# -- every file decoded, sizes, 16-bit, letter case, pixel limit, fingerprint ------------------


def test_truncated_jpeg_is_refused_when_the_dataset_is_opened(root):
    bad = root / "train" / "images" / "a.jpg"
    (root / "train" / "images" / "a.png").unlink()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(bad, quality=95)
    bad.write_bytes(bad.read_bytes()[:-100])  # the header survives, the end of the scan does not
    message = _error(root)
    assert str(bad) in message and "truncated" in message


def test_bad_files_are_all_found_and_counted(root):
    for name in ("a", "b"):
        (root / "train" / "images" / f"{name}.png").write_bytes(b"garbage")
    message = _error(root)
    assert str(root / "train" / "images" / "a.png") in message and "1 more bad file" in message


def test_mixed_image_sizes_in_a_split_are_refused(root):
    Image.fromarray(np.zeros((20, 16, 3), np.uint8)).save(root / "train" / "images" / "a.png")
    message = _error(root)
    assert "a.png: image is 16x20" in message and "2 of 3 images of" in message and "are 16x16" in message


def test_16_bit_images_keep_their_contrast(root):
    ramp = (np.arange(16 * 16, dtype=np.uint32).reshape(16, 16) * 256).astype(np.uint16)  # 0 .. 65280
    Image.fromarray(ramp).save(root / "train" / "images" / "a.png")
    import tifffile

    (root / "test" / "images" / "d.png").unlink()
    tifffile.imwrite(root / "test" / "images" / "d.tif", ramp)
    data = read_folder_dataset(root)
    for image in (data.train[0].image, data.test[0].image):
        assert image.dtype == np.uint8 and image.shape == (16, 16, 3)
        np.testing.assert_array_equal(image[..., 0], (ramp >> 8).astype(np.uint8))  # not clipped to white


def test_float_images_are_refused(root):
    import tifffile

    (root / "train" / "images" / "a.png").unlink()
    bad = root / "train" / "images" / "a.tif"
    tifffile.imwrite(bad, np.random.default_rng(0).random((16, 16)).astype(np.float32))
    message = _error(root)
    assert str(bad) in message and "floating-point" in message


def test_upper_case_mask_extension_is_read(root):
    mask = root / "test" / "masks" / "e.png"
    mask.rename(mask.with_suffix(".PNG"))
    data = read_folder_dataset(root)
    assert data.test.has_anomaly == [False, True] and data.test[1].mask.any()


def test_mask_matching_no_image_is_refused_whatever_its_case(root):
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(root / "test" / "masks" / "E.PNG")  # the image is e.png
    assert "E.PNG" in _error(root)


def png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG whose header claims width x height (no pixel data): enough to trip a size check."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b""))


def test_huge_image_gives_one_clear_error_and_the_limit_can_be_raised(root, monkeypatch):
    bad = root / "train" / "images" / "a.png"
    png_header_only(bad, 20000, 20000)
    message = _error(root)
    assert str(bad) in message and "20000x20000" in message and "SCRAPBENCH_MAX_PIXELS" in message
    monkeypatch.setenv("SCRAPBENCH_MAX_PIXELS", str(20000 * 20000))
    message = _error(root)  # allowed now, so it is decoded, and it has no pixels
    assert str(bad) in message and "megapixels" not in message


def test_pixel_limit_applies_to_every_image(root, monkeypatch):
    monkeypatch.setenv("SCRAPBENCH_MAX_PIXELS", "100")
    assert "16x16" in _error(root)
    for bad in ("many", "abc", "-5", "1e8"):
        monkeypatch.setenv("SCRAPBENCH_MAX_PIXELS", bad)
        message = _error(root)  # the setting is wrong, not the files
        assert message == f"SCRAPBENCH_MAX_PIXELS={bad!r}: expected a positive whole number of pixels", message


def test_fingerprint_covers_files_and_classes(root):
    first = read_folder_dataset(root, use_cache=False).fingerprint
    assert first.startswith("sha256:") and len(first) == 7 + 64
    assert read_folder_dataset(root).fingerprint == first  # the cache gives the same answer
    assert read_folder_dataset(root).fingerprint == first
    mask_path = root / "train" / "masks" / "b.png"
    mask = np.array(Image.open(mask_path))
    mask[0, 0] = 1
    Image.fromarray(mask).save(mask_path)
    changed = read_folder_dataset(root).fingerprint
    assert changed != first
    (root / "dataset.yaml").write_text("name: toy\nclasses: [motor, cable, spray]\n")
    assert read_folder_dataset(root).fingerprint not in (first, changed)


def test_second_open_skips_decoding_unchanged_files(root, monkeypatch, tmp_path):
    from scrapbench.datasets.io import filecheck

    cache = tmp_path / "cache"
    read_folder_dataset(root, cache_dir=cache)
    checked: list[Path] = []
    real = filecheck.check_file
    monkeypatch.setattr(filecheck, "check_file", lambda path, kind: checked.append(path) or real(path, kind))
    read_folder_dataset(root, cache_dir=cache)
    assert checked == []
    changed = root / "test" / "images" / "d.png"
    changed.write_bytes(changed.read_bytes()[:60])  # same name, truncated
    assert str(changed) in _error_with(root, cache)
    assert checked == [changed]


def _error_with(root: Path, cache: Path) -> str:
    with pytest.raises(DatasetError) as info:
        read_folder_dataset(root, cache_dir=cache)
    return str(info.value)


def test_write_refuses_class_names_the_reader_would_refuse(tmp_path):
    for names in (["motor", "motor"], [5], [""]):
        with pytest.raises(DatasetError, match=r"class names|non-empty"):
            write_folder_dataset(tmp_path / "ds", names, {"train": [_sample("a")]})
    assert list(tmp_path.iterdir()) == []


def test_commands_report_a_huge_image_in_one_line(root, tmp_path):
    """run and evaluate (predict: tests/test_predict.py): one line naming the file, exit code 2, no traceback."""
    from typer.testing import CliRunner

    from scrapbench.cli.main import app

    bad = root / "test" / "images" / "d.png"
    png_header_only(bad, 20000, 20000)
    maps = tmp_path / "maps"
    maps.mkdir()
    np.save(maps / "e.npy", np.zeros((16, 16), np.float32))
    masks = tmp_path / "masks"
    masks.mkdir()
    png_header_only(masks / "e.png", 20000, 20000)
    commands = {
        "run": ["run", "--dataset", str(root), "--methods", "winclip", "--preset", "smoke", "--out",
                str(tmp_path / "runs")],
        "evaluate": ["evaluate", str(maps), str(masks)],
    }
    for name, args in commands.items():
        result = CliRunner().invoke(app, args)
        text = " ".join(result.output.split())
        assert result.exit_code == 2 and isinstance(result.exception, SystemExit), (name, text)  # not a crash
        assert "20000x20000" in text and str(tmp_path) in text, (name, text)
