"""Loading open_clip models and reading their vision tokens, shared by every CLIP-based method.

Architectures are open_clip names (``ViT-L-14-336``) or the small configs kept in
``methods/model_configs`` (``scrapbench-vit-tiny`` for tests, ``scrapbench-vit-small`` for CPU runs).
Weights are an open_clip pretrained tag (``openai``), a checkpoint path, or ``None`` for random
initialisation. A tag is looked up in the local caches first and downloaded only with a bounded
timeout, so an offline machine gets a :class:`WeightsError` naming the file instead of a hang.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

from scrapbench.environment import restored_environ
from scrapbench.method import WeightsError

MODEL_CONFIG_DIR = Path(__file__).parent / "model_configs"
open_clip.add_model_config(MODEL_CONFIG_DIR)

_DOWNLOAD_TIMEOUT_S = "15"


@dataclass
class LoadedClip:
    """An open_clip model with its tokenizer and where its weights came from."""

    model: open_clip.CLIP
    tokenizer: Any
    image_size: int
    weights_info: dict[str, Any]

    @property
    def visual(self) -> torch.nn.Module:
        return self.model.visual

    @property
    def patch_size(self) -> int:
        return int(self.model.visual.patch_size[0])

    @property
    def grid_size(self) -> int:
        return self.image_size // self.patch_size

    @property
    def num_layers(self) -> int:
        return len(self.model.visual.transformer.resblocks)


def _looks_like_path(value: str) -> bool:
    return os.sep in value or value.endswith((".pt", ".pth", ".bin", ".safetensors", ".ckpt"))


@contextmanager
def _bounded_downloads():
    """Make huggingface_hub give up quickly when the network is missing (it honours these)."""
    with restored_environ("HF_HUB_DOWNLOAD_TIMEOUT", "HF_HUB_ETAG_TIMEOUT"):
        os.environ["HF_HUB_DOWNLOAD_TIMEOUT"] = _DOWNLOAD_TIMEOUT_S
        os.environ["HF_HUB_ETAG_TIMEOUT"] = _DOWNLOAD_TIMEOUT_S
        yield


def _cached_checkpoint(cfg: dict, cache_dir: str | None) -> str | None:
    """A checkpoint already in the Hugging Face cache or open_clip's URL cache, if any."""
    if cfg.get("hf_hub"):
        from huggingface_hub import try_to_load_from_cache

        repo_id, filename = os.path.split(cfg["hf_hub"])
        for name in ([filename] if filename else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]):
            cached = try_to_load_from_cache(repo_id, name, cache_dir=cache_dir)
            if isinstance(cached, str):
                return cached
    if cfg.get("url"):
        candidate = Path(cache_dir or Path.home() / ".cache" / "clip") / os.path.basename(cfg["url"])
        if candidate.is_file():
            return str(candidate)
    return None


def _reachable(host: str, timeout_s: float = 3.0) -> bool:
    """One quick TCP connect, so an offline machine fails in seconds (the hub client retries for ~1 min)."""
    if not host:
        return False
    try:
        with socket.create_connection((host, 443), timeout=timeout_s):
            return True
    except OSError:
        return False


class _DropRandomInitWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "No pretrained weights loaded" not in record.getMessage()


@contextmanager
def _quiet_random_init_warning():
    """open_clip logs a warning on every random init; ours is deliberate and recorded in weights_info."""
    root = logging.getLogger()
    quiet = _DropRandomInitWarning()
    root.addFilter(quiet)
    try:
        yield
    finally:
        root.removeFilter(quiet)


def resolve_clip_weights(model_name: str, pretrained: str | None, cache_dir: str | None = None) -> str | None:
    """Turn a tag or path into a local checkpoint file (``None`` = random init) or raise WeightsError."""
    if not pretrained or pretrained == "random":
        return None
    if Path(pretrained).is_file():
        return pretrained
    if _looks_like_path(pretrained):
        raise WeightsError(
            f"CLIP checkpoint {pretrained!r} not found. Put the open_clip checkpoint of {model_name} there "
            f"or point `clip_pretrained` (or --weights) at it."
        )
    cfg = open_clip.get_pretrained_cfg(model_name, pretrained)
    if not cfg:
        tags = open_clip.list_pretrained_tags_by_model(model_name)
        raise WeightsError(f"{model_name} has no pretrained tag {pretrained!r}; open_clip knows {tags}")
    source = cfg.get("hf_hub") or cfg.get("url", "")
    hint = (
        f"CLIP weights {model_name}/{pretrained} ({source}) are not in the local cache and could not be "
        f"downloaded. On a machine with internet run `python -c \"import open_clip; "
        f"open_clip.create_model('{model_name}', pretrained='{pretrained}')\"` to fill the Hugging Face "
        f"cache (HF_HOME), or download the checkpoint file and pass its path as `clip_pretrained` / --weights."
    )
    cached = _cached_checkpoint(cfg, cache_dir)
    if cached:
        return cached
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        raise WeightsError(hint + " (HF_HUB_OFFLINE=1 is set)")
    host = "huggingface.co" if cfg.get("hf_hub") else urlparse(cfg.get("url", "")).hostname or ""
    if not _reachable(host):
        raise WeightsError(hint + f" ({host} is unreachable from this machine)")
    try:
        with _bounded_downloads():
            return open_clip.download_pretrained(cfg, cache_dir=cache_dir)
    except Exception as exc:  # any network/cache failure becomes one clear message
        raise WeightsError(f"{hint} Cause: {type(exc).__name__}: {exc}") from exc


def load_clip(
    model_name: str, pretrained: str | None, image_size: int, device: str | torch.device = "cpu",
    init_seed: int = 0,
) -> LoadedClip:
    """Build ``model_name`` at input ``image_size`` (position embeddings interpolated) with weights.

    Random initialisation draws from ``init_seed`` on a forked RNG: a random-init model is the same
    in every run (methods are built before the run seeds torch) and building one leaves the global
    RNG untouched.
    """
    if model_name not in open_clip.list_models():
        raise ValueError(f"unknown CLIP architecture {model_name!r}; open_clip knows {open_clip.list_models()[:8]}…")
    checkpoint = resolve_clip_weights(model_name, pretrained)
    with torch.random.fork_rng(devices=[]), _quiet_random_init_warning():
        torch.manual_seed(init_seed)
        model = open_clip.create_model(
            model_name,
            pretrained=checkpoint,
            force_image_size=image_size,
            device=device,
            weights_only=False,
        )
    model.eval()
    info = {"random_init": checkpoint is None, "clip_model": model_name, "clip_pretrained": pretrained,
            "checkpoint": checkpoint}
    if checkpoint is None:
        info["init_seed"] = init_seed
    return LoadedClip(model, open_clip.get_tokenizer(model_name), image_size, info)


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
