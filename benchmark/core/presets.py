"""Presets, every rule in one place: what a preset name means for a method's config and for the data.

A preset is a name (``smoke``, ``cpu``, ``paper``) or a YAML file layered on one. ``paper`` is each
method's ``Config`` defaults (the paper's configuration) and Table 1's synthetic data; ``smoke`` and
``cpu`` are small stand-ins whose values each method declares next to its config, as its ``presets``
class data (so a method's author sees them), and the synthetic sizes here. A preset file looks like::

    base: cpu                  # the named preset it refines
    methods:
      winclip: {image_size: 160}
      ours: {epochs: 6}

Precedence: method defaults < named preset < the registered name's own fields (ablation variants) <
preset file < ``--set method.field=value``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from scrapbench.core.config_check import shown
from scrapbench.core.method import AnomalyMethod, config_from_dict, config_to_dict, config_value
from scrapbench.datasets.synthetic.generator import PAPER_CLASS_RATIO, SyntheticConfig, split_by_ratio

PAPER = "paper"
#: ``1e-3``: a float in YAML 1.2, a string in PyYAML's YAML 1.1; ``--set`` reads it as the float it means.
_EXPONENT_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")
PRESET_NAMES = ("smoke", "cpu", PAPER)

#: The synthetic dataset of each preset (``--dataset synthetic``).
SYNTHETIC_PRESETS: dict[str, SyntheticConfig] = {
    "smoke": SyntheticConfig(
        name="smoke",
        patch_size=64,
        train_normal=16,
        train_anomalous=split_by_ratio(8),
        test_normal=8,
        test_anomalous=split_by_ratio(4),
    ),
    # The default. Anomalous images are 20 % of each split here versus ~8.6 % (train) and ~14.6 %
    # (test) in Table 1: a CPU-sized run needs enough anomalies to learn from and to score.
    "cpu": SyntheticConfig(),
    # Table 1 exactly; test anomalies (353, class split unreported) follow the training ratio.
    PAPER: SyntheticConfig(
        name=PAPER,
        patch_size=512,
        train_normal=7838,
        train_anomalous=PAPER_CLASS_RATIO,
        test_normal=2065,
        test_anomalous=split_by_ratio(353),
    ),
}


def method_preset(method_cls: type[AnomalyMethod], preset: str, name: str) -> dict[str, Any]:
    """The config values ``preset`` sets for ``method_cls`` (registered as ``name``).

    ``paper`` sets none: it is the ``Config`` defaults, so a method may not declare a ``paper`` entry.
    Any other preset is the method's own entry in its ``presets``.
    """
    if PAPER in method_cls.presets:
        raise ValueError(f"method {name!r} declares a {PAPER!r} preset; the paper's configuration is its "
                         f"Config defaults ({method_cls.__module__}.{method_cls.__qualname__}.presets)")
    if preset == PAPER:
        return {}
    if preset not in method_cls.presets:
        raise KeyError(f"method {name!r} has no preset {preset!r}; presets: {sorted(method_cls.presets)}")
    return dict(method_cls.presets[preset])


def layered_config(method_cls: type[AnomalyMethod], name: str, preset: str, fixed: dict[str, Any],
                   overrides: dict[str, Any] | None = None) -> Any:
    """A method's config: ``Config`` defaults < ``preset`` < ``fixed`` (the registered name's own fields) <
    ``overrides`` (preset file and ``--set``)."""
    values = config_to_dict(method_cls.Config())
    values.update(method_preset(method_cls, preset, name))
    values.update(fixed)
    values.update(overrides or {})
    return config_from_dict(method_cls.Config, values, f"method {name!r}")


@dataclass(frozen=True)
class ResolvedPreset:
    name: str  # the named preset everything is layered on
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)  # method → field → value


def resolve_preset(preset: str, cli_settings: list[str] | None = None) -> ResolvedPreset:
    """Combine a preset name or file with ``method.field=value`` settings from the command line.

    Every value for a registered method is checked against its config field's type here, before anything
    runs; an error is one line naming the file or the ``--set``, the method, the field, the value and the type.
    """
    overrides: dict[str, dict[str, Any]] = {}
    name = preset if preset in PRESET_NAMES else _read_preset_file(Path(preset), preset, overrides)
    for setting in cli_settings or []:
        key, sep, raw = setting.partition("=")
        method, dot, field_name = key.rpartition(".")  # method names may hold dots: anomalib.padim
        if not sep or not dot or not method or not field_name:
            raise ValueError(f"--set {setting!r}: expected METHOD.FIELD=VALUE, e.g. ours.epochs=3")
        where = f"--set {method}.{field_name}"
        value = float(raw) if _EXPONENT_FLOAT.fullmatch(raw.strip()) else _yaml(raw, where)
        value = _checked(method, field_name, value, where)
        overrides.setdefault(method, {})[field_name] = value
    return ResolvedPreset(name, overrides)


def _read_preset_file(path: Path, preset: str, overrides: dict[str, dict[str, Any]]) -> str:
    """The base preset a preset file names; its checked method values go into ``overrides``."""
    if not path.is_file():
        raise ValueError(f"preset {preset!r} is neither one of {PRESET_NAMES} nor a YAML file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: cannot read the preset file ({exc})") from exc
    doc = _yaml(text, str(path))
    doc = {} if doc is None else doc
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: expected a mapping with `base` and `methods`, got {shown(doc)}")
    extra = sorted((key for key in doc if key not in ("base", "methods")), key=str)
    if extra:
        raise ValueError(f"{path}: unknown keys {extra}; a preset file has `base` and `methods`")
    name = doc.get("base", "cpu")
    if not isinstance(name, str) or name not in PRESET_NAMES:
        raise ValueError(f"{path}: `base` must be one of {PRESET_NAMES}, got {shown(name)}")
    methods = doc.get("methods") or {}
    if not isinstance(methods, dict):
        raise ValueError(f"{path}: `methods` must map method names to their config fields")
    for method, values in methods.items():
        if not isinstance(values, dict):
            raise ValueError(f"{path}: methods.{method} must be a mapping of config fields")
        for field_name, value in values.items():
            value = _checked(str(method), field_name, value, f"{path}: methods.{method}.{field_name}")
            overrides.setdefault(str(method), {})[field_name] = value
    return name


def _yaml(text: str, where: str) -> Any:
    """``text`` parsed as YAML (safe: plain data only); a syntax error is one line after ``where``."""
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = f" (line {exc.problem_mark.line + 1}, column {exc.problem_mark.column + 1})" if exc.problem_mark else ""
        raise ValueError(f"{where}: invalid YAML: {exc.problem or exc.context}{mark}") from exc
    except (yaml.YAMLError, ValueError, RecursionError) as exc:  # ValueError: an int over Python's digit limit
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"{where}: invalid YAML: {detail}") from exc


def _checked(method: str, field_name: Any, value: Any, where: str) -> Any:
    """``value`` checked against ``method``'s config field (lists → tuples). A method that is not registered is
    left to the caller (``run`` names it), an unknown field to :func:`layered_config`."""
    from scrapbench.core.registry import get_spec

    try:
        config_cls = get_spec(method).load_class().Config
    except KeyError:
        return value
    return config_value(config_cls, field_name, value, where)
