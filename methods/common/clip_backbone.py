"""Reading the vision tokens of open_clip models, shared by every CLIP-based method.

Loading a model with its weights (tags, files, QuickGELU, checks) lives in
:mod:`scrapbench.methods.common.clip_weights`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Literal

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from PIL import Image
from torch import nn

from scrapbench.methods.common.clip_weights import LoadedClip, load_clip
from scrapbench.methods.common.map_ops import indices_by_size

#: How images reach the model's input size (the official pipelines, plus a device-side stand-in for PIL):
#: see :func:`preprocess_images`.
RESIZE_MODES = ("pil", "antialias", "pil_like")
#: The modes a method's config may choose (its ``input_resize``).
InputResize = Literal["pil", "pil_like"]

# PIL's resampling releases the GIL, so a few threads resize a batch in parallel. Threads, not
# processes: the images are already in memory, and a thread pool costs nothing when idle.
_RESIZE_THREADS = max(1, min(8, os.cpu_count() or 1))
_resize_pool: ThreadPoolExecutor | None = None


def pil_resize(image: np.ndarray, image_size: int) -> np.ndarray:
    """PIL's bicubic resize of a uint8 H×W×3 image to S×S, uint8 (unchanged when already S×S)."""
    if image.shape[:2] == (image_size, image_size):
        return image
    return np.asarray(Image.fromarray(image).resize((image_size, image_size), Image.BICUBIC))


def pil_resize_all(images: Sequence[np.ndarray], image_size: int) -> list[np.ndarray]:
    """:func:`pil_resize` of every image, in a thread pool when several need resizing."""
    global _resize_pool
    todo = sum(image.shape[:2] != (image_size, image_size) for image in images)
    if todo < 2 or _RESIZE_THREADS == 1:
        return [pil_resize(image, image_size) for image in images]
    if _resize_pool is None:
        _resize_pool = ThreadPoolExecutor(_RESIZE_THREADS, thread_name_prefix="scrapbench-resize")
    return list(_resize_pool.map(pil_resize, images, [image_size] * len(images)))


def uint8_batch(arrays: Sequence[np.ndarray], device: str | torch.device) -> torch.Tensor:
    """Equal-sized uint8 H×W×3 arrays → a B×3×H×W uint8 tensor on ``device``.

    uint8 crosses to the device (a quarter of float32's bytes), from pinned memory on CUDA so the
    copy does not block.
    """
    batch = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)
    if torch.device(device).type == "cuda" and torch.cuda.is_available():
        return batch.contiguous().pin_memory().to(device, non_blocking=True)
    return batch.to(device)


def normalise_pixels(batch: torch.Tensor) -> torch.Tensor:
    """uint8 (0..255) or unit float (0..1) B×3×S×S on any device → CLIP-normalised float32."""
    if batch.dtype == torch.uint8:
        batch = batch.to(torch.float32) / 255.0
    mean = torch.tensor(OPENAI_DATASET_MEAN, device=batch.device).view(1, 3, 1, 1)
    std = torch.tensor(OPENAI_DATASET_STD, device=batch.device).view(1, 3, 1, 1)
    return (batch - mean) / std


def resize_on_device(batch: torch.Tensor, image_size: int, mode: str) -> torch.Tensor:
    """Batched torchvision antialiased bicubic resize of B×3×H×W uint8 images on their device.

    ``"antialias"``: of the float image in [0, 1], not clamped (anomalib's WinCLIP pre-processor),
    returned as float. ``"pil_like"``: of the uint8 image, rounded and clamped back to uint8, as PIL's
    resize returns it (within a grey level of ``"pil"``; not bit-identical to it).
    """
    size = [image_size, image_size]
    mode_ = TF.InterpolationMode.BICUBIC
    if mode == "antialias":
        unit = batch.to(torch.float32) / 255.0
        return unit if tuple(unit.shape[-2:]) == tuple(size) else TF.resize(unit, size, interpolation=mode_,
                                                                             antialias=True)
    if mode != "pil_like":
        raise ValueError(f"no device-side resize {mode!r}")
    if tuple(batch.shape[-2:]) == tuple(size):
        return batch
    if batch.device.type == "cpu":  # torchvision has an exact uint8 kernel on the CPU
        return TF.resize(batch, size, interpolation=mode_, antialias=True)
    resized = TF.resize(batch.to(torch.float32), size, interpolation=mode_, antialias=True)
    return resized.round_().clamp_(0, 255).to(torch.uint8)


def preprocess_images(
    images: Sequence[np.ndarray], image_size: int, device: str | torch.device, resize: str = "pil"
) -> torch.Tensor:
    """uint8 H×W×3 images → normalised float tensor B×3×S×S on ``device`` (square resize, CLIP mean/std).

    ``resize`` picks the reference pipeline whose pixels the model should see:

    - ``"pil"``: PIL's bicubic resize of the uint8 image, rounded back to uint8. This is what a
      torchvision ``Resize`` does to a PIL image, i.e. OpenAI's / open_clip's CLIP transforms and
      AnomalyCLIP's released train and test transforms. PIL is used itself, not imitated: its
      antialiasing filter and rounding are the reference. It runs on the CPU (a thread pool);
      the uint8 result goes to the device, which converts and normalises it.
    - ``"antialias"``: torchvision's antialiased bicubic resize of the float image in [0, 1],
      not clamped (anomalib's WinCLIP pre-processor: ``Resize(..., antialias=True)`` on float tensors).
      Runs on the device, batched over images of equal size.
    - ``"pil_like"``: not an official pipeline. torchvision's antialiased bicubic resize of the
      uint8 image on the device, rounded to uint8: the same filter as PIL, within one grey level of
      ``"pil"`` (docs/fidelity.md), for a GPU fed by few CPU cores.
    """
    if resize not in RESIZE_MODES:
        raise ValueError(f"resize must be one of {RESIZE_MODES}, got {resize!r}")
    for index, image in enumerate(images):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"image {index}: expected uint8 H×W×3, got {image.dtype} {image.shape}")
    if resize == "pil":
        return normalise_pixels(uint8_batch(pil_resize_all(images, image_size), device))
    # Device-side resizes: one batch per input size (a benchmark's images mostly share one).
    groups = indices_by_size(image.shape for image in images)
    rows: list[torch.Tensor | None] = [None] * len(images)
    for indices in groups.values():
        resized = resize_on_device(uint8_batch([images[i] for i in indices], device), image_size, resize)
        pixels = normalise_pixels(resized)
        if len(groups) == 1:
            return pixels
        for position, index in enumerate(indices):
            rows[index] = pixels[position]
    return torch.stack(rows)  # type: ignore[arg-type]


def resize_masks(masks: Sequence[np.ndarray], image_size: int, device: str | torch.device = "cpu") -> torch.Tensor:
    """Class-index masks H×W → B×S×S (int64) the way AnomalyCLIP resizes its ground truth.

    AnomalyCLIP resizes the 0/255 mask with PIL's bilinear filter and keeps pixels above 0.5. With
    several classes each class's 0/255 indicator is resized so, and a pixel takes the class whose
    value is highest if that value passes 0.5 (ties: the lower class index). A binary mask gets
    exactly AnomalyCLIP's result. Nearest-neighbour resizing instead drops thin parts when shrinking.
    """
    size = (image_size, image_size)
    out = []
    for mask in masks:
        mask = np.asarray(mask)
        if mask.shape == size:
            out.append(torch.from_numpy(mask.astype(np.int64)))
            continue
        classes = [int(c) for c in np.unique(mask) if c > 0]
        if not classes:
            out.append(torch.zeros(size, dtype=torch.int64))
            continue
        indicators = [Image.fromarray(((mask == c) * 255).astype(np.uint8)) for c in classes]
        values = np.stack([np.asarray(image.resize(size, Image.BILINEAR)) for image in indicators])
        best = values.argmax(axis=0)
        labels = np.asarray(classes, np.int64)[best]
        # ToTensor() / 255 > 0.5 in AnomalyCLIP, i.e. a uint8 value of at least 128.
        out.append(torch.from_numpy(np.where(values.max(axis=0) >= 128, labels, 0)))
    return torch.stack(out).to(device)


def embed_patches(visual: torch.nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    """Token sequence entering the first block: [CLS, patches...] + positions, after ln_pre."""
    x = visual.conv1(pixels).flatten(2).transpose(1, 2)
    cls = visual.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
    x = torch.cat([cls, x], dim=1) + visual.positional_embedding.to(x.dtype)
    return visual.ln_pre(x)


POSITION_MODES = ("bilinear", "bicubic")


def interpolate_positions(loaded: LoadedClip, image_size: int, mode: str = "bilinear") -> LoadedClip:
    """Resample the vision tower's patch position embeddings for input ``image_size`` (in place).

    ``"bilinear"`` (no antialiasing, ``align_corners=False``) is what AnomalyCLIP's released code
    does on its first forward at a new size (ViT-L/14@336 → 518: a 24×24 grid becomes 37×37).
    ``"bicubic"`` with antialiasing is what open_clip does when it loads a checkpoint at another
    size. The class position is kept. Returns ``loaded`` with ``image_size`` updated.
    """
    if mode not in POSITION_MODES:
        raise ValueError(f"position interpolation must be one of {POSITION_MODES}, got {mode!r}")
    visual = loaded.visual
    grid = image_size // loaded.patch_size
    positions = visual.positional_embedding
    old = round((positions.shape[0] - 1) ** 0.5)
    if old * old + 1 != positions.shape[0]:
        raise ValueError(f"{positions.shape[0]} position embeddings are not a class token plus a square grid")
    if grid != old:
        patches = positions[1:].detach().reshape(1, old, old, -1).permute(0, 3, 1, 2)
        patches = F.interpolate(patches, size=(grid, grid), mode=mode, align_corners=False,
                                antialias=mode == "bicubic")
        patches = patches.permute(0, 2, 3, 1).reshape(grid * grid, -1)
        new = torch.cat([positions[:1].detach(), patches.to(positions.dtype)])
        visual.positional_embedding = torch.nn.Parameter(new, requires_grad=positions.requires_grad)
    # open_clip reads these for its own forward and pooling helpers.
    visual.grid_size = (grid, grid)
    visual.image_size = (image_size, image_size)
    return replace(loaded, image_size=image_size)


def native_image_size(model_name: str) -> int:
    """The input size an open_clip architecture is defined (and its checkpoints saved) at."""
    config = open_clip.get_model_config(model_name)
    if config is None:
        raise ValueError(f"unknown CLIP architecture {model_name!r}")
    size = config["vision_cfg"]["image_size"]
    return int(size if isinstance(size, int) else size[0])


def project_tokens(visual: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """Map block outputs into the joint image-text space (ln_post, then the projection)."""
    tokens = visual.ln_post(tokens)
    return tokens @ visual.proj if visual.proj is not None else tokens


def sdpa_ready(block: nn.Module) -> bool:
    """Whether :func:`run_block` may compute ``block`` itself: an open_clip ``ResidualAttentionBlock``
    with a packed, batch-first ``nn.MultiheadAttention`` and no cross-attention."""
    attn = getattr(block, "attn", None)
    return (isinstance(attn, nn.MultiheadAttention) and attn._qkv_same_embed_dim and attn.batch_first
            and not hasattr(block, "ln_1_kv")
            and all(hasattr(block, name) for name in ("ln_1", "ln_2", "mlp", "ls_1", "ls_2")))


def attention_heads(block: nn.Module, normed: torch.Tensor, queries: int | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q, k, v (each B×heads×N×head_dim) of ``block``'s attention on ``ln_1``-normalised tokens B×N×width.

    ``queries``: project queries for the first ``queries`` tokens only (keys and values for all).
    """
    attn = block.attn
    batch, length, width = normed.shape
    heads = attn.num_heads
    if queries is None:
        qkv = F.linear(normed, attn.in_proj_weight, attn.in_proj_bias)
        q, k, v = qkv.view(batch, length, 3, heads, width // heads).permute(2, 0, 3, 1, 4).unbind(0)
        return q, k, v
    bias = attn.in_proj_bias
    q = F.linear(normed[:, :queries], attn.in_proj_weight[:width], bias[:width] if bias is not None else None)
    kv = F.linear(normed, attn.in_proj_weight[width:], bias[width:] if bias is not None else None)
    k, v = kv.view(batch, length, 2, heads, width // heads).permute(2, 0, 3, 1, 4).unbind(0)
    return q.view(batch, queries, heads, width // heads).transpose(1, 2), k, v


def merge_heads(mixed: torch.Tensor) -> torch.Tensor:
    """B×heads×N×head_dim → B×N×width (the layout ``out_proj`` reads)."""
    batch, heads, length, dim = mixed.shape
    return mixed.transpose(1, 2).reshape(batch, length, heads * dim)


def finish_block(block: nn.Module, x: torch.Tensor, attended: torch.Tensor) -> torch.Tensor:
    """The rest of a residual block once its attention output (before ``out_proj``, merged) is known."""
    x = x + block.ls_1(block.attn.out_proj(attended))
    return x + block.ls_2(block.mlp(block.ln_2(x)))


def run_block(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``block(x)`` for an unmasked vision block, with the attention in ``scaled_dot_product_attention``.

    Why not ``block(x)``: in inference ``nn.MultiheadAttention`` takes its fused fast path, which on
    the CPU materialises every B×heads×N×N score matrix; ``scaled_dot_product_attention`` picks a
    flash kernel on CPU and GPU, which is faster and agrees with it to float32 rounding. Blocks of
    another kind run as they are.
    """
    if not sdpa_ready(block):
        return block(x)
    q, k, v = attention_heads(block, block.ln_1(x))
    return finish_block(block, x, merge_heads(F.scaled_dot_product_attention(q, k, v)))


def run_block_first_token(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``block(x)[:, :1]``, computing only what the first (class) token's output needs: its query,
    every token's key and value, and the rest of the block for that one token."""
    if not sdpa_ready(block):
        return block(x)[:, :1]
    query, key, value = attention_heads(block, block.ln_1(x), queries=1)
    return finish_block(block, x[:, :1], merge_heads(F.scaled_dot_product_attention(query, key, value)))


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
        x = run_block(block, x)
        if index in wanted:
            taken[index] = x
    return [taken[i] for i in layers], x


def stage_layers(num_layers: int, stages: int = 4) -> tuple[int, ...]:
    """Evenly spaced block indices, e.g. 24 blocks → (6, 12, 18, 24) as in the paper."""
    if num_layers % stages:
        raise ValueError(f"{num_layers} blocks do not split into {stages} equal stages")
    step = num_layers // stages
    return tuple(step * (i + 1) for i in range(stages))


def upsample_maps(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """B×C×h×w score maps → B×C×H×W (bilinear), the usual patch-grid to pixel step."""
    return F.interpolate(maps, size=size, mode="bilinear", align_corners=False)


def load_clip_resized(
    model_name: str, pretrained: str | None, image_size: int, device: str | torch.device = "cpu",
    init_seed: int = 0, positions: str = "bilinear",
) -> LoadedClip:
    """:func:`load_clip` at the architecture's own input size, then :func:`interpolate_positions`.

    Loading at the native size keeps the checkpoint's position grid as saved, so the resampling to
    ``image_size`` is ours (AnomalyCLIP's bilinear one) rather than open_clip's bicubic one.
    """
    native = native_image_size(model_name)
    loaded = load_clip(model_name, pretrained, native, device, init_seed=init_seed)
    return interpolate_positions(loaded, image_size, positions)
