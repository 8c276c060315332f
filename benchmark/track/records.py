"""What a run folder gives the tracker: its experiment and grid, and one child run's params, metrics, tags, artifacts.

Plain data built from the folder's records (``run.json`` + ``metrics.json``, or ``error.json``); no tracker is
imported here. A run folder is ``OUT/<dataset>/<preset>/<method>/seed<k>`` (``scrapbench.storage.run_folder``): its
grid is ``<dataset>/<preset>``, its experiment ``scrapbench/<dataset or benchmark>/<preset>``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from scrapbench.metrics.summary import HEADLINE_METRICS
from scrapbench.run.provenance import flatten, identity_hash
from scrapbench.storage.run_folder import RunFolderError, read_finished_run, read_json_record

#: A finished run's files logged as artifacts (at the artifact root), when present: what ``report --from`` needs to
#: rebuild the tables (records, per-image scores, the evaluator's state for the bootstrap and curves) and the
#: qualitative figure (the maps).
RUN_ARTIFACTS = ("run.json", "metrics.json", "per_image.csv", "metrics_state.npz", "maps.npz")
#: A failed run's record, logged as its artifact.
ERROR_ARTIFACT = "error.json"
#: Tags (MLflow's own names where it has one).
IDENTITY_TAG, GRID_TAG, FOLDER_TAG = "scrapbench.identity", "scrapbench.grid", "scrapbench.folder"
ERROR_TAG, ATTEMPT_TAG, REUSED_TAG = "scrapbench.error", "scrapbench.attempt", "scrapbench.reused_from"
GIT_TAG, PARENT_TAG = "mlflow.source.git.commit", "mlflow.parentRunId"
FINISHED, FAILED = "FINISHED", "FAILED"
EXPERIMENT_PREFIX = "scrapbench/"


@dataclass(frozen=True)
class Grid:
    """Where a run goes in the tracker: its experiment and its parent run."""

    experiment: str  # scrapbench/<dataset folder, or the benchmark of a category>/<preset>
    name: str  # <dataset folder>/<preset>: the grid's parent run


@dataclass
class ChildRecord:
    """One (method, seed) as a child run."""

    folder: Path
    grid: Grid
    identity: str  # identity_hash of the run's identity
    status: str  # FINISHED | FAILED
    attempt: str | None
    params: dict[str, str]
    metrics: dict[str, float]
    tags: dict[str, str]
    artifacts: list[tuple[Path, str | None]] = field(default_factory=list)  # (file, artifact folder or None)
    start_ms: int | None = None
    end_ms: int | None = None

    @property
    def run_name(self) -> str:
        return f"{self.tags['scrapbench.method']} seed {self.tags['scrapbench.seed']}"


def grid_of(folder: Path, benchmark: str | None = None) -> Grid:
    """The grid of the run folder ``folder`` (``…/<dataset>/<preset>/<method>/seed<k>``); a public benchmark's
    categories (``benchmark``: ``mvtec``, ``visa``) share one experiment, as they share one report."""
    dataset, preset = folder.parents[2].name, folder.parents[1].name
    return Grid(f"{EXPERIMENT_PREFIX}{benchmark or dataset}/{preset}", f"{dataset}/{preset}")


def relative_folder(folder: Path) -> str:
    """``<dataset>/<preset>/<method>/seed<k>``: where ``report --from`` puts the run back."""
    return "/".join(folder.parts[-4:])


def finished_record(folder: Path, benchmark: str | None = None) -> ChildRecord:
    """The child run of a finished run folder (RunFolderError when its records are not what the runner writes)."""
    record, metrics = read_finished_run(folder)
    identity = record.get("identity")
    if not isinstance(identity, dict):  # found again by its identity: without one, it cannot be told apart
        raise RunFolderError(f"{folder / 'run.json'}: no run identity (written by an older scrapbench)")
    dataset = record.get("dataset", {})
    params = _params(identity)
    for key in ("name", "spec", "seed", "num_train", "num_test", "benchmark", "category"):
        if key in dataset:
            params[f"dataset.{key}"] = _text(dataset[key])
    if record.get("learning_type") is not None:
        params["learning_type"] = _text(record["learning_type"])
    values = {name: float(metrics[name]) for name in HEADLINE_METRICS if _number(metrics.get(name))}
    timings = record.get("timings", {})
    values.update({name: float(value) for name, value in timings.items() if _number(value)})
    tags = _tags(folder, record["method"], record["seed"], identity, record.get("attempt"))
    if record.get("git"):
        tags[GIT_TAG] = str(record["git"])
    reused = record.get("reused_from")
    if isinstance(reused, dict) and reused.get("seed") is not None:
        tags[REUSED_TAG] = f"seed {reused['seed']}"
    end_ms = _millis(record.get("date"))
    took = sum(timings.get(key) or 0 for key in ("fit_s", "predict_s") if _number(timings.get(key)))
    artifacts: list[tuple[Path, str | None]] = [(folder / name, None) for name in RUN_ARTIFACTS
                                                if (folder / name).is_file()]
    artifacts += [(png, "figures") for png in figures(folder)]
    return ChildRecord(folder, grid_of(folder, benchmark or dataset.get("benchmark")), identity_hash(identity),
                       FINISHED, record.get("attempt"), params, values, tags, artifacts,
                       None if end_ms is None else end_ms - int(1000 * took), end_ms)


def failed_record(folder: Path, identity: dict[str, Any], message: str | None, attempt: str | None,
                  benchmark: str | None = None) -> ChildRecord:
    """The child run of a failed run: its one-line error as a tag, its ``error.json`` as an artifact when that
    record is of this attempt (a worker that died leaves none)."""
    tags = _tags(folder, identity.get("method", folder.parent.name), identity.get("seed", folder.name[4:]),
                 identity, attempt)
    tags[ERROR_TAG] = " ".join(str(message or "(no message)").split())
    artifacts = []
    end_ms = None
    error = folder / ERROR_ARTIFACT
    if error.is_file():
        try:
            recorded = read_json_record(error)
        except ValueError:
            recorded = {}
        if recorded.get("attempt") == attempt:
            artifacts.append((error, None))
            end_ms = _millis(recorded.get("date"))
    return ChildRecord(folder, grid_of(folder, benchmark), identity_hash(identity), FAILED, attempt,
                       _params(identity), {}, tags, artifacts, end_ms, end_ms)


def figures(folder: Path) -> list[Path]:
    """The run's own figures: PNGs a method drew into its run or work folder (not the data copies below ``work/``)."""
    return sorted([*folder.glob("*.png"), *(folder / "work").glob("*.png")])


def _params(identity: dict[str, Any]) -> dict[str, str]:
    """The identity, flattened (``config.lr``, ``compute.torch_threads``, ``dataset_fingerprint`` …), as text."""
    return {key: _text(value) for key, value in flatten(identity).items() if key}


def _tags(folder: Path, method: Any, seed: Any, identity: dict[str, Any], attempt: str | None) -> dict[str, str]:
    tags = {IDENTITY_TAG: identity_hash(identity), FOLDER_TAG: relative_folder(folder),
            "scrapbench.method": str(method), "scrapbench.seed": str(seed)}
    if attempt:
        tags[ATTEMPT_TAG] = str(attempt)
    return tags


def _text(value: Any) -> str:
    """A param value: strings as they are, anything else as JSON (``null``, ``true``, ``[3, 9]``)."""
    return value if isinstance(value, str) else json.dumps(value)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _millis(date: Any) -> int | None:
    """An ISO date of a record as milliseconds since the epoch (MLflow's times)."""
    try:
        return int(datetime.fromisoformat(str(date)).timestamp() * 1000)
    except ValueError:
        return None
