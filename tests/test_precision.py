"""``--precision``: what ``auto`` resolves to, where the value goes (identity, run.json, FitContext,
predict), and that 16-bit maps of the CLIP methods follow float32's on a tiny model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from toy_method import ColourDistance

from scrapbench.core import registry
from scrapbench.core.method import FitContext
from scrapbench.core.precision import autocast, resolve_precision
from scrapbench.run.grid import run_benchmark
from scrapbench.run.plan import RunIdentityError, RunOptions


def test_auto_is_float32_on_the_cpu():
    assert resolve_precision("auto", "cpu") == "fp32"
    assert [resolve_precision(p, "cpu") for p in ("fp32", "bf16", "fp16")] == ["fp32", "bf16", "fp16"]
    with pytest.raises(ValueError, match="precision must be one of"):
        resolve_precision("half", "cpu")


@pytest.mark.parametrize(("capability", "expected"), [((9, 0), "bf16"), ((8, 0), "bf16"), ((7, 5), "fp16")])
def test_auto_on_a_gpu_is_bf16_where_native_else_fp16(monkeypatch, capability, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    assert resolve_precision("auto", "cuda:0") == expected
    if expected == "fp16":
        with pytest.raises(ValueError, match="no native bfloat16"):
            resolve_precision("bf16", "cuda")


def test_fp32_switches_an_outer_autocast_off():
    a, b = torch.randn(8, 8), torch.randn(8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert (a @ b).dtype == torch.bfloat16
        with autocast("fp32", "cpu"):
            assert (a @ b).dtype == torch.float32
    with autocast("bf16", "cpu"):
        assert (a @ b).dtype == torch.bfloat16


# -- plumbing: identity, run.json, FitContext, predict ----------------------------------------------


@pytest.fixture
def toy_recording_precision(monkeypatch):
    seen = []

    def fit(self, train, ctx):
        seen.append(ctx.precision)
        ColourDistance.fit(self, train, ctx)

    cls = type("PrecisionToy", (ColourDistance,), {"fit": fit})
    registry.list_methods()
    monkeypatch.setitem(registry._REGISTRY, "toy", registry.MethodSpec("toy", cls, "toy"))
    return seen


def test_precision_is_part_of_the_identity_and_reaches_fit(smoke_dataset, tmp_path, toy_recording_precision):
    options = RunOptions(preset="smoke", out=tmp_path / "runs", show_progress=False)
    [result] = run_benchmark(smoke_dataset, ["toy"], [0], options)  # auto on the CPU
    record = json.loads((result.directory / "run.json").read_text())
    assert record["identity"]["compute"]["precision"] == record["precision"] == "fp32"
    assert toy_recording_precision == ["fp32"]
    with pytest.raises(RunIdentityError, match=r"compute\.precision: 'fp32' → 'bf16'"):
        run_benchmark(smoke_dataset, ["toy"], [0], RunOptions(preset="smoke", out=tmp_path / "runs",
                                                             show_progress=False, precision="bf16"))
    [again] = run_benchmark(smoke_dataset, ["toy"], [0], RunOptions(preset="smoke", out=tmp_path / "runs",
                                                                   show_progress=False, precision="fp32"))
    assert again.status == "skipped"  # auto and fp32 are the same run on the CPU


def test_cli_refuses_an_unknown_precision_in_one_line(tmp_path):
    from typer.testing import CliRunner

    from scrapbench.cli.main import app

    for command in (["run", "--methods", "winclip", "--preset", "smoke", "--out", str(tmp_path / "runs")],
                    ["predict", str(tmp_path / "model"), str(tmp_path), "--out", str(tmp_path / "o")]):
        result = CliRunner().invoke(app, [*command, "--precision", "half"])
        assert result.exit_code == 2 and "precision must be one of" in result.output, result.output
    assert not (tmp_path / "runs").exists()


# -- 16-bit maps follow float32 ---------------------------------------------------------------------


def _maps_and_metrics(method, dataset):
    from scrapbench.metrics import PixelMetrics

    samples = list(dataset.test)
    maps = np.stack(method.predict([s.image for s in samples]))
    metrics = PixelMetrics(class_names=dataset.class_names)
    metrics.update(maps, np.stack([s.mask for s in samples]))
    return maps, metrics.compute()


def _assert_close_to_float32(reference, other):
    (maps32, metrics32), (maps16, metrics16) = reference, other
    assert maps16.dtype == np.float32 and np.isfinite(maps16).all()
    assert not np.array_equal(maps32, maps16)  # the 16-bit run did run in 16 bits
    correlation = min(np.corrcoef(a.ravel(), b.ravel())[0, 1] for a, b in zip(maps32, maps16, strict=True))
    assert correlation > 0.999, correlation
    for key in ("auroc", "aupro", "ap", "f1max"):
        assert abs(metrics32[key] - metrics16[key]) < 0.005, (key, metrics32[key], metrics16[key])


@pytest.mark.parametrize("name", ["anomalyclip", "ours", "winclip", "winclip_plus"])
def test_bf16_prediction_follows_float32(smoke_dataset, tmp_path, name):
    method = registry.create_method(name, smoke_dataset.class_names, "smoke")
    method.fit(smoke_dataset.train, FitContext(0, "cpu", tmp_path, smoke_dataset.class_names, False))
    reference = _maps_and_metrics(method, smoke_dataset)
    method.precision = "bf16"
    _assert_close_to_float32(reference, _maps_and_metrics(method, smoke_dataset))


@pytest.mark.parametrize("name", ["anomalyclip", "ours"])
def test_bf16_training_follows_float32(smoke_dataset, tmp_path, name):
    results = []
    for precision in ("fp32", "bf16"):
        method = registry.create_method(name, smoke_dataset.class_names, "smoke")
        method.fit(smoke_dataset.train, FitContext(0, "cpu", tmp_path / precision, smoke_dataset.class_names, False,
                                                   precision=precision))
        assert method.precision == precision
        results.append(_maps_and_metrics(method, smoke_dataset))
    _assert_close_to_float32(*results)
