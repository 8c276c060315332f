"""``scrapbench predict``: tiling and stitching are exact, regions and files are right."""

from __future__ import annotations

import csv
import errno
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from red_channel_method import RedChannel

from scrapbench.run.predict_images import predict_folder, predict_tiled, predicted_regions, training_patch_size

CLASSES = ("motor", "cable")


@pytest.fixture(autouse=True)
def red_channel_registered(monkeypatch):
    """A model folder names a registered method: register the test method for these tests only."""
    from scrapbench.core import registry

    registry.list_methods()  # built-ins first, so that they are not loaded over the test entry
    monkeypatch.setitem(registry._REGISTRY, "red_channel", registry.MethodSpec("red_channel", RedChannel, "test"))


def _image(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


@pytest.mark.parametrize("overlap", [0, 5, 16])
def test_stitching_a_large_image_gives_back_exactly_the_per_pixel_map(overlap):
    method = RedChannel(RedChannel.Config(scale=0.37), CLASSES)
    image = _image(150, 230)
    amap, class_maps = predict_tiled(method, image, patch_size=64, overlap=overlap, batch_size=3)
    assert amap.dtype == np.float32 and amap.shape == (150, 230)
    np.testing.assert_array_equal(amap, image[..., 0].astype(np.float32) * np.float32(0.37))
    np.testing.assert_array_equal(class_maps, np.stack([image[..., 0], image[..., 1]]).astype(np.float32))
    assert set(method.seen_shapes) == {(64, 64)}  # every tile full size: the last ones are moved back
    # rows × columns: 150 px → 3 rows; 230 px → 4 columns (5 with stride 48)
    assert len(method.seen_shapes) == {0: 12, 5: 12, 16: 15}[overlap]


def test_a_small_or_thin_image_is_predicted_whole():
    method = RedChannel(RedChannel.Config(), CLASSES)
    image = _image(40, 150)
    amap, _ = predict_tiled(method, image, patch_size=64)
    np.testing.assert_array_equal(amap, image[..., 0].astype(np.float32))
    assert method.seen_shapes == [(40, 64), (40, 64), (40, 64)]


def _two_objects() -> np.ndarray:
    image = np.zeros((120, 200, 3), np.uint8)
    image[10:30, 20:60, 0] = 200  # red only → class 0 (motor)
    image[70:100, 150:190, 0] = 180
    image[70:100, 150:190, 1] = 250  # green dominates → class 1 (cable)
    image[50, 100, 0] = 255  # a single pixel, dropped by min_area
    return image


def test_regions_have_boxes_areas_scores_and_classes():
    image = _two_objects()
    amap = image[..., 0].astype(np.float32)
    classes = np.stack([image[..., 0], image[..., 1]]).astype(np.float32)
    regions = predicted_regions("a.png", amap, 100.0, classes, CLASSES, min_area=2)
    assert [(r.x, r.y, r.width, r.height, r.area) for r in regions] == [(20, 10, 40, 20, 800), (150, 70, 40, 30, 1200)]
    assert [r.class_name for r in regions] == ["motor", "cable"]
    assert regions[0].max_score == 200.0 and regions[1].mean_score == 180.0 and regions[1].class_score == 250.0
    unclassed = predicted_regions("a.png", amap, 100.0)
    assert len(unclassed) == 3 and unclassed[0].class_name is None


def _run_folder(tmp_path, f1max_threshold=150.0, record=None):
    model_dir = tmp_path / "runs" / "seed0" / "model"
    RedChannel(RedChannel.Config(), CLASSES).save(model_dir)
    if f1max_threshold is not None:
        (model_dir.parent / "metrics.json").write_text(json.dumps({"f1max_threshold": f1max_threshold}))
    if record is not None:
        (model_dir.parent / "run.json").write_text(json.dumps(record))
    return model_dir


def test_predict_folder_writes_overlays_maps_and_regions(tmp_path):
    model_dir = _run_folder(tmp_path, record={"preset": "smoke", "dataset": {"spec": "synthetic"}})
    images = tmp_path / "images"
    images.mkdir()
    big = np.zeros((300, 500, 3), np.uint8)
    big[200:260, 400:480] = (220, 0, 0)  # one object straddling tile borders at patch 64
    Image.fromarray(big).save(images / "big.png")
    Image.fromarray(_two_objects()).save(images / "two.jpg", quality=100)
    Image.fromarray(np.zeros((50, 50, 3), np.uint8)).save(images / "empty.png")
    summary = predict_folder(model_dir, images, tmp_path / "out", min_area=4, show_progress=False)
    out = tmp_path / "out"
    assert summary["threshold"] == 150.0 and summary["patch_size"] == 64  # from metrics.json / the smoke preset
    assert sorted(p.name for p in (out / "overlays").iterdir()) == ["big.png", "empty.png", "two.png"]
    with Image.open(out / "overlays" / "big.png") as overlay:
        assert overlay.size == (500, 300)
    stitched = np.load(out / "maps" / "big.npy")
    assert stitched.dtype == np.float16
    np.testing.assert_array_equal(stitched, big[..., 0].astype(np.float16))
    doc = json.loads((out / "regions.json").read_text())
    by_image = {entry["image"]: entry for entry in doc["images"]}
    [region] = by_image["big.png"]["regions"]
    assert (region["x"], region["y"], region["width"], region["height"], region["area"]) == (400, 200, 80, 60, 4800)
    assert region["class_name"] == "motor"
    assert not by_image["empty.png"]["anomalous"] and by_image["two.jpg"]["anomalous"]
    rows = list(csv.DictReader((out / "regions.csv").open()))
    assert len(rows) == sum(len(e["regions"]) for e in doc["images"]) and rows[0]["image"] == "big.png"


def test_explicit_threshold_and_patch_size_and_clear_errors(tmp_path):
    model_dir = _run_folder(tmp_path, f1max_threshold=None)
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(_two_objects()).save(images / "two.png")
    with pytest.raises(FileNotFoundError, match=r"metrics\.json: no metrics next to the model; pass --threshold"):
        predict_folder(model_dir, images, tmp_path / "out", show_progress=False)
    with pytest.raises(ValueError, match="pass --patch-size"):
        predict_folder(model_dir, images, tmp_path / "out", threshold=100.0, show_progress=False)
    summary = predict_folder(model_dir, images, tmp_path / "out", threshold=100.0, patch_size=48, overlap=8,
                             save_maps=False, show_progress=False)
    assert summary["threshold_source"] == "given" and len(summary["images"][0]["regions"]) == 3
    assert not (tmp_path / "out" / "maps").exists()
    with pytest.raises(FileNotFoundError, match="no such image or folder"):
        predict_folder(model_dir, tmp_path / "nope", tmp_path / "out", threshold=1.0, patch_size=8)


def test_training_patch_size_from_a_prepared_folder(tmp_path):
    dataset = tmp_path / "ds"
    (dataset / "train" / "images").mkdir(parents=True)
    (dataset / "dataset.yaml").write_text("classes: [motor]\nnotes: {patch_size: 96}\n")
    model_dir = _run_folder(tmp_path, record={"preset": "cpu", "dataset": {"spec": str(dataset)}})
    assert training_patch_size(model_dir) == 96


def test_cli_predict(tmp_path):
    from typer.testing import CliRunner

    from scrapbench.cli.main import app

    model_dir = _run_folder(tmp_path)
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(_two_objects()).save(images / "two.png")
    result = CliRunner().invoke(app, ["predict", str(model_dir), str(images), "--out", str(tmp_path / "out"),
                                      "--patch-size", "32", "--min-area", "2", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "1withanomalies" in "".join(result.output.split()) and (tmp_path / "out" / "regions.csv").is_file()
    result = CliRunner().invoke(app, ["predict", str(tmp_path / "nope"), str(images), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "nosavedmethodhere" in "".join(result.output.split())


def test_cli_predict_checks_every_image_first_and_fails_in_one_line(tmp_path):
    from test_folder import png_header_only
    from typer.testing import CliRunner

    from scrapbench.cli.main import app

    model_dir = _run_folder(tmp_path)
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(_two_objects()).save(images / "a.png")
    png_header_only(images / "b.png", 20000, 20000)
    Image.fromarray(_two_objects()).save(images / "c.jpg", quality=95)
    (images / "c.jpg").write_bytes((images / "c.jpg").read_bytes()[:-100])
    result = CliRunner().invoke(app, ["predict", str(model_dir), str(images), "--out", str(tmp_path / "out"),
                                      "--patch-size", "32", "--no-progress"])
    flat = " ".join(result.output.split())
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit), flat
    assert "b.png: image is 20000x20000" in flat and "1 more bad file" in flat
    assert not (tmp_path / "out").exists()  # nothing predicted, nothing written


def test_predict_reads_16_bit_images_with_their_contrast(tmp_path):
    model_dir = _run_folder(tmp_path)
    images = tmp_path / "images"
    images.mkdir()
    ramp = (np.arange(40 * 60, dtype=np.uint32).reshape(40, 60) * 27).astype(np.uint16)
    Image.fromarray(ramp).save(images / "grey16.png")
    predict_folder(model_dir, images, tmp_path / "out", threshold=1e9, patch_size=32, show_progress=False)
    amap = np.load(tmp_path / "out" / "maps" / "grey16.npy").astype(np.float32)
    np.testing.assert_array_equal(amap, (ramp >> 8).astype(np.float32))  # RedChannel: the red value


def _cli(*args):
    from typer.testing import CliRunner

    from scrapbench.cli.main import app

    result = CliRunner().invoke(app, [str(a) for a in args])
    return result, " ".join(result.output.split())


def _no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def _denied(*args, **kwargs):
    raise PermissionError(errno.EACCES, "Permission denied")


@pytest.mark.parametrize("case", ["not a folder", "read-only", "disk full", "name too long"])
def test_predict_and_evaluate_out_that_cannot_be_written_is_one_line(case, tmp_path, monkeypatch):
    """The error names --out, nothing is left half-written, and an earlier result there stays whole."""
    model_dir = _run_folder(tmp_path)
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(_two_objects()).save(images / "two.png")
    masks = tmp_path / "masks"
    masks.mkdir()
    Image.fromarray((_two_objects()[..., 0] > 0).astype(np.uint8)).save(masks / "two.png")
    predict = ["predict", model_dir, images, "--patch-size", "32", "--no-progress", "--out"]
    parent = tmp_path / "results"
    if case == "not a folder":
        parent.write_text("")
    out, metrics = parent / "out", parent / "metrics.json"
    if case == "name too long":
        assert _cli(*predict, parent / ("o" * 250))[0].exit_code == 0  # long, but within the limit
        out, metrics = parent / ("o" * 300), parent / ("m" * 300 + ".json")
    if case in ("read-only", "disk full"):
        assert _cli(*predict, out)[0].exit_code == 0  # an earlier result, which must stay whole
        before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
        if case == "read-only":
            parent.chmod(0o555)
            if os.access(parent, os.W_OK):  # root writes anyway: give the refusal the kernel would give
                monkeypatch.setattr(tempfile, "mkstemp", _denied)
                monkeypatch.setattr(tempfile, "mkdtemp", _denied)
        else:
            monkeypatch.setattr(Path, "write_bytes", _no_space)
    try:
        for args in ([*predict, out], ["evaluate", tmp_path / "maps_in", masks, "--out", metrics]):
            if args[0] == "evaluate":
                (tmp_path / "maps_in").mkdir(exist_ok=True)
                np.save(tmp_path / "maps_in" / "two.npy", _two_objects()[..., 0].astype(np.float32))
            result, text = _cli(*args)
            assert result.exit_code == 2 and isinstance(result.exception, SystemExit), text
            assert "Traceback" not in result.output and text.startswith(("error:", "┏")), text
            assert str(args[-1]) in text or ("o" * 300)[:40] in text, text
    finally:
        if parent.is_dir():
            parent.chmod(0o755)
    if case in ("read-only", "disk full"):
        assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
        assert sorted(p.name for p in parent.iterdir()) == ["out"]  # no staging or temporary file left


def test_predict_does_not_replace_a_dataset_that_prepare_wrote_unless_forced(tmp_path):
    from scrapbench.core.presets import SYNTHETIC_PRESETS
    from scrapbench.datasets.synthetic.generator import write_synthetic

    model_dir = _run_folder(tmp_path)
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(_two_objects()).save(images / "two.png")
    dataset = write_synthetic(tmp_path / "dataset", SYNTHETIC_PRESETS["smoke"], show_progress=False)
    (dataset / ".scrapbench-output").write_text(json.dumps({"written_by": "scrapbench prepare"}))
    predict = ["predict", model_dir, images, "--patch-size", "32", "--no-progress", "--out", dataset]
    result, text = _cli(*predict)
    assert result.exit_code == 2 and "written by `scrapbench prepare`, not by `scrapbench predict`" in text, text
    assert (dataset / "dataset.yaml").is_file()
    result, text = _cli(*predict, "--force")
    assert result.exit_code == 0, text
    assert not (dataset / "dataset.yaml").exists() and (dataset / "regions.json").is_file()
    assert _cli(*predict)[0].exit_code == 0  # its own output now
