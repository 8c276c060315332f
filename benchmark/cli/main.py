"""The ``scrapbench`` command line."""

from __future__ import annotations

import os
from pathlib import Path

# Idle OpenMP threads sleep instead of spinning: with the default (spin), two processes sharing two
# cores make every small torch op wait ~25 ms (measured: a YOLO forward 4.1 s instead of 0.03 s).
# It must be set before torch is imported, and torch is only imported by the commands below.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Pixel-level anomaly segmentation benchmark for steel-scrap recycling.")
# No markup and no :emoji: codes: everything printed holds user text (paths, dataset and class names,
# error messages), and "[/x]" in a path would vanish or crash the print. Styles go through Text.
# soft_wrap: a long path stays one line that can be copied.
console = Console(markup=False, emoji=False, soft_wrap=True)

PRECISION_HELP = ("Network precision: auto (bf16 on CUDA GPUs that compute it natively, fp16 on older ones, fp32 on "
                  "CPU) | fp32 | bf16 | fp16. Part of a run's identity.")


def _fail(message: str) -> None:
    console.print(Text.assemble(("error: ", "bold red"), str(message)))
    raise typer.Exit(code=2)


def _with_weights(names: list[str], overrides: dict, weights: str | None) -> dict:
    """The preset's overrides plus ``--weights``, which sets the one chosen method's weights field."""
    from scrapbench.core.registry import get_spec

    overrides = dict(overrides)
    if weights is None:
        return overrides
    if len(names) != 1:
        _fail("--weights needs exactly one method (use --set METHOD.FIELD=PATH for several)")
    field_name = get_spec(names[0]).load_class().weights_field
    if field_name is None:
        _fail(f"method {names[0]!r} takes no pretrained weights")
    overrides.setdefault(names[0], {})[field_name] = weights
    return overrides


def _error_text(exc: BaseException) -> str:
    """One line for an expected error: KeyError's bare message, OSError's file and reason."""
    if isinstance(exc, KeyError) and exc.args:
        return str(exc.args[0])
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"{exc.filename}: {exc.strerror or exc}"
    return str(exc)


@app.command("list")
def list_command(suite: str = typer.Option(None, help="Only methods of this suite (table2, ablation).")) -> None:
    """Show every registered method."""
    from scrapbench.core.registry import list_methods

    table = Table("method", "suites", "description")
    for spec in list_methods(suite):
        table.add_row(spec.name, ",".join(spec.suites) or "-", spec.description)
    console.print(table)


@app.command()
def run(
    methods: list[str] = typer.Option(["all"], "--methods", "-m",
                                      help="Names, comma lists, `all` (Table 2) or `ablation` (Table 3)."),
    seeds: int = typer.Option(3, min=1, help="Number of seeds per method (seeds first_seed..first_seed+N-1)."),
    first_seed: int = typer.Option(0, min=0, help="First seed."),
    dataset: str = typer.Option("synthetic", help="`synthetic`, a dataset folder, or a public benchmark: "
                                                  "mvtec:ROOT[#cat1,cat2] / visa:ROOT[#...] (one run per category)."),
    train_on: str = typer.Option(None, "--train-on", help="Train the methods that learn from anomalies on this "
                                                          "benchmark's test images (AnomalyCLIP's protocol), e.g. "
                                                          "visa:ROOT; zero-/few-shot methods ignore it."),
    per_defect_type: bool = typer.Option(False, "--per-defect-type",
                                         help="MVTec AD: one class per defect type instead of `anomaly`."),
    data_seed: int = typer.Option(0, help="Seed of the synthetic dataset (not of the methods)."),
    preset: str = typer.Option("cpu", help="smoke | cpu | paper | a preset YAML file."),
    device: str = typer.Option("cpu", help="cpu, cuda, cuda:1 ..."),
    out: Path = typer.Option(Path("runs"), help="Results folder (finished runs in it are reused)."),
    set_: list[str] = typer.Option([], "--set", help="Config override METHOD.FIELD=VALUE (repeatable)."),
    weights: str = typer.Option(None, help="Pretrained weights (tag or file) for a single chosen method."),
    save_maps: bool = typer.Option(None, "--save-maps/--no-save-maps",
                                   help="Keep anomaly maps (float16) for figures; default: if ≤500 test images."),
    overwrite: bool = typer.Option(False, help="Recompute finished runs whose identity differs (config, data, "
                                               "threads, ...) or whose records are unreadable."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
    verbose: bool = typer.Option(False, "--verbose", help="Show third-party libraries' own output."),
    shards: int = typer.Option(1, min=1, help="Predict each run's test set in this many parts (on as many Ray "
                                              "workers), merged exactly: same numbers as 1."),
    executor: str = typer.Option("local", help="local (this process; with --jobs N, N worker processes) or ray (a "
                                               "Ray cluster: README, 'Running on several GPUs or machines')."),
    jobs: str = typer.Option("1", help="Runs side by side in as many worker processes, each with the torch threads "
                                       "divided among them (part of a run's identity: other numbers than 1) | auto "
                                       "(one run per core, one thread each, as far as memory allows; 1 on a GPU)."),
    ray_address: str = typer.Option(None, help="Ray cluster: auto | ray://HOST:PORT (default: start a local Ray)."),
    gpus_per_run: float = typer.Option(None, min=0, help="Ray: GPUs per run (default 1 with --device cuda, else 0)."),
    cpus_per_run: int = typer.Option(None, min=1, help="Ray: CPUs per run = its torch threads (default 1)."),
    ray_storage: str = typer.Option("auto", help="Ray: shared (workers write --out) | ship (results come back "
                                                 "through Ray) | auto (probe)."),
    precision: str = typer.Option("auto", help=PRECISION_HELP),
) -> None:
    """Fit, predict and evaluate methods over several seeds; resumes where it stopped."""
    from scrapbench.core.precision import resolve_precision
    from scrapbench.core.presets import resolve_preset
    from scrapbench.core.registry import resolve_method_names
    from scrapbench.datasets import DatasetError, load_dataset
    from scrapbench.datasets.resolve import parse_benchmark_spec
    from scrapbench.run.executors import ExecutorError, create_executor
    from scrapbench.run.grid import run_benchmark
    from scrapbench.run.plan import RunIdentityError, RunOptions
    from scrapbench.storage.run_folder import RunFolderError

    try:
        resolve_precision(precision, device)  # an unknown value or a GPU without bf16 stops here
        names = resolve_method_names(methods)
        resolved = resolve_preset(preset, set_)
        overrides = _with_weights(names, resolved.overrides, weights)
        unknown = sorted(set(overrides) - set(names))
        if unknown:
            _fail(f"settings for methods not being run: {unknown}")
        _require_weights(names, resolved.name, overrides, preset)
        chosen, settings = _executor_settings(executor, jobs, device, ray_address, gpus_per_run, cpus_per_run,
                                              ray_storage, verbose)
        runner = create_executor(chosen, **settings)  # before the data: a missing Ray is told at once
        per_category = train_on is not None or parse_benchmark_spec(dataset) is not None
        if not per_category:
            data = load_dataset(dataset, preset=resolved.name, seed=data_seed, show_progress=progress)
    except (KeyError, ValueError, OSError, DatasetError, ExecutorError) as exc:
        _fail(_error_text(exc))
    options = RunOptions(preset=resolved.name, device=device, out=out, dataset_spec=dataset, data_seed=data_seed,
                         save_maps=save_maps, overrides=overrides, overwrite=overwrite, show_progress=progress,
                         verbose=verbose, shards=shards, precision=precision)
    if not per_category:
        console.print(Text.assemble(
            "dataset ", (data.name, "bold"), f": {len(data.train)} train / {len(data.test)} test images, classes "
            f"{', '.join(data.class_names)}; preset ", (resolved.name, "bold"),
            f"; {len(names)} methods × {seeds} seeds → {out}"))

    def show(result) -> None:
        # On a benchmark, each line names the category's dataset (the folder above preset/method/seed).
        which = f"{result.directory.parents[2].name} " if per_category else ""
        if result.status == "busy":
            console.print(f"⧗ {which}{result.method} seed {result.seed}: another process is computing it; "
                          f"waiting for it after the other runs")
        elif result.status == "failed":
            where = " (in another process)" if result.elsewhere else ""
            console.print(f"✗ {which}{result.method} seed {result.seed}{where}: {result.error} ({result.directory})",
                          style="red")
        else:
            m = result.metrics or {}
            line = " ".join(f"{k}={100 * m[k]:.1f}" for k in ("auroc", "aupro", "ap", "f1max") if k in m)
            mark = "✓" if result.status == "done" else "↷"
            where = " (computed by another process)" if result.elsewhere else ""
            if result.reused_from is not None:
                where += f" (seed {result.reused_from}'s run reused: the method does not depend on the seed)"
            console.print(f"{mark} {which}{result.method} seed {result.seed}: {line}{where}")

    left_out = []  # datasets of a benchmark that could not be run
    try:
        with runner:
            if per_category:
                grid = _run_per_category(dataset, names, range(first_seed, first_seed + seeds), options, train_on,
                                         per_defect_type, show, runner)
                results, left_out = grid.results, grid.failures
            else:
                results = run_benchmark(data, names, range(first_seed, first_seed + seeds), options, on_result=show,
                                        executor=runner)
    except (RunIdentityError, RunFolderError, OSError, DatasetError, ExecutorError) as exc:
        _fail(_error_text(exc))
    failed = [r for r in results if r.status == "failed"]
    if failed:
        console.print(f"{len(failed)} of {len(results)} run(s) failed (see above; a failed run's error.json holds "
                      f"its traceback). Run the same command again to retry them.", style="red")
    if left_out:
        console.print(f"{len(left_out)} dataset(s) could not be run (see above); their runs are not in the results.",
                      style="red")
    if failed or left_out:
        raise typer.Exit(code=1)
    console.print(f"all {len(results)} runs finished; `scrapbench report {out}` builds the tables.")


def _run_per_category(spec: str, names: list[str], seeds: range, options, train_on: str | None,
                      per_defect_type: bool, show, executor):
    """``run`` on a public benchmark (or with --train-on): one line per category, then its runs."""
    from scrapbench.run.categories import run_categories

    def opened(one: str, data) -> None:
        console.print(Text.assemble(
            "dataset ", (data.name, "bold"), f": {len(data.train)} train / {len(data.test)} test images, classes "
            f"{', '.join(data.class_names)}" + (f", object {data.object_name!r}" if data.object_name else "")))

    def left_out(failure) -> None:
        console.print(Text.assemble(("✗ ", "red"), f"{failure.spec}: {failure.message} "
                                                   f"({', '.join(failure.methods)} not run)"), style="red")

    console.print(Text.assemble("benchmark ", (spec, "bold"), "; preset ", (options.preset, "bold"),
                                f"; {len(names)} methods × {len(seeds)} seeds per category → {options.out}"))
    return run_categories(spec, names, list(seeds), options, train_on=train_on, per_defect_type=per_defect_type,
                          on_result=show, on_dataset=opened, on_failure=left_out,
                          say=lambda text: console.print(f"note: {text}"), executor=executor)


def _executor_settings(name: str, jobs: str, device: str, address: str | None, gpus_per_run: float | None,
                       cpus_per_run: int | None, storage: str, verbose: bool) -> tuple[str, dict]:
    """The executor's name and keyword arguments (``--executor local --jobs N``, N > 1: the pool); an executor's
    options given with another executor are an error, not ignored."""
    from scrapbench.run.executors import ExecutorError
    from scrapbench.run.executors.pool import resolve_jobs

    ray_options = {"--ray-address": address, "--gpus-per-run": gpus_per_run, "--cpus-per-run": cpus_per_run,
                   "--ray-storage": None if storage == "auto" else storage}
    if name == "ray":
        if jobs != "1":
            raise ExecutorError("--jobs runs worker processes on this machine; with --executor ray use "
                                "--cpus-per-run and Ray's resources")
        settings = {"address": address, "gpus_per_run": gpus_per_run, "storage": storage, "verbose": verbose}
        if cpus_per_run is not None:
            settings["cpus_per_run"] = cpus_per_run
        return name, settings
    given = [flag for flag, value in ray_options.items() if value is not None]
    if given:
        _fail(f"{', '.join(given)} {'needs' if len(given) == 1 else 'need'} --executor ray")
    count = resolve_jobs(jobs, device)
    if name == "pool" or (name == "local" and count > 1):
        return "pool", {"jobs": count}
    return name, {}


def _require_weights(names: list[str], preset_name: str, overrides: dict, preset_arg: str) -> None:
    """Stop before any data is generated when a configured weight is missing or fails its checks."""
    from scrapbench.core.weights import check_weights, problems

    bad = problems(check_weights(names, preset_name, overrides))
    if bad:
        _print_weight_problems(bad)
        _fail(f"{len(bad)} configured weight(s) not ready (nothing was run); "
              f"`scrapbench weights check --preset {preset_arg}` shows every weight")


weights_app = typer.Typer(no_args_is_help=True, help="Pretrained weights: where they go, and whether they fit.")
app.add_typer(weights_app, name="weights")


@weights_app.command("check")
def weights_check(
    preset: str = typer.Option("paper", help="smoke | cpu | paper | a preset YAML file."),
    methods: list[str] = typer.Option(["all", "ablation"], "--methods", "-m",
                                      help="Names, comma lists, `all` (Table 2) or `ablation` (Table 3)."),
    set_: list[str] = typer.Option([], "--set", help="Config override METHOD.FIELD=VALUE (repeatable)."),
    weights: str = typer.Option(None, help="Pretrained weights (tag or file) for a single chosen method."),
) -> None:
    """Every configured weight: found, where to put it, format and architecture, checksum. Loads no model."""
    from scrapbench.core.presets import resolve_preset
    from scrapbench.core.registry import resolve_method_names
    from scrapbench.core.weights import check_weights, problems

    try:
        names = resolve_method_names(methods)
        resolved = resolve_preset(preset, set_)
        overrides = _with_weights(names, resolved.overrides, weights)
        reports = check_weights(names, resolved.name, overrides)
    except (KeyError, ValueError) as exc:
        _fail(str(exc.args[0]) if isinstance(exc, KeyError) else str(exc))
    table = Table("weight", "used by", "status", "format · architecture", "SHA-256 · checksum",
                  title=f"weights of preset {preset}")
    table.add_column("file", overflow="fold")
    marks = {"ok": Text("✓ found", "green"), "random": Text("random init"),
             "download": Text("↓ downloads at run", "yellow"), "missing": Text("✗ missing", "red"),
             "invalid": Text("✗ invalid", "red")}
    for report in reports:
        check = report.check
        table.add_row(check.weight, ", ".join(report.methods), marks[check.status],
                      " · ".join(t for t in (check.format, check.architecture) if t),
                      " · ".join(t for t in ((check.sha256 or "")[:16], check.checksum) if t),
                      check.path or "-")
    console.print(table)
    bad = problems(reports)
    _print_weight_problems(bad)
    if bad:
        raise typer.Exit(code=1)
    console.print(f"all {len(reports)} weights ready.")


def _print_weight_problems(reports) -> None:
    for report in reports:
        check = report.check
        console.print(Text.assemble(("✗", "red"), f" {check.weight} ({', '.join(report.methods)}): "
                                                  f"{check.detail or check.status}"))
        if check.where:
            console.print(f"  → {check.where}")


@app.command()
def synth(
    out: Path = typer.Option(..., help="Folder to write the dataset to (on-disk format; an existing one only if "
                                       "scrapbench wrote it)."),
    preset: str = typer.Option("cpu", help="Size: smoke | cpu | paper."),
    seed: int = typer.Option(0, help="Generator seed."),
) -> None:
    """Write the synthetic steel-scrap dataset to a folder, to look at or to edit."""
    from scrapbench.core.presets import SYNTHETIC_PRESETS
    from scrapbench.datasets.synthetic.generator import write_synthetic

    if preset not in SYNTHETIC_PRESETS:
        _fail(f"unknown preset {preset!r}; choose from {sorted(SYNTHETIC_PRESETS)}")
    try:
        path = write_synthetic(out, SYNTHETIC_PRESETS[preset], seed=seed)
    except ValueError as exc:  # OutputError: an --out scrapbench did not write
        _fail(str(exc))
    console.print(f"wrote {path}")


@app.command()
def evaluate(
    maps: Path = typer.Argument(..., help="Folder of anomaly maps (.npy/.npz/.tif/.tiff/.png), one per image."),
    masks: Path = typer.Argument(..., help="Folder of ground-truth masks (PNG, same stems; 0 = normal)."),
    compat: str = typer.Option("mvtec", help="AUPRO recipe: mvtec (default) or anomalyclip."),
    out: Path = typer.Option(None, help="Write the metrics as JSON here (a new file, or one this command wrote)."),
) -> None:
    """Evaluate anomaly maps written by any tool against masks."""
    import json

    from scrapbench.metrics import evaluate_folders
    from scrapbench.storage.atomic import atomic_write_json
    from scrapbench.storage.outdir import guard_output_file

    try:
        if out is not None:
            guard_output_file(out, [maps, masks], "evaluate")
        result = evaluate_folders(maps, masks, compat=compat)
    except (ValueError, FileNotFoundError) as exc:
        _fail(str(exc))
    table = Table("metric", "value (%)")
    for key in ("auroc", "aupro", "ap", "f1max"):
        table.add_row(key, f"{100 * result[key]:.2f}")
    console.print(table)
    if out is not None:
        atomic_write_json(out, {"written_by": "scrapbench evaluate", **result})
    else:
        console.print_json(json.dumps({k: v for k, v in result.items() if isinstance(v, (int, float))}))


@app.command()
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
    figures: bool = typer.Option(True, "--figures/--no-figures", help="Draw the PNG figures."),
    published: bool = typer.Option(False, "--published", help="MVTec AD / VisA runs: the papers' numbers beside the "
                                                              "measured means over categories, with the difference."),
) -> None:
    """Tables (Table 2 / Table 3 layout, or per category for MVTec AD / VisA), intervals and figures from runs."""
    import csv

    from scrapbench.report.dataset_report import ReportError, build_report
    from scrapbench.storage.outdir import OutputError, guard_output, write_marker
    from scrapbench.storage.run_folder import RunFolderError

    out = out or runs / "report"
    try:
        guard_output(out, [runs], allow_inside=True)  # RUNS/report is the default; RUNS itself is refused
        out.mkdir(parents=True, exist_ok=True)
        write_marker(out, "report")  # first: a report that fails half-way can still be rewritten
        path = build_report(runs, out, dataset=dataset, preset=preset, n_boot=n_boot, ci=ci,
                            primary_metric=primary_metric, qualitative_rows=rows, figures=figures, published=published)
    except (ReportError, RunFolderError, OutputError, OSError) as exc:
        _fail(_error_text(exc))
    console.print(f"report written to {path}")
    with open(path.parent / "failed_runs.csv", newline="") as handle:
        failed = list(csv.DictReader(handle))
    if failed:
        console.print(f"{len(failed)} failed run(s), listed in the report and left out of its tables:", style="red")
        for row in failed:
            console.print(f"  ✗ {row['method']} seed {row['seed']}: {row['message']} ({row['folder']})", style="red")


@app.command()
def predict(
    model: Path = typer.Argument(..., help="A run's model folder: OUT/<dataset>/<preset>/<method>/seed<k>/model."),
    images: Path = typer.Argument(..., help="A folder of images (any size) or one image."),
    out: Path = typer.Option(..., help="Folder for overlays/, maps/, regions.json and regions.csv (a new folder, "
                                       "or one scrapbench wrote)."),
    threshold: float = typer.Option(None, help="Score threshold (default: the run's F1-max threshold)."),
    patch_size: int = typer.Option(None, help="Tile size (default: the patch size the method was run on)."),
    overlap: int = typer.Option(0, help="Pixels shared by neighbouring tiles (maps are averaged there)."),
    min_area: int = typer.Option(1, help="Smallest region reported, in pixels."),
    batch_size: int = typer.Option(8, help="Tiles per forward pass."),
    device: str = typer.Option("cpu", help="cpu, cuda, cuda:1 ..."),
    save_maps: bool = typer.Option(True, "--maps/--no-maps", help="Write the raw maps (.npy)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
    precision: str = typer.Option("auto", help=PRECISION_HELP),
) -> None:
    """Apply a fitted method to new images: tiled, stitched, with overlays and detected regions."""
    from scrapbench.core.method import WeightsError
    from scrapbench.datasets import DatasetError
    from scrapbench.run.predict_images import predict_folder

    try:
        summary = predict_folder(model, images, out, threshold=threshold, patch_size=patch_size, overlap=overlap,
                                 batch_size=batch_size, min_area=min_area, device=device, save_maps=save_maps,
                                 show_progress=progress, precision=precision)
    except (FileNotFoundError, ValueError, DatasetError, WeightsError) as exc:
        _fail(str(exc))
    flagged = sum(1 for entry in summary["images"] if entry["anomalous"])
    regions = sum(len(entry["regions"]) for entry in summary["images"])
    console.print(f"{summary['method']}: {len(summary['images'])} images, {flagged} with anomalies "
                  f"({regions} regions at threshold {summary['threshold']:.4g}, {summary['threshold_source']}) → {out}")


@app.command()
def prepare(
    source: Path = typer.Argument(..., help="Folder of raw images (for --format mvtec: an MVTec category folder)."),
    out: Path = typer.Option(..., help="Dataset folder to write (on-disk format; an existing one only if scrapbench "
                                       "wrote it, replaced atomically)."),
    format_: str = typer.Option("masks", "--format", help="Annotations: masks (class-index PNGs) | coco | mvtec."),
    annotations: Path = typer.Option(None, help="masks: folder of <stem>.png; coco: the instances JSON file."),
    classes: str = typer.Option(None, help="Comma-separated class names, index 1..K (coco: default = its "
                                           "categories by id; mvtec: one name, default `anomaly`)."),
    patch_size: int = typer.Option(512, help="Patch side in pixels (the paper: 512)."),
    overlap: int = typer.Option(0, help="Pixels shared by neighbouring patches."),
    test_fraction: float = typer.Option(0.2, help="Share of source images in the test split."),
    split_seed: int = typer.Option(0, help="Seed of the split by source image."),
    keep_split: bool = typer.Option(False, help="Keep the split of the source layout (MVTec train/test)."),
    missing_mask_normal: bool = typer.Option(False, help="masks: an image without a mask is normal."),
    roi_file: Path = typer.Option(None, help="JSON crop per image: {\"img.jpg\": {\"box\": [x0,y0,x1,y1]}} or "
                                             "{\"polygon\": [[x,y],...]}."),
    roi_prompt: str = typer.Option(None, help="Crop by text, e.g. 'the scrap' (SAM masks scored by CLIP)."),
    sam_checkpoint: Path = typer.Option(None, help="SAM checkpoint for --roi-prompt (e.g. sam_vit_h_4b8939.pth)."),
    sam_model: str = typer.Option("vit_h", help="SAM size of the checkpoint: vit_h | vit_l | vit_b."),
    clip_model: str = typer.Option("ViT-B-16", help="open_clip architecture scoring the regions."),
    clip_weights: str = typer.Option("openai", help="open_clip pretrained tag or checkpoint path."),
    min_roi_fraction: float = typer.Option(0.5, help="Keep a patch only if this share lies inside the crop."),
    preview: Path = typer.Option(None, help="Write one PNG per image with its crop and kept patches here."),
    preview_only: bool = typer.Option(False, help="Only write the previews (check a crop before tiling)."),
    device: str = typer.Option("cpu", help="Device for SAM/CLIP."),
) -> None:
    """Turn raw annotated images (e.g. 4K crane-camera frames) into a scrapbench dataset folder."""
    from scrapbench.core.method import WeightsError
    from scrapbench.datasets import DatasetError
    from scrapbench.datasets.folder import read_folder_dataset
    from scrapbench.datasets.prepare.roi import ClipTextScorer, RoiFile, TextPromptedRoi, sam_mask_generator
    from scrapbench.datasets.prepare.tiling import PrepareConfig, prepare_dataset, preview_rois, read_sources
    from scrapbench.storage.outdir import guard_output

    names = tuple(c.strip() for c in classes.split(",") if c.strip()) if classes else None
    try:
        if roi_file is not None and roi_prompt is not None:
            _fail("choose one of --roi-file and --roi-prompt")
        config = PrepareConfig(patch_size=patch_size, overlap=overlap, test_fraction=test_fraction, seed=split_seed,
                               keep_split=keep_split, min_roi_fraction=min_roi_fraction)
        inputs = [source, annotations, roi_file]
        if not preview_only:
            guard_output(out, inputs)  # before the (possibly slow) reading of the sources
        sources, class_names = read_sources(format_, source, annotations, names, missing_mask_normal)
        roi = None
        if roi_file is not None:
            roi = RoiFile(roi_file)
        elif roi_prompt is not None:
            if sam_checkpoint is None:
                _fail("--roi-prompt needs --sam-checkpoint (Segment Anything weights, e.g. sam_vit_h_4b8939.pth)")
            roi = TextPromptedRoi(sam_mask_generator(sam_model, sam_checkpoint, device=device),
                                  ClipTextScorer(clip_model, clip_weights, device=device), prompt=roi_prompt)
        if preview_only:
            if preview is None:
                _fail("--preview-only needs --preview DIR")
            if roi is None:
                _fail("--preview-only shows a crop: give --roi-file or --roi-prompt")
            paths = preview_rois(sources, roi, preview, config, inputs=inputs)
            console.print(f"{len(paths)} previews written to {preview}")
            return
        path = prepare_dataset(sources, class_names, out, roi=roi, config=config, preview_dir=preview, inputs=inputs)
        data = read_folder_dataset(path)
    except (DatasetError, WeightsError, ValueError) as exc:
        _fail(str(exc))
    console.print(f"wrote {path}: {len(data.train)} train / {len(data.test)} test patches "
                  f"({sum(data.test.has_anomaly)} anomalous test patches), classes {', '.join(data.class_names)}")


def main() -> None:  # pragma: no cover - console entry point
    app()
