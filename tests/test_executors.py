"""Executors without Ray: the registry, sharded prediction in one process, the run command's executor options."""

from __future__ import annotations

import importlib.util
import json

import pytest
from executor_checks import register_toys, same_files
from typer.testing import CliRunner

from scrapbench.cli.main import app
from scrapbench.run.compute import shard_bounds
from scrapbench.run.executors import ExecutorError, create_executor, executor_class
from scrapbench.run.executors.local import LocalExecutor
from scrapbench.run.grid import run_benchmark
from scrapbench.run.plan import RunOptions


@pytest.fixture(autouse=True)
def toy_methods(monkeypatch):
    register_toys(monkeypatch, "toy_noisy")



def test_shard_bounds_cut_whole_batches():
    assert shard_bounds(12, 2, 4) == [(0, 8), (8, 12)]
    assert shard_bounds(12, 3, 4) == [(0, 4), (4, 8), (8, 12)]
    assert shard_bounds(10, 5, 4) == [(0, 4), (4, 8), (8, 10)]  # never more parts than batches
    assert shard_bounds(0, 2, 4) == []
    with pytest.raises(ValueError):
        shard_bounds(10, 0, 4)


@pytest.mark.parametrize("method", ["toy_noisy", "winclip"])
def test_sharded_prediction_is_bit_identical_to_unsharded(smoke_dataset, tmp_path, method):
    # batch 4: the 12 test images are 3 batches, predicted by 3 methods loaded from the saved model folder.
    options = {"preset": "smoke", "show_progress": False, "batch_size": 4}
    [whole] = run_benchmark(smoke_dataset, [method], [1], RunOptions(out=tmp_path / "one", **options))
    [parts] = run_benchmark(smoke_dataset, [method], [1], RunOptions(out=tmp_path / "three", shards=3, **options))
    assert whole.status == parts.status == "done"
    assert whole.metrics == parts.metrics
    same_files(whole.directory, parts.directory)
    record = json.loads((parts.directory / "run.json").read_text())
    assert record["execution"] == {"executor": "local", "shards": 3}
    assert record["identity"] == json.loads((whole.directory / "run.json").read_text())["identity"]


def test_executor_registry():
    assert executor_class("local") is LocalExecutor
    with pytest.raises(KeyError, match="did you mean ray"):
        executor_class("rya")


def test_ray_executor_without_ray_is_one_clear_line(monkeypatch, tmp_path):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    with pytest.raises(ExecutorError, match=r"pip install 'scrapbench\[ray\]'"):
        create_executor("ray")
    result = CliRunner().invoke(app, ["run", "--methods", "toy_noisy", "--preset", "smoke", "--executor", "ray",
                                      "--out", str(tmp_path / "runs")])
    assert result.exit_code == 2
    assert result.output.strip() == "error: --executor ray needs Ray, which is not installed: pip install " \
                                    "'scrapbench[ray]'"
    assert not (tmp_path / "runs").exists()  # refused before anything was generated or written


def test_ray_options_need_the_ray_executor(tmp_path):
    result = CliRunner().invoke(app, ["run", "--methods", "toy_noisy", "--preset", "smoke", "--gpus-per-run", "1",
                                      "--out", str(tmp_path / "runs")])
    assert result.exit_code == 2 and "--gpus-per-run needs --executor ray" in result.output
    result = CliRunner().invoke(app, ["run", "--methods", "toy_noisy", "--executor", "dask",
                                      "--out", str(tmp_path / "runs")])
    assert result.exit_code == 2 and "unknown executor 'dask'" in result.output
