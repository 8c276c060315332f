"""What a run costs: parameter counts, the FLOP count, the run's cost record, and that measuring changes nothing."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pytest
import torch
from toy_method import ColourDistance

from scrapbench.core import registry
from scrapbench.core.method import AnomalyMethod, FitContext, LearningType
from scrapbench.run.cost import count_flops
from scrapbench.run.grid import run_benchmark
from scrapbench.run.plan import RunOptions

# -- the FLOP count ----------------------------------------------------------------------------------------------


def test_flops_of_a_convolution_and_a_linear_layer_are_the_analytic_count():
    conv, linear = torch.nn.Conv2d(3, 8, kernel_size=3, padding=1), torch.nn.Linear(8, 5)
    pixels = torch.rand(2, 3, 10, 12)
    with torch.inference_mode():
        counted = count_flops(lambda: linear(conv(pixels).mean(dim=(2, 3))))
    # 2 × multiply-adds: every output pixel of the conv takes 3·3·3 inputs, the linear layer 8 per output
    assert counted == 2 * (2 * 8 * 10 * 12) * (3 * 3 * 3) + 2 * (2 * 5 * 8)


def test_attention_is_counted_with_its_fast_paths_off():
    """nn.MultiheadAttention's fused fast path hides its projections and attention from torch's counter; the
    count switches it off (and flash attention) and sees them all, as the analytic count does."""
    tokens, width = 7, 16
    attention = torch.nn.MultiheadAttention(width, num_heads=2, batch_first=True).eval()
    x = torch.rand(1, tokens, width)
    analytic = 2 * (4 * tokens * width * width) + 2 * (2 * tokens * tokens * width)  # q/k/v/out; scores, sum
    with torch.inference_mode():
        assert count_flops(lambda: attention(x, x, x, need_weights=False)) == analytic
        missed = count_flops(lambda: attention(x, x, x, need_weights=False), fastpath=True, math_attention=False)
    assert missed < analytic
    assert torch.backends.mha.get_fastpath_enabled()  # switched back on


def test_the_clip_encoder_is_counted_as_the_benchmark_script_computes_it():
    """open_clip's ViT (nn.MultiheadAttention inside) counts exactly as scripts/bench_paper_preset.py's analytic
    formula: every projection, attention product and the embedding."""
    import importlib.util
    from pathlib import Path

    from scrapbench.methods.common.clip_backbone import load_clip_resized

    path = Path(__file__).resolve().parents[1] / "scripts" / "bench_paper_preset.py"
    spec = importlib.util.spec_from_file_location("bench_paper_preset", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    visual = load_clip_resized("scrapbench-vit-tiny", None, 64, "cpu").visual.eval()
    pixels = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        assert count_flops(lambda: visual(pixels)) == script.analytic_vit_flops(visual, 64, 2)["total"]


# -- parameter counts --------------------------------------------------------------------------------------------


@dataclass
class _Helper:
    """A plain object holding a network, as WinCLIP's loaded CLIP does."""

    model: torch.nn.Module
    names: list[str] = field(default_factory=lambda: ["a", "b"])


class _HoldsNetworks(ColourDistance):
    """The toy method, holding: a frozen encoder twice (once inside a helper object), a head in a list whose
    two layers share one weight, and a tensor that is no parameter."""

    def __init__(self, config: Any, class_names) -> None:
        super().__init__(config, class_names)
        self.encoder = torch.nn.Linear(10, 20).requires_grad_(False)  # 220
        self.helper = _Helper(self.encoder)
        first, second = torch.nn.Linear(20, 20), torch.nn.Linear(20, 20)
        second.weight = first.weight  # tied: 400 + 20 + 20
        self.heads = [torch.nn.Sequential(first, second)]
        self.buffer = torch.zeros(1000)


def test_parameters_are_found_wherever_held_and_counted_once():
    method = _HoldsNetworks(ColourDistance.Config(), ("a",))
    assert method.parameter_counts() == (220 + 440, 440)
    assert ColourDistance(ColourDistance.Config(), ("a",)).parameter_counts() is None  # no torch network


# -- the run's record --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _ConvConfig:
    channels: int = 4


class _ConvScores(AnomalyMethod):
    """A random 3×3 convolution and a 1×1 one, summed into a map: FLOPs known in closed form, nothing trained."""

    Config = _ConvConfig
    presets: ClassVar[dict[str, dict[str, Any]]] = {"smoke": {}, "cpu": {}}
    learning_type = LearningType.ZERO_SHOT

    def __init__(self, config: _ConvConfig, class_names) -> None:
        super().__init__(config, class_names)
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Conv2d(3, config.channels, 3, padding=1),
                                       torch.nn.Conv2d(config.channels, 1, 1)).requires_grad_(False)

    def fit(self, train, ctx: FitContext) -> None:
        pass

    @torch.inference_mode()
    def predict(self, images):
        pixels = torch.stack([torch.from_numpy(image).permute(2, 0, 1).float() / 255 for image in images])
        return list(self.net(pixels)[:, 0].numpy())

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


@pytest.fixture
def cost_methods(monkeypatch):
    registry.list_methods()
    monkeypatch.setitem(registry._REGISTRY, "toy", registry.MethodSpec("toy", ColourDistance, "toy", ("table2",)))
    monkeypatch.setitem(registry._REGISTRY, "conv", registry.MethodSpec("conv", _ConvScores, "conv", ("table2",)))


def _record(result) -> dict[str, Any]:
    return json.loads((result.directory / "run.json").read_text())


def test_the_run_record_holds_the_runs_cost(smoke_dataset, tmp_path, cost_methods):
    toy, conv = run_benchmark(smoke_dataset, ["toy", "conv"], [0],
                              RunOptions(preset="smoke", out=tmp_path / "runs", show_progress=False))
    cost = _record(toy)["cost"]
    assert cost["params_total"] is None and cost["flops_per_image"] is None  # numpy only: nothing torch can count
    assert cost["fit_peak_rss_mb"] > 0 and cost["predict_peak_rss_mb"] > 0 and cost["predict_peak_cuda_mb"] is None
    cost = _record(conv)["cost"]
    height, width = smoke_dataset.test[0].image.shape[:2]
    assert cost["params_total"] == (3 * 9 * 4 + 4) + (4 + 1) and cost["params_trained"] == 0
    assert cost["flops_per_image"] == 2 * height * width * (4 * 3 * 9 + 1 * 4)


def test_measuring_the_cost_changes_no_map_or_metric_and_shards_agree(smoke_dataset, tmp_path, monkeypatch):
    """WinCLIP+ on the smoke preset: the run's files with and without the FLOP count are the same bit for bit;
    its record is sane; a run predicted in two parts counts the same FLOPs (on the same first image)."""
    def run(out, **options):
        [result] = run_benchmark(smoke_dataset, ["winclip_plus"], [0], RunOptions(
            preset="smoke", out=tmp_path / out, show_progress=False, **options))
        assert result.status == "done"
        return result.directory

    counted = run("counted")
    sharded = run("sharded", shards=2)
    monkeypatch.setattr("scrapbench.run.compute.flops_per_image", lambda *args: None)
    uncounted = run("uncounted")
    for name in ("metrics.json", "per_image.csv"):
        assert (counted / name).read_bytes() == (uncounted / name).read_bytes(), name
    with np.load(counted / "maps.npz") as a, np.load(uncounted / "maps.npz") as b:
        assert all(np.array_equal(a[key], b[key]) for key in a.files)
    cost = json.loads((counted / "run.json").read_text())["cost"]
    assert cost["params_total"] > 1e6 and cost["params_trained"] == 0  # a frozen CLIP, a memory of references
    assert 1e8 < cost["flops_per_image"] < 1e10
    assert json.loads((sharded / "run.json").read_text())["cost"]["flops_per_image"] == cost["flops_per_image"]
    assert json.loads((uncounted / "run.json").read_text())["cost"]["flops_per_image"] is None
