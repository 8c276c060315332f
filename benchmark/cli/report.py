"""``scrapbench report``: tables, intervals and figures from a results folder."""

from __future__ import annotations

from pathlib import Path

import typer

from scrapbench.cli.console import FORCE_HELP, console, error_text, fail


def report(
    runs: Path = typer.Argument(Path("runs"), help="Results folder written by `scrapbench run`."),
    out: Path = typer.Option(None, help="Report folder (default: RUNS/report)."),
    dataset: str = typer.Option(None, help="Only runs on this dataset, or on this benchmark's categories (mvtec, "
                                           "visa); needed when RUNS holds several."),
    preset: str = typer.Option(None, help="Only runs of this preset (needed when RUNS holds several)."),
    n_boot: int = typer.Option(1000, help="Paired bootstrap resamples (0: no confidence intervals)."),
    ci: float = typer.Option(0.95, help="Confidence level of the bootstrap intervals."),
    primary_metric: str = typer.Option("ap", help="Metric that picks the best method for the bootstrap."),
    rows: int = typer.Option(4, help="Test images in the qualitative figure."),
    figures: bool = typer.Option(True, "--figures/--no-figures", help="Draw the PNG figures (and the HTML page's "
                                                                      "per-image thumbnails)."),
    html: bool = typer.Option(True, "--html/--no-html", help="Write report.html: every table, figure and a "
                                                             "per-image viewer in one page (no network needed)."),
    published: bool = typer.Option(False, "--published", help="MVTec AD / VisA runs: the papers' numbers beside the "
                                                              "measured means over categories, with the difference."),
    force: bool = typer.Option(False, "--force", help=FORCE_HELP),
    from_: str = typer.Option(None, "--from", help="Read the runs back from MLflow instead of RUNS: mlflow:URI (e.g. "
                                                   "mlflow:sqlite:///runs/mlflow.db); they are downloaded into "
                                                   "OUT/mlflow-runs. Needs scrapbench[track]."),
    experiment: str = typer.Option(None, help="With --from: the MLflow experiment (scrapbench/<dataset>/<preset>); "
                                              "default: the only one there."),
) -> None:
    """Tables (Table 2 / Table 3 layout, or per category for MVTec AD / VisA), intervals and figures from runs."""
    import csv

    from scrapbench.report.dataset_report import ReportError, build_report
    from scrapbench.storage.outdir import OutputError, guard_output, write_marker
    from scrapbench.storage.run_folder import RunFolderError
    from scrapbench.track import TrackError

    out = out or runs / "report"
    try:
        # RUNS/report is the default; RUNS itself is refused
        guard_output(out, [runs], allow_inside=True, command="report", force=force)
        out.mkdir(parents=True, exist_ok=True)
        write_marker(out, "report")  # first: a report that fails half-way can still be rewritten
        if from_ is not None:
            runs = _download(from_, experiment, out, runs)
        elif experiment is not None:
            fail("--experiment reads an MLflow experiment: it needs --from mlflow:URI")
        path = build_report(runs, out, dataset=dataset, preset=preset, n_boot=n_boot, ci=ci,
                            primary_metric=primary_metric, qualitative_rows=rows, figures=figures, published=published,
                            html=html)
    except (ReportError, RunFolderError, OutputError, OSError, TrackError) as exc:
        fail(error_text(exc))
    console.print(f"report written to {path}" + (f" and {path.parent / 'report.html'}" if html else ""))
    with open(path.parent / "failed_runs.csv", newline="") as handle:
        failed = list(csv.DictReader(handle))
    if failed:
        console.print(f"{len(failed)} failed run(s), listed in the report and left out of its tables:", style="red")
        for row in failed:
            console.print(f"  ✗ {row['method']} seed {row['seed']}: {row['message']} ({row['folder']})", style="red")


def _download(spec: str, experiment: str | None, out: Path, runs: Path) -> Path:
    """``--from mlflow:URI``: the experiment's runs as run folders in OUT/mlflow-runs (replaced: a folder of this
    report, under its marker), to report on as on RUNS."""
    import shutil
    import sys

    from scrapbench.track import TrackError, require_mlflow, tracking_uri
    from scrapbench.track.readback import download_grid

    if not spec.startswith("mlflow:"):
        raise TrackError(f"--from {spec!r}: takes mlflow:URI (e.g. mlflow:sqlite:///{runs}/mlflow.db)")
    uri = tracking_uri(spec, runs, option="--from")
    require_mlflow()
    folder = out / "mlflow-runs"
    if folder.is_symlink() or folder.is_file():
        folder.unlink()
    elif folder.exists():
        shutil.rmtree(folder)
    count = download_grid(uri, experiment, folder, progress=sys.stderr.isatty())
    console.print(f"{count} run(s) read back from {uri}")
    return folder
