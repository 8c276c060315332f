"""Presets: a name (``smoke``, ``cpu``, ``paper``) or a YAML file layered on one.

A preset file looks like::

    base: cpu                  # the named preset it refines
    methods:
      winclip: {image_size: 160}
      ours: {epochs: 6}

Precedence: method defaults < named preset < preset file < ``--set method.field=value``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

PRESET_NAMES = ("smoke", "cpu", "paper")


@dataclass(frozen=True)
class ResolvedPreset:
    name: str  # the named preset everything is layered on
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)  # method → field → value


def resolve_preset(preset: str, cli_settings: list[str] | None = None) -> ResolvedPreset:
    """Combine a preset name or file with ``method.field=value`` settings from the command line."""
    overrides: dict[str, dict[str, Any]] = {}
    if preset in PRESET_NAMES:
        name = preset
    else:
        path = Path(preset)
        if not path.is_file():
            raise ValueError(f"preset {preset!r} is neither one of {PRESET_NAMES} nor a YAML file")
        try:
            doc = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ValueError(f"{path}: invalid YAML ({exc})") from exc
        name = doc.get("base", "cpu")
        if name not in PRESET_NAMES:
            raise ValueError(f"{path}: `base` must be one of {PRESET_NAMES}, got {name!r}")
        for method, values in (doc.get("methods") or {}).items():
            if not isinstance(values, dict):
                raise ValueError(f"{path}: methods.{method} must be a mapping of config fields")
            overrides.setdefault(method, {}).update(values)
    for setting in cli_settings or []:
        key, sep, raw = setting.partition("=")
        method, dot, field_name = key.partition(".")
        if not sep or not dot or not method or not field_name:
            raise ValueError(f"--set {setting!r}: expected METHOD.FIELD=VALUE, e.g. ours.epochs=3")
        overrides.setdefault(method, {})[field_name] = yaml.safe_load(raw)
    return ResolvedPreset(name, overrides)
