"""A seed-independent method is computed once per configuration; later seeds copy its finished run."""

from __future__ import annotations

import json

import pytest
import torch
from toy_method import SeedIndependentColourDistance

from scrapbench.core import registry
from scrapbench.core.registry import build_config
from scrapbench.report.cells import method_flags
from scrapbench.report.collect import collect_runs
from scrapbench.run.grid import run_benchmark
from scrapbench.run.plan import RunOptions


@pytest.fixture(autouse=True)
def toy_methods(monkeypatch):
    registry.list_methods()
    monkeypatch.setitem(registry._REGISTRY, "toy_fixed",
                        registry.MethodSpec("toy_fixed", SeedIndependentColourDistance, "seed-independent toy",
                                            ("table2",)))


def _options(tmp_path, log, **config):
    return RunOptions(preset="smoke", out=tmp_path / "runs", show_progress=False,
                      overrides={"toy_fixed": {"fit_log": str(log), **config}})


def _fits(log):
    return [line.split()[0] for line in log.read_text().splitlines()] if log.exists() else []


def test_later_seeds_copy_the_first_seeds_run(smoke_dataset, tmp_path):
    log = tmp_path / "fits.log"
    results = run_benchmark(smoke_dataset, ["toy_fixed"], [0, 1, 2], _options(tmp_path, log))
    assert _fits(log) == ["0"]  # fitted once
    assert [r.status for r in results] == ["done"] * 3
    assert [r.reused_from for r in results] == [None, 0, 0]
    assert results[1].metrics == results[0].metrics == results[2].metrics
    first = json.loads((results[0].directory / "run.json").read_text())
    assert "reused_from" not in first
    for result in results[1:]:
        record = json.loads((result.directory / "run.json").read_text())
        assert record["seed"] == record["identity"]["seed"] == result.seed
        assert record["reused_from"] == {"seed": 0, "attempt": first["attempt"], "run": "seed0"}
        assert record["attempt"] != first["attempt"]
        for name in ("metrics.json", "metrics_state.npz", "per_image.csv", "model/method.json"):
            assert (result.directory / name).read_bytes() == (results[0].directory / name).read_bytes(), name
    # Resuming treats copies as finished runs; the report marks the rows.
    again = run_benchmark(smoke_dataset, ["toy_fixed"], [0, 1, 2], _options(tmp_path, log))
    assert [r.status for r in again] == ["skipped"] * 3 and _fits(log) == ["0"]
    tidy = collect_runs(tmp_path / "runs")
    assert bool(method_flags(tidy).loc["toy_fixed", "seed_reused"])


def test_a_copy_of_a_copy_names_the_computed_run(smoke_dataset, tmp_path):
    log = tmp_path / "fits.log"
    run_benchmark(smoke_dataset, ["toy_fixed"], [3], _options(tmp_path, log))
    run_benchmark(smoke_dataset, ["toy_fixed"], [1], _options(tmp_path, log))  # copies seed 3
    [result] = run_benchmark(smoke_dataset, ["toy_fixed"], [2], _options(tmp_path, log))  # copies seed 1 (lowest)
    assert result.reused_from == 1 and _fits(log) == ["3"]
    record = json.loads((result.directory / "run.json").read_text())
    assert record["reused_from"]["seed"] == 3 and record["reused_from"]["run"] == "seed3"


MALFORMED = {  # a finished run's file → its new text, from its current JSON
    "auroc true": ("metrics.json", lambda m: json.dumps({**m, "auroc": True})),
    "auroc NaN": ("metrics.json", lambda m: json.dumps({**m, "auroc": float("nan")})),
    "seed zero": ("run.json", lambda r: json.dumps({**r, "seed": "zero"})),
    "config list": ("run.json", lambda r: json.dumps({**r, "config": [1, 2]})),
    "nested deep": ("run.json", lambda r: json.dumps(r)[:-1] + ', "x": ' + "[" * 100_000 + "]" * 100_000 + "}"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_a_malformed_finished_run_is_neither_resumed_nor_copied(smoke_dataset, tmp_path, case):
    """Resuming a run whose record holds what the runner never writes fails that run alone, in one line naming
    the file; the other seeds are computed, not copied from it."""
    log = tmp_path / "fits.log"
    [first] = run_benchmark(smoke_dataset, ["toy_fixed"], [0], _options(tmp_path, log))
    name, rewrite = MALFORMED[case]
    path = first.directory / name
    path.write_text(rewrite(json.loads(path.read_text())))
    again = run_benchmark(smoke_dataset, ["toy_fixed"], [0, 1], _options(tmp_path, log))
    assert [r.status for r in again] == ["failed", "done"]
    assert again[0].error.startswith(f"{path}: ") and "--overwrite" in again[0].error and "\n" not in again[0].error
    assert again[1].reused_from is None and _fits(log) == ["0", "1"]


def test_seed_dependent_configs_compute_every_seed(smoke_dataset, tmp_path):
    log = tmp_path / "fits.log"
    results = run_benchmark(smoke_dataset, ["toy_fixed"], [0, 1], _options(tmp_path, log, noise=5.0))
    assert _fits(log) == ["0", "1"] and [r.reused_from for r in results] == [None, None]
    assert results[0].metrics != results[1].metrics


def test_a_twin_computed_with_other_numerics_is_not_copied(smoke_dataset, tmp_path):
    log = tmp_path / "fits.log"
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        run_benchmark(smoke_dataset, ["toy_fixed"], [0], _options(tmp_path, log))
        torch.set_num_threads(2)
        [result] = run_benchmark(smoke_dataset, ["toy_fixed"], [1], _options(tmp_path, log))
    finally:
        torch.set_num_threads(threads)
    assert _fits(log) == ["0", "1"] and result.reused_from is None


def test_zero_shot_winclip_is_seed_independent_and_nothing_else_is():
    from scrapbench.methods.winclip import WinCLIP

    def independent(name, preset, **overrides):
        return WinCLIP.seed_independent(build_config(name, preset, overrides))

    assert independent("winclip", "paper")  # pretrained LAION-400M weights, nothing drawn
    assert independent("winclip", "smoke", clip_pretrained="/weights/clip.pt")
    assert independent("winclip", "smoke")  # random init from load_clip's fixed init seed, not the run's
    assert not independent("winclip_plus", "paper")  # references drawn by the seed
    assert not independent("winclip_plus", "smoke")
    for spec in registry.list_methods():
        name = spec.name
        if name not in ("winclip", "toy_fixed"):
            cls = registry.get_spec(name).load_class()
            assert not cls.seed_independent(build_config(name, "paper")), name


def test_random_init_winclip_gives_every_seed_the_same_maps(smoke_dataset, tmp_path):
    """What WinCLIP.seed_independent claims for its random-initialised presets: seeds change nothing."""
    from scrapbench.core.method import FitContext
    from scrapbench.run.provenance import seed_everything

    images = [sample.image for sample in smoke_dataset.test][:4]
    maps = []
    for seed in (0, 1):
        seed_everything(seed)
        method = registry.create_method("winclip", smoke_dataset.class_names, "smoke")
        method.fit(smoke_dataset.train, FitContext(seed, "cpu", tmp_path / str(seed), smoke_dataset.class_names, False))
        maps.append(method.predict(images))
    for first, second in zip(*maps, strict=True):
        assert (first == second).all()
