"""Runs in an experiment tracker: MLflow, through its own client (``MlflowClient``).

The run folder stays the record; the tracker is a view of it that can be rebuilt at any time:

- ``scrapbench run --track mlflow[:URI]`` logs each run as its result comes in, on the driver, from its finished run
  folder (:mod:`scrapbench.track.log`);
- ``scrapbench track RUNS --to URI`` (re)logs a folder of finished runs, idempotently;
- ``scrapbench report --from mlflow:URI`` reads a grid back into run folders (:mod:`scrapbench.track.readback`).

Layout (:mod:`scrapbench.track.records`): one experiment per dataset (or public benchmark) and preset, one parent run
per grid (``<dataset folder>/<preset>`` of the results folder), one child run per (method, seed), found again by its
identity hash. MLflow is the optional extra ``scrapbench[track]``; nothing here imports it until a tracker is opened.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

#: The one line a missing MLflow gives.
MISSING = "MLflow is not installed; pip install 'scrapbench[track]'"
#: The database of the embedded store, under ``--out``; artifacts go beside it, in :data:`ARTIFACTS_FOLDER`.
DATABASE = "mlflow.db"
ARTIFACTS_FOLDER = "mlartifacts"


class TrackError(ValueError):
    """A tracker that cannot be used as asked (MLflow missing, an unknown tracker, no such experiment)."""


def require_mlflow() -> None:
    """TrackError with :data:`MISSING` when MLflow cannot be imported."""
    if importlib.util.find_spec("mlflow") is None:
        raise TrackError(MISSING)


def embedded_uri(folder: str | Path) -> str:
    """The embedded SQLite store of a results folder: ``sqlite:///<folder>/mlflow.db`` (absolute)."""
    return f"sqlite:///{Path(folder).resolve() / DATABASE}"


def tracking_uri(spec: str, out: str | Path, option: str = "--track") -> str:
    """The MLflow tracking URI ``spec`` names: ``mlflow`` (the embedded store under ``out``) or ``mlflow:URI``.

    ``scrapbench track --to`` also takes a bare URI (``sqlite:///…``, ``http://…``, ``file:…``).
    """
    if spec == "mlflow":
        return embedded_uri(out)
    if spec.startswith("mlflow:"):
        uri = spec[len("mlflow:"):]
        if not uri:
            raise TrackError(f"{option} mlflow:URI needs a URI after the colon (or plain `mlflow`)")
        return uri
    if option != "--track" and ("://" in spec or spec.startswith("file:")):
        return spec
    raise TrackError(f"{option} {spec!r}: takes mlflow (a SQLite store under the results folder) or mlflow:URI "
                     f"(e.g. mlflow:http://localhost:5000)")


def artifact_root(uri: str) -> Path | None:
    """Where a SQLite store's experiments keep their artifacts: beside the database (MLflow's default would be
    ``./mlruns`` under the current folder); None for other stores, which choose their own."""
    if not uri.startswith("sqlite:///"):
        return None
    database = Path(uri[len("sqlite:///"):])
    return database.parent / ARTIFACTS_FOLDER
