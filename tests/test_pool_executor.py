"""The local process pool (``--jobs N``): same files as the local executor with the same threads, resume,
failures and dead workers that stay with their run, Ctrl-C that leaves nothing half-written, the CLI flag."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest
from executor_checks import RUN_FILES, leftovers, register_toys, smoke_options
from public_layouts import write_mvtec
from typer.testing import CliRunner

from scrapbench.cli.main import app
from scrapbench.run.executors import ExecutorError, executor_class
from scrapbench.run.executors import pool as pool_module
from scrapbench.run.executors.pool import MEMORY_PER_RUN, PoolExecutor, resolve_jobs
from scrapbench.run.grid import run_benchmark

TESTS = Path(__file__).parent


@pytest.fixture(autouse=True)
def toy_methods(monkeypatch):
    register_toys(monkeypatch, "toy_noisy", "toy_broken", "toy_fixed", "dies_once", "dies", "toy_supervised")


@pytest.fixture(scope="module")
def pool():
    """Two workers with one thread each, shared by the tests that need no fresh pool (workers start slowly)."""
    with PoolExecutor(2, threads_per_run=1) as executor:
        yield executor





def test_pool_grid_equals_the_local_executor_and_resumes(smoke_dataset, tmp_path, pool, one_thread):
    methods, seeds = ["winclip", "toy_noisy", "toy_fixed", "toy_broken"], [0, 1]
    log = tmp_path / "fits.log"
    overrides = {"toy_fixed": {"fit_log": str(log)}}
    local = run_benchmark(smoke_dataset, methods, seeds, smoke_options(tmp_path / "local", overrides=overrides))
    log.unlink()
    seen = []
    pooled = run_benchmark(smoke_dataset, methods, seeds, smoke_options(tmp_path / "pool", overrides=overrides),
                           on_result=seen.append, executor=pool)
    assert [r.status for r in pooled] == ["done"] * 6 + ["failed"] * 2 and len(seen) == len(pooled)
    for mine, theirs in zip(local, pooled, strict=True):
        if theirs.status != "done":
            continue
        assert mine.metrics == theirs.metrics
        for name in RUN_FILES:
            assert (mine.directory / name).read_bytes() == (theirs.directory / name).read_bytes(), (mine, name)
        ours = json.loads((theirs.directory / "run.json").read_text())
        assert ours["identity"] == json.loads((mine.directory / "run.json").read_text())["identity"]
        assert ours["execution"] == {"executor": "pool", "jobs": 2, "threads_per_run": 1, "shards": 1}
        assert ours["identity"]["compute"]["torch_threads"] == 1
    # A failing method fails alone, recorded as with the local executor.
    assert {r.error for r in pooled if r.status == "failed"} == {"RuntimeError: toy failure"}
    assert all((r.directory / "error.json").is_file() for r in pooled if r.status == "failed")
    # The seed-independent method's second seed waited for the first and copied it.
    assert len(log.read_text().splitlines()) == 1
    assert [r.reused_from for r in pooled if r.method == "toy_fixed"] == [None, 0]
    assert not leftovers(tmp_path / "pool")
    again = run_benchmark(smoke_dataset, methods, seeds, smoke_options(tmp_path / "pool", overrides=overrides),
                          executor=pool)
    assert [r.status for r in again] == ["skipped"] * 6 + ["failed"] * 2  # resumed; the failures retried


def test_benchmark_categories_in_the_pool_equal_local(tmp_path, pool, one_thread):
    from scrapbench.run.categories import run_categories

    write_mvtec(tmp_path / "mvtec", {"bottle": {"train": 3, "good": 2, "broken_large": 2, "contamination": 3},
                                     "metal_nut": {"train": 2, "good": 1, "bent": 2}})
    spec, methods = f"mvtec:{tmp_path / 'mvtec'}", ["toy_noisy", "toy_supervised"]
    local = run_categories(spec, methods, [0, 1], smoke_options(tmp_path / "local"))
    pooled = run_categories(spec, methods, [0, 1], smoke_options(tmp_path / "pool"), executor=pool)
    assert not local.failures and not pooled.failures
    assert [r.status for r in pooled.results] == ["done"] * 8  # supervised splits drawn here reach the workers
    for mine, theirs in zip(local.results, pooled.results, strict=True):
        for name in RUN_FILES:
            assert (mine.directory / name).read_bytes() == (theirs.directory / name).read_bytes(), (mine, name)


def test_a_dead_worker_is_its_runs_failure_and_the_grid_goes_on(smoke_dataset, tmp_path):
    options = smoke_options(tmp_path / "runs", overrides={"dies_once": {"die_marker": str(tmp_path / "died")}})
    with PoolExecutor(2, threads_per_run=1) as executor:
        results = run_benchmark(smoke_dataset, ["dies", "dies_once", "toy_noisy"], [0], options, executor=executor)
    by_method = {r.method: r for r in results}
    assert by_method["dies"].status == "failed" and "worker process died" in by_method["dies"].error
    assert (tmp_path / "died").is_file()  # dies_once lost its worker once, then was computed again
    assert by_method["dies_once"].status == by_method["toy_noisy"].status == "done", results
    assert (by_method["toy_noisy"].directory / "run.json").is_file()


def test_ctrl_c_stops_the_workers_and_leaves_nothing_half_written(tmp_path):
    out, log = tmp_path / "runs", tmp_path / "fits.log"
    script = textwrap.dedent(f"""
        from toy_method import RecordingColourDistance
        from scrapbench.core import registry
        from scrapbench.datasets import load_dataset
        from scrapbench.run.executors.pool import PoolExecutor
        from scrapbench.run.grid import run_benchmark
        from scrapbench.run.plan import RunOptions

        registry.add_spec(registry.MethodSpec("slow", RecordingColourDistance, "slow toy"))
        data = load_dataset("synthetic", preset="smoke", seed=0)
        options = RunOptions(preset="smoke", out={str(out)!r}, show_progress=False,
                             overrides={{"slow": {{"fit_log": {str(log)!r}, "fit_seconds": 600.0}}}})
        with PoolExecutor(2, threads_per_run=1) as executor:
            run_benchmark(data, ["slow"], [0, 1, 2], options, executor=executor)
    """)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])))
    driver = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 240
        while not (log.is_file() and len(log.read_text().splitlines()) == 2):  # both workers are fitting
            assert driver.poll() is None and time.monotonic() < deadline, driver.stdout and driver.stdout.read()
            time.sleep(0.2)
        workers = [p for p in psutil.Process(driver.pid).children() if "spawn_main" in " ".join(p.cmdline())]
        assert len(workers) == 2
        assert leftovers(out)  # the two runs' staging folders
        driver.send_signal(signal.SIGINT)  # the driver alone, as `kill -INT`: it interrupts its workers
        output, _ = driver.communicate(timeout=120)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode != 0 and "KeyboardInterrupt" in output
    assert not leftovers(out) and not list(out.rglob("run.json")) and not list(out.rglob("error.json"))
    _, alive = psutil.wait_procs(workers, timeout=30)
    assert not alive
    assert len(log.read_text().splitlines()) == 2  # the third run never started


def test_jobs_on_the_command_line(tmp_path):
    result = CliRunner().invoke(app, ["run", "--methods", "toy_noisy", "--preset", "smoke", "--seeds", "1",
                                      "--jobs", "2", "--no-progress", "--out", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    [record] = [json.loads(p.read_text()) for p in (tmp_path / "runs").rglob("run.json")]
    assert record["execution"] == {"executor": "pool", "jobs": 2, "threads_per_run": PoolExecutor(2).threads,
                                   "shards": 1}
    for args, message in ((["--jobs", "0"], "--jobs must be at least 1"),
                          (["--jobs", "many"], "--jobs takes a number or auto"),
                          (["--jobs", "2", "--executor", "ray"], "with --executor ray use --cpus-per-run")):
        result = CliRunner().invoke(app, ["run", "--methods", "toy_noisy", "--preset", "smoke",
                                          "--out", str(tmp_path / "no"), *args])
        assert result.exit_code == 2 and message in result.output, result.output
    assert not (tmp_path / "no").exists()


def test_jobs_auto_is_one_run_per_core_as_memory_allows(monkeypatch):
    assert executor_class("pool") is PoolExecutor
    monkeypatch.setattr(pool_module, "default_threads", lambda: 8)
    monkeypatch.setattr(psutil, "virtual_memory", lambda: type("Memory", (), {"available": int(3.5 * MEMORY_PER_RUN)}))
    assert resolve_jobs("auto", "cpu") == 3
    assert resolve_jobs("auto", "cuda") == 1
    assert resolve_jobs("5", "cpu") == 5
    assert PoolExecutor(3).threads == 2 and PoolExecutor(16).threads == 1
    with pytest.raises(ExecutorError):
        resolve_jobs("0", "cpu")

