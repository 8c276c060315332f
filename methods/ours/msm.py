"""The multi-scale mechanism (MSM): coarse-scale views of the patch tokens, guided by the text.

Per stage: the patch-token grid is average-pooled with each window size. Stride: the paper says
"average pooling with different strides" and up-samples the pseudo maps "back to the original
resolution of the patch tokens", so by default stride = window (non-overlapping windows, a coarser
token grid per scale); ``stride=1`` gives overlapping windows instead. In each scale path the pooled
tokens are the queries of a cross-attention whose keys and values are the text features (ClipSAM's
scale path); the attended tokens are compared with the text features, giving a pseudo anomaly map
per class at that scale. The pseudo maps are up-sampled (bilinear) back to the patch grid, summed
over scales and encoded by a small convolutional head into the stage's MSM anomaly map (logits over
normal + K classes).

The attention enters through a zero-initialised projection on a residual: at the start a scale path
is the plain similarity of the pooled tokens with the text, and the text-guided part grows as it
learns. (With a default-initialised projection the attended text mixture, the same for every token,
swamped the visual token and the pseudo maps came out constant.)

A window larger than the grid (9×9 on an 8×8 smoke grid) is clipped to the grid: the scale then
sees the whole patch as one token, the coarsest view there is.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def pool_tokens(grid: torch.Tensor, window: int, stride: int | None = None) -> torch.Tensor:
    """Average-pool a B×D×h×w token grid with a ``window`` kernel (clipped to the grid).

    ``stride`` None: stride = window. Border windows that overhang the grid are partial (ceil
    mode) and average only the tokens they cover.
    """
    kernel = (min(window, grid.shape[-2]), min(window, grid.shape[-1]))
    step = kernel if stride is None else (min(stride, kernel[0]), min(stride, kernel[1]))
    return F.avg_pool2d(grid, kernel_size=kernel, stride=step, ceil_mode=True)


class ScalePath(nn.Module):
    """Pooled tokens attend to the text features; their similarity to the text is a pseudo map."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.attention = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.proj = nn.Linear(dim, dim)
        nn.init.zeros_(self.proj.weight)  # start as the plain similarity (module docstring)
        nn.init.zeros_(self.proj.bias)

    def forward(self, tokens: torch.Tensor, text: torch.Tensor, temperature: float) -> torch.Tensor:
        """tokens B×N×D, text C×D (normalised) → similarity logits B×N×C."""
        keys = text.unsqueeze(0).expand(tokens.shape[0], -1, -1)
        attended, _ = self.attention(self.norm(tokens), keys, keys, need_weights=False)
        tokens = tokens + self.proj(attended)
        return F.normalize(tokens, dim=-1) @ text.t() / temperature


class MultiScaleMechanism(nn.Module):
    """One MSM block for one stage of the vision encoder."""

    def __init__(
        self, dim: int, num_classes: int, scales: Sequence[int], heads: int, hidden: int = 32,
        stride: int | None = None,
    ) -> None:
        super().__init__()
        if not scales or any(s < 1 for s in scales):
            raise ValueError(f"MSM scales must be positive window sizes, got {tuple(scales)}")
        if stride is not None and stride < 1:
            raise ValueError(f"MSM stride must be ≥ 1 (or None for stride = window), got {stride}")
        self.scales = tuple(scales)
        self.stride = stride
        self.paths = nn.ModuleList(ScalePath(dim, heads) for _ in self.scales)
        # Replicate padding: zero padding made the patch border light up in every MSM map.
        self.encoder = nn.Sequential(
            nn.Conv2d(num_classes, hidden, 3, padding=1, padding_mode="replicate"), nn.GELU(),
            nn.Conv2d(hidden, num_classes, 1),
        )

    def pseudo_maps(self, grid: torch.Tensor, text: torch.Tensor, temperature: float) -> torch.Tensor:
        """Pseudo anomaly maps of all scales, each up-sampled to the patch grid, summed: B×C×h×w."""
        height, width = grid.shape[-2:]
        summed = torch.zeros(grid.shape[0], text.shape[0], height, width, dtype=grid.dtype, device=grid.device)
        for window, path in zip(self.scales, self.paths, strict=True):
            pooled = pool_tokens(grid, window, self.stride)
            b, _, hs, ws = pooled.shape
            logits = path(pooled.flatten(2).transpose(1, 2), text, temperature)  # B×(hs·ws)×C
            pseudo = logits.transpose(1, 2).reshape(b, -1, hs, ws)
            summed = summed + F.interpolate(pseudo, size=(height, width), mode="bilinear", align_corners=False)
        return summed

    def forward(self, grid: torch.Tensor, text: torch.Tensor, temperature: float) -> torch.Tensor:
        """Patch-token grid B×D×h×w (projected, joint space), text C×D → MSM logits B×C×h×w."""
        return self.encoder(self.pseudo_maps(grid, text, temperature))
