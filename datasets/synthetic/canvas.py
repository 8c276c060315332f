"""The drawing surface of the synthetic scrap renderer: regions, distance fields, compositing.

Objects are drawn one by one, back to front. Each works in a small clipped window (``Region``) of the
patch with pixel coordinates relative to its own centre, computes a coverage ``alpha`` from a signed
distance (so edges are anti-aliased) and a colour, and ``Canvas.paint`` composites it and raises
the pile's height map (shadows come from that map at the end). ``Canvas.instance`` records which
anomaly instance is visible at each pixel (0 = steel), so the final mask is the visible part of
every anomaly and occlusion needs no extra bookkeeping. Thin objects work on the list of pixels
they cover (``index``) rather than on their whole window.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from scipy import ndimage

from scrapbench.datasets.synthetic.textures import F32, Light, TextureBank


@dataclass
class Region:
    """A clipped window of the canvas; ``yy``/``xx`` are pixel centres relative to the object centre."""

    y0: int
    y1: int
    x0: int
    x1: int
    cy: float
    cx: float

    @property
    def shape(self) -> tuple[int, int]:
        return self.y1 - self.y0, self.x1 - self.x0

    def coords(self, index: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Centre-relative (y, x) of the pixels at ``index`` (rows, cols inside the window)."""
        return (
            (index[0] + (self.y0 + 0.5 - self.cy)).astype(F32),
            (index[1] + (self.x0 + 0.5 - self.cx)).astype(F32),
        )

    def grid(self) -> tuple[np.ndarray, np.ndarray]:
        ys = np.arange(self.y0, self.y1, dtype=F32) + F32(0.5 - self.cy)
        xs = np.arange(self.x0, self.x1, dtype=F32) + F32(0.5 - self.cx)
        return np.meshgrid(ys, xs, indexing="ij")


class Canvas:
    """Patch being rendered: colour, height of the pile, visible anomaly instances, light, noise bank.

    Shadows are not drawn per object: every object raises the height map where it lies, and
    ``relief`` turns the finished height map into cast shadows, lit/unlit edges and crevice darkening
    in a few whole-patch operations.
    """

    def __init__(self, size: int, rng: np.random.Generator) -> None:
        self.size = size
        self.unit = size / 128.0  # one "reference pixel" at the 128 px cpu preset
        self.light = Light.random(rng)
        self.bank = TextureBank(rng, size)
        self.rgb = np.zeros((size, size, 3), F32)
        self.height = np.zeros((size, size), F32)  # in reference pixels
        self.instance = np.zeros((size, size), np.int16)
        self.instance_class: dict[int, int] = {}

    def region(self, cy: float, cx: float, radius: float) -> Region | None:
        """The window around (cy, cx) covering ``radius``; None if it misses the patch."""
        margin = radius + 2.0 * self.unit
        y0, y1 = max(int(cy - margin), 0), min(int(np.ceil(cy + margin)), self.size)
        x0, x1 = max(int(cx - margin), 0), min(int(np.ceil(cx + margin)), self.size)
        if y1 - y0 < 2 or x1 - x0 < 2:
            return None
        return Region(y0, y1, x0, x1, cy, cx)

    def paint(
        self,
        reg: Region,
        alpha: np.ndarray,
        colour: np.ndarray,
        thickness: float | np.ndarray = 1.0,
        instance: int = 0,
        index: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> None:
        """Composite ``colour`` with coverage ``alpha``; lay it on the pile; record the visible instance.

        ``thickness`` (reference pixels, scalar or per pixel) is how far the object rises above
        what it rests on; it sets the length of the shadow it casts. With ``index`` (rows, cols
        inside the region) the arrays hold only those pixels: thin objects in a large window then
        cost what they cover, not the window.
        """
        if index is None:
            rows, cols = np.nonzero(alpha > 0)
            alpha, colour = alpha[rows, cols], colour[rows, cols]
            if not np.isscalar(thickness):
                thickness = thickness[rows, cols]
        else:
            rows, cols = index
        # Flat indices into the canvas: one integer array indexes faster than a (rows, cols) pair.
        flat = (rows + reg.y0) * self.size + (cols + reg.x0)
        rgb = self.rgb.reshape(-1, 3)
        under = rgb[flat]
        rgb[flat] = under + (colour - under) * alpha[:, None]
        covered = alpha > 0.5
        if not covered.any():
            return
        flat = flat[covered]
        height = self.height.reshape(-1)
        # An object rests on the pile beneath it (mean support height), not on the ground.
        rest = float(height[flat].mean())
        height[flat] = rest + (thickness if np.isscalar(thickness) else thickness[covered])
        self.instance.reshape(-1)[flat] = instance

    def new_instance(self, class_index: int) -> int:
        key = len(self.instance_class) + 1
        self.instance_class[key] = class_index
        return key

    def visible_areas(self) -> dict[int, int]:
        counts = np.bincount(self.instance.ravel(), minlength=len(self.instance_class) + 1)
        return {k: int(counts[k]) for k in self.instance_class}

    def class_mask(self) -> np.ndarray:
        lut = np.zeros(len(self.instance_class) + 1, np.uint8)
        for key, cls in self.instance_class.items():
            lut[key] = cls
        return lut[self.instance]


# --- distance fields (pixels; negative inside) -------------------------------------------------


def coverage(sdf: np.ndarray) -> np.ndarray:
    """Anti-aliased coverage from a signed distance in pixels."""
    return np.clip(0.5 - sdf, 0.0, 1.0).astype(F32)


def rotate(yy: np.ndarray, xx: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates (along, across) in a frame whose first axis points at ``angle``."""
    c, s = np.float32(np.cos(angle)), np.float32(np.sin(angle))
    return xx * c + yy * s, -xx * s + yy * c


def box_sdf(u: np.ndarray, v: np.ndarray, half_len: float, half_width: float) -> np.ndarray:
    qu, qv = np.abs(u) - half_len, np.abs(v) - half_width
    outside = np.sqrt(np.maximum(qu, 0) ** 2 + np.maximum(qv, 0) ** 2)
    return outside + np.minimum(np.maximum(qu, qv), 0)


def polygon_alpha(reg: Region, points: np.ndarray) -> np.ndarray:
    """Coverage of a polygon (points relative to the region's centre) rasterised by PIL."""
    h, w = reg.shape
    img = Image.new("L", (w, h), 0)
    offset = np.array([reg.cx - reg.x0, reg.cy - reg.y0])
    ImageDraw.Draw(img).polygon([tuple(p) for p in (points + offset)], fill=255)
    return np.asarray(img, F32) / 255.0


@dataclass
class CurveFrame:
    """Per-pixel frame of a thick polyline: only the pixels near it, as flat index arrays."""

    index: tuple[np.ndarray, np.ndarray]  # (rows, cols) inside the region
    dist: np.ndarray  # signed distance across the curve
    along: np.ndarray  # arc length from the first point
    dir_x: np.ndarray  # tangent at the nearest segment
    dir_y: np.ndarray
    length: float


def curve_frame(reg: Region, points: np.ndarray, radius: float) -> CurveFrame | None:
    """Distance/arc-length frame of a polyline (points (N, 2) as x, y relative to the region centre).

    Only pixels within ``radius`` + 2 of the curve (found by drawing it thick with PIL) are evaluated,
    so long thin cables in a large window stay cheap.
    """
    h, w = reg.shape
    offset = np.array([reg.cx - reg.x0, reg.cy - reg.y0])
    img = Image.new("L", (w, h), 0)
    a, b = points[:-1].astype(F32), points[1:].astype(F32)
    seg = b - a
    # Rounded joints (slow in PIL) only where the path bends: without them the outside of a sharp
    # bend would be skipped; the 2.5 px margin covers gentle ones.
    headings = np.unwrap(np.arctan2(seg[:, 1], seg[:, 0]))
    joint = "curve" if seg.shape[0] > 1 and np.abs(np.diff(headings)).max() > 0.25 else None
    ImageDraw.Draw(img).line([tuple(p) for p in points + offset], fill=255, width=int(2 * radius + 5), joint=joint)
    # PIL leaves pinholes where the quads of two segments meet; a 3×3 max filter closes them.
    rows, cols = np.nonzero(np.asarray(img.filter(ImageFilter.MaxFilter(3))))
    if rows.size == 0:
        return None
    px = (cols + 0.5 - (reg.cx - reg.x0)).astype(F32)[:, None]
    py = (rows + 0.5 - (reg.cy - reg.y0)).astype(F32)[:, None]
    seg_len = np.maximum(np.hypot(seg[:, 0], seg[:, 1]), 1e-6).astype(F32)
    tx, ty = seg[:, 0] / seg_len, seg[:, 1] / seg_len
    rx, ry = px - a[:, 0], py - a[:, 1]
    t = np.clip(rx * tx + ry * ty, 0.0, seg_len)
    ex, ey = rx - t * tx, ry - t * ty
    d2 = ex * ex + ey * ey
    k = np.argmin(d2, axis=1)
    pick = np.arange(k.size)
    side = np.sign(tx[k] * ey[pick, k] - ty[k] * ex[pick, k])
    side[side == 0] = 1.0
    cum = np.concatenate([[0.0], np.cumsum(seg_len)]).astype(F32)
    return CurveFrame(
        (rows, cols),
        (side * np.sqrt(d2[pick, k])).astype(F32),
        cum[k] + t[pick, k],
        tx[k],
        ty[k],
        float(cum[-1]),
    )


def wander_curve(
    rng: np.random.Generator, start: np.ndarray, length: float, step: float, bend: float, heading: float
) -> np.ndarray:
    """A smooth random curve: heading follows a smoothed random walk (cables, bent rebar, wire)."""
    n = max(int(length / step), 2)
    turns = ndimage.gaussian_filter1d(rng.normal(0.0, 1.0, n), sigma=max(n / 8, 1.0), mode="nearest")
    turns /= turns.std() + 1e-6
    # ``bend`` is roughly the total heading change in radians over the whole curve.
    headings = heading + np.cumsum(turns) * (bend / n)
    steps = np.stack([np.cos(headings), np.sin(headings)], axis=1) * step
    return np.vstack([start, start + np.cumsum(steps, axis=0)]).astype(F32)
