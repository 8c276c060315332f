"""Textures, materials and light for the synthetic scrap renderer (private helpers).

Everything works on float32 RGB in 0..1. Noise is value noise (random grids upsampled bicubically
and summed over octaves); one bank of fields is made per image and objects take crops of it at random
offsets, so a scene with thirty objects costs three noise syntheses, not thirty.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage

F32 = np.float32


def value_noise(rng: np.random.Generator, shape: tuple[int, int], cells: tuple[float, ...]) -> np.ndarray:
    """Multi-octave value noise, standardised to mean 0 / std 1.

    ``cells`` are the grid spacings in pixels (one per octave); octave weights grow with the cell
    (a pink-ish spectrum) so large blotches dominate and fine grain rides on top. A cell of one pixel
    is white noise. Octaves are summed on the finest octave's grid and upsampled once: one large
    resize per field instead of one per octave.
    """
    h, w = shape
    smooth = sorted(c for c in cells if c > 1.0)
    total = np.zeros(shape, F32)
    if smooth:
        finest = smooth[0]
        gh, gw = int(np.ceil(h / finest)) + 3, int(np.ceil(w / finest)) + 3
        grid = np.zeros((gh, gw), F32)
        for cell in smooth:
            ratio = cell / finest
            ch, cw = int(np.ceil(gh / ratio)) + 2, int(np.ceil(gw / ratio)) + 2
            coarse = rng.random((ch, cw), dtype=F32)
            if ratio > 1.0:
                coarse = _resize(coarse, int(cw * ratio), int(ch * ratio), Image.BILINEAR)
            grid += coarse[:gh, :gw] * F32(cell**0.5)
        # Bilinear's diamond artefacts show only on large cells; those get bicubic.
        big = _resize(grid, int(gw * finest), int(gh * finest), Image.BICUBIC if finest > 10 else Image.BILINEAR)
        oy, ox = (int(v) for v in rng.integers(0, int(finest) + 1, 2))
        total += big[oy : oy + h, ox : ox + w]
    if min(cells) <= 1.0:
        total /= total.std() + F32(1e-6)
        total += rng.standard_normal(shape, dtype=F32) * F32(0.5 if smooth else 1.0)
    total -= total.mean()
    total /= total.std() + F32(1e-6)
    return total


def _resize(grid: np.ndarray, width: int, height: int, method: int) -> np.ndarray:
    # PIL's resize of a float image is the fastest smooth upsampler at hand.
    return np.asarray(Image.fromarray(grid, mode="F").resize((width, height), method))


class TextureBank:
    """Per-image noise fields (1.5× the patch size) that objects crop at random offsets."""

    def __init__(self, rng: np.random.Generator, size: int) -> None:
        self.size = size + size // 2
        self.rng = rng
        shape = (self.size, self.size)
        unit = size / 128.0
        self.fields = {
            # Grain is a property of the surface seen at camera resolution: it grows slower than the patch.
            "grain": value_noise(rng, shape, (1.0, 2.0 * unit**0.5)),
            "blotch": value_noise(rng, shape, (3.0 * unit, 7.0 * unit, 14.0 * unit)),
            "coarse": value_noise(rng, shape, (20.0 * unit, 45.0 * unit)),
        }

    def crop(self, name: str, h: int, w: int) -> np.ndarray:
        """A random h×w window of one field (a view; do not modify)."""
        field = self.fields[name]
        oy = int(self.rng.integers(0, self.size - h + 1))
        ox = int(self.rng.integers(0, self.size - w + 1))
        return field[oy : oy + h, ox : ox + w]


@dataclass(frozen=True)
class Material:
    """A base colour, a rust colour and how much rust (bias for the rust threshold)."""

    base: tuple[float, float, float]
    rust: tuple[float, float, float]
    rust_bias: float
    grain: float = 0.12


# Finishes of scrap steel: (base colour, rust colour, rust bias). Mostly brown-grey, as in yard photos.
_STEELS = {
    "rusty": ((0.40, 0.31, 0.25), (0.40, 0.24, 0.14), 0.5),
    "grey": ((0.48, 0.48, 0.49), (0.40, 0.27, 0.18), -0.7),
    "dark": ((0.21, 0.21, 0.22), (0.32, 0.20, 0.12), -0.3),
    "galvanised": ((0.62, 0.63, 0.65), (0.47, 0.38, 0.28), -1.4),
    "orange_rust": ((0.47, 0.31, 0.20), (0.52, 0.29, 0.14), 0.3),
    "mill_scale": ((0.26, 0.27, 0.28), (0.37, 0.23, 0.14), -0.1),
}
_STEEL_CUMULATIVE = np.cumsum([0.3, 0.2, 0.18, 0.07, 0.1, 0.15])  # sums to 1


def steel_material(rng: np.random.Generator) -> Material:
    """A random steel finish, jittered so no two pieces share an exact colour."""
    # searchsorted on a cumulative table: rng.choice(p=...) costs more than the rest of this function.
    kind = min(int(np.searchsorted(_STEEL_CUMULATIVE, rng.random())), len(_STEELS) - 1)
    base, rust, bias = list(_STEELS.values())[kind]
    # Mostly brightness jitter: independent per-channel jitter turns grey steel purple or green.
    jitter = rng.normal(0.0, 0.012, 3) + rng.normal(0.0, 0.05)
    rust_scale = rng.uniform(0.8, 1.15)
    return Material(
        tuple(min(max(b + j, 0.05), 0.95) for b, j in zip(base, jitter.tolist(), strict=True)),
        tuple(min(c * rust_scale, 0.95) for c in rust),
        bias + float(rng.normal(0.0, 0.5)),
        float(rng.uniform(0.08, 0.2)),
    )


def paint_material(rng: np.random.Generator, colour: tuple[float, float, float], wear: float) -> Material:
    """Painted metal: ``wear`` (0..1) controls how much rust shows through."""
    jitter = rng.normal(0.0, 0.03, 3)
    return Material(
        tuple(np.clip(np.array(colour) + jitter, 0.02, 0.97)),
        (0.42, 0.24, 0.13),
        -2.0 + 3.0 * wear,
        0.06,
    )


# Saturated industrial paint colours: used by anomalies AND by hard-negative steel, on purpose.
PAINTS = (
    (0.62, 0.12, 0.10),  # red
    (0.12, 0.25, 0.55),  # blue
    (0.80, 0.62, 0.10),  # yellow
    (0.18, 0.42, 0.25),  # green
    (0.85, 0.40, 0.08),  # orange
    (0.15, 0.35, 0.40),  # teal
    (0.80, 0.80, 0.76),  # white
    (0.10, 0.10, 0.11),  # black
)


def pick(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


def textured(
    mat: Material, bank: TextureBank, h: int, w: int, index: tuple[np.ndarray, np.ndarray] | None = None
) -> np.ndarray:
    """Colour of a material over an h×w window (h×w×3), or at its ``index`` pixels only (n×3).

    Rust blotches over the base colour, fine grain and broad tone changes.
    """
    blotch, grain, coarse = (bank.crop(name, h, w) for name in ("blotch", "grain", "coarse"))
    if index is not None:
        blotch, grain, coarse = blotch[index], grain[index], coarse[index]
    # A clipped ramp instead of a logistic: same look, no exp over every pixel.
    rust = blotch * F32(0.55) + F32(0.5 + 0.55 * mat.rust_bias)
    np.clip(rust, 0.0, 1.0, out=rust)
    base = np.asarray(mat.base, F32)
    colour = rust[..., None] * (np.asarray(mat.rust, F32) - base)
    colour += base
    tone = grain * F32(mat.grain) + coarse * F32(0.08)
    tone += F32(1.0)
    colour *= tone[..., None]
    return colour


@dataclass(frozen=True)
class Light:
    """Directional light: azimuth direction in the image plane and its elevation."""

    dx: float
    dy: float
    dz: float

    @classmethod
    def random(cls, rng: np.random.Generator) -> Light:
        azimuth = rng.uniform(0, 2 * np.pi)
        elevation = rng.uniform(0.6, 1.1)
        return cls(
            float(np.cos(azimuth) * np.cos(elevation)),
            float(np.sin(azimuth) * np.cos(elevation)),
            float(np.sin(elevation)),
        )


def cylinder_shading(
    across: np.ndarray, perp_x: np.ndarray | float, perp_y: np.ndarray | float, light: Light, gloss: float
) -> tuple[np.ndarray, np.ndarray]:
    """Diffuse factor and specular term for a cylinder seen from above.

    ``across`` is the signed position across the cylinder in -1..1 and (perp_x, perp_y) the image
    direction in which ``across`` grows; the surface normal is (across·perp, sqrt(1-across²)).
    """
    across = np.clip(across, -0.999, 0.999)
    nz = np.sqrt(1.0 - across * across)
    along_light = perp_x * light.dx + perp_y * light.dy
    ndotl = across * along_light + nz * light.dz
    diffuse = 0.35 + 0.75 * np.clip(ndotl, 0.0, 1.0)
    # Blinn-Phong with the camera straight above: half vector = normalise(L + (0,0,1)).
    hz = light.dz + 1.0
    norm = np.sqrt(light.dx**2 + light.dy**2 + hz**2)
    ndoth = np.clip((across * along_light + nz * hz) / norm, 0.0, 1.0)
    return diffuse.astype(F32), (ndoth**gloss).astype(F32)


def relief(height: np.ndarray, light: Light, unit: float) -> np.ndarray:
    """Shading factor (H×W) of a pile from its height map (reference pixels).

    Cast shadows: a pixel is shadowed when the pile rises above the light ray towards the light
    (marched pixel by pixel). Edges: the gradient of the smoothed height lights slopes that face the
    light and darkens the others (a bevel). Crevices: pixels below their neighbourhood get less
    ambient light. All whole-patch array operations, cheaper than per-object shadows.
    """
    size = height.shape[0]
    planar = max(np.hypot(light.dx, light.dy), 1e-3)
    lx, ly = light.dx / planar, light.dy / planar
    rise = light.dz / planar / unit  # reference pixels of height per pixel of travel
    steps = int(min(np.ceil(float(height.max() - height.min()) / rise), 14 * unit)) if rise > 0 else 0
    pad = steps + 1
    padded = np.pad(height, pad, mode="edge")
    blocked = np.zeros_like(height)
    for t in range(1, steps + 1):
        dy, dx = round(ly * t), round(lx * t)
        ahead = padded[pad + dy : pad + dy + size, pad + dx : pad + dx + size]
        np.maximum(blocked, ahead - height - t * rise, out=blocked)
    shadow = ndimage.gaussian_filter(np.clip(blocked / 1.5, 0.0, 1.0), 0.7 * unit)
    smooth = ndimage.gaussian_filter(height, 0.8 * unit)
    gy, gx = np.gradient(smooth)
    bevel = np.clip(1.0 - 0.45 * unit * (gx * lx + gy * ly), 0.55, 1.5)
    # A box mean (running sums: cost independent of its size) is plenty for ambient occlusion.
    crevice = np.clip((ndimage.uniform_filter(height, int(9 * unit) | 1) - height) / 8.0, 0.0, 1.0)
    return ((1.0 - 0.7 * shadow) * bevel * (1.0 - 0.45 * crevice)).astype(F32)


def finish(rgb: np.ndarray, rng: np.random.Generator, unit: float, light: Light) -> np.ndarray:
    """Camera effects: light falloff across the patch, exposure, tint, blur, sensor noise → uint8."""
    size = rgb.shape[0]
    ramp = np.linspace(-0.5, 0.5, size, dtype=F32)
    gradient = 1.0 + rng.uniform(0.1, 0.45) * (ramp[None, :] * light.dx + ramp[:, None] * light.dy) * 2.0
    yy, xx = np.meshgrid(ramp, ramp, indexing="ij")
    vignette = 1.0 - rng.uniform(0.0, 0.35) * (xx * xx + yy * yy)
    exposure = rng.uniform(0.8, 1.25)
    tint = np.asarray(1.0 + rng.normal(0.0, 0.03, 3), F32)
    out = rgb * (gradient * vignette * F32(exposure))[..., None] * tint
    # Optical blur in pixels grows slower than the patch: a 512 px patch is a sharper view, not a zoom.
    blur = rng.uniform(0.45, 0.85, 2) * unit**0.5
    out = ndimage.gaussian_filter(out, (blur[0], blur[1], 0))
    noise_sigma = F32(rng.uniform(0.008, 0.025))
    out += (rng.standard_normal(out.shape[:2], dtype=F32) * noise_sigma)[..., None]
    out += rng.standard_normal(out.shape, dtype=F32) * (noise_sigma * F32(0.5))
    # Quantise through a lookup table holding a mild gamma (a camera-like tone curve).
    levels = np.clip(out * F32(4095.0) + F32(0.5), 0, 4095).astype(np.uint16)
    return _TONE_CURVE[levels]


_TONE_CURVE = (np.linspace(0.0, 1.0, 4096) ** 0.9 * 255.0 + 0.5).astype(np.uint8)
