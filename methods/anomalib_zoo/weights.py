"""Where the pretrained backbones of anomalib's models come from, checked without loading them.

timm looks a model's weights up on the Hugging Face Hub (``hf_hub_id``) or at a URL it caches in the
torch hub folder; torchvision caches its checkpoints in the torch hub folder. Offline, a backbone is
usable only if its file is already there, so ``scrapbench weights check`` (and ``run``, before any data)
names the file that is missing and how to get it.
"""

from __future__ import annotations

from pathlib import Path

import torch

from scrapbench.methods.common.checkpoints import WeightCheck, checkpoint_format

#: anomalib's names for backbones made of several timm models.
_COMPOSITE = {"mcait": ("cait_m48_448", "cait_s24_224")}  # U-Flow's two CaiTs


def backbone_checks(source: str, backbone: str, setting: str, pretrained: bool) -> list[WeightCheck]:
    """The checks of a backbone named in a config (one per timm model for anomalib's composite names)."""
    return [backbone_check(source, part, setting, pretrained) for part in _COMPOSITE.get(backbone, (backbone,))]


def backbone_check(source: str, backbone: str, setting: str, pretrained: bool) -> WeightCheck:
    """A :class:`WeightCheck` of a ``timm`` or ``torchvision`` backbone's pretrained file."""
    check = WeightCheck(f"{source} {backbone}", setting, "random")
    if not pretrained:
        return check
    try:
        path, where = _timm_file(backbone) if source == "timm" else _torchvision_file(backbone)
    except (RuntimeError, ValueError, KeyError, AttributeError) as exc:
        check.status, check.detail = "invalid", f"{source} knows no pretrained weights for {backbone!r}: {exc}"
        return check
    check.path, check.where = (str(path) if path else None), where
    if path is None or not path.is_file():
        check.status, check.detail = "missing", "not in the local cache"
        return check
    check.status, check.format = "ok", checkpoint_format(path)
    return check


def _timm_file(backbone: str) -> tuple[Path | None, str]:
    """The cached file timm would load for ``backbone`` (``None``: not cached) and how to get it."""
    import timm
    from timm.models import get_pretrained_cfg

    name, _, tag = backbone.partition(".")
    if not timm.is_model(name):
        raise ValueError("not a timm architecture")
    cfg = get_pretrained_cfg(backbone) if tag else get_pretrained_cfg(name)
    if cfg is None:
        raise ValueError("no pretrained tag")
    hub_id = getattr(cfg, "hf_hub_id", None)
    where = f"timm.create_model({backbone!r}, pretrained=True) once online"
    if hub_id:
        from huggingface_hub import try_to_load_from_cache

        hub_id = hub_id.split("@")[0]
        for filename in ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin"):
            found = try_to_load_from_cache(hub_id, filename)
            if isinstance(found, str):
                return Path(found), where
        return None, f"{where} (Hugging Face Hub: {hub_id})"
    url = getattr(cfg, "url", None) or ""
    if not url:
        raise ValueError("no download location")
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name, f"{where} ({url})"


def _torchvision_file(backbone: str) -> tuple[Path, str]:
    """The torch hub file torchvision's default weights of ``backbone`` are cached as, and their URL."""
    import torchvision.models

    weights = torchvision.models.get_model_weights(backbone).DEFAULT
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name, f"download {weights.url}"
