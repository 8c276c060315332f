"""Steel pieces of a scrap pile (all label 0), including hard negatives that mimic the anomalies.

Every drawer has the signature ``draw(cv, rng, cy, cx)`` and paints one piece centred near (cy, cx);
sizes are fractions of the patch (``cv.size``) or reference pixels (``cv.unit``), so every preset
shows the same scene at a different resolution. Thicknesses are in reference pixels: they shape the
height map from which shadows and edge shading are computed.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from scrapbench.datasets.synthetic.canvas import (
    Canvas,
    Region,
    box_sdf,
    coverage,
    curve_frame,
    polygon_alpha,
    rotate,
    wander_curve,
)
from scrapbench.datasets.synthetic.textures import (
    F32,
    PAINTS,
    Material,
    cylinder_shading,
    paint_material,
    pick,
    steel_material,
    textured,
)

Drawer = Callable[[Canvas, np.random.Generator, float, float], None]
ColourFn = Callable[[np.ndarray, np.ndarray, int], np.ndarray]


def ground(cv: Canvas, rng: np.random.Generator) -> None:
    """Fill the patch with the dark, dusty bottom of the pile (visible in gaps between pieces)."""
    mat = Material((0.17, 0.14, 0.12), (0.26, 0.17, 0.11), float(rng.normal(0.0, 0.6)), 0.2)
    colour = textured(mat, cv.bank, cv.size, cv.size)
    dark = 0.5 + 0.2 * cv.bank.crop("coarse", cv.size, cv.size)
    cv.rgb[:] = colour * np.clip(dark, 0.15, 1.0)[..., None]


def _polygon(rng: np.random.Generator, radius: float, aspect: float, n: int) -> np.ndarray:
    """An irregular polygon (x, y) around the origin: torch-cut plate outlines."""
    angles = np.sort(rng.uniform(0, 2 * np.pi, n))
    radii = radius * rng.uniform(0.6, 1.0, n)
    pts = np.stack([np.cos(angles) * radii * aspect, np.sin(angles) * radii], axis=1)
    turn = rng.uniform(0, np.pi)
    rot = np.array([[np.cos(turn), -np.sin(turn)], [np.sin(turn), np.cos(turn)]])
    return pts @ rot.T


def _polygon_pixels(rng: np.random.Generator, reg: Region, radius: float, aspect: float, corners: int):
    """Pixels covered by an irregular polygon: index inside the window and its coordinates."""
    index = np.nonzero(polygon_alpha(reg, _polygon(rng, radius, aspect, corners)))
    return index, *reg.coords(index)


def plate(
    cv: Canvas, rng: np.random.Generator, cy: float, cx: float, median: float = 0.21, min_corners: int = 4
) -> None:
    """A flat, torch-cut plate: irregular outline, rust blotches, bolt holes, a slight tilt."""
    radius = cv.size * float(np.clip(rng.lognormal(np.log(median), 0.45), 0.05, 0.6))
    reg = cv.region(cy, cx, radius)
    if reg is None:
        return
    corners = int(rng.integers(min_corners, 10))
    index, yy, xx = _polygon_pixels(rng, reg, radius, rng.uniform(0.45, 1.0), corners)
    alpha = np.ones(yy.shape, F32)
    if rng.random() < 0.35:  # bolt / torch holes show what lies underneath
        for _ in range(int(rng.integers(1, 5))):
            hy, hx = rng.uniform(-0.6, 0.6, 2) * radius
            alpha *= coverage(rng.uniform(1.0, 3.0) * cv.unit - np.hypot(yy - hy, xx - hx))
    mat = paint_material(rng, pick(rng, PAINTS), rng.uniform(0.5, 0.9)) if rng.random() < 0.06 else None
    colour = textured(mat or steel_material(rng), cv.bank, *reg.shape, index=index)
    gy, gx = rng.normal(0.0, 0.15, 2)
    tilt = np.clip(1.0 + (gy * yy + gx * xx) / radius, 0.65, 1.35)
    cv.paint(reg, alpha, colour * tilt[:, None], thickness=rng.uniform(1.0, 2.5), index=index)


def large_plate(cv: Canvas, rng: np.random.Generator, cy: float, cx: float) -> None:
    """A big plate for the bottom of the pile."""
    plate(cv, rng, cy, cx, median=0.38, min_corners=6)


def sheet(cv: Canvas, rng: np.random.Generator, cy: float, cx: float) -> None:
    """Thin sheet metal: large, grey or galvanised, crumpled or corrugated (in the height map)."""
    radius = cv.size * rng.uniform(0.18, 0.45)
    reg = cv.region(cy, cx, radius)
    if reg is None:
        return
    index, yy, xx = _polygon_pixels(rng, reg, radius, rng.uniform(0.5, 1.0), int(rng.integers(5, 9)))
    if rng.random() < 0.35:  # corrugated
        u, _ = rotate(yy, xx, rng.uniform(0, np.pi))
        relief = 0.9 * np.cos(2 * np.pi * u / (rng.uniform(4.0, 8.0) * cv.unit))
    else:  # crumpled: a noise height field
        relief = 1.6 * cv.bank.crop("blotch", *reg.shape)[index]
    mat = steel_material(rng)
    if rng.random() < 0.5:
        mat = Material((0.58, 0.59, 0.6), mat.rust, mat.rust_bias - 0.8, 0.08)
    colour = textured(mat, cv.bank, *reg.shape, index=index)
    cv.paint(reg, np.ones(yy.shape, F32), colour, thickness=0.8 + relief, index=index)


def _bar_pixels(reg: Region, angle: float, half_len: float, half_w: float):
    """Pixels of a straight bar in its window: index, alpha and (along, across) coordinates."""
    u, v = rotate(*reg.grid(), angle)
    alpha = coverage(box_sdf(u, v, half_len, half_w))
    index = np.nonzero(alpha > 0)
    return index, alpha[index], u[index], v[index]


def beam(cv: Canvas, rng: np.random.Generator, cy: float, cx: float) -> None:
    """An I-beam, channel or angle seen from above: a long bar whose cross-section is in the height map."""
    half_len = cv.size * rng.uniform(0.2, 0.65)
    half_w = cv.size * rng.uniform(0.03, 0.085)
    reg = cv.region(cy, cx, half_len)
    if reg is None:
        return
    index, alpha, _, v = _bar_pixels(reg, rng.uniform(0, np.pi), half_len, half_w)
    across = np.abs(v / half_w)
    depth = rng.uniform(3.0, 7.0)
    profile = pick(rng, ("flange", "web", "angle", "channel"))
    if profile == "flange":  # flange on top: flat
        thickness = np.full_like(across, depth)
    elif profile == "web":  # lying on its side: two flange walls, a recessed web between
        thickness = np.where(across > 0.78, depth, 0.8)
    elif profile == "angle":  # an L lying like a roof: a ridge along the middle
        thickness = depth * (1.0 - 0.8 * across)
    else:  # channel: one raised lip
        thickness = np.where(v / half_w > 0.7, depth, 0.8)
    colour = textured(steel_material(rng), cv.bank, *reg.shape, index=index)
    # Flange edges catch light: a thin bright line along the top edges.
    colour *= (1.0 + 0.15 * ((across > 0.86) & (thickness > 1.0)))[:, None]
    cv.paint(reg, alpha, colour, thickness=thickness, index=index)


def tube(
    cv: Canvas,
    points: np.ndarray,
    cy: float,
    cx: float,
    radius: float,
    colour_fn: ColourFn,
    gloss: float,
    spec: float,
    instance: int = 0,
    radius_scale: Callable[[np.ndarray], np.ndarray] | None = None,
) -> None:
    """Draw a round tube along a polyline (rebar, wire, cable, rope) with cylinder shading.

    ``colour_fn(along, across, n)`` gives the (n, 3) surface colour before shading;
    ``radius_scale(along)`` optionally thins the tube locally (bare copper ends of a cable).
    """
    extent = float(np.abs(points).max()) + radius
    reg = cv.region(cy, cx, extent)
    if reg is None:
        return
    frame = curve_frame(reg, points, radius)
    if frame is None:
        return
    local_radius = radius * radius_scale(frame.along) if radius_scale is not None else radius
    across = frame.dist / local_radius
    diffuse, specular = cylinder_shading(across, -frame.dir_y, frame.dir_x, cv.light, gloss)
    base = colour_fn(frame.along, across, frame.dist.size)
    alpha = coverage(np.abs(frame.dist) - local_radius)
    colour = base * diffuse[:, None] + spec * specular[:, None]
    thickness = 2.0 * local_radius / cv.unit * np.sqrt(np.clip(1.0 - across * across, 0.05, 1.0))
    cv.paint(reg, alpha, colour, thickness=thickness, instance=instance, index=frame.index)


def _rebar_colour(cv: Canvas, rng: np.random.Generator, radius: float, ribbed: bool) -> ColourFn:
    mat = steel_material(rng)
    # Bars are mostly rusty or dark: pull the base colour towards the rust colour.
    mat = Material(tuple(0.5 * np.asarray(mat.base) + 0.5 * np.asarray(mat.rust)), mat.rust, mat.rust_bias, mat.grain)
    period = rng.uniform(2.2, 3.2) * radius
    twist = rng.uniform(0.3, 0.8)
    phase = rng.uniform(0, 6)

    def colour_fn(along: np.ndarray, across: np.ndarray, n: int) -> np.ndarray:
        # Rust varies slowly along the bar; rebar has diagonal ribs, plain wire has none.
        rust = np.clip(0.5 + 0.6 * (np.sin(along / (9.0 * cv.unit) + phase) + mat.rust_bias), 0.0, 1.0)
        base = np.asarray(mat.base, F32) + (np.asarray(mat.rust, F32) - mat.base) * rust[:, None]
        if ribbed:
            base = base * (1.0 + 0.2 * np.sin(2 * np.pi * (along + twist * across * radius) / period))[:, None]
        return base.astype(F32)

    return colour_fn


def rebar(cv: Canvas, rng: np.random.Generator, cy: float, cx: float) -> None:
    """Straight (or slightly bent) ribbed reinforcing bars, sometimes a bundle of them."""
    radius = rng.uniform(0.8, 2.2) * cv.unit
    length = cv.size * rng.uniform(0.3, 1.1)
    heading = rng.uniform(0, 2 * np.pi)
    start = -0.5 * length * np.array([np.cos(heading), np.sin(heading)])
    # Nearly straight: few, long segments keep the distance field cheap.
    base = wander_curve(rng, start, length, 7.0 * cv.unit, rng.uniform(0.0, 0.35), heading)
    normal = np.array([-np.sin(heading), np.cos(heading)], F32)
    for k in range(int(rng.choice([1, 1, 1, 2, 3]))):
        colour_fn = _rebar_colour(cv, rng, radius, ribbed=True)
        tube(cv, base + normal * (k * 2.3 * radius), cy, cx, radius, colour_fn, 8.0, 0.06)


def bent_rebar(cv: Canvas, rng: np.random.Generator, cy: float, cx: float) -> None:
    """Hard negative for cables: strongly bent rebar, wire or dark wire rope along curvy paths."""
    radius = rng.uniform(0.8, 2.4) * cv.unit
    length = cv.size * rng.uniform(0.25, 0.9)
    heading = rng.uniform(0, 2 * np.pi)
    start = -0.4 * length * np.array([np.cos(heading), np.sin(heading)])
    points = wander_curve(rng, start, length, 2.5 * cv.unit, rng.uniform(1.5, 5.0), heading)
    kind = pick(rng, ("rebar", "wire", "rope"))
    colour_fn = _rebar_colour(cv, rng, radius, ribbed=kind == "rebar")
    if kind == "rope":  # black annealed wire / greasy wire rope: dark, smooth-ish, cable-like
        dark = np.asarray(pick(rng, ((0.12, 0.12, 0.13), (0.3, 0.3, 0.32), (0.22, 0.2, 0.19))), F32)
        period = rng.uniform(1.5, 3.0) * radius

        def colour_fn(along: np.ndarray, across: np.ndarray, n: int) -> np.ndarray:
            strands = 1.0 + 0.2 * np.sin(2 * np.pi * (along + across * radius) / period)
            return dark[None, :] * strands[:, None].astype(F32)

    tube(cv, points, cy, cx, radius, colour_fn, 12.0, 0.2)


def pipe(cv: Canvas, rng: np.random.Generator, cy: float, cx: float, painted: bool | None = None) -> None:
    """A round pipe or bar: cylinder shading, specular line; sometimes painted (hard negative)."""
    painted = rng.random() < 0.12 if painted is None else painted
    short = painted and rng.random() < 0.5  # can-sized painted stubs are the hardest negatives
    half_len = cv.size * (rng.uniform(0.04, 0.1) if short else rng.uniform(0.15, 0.45))
    radius = rng.uniform(2.5, 9.0) * cv.unit
    angle = rng.uniform(0, np.pi)
    reg = cv.region(cy, cx, half_len + radius)
    if reg is None:
        return
    index, alpha, u, v = _bar_pixels(reg, angle, half_len, radius)
    mat = paint_material(rng, pick(rng, PAINTS), rng.uniform(0.0, 0.7)) if painted else steel_material(rng)
    colour = textured(mat, cv.bank, *reg.shape, index=index)
    if painted and rng.random() < 0.5:  # a second-colour band, like a marking stripe
        band = np.abs(u - rng.uniform(-0.5, 0.5) * half_len) < rng.uniform(0.1, 0.3) * half_len
        colour = np.where(band[:, None], np.asarray(pick(rng, PAINTS), F32), colour)
    across = np.clip(v / radius, -1.0, 1.0)
    diffuse, specular = cylinder_shading(across, -np.sin(angle), np.cos(angle), cv.light, 14.0)
    colour = colour * diffuse[:, None] + (0.35 if painted else 0.2) * specular[:, None]
    if rng.random() < 0.6:  # open ends show the dark inside of the pipe
        inner = (np.abs(v) < 0.7 * radius) & (np.abs(np.abs(u) - half_len) < 0.35 * radius)
        colour = np.where(inner[:, None], colour * 0.35, colour)
    thickness = 2.0 * radius / cv.unit * np.sqrt(np.clip(1.0 - across * across, 0.05, 1.0))
    cv.paint(reg, alpha, colour.astype(F32), thickness=thickness, index=index)


def painted_pipe(cv: Canvas, rng: np.random.Generator, cy: float, cx: float) -> None:
    """Hard negative for spray cans: painted pipe segments and stubs."""
    pipe(cv, rng, cy, cx, painted=True)


MOTORISH_PAINTS = ((0.25, 0.3, 0.34), (0.18, 0.3, 0.3), (0.3, 0.32, 0.3), (0.15, 0.2, 0.3))


def round_part(cv: Canvas, rng: np.random.Generator, cy: float, cx: float) -> None:
    """Hard negative for motors: flanges, gears, hubs and vented discs, some in motor colours."""
    radius = cv.size * float(np.clip(rng.lognormal(np.log(0.08), 0.4), 0.03, 0.22))
    reg = cv.region(cy, cx, radius * 1.1)
    if reg is None:
        return
    yy, xx = reg.grid()
    r = np.hypot(yy, xx)
    theta = np.arctan2(yy, xx)
    kind = pick(rng, ("flange", "gear", "hub", "vented"))
    outer = radius
    if kind == "gear":
        outer = radius * (1.0 + 0.07 * np.sign(np.sin(int(rng.integers(12, 30)) * theta)))
    alpha = coverage(r - outer) * coverage(rng.uniform(0.1, 0.3) * radius - r)  # with a centre bore
    depth = rng.uniform(1.5, 4.0)
    thickness = np.full_like(r, depth)
    if kind == "flange":  # a ring of bolt holes and a raised centre
        hole = (np.abs(r - 0.72 * radius) < 0.09 * radius) & (np.cos(int(rng.integers(4, 9)) * theta) > 0.9)
        alpha = alpha * ~hole
        thickness += depth * (r < 0.5 * radius)
    elif kind == "hub":  # concentric steps
        thickness += depth * 0.6 * ((r // (radius / rng.uniform(2.5, 5.0))) % 2)
    elif kind == "vented":  # brake disc with radial vents: fin-like, like a motor end shield
        vents = (r > 0.55 * radius) & (np.sin(int(rng.integers(14, 30)) * theta) > 0.3)
        thickness -= 0.7 * depth * vents
    motorish = rng.random() < 0.35
    mat = paint_material(rng, pick(rng, MOTORISH_PAINTS), rng.uniform(0.2, 0.8)) if motorish else steel_material(rng)
    cv.paint(reg, alpha, textured(mat, cv.bank, *reg.shape), thickness=thickness)


def debris(cv: Canvas, rng: np.random.Generator, cy: float, cx: float) -> None:
    """Small chunks and machining turnings: small clutter, so small things are not all anomalies."""
    if rng.random() < 0.4:  # a turning: a tight bright curl
        radius = rng.uniform(0.5, 1.2) * cv.unit
        points = wander_curve(
            rng, np.zeros(2), cv.size * rng.uniform(0.05, 0.15), cv.unit, 6.0, rng.uniform(0, 2 * np.pi)
        )
        bright = np.asarray((0.7, 0.7, 0.72), F32) * rng.uniform(0.6, 1.1)
        tube(cv, points, cy, cx, radius, lambda a, c, n: np.tile(bright, (n, 1)), 20.0, 0.4)
        return
    radius = cv.size * rng.uniform(0.015, 0.05)
    reg = cv.region(cy, cx, radius)
    if reg is None:
        return
    index, yy, _ = _polygon_pixels(rng, reg, radius, rng.uniform(0.5, 1.0), int(rng.integers(4, 7)))
    colour = textured(steel_material(rng), cv.bank, *reg.shape, index=index)
    cv.paint(reg, np.ones(yy.shape, F32), colour, thickness=rng.uniform(1.0, 2.5), index=index)


STEEL_DRAWERS: dict[str, Drawer] = {
    "plate": plate,
    "sheet": sheet,
    "beam": beam,
    "rebar": rebar,
    "pipe": pipe,
    "debris": debris,
}
HARD_NEGATIVES: dict[str, Drawer] = {
    "painted_pipe": painted_pipe,
    "bent_rebar": bent_rebar,
    "round_part": round_part,
}
