"""open_clip models with their weights, built as the weights' publisher built them.

Architectures are open_clip names (``ViT-L-14-336-quickgelu``) or the small configs kept in
``methods/model_configs`` (``scrapbench-vit-tiny`` for tests, ``scrapbench-vit-small`` for CPU runs).
Weights are an open_clip pretrained tag (``openai``), a checkpoint file, or ``None`` for random
initialisation. A tag is looked up in the local caches first and downloaded only with a bounded
timeout, so an offline machine gets a :class:`WeightsError` naming the file instead of a hang.

The activation is part of the architecture: OpenAI trained its CLIPs with QuickGELU, and open_clip
names those architectures ``*-quickgelu``. Where the weights say which activation they were trained
with, that is used (open_clip itself only warns when a tag and a name disagree):

- a pretrained tag's config (``quick_gelu`` is set for OpenAI's and other QuickGELU tags);
- an OpenAI TorchScript archive, or a state dict in OpenAI's layout (QuickGELU);
- ``open_clip_config.json`` beside a checkpoint (as the Hugging Face repositories ship it).

A plain state dict says nothing, so the name decides: the paper's presets name
``ViT-L-14-336-quickgelu``. QuickGELU means open_clip's ``<name>-quickgelu`` model where it has
one, else its ``force_quick_gelu``; weights that need GELU under a QuickGELU name are refused.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import socket
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import open_clip
import torch
from open_clip.model import resize_pos_embed, resize_text_pos_embed

from scrapbench.core.method import WeightsError
from scrapbench.methods.common.checkpoints import (
    TORCHSCRIPT,
    WeightCheck,
    checkpoint_format,
    read_checkpoint,
    require_state_dict_fits,
)
from scrapbench.methods.common.checksums import (
    PublishedChecksum,
    checksum_from_url,
    checksum_verdict,
    file_digest,
    hugging_face_etag,
)
from scrapbench.run.provenance import restored_environ

MODEL_CONFIG_DIR = Path(__file__).parents[1] / "model_configs"
open_clip.add_model_config(MODEL_CONFIG_DIR)

_DOWNLOAD_TIMEOUT_S = "15"
# Keys of OpenAI's own state dicts (its TorchScript archives) that are not parameters of the model.
OPENAI_EXTRA_KEYS = ("input_resolution", "context_length", "vocab_size")


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


@dataclass(frozen=True)
class ClipWeights:
    """Where a CLIP's weights are and what they say about the architecture they need."""

    model_name: str
    pretrained: str | None
    path: Path | None = None  # None: random initialisation
    format: str | None = None
    quick_gelu: bool | None = None  # None: the weights do not say
    quick_gelu_source: str = ""
    published: PublishedChecksum | None = None
    binding: bool = False  # the file claims to be the published one (by tag or by its official name)


@dataclass(frozen=True)
class ClipArchitecture:
    """The open_clip model to build: its name, and whether open_clip must force QuickGELU onto it."""

    name: str
    quick_gelu: bool
    source: str  # why this activation
    force_quick_gelu: bool = False


class WeightsNotCached(WeightsError):
    """A pretrained tag whose file is in no local cache (``download=False`` was asked for)."""

    def __init__(self, message: str, host: str, expected: str) -> None:
        super().__init__(message)
        self.host, self.expected = host, expected


# -- resolving a tag or a file ----------------------------------------------------------------
def _looks_like_path(value: str) -> bool:
    return os.sep in value or value.endswith((".pt", ".pth", ".bin", ".safetensors", ".ckpt"))


def resolve_clip_weights(model_name: str, pretrained: str | None, cache_dir: str | None = None,
                         download: bool = True) -> ClipWeights:
    """Turn a tag or path into a local checkpoint with its architecture flags, or raise WeightsError."""
    if not pretrained or pretrained == "random":
        return ClipWeights(model_name, None)
    if Path(pretrained).is_file():
        return _file_weights(model_name, pretrained, Path(pretrained))
    if _looks_like_path(pretrained):
        raise WeightsError(
            f"CLIP checkpoint {pretrained!r} not found. Put the checkpoint of {model_name} there "
            f"or point `clip_pretrained` (or --weights) at it."
        )
    cfg = open_clip.get_pretrained_cfg(model_name, pretrained)
    if not cfg:
        tags = open_clip.list_pretrained_tags_by_model(model_name)
        raise WeightsError(f"{model_name} has no pretrained tag {pretrained!r}; open_clip knows {tags}")
    cached = _cached_checkpoint(cfg, cache_dir)
    if cached is None:
        cached = _download(model_name, pretrained, cfg, cache_dir, download)
    path = Path(cached)
    published = hugging_face_etag(path)
    if published is None and cfg.get("url") and path.name == os.path.basename(cfg["url"]):
        published = checksum_from_url(cfg["url"])
    return ClipWeights(model_name, pretrained, path, checkpoint_format(path), bool(cfg.get("quick_gelu", False)),
                       f"pretrained tag {pretrained!r}", published, binding=True)


def _file_weights(model_name: str, pretrained: str, path: Path) -> ClipWeights:
    """A checkpoint file: its format, what it says about QuickGELU, the checksum its name promises."""
    fmt = checkpoint_format(path)
    quick_gelu, source = None, ""
    if fmt == TORCHSCRIPT:
        quick_gelu, source = True, "OpenAI TorchScript archive"
    elif all(k in read_clip_state_dict(path, "meta", keep_openai_keys=True) for k in OPENAI_EXTRA_KEYS):
        quick_gelu, source = True, "OpenAI state dict layout"
    config = path.parent / "open_clip_config.json"
    if config.is_file():
        try:
            flag = bool(json.loads(config.read_text())["model_cfg"].get("quick_gelu", False))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise WeightsError(f"{config}: not an open_clip config with a model_cfg ({exc})") from exc
        if quick_gelu is not None and flag != quick_gelu:
            raise WeightsError(f"{config} says quick_gelu={flag}, but {path} is an {source}")
        quick_gelu, source = flag, str(config)
    published, binding = hugging_face_etag(path), True
    if published is None:
        official = _official_checksums(model_name).get(path.name)
        published, binding = official, official is not None
    return ClipWeights(model_name, pretrained, path, fmt, quick_gelu, source, published, binding)


def _official_checksums(model_name: str) -> dict[str, PublishedChecksum]:
    """File name → published checksum, for every download URL open_clip lists for this architecture."""
    out = {}
    for tag in open_clip.list_pretrained_tags_by_model(model_name):
        url = open_clip.get_pretrained_cfg(model_name, tag).get("url", "")
        checksum = checksum_from_url(url) if url else None
        if checksum is not None:
            out[os.path.basename(url)] = checksum
    return out


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
        candidate = _url_cache_path(cfg["url"], cache_dir)
        if candidate.is_file():
            return str(candidate)
    return None


def _url_cache_path(url: str, cache_dir: str | None) -> Path:
    """Where open_clip's URL downloader keeps a file (``~/.cache/clip/<name>``)."""
    return Path(cache_dir or Path.home() / ".cache" / "clip") / os.path.basename(url)


def _download(model_name: str, pretrained: str, cfg: dict, cache_dir: str | None, download: bool) -> str:
    source = cfg.get("hf_hub") or cfg.get("url", "")
    expected = str(_url_cache_path(cfg["url"], cache_dir)) if cfg.get("url") else f"Hugging Face cache ({source})"
    hint = (
        f"CLIP weights {model_name}/{pretrained} ({source}) are not in the local cache and could not be "
        f"downloaded. On a machine with internet run `python -c \"import open_clip; "
        f"open_clip.create_model('{model_name}', pretrained='{pretrained}')\"` to fill the Hugging Face "
        f"cache (HF_HOME), or download {cfg.get('url') or source} to {expected}, or pass the file's path "
        f"as `clip_pretrained` / --weights."
    )
    host = "huggingface.co" if cfg.get("hf_hub") else urlparse(cfg.get("url", "")).hostname or ""
    if not download:
        raise WeightsNotCached(hint, host, expected)
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        raise WeightsError(hint + " (HF_HUB_OFFLINE=1 is set)")
    if not reachable(host):
        raise WeightsError(hint + f" ({host} is unreachable from this machine)")
    try:
        with _bounded_downloads():
            return open_clip.download_pretrained(cfg, cache_dir=cache_dir)
    except Exception as exc:  # any network/cache failure becomes one clear message
        raise WeightsError(f"{hint} Cause: {type(exc).__name__}: {exc}") from exc


@contextmanager
def _bounded_downloads():
    """Make huggingface_hub give up quickly when the network is missing (it honours these)."""
    with restored_environ("HF_HUB_DOWNLOAD_TIMEOUT", "HF_HUB_ETAG_TIMEOUT"):
        os.environ["HF_HUB_DOWNLOAD_TIMEOUT"] = _DOWNLOAD_TIMEOUT_S
        os.environ["HF_HUB_ETAG_TIMEOUT"] = _DOWNLOAD_TIMEOUT_S
        yield


def reachable(host: str, timeout_s: float = 3.0) -> bool:
    """One quick TCP connect, so an offline machine fails in seconds (the hub client retries for ~1 min).

    A host found unreachable stays so for this process: checking many methods costs one timeout.
    """
    if not host or os.environ.get("HF_HUB_OFFLINE") == "1" or host in _unreachable:
        return False
    try:
        with socket.create_connection((host, 443), timeout=timeout_s):
            return True
    except OSError:
        _unreachable.add(host)
        return False


_unreachable: set[str] = set()


# -- architecture ------------------------------------------------------------------------------
def clip_architecture(weights: ClipWeights) -> ClipArchitecture:
    """The open_clip model the weights need: the configured name, made QuickGELU where they say so."""
    name = weights.model_name
    # Only open_clip's own table: a name with a schema ("hf-hub:…", "local-dir:…") would make open_clip
    # fetch or read a config named by the string, which may come from a model folder.
    config = open_clip.get_model_config(name) if name in open_clip.list_models() else None
    if config is None:
        raise ValueError(f"unknown CLIP architecture {name!r}; open_clip knows {open_clip.list_models()[:8]}…")
    named = bool(config.get("quick_gelu", False))
    if weights.quick_gelu is None or weights.quick_gelu == named:
        source = weights.quick_gelu_source if weights.quick_gelu is not None else f"the {name} config"
        return ClipArchitecture(name, named, source)
    if named:  # a QuickGELU name, GELU weights: the name was chosen for other weights
        raise WeightsError(f"{weights.path}: {weights.quick_gelu_source} says GELU, but {name} is a QuickGELU "
                           f"architecture; configure the architecture without -quickgelu for these weights")
    twin = f"{name}-quickgelu"
    if twin in open_clip.list_models():
        return ClipArchitecture(twin, True, weights.quick_gelu_source)
    return ClipArchitecture(name, True, weights.quick_gelu_source, force_quick_gelu=True)


@functools.cache
def native_state_shapes(architecture: ClipArchitecture) -> dict[str, torch.Size]:
    """Parameter names and shapes of ``architecture`` at its own input size (built on the meta device)."""
    with torch.random.fork_rng(devices=[]), _quiet_random_init_warning(), torch.device("meta"):
        model = open_clip.create_model(architecture.name, pretrained=None, device="meta",
                                       force_quick_gelu=architecture.force_quick_gelu)
    return {k: v.shape for k, v in model.state_dict().items()}


# -- reading and loading -----------------------------------------------------------------------
def read_clip_state_dict(path: Path, map_location: str = "cpu", keep_openai_keys: bool = False
                         ) -> dict[str, torch.Tensor]:
    """A CLIP state dict from any published container, read without executing code.

    Unwraps open_clip training checkpoints (``{"state_dict": {"module.…": …}}``) as open_clip's
    ``load_state_dict`` does, and drops OpenAI's non-parameter keys as its ``load_openai_model`` does.
    """
    state = read_checkpoint(path, "CLIP checkpoint", map_location)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"CLIP checkpoint {path} holds a {type(state).__name__}, not a state dict of tensors")
    if all(k.startswith("module.") for k in state):  # saved from DistributedDataParallel
        state = {k[len("module."):]: v for k, v in state.items()}
    if not keep_openai_keys:
        state = {k: v for k, v in state.items() if k not in OPENAI_EXTRA_KEYS}
    return state


def verify_clip_state(weights: ClipWeights, architecture: ClipArchitecture, state: dict[str, torch.Tensor]) -> None:
    """Exactly the keys and shapes of ``architecture`` at its native size, or a WeightsError naming the file."""
    require_state_dict_fits(native_state_shapes(architecture), state,
                            f"CLIP checkpoint {weights.path} does not fit {architecture.name}")


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
    weights = resolve_clip_weights(model_name, pretrained)
    architecture = clip_architecture(weights)
    state, checksum = None, None
    if weights.path is not None:
        state = read_clip_state_dict(weights.path)
        verify_clip_state(weights, architecture, state)
        accepted, checksum = checksum_verdict(weights.path, weights.published, weights.binding)
        if not accepted:
            raise WeightsError(f"CLIP checkpoint {weights.path}: {checksum}")
    with torch.random.fork_rng(devices=[]), _quiet_random_init_warning():
        torch.manual_seed(init_seed)
        model = open_clip.create_model(architecture.name, pretrained=None, force_image_size=image_size,
                                       force_quick_gelu=architecture.force_quick_gelu, device=device)
    if state is not None:
        _load_state(model, state)
    model.eval()
    info: dict[str, Any] = {
        "random_init": weights.path is None, "clip_model": model_name, "clip_pretrained": pretrained,
        "checkpoint": str(weights.path) if weights.path else None, "clip_architecture": architecture.name,
        "quick_gelu": architecture.quick_gelu, "quick_gelu_source": architecture.source,
    }
    if weights.path is None:
        info["init_seed"] = init_seed
    else:
        info.update(weights_format=weights.format, sha256=file_digest(weights.path), checksum=checksum)
    return LoadedClip(model, open_clip.get_tokenizer(architecture.name), image_size, info)


def _load_state(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Resize position embeddings to the model's input and load strictly.

    These are the last steps of open_clip's ``load_checkpoint``, which would read the file itself (and
    reads a TorchScript archive with ``torch.jit.load``). OpenAI's half-precision tensors are cast to
    the model's dtype first, as ``load_openai_model`` does with ``model.float()``, so that the
    position embeddings are interpolated in float32.
    """
    dtype = next(model.parameters()).dtype
    state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    resize_pos_embed(state, model)
    resize_text_pos_embed(state, model)
    model.load_state_dict(state, strict=True)


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


# -- checking without loading ------------------------------------------------------------------
def inspect_clip(model_name: str, pretrained: str | None, setting: str) -> WeightCheck:
    """A :class:`WeightCheck` of a CLIP's configured weights: found, format, architecture, checksum."""
    check = WeightCheck(f"CLIP {model_name} / {pretrained or 'random init'}", setting, "random")
    if not pretrained or pretrained == "random":
        return check
    try:
        weights = resolve_clip_weights(model_name, pretrained, download=False)
    except WeightsNotCached as exc:
        check.path, check.where = exc.expected, str(exc)
        check.status = "download" if reachable(exc.host) else "missing"
        check.detail = "" if check.status == "download" else f"not cached and {exc.host or 'its host'} is unreachable"
        return check
    except WeightsError as exc:
        check.status, check.detail = "missing", str(exc)
        check.path = pretrained if _looks_like_path(pretrained) else None
        return check
    check.path, check.format = str(weights.path), weights.format or ""
    try:
        architecture = clip_architecture(weights)
        check.architecture = (f"{architecture.name}, {'QuickGELU' if architecture.quick_gelu else 'GELU'} "
                              f"({architecture.source})")
        verify_clip_state(weights, architecture, read_clip_state_dict(weights.path, "meta"))
        check.architecture += "; keys and shapes match"
        check.sha256 = file_digest(weights.path)
        accepted, check.checksum = checksum_verdict(weights.path, weights.published, weights.binding)
    except (WeightsError, ValueError) as exc:
        check.status, check.detail = "invalid", str(exc)
        return check
    check.status = "ok" if accepted else "invalid"
    check.detail = "" if accepted else check.checksum
    return check


def clip_config_check(config: Any, name: str) -> WeightCheck:
    """The :class:`WeightCheck` of the CLIP a method's config names (``clip_model``, ``clip_pretrained``): what a
    CLIP-based method's ``weight_checks`` returns, with ``name`` (its registered name) in the setting."""
    return inspect_clip(config.clip_model, config.clip_pretrained, f"{name}.clip_pretrained={config.clip_pretrained}")
