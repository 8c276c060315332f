"""Checks on model folders shared by the registry-wide tests and the model-folder tests."""

from __future__ import annotations

import json
from pathlib import Path

from scrapbench.methods.common.checkpoints import SAFETENSORS, checkpoint_format


def assert_holds_no_pickle(folder: Path) -> None:
    """A model folder is method.json + safetensors + JSON: no torch.save file (a pickle or a zip of one).

    The safetensors file is told apart by its bytes (``checkpoint_format``), not by its first byte alone: its
    header length may begin with 0x80, a pickle's first byte."""
    assert sorted(p.name for p in folder.iterdir()) == ["method.json", "state.json", "state.safetensors"]
    for path in folder.iterdir():
        if path.suffix == ".safetensors":
            assert checkpoint_format(path) == SAFETENSORS, f"{path.name} is not a safetensors file"
        else:
            json.loads(path.read_text(encoding="utf-8"))
