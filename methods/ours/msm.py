"""The multi-scale mechanism (MSM): coarse-scale views of the patch tokens, guided by the text.

Per stage: the patch-token grid is average-pooled with each window size (kernel = stride = k, so a
coarser token grid per scale). In each scale path the pooled tokens are the queries of a
cross-attention whose keys and values are the text features (ClipSAM's scale path); the attended
tokens are compared with the text features, giving a pseudo anomaly map per class at that scale.
The pseudo maps are up-sampled back to the patch grid, summed over scales and encoded by a small
convolutional head into the stage's MSM anomaly map (logits over normal + K classes).

A window larger than the grid (9×9 on an 8×8 smoke grid) is clipped to the grid: the scale then
sees the whole patch as one token, the coarsest view there is.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def pool_tokens(grid: torch.Tensor, window: int) -> torch.Tensor:
    """Average-pool a B×D×h×w token grid with kernel = stride = ``window`` (clipped to the grid)."""
    kernel = (min(window, grid.shape[-2]), min(window, grid.shape[-1]))
    return F.avg_pool2d(grid, kernel_size=kernel, stride=kernel, ceil_mode=True)


class ScalePath(nn.Module):
    """Pooled tokens attend to the text features; their similarity to the text is a pseudo map."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.attention = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, tokens: torch.Tensor, text: torch.Tensor, temperature: float) -> torch.Tensor:
        """tokens B×N×D, text C×D (normalised) → similarity logits B×N×C."""
        keys = text.unsqueeze(0).expand(tokens.shape[0], -1, -1)
        attended, _ = self.attention(self.norm(tokens), keys, keys, need_weights=False)
        tokens = tokens + self.proj(attended)
        return F.normalize(tokens, dim=-1) @ text.t() / temperature


class MultiScaleMechanism(nn.Module):
    """One MSM block for one stage of the vision encoder."""

    def __init__(self, dim: int, num_classes: int, scales: Sequence[int], heads: int, hidden: int = 32) -> None:
        super().__init__()
        if not scales or any(s < 1 for s in scales):
            raise ValueError(f"MSM scales must be positive window sizes, got {tuple(scales)}")
        self.scales = tuple(scales)
        self.paths = nn.ModuleList(ScalePath(dim, heads) for _ in self.scales)
        # Replicate padding: zero padding made the patch border light up in every MSM map.
        self.encoder = nn.Sequential(
            nn.Conv2d(num_classes, hidden, 3, padding=1, padding_mode="replicate"), nn.GELU(),
            nn.Conv2d(hidden, num_classes, 1),
        )

    def forward(self, grid: torch.Tensor, text: torch.Tensor, temperature: float) -> torch.Tensor:
        """Patch-token grid B×D×h×w (projected, joint space), text C×D → MSM logits B×C×h×w."""
        height, width = grid.shape[-2:]
        summed = 0.0
        for window, path in zip(self.scales, self.paths, strict=True):
            pooled = pool_tokens(grid, window)
            b, _, hs, ws = pooled.shape
            logits = path(pooled.flatten(2).transpose(1, 2), text, temperature)  # B×(hs·ws)×C
            pseudo = logits.transpose(1, 2).reshape(b, -1, hs, ws)
            summed = summed + F.interpolate(pseudo, size=(height, width), mode="bilinear", align_corners=False)
        return self.encoder(summed)
