"""Checks on model folders shared by the registry-wide tests and the model-folder tests."""

from __future__ import annotations

from pathlib import Path


def assert_holds_no_pickle(folder: Path) -> None:
    """A model folder is method.json + safetensors + JSON: no torch.save file (a pickle or a zip of one)."""
    assert sorted(p.name for p in folder.iterdir()) == ["method.json", "state.json", "state.safetensors"]
    for path in folder.iterdir():
        head = path.read_bytes()[:2]
        assert head[:1] != b"\x80" and head != b"PK", f"{path.name} is a pickle or a torch zip archive"
