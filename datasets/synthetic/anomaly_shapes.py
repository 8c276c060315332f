"""The three anomaly objects (motor, cable, spray can), drawn as one anomaly instance each.

``size`` is the object's long extent in pixels (the caller draws it from a long-tailed distribution).
Every drawer paints with ``instance`` so the canvas knows which pixels show the object.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from scrapbench.datasets.synthetic.canvas import Canvas, box_sdf, coverage, rotate, wander_curve
from scrapbench.datasets.synthetic.scrap_shapes import tube
from scrapbench.datasets.synthetic.textures import (
    F32,
    PAINTS,
    cylinder_shading,
    paint_material,
    pick,
    textured,
)

# Motor housings: dark grey, blue-grey, the classic teal/green, black, dusty blue, cream-grey.
MOTOR_PAINTS = (
    (0.22, 0.23, 0.25),
    (0.28, 0.34, 0.42),
    (0.16, 0.36, 0.34),
    (0.1, 0.1, 0.11),
    (0.2, 0.3, 0.5),
    (0.55, 0.55, 0.5),
    (0.38, 0.4, 0.38),
)
COPPER = np.asarray((0.72, 0.4, 0.18), F32)
CABLE_COLOURS = (
    (0.08, 0.08, 0.09),
    (0.08, 0.08, 0.09),
    (0.35, 0.35, 0.36),
    (0.55, 0.55, 0.55),
    (0.9, 0.42, 0.08),
    (0.12, 0.28, 0.65),
    (0.65, 0.1, 0.08),
    (0.85, 0.85, 0.8),
    (0.3, 0.55, 0.15),
)
# Spray-can prints are brighter and more varied than industrial paint.
LABEL_COLOURS = (
    *PAINTS,
    (0.85, 0.2, 0.45),
    (0.55, 0.75, 0.15),
    (0.45, 0.2, 0.6),
    (0.1, 0.6, 0.8),
    (0.95, 0.85, 0.2),
)
METAL = np.asarray((0.72, 0.73, 0.75), F32)


def _copper_windings(u: np.ndarray, v: np.ndarray, unit: float, grain: np.ndarray) -> np.ndarray:
    """Fine copper wire turns: bright/dark streaks across the winding direction."""
    streaks = 0.75 + 0.3 * np.sin(v * (2.6 / unit) + 1.5 * grain)
    return COPPER * streaks[..., None].astype(F32)


def motor(cv: Canvas, rng: np.random.Generator, cy: float, cx: float, size: float, instance: int) -> None:
    """An electric motor: painted finned housing, end bells, steel shaft, copper windings."""
    if rng.random() < 0.3:
        _motor_end_view(cv, rng, cy, cx, size, instance)
        return
    half_len = size / 2
    radius = size * rng.uniform(0.26, 0.4)
    shaft_len = size * rng.uniform(0.12, 0.3)
    angle = rng.uniform(0, 2 * np.pi)
    reg = cv.region(cy, cx, half_len + shaft_len + radius)
    if reg is None:
        return
    u, v = rotate(*reg.grid(), angle)
    corner = 0.25 * radius  # rounded end bells
    body = coverage(box_sdf(u, v, half_len - corner, radius - corner) - corner)
    shaft = coverage(box_sdf(u - half_len - shaft_len / 2, v, shaft_len / 2, max(0.16 * radius, 0.8 * cv.unit)))
    across = np.clip(v / radius, -1, 1)
    h, w = reg.shape
    paint = textured(paint_material(rng, pick(rng, MOTOR_PAINTS), rng.uniform(0.0, 0.6)), cv.bank, h, w)
    # Cooling fins run along the housing: ridges across it, only on the middle section.
    fin_period = max(radius / rng.uniform(3.0, 5.0), 1.6 * cv.unit)
    fins = (np.abs(u) < 0.32 * size) * (0.5 + 0.5 * np.cos(2 * np.pi * v / fin_period))
    tone = 1.0 - 0.35 * fins + 0.12 * (np.abs(u) > 0.36 * size)
    # Terminal box on top (the middle of the top-down view), slightly offset along the axis.
    box_u = rng.uniform(-0.15, 0.15) * size
    tbox = box_sdf(u - box_u, v, 0.16 * size, 0.45 * radius) < 0
    tone = np.where(tbox, 1.15, tone)
    colour = paint * tone[..., None]
    # Copper windings exposed at the open end opposite the shaft (a broken end shield), often.
    if rng.random() < 0.65:
        depth = rng.uniform(0.1, 0.22) * size
        exposed = (u < -half_len + depth) & (np.abs(v) < 0.85 * radius)
        colour = np.where(exposed[..., None], _copper_windings(u, v, cv.unit, cv.bank.crop("grain", h, w)), colour)
    diffuse, specular = cylinder_shading(across, -np.sin(angle), np.cos(angle), cv.light, 10.0)
    colour = colour * diffuse[..., None] + 0.15 * specular[..., None]
    shaft_shade, shaft_spec = cylinder_shading(
        np.clip(v / max(0.16 * radius, 0.8 * cv.unit), -1, 1), -np.sin(angle), np.cos(angle), cv.light, 20.0
    )
    shaft_colour = METAL * shaft_shade[..., None] + 0.4 * shaft_spec[..., None]
    alpha = np.maximum(body, shaft)
    colour = np.where((shaft > body)[..., None], shaft_colour, colour)
    # Height: a cylinder, fins as ridges, the terminal box standing out, the shaft on the axis.
    roundness = np.sqrt(np.clip(1.0 - across * across, 0.05, 1.0))
    thickness = 2.0 * radius / cv.unit * roundness * (1.0 - 0.08 * fins) + 1.5 * tbox
    thickness = np.where(shaft > body, radius / cv.unit, thickness)
    cv.paint(reg, alpha, colour.astype(F32), thickness=thickness, instance=instance)


def _motor_end_view(cv: Canvas, rng: np.random.Generator, cy: float, cx: float, size: float, instance: int):
    """A motor standing on end: radial fins around a round end shield, shaft in the centre."""
    radius = size / 2
    reg = cv.region(cy, cx, radius * 1.1)
    if reg is None:
        return
    yy, xx = reg.grid()
    r = np.hypot(yy, xx)
    theta = np.arctan2(yy, xx)
    fins = int(rng.integers(18, 36))
    fin_ridge = np.cos(fins * theta) > 0.2
    outline = np.where(r > 0.8 * radius, radius * (0.93 + 0.07 * fin_ridge), radius)
    alpha = coverage(r - outline)
    h, w = reg.shape
    paint = textured(paint_material(rng, pick(rng, MOTOR_PAINTS), rng.uniform(0.0, 0.6)), cv.bank, h, w)
    tone = np.where(r > 0.8 * radius, np.where(fin_ridge, 1.05, 0.55), 1.0)
    colour = paint * tone[..., None]
    if rng.random() < 0.65:
        ring = (r > 0.3 * radius) & (r < 0.62 * radius)
        colour = np.where(ring[..., None], _copper_windings(r, r, cv.unit, cv.bank.crop("grain", h, w)), colour)
    shaft = r < max(0.13 * radius, 1.0 * cv.unit)
    colour = np.where(shaft[..., None], METAL * 1.1, colour)
    thickness = radius / cv.unit * (1.6 - 0.4 * (r > 0.8 * radius) * ~fin_ridge + 0.3 * shaft)
    cv.paint(reg, alpha, colour.astype(F32), thickness=thickness, instance=instance)


def cable(cv: Canvas, rng: np.random.Generator, cy: float, cx: float, size: float, instance: int) -> None:
    """An insulated cable (or a bundle): a smooth glossy tube along a curvy path, maybe copper ends."""
    radius = rng.uniform(1.0, 2.6) * cv.unit
    heading = rng.uniform(0, 2 * np.pi)
    start = -0.45 * size * np.array([np.cos(heading), np.sin(heading)])
    base = wander_curve(rng, start, size, 2.0 * cv.unit, rng.uniform(0.8, 4.5), heading)
    tangent = np.gradient(base, axis=0)
    normal = np.stack([-tangent[:, 1], tangent[:, 0]], axis=1)
    normal /= np.linalg.norm(normal, axis=1, keepdims=True) + 1e-6
    strands = int(rng.choice([1, 1, 1, 1, 2, 2, 3, 4]))
    same_colour = rng.random() < 0.5
    colour = np.asarray(pick(rng, CABLE_COLOURS), F32)
    copper_len = rng.uniform(2.0, 5.0) * radius if rng.random() < 0.4 else 0.0
    for k in range(strands):
        offset = (k - (strands - 1) / 2) * 2.05 * radius
        drift = np.linspace(0.0, rng.normal(0.0, 1.5 * radius), len(base))[:, None]
        points = base + normal * (offset + drift)
        length = float(np.hypot(*np.diff(points, axis=0).T).sum())  # strands off-centre are longer or shorter
        if not same_colour and k:
            colour = np.asarray(pick(rng, CABLE_COLOURS), F32)
        tube(
            cv,
            points,
            cy,
            cx,
            radius,
            _insulation(colour, copper_len, length, rng.uniform(0.0, 0.4), cv.unit),
            gloss=18.0,
            spec=0.3,
            instance=instance,
            radius_scale=_copper_thinning(copper_len, length),
        )


def _insulation(colour: np.ndarray, copper_len: float, length: float, dirt: float, unit: float) -> Callable:
    def colour_fn(along: np.ndarray, across: np.ndarray, n: int) -> np.ndarray:
        grime = 1.0 - dirt * (0.5 + 0.5 * np.sin(along * (0.37 / unit)) * np.sin(along * (0.11 / unit)))
        out = colour[None, :] * grime[:, None].astype(F32)
        if copper_len > 0:
            bare = (along < copper_len) | (along > length - copper_len)
            out = np.where(bare[:, None], COPPER * 1.1, out)
        return out.astype(F32)

    return colour_fn


def _copper_thinning(copper_len: float, length: float) -> Callable | None:
    if copper_len <= 0:
        return None
    return lambda along: np.where((along < copper_len) | (along > length - copper_len), 0.55, 1.0).astype(F32)


def spray_can(cv: Canvas, rng: np.random.Generator, cy: float, cx: float, size: float, instance: int) -> None:
    """An aerosol can: printed label band, metallic shoulder and rim, plastic cap."""
    radius = size * rng.uniform(0.17, 0.25)
    cap_colour = np.asarray(pick(rng, ((0.9, 0.9, 0.88), (0.1, 0.1, 0.1), *LABEL_COLOURS)), F32)
    label = np.asarray(pick(rng, LABEL_COLOURS), F32)
    second = np.asarray(pick(rng, LABEL_COLOURS), F32)
    if rng.random() < 0.25:  # standing upright: seen from the top
        reg = cv.region(cy, cx, radius * 1.1)
        if reg is None:
            return
        yy, xx = reg.grid()
        r = np.hypot(yy, xx)
        alpha = coverage(r - radius)
        colour = np.where((r < 0.72 * radius)[..., None], cap_colour, METAL)
        colour = np.where((r < 0.2 * radius)[..., None], np.asarray((0.92, 0.92, 0.9), F32), colour)
        ring = 1.0 - 0.35 * ((r > 0.78 * radius) & (r < 0.86 * radius))
        colour = colour * ring[..., None]
        thickness = 2.5 * radius / cv.unit * np.where(r < 0.72 * radius, 1.25, 1.0)
        cv.paint(reg, alpha, colour.astype(F32), thickness=thickness, instance=instance)
        return
    half_len = size / 2
    angle = rng.uniform(0, 2 * np.pi)
    reg = cv.region(cy, cx, half_len + radius)
    if reg is None:
        return
    u, v = rotate(*reg.grid(), angle)
    s = (u + half_len) / size  # 0 at the bottom rim, 1 at the cap tip
    # Width profile: full body, tapering shoulder, narrower cap.
    width = np.where(s < 0.72, radius, np.where(s < 0.8, radius * (1.0 - 2.5 * (s - 0.72)), 0.72 * radius))
    alpha = coverage(np.maximum(np.abs(v) - width, np.abs(u) - half_len))
    h, w = reg.shape
    # Printed label: main colour, a band of a second colour, small "text" flecks.
    band_lo = rng.uniform(0.15, 0.45)
    band = (s > band_lo) & (s < band_lo + rng.uniform(0.08, 0.25))
    colour = np.where(band[..., None], second, label)
    text = (cv.bank.crop("grain", h, w) > 1.3) & (s > 0.1) & (s < 0.68)
    colour = np.where(text[..., None], np.asarray((0.95, 0.95, 0.93), F32) - 0.8 * label * (rng.random() < 0.5), colour)
    metal = (s < 0.06) | ((s > 0.68) & (s < 0.8))
    colour = np.where(metal[..., None], METAL, colour)
    colour = np.where((s >= 0.8)[..., None], cap_colour, colour)
    # Scuffs: scrap cans are scratched and dented.
    colour = colour * (1.0 + 0.1 * cv.bank.crop("blotch", h, w))[..., None]
    across = np.clip(v / width, -1, 1)
    diffuse, specular = cylinder_shading(across, -np.sin(angle), np.cos(angle), cv.light, 25.0)
    colour = colour * diffuse[..., None] + (0.55 * metal + 0.3)[..., None] * specular[..., None]
    thickness = 2.0 * width / cv.unit * np.sqrt(np.clip(1.0 - across * across, 0.05, 1.0))
    cv.paint(reg, alpha, colour.astype(F32), thickness=thickness, instance=instance)


ANOMALY_DRAWERS = {"motor": motor, "cable": cable, "spray_can": spray_can}
