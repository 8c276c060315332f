"""Every pretrained weight a preset configures: found or not, format, architecture, checksum.

``scrapbench weights check`` prints this as a table; ``scrapbench run`` checks it before generating
any data, so a long GPU run fails in seconds, naming the file, instead of after the dataset.

The check reads files without loading models: names, shapes and dtypes (the meta device), the
SHA-256 of the bytes, and, for ultralytics checkpoints, the class names in the pickle's opcodes. Which
weights a method needs and how to check them is the method's to say
(``AnomalyMethod.weight_checks``); this module only asks each method and merges the rows.
"""

from __future__ import annotations

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
    config = build_config(method, preset, dict(overrides or {}))
    return get_spec(method).load_class().weight_checks(config, method)


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
