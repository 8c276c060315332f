"""Reading the vision tokens of open_clip models, shared by every CLIP-based method.

Loading a model with its weights (tags, files, QuickGELU, checks) lives in ``clip_weights.py``;
``load_clip`` and ``LoadedClip`` are re-exported here for the methods that import them from here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from PIL import Image

from scrapbench.methods.clip_weights import (  # noqa: F401 - re-exported
    MODEL_CONFIG_DIR,
    LoadedClip,
    load_clip,
    resolve_clip_weights,
)

RESIZE_MODES = ("pil", "antialias")


def preprocess_images(
    images: Sequence[np.ndarray], image_size: int, device: str | torch.device, resize: str = "pil"
) -> torch.Tensor:
    """uint8 H×W×3 images → normalised float tensor B×3×S×S (square resize, CLIP mean/std).

    ``resize`` picks the reference pipeline whose pixels the model should see:

    - ``"pil"``: PIL's bicubic resize of the uint8 image, rounded back to uint8. This is what a
      torchvision ``Resize`` does to a PIL image, i.e. OpenAI's / open_clip's CLIP transforms and
      AnomalyCLIP's released train and test transforms. PIL is used itself, not imitated: its
      antialiasing filter and rounding are the reference.
    - ``"antialias"``: torchvision's antialiased bicubic resize of the float image in [0, 1],
      not clamped (anomalib's WinCLIP pre-processor: ``Resize(..., antialias=True)`` on float tensors).
    """
    if resize not in RESIZE_MODES:
        raise ValueError(f"resize must be one of {RESIZE_MODES}, got {resize!r}")
    for index, image in enumerate(images):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"image {index}: expected uint8 H×W×3, got {image.dtype} {image.shape}")
    size = (image_size, image_size)
    if resize == "pil":
        arrays = [img if img.shape[:2] == size else np.array(Image.fromarray(img).resize(size, Image.BICUBIC))
                  for img in images]
        batch = torch.stack([torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1) for a in arrays])
        batch = batch.to(device=device, dtype=torch.float32) / 255.0
    else:
        scaled = [torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).to(device=device, dtype=torch.float32)
                  / 255.0 for img in images]
        batch = torch.stack([s if s.shape[-2:] == size else
                             TF.resize(s, list(size), interpolation=TF.InterpolationMode.BICUBIC, antialias=True)
                             for s in scaled])
    mean = torch.tensor(OPENAI_DATASET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(OPENAI_DATASET_STD, device=device).view(1, 3, 1, 1)
    return (batch - mean) / std


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
