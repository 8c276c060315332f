"""What the executor tests share: the toy methods they register, and the checks that two runs are the same."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from toy_method import (
    ColourDistance,
    DiesOnceWhileFitting,
    DiesWhileFitting,
    RecordingColourDistance,
    SeedIndependentColourDistance,
    SupervisedColourDistance,
)

from scrapbench.core import registry
from scrapbench.run.plan import RunOptions

#: A run's files that must be byte-identical wherever it was computed.
RUN_FILES = ("metrics.json", "per_image.csv", "maps.npz", "metrics_state.npz")

TOY_SPECS = {spec.name: spec for spec in (
    registry.MethodSpec("toy", ColourDistance, "toy", ("table2",)),
    registry.MethodSpec("toy_noisy", ColourDistance, "noisy toy", (), {"noise": 5.0}),
    registry.MethodSpec("toy_broken", ColourDistance, "fails", (), {"fail_on_predict": True}),
    registry.MethodSpec("recorder", RecordingColourDistance, "records fits"),
    registry.MethodSpec("dies_once", DiesOnceWhileFitting, "loses its worker once"),
    registry.MethodSpec("dies", DiesWhileFitting, "loses its worker every time"),
    registry.MethodSpec("toy_fixed", SeedIndependentColourDistance, "seed-independent toy"),
    registry.MethodSpec("toy_supervised", SupervisedColourDistance, "supervised toy", (), {"noise": 20.0}),
)}


def register_toys(monkeypatch: pytest.MonkeyPatch, *names: str) -> None:
    """Register these toy methods for one test (built-ins first, so that they are not loaded over them)."""
    registry.list_methods()
    for name in names:
        monkeypatch.setitem(registry._REGISTRY, name, TOY_SPECS[name])


def smoke_options(out: Path, **kw) -> RunOptions:
    return RunOptions(preset="smoke", out=out, show_progress=False, **kw)


def same_files(a: Path, b: Path) -> None:
    for name in RUN_FILES:
        assert (a / name).read_bytes() == (b / name).read_bytes(), (a, name)


def same_run(a: Path, b: Path) -> None:
    """The same files and the same identity."""
    same_files(a, b)
    assert json.loads((a / "run.json").read_text())["identity"] == json.loads((b / "run.json").read_text())["identity"]


def leftovers(out: Path) -> list[Path]:
    """Staging, aside and probe folders an executor must not leave under ``out``."""
    return [p for p in out.rglob(".*") if ".tmp-" in p.name or ".old-" in p.name or "probe" in p.name]
