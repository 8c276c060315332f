"""Reading torch checkpoint files with errors that name the file (shared by the weight loaders)."""

from __future__ import annotations

from pathlib import Path

import torch

from scrapbench.method import WeightsError


def read_state_dict(path: Path, label: str) -> dict[str, torch.Tensor]:
    """A state dict from ``path`` (also unwrapping ``{"model": state_dict}`` training checkpoints)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file: say which one
        raise WeightsError(f"{label} {path} could not be read: {type(exc).__name__}: {exc}") from exc
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict):
        raise WeightsError(f"{label} {path} holds a {type(state).__name__}, not a state dict")
    return state
