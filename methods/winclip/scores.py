"""WinCLIP's window embeddings and score maps (Jeong et al., CVPR 2023), on any open_clip ViT.

Window embeddings: for each window of ``s × s`` patches (stride 1 over the patch grid) the ViT runs
on the CLS token plus only the tokens inside the window (token masking; positions stay those of the
full image), and the CLS output, projected into the joint space, is the window's embedding.

- Zero-shot map (language-guided): each window gets ``P(anomalous | window)`` from the two prompt
  ensembles; per scale, every patch takes the harmonic mean of the windows covering it; the small,
  mid and whole-image maps are then combined by a harmonic mean.
- Image score: the whole image's ``P(anomalous)``; WinCLIP+ averages it with the few-shot map's
  maximum.
- Few-shot map (WinCLIP+): each window / patch feature gets ``min over the memory of (1 − cos) / 2``
  against the k reference images (same scale, same layer); windows are aggregated per patch by
  harmonic mean as above, and the window and patch maps are averaged. WinCLIP+ reports
  ``(zero-shot + few-shot) / 2``.

anomalib's functions are reused for window masks, harmonic aggregation, softmax class scores and
the association score; its ``WinClipModel`` is not, because it hard-codes backbone and weights.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from scrapbench.methods.common.clip_backbone import (
    embed_patches,
    layer_tokens,
    project_tokens,
    run_block,
    run_block_first_token,
)

with warnings.catch_warnings():
    # Importing anything under anomalib.models loads all its models; some of them warn about
    # their own deprecated modules, which says nothing about the functions used here.
    warnings.simplefilter("ignore", FutureWarning)
    from anomalib.models.image.winclip.prompting import TEMPLATES
    from anomalib.models.image.winclip.utils import (
        class_scores,
        harmonic_aggregation,
        make_masks,
        visual_association_score,
    )

# anomalib's list as it is: it repeats "a jpeg corrupted photo of the {}.", so that template weighs twice in
# the ensemble mean. Kept for identical text features; docs/fidelity.md gives the effect of dropping it.
WINCLIP_TEMPLATES: tuple[str, ...] = tuple(TEMPLATES)


@dataclass
class Encoding:
    """What WinCLIP reads from a batch of B images (all L2-normalised on the last dimension).

    ``image``: B×D whole-image embeddings; ``windows``: per scale B×M_s×D window embeddings;
    ``patches``: per memory layer B×N×width patch tokens (the few-shot memory's features).
    """

    image: torch.Tensor
    windows: list[torch.Tensor]
    patches: list[torch.Tensor]

    def to(self, device: str | torch.device) -> Encoding:
        return Encoding(self.image.to(device), [w.to(device) for w in self.windows],
                        [p.to(device) for p in self.patches])


def window_masks(grid_size: int, scales: Sequence[int], stride: int = 1) -> list[torch.Tensor]:
    """Per scale, the patch indices of every window (``s² × M_s``, anomalib's layout).

    Raises ValueError when a scale does not fit the grid or a stride leaves patches uncovered
    (those patches would silently get a zero score).
    """
    masks = []
    for scale in scales:
        if not 1 <= scale <= grid_size:
            raise ValueError(f"window scale {scale} does not fit the {grid_size}×{grid_size} patch grid")
        mask = make_masks((grid_size, grid_size), scale, stride)
        if torch.unique(mask).numel() != grid_size * grid_size:
            raise ValueError(f"window scale {scale} with stride {stride} leaves patches of the "
                             f"{grid_size}×{grid_size} grid uncovered; use a stride dividing {grid_size - scale}")
        masks.append(mask.long())
    return masks


def window_embeddings(visual: torch.nn.Module, tokens: torch.Tensor, mask: torch.Tensor, chunk: int) -> torch.Tensor:
    """B×M×D embeddings of the windows in ``mask`` (s²×M) from first-block tokens B×(1+N)×width.

    All windows of all B images run as one batch of (B·M) short sequences (``chunk`` at a time),
    not image by image or window by window. Only the class token's output is kept, so the last
    block computes only what that token needs (``run_block_first_token``).
    """
    batch, windows = tokens.shape[0], mask.shape[1]
    # Row m: the CLS token (index 0) then the window's patches (+1: CLS comes first in ``tokens``).
    index = torch.cat([torch.zeros(1, windows, dtype=torch.long, device=mask.device), mask + 1]).T
    sequences = tokens[:, index].flatten(0, 1)  # (B·M)×(1+s²)×width
    *blocks, last = visual.transformer.resblocks
    pooled = []
    for part in sequences.split(chunk):
        for block in blocks:
            part = run_block(block, part)
        pooled.append(project_tokens(visual, run_block_first_token(last, part)[:, 0]))
    return F.normalize(torch.cat(pooled).view(batch, windows, -1).float(), dim=-1)


def encode(
    visual: torch.nn.Module, pixels: torch.Tensor, masks: Sequence[torch.Tensor], memory_layers: Sequence[int],
    window_chunk: int = 2048, memory_ln_post: bool = True,
) -> Encoding:
    """Whole-image, window and patch features of preprocessed ``pixels`` (B×3×S×S), float32 (the
    networks run in the caller's autocast precision).

    Memory patch tokens pass the vision tower's ``ln_post`` when ``memory_ln_post`` (anomalib's
    patch embeddings: the last block's tokens after ``ln_post``, not projected).
    """
    layers = list(dict.fromkeys(memory_layers))
    taken, final = layer_tokens(visual, pixels, layers or [len(visual.transformer.resblocks)])
    by_layer = dict(zip(layers, taken, strict=False))
    image = F.normalize(project_tokens(visual, final[:, 0]).float(), dim=-1)
    first = embed_patches(visual, pixels)
    windows = [window_embeddings(visual, first, mask, window_chunk) for mask in masks]
    post = visual.ln_post if memory_ln_post else torch.nn.Identity()
    patches = [F.normalize(post(by_layer[layer][:, 1:]).float(), dim=-1) for layer in memory_layers]
    return Encoding(image, windows, patches)


def harmonic_mean(maps: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """Harmonic mean along ``dim``; a zero anywhere gives zero (as WinCLIP's aggregation does)."""
    return (maps.shape[dim] / (1.0 / maps).sum(dim=dim)).nan_to_num(nan=0.0, posinf=0.0)


def zero_shot_map(
    encoding: Encoding, text: torch.Tensor, masks: Sequence[torch.Tensor], grid_size: int, temperature: float
) -> torch.Tensor:
    """Language-guided anomaly map B×g×g: P(anomalous) of windows and image, harmonic over scales.

    ``text`` is 2×D: the normal then the anomalous ensemble embedding.
    """
    grid = (grid_size, grid_size)
    image = class_scores(encoding.image, text, temperature, target_class=1)
    maps = [image.view(-1, 1, 1).expand(-1, *grid)]
    for windows, mask in zip(encoding.windows, masks, strict=True):
        scores = class_scores(windows, text, temperature, target_class=1)
        maps.append(harmonic_aggregation(scores, grid, mask))
    return harmonic_mean(torch.stack(maps))


def image_zero_shot_score(encoding: Encoding, text: torch.Tensor, temperature: float) -> torch.Tensor:
    """P(anomalous) of each whole image's class-token embedding [B] (WinCLIP's zero-shot image score)."""
    return class_scores(encoding.image, text, temperature, target_class=1)


def _association(features: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
    """min over the memory of (1 − cos) / 2, per feature: B×M from B×M×D and K×M×D.

    Image by image: anomalib's function tiles the whole memory once per batch element.
    Clamped at 0: rounding can make 1 − cos of identical vectors slightly negative.
    """
    return torch.cat([visual_association_score(f[None], memory) for f in features]).clamp_min(0.0)


def few_shot_map(
    encoding: Encoding, memory: Encoding, masks: Sequence[torch.Tensor], grid_size: int
) -> torch.Tensor:
    """Reference-association map B×g×g: windows (harmonic per scale) and patches, averaged."""
    grid = (grid_size, grid_size)
    maps = [harmonic_aggregation(_association(windows, reference), grid, mask)
            for windows, reference, mask in zip(encoding.windows, memory.windows, masks, strict=True)]
    maps += [_association(patches, reference).view(-1, *grid)
             for patches, reference in zip(encoding.patches, memory.patches, strict=True)]
    return torch.stack(maps).mean(dim=0)
