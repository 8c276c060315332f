"""Every pretrained weight a preset configures: found or not, format, architecture, checksum.

``scrapbench weights check`` prints this as a table; ``scrapbench run`` checks it before generating
any data, so a long GPU run fails in seconds, naming the file, instead of after the dataset.

The check reads files without loading models: names, shapes and dtypes (the meta device), the
SHA-256 of the bytes, and, for ultralytics checkpoints, the class names in the pickle's opcodes. A
method's weights are found from its config: ``clip_model`` + ``clip_pretrained`` (open_clip), and
``sam_model`` + ``sam_checkpoint`` (Segment Anything), plus what a method checks itself through an
``inspect_weights(setting)`` method (YOLO, Mask R-CNN; their constructors load nothing).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from scrapbench.core.registry import build_config, get_spec
from scrapbench.methods.common.checkpoints import WeightCheck


@dataclass
class WeightReport:
    """One distinct weight and the methods that use it."""

    check: WeightCheck
    methods: list[str] = field(default_factory=list)


def method_weight_checks(method: str, preset: str, overrides: Mapping[str, Any] | None = None) -> list[WeightCheck]:
    """The checks of every weight ``method`` is configured with under ``preset`` and ``overrides``."""
    cls = get_spec(method).load_class()
    config = build_config(method, preset, dict(overrides or {}))
    fields = {f.name for f in dataclasses.fields(config)}
    checks = []
    if {"clip_model", "clip_pretrained"} <= fields:
        from scrapbench.methods.common.clip_weights import inspect_clip

        checks.append(inspect_clip(config.clip_model, config.clip_pretrained,
                                   f"{method}.clip_pretrained={config.clip_pretrained}"))
    if hasattr(cls, "inspect_weights"):
        instance = cls(config, ("class",))
        instance.registry_name = method
        field_name = cls.weights_field or "weights"
        checks.append(instance.inspect_weights(f"{method}.{field_name}={getattr(config, field_name, None)}"))
    if {"sam_model", "sam_checkpoint"} <= fields:
        from scrapbench.methods.common.sam_refiner import inspect_sam

        checks.append(inspect_sam(config.sam_model, config.sam_checkpoint,
                                  f"{method}.sam_checkpoint={config.sam_checkpoint}"))
    return checks


def check_weights(methods: Iterable[str], preset: str,
                  overrides: Mapping[str, Mapping[str, Any]] | None = None) -> list[WeightReport]:
    """Checks of every configured weight of ``methods``, one row per distinct weight."""
    reports: dict[tuple, WeightReport] = {}
    for method in methods:
        for check in method_weight_checks(method, preset, (overrides or {}).get(method)):
            key = (check.weight, check.path, check.status, check.detail)
            report = reports.setdefault(key, WeightReport(check))
            report.methods.append(method)
    return list(reports.values())


def problems(reports: Iterable[WeightReport]) -> list[WeightReport]:
    """The rows that would stop a run: missing or invalid weights."""
    return [r for r in reports if not r.check.ok]
