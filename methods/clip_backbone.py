"""Reading the vision tokens of open_clip models, shared by every CLIP-based method.

Loading a model with its weights (tags, files, QuickGELU, checks) lives in ``clip_weights.py``;
``load_clip`` and ``LoadedClip`` are re-exported here for the methods that import them from here.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

from scrapbench.methods.clip_weights import (  # noqa: F401 - re-exported
    MODEL_CONFIG_DIR,
    LoadedClip,
    load_clip,
    resolve_clip_weights,
)


def preprocess_images(images: Sequence[np.ndarray], image_size: int, device: str | torch.device) -> torch.Tensor:
    """uint8 H×W×3 images → normalised float tensor B×3×S×S (bicubic resize, CLIP mean/std)."""
    batch = torch.stack([torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1) for img in images])
    batch = batch.to(device=device, dtype=torch.float32) / 255.0
    if batch.shape[-2:] != (image_size, image_size):
        batch = F.interpolate(batch, size=(image_size, image_size), mode="bicubic", align_corners=False)
        batch = batch.clamp(0.0, 1.0)
    mean = torch.tensor(OPENAI_DATASET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(OPENAI_DATASET_STD, device=device).view(1, 3, 1, 1)
    return (batch - mean) / std


def embed_patches(visual: torch.nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    """Token sequence entering the first block: [CLS, patches...] + positions, after ln_pre."""
    x = visual.conv1(pixels).flatten(2).transpose(1, 2)
    cls = visual.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
    x = torch.cat([cls, x], dim=1) + visual.positional_embedding.to(x.dtype)
    return visual.ln_pre(x)


def project_tokens(visual: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """Map block outputs into the joint image-text space (ln_post, then the projection)."""
    tokens = visual.ln_post(tokens)
    return tokens @ visual.proj if visual.proj is not None else tokens


def layer_tokens(
    visual: torch.nn.Module, pixels: torch.Tensor, layers: Sequence[int]
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Raw tokens (B×(1+N)×width) after each 1-based block index in ``layers``, and the final tokens."""
    wanted = set(layers)
    if not wanted or max(wanted) > len(visual.transformer.resblocks) or min(wanted) < 1:
        raise ValueError(f"layers {tuple(layers)} outside 1..{len(visual.transformer.resblocks)}")
    x = embed_patches(visual, pixels)
    taken: dict[int, torch.Tensor] = {}
    for index, block in enumerate(visual.transformer.resblocks, start=1):
        x = block(x)
        if index in wanted:
            taken[index] = x
    return [taken[i] for i in layers], x


def encode_text(loaded: LoadedClip, prompts: Sequence[str], device: str | torch.device) -> torch.Tensor:
    """L2-normalised text embeddings of plain prompts (frozen text tower)."""
    tokens = loaded.tokenizer(list(prompts)).to(device)
    features = loaded.model.encode_text(tokens)
    return F.normalize(features, dim=-1)


def stage_layers(num_layers: int, stages: int = 4) -> tuple[int, ...]:
    """Evenly spaced block indices, e.g. 24 blocks → (6, 12, 18, 24) as in the paper."""
    if num_layers % stages:
        raise ValueError(f"{num_layers} blocks do not split into {stages} equal stages")
    step = num_layers // stages
    return tuple(step * (i + 1) for i in range(stages))


def upsample_maps(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """B×C×h×w score maps → B×C×H×W (bilinear), the usual patch-grid to pixel step."""
    return F.interpolate(maps, size=size, mode="bilinear", align_corners=False)
