"""MLflow tracking against a real MLflow: the embedded SQLite store read back with ``MlflowClient``, and a real
``mlflow server`` process (SQLite backend) that is killed in the middle of a grid."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from executor_checks import register_toys, smoke_options

pytest.importorskip("mlflow")

from mlflow import MlflowClient

from scrapbench.run.provenance import identity_hash
from scrapbench.track.records import GRID_TAG, IDENTITY_TAG

EXPERIMENT = "scrapbench/synthetic-seed0/smoke"
METHODS = "toy,toy_noisy,toy_broken,toy_fixed"  # toy_broken fails; toy_fixed's seed 1 copies its seed 0


def _cli(*args):
    from typer.testing import CliRunner

    from scrapbench.cli.main import app

    return CliRunner().invoke(app, [str(a) for a in args])


def _grid_args(out: Path, *more) -> list:
    return ["run", "--methods", METHODS, "--seeds", "2", "--preset", "smoke", "--out", out, "--no-progress",
            "--set", f"toy_fixed.fit_log={out.parent / 'fits.log'}", *more]


def _runs(client: MlflowClient, experiment: str = EXPERIMENT) -> tuple[list, list]:
    """(parents, children) of the experiment: its active runs."""
    found = client.get_experiment_by_name(experiment)
    assert found is not None, [e.name for e in client.search_experiments()]
    runs = client.search_runs([found.experiment_id], max_results=1000)
    return [r for r in runs if GRID_TAG in r.data.tags], [r for r in runs if IDENTITY_TAG in r.data.tags]


def _by_pair(children: list) -> dict:
    return {(r.data.tags["scrapbench.method"], int(r.data.tags["scrapbench.seed"])): r for r in children}


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    """One grid run with --track mlflow (the embedded store), twice: (out, first output, second output)."""
    out = tmp_path_factory.mktemp("tracked") / "runs"
    with pytest.MonkeyPatch.context() as patch:
        register_toys(patch, "toy", "toy_noisy", "toy_broken", "toy_fixed")
        first = _cli(*_grid_args(out, "--track", "mlflow"))
        second = _cli(*_grid_args(out, "--track", "mlflow"))
    assert first.exit_code == 1, first.output  # toy_broken's runs fail; the others finish
    return out, first.output, second.output


@pytest.fixture
def toys(monkeypatch):
    register_toys(monkeypatch, "toy", "toy_noisy", "toy_broken", "toy_fixed")


def test_run_logs_every_run_once_into_the_embedded_store(tracked):
    out, first, second = tracked
    assert "MLflow: 8 run(s) logged, 0 already there" in first
    for chatter in ("View run", "INFO", "alembic", "Creating initial"):
        assert chatter not in first
    client = MlflowClient(f"sqlite:///{out}/mlflow.db")
    [parent], children = _runs(client)
    assert parent.info.run_name == "synthetic-seed0/smoke" and parent.info.status == "FINISHED"
    assert len(children) == 8
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parent.info.run_id}
    runs = _by_pair(children)
    assert {pair for pair, r in runs.items() if r.info.status == "FAILED"} == {("toy_broken", 0), ("toy_broken", 1)}
    assert runs[("toy_broken", 0)].data.tags["scrapbench.error"] == "RuntimeError: toy failure"

    folder = out / "synthetic-seed0" / "smoke" / "toy_noisy" / "seed1"
    record, metrics = (json.loads((folder / name).read_text()) for name in ("run.json", "metrics.json"))
    child = runs[("toy_noisy", 1)]
    assert child.info.status == "FINISHED" and child.info.artifact_uri.startswith((out / "mlartifacts").as_uri())
    assert child.data.tags[IDENTITY_TAG] == identity_hash(record["identity"])
    if record.get("git"):
        assert child.data.tags["mlflow.source.git.commit"] == record["git"]
    params = child.data.params
    assert params["config.noise"] == "5.0" and params["seed"] == "1" and params["preset"] == "smoke"
    assert params["dataset_fingerprint"] == record["identity"]["dataset_fingerprint"]
    assert params["compute.torch_threads"] == str(record["identity"]["compute"]["torch_threads"])
    for name in ("auroc", "aupro", "ap", "f1max", "image_auroc", "image_ap"):
        assert child.data.metrics[name] == pytest.approx(metrics[name])
    assert child.data.metrics["predict_images_per_s"] == record["timings"]["predict_images_per_s"]
    assert "fit_s" in child.data.metrics
    listed = {a.path for a in client.list_artifacts(child.info.run_id)}
    assert {"run.json", "metrics.json", "per_image.csv", "metrics_state.npz", "maps.npz"} <= listed
    assert runs[("toy_fixed", 1)].data.tags["scrapbench.reused_from"] == "seed 0"
    assert "scrapbench.reused_from" not in runs[("toy_fixed", 0)].data.tags

    # The second, identical command adds nothing: the finished runs are found by their identity; the failed ones
    # were retried and failed again, and their new attempt replaced the old one's record.
    assert "MLflow: 2 run(s) logged, 6 already there" in second
    [parent_again], again = _runs(client)
    assert parent_again.info.run_id == parent.info.run_id and len(again) == 8
    finished = {r.info.run_id for r in children if r.info.status == "FINISHED"}
    assert finished == {r.info.run_id for r in again if r.info.status == "FINISHED"}


def test_report_from_mlflow_gives_the_tables_of_the_run_folder(tracked, tmp_path):
    out, _, _ = tracked
    direct = _cli("report", out, "--out", tmp_path / "direct", "--n-boot", "50", "--no-figures")
    assert direct.exit_code == 0, direct.output
    back = _cli("report", "--from", f"mlflow:sqlite:///{out}/mlflow.db", "--experiment", EXPERIMENT,
                "--out", tmp_path / "back", "--n-boot", "50", "--no-figures")
    assert back.exit_code == 0, back.output
    assert "8 run(s) read back" in back.output and "Downloading artifacts" not in back.output
    for name in ("table2.csv", "table2.md", "bootstrap.csv", "per_class.csv", "per_size.csv", "failed_runs.csv"):
        assert (tmp_path / "back" / name).read_bytes() == (tmp_path / "direct" / name).read_bytes(), name
    unknown = _cli("report", "--from", f"mlflow:sqlite:///{out}/mlflow.db", "--experiment", "nope",
                   "--out", tmp_path / "back")
    assert unknown.exit_code == 2 and "no experiment 'nope'" in unknown.output and EXPERIMENT in unknown.output


def test_track_logs_a_folder_idempotently_and_fills_in(tracked, tmp_path):
    out, _, _ = tracked
    uri = f"sqlite:///{tmp_path / 'other' / 'mlflow.db'}"
    first = _cli("track", out, "--to", uri, "--no-progress")
    assert first.exit_code == 0, first.output
    assert "8 run(s) logged, 0 already there" in first.output
    client = MlflowClient(uri)
    [parent], children = _runs(client)
    assert len(children) == 8 and parent.info.status == "FINISHED"
    assert (tmp_path / "other" / "mlartifacts").is_dir()
    second = _cli("track", out, "--to", uri, "--no-progress")
    assert second.exit_code == 0 and "0 run(s) logged, 8 already there" in second.output, second.output
    # A child that is gone, and one whose logging was cut off half-way (still RUNNING): both logged again, once.
    runs = _by_pair(children)
    client.delete_run(runs[("toy", 0)].info.run_id)
    client.update_run(runs[("toy", 1)].info.run_id, status="RUNNING")
    third = _cli("track", out, "--to", uri, "--no-progress")
    assert third.exit_code == 0 and "2 run(s) logged, 6 already there" in third.output, third.output
    [_], now = _runs(client)
    assert len(now) == 8 and all(r.info.status in ("FINISHED", "FAILED") for r in now)


def test_a_missing_mlflow_is_one_clear_line(tmp_path, monkeypatch, toys):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if it were not installed
    for args in (_grid_args(tmp_path / "runs", "--track", "mlflow"), ["track", tmp_path, "--to", "mlflow"],
                 ["report", "--from", "mlflow:sqlite:///x.db", "--out", tmp_path / "report"]):
        result = _cli(*args)
        assert result.exit_code == 2, result.output
        assert "pip install 'scrapbench[track]'" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "runs").exists()  # refused before anything ran


def test_an_unknown_tracker_is_refused_before_anything_runs(tmp_path, toys):
    result = _cli(*_grid_args(tmp_path / "runs", "--track", "wandb"))
    assert result.exit_code == 2 and "--track 'wandb'" in result.output, result.output
    assert not (tmp_path / "runs").exists()


# -- a real tracking server ------------------------------------------------------------------------------------


class Server:
    """``mlflow server`` on a free localhost port with a SQLite backend; started (and restarted) by the tests."""

    def __init__(self, folder: Path) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.folder, self.process = folder, None
        self.uri = f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 180.0) -> None:
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        with open(self.folder / "server.log", "ab") as log:  # the child keeps its own copy of the handle
            self.process = subprocess.Popen(
                [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(self.port),
                 "--workers", "1", "--backend-store-uri", f"sqlite:///{self.folder / 'server.db'}",
                 "--artifacts-destination", str(self.folder / "artifacts")],
                cwd=self.folder, env=env, stdout=subprocess.DEVNULL, stderr=log,
                start_new_session=True)  # its own process group: uvicorn runs in a child process
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, (self.folder / "server.log").read_text()[-2000:]
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        raise TimeoutError(f"mlflow server did not answer in {timeout} s")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)  # the group this test started: server and its workers
            self.process.wait()
        self.process = None


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    server = Server(tmp_path_factory.mktemp("mlflow_server"))
    server.start()
    yield server
    server.kill()


@pytest.mark.slow
def test_a_server_killed_mid_grid_costs_nothing_and_track_fills_in(server, smoke_dataset, tmp_path, toys):
    """In the --jobs pool: results come back to the driver, which logs them (the local executor: ``tracked``)."""
    from scrapbench.run.executors.pool import PoolExecutor
    from scrapbench.run.grid import run_benchmark
    from scrapbench.track.log import MlflowTracker

    warnings: list[str] = []
    tracker = MlflowTracker(server.uri, warnings.append)
    seen = []

    def kill_after_two(result) -> None:  # before the tracker logs it: the third run onwards meets a dead server
        seen.append(result)
        if len(seen) == 3:
            server.kill()

    out = tmp_path / "runs"
    started = time.monotonic()
    with PoolExecutor(2, threads_per_run=1) as pool:
        results = run_benchmark(smoke_dataset, ["toy", "toy_noisy", "toy_broken"], [0, 1], smoke_options(out),
                                on_result=kill_after_two, tracker=tracker, executor=pool)
    assert time.monotonic() - started < 90  # a dead server is not waited for (two workers start in ~10 s)
    assert [r.status for r in results] == ["done"] * 4 + ["failed"] * 2  # the grid finished, nothing lost
    assert len(warnings) == 1 and tracker.logged == 2 and tracker.problems >= 4, warnings
    assert "\n" not in warnings[0]

    server.start()
    client = MlflowClient(server.uri)
    [parent], children = _runs(client)
    assert parent.info.status == "RUNNING" and len(children) == 2  # the parent was not closed: the server was dead
    filled = _cli("track", out, "--to", f"mlflow:{server.uri}", "--no-progress")
    assert filled.exit_code == 0 and "4 run(s) logged, 2 already there" in filled.output, filled.output
    assert "View run" not in filled.output and "Traceback" not in filled.output
    [parent], children = _runs(client)
    assert parent.info.status == "FINISHED" and len(children) == 6
    assert {r.info.status for r in children} == {"FINISHED", "FAILED"}
    # the grid read back through the server (its only scrapbench experiment) gives the tables of the run folder
    direct = _cli("report", out, "--out", tmp_path / "direct", "--n-boot", "0", "--no-figures")
    back = _cli("report", "--from", f"mlflow:{server.uri}", "--out", tmp_path / "back", "--n-boot", "0",
                "--no-figures")
    assert direct.exit_code == 0 and back.exit_code == 0, back.output
    assert (tmp_path / "back" / "table2.csv").read_bytes() == (tmp_path / "direct" / "table2.csv").read_bytes()


def test_a_param_longer_than_mlflow_allows_is_cut_not_refused(tracked, tmp_path):
    from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

    from scrapbench.track.log import MlflowTracker
    from scrapbench.track.records import finished_record

    out, _, _ = tracked
    record = finished_record(out / "synthetic-seed0" / "smoke" / "toy" / "seed0")
    record.params["config.prompt"] = "x" * (MAX_PARAM_VAL_LENGTH + 10)
    problems: list[str] = []
    tracker = MlflowTracker(f"sqlite:///{tmp_path / 'mlflow.db'}", problems.append)
    assert tracker.log(record) == "logged" and not problems
    [_], [child] = _runs(MlflowClient(tracker.uri))
    value = child.data.params["config.prompt"]
    assert len(value) == MAX_PARAM_VAL_LENGTH and value.endswith("…")


def test_a_benchmarks_categories_share_one_experiment(tmp_path, monkeypatch):
    from public_layouts import write_mvtec

    from scrapbench.run.categories import run_categories
    from scrapbench.track.log import MlflowTracker

    register_toys(monkeypatch, "toy_noisy", "toy_broken")
    write_mvtec(tmp_path / "mvtec", {"bottle": {"train": 3, "good": 2, "broken_large": 2},
                                     "metal_nut": {"train": 2, "good": 1, "bent": 2}})
    out, uri = tmp_path / "runs", f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}"
    tracker = MlflowTracker(uri)
    grid = run_categories(f"mvtec:{tmp_path / 'mvtec'}", ["toy_noisy", "toy_broken"], [0], smoke_options(out),
                          tracker=tracker)
    assert [r.status for r in grid.results] == ["done", "failed"] * 2 and tracker.logged == 4
    parents, children = _runs(MlflowClient(uri), "scrapbench/mvtec/smoke")
    assert sorted(p.info.run_name for p in parents) == ["mvtec-bottle/smoke", "mvtec-metal_nut/smoke"]
    assert len(children) == 4 and sum(c.info.status == "FAILED" for c in children) == 2
    by_parent = {p.info.run_id: p.info.run_name.split("/")[0] for p in parents}
    assert {(by_parent[c.data.tags["mlflow.parentRunId"]], c.data.tags["scrapbench.folder"].split("/")[0])
            for c in children} == {("mvtec-bottle", "mvtec-bottle"), ("mvtec-metal_nut", "mvtec-metal_nut")}
