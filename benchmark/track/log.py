"""Logging runs to MLflow with its own client (``MlflowClient``), never failing a benchmark run.

Each child run is found again by its identity hash (tag ``scrapbench.identity``) anywhere in its experiment: a
run already logged FINISHED is never logged again, so resuming a grid or re-running ``scrapbench track`` adds
nothing. A child is marked FINISHED (or FAILED) only after all of it was logged, so a run whose logging was cut off
(a server that died half-way) is found RUNNING, deleted and logged again whole.

A tracker that is down or refuses a write costs the grid nothing but a warning: every call is guarded, the first
problem is reported once (``on_problem``), later runs are still tried (a server back up gets them), and
``scrapbench track`` fills in what is missing. MLflow's HTTP client retries for minutes by default; this module
sets short timeouts and one retry unless the user set MLflow's variables.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scrapbench.datasets.types import Dataset
from scrapbench.run.compute import one_line_error
from scrapbench.run.plan import RunOptions, RunPlan, RunResult
from scrapbench.storage.run_folder import RunFolderError, path_component
from scrapbench.track import artifact_root, require_mlflow
from scrapbench.track.records import (
    ATTEMPT_TAG,
    FAILED,
    FINISHED,
    GRID_TAG,
    IDENTITY_TAG,
    PARENT_TAG,
    ChildRecord,
    failed_record,
    finished_record,
)

#: MLflow's HTTP settings when the user set none: a dead server answers in seconds, not minutes.
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                 "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
#: MLflow's console output, off unless --verbose: "View run … at" links, a progress bar per artifact downloaded.
QUIET = {"MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
#: Loggers whose output stays out of the console unless --verbose (database migrations, retries).
CHATTY_LOGGERS = ("mlflow", "alembic", "urllib3.connectionpool")


@dataclass
class _Known:
    """A child run already in the tracker."""

    run_id: str
    status: str
    attempt: str | None


def mlflow_client(uri: str, verbose: bool = False) -> Any:
    """An ``MlflowClient`` for ``uri``, with short HTTP timeouts and MLflow's chatter kept out of the console."""
    require_mlflow()
    for name, value in {**HTTP_DEFAULTS, **({} if verbose else QUIET)}.items():
        os.environ.setdefault(name, value)
    from mlflow import MlflowClient  # configures MLflow's loggers: the levels are set after it

    if not verbose:
        for name in CHATTY_LOGGERS:
            logging.getLogger(name).setLevel(logging.ERROR)
        warnings.filterwarnings("ignore", module=r"mlflow(\.|$)")  # e.g. its SQLAlchemy's deprecation notes
    return MlflowClient(tracking_uri=uri)


class MlflowTracker:
    """Logs run folders as child runs of their grid's parent run (see the module docstring).

    ``on_problem(message)`` is called once, with the first problem (one line); ``problems`` counts them all.
    """

    def __init__(self, uri: str, on_problem: Callable[[str], None] = lambda message: None,
                 verbose: bool = False) -> None:
        self.uri = uri
        self.client = mlflow_client(uri, verbose)
        from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH, MAX_PARAMS_TAGS_PER_BATCH

        self._param_limit, self._batch = MAX_PARAM_VAL_LENGTH, MAX_PARAMS_TAGS_PER_BATCH
        self._artifact_root = artifact_root(uri)
        self._on_problem = on_problem
        self.problems = 0
        self.logged = self.present = 0
        self._experiments: dict[str, str] = {}  # name → id
        self._children: dict[str, dict[str, list[_Known]]] = {}  # experiment id → identity hash → child runs
        self._parents: dict[tuple[str, str], str] = {}  # (experiment id, grid) → parent run id
        self._touched: set[str] = set()  # parents that got a child here

    # -- what the grid and `scrapbench track` call --------------------------------------------------------------
    def open_grid(self, dataset: Dataset, plans: Sequence[RunPlan], options: RunOptions) -> GridLog:
        """The log of one grid's results (``scrapbench.run.grid.run_plans`` calls it on the driver)."""
        return GridLog(self, {plan.pair: plan for plan in plans}, dataset.notes.get("benchmark"))

    def log(self, record: ChildRecord) -> str:
        """Log one child run unless it is there: ``logged``, ``present`` or ``failed`` (the problem reported)."""
        try:
            outcome = self._log(record)
        except Exception as exc:  # a tracker's problem never fails the benchmark: report it, go on
            self._problem(exc)
            self._children.clear()  # what the tracker holds is unknown now: look again next time
            self._parents.clear()
            return "failed"
        if outcome == "logged":
            self.logged += 1
        else:
            self.present += 1
        return outcome

    def finish(self) -> None:
        """Mark FINISHED the parents that got children here, and those found still RUNNING (a parent is RUNNING
        while its grid logs)."""
        for run_id in sorted(self._touched):
            try:
                self.client.set_terminated(run_id, FINISHED)
            except Exception as exc:
                self._problem(exc)
        self._touched.clear()

    # -- the work -----------------------------------------------------------------------------------------------
    def _log(self, record: ChildRecord) -> str:
        experiment = self._experiment(record.grid.experiment)
        known = self._known_children(experiment).setdefault(record.identity, [])
        if any(child.status == FINISHED for child in known):
            return "present"
        if record.status == FAILED and any(child.status == FAILED and child.attempt == record.attempt
                                           for child in known):
            return "present"
        for child in known:  # cut off half-way, or a failed attempt that a later one supersedes
            self.client.delete_run(child.run_id)
        known.clear()
        parent = self._parent(experiment, record.grid.name)
        run = self.client.create_run(experiment, start_time=record.start_ms, run_name=record.run_name,
                                     tags={**record.tags, PARENT_TAG: parent})
        run_id = run.info.run_id
        known.append(_Known(run_id, "RUNNING", record.attempt))
        self._log_values(run_id, record)
        for path, folder in record.artifacts:
            self.client.log_artifact(run_id, str(path), folder)
        self.client.set_terminated(run_id, record.status, end_time=record.end_ms)
        known[-1].status = record.status
        self._touched.add(parent)
        return "logged"

    def _log_values(self, run_id: str, record: ChildRecord) -> None:
        from mlflow.entities import Metric, Param

        # MLflow refuses a param longer than its limit; the identity hash (a tag) and run.json hold it whole.
        params = [Param(key, value if len(value) <= self._param_limit else value[:self._param_limit - 1] + "…")
                  for key, value in sorted(record.params.items())]
        for start in range(0, len(params), self._batch):
            self.client.log_batch(run_id, params=params[start:start + self._batch], synchronous=True)
        when = record.end_ms or 0
        metrics = [Metric(key, value, when, 0) for key, value in sorted(record.metrics.items())]
        if metrics:
            self.client.log_batch(run_id, metrics=metrics, synchronous=True)

    def _experiment(self, name: str) -> str:
        if name not in self._experiments:
            found = self.client.get_experiment_by_name(name)
            if found is not None:
                if found.lifecycle_stage == "deleted":
                    self.client.restore_experiment(found.experiment_id)
                self._experiments[name] = found.experiment_id
            else:
                location = None if self._artifact_root is None else \
                    (self._artifact_root / path_component(name, "experiment")).resolve().as_uri()
                self._experiments[name] = self.client.create_experiment(name, artifact_location=location)
        return self._experiments[name]

    def _known_children(self, experiment: str) -> dict[str, list[_Known]]:
        """Every active child run of the experiment by identity hash, and its parents (one search, cached)."""
        if experiment not in self._children:
            from mlflow.entities import ViewType

            children: dict[str, list[_Known]] = {}
            token = None
            while True:
                page = self.client.search_runs([experiment], run_view_type=ViewType.ACTIVE_ONLY, max_results=1000,
                                               page_token=token)
                for run in page:
                    tags = run.data.tags
                    if IDENTITY_TAG in tags:
                        children.setdefault(tags[IDENTITY_TAG], []).append(
                            _Known(run.info.run_id, run.info.status, tags.get(ATTEMPT_TAG)))
                    elif GRID_TAG in tags:
                        self._parents.setdefault((experiment, tags[GRID_TAG]), run.info.run_id)
                        if run.info.status == "RUNNING":  # its grid could not close it (a tracker gone meanwhile)
                            self._touched.add(run.info.run_id)
                token = page.token
                if not token:
                    break
            self._children[experiment] = children
        return self._children[experiment]

    def _parent(self, experiment: str, grid: str) -> str:
        """The grid's parent run: found by its ``scrapbench.grid`` tag, or created (RUNNING until :meth:`finish`)."""
        self._known_children(experiment)
        if (experiment, grid) not in self._parents:
            run = self.client.create_run(experiment, run_name=grid, tags={GRID_TAG: grid})
            self._parents[(experiment, grid)] = run.info.run_id
        return self._parents[(experiment, grid)]

    def _problem(self, exc: BaseException) -> None:
        self.problems += 1
        if self.problems == 1:
            self._on_problem(one_line_error(exc))


class GridLog:
    """One grid's results as they come in: each finished or failed run logged from its run folder."""

    def __init__(self, tracker: MlflowTracker, plans: dict[tuple[str, int], RunPlan], benchmark: str | None) -> None:
        self.tracker, self.plans, self.benchmark = tracker, plans, benchmark

    def log(self, result: RunResult) -> None:
        if result.status == "busy":
            return
        if result.status == "failed":
            plan = self.plans[(result.method, result.seed)]
            record = failed_record(Path(result.directory), plan.identity, result.error, result.attempt, self.benchmark)
        else:
            try:
                record = finished_record(Path(result.directory), self.benchmark)
            except RunFolderError:
                return  # not the tracker's to report: the report lists an unusable run
        self.tracker.log(record)

    def close(self) -> None:
        self.tracker.finish()


def log_folder(runs_dir: Path, tracker: MlflowTracker, show_progress: bool = True) -> list[tuple[Path, str]]:
    """Log every finished and failed run below ``runs_dir`` that the tracker does not hold yet (``scrapbench
    track``); returns the runs that could not be read, with why. Progress: one bar over the runs."""
    from tqdm.auto import tqdm

    from scrapbench.storage.run_folder import iter_failed_runs, iter_finished_runs

    records, unusable = [], []
    for folder in iter_finished_runs(runs_dir):
        try:
            records.append(finished_record(folder))
        except RunFolderError as exc:
            unusable.append((folder, str(exc)))
    # A failed run's record does not name its benchmark: its finished neighbours in the same dataset folder do.
    benchmarks = {record.folder.parents[2]: record.params["dataset.benchmark"] for record in records
                  if "dataset.benchmark" in record.params}
    for folder, error in iter_failed_runs(runs_dir):
        if not isinstance(error.get("identity"), dict):
            unusable.append((folder, f"{folder / 'error.json'}: no run identity"))
            continue
        records.append(failed_record(folder, error["identity"], error.get("message"), error.get("attempt"),
                                     benchmarks.get(folder.parents[2])))
    for record in tqdm(records, desc="tracking", unit="run", disable=not show_progress):
        tracker.log(record)
    tracker.finish()
    return unusable
