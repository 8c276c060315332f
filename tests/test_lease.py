"""Concurrent writers on one results folder: per-run leases, busy runs, dead holders, exactly-once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from toy_method import ColourDistance, RecordingColourDistance

from scrapbench.core import registry
from scrapbench.run.grid import run_benchmark
from scrapbench.run.lease import lease_path, try_lease, wait_for_lease
from scrapbench.run.lifecycle import run_one
from scrapbench.run.plan import RunOptions, plan_run

TESTS = Path(__file__).parent

# Started twice on one results folder: registers the recording method and runs the grid once the
# test says "go" (both processes are then past their slow imports, so they really run together).
_WORKER = """
import json, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from toy_method import RecordingColourDistance
from scrapbench.core import registry
from scrapbench.datasets import load_dataset
from scrapbench.run.grid import run_benchmark
from scrapbench.run.plan import RunOptions

registry.add_spec(registry.MethodSpec("recorder", RecordingColourDistance, "records fits", ("table2",)))
registry.add_spec(registry.MethodSpec("recorder_broken", RecordingColourDistance, "fails", ("table2",),
                                      {"fail_on_predict": True}))
data = load_dataset(sys.argv[2])
options = RunOptions(preset="smoke", out=Path(sys.argv[3]), show_progress=False,
                     overrides={"recorder": {"fit_log": sys.argv[4], "fit_seconds": 0.4},
                                "recorder_broken": {"fit_log": sys.argv[4] + ".broken", "fit_seconds": 0.2}})
go = Path(sys.argv[5])
(go.parent / f"ready-{sys.argv[6]}").touch()
while not go.exists():
    time.sleep(0.02)
results = run_benchmark(data, ["recorder", "recorder_broken"], range(4), options)
print(json.dumps([[r.method, r.seed, r.status, r.metrics] for r in results]))
"""

# Holds a run's lease, leaves a half-written staging folder, and waits to be killed.
_HOLDER = """
import sys, time
from pathlib import Path
from scrapbench.run.lease import try_lease
run = Path(sys.argv[1])
lease = try_lease(run)
assert lease is not None
(run.parent / f".{run.name}.tmp-otherhost-1-abcdef" / "work").mkdir(parents=True)
print("held", flush=True)
time.sleep(600)
"""


@pytest.fixture(autouse=True)
def toy_methods(monkeypatch):
    registry.list_methods()
    monkeypatch.setitem(registry._REGISTRY, "toy", registry.MethodSpec("toy", ColourDistance, "toy", ("table2",)))
    monkeypatch.setitem(registry._REGISTRY, "recorder", registry.MethodSpec(
        "recorder", RecordingColourDistance, "records fits", ("table2",)))


def _env():
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}


def test_a_lease_excludes_others_until_released(tmp_path):
    run = tmp_path / "out" / "d" / "p" / "m" / "seed0"
    first = try_lease(run)
    assert first is not None and first.path == lease_path(run) and first.path.name == ".seed0.lease"
    assert try_lease(run) is None  # another holder (another open file) is refused, even in one process
    first.release()
    with wait_for_lease(run):
        assert try_lease(run) is None
    assert lease_path(run).exists()  # kept: waiters and newcomers must lock the same inode
    again = try_lease(run)
    assert again is not None
    again.release()


def test_a_busy_run_is_left_alone_and_a_dead_holders_run_is_redone(smoke_dataset, tmp_path):
    options = RunOptions(preset="smoke", out=tmp_path / "runs", show_progress=False)
    plan = plan_run(smoke_dataset, "toy", 0, options)
    directory = plan.directory
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(directory)], stdout=subprocess.PIPE, text=True,
                              env=_env())
    try:
        assert holder.stdout.readline().strip() == "held"
        staging = directory.parent / ".seed0.tmp-otherhost-1-abcdef"
        busy = run_one(smoke_dataset, plan, options)
        assert busy.status == "busy"
        assert staging.is_dir() and not directory.exists()  # the holder's work is untouched
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # The kernel dropped the dead holder's lock: the waiter takes it, clears the leftovers, computes the run.
    result = run_one(smoke_dataset, plan, options, wait=True)
    assert result.status == "done" and not result.elsewhere
    assert (directory / "run.json").is_file() and not staging.exists()


@pytest.mark.slow
def test_two_processes_compute_every_run_exactly_once(smoke_dataset, tmp_path):
    out, log, go = tmp_path / "runs", tmp_path / "fits.log", tmp_path / "go"
    workers = [subprocess.Popen([sys.executable, "-c", _WORKER, str(TESTS), str(smoke_dataset.root), str(out),
                                 str(log), str(go), str(i)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=_env()) for i in range(2)]
    deadline = time.monotonic() + 300
    while not all((tmp_path / f"ready-{i}").exists() for i in range(2)):
        assert time.monotonic() < deadline and all(w.poll() is None for w in workers), \
            [w.communicate()[1][-2000:] for w in workers if w.poll() is not None]
        time.sleep(0.05)
    go.touch()
    outputs = []
    for worker in workers:
        stdout, stderr = worker.communicate(timeout=600)
        assert worker.returncode == 0, stderr[-3000:]
        outputs.append(json.loads(stdout.strip().splitlines()[-1]))

    for path in (log, Path(f"{log}.broken")):  # every run fitted once, by one of the two processes
        assert sorted(int(line.split()[0]) for line in path.read_text().splitlines()) == [0, 1, 2, 3]
    computed = [{seed for method, seed, status, _ in output if method == "recorder" and status == "done"}
                for output in outputs]
    assert computed[0].isdisjoint(computed[1]) and computed[0] | computed[1] == {0, 1, 2, 3}
    for output in outputs:  # each process reports the whole grid, finished here or elsewhere
        assert [(method, seed) for method, seed, *_ in output] == [(m, s) for m in ("recorder", "recorder_broken")
                                                                   for s in range(4)]
        assert all(status in ("done", "skipped") for method, _, status, _ in output if method == "recorder")
        assert all(status == "failed" for method, _, status, _ in output if method == "recorder_broken")

    reference = run_benchmark(
        smoke_dataset, ["recorder"], range(4),
        RunOptions(preset="smoke", out=tmp_path / "alone", show_progress=False,
                   overrides={"recorder": {"fit_log": str(tmp_path / "alone.log"), "fit_seconds": 0.4}}))
    for output in outputs:
        assert [metrics for method, *_, metrics in output if method == "recorder"] == [r.metrics for r in reference]
    [runs] = out.glob("*/smoke/recorder")
    assert sorted(p.name for p in runs.iterdir()) == [".seed0.lease", ".seed1.lease", ".seed2.lease", ".seed3.lease",
                                                     "seed0", "seed1", "seed2", "seed3"]  # no staging left
    assert len(list(out.glob("*/smoke/recorder_broken/seed*/error.json"))) == 4
