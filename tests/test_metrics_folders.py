"""``evaluate_folders``: maps written by any tool, matched to masks by file stem."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from metrics_reference import make_set
from PIL import Image

from scrapbench.metrics import MetricsError, PixelMetrics, evaluate_folders


def _write(tmp_path, maps, masks, mask_suffix=""):
    map_dir, mask_dir = tmp_path / "maps", tmp_path / "masks"
    map_dir.mkdir()
    mask_dir.mkdir()
    for i, (amap, mask) in enumerate(zip(maps, masks, strict=True)):
        name = f"scrap_{i:03d}"
        kind = i % 4
        if kind == 0:
            np.save(map_dir / f"{name}.npy", amap)
        elif kind == 1:
            np.savez(map_dir / f"{name}.npz", anomaly_map=amap[None])  # a leading singleton axis is fine
        elif kind == 2:
            tifffile.imwrite(map_dir / f"{name}.tiff", amap)
        else:
            Image.fromarray((amap * 1000).astype(np.uint16)).save(map_dir / f"{name}.png")
        Image.fromarray(np.where(mask > 0, 255, 0).astype(np.uint8)).save(mask_dir / f"{name}{mask_suffix}.png")
    return map_dir, mask_dir


def _loaded_maps(maps):
    # What the files hold: the PNG maps are 16-bit integers.
    return [(amap * 1000).astype(np.uint16).astype(np.float32) if i % 4 == 3 else amap
            for i, amap in enumerate(maps)]


def test_mixed_formats_and_0_255_masks(tmp_path):
    maps, masks = make_set(40, n=8, size=20)
    maps = maps - maps.min()  # PNG maps need non-negative values
    map_dir, mask_dir = _write(tmp_path, maps, masks, mask_suffix="_mask")
    result = evaluate_folders(map_dir, mask_dir, mask_suffix="_mask", state_path=tmp_path / "state.npz")
    direct = PixelMetrics()
    direct.update(np.stack(_loaded_maps(maps)), (masks > 0).astype(np.uint8) * 255,
                  ids=[f"scrap_{i:03d}" for i in range(8)])
    expected = direct.compute()
    for key in ("auroc", "aupro", "ap", "f1max", "image_auroc", "per_size"):
        assert result[key] == expected[key], key
    assert PixelMetrics.load(tmp_path / "state.npz").ids == [f"scrap_{i:03d}" for i in range(8)]


def test_missing_extra_and_mismatched_files_are_named(tmp_path):
    maps, masks = make_set(41, n=4, size=12)
    map_dir, mask_dir = _write(tmp_path, maps, masks)
    (mask_dir / "scrap_001.png").unlink()
    with pytest.raises(MetricsError, match=r"no mask for 1 map.*scrap_001"):
        evaluate_folders(map_dir, mask_dir)
    Image.fromarray(np.zeros((12, 12), np.uint8)).save(mask_dir / "scrap_001.png")
    Image.fromarray(np.zeros((12, 12), np.uint8)).save(mask_dir / "extra.png")
    with pytest.raises(MetricsError, match=r"no map for 1 mask.*extra"):
        evaluate_folders(map_dir, mask_dir)
    (mask_dir / "extra.png").unlink()
    Image.fromarray(np.zeros((10, 12), np.uint8)).save(mask_dir / "scrap_002.png")
    with pytest.raises(MetricsError, match=r"scrap_002\.tiff: map is 12×12 but mask scrap_002\.png is 10×12"):
        evaluate_folders(map_dir, mask_dir)
    with pytest.raises(FileNotFoundError, match="anomaly map folder not found"):
        evaluate_folders(tmp_path / "nowhere", mask_dir)


def test_nan_in_a_map_file_names_the_image(tmp_path):
    maps, masks = make_set(42, n=4, size=12)
    maps[0, 3, 3] = np.nan
    map_dir, mask_dir = _write(tmp_path, maps, masks)
    with pytest.raises(MetricsError, match="NaN in anomaly map of image 'scrap_000'"):
        evaluate_folders(map_dir, mask_dir)


def test_cli_evaluate(tmp_path):
    from typer.testing import CliRunner

    from scrapbench.cli.main import app

    maps, masks = make_set(43, n=6, size=16)
    map_dir, mask_dir = _write(tmp_path, maps - maps.min(), masks)
    out = tmp_path / "metrics.json"
    result = CliRunner().invoke(app, ["evaluate", str(map_dir), str(mask_dir), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "aupro" in result.output and out.is_file()
