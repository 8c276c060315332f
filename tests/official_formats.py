"""Tiny checkpoint files in the containers and key layouts of the official weights the paper preset names.

Each writer states the layout it imitates. Sizes are tiny; what is exact is the container (TorchScript
archive, torch zip, legacy torch pickle, safetensors, Hugging Face cache entry), the key names and
the dtypes. Files too large to imitate at full size keep their full shapes with one-element storages
(``expand``), which ``torch.save`` writes as they are.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import open_clip
import torch
from torch import nn

# A CLIP in OpenAI's proportions (64-wide heads), small enough for a test: 32 px input, 8 px patches.
TINY_OPENAI_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 2},
}
TINY_OPENAI_NAME = "scrapbench-test-openai"


def register_tiny_openai_config(folder: Path) -> str:
    """Register the tiny config with open_clip as open_clip ships OpenAI's: ``<name>`` (GELU, like
    ``ViT-L-14-336``) and ``<name>-quickgelu``. Returns the plain name."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{TINY_OPENAI_NAME}.json").write_text(json.dumps(TINY_OPENAI_CLIP))
    (folder / f"{TINY_OPENAI_NAME}-quickgelu.json").write_text(json.dumps({**TINY_OPENAI_CLIP, "quick_gelu": True}))
    open_clip.add_model_config(folder)
    return TINY_OPENAI_NAME


def tiny_openai_clip(seed: int = 0) -> open_clip.CLIP:
    """The tiny CLIP with QuickGELU, random weights from ``seed``."""
    torch.manual_seed(seed)
    return open_clip.model.CLIP(**TINY_OPENAI_CLIP, quick_gelu=True).eval()


class _OpenAIMultimodal(nn.Module):
    """The attribute layout of OpenAI's released CLIP modules, with their three integer buffers."""

    def __init__(self, clip: open_clip.CLIP) -> None:
        super().__init__()
        self.visual, self.transformer = clip.visual, clip.transformer
        self.token_embedding, self.ln_final = clip.token_embedding, clip.ln_final
        self.positional_embedding, self.text_projection = clip.positional_embedding, clip.text_projection
        self.logit_scale = clip.logit_scale
        self.causal_mask = clip.attn_mask.clone()  # a plain attribute: traced into the graph as a constant
        image_size = clip.visual.image_size[0]
        self.register_buffer("input_resolution", torch.tensor(image_size))
        self.register_buffer("context_length", torch.tensor(clip.context_length))
        self.register_buffer("vocab_size", torch.tensor(clip.vocab_size))

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.token_embedding(text) + self.positional_embedding
        x = self.ln_final(self.transformer(x, attn_mask=self.causal_mask))
        return self.visual(image), x[torch.arange(x.shape[0]), text.argmax(dim=-1)] @ self.text_projection


def write_openai_torchscript(path: Path, clip: open_clip.CLIP) -> dict[str, torch.Tensor]:
    """OpenAI's ``ViT-L-14-336px.pt`` container: a traced TorchScript archive, fp16, with
    ``input_resolution`` / ``context_length`` / ``vocab_size`` among its state-dict keys. Returns that state dict."""
    wrapper = _OpenAIMultimodal(clip).eval()
    size = clip.visual.image_size[0]
    example = (torch.randn(1, 3, size, size), torch.randint(0, clip.vocab_size, (1, clip.context_length)))
    traced = torch.jit.trace(wrapper, example, check_trace=False).half()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.jit.save(traced, str(path))
    return {k: v.clone() for k, v in traced.state_dict().items()}


def open_clip_state(clip: nn.Module, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    return {k: v.to(dtype) if v.is_floating_point() else v for k, v in clip.state_dict().items()}


def write_open_clip_release(path: Path, clip: nn.Module) -> None:
    """open_clip's GitHub release files (``vit_b_16_plus_240-laion400m_e31-8fb26589.pt``): a training
    checkpoint of its ``main.py``, ``{"epoch", "name", "state_dict"}`` with DistributedDataParallel's
    ``module.`` prefix on every key."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"epoch": 31, "name": "laion400m", "state_dict": {f"module.{k}": v for k, v in
                                                                 clip.state_dict().items()}}, path)


def write_hf_cache_entry(cache: Path, repo_id: str, filename: str, payload: bytes,
                         config: dict | None = None) -> Path:
    """A file in the Hugging Face cache layout: ``snapshots/<rev>/<file>`` → ``blobs/<sha256>`` (an LFS
    file's etag is its SHA-256), ``refs/main`` naming the revision; ``open_clip_config.json`` beside it
    as open_clip's repositories ship it."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    revision = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(revision)
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True, exist_ok=True)
    entries = {filename: payload}
    if config is not None:
        entries["open_clip_config.json"] = json.dumps(config).encode()
    for name, data in entries.items():
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = snapshot / name
        link.unlink(missing_ok=True)
        link.symlink_to(Path("../../blobs") / blob.name)
    return snapshot / filename


def shrunk(state: dict[str, torch.Tensor], seed: int = 0) -> dict[str, torch.Tensor]:
    """Full shapes, tiny storages: each tensor is one random row expanded over its leading dimensions.

    Scaled so that deep networks stay finite: weights by ``1/sqrt(fan_in)``, 1-d scales and batch-norm
    variances in [0.5, 1.5], biases and means near 0.
    """
    generator = torch.Generator().manual_seed(seed)
    out = {}
    for key, value in state.items():
        if not value.is_floating_point() or value.dim() == 0:
            out[key] = value.clone()
            continue
        row = torch.rand(value.shape[-1], generator=generator, dtype=torch.float64)
        if key.endswith("running_var") or (value.dim() == 1 and key.endswith("weight")):
            row = 0.5 + row
        elif value.dim() == 1:
            row = (row - 0.5) * 0.02
        else:
            row = (row - 0.5) * 2 * (3 * value.shape[0] / value.numel()) ** 0.5
        out[key] = row.to(value.dtype).expand(value.shape)
    return out


def module_signature(model: nn.Module) -> list[tuple]:
    """Every submodule's name, class and plain hyperparameters (widths, heads, eps, activation…).

    Two models with equal signatures and equal state-dict shapes compute the same function of the
    same weights, up to code inside ``forward``, which is the same class's.
    """
    out = []
    ignored = {"training", "image_mean", "image_std"}  # open_clip's preprocessing notes, not the computation
    for name, module in model.named_modules():
        plain = {k: v for k, v in vars(module).items()
                 if not k.startswith("_") and k not in ignored and isinstance(v, (bool, int, float, str, tuple))}
        out.append((name, type(module).__module__, type(module).__qualname__, sorted(plain.items())))
    return out
