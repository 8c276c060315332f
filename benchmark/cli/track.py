"""``scrapbench track``: log a folder of finished runs to MLflow, idempotently (``scrapbench.track``)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.text import Text

from scrapbench.cli.console import console, error_text, fail


def track(
    runs: Path = typer.Argument(Path("runs"), help="Results folder written by `scrapbench run`."),
    to: str = typer.Option("mlflow", "--to", help="mlflow (the SQLite store RUNS/mlflow.db, as `run --track mlflow`) "
                                                  "| mlflow:URI | a tracking URI (sqlite:///…, http://HOST:PORT)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
    verbose: bool = typer.Option(False, "--verbose", help="Show MLflow's own output."),
) -> None:
    """Log the finished and failed runs of RUNS to MLflow; runs already there (same identity) are left as they are."""
    from scrapbench.track import TrackError, require_mlflow, tracking_uri
    from scrapbench.track.log import MlflowTracker, log_folder

    if not runs.is_dir():
        fail(f"{runs}: no such folder")
    problems: list[str] = []
    try:
        uri = tracking_uri(to, runs, option="--to")
        require_mlflow()
        tracker = MlflowTracker(uri, problems.append, verbose)
    except TrackError as exc:
        fail(error_text(exc))
    except Exception as exc:  # an URI MLflow has no store for
        from scrapbench.run.compute import one_line_error

        fail(f"--to {to}: {one_line_error(exc)}")
    unusable = log_folder(runs, tracker, show_progress=progress)
    for folder, message in unusable:
        console.print(Text.assemble(("skipped ", "yellow"), f"{folder}: {message}"))
    total = tracker.logged + tracker.present
    if tracker.problems:
        console.print(Text.assemble(("error: ", "bold red"), f"{tracker.problems} write(s) to {uri} failed, the first: "
                                    f"{problems[0]}; {tracker.logged} run(s) logged. Run the same command again to "
                                    f"log the others."))
        raise typer.Exit(code=1)
    if total == 0 and not unusable:
        fail(f"{runs}: no finished or failed runs found")
    console.print(f"{tracker.logged} run(s) logged, {tracker.present} already there → {uri}")
