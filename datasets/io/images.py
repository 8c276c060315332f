"""Decoding images and masks from files, with one pixel limit and clear errors naming the file.

Every reader of user pictures (dataset folders, ``prepare``, ``predict``, ``evaluate``) goes through
here, so a 16-bit PNG, a truncated JPEG or a 20000×20000 image is treated the same everywhere:

- 16-bit images keep their contrast: each channel is reduced to its high byte (65535 → 255), the
  same rule Pillow applies to 16-bit RGB files. Pillow's own conversion of 16-bit grey (``I;16``)
  to RGB clips every value above 255 to white, which is why it is not used.
- Float and 32-bit integer images have no agreed 8-bit meaning: they are refused.
- Images above :func:`pixel_limit` pixels (default 100 megapixels, ``SCRAPBENCH_MAX_PIXELS`` to
  change it) are refused from the header, before any pixel is decoded.
"""

from __future__ import annotations

import io
import os
import threading
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from scrapbench.datasets.types import DatasetError

DEFAULT_MAX_PIXELS = 100_000_000
MAX_PIXELS_ENV = "SCRAPBENCH_MAX_PIXELS"
# Pillow modes that hold 16-bit grey values.
_GREY16_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
_MASK_MODES = ("L", "P", "1", "I", *_GREY16_MODES)
_DECODE_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError)
_PIL_LIMIT_LOCK = threading.Lock()


def pixel_limit() -> int:
    """The largest image (in pixels) scrapbench decodes: ``$SCRAPBENCH_MAX_PIXELS`` or 100 megapixels."""
    text = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_PIXELS
    try:
        value = int(text.replace("_", ""))
    except ValueError:
        value = 0
    if value <= 0:
        raise DatasetError(f"{MAX_PIXELS_ENV}={text!r}: expected a positive whole number of pixels")
    return value


def check_pixel_limit(path: Path, width: int, height: int, limit: int | None = None) -> None:
    """Refuse an image larger than the pixel limit, naming the file, its size and the way out."""
    limit = pixel_limit() if limit is None else limit
    if width * height > limit:
        raise DatasetError(
            f"{path}: image is {width}x{height} ({width * height / 1e6:.0f} megapixels), above the limit of "
            f"{limit / 1e6:g} megapixels; tile it first, or raise the limit with {MAX_PIXELS_ENV}=<pixels>"
        )


def open_image(path: Path, data: bytes | None = None, limit: int | None = None) -> Image.Image:
    """Open (header only) ``path`` or its bytes ``data``; refuse it above the pixel limit.

    The caller closes the image (use it in a ``with`` block).
    """
    limit = pixel_limit() if limit is None else limit
    try:
        with _PIL_LIMIT_LOCK:
            # Pillow refuses images above twice its own limit before we could name their size; ours
            # applies instead, checked right below before any pixel is decoded. Only the header is
            # read while Pillow's check is off, under a lock, and the setting is restored at once.
            saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
            try:
                img = Image.open(io.BytesIO(data) if data is not None else path)
            finally:
                Image.MAX_IMAGE_PIXELS = saved
    except FileNotFoundError as exc:
        raise DatasetError(f"{path}: file does not exist") from exc
    except _DECODE_ERRORS as exc:
        raise DatasetError(f"{path}: not a readable image ({exc}); re-export it as PNG or JPEG") from exc
    try:
        check_pixel_limit(path, *img.size, limit=limit)
    except DatasetError:
        img.close()
        raise
    return img


def image_size(path: Path) -> tuple[int, int]:
    """(height, width) from the header, within the pixel limit."""
    with open_image(path) as img:
        width, height = img.size
    return height, width


def check_image_mode(img: Image.Image, path: Path) -> None:
    """Refuse pixel formats without an agreed 8-bit meaning (float, 32-bit integer)."""
    if _is_grey16(img):
        return
    if img.mode in ("I", "F") or img.mode.startswith("I;"):
        kind = "floating-point" if img.mode == "F" else "32-bit integer"
        raise DatasetError(f"{path}: {kind} image (mode {img.mode!r}) has no agreed 8-bit meaning; "
                           f"save it as an 8-bit or 16-bit PNG")


def _is_grey16(img: Image.Image) -> bool:
    # A 16-bit grey PNG opens as "I" in some Pillow versions; its values are 0..65535 there too.
    return img.mode in _GREY16_MODES or (img.mode == "I" and img.format == "PNG")


def to_rgb8(img: Image.Image, path: Path) -> np.ndarray:
    """Decode every pixel of ``img`` to RGB uint8 (H×W×3); 16-bit grey keeps its high byte."""
    check_image_mode(img, path)
    try:
        if _is_grey16(img):
            grey = (np.asarray(img).astype(np.uint32) >> 8).astype(np.uint8)
            return np.repeat(grey[..., None], 3, axis=2)
        return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()
    except _DECODE_ERRORS as exc:
        raise DatasetError(f"{path}: cannot decode image ({exc}); re-export it as PNG or JPEG") from exc


def decode_fully(img: Image.Image, path: Path) -> None:
    """Decode every pixel (a truncated or corrupt file fails here, not in the middle of a run)."""
    check_image_mode(img, path)
    try:
        img.load()
    except _DECODE_ERRORS as exc:
        raise DatasetError(f"{path}: cannot decode image ({exc}); re-export it as PNG or JPEG") from exc


def read_image(path: Path, data: bytes | None = None) -> np.ndarray:
    """Decode an image file (or its bytes ``data``) to RGB uint8 H×W×3, or raise DatasetError naming it."""
    path = Path(path)
    with open_image(path, data) as img:
        return to_rgb8(img, path)


def decode_mask(path: Path, data: bytes | None = None) -> np.ndarray:
    """Decode a single-channel class-index mask (values as stored, no scaling), or raise DatasetError."""
    path = Path(path)
    with open_image(path, data) as img:
        if img.mode not in _MASK_MODES:
            raise DatasetError(
                f"{path}: mask has mode {img.mode!r}; expected a single-channel PNG of class indices"
            )
        try:
            mask = np.asarray(img)
        except _DECODE_ERRORS as exc:
            raise DatasetError(f"{path}: cannot decode mask ({exc})") from exc
    if mask.dtype == bool:
        mask = mask.astype(np.uint8)
    return mask


def check_mask(path: Path, mask: np.ndarray, image_size: tuple[int, int] | None, num_classes: int) -> np.ndarray:
    """Check a decoded mask's size against its image and its values against the classes; uint8 result."""
    if image_size is not None and mask.shape != tuple(image_size):
        raise mask_size_error(path, mask.shape[:2], tuple(image_size))
    bad = mask_values(mask)
    bad = [v for v in bad if not 0 <= v <= num_classes]
    if bad:
        raise mask_values_error(path, bad, num_classes)
    return mask.astype(np.uint8)


def mask_size_error(path: Path, mask: tuple[int, ...], image: tuple[int, ...]) -> DatasetError:
    """The error for a mask whose (H, W) is not its image's."""
    return DatasetError(f"{path}: mask is {mask[1]}x{mask[0]} but its image is {image[1]}x{image[0]} "
                        f"(width x height); masks must match their image")


def mask_values_error(path: Path, bad: list[int], num_classes: int) -> DatasetError:
    """The error for a class-index mask with values outside 0..``num_classes``."""
    return DatasetError(f"{path}: mask has values {bad[:5]} but dataset.yaml declares {num_classes} classes "
                        f"(allowed 0..{num_classes}); binary 0/255 masks need `scrapbench prepare --format mvtec`")


def mask_values(mask: np.ndarray) -> list[int]:
    """The distinct values of an integer mask, ascending (bincount: much faster than unique on uint8)."""
    if mask.size == 0:
        return []
    flat = mask.ravel()
    if flat.min() < 0:
        return [int(v) for v in np.unique(flat)]
    return [int(v) for v in np.flatnonzero(np.bincount(flat))]


def read_mask(path: Path, image_size: tuple[int, int] | None, num_classes: int) -> np.ndarray:
    """Decode a class-index mask and check its size and values (uint8 H×W)."""
    return check_mask(Path(path), decode_mask(Path(path)), image_size, num_classes)
