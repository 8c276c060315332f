"""The runner: files written, resume after interruption, failures recorded, determinism, CLI."""

from __future__ import annotations

import json

import pytest
from toy_method import ColourDistance

from scrapbench import registry
from scrapbench.runner import RunIdentityError, RunOptions, run_benchmark


@pytest.fixture(autouse=True)
def toy_methods(monkeypatch):
    registry.list_methods()  # load the built-ins first
    monkeypatch.setitem(registry._REGISTRY, "toy", registry.MethodSpec("toy", ColourDistance, "toy", ("table2",)))
    monkeypatch.setitem(registry._REGISTRY, "toy_noisy",
                        registry.MethodSpec("toy_noisy", ColourDistance, "noisy toy", (), {"noise": 5.0}))
    monkeypatch.setitem(registry._REGISTRY, "toy_broken",
                        registry.MethodSpec("toy_broken", ColourDistance, "fails", (), {"fail_on_predict": True}))


def _options(tmp_path, **kw):
    return RunOptions(preset="smoke", out=tmp_path / "runs", show_progress=False, **kw)


def test_run_writes_a_complete_record(smoke_dataset, tmp_path):
    [result] = run_benchmark(smoke_dataset, ["toy"], [0], _options(tmp_path))
    assert result.status == "done"
    folder = result.directory
    for name in ("run.json", "metrics.json", "metrics_state.npz", "per_image.csv", "maps.npz", "model/method.json"):
        assert (folder / name).exists(), name
    record = json.loads((folder / "run.json").read_text())
    assert record["method"] == "toy" and record["seed"] == 0 and record["preset"] == "smoke"
    assert record["timings"]["fit_s"] >= 0 and record["timings"]["peak_rss_mb"] > 0
    assert record["versions"]["torch"] and record["config"]["max_images"] == 4
    metrics = json.loads((folder / "metrics.json").read_text())
    assert all(0.0 <= metrics[k] <= 1.0 for k in ("auroc", "aupro", "ap", "f1max"))
    assert not list(folder.glob("**/.*.tmp*")) and not list(folder.glob(".*"))  # no temp files left


def test_finished_runs_are_skipped_and_interrupted_ones_redone(smoke_dataset, tmp_path):
    options = _options(tmp_path)
    first = run_benchmark(smoke_dataset, ["toy"], [0, 1], options)
    assert [r.status for r in first] == ["done", "done"]
    # Simulate a crash during seed 1: its folder exists but has no run.json.
    (first[1].directory / "run.json").unlink()
    stamp = (first[0].directory / "run.json").stat().st_mtime_ns
    second = run_benchmark(smoke_dataset, ["toy"], [0, 1], options)
    assert [r.status for r in second] == ["skipped", "done"]
    assert (first[0].directory / "run.json").stat().st_mtime_ns == stamp
    assert second[0].metrics == first[0].metrics


def test_changed_config_is_not_silently_mixed(smoke_dataset, tmp_path):
    run_benchmark(smoke_dataset, ["toy"], [0], _options(tmp_path))
    changed = _options(tmp_path, overrides={"toy": {"max_images": 2}})
    with pytest.raises(RunIdentityError, match="another identity"):
        run_benchmark(smoke_dataset, ["toy"], [0], changed)
    [redone] = run_benchmark(smoke_dataset, ["toy"], [0], _options(tmp_path, overrides={"toy": {"max_images": 2}},
                                                                  overwrite=True))
    assert redone.status == "done"


def test_a_failing_method_is_recorded_and_others_go_on(smoke_dataset, tmp_path):
    results = run_benchmark(smoke_dataset, ["toy_broken", "toy"], [0], _options(tmp_path))
    assert [r.status for r in results] == ["failed", "done"]
    error = json.loads((results[0].directory / "error.json").read_text())
    assert "toy failure" in error["error"] and not (results[0].directory / "run.json").exists()


def test_same_seed_same_numbers(smoke_dataset, tmp_path):
    a = run_benchmark(smoke_dataset, ["toy_noisy"], [3], _options(tmp_path / "a"))[0]
    b = run_benchmark(smoke_dataset, ["toy_noisy"], [3], _options(tmp_path / "b"))[0]
    c = run_benchmark(smoke_dataset, ["toy_noisy"], [4], _options(tmp_path / "c"))[0]
    assert a.metrics == b.metrics
    assert a.metrics != c.metrics


def test_cli_run_and_resume(smoke_dataset, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from scrapbench.cli import app

    monkeypatch.setenv("SCRAPBENCH_CACHE", str(tmp_path / "cache"))
    args = ["run", "--methods", "toy", "--seeds", "2", "--preset", "smoke", "--out", str(tmp_path / "runs"),
            "--no-progress"]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "toy seed 1" in first.output
    second = CliRunner().invoke(app, args)
    assert second.exit_code == 0 and "↷ toy seed 0" in second.output
    bad = CliRunner().invoke(app, ["run", "--methods", "toy", "--set", "ours.epochs=1", "--preset", "smoke",
                                   "--out", str(tmp_path / "runs")])
    assert bad.exit_code == 2 and "not being run" in bad.output
    unknown = CliRunner().invoke(app, ["run", "--methods", "tooy", "--out", str(tmp_path / "runs")])
    assert unknown.exit_code == 2 and "did you mean toy" in unknown.output
