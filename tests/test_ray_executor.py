"""The Ray executor on a local two-CPU Ray: same files as the local executor, retries, concurrent drivers, shards."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import threading
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'scrapbench[ray]'): Ray executor untested")

from executor_checks import RUN_FILES, leftovers, register_toys, same_run, smoke_options  # noqa: E402
from public_layouts import write_mvtec  # noqa: E402

from scrapbench.run.executors.local import LocalExecutor  # noqa: E402
from scrapbench.run.executors.ray.driver import RayExecutor  # noqa: E402
from scrapbench.run.grid import run_benchmark  # noqa: E402

TESTS = Path(__file__).parent


@pytest.fixture(scope="module", autouse=True)
def ray_cluster():
    """One local Ray for the module: 2 CPUs, no dashboard, workers that can import the toy methods."""
    path = os.pathsep.join(p for p in (str(TESTS), os.environ.get("PYTHONPATH", "")) if p)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR,
             object_store_memory=300 * 2**20, runtime_env={"env_vars": {"PYTHONPATH": path}})
    yield
    ray.shutdown()


@pytest.fixture(autouse=True)
def toy_methods(monkeypatch):
    register_toys(monkeypatch, "toy", "toy_noisy", "toy_broken", "recorder", "dies_once", "toy_fixed",
                  "toy_supervised")






@pytest.mark.slow
def test_smoke_grid_on_ray_equals_the_local_executor(smoke_dataset, tmp_path, one_thread):
    methods, seeds = ["winclip", "anomalyclip", "ours", "toy_noisy"], [0, 1]
    local = run_benchmark(smoke_dataset, methods, seeds, smoke_options(tmp_path / "local"))
    seen = []
    with RayExecutor(cpus_per_run=1) as executor:
        remote = run_benchmark(smoke_dataset, methods, seeds, smoke_options(tmp_path / "ray"), on_result=seen.append,
                               executor=executor)
    assert [r.status for r in remote] == ["done"] * len(local) and len(seen) == len(local)
    for mine, theirs in zip(local, remote, strict=True):
        assert mine.metrics == theirs.metrics
        same_run(mine.directory, theirs.directory)
    record = json.loads((remote[0].directory / "run.json").read_text())
    assert record["execution"] == {"executor": "ray", "storage": "shared", "data": "regenerated", "cpus_per_run": 1,
                                   "gpus_per_run": 0.0, "ray": ray.__version__, "shards": 1}
    assert record["identity"]["compute"]["torch_threads"] == 1
    assert not leftovers(tmp_path / "ray")
    again = run_benchmark(smoke_dataset, methods, seeds, smoke_options(tmp_path / "ray"), executor=RayExecutor())
    assert {r.status for r in again} == {"skipped"}  # resumed: nothing computed twice


@pytest.mark.parametrize("storage", ["shared", "ship"])
def test_a_seed_independent_method_is_computed_once_on_ray(smoke_dataset, tmp_path, storage):
    log = tmp_path / "fits.log"
    options = smoke_options(tmp_path / "ray", overrides={"toy_fixed": {"fit_log": str(log)}})
    with RayExecutor(cpus_per_run=1, storage=storage) as executor:
        results = run_benchmark(smoke_dataset, ["toy_fixed"], [0, 1, 2], options, executor=executor)
    assert len(log.read_text().splitlines()) == 1  # seeds 1 and 2 waited for seed 0 and copied it
    assert [r.reused_from for r in results] == [None, 0, 0]
    assert results[0].metrics == results[1].metrics == results[2].metrics


def test_shipped_results_and_data_equal_shared_ones(smoke_dataset, tmp_path):
    from scrapbench.datasets.folder import read_folder_dataset, write_folder_dataset

    folder = tmp_path / "data"
    write_folder_dataset(folder, smoke_dataset.class_names, {"train": smoke_dataset.train, "test": smoke_dataset.test},
                         meta={"name": "plant"})
    data = read_folder_dataset(folder)
    runs = {}
    for storage in ("shared", "ship"):
        options = smoke_options(tmp_path / storage, dataset_spec=str(folder), shards=2 if storage == "ship" else 1,
                           batch_size=4)
        runs[storage] = run_benchmark(data, ["toy_noisy"], [0, 1], options, executor=RayExecutor(storage=storage))
    for shared, shipped in zip(runs["shared"], runs["ship"], strict=True):
        assert shared.status == shipped.status == "done"
        same_run(shared.directory, shipped.directory)
        assert json.loads((shared.directory / "run.json").read_text())["execution"]["data"] == "read"
        execution = json.loads((shipped.directory / "run.json").read_text())["execution"]
        assert (execution["storage"], execution["data"], execution["shards"]) == ("ship", "shipped", 2)
    assert not leftovers(tmp_path / "ship")


def test_sharded_runs_on_ray_are_bit_identical_to_unsharded(smoke_dataset, tmp_path):
    options = {"batch_size": 4}
    [whole] = run_benchmark(smoke_dataset, ["toy_noisy"], [2], smoke_options(tmp_path / "one", **options),
                            executor=LocalExecutor())
    [parts] = run_benchmark(smoke_dataset, ["toy_noisy"], [2], smoke_options(tmp_path / "two", shards=2, **options),
                            executor=RayExecutor())
    assert json.loads((parts.directory / "metrics.json").read_text()) == \
        json.loads((whole.directory / "metrics.json").read_text())
    for name in RUN_FILES:  # per-image records, kept maps and the evaluator's statistics too
        assert (parts.directory / name).read_bytes() == (whole.directory / name).read_bytes(), name
    assert json.loads((parts.directory / "run.json").read_text())["execution"]["shards"] == 2


@pytest.mark.slow
@pytest.mark.parametrize("storage", ["shared", "ship"])
def test_a_killed_worker_is_retried_and_leaves_thesame_run(smoke_dataset, tmp_path, one_thread, storage):
    marker = tmp_path / "died"
    overrides = {"dies_once": {"die_marker": str(marker)}}
    [result] = run_benchmark(smoke_dataset, ["dies_once"], [0], smoke_options(tmp_path / "ray", overrides=overrides),
                             executor=RayExecutor(max_retries=2, storage=storage))
    assert marker.exists(), "the first attempt did not die"
    # The folder the killed worker was writing: a staging folder beside the run, or (ship) one on its local disk.
    killed_attempt = Path(marker.read_text()).parent
    expected = ".seed0.tmp-" if storage == "shared" else "run"
    assert killed_attempt.name.startswith(expected) and not killed_attempt.exists()
    assert result.status == "done" and not leftovers(tmp_path / "ray")
    [clean] = run_benchmark(smoke_dataset, ["dies_once"], [0], smoke_options(tmp_path / "local", overrides=overrides))
    same_run(clean.directory, result.directory)


@pytest.mark.slow
def test_two_drivers_and_a_local_process_compute_each_run_once(smoke_dataset, tmp_path, one_thread):
    log = tmp_path / "fits.log"
    options = smoke_options(tmp_path / "runs", overrides={"recorder": {"fit_log": str(log), "fit_seconds": 1.0}})
    results = {}

    def drive(name, executor):
        results[name] = run_benchmark(smoke_dataset, ["recorder"], [0, 1, 2], options, executor=executor)

    drivers = [threading.Thread(target=drive, args=(name, executor)) for name, executor in
               (("ray", RayExecutor()), ("ray-ship", RayExecutor(storage="ship")), ("local", LocalExecutor()))]
    for driver in drivers:
        driver.start()
    for driver in drivers:
        driver.join()
    fits = sorted(line.split()[0] for line in log.read_text().splitlines())
    assert fits == ["0", "1", "2"]  # every run fitted exactly once, by whichever driver got its lease
    computed = [r for rs in results.values() for r in rs if r.status == "done" and not r.elsewhere]
    assert sorted(r.seed for r in computed) == [0, 1, 2]
    for rs in results.values():
        assert all(r.status in ("done", "skipped") for r in rs)
        for r in rs:
            record = json.loads((r.directory / "run.json").read_text())
            assert r.metrics == json.loads((r.directory / "metrics.json").read_text())
            assert record["attempt"] == next(c.attempt for c in computed if c.seed == r.seed)


def test_a_failing_method_is_recorded_and_the_grid_goes_on(smoke_dataset, tmp_path):
    results = run_benchmark(smoke_dataset, ["toy_broken", "toy"], [0], smoke_options(tmp_path / "runs"),
                            executor=RayExecutor())
    assert [r.status for r in results] == ["failed", "done"]
    error = json.loads((results[0].directory / "error.json").read_text())
    assert "toy failure" in error["message"] and not (results[0].directory / "run.json").exists()


def test_a_worker_with_other_data_or_numerics_refuses_the_run(smoke_dataset, tmp_path):
    # The driver holds synthetic seed 0 but names seed 1: the workers regenerate seed 1, whose fingerprint differs.
    [other_data] = run_benchmark(smoke_dataset, ["toy"], [0], smoke_options(tmp_path / "a", data_seed=1),
                                 executor=RayExecutor())
    assert other_data.status == "failed" and "is not the driver's" in other_data.error
    assert not other_data.directory.exists()

    class PlannedElsewhere(RayExecutor):
        def prepare(self, dataset, options):
            options = super().prepare(dataset, options)
            planned = {**options.compute_settings, "hardware": "another CPU"}
            return dataclasses.replace(options, compute_settings=planned)

    [other_numerics] = run_benchmark(smoke_dataset, ["toy"], [0], smoke_options(tmp_path / "b"),
                                     executor=PlannedElsewhere())
    assert other_numerics.status == "failed"
    assert "other numerics" in other_numerics.error and "hardware: 'another CPU'" in other_numerics.error


def test_benchmark_categories_on_ray_equal_local_and_ship_what_the_driver_split(tmp_path, one_thread):
    from scrapbench.run.categories import run_categories

    write_mvtec(tmp_path / "mvtec", {"bottle": {"train": 3, "good": 2, "broken_large": 2, "contamination": 3},
                                     "metal_nut": {"train": 2, "good": 1, "bent": 2}})
    spec, methods = f"mvtec:{tmp_path / 'mvtec'}", ["toy", "toy_supervised"]
    local = run_categories(spec, methods, [0, 1], smoke_options(tmp_path / "local"))
    remote = run_categories(spec, methods, [0, 1], smoke_options(tmp_path / "ray"), executor=RayExecutor())
    assert not local.failures and not remote.failures
    assert [r.status for r in remote.results] == ["done"] * 8
    for mine, theirs in zip(local.results, remote.results, strict=True):
        same_run(mine.directory, theirs.directory)
        data = json.loads((theirs.directory / "run.json").read_text())["execution"]["data"]
        # The supervised method trains on a split of the test images the driver drew: no file holds it.
        assert data == ("shipped" if theirs.method == "toy_supervised" else "read"), theirs.directory


_OWN_RAY = """
import sys, time
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from executor_checks import TOY_SPECS, smoke_options
from scrapbench.core import registry
from scrapbench.datasets import load_dataset
from scrapbench.run.executors.ray.driver import RayExecutor
from scrapbench.run.grid import run_benchmark

registry.list_methods()
registry._REGISTRY["dies"] = TOY_SPECS["dies"]
data = load_dataset("synthetic", preset="smoke", seed=0, cache_dir=sys.argv[2])
with RayExecutor(max_retries=0) as executor:
    [result] = run_benchmark(data, ["dies"], [0], smoke_options(Path(sys.argv[3])), executor=executor)
    time.sleep(3)  # the raylet's message about the dead worker arrives meanwhile
print("RESULT", result.status, result.error)
"""


@pytest.mark.slow
def test_a_ray_of_our_own_keeps_the_raylet_off_the_console_and_leaves_no_session(smoke_dataset, tmp_path):
    """Without --verbose, "A worker died…" reaches the console only as the run's own error; the local Ray the
    executor started takes its session folder with it (here in RAY_TMPDIR, by default /tmp/ray)."""
    import subprocess
    import sys
    import tempfile

    ray_tmp = Path(tempfile.mkdtemp(prefix="sbray", dir="/tmp"))  # short: Ray's socket paths have a length limit
    try:
        env = {**os.environ, "RAY_TMPDIR": str(ray_tmp), "PYTHONPATH": str(TESTS)}
        proc = subprocess.run([sys.executable, "-c", _OWN_RAY, str(TESTS), str(smoke_dataset.root.parents[1]),
                               str(tmp_path / "runs")], env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "(raylet)" not in proc.stdout + proc.stderr, (proc.stdout + proc.stderr)[-3000:]
        assert proc.stdout.startswith("RESULT failed WorkerCrashedError"), proc.stdout[-3000:]
        assert not list(ray_tmp.rglob("session_*")), sorted(ray_tmp.rglob("*"))[:10]
    finally:
        import shutil

        shutil.rmtree(ray_tmp, ignore_errors=True)
