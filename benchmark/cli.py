"""The ``scrapbench`` command line."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Pixel-level anomaly segmentation benchmark for steel-scrap recycling.")
console = Console()


def _fail(message: str) -> None:
    console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code=2)


@app.command("list")
def list_command(suite: str = typer.Option(None, help="Only methods of this suite (table2, ablation).")) -> None:
    """Show every registered method."""
    from scrapbench.registry import list_methods

    table = Table("method", "suites", "description")
    for spec in list_methods(suite):
        table.add_row(spec.name, ",".join(spec.suites) or "-", spec.description)
    console.print(table)


@app.command()
def run(
    methods: list[str] = typer.Option(["all"], "--methods", "-m",
                                      help="Names, comma lists, `all` (Table 2) or `ablation` (Table 3)."),
    seeds: int = typer.Option(3, help="Number of seeds per method (seeds first_seed..first_seed+N-1)."),
    first_seed: int = typer.Option(0, help="First seed."),
    dataset: str = typer.Option("synthetic", help="`synthetic` or a dataset folder (see README)."),
    data_seed: int = typer.Option(0, help="Seed of the synthetic dataset (not of the methods)."),
    preset: str = typer.Option("cpu", help="smoke | cpu | paper | a preset YAML file."),
    device: str = typer.Option("cpu", help="cpu, cuda, cuda:1 ..."),
    out: Path = typer.Option(Path("runs"), help="Results folder (finished runs in it are skipped)."),
    set_: list[str] = typer.Option([], "--set", help="Config override METHOD.FIELD=VALUE (repeatable)."),
    weights: str = typer.Option(None, help="Pretrained weights (tag or file) for a single chosen method."),
    save_maps: bool = typer.Option(None, "--save-maps/--no-save-maps",
                                   help="Keep anomaly maps (float16) for figures; default: if ≤500 test images."),
    overwrite: bool = typer.Option(False, help="Recompute finished runs whose config differs."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
) -> None:
    """Fit, predict and evaluate methods over several seeds; resumes where it stopped."""
    from scrapbench.datasets import DatasetError, load_dataset
    from scrapbench.presets import resolve_preset
    from scrapbench.registry import get_spec, resolve_method_names
    from scrapbench.runner import ConfigMismatchError, RunOptions, run_benchmark

    try:
        names = resolve_method_names(methods)
        resolved = resolve_preset(preset, set_)
        overrides = dict(resolved.overrides)
        if weights is not None:
            if len(names) != 1:
                _fail("--weights needs exactly one method (use --set METHOD.FIELD=PATH for several)")
            field_name = getattr(get_spec(names[0]).load_class(), "weights_field", None)
            if field_name is None:
                _fail(f"method {names[0]!r} takes no pretrained weights")
            overrides.setdefault(names[0], {})[field_name] = weights
        unknown = sorted(set(overrides) - set(names))
        if unknown:
            _fail(f"settings for methods not being run: {unknown}")
        data = load_dataset(dataset, preset=resolved.name, seed=data_seed)
    except (KeyError, ValueError, DatasetError) as exc:
        _fail(str(exc.args[0]) if isinstance(exc, KeyError) else str(exc))
    options = RunOptions(preset=resolved.name, device=device, out=out, dataset_spec=dataset, data_seed=data_seed,
                         save_maps=save_maps, overrides=overrides, overwrite=overwrite, show_progress=progress)
    console.print(f"dataset [bold]{data.name}[/]: {len(data.train)} train / {len(data.test)} test images, "
                  f"classes {', '.join(data.class_names)}; preset [bold]{resolved.name}[/]; {len(names)} methods "
                  f"× {seeds} seeds → {out}")

    def show(result) -> None:
        if result.status == "failed":
            console.print(f"[red]✗ {result.method} seed {result.seed}: {result.error}[/] ({result.directory})")
        else:
            m = result.metrics or {}
            line = " ".join(f"{k}={100 * m[k]:.1f}" for k in ("auroc", "aupro", "ap", "f1max") if k in m)
            mark = "↷" if result.status == "skipped" else "✓"
            console.print(f"{mark} {result.method} seed {result.seed}: {line}")

    try:
        results = run_benchmark(data, names, range(first_seed, first_seed + seeds), options, on_result=show)
    except ConfigMismatchError as exc:
        _fail(str(exc))
    failed = [r for r in results if r.status == "failed"]
    if failed:
        console.print(f"[red]{len(failed)} run(s) failed; their error.json says why. Re-run to retry them.[/]")
        raise typer.Exit(code=1)
    console.print(f"all {len(results)} runs finished; `scrapbench report {out}` builds the tables.")


@app.command()
def synth(
    out: Path = typer.Option(..., help="Folder to write the dataset to (on-disk format)."),
    preset: str = typer.Option("cpu", help="Size: smoke | cpu | paper."),
    seed: int = typer.Option(0, help="Generator seed."),
) -> None:
    """Write the synthetic steel-scrap dataset to a folder, to look at or to edit."""
    from scrapbench.datasets.synthetic import SYNTHETIC_PRESETS, write_synthetic

    if preset not in SYNTHETIC_PRESETS:
        _fail(f"unknown preset {preset!r}; choose from {sorted(SYNTHETIC_PRESETS)}")
    path = write_synthetic(out, SYNTHETIC_PRESETS[preset], seed=seed)
    console.print(f"wrote {path}")


@app.command()
def evaluate(
    maps: Path = typer.Argument(..., help="Folder of anomaly maps (.npy/.npz/.tif/.tiff/.png), one per image."),
    masks: Path = typer.Argument(..., help="Folder of ground-truth masks (PNG, same stems; 0 = normal)."),
    compat: str = typer.Option("mvtec", help="AUPRO recipe: mvtec (default) or anomalyclip."),
    out: Path = typer.Option(None, help="Write the metrics as JSON here."),
) -> None:
    """Evaluate anomaly maps written by any tool against masks."""
    import json

    from scrapbench.metrics import evaluate_folders
    from scrapbench.store import atomic_write_json

    try:
        result = evaluate_folders(maps, masks, compat=compat)
    except (ValueError, FileNotFoundError) as exc:
        _fail(str(exc))
    table = Table("metric", "value (%)")
    for key in ("auroc", "aupro", "ap", "f1max"):
        table.add_row(key, f"{100 * result[key]:.2f}")
    console.print(table)
    if out is not None:
        atomic_write_json(out, result)
    else:
        console.print_json(json.dumps({k: v for k, v in result.items() if isinstance(v, (int, float))}))


@app.command()
def report(
    runs: Path = typer.Argument(Path("runs"), help="Results folder written by `scrapbench run`."),
    out: Path = typer.Option(None, help="Report folder (default: RUNS/report)."),
) -> None:
    """Tables (Table 2 / Table 3 layout), confidence intervals and figures from finished runs."""
    from scrapbench.report import build_report

    path = build_report(runs, out or runs / "report")
    console.print(f"report written to {path}")


def main() -> None:  # pragma: no cover - console entry point
    app()
