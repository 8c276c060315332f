"""Evaluate anomaly maps written by any tool: one file per image in a folder, matched to masks by file stem."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .inputs import MetricsError
from .pixel import PixelMetrics

MAP_SUFFIXES = (".npy", ".npz", ".tif", ".tiff", ".png")
MASK_SUFFIXES = (".png", ".tif", ".tiff", ".npy", ".bmp")


def _index(folder: Path, suffixes: tuple[str, ...], what: str, strip: str = "") -> dict[str, Path]:
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: {what} folder not found")
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.suffix.lower() not in suffixes:
            continue
        stem = path.stem[: -len(strip)] if strip and path.stem.endswith(strip) else path.stem
        if stem in found:
            raise MetricsError(f"{folder}: two {what} files for image {stem!r}: {found[stem].name} and {path.name}")
        found[stem] = path
    if not found:
        raise FileNotFoundError(f"{folder}: no {what} files ({', '.join(suffixes)})")
    return found


def _check_elements(path: Path, count: int) -> None:
    """The pixel limit of :mod:`scrapbench.datasets.io.images`, for arrays (a small .npz can hold a huge one)."""
    from scrapbench.datasets.io.images import MAX_PIXELS_ENV, pixel_limit

    limit = pixel_limit()
    if count > limit:
        raise MetricsError(f"{path}: holds {count} values, above the limit of {limit / 1e6:g} megapixels; "
                           f"raise it with {MAX_PIXELS_ENV}=<pixels>")


def _read_image(path: Path) -> np.ndarray:
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        with tifffile.TiffFile(path) as tif:
            if not tif.series:
                raise MetricsError(f"{path}: TIFF holds no image")
            _check_elements(path, int(np.prod(tif.series[0].shape)))
            return np.asarray(tif.series[0].asarray())
    from scrapbench.datasets.io.images import open_image

    with open_image(path) as image:  # refuses decompression bombs before decoding
        return np.asarray(image)


def _read_npy(path: Path) -> np.ndarray:
    array = np.load(path, allow_pickle=False, mmap_mode="r")  # the header only, until copied below
    _check_elements(path, array.size)
    return np.array(array)


def _read_npz(path: Path) -> np.ndarray:
    with np.load(path, allow_pickle=False) as data:
        keys = list(data.files)
        key = keys[0] if len(keys) == 1 else "anomaly_map" if "anomaly_map" in keys else None
        if key is None:
            raise MetricsError(f"{path}: holds arrays {keys}; expected one array or one named 'anomaly_map'")
        # The declared uncompressed size bounds what decompression yields: check it before inflating.
        _check_elements(path, data.zip.getinfo(f"{key}.npy").file_size // 8)
        return data[key]


def load_map(path: Path) -> np.ndarray:
    """One anomaly map as a 2-D array (singleton axes dropped)."""
    from scrapbench.datasets.types import DatasetError

    try:
        if path.suffix.lower() == ".npy":
            array = _read_npy(path)
        elif path.suffix.lower() == ".npz":
            array = _read_npz(path)
        else:
            array = _read_image(path)
    except (MetricsError, DatasetError):
        raise  # their message already names the file
    except (OSError, ValueError, EOFError, KeyError) as exc:
        raise MetricsError(f"{path}: cannot read anomaly map ({exc})") from exc
    array = np.squeeze(array)
    if array.ndim != 2:
        raise MetricsError(f"{path}: an anomaly map must be one channel [H, W]; got shape {array.shape}")
    return array


def load_mask(path: Path) -> np.ndarray:
    """One mask as 2-D class indices (0 = normal; 0/255 masks are fine). RGB masks must be grey (equal channels)."""
    from scrapbench.datasets.types import DatasetError

    try:
        array = _read_npy(path) if path.suffix.lower() == ".npy" else _read_image(path)
    except (MetricsError, DatasetError):
        raise  # their message already names the file
    except (OSError, ValueError, EOFError, KeyError) as exc:
        raise MetricsError(f"{path}: cannot read mask ({exc})") from exc
    if array.ndim == 3 and array.shape[-1] in (3, 4):
        if not (np.array_equal(array[..., 0], array[..., 1]) and np.array_equal(array[..., 0], array[..., 2])):
            raise MetricsError(f"{path}: colour mask; save masks as one channel of class indices (0 = normal)")
        array = array[..., 0]
    array = np.squeeze(array)
    if array.ndim != 2:
        raise MetricsError(f"{path}: a mask must be one channel [H, W]; got shape {array.shape}")
    return array


def _batches(pairs: list[tuple[str, Path, Path]], batch_size: int) -> Iterator[tuple[list[str], list, list]]:
    """Consecutive images of one shape, at most ``batch_size`` at a time."""
    names: list[str] = []
    maps: list[np.ndarray] = []
    masks: list[np.ndarray] = []
    for name, map_path, mask_path in pairs:
        amap, mask = load_map(map_path), load_mask(mask_path)
        if amap.shape != mask.shape:
            raise MetricsError(f"{map_path}: map is {amap.shape[0]}×{amap.shape[1]} but mask {mask_path.name} is "
                               f"{mask.shape[0]}×{mask.shape[1]}; write maps at the mask resolution")
        if maps and (amap.shape != maps[0].shape or len(maps) == batch_size):
            yield names, maps, masks
            names, maps, masks = [], [], []
        names.append(name)
        maps.append(amap)
        masks.append(mask)
    if maps:
        yield names, maps, masks


def evaluate_folders(maps_dir: str | Path, masks_dir: str | Path, compat: str = "mvtec",
                     class_names: Sequence[str] | None = None, fpr_limit: float = 0.3, mask_suffix: str = "",
                     batch_size: int = 16, state_path: str | Path | None = None) -> dict[str, Any]:
    """Metrics of the maps in ``maps_dir`` (.npy/.npz/.tif/.tiff/.png) against the masks in ``masks_dir``.

    Files are matched by stem (``mask_suffix`` is stripped from mask stems, e.g. ``"_mask"``); every map needs a mask
    and every mask a map. ``state_path`` also saves the statistics for ``paired_bootstrap``.
    """
    maps_dir, masks_dir = Path(maps_dir), Path(masks_dir)
    maps = _index(maps_dir, MAP_SUFFIXES, "anomaly map")
    masks = _index(masks_dir, MASK_SUFFIXES, "mask", strip=mask_suffix)
    missing, unused = sorted(maps.keys() - masks.keys()), sorted(masks.keys() - maps.keys())
    if missing:
        raise MetricsError(f"{masks_dir}: no mask for {len(missing)} map(s), e.g. {missing[:5]} "
                           f"(masks are matched by file stem{'' if mask_suffix else '; see mask_suffix'})")
    if unused:
        raise MetricsError(f"{maps_dir}: no map for {len(unused)} mask(s), e.g. {unused[:5]}; every test image "
                           "needs an anomaly map")
    metrics = PixelMetrics(fpr_limit=fpr_limit, class_names=class_names, compat=compat)
    pairs = [(stem, maps[stem], masks[stem]) for stem in sorted(maps)]
    for names, batch_maps, batch_masks in _batches(pairs, batch_size):
        metrics.update(np.stack(batch_maps), np.stack(batch_masks), ids=names)
    if state_path is not None:
        metrics.save(state_path)
    return metrics.compute()
