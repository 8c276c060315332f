"""Post-processing of anomaly maps on the device: Gaussian smoothing as scipy does it, and resizing.

AnomalyCLIP's release smooths its maps with ``scipy.ndimage.gaussian_filter`` (σ = 4), on the CPU,
one map at a time; at GPU speed that filter costs more than the network. :func:`gaussian_filter`
computes the same filter with torch on the maps' device, batched: scipy's kernel (``truncate`` 4σ,
normalised, float64), its ``reflect`` border (the edge sample repeated: d c b a | a b c d), one axis
after the other with the result rounded to the input type in between, as scipy writes each axis'
output into an array of the input type, so float32 maps come out bit-identical to scipy's. On the
CPU it calls scipy itself, which is faster there than torch's element-wise passes.

Batches whose items have different sizes (maps, images) are processed one group of equal size at a
time: :func:`indices_by_size` forms the groups for every caller.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

K = TypeVar("K", bound=Hashable)


def gaussian_kernel(sigma: float, truncate: float = 4.0) -> torch.Tensor:
    """scipy's 1-D Gaussian weights (float64): radius ``int(truncate·σ + 0.5)``, normalised to sum 1."""
    radius = int(truncate * float(sigma) + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    weights = torch.exp(-0.5 / float(sigma) ** 2 * x**2)
    return weights / weights.sum()


def reflect_indices(length: int, radius: int, device: torch.device) -> torch.Tensor:
    """Source index of every position of an axis padded by ``radius`` in scipy's ``reflect`` mode
    (half-sample symmetric, period 2·length, so any radius works)."""
    positions = torch.arange(-radius, length + radius, device=device) % (2 * length)
    return torch.where(positions >= length, 2 * length - 1 - positions, positions)


def _filter_axis(maps: torch.Tensor, weights: torch.Tensor, axis: int, work: torch.dtype) -> torch.Tensor:
    """Correlate N×H×W ``maps`` with the symmetric ``weights`` along ``axis`` (-2 or -1).

    Summed as scipy sums a symmetric kernel (centre first, then each pair of mirrored taps), in
    ``work`` precision; shifted slices rather than ``conv1d``, which has no fast float64 kernel.
    """
    radius = (len(weights) - 1) // 2
    length = maps.shape[axis]
    padded = maps.index_select(axis, reflect_indices(length, radius, maps.device)).to(work)
    taps = [float(w) for w in weights]
    out = padded.narrow(axis, radius, length) * taps[radius]
    pair = torch.empty_like(out)
    for offset in range(1, radius + 1):  # in place: no new array per tap
        torch.add(padded.narrow(axis, radius - offset, length), padded.narrow(axis, radius + offset, length),
                  out=pair)
        out.add_(pair.mul_(taps[radius + offset]))
    return out.to(maps.dtype)


def gaussian_filter(maps: torch.Tensor, sigma: float, truncate: float = 4.0, use_scipy: bool | None = None
                    ) -> torch.Tensor:
    """``scipy.ndimage.gaussian_filter(m, sigma)`` of every H×W map in ``maps`` (…×H×W), on their device.

    Computes in float64 where the device has it (not on Apple's MPS), so float32 maps come out as
    scipy's. ``use_scipy`` (default: on the CPU) calls scipy itself, which is faster there than
    torch's element-wise passes. σ ≤ 0 returns the maps unchanged.
    """
    if sigma <= 0:
        return maps
    shape = maps.shape
    if use_scipy if use_scipy is not None else maps.device.type == "cpu":
        flat = maps.detach().reshape(-1, *shape[-2:]).numpy()
        smoothed = np.stack([ndimage.gaussian_filter(m, sigma, truncate=truncate) for m in flat])
        return torch.from_numpy(smoothed).view(shape)
    flat = maps.reshape(-1, *shape[-2:])
    work = torch.float32 if maps.device.type == "mps" else torch.float64
    weights = gaussian_kernel(sigma, truncate)
    for axis in (-2, -1):  # scipy: axis 0 (rows) first, then axis 1
        flat = _filter_axis(flat, weights, axis, work)
    return flat.view(shape)


def indices_by_size(sizes: Iterable[K]) -> dict[K, list[int]]:
    """The positions of each distinct size in ``sizes``, sizes in order of first appearance."""
    groups: dict[K, list[int]] = {}
    for index, size in enumerate(sizes):
        groups.setdefault(size, []).append(index)
    return groups


def resize_each(maps: torch.Tensor, sizes: Sequence[tuple[int, int]],
                then: Callable[[torch.Tensor, tuple[int, int]], torch.Tensor] | None = None) -> list[np.ndarray]:
    """N×C×h×w (or N×h×w) maps → one float32 numpy array per map at its own size (bilinear,
    ``align_corners=False``), resized on the maps' device in groups of equal size. ``then(group, size)``
    post-processes each resized group on the device (e.g. a Gaussian whose σ depends on the size)."""
    squeeze = maps.dim() == 3
    batch = maps[:, None] if squeeze else maps
    out: list[np.ndarray | None] = [None] * len(sizes)
    for size, indices in indices_by_size(tuple(size) for size in sizes).items():
        part = batch[indices]
        if tuple(part.shape[-2:]) != size:
            part = F.interpolate(part, size=size, mode="bilinear", align_corners=False)
        if then is not None:
            part = then(part, size)
        part = part.float().cpu().numpy()
        for position, index in enumerate(indices):
            out[index] = part[position, 0] if squeeze else part[position]
    return out  # type: ignore[return-value]


def scaled_sigma(sigma: float, size: tuple[int, int], image_size: int) -> float:
    """σ given in pixels of the model input, in pixels of an image of ``size`` (its longer side)."""
    return sigma * max(size) / image_size if not math.isclose(sigma, 0.0) else 0.0
