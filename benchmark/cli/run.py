"""``scrapbench run``: a grid of methods and seeds on one dataset or a public benchmark's categories."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.text import Text

from scrapbench.cli.console import PRECISION_HELP, console, error_text, fail, with_weights
from scrapbench.cli.weights import print_weight_problems


def run(
    methods: list[str] = typer.Option([], "--methods", "-m",
                                      help="Names, comma lists, `all` (Table 2) or `ablation` (Table 3); default "
                                           "`all`, or with --sweep only the sweep's variants."),
    sweep: list[str] = typer.Option([], "--sweep", help="Sweep a config field, METHOD.FIELD=V1,V2,... (repeatable; "
                                                        "several fields of one method: their cartesian product): "
                                                        "variants METHOD[FIELD=V] run as methods of their own. "
                                                        "Values are YAML: 1,2,4 · 0.5,1e-3 · true,false · a list "
                                                        "field takes bracketed lists, [3,9],[3,9,15]."),
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
    track: str = typer.Option(None, help="Log every run to MLflow: mlflow (a SQLite store, OUT/mlflow.db) | "
                                         "mlflow:URI (a tracking server or store). Needs scrapbench[track]."),
) -> None:
    """Fit, predict and evaluate methods over several seeds; resumes where it stopped."""
    from scrapbench.core.precision import resolve_precision
    from scrapbench.core.presets import resolve_preset
    from scrapbench.core.registry import variant_base
    from scrapbench.datasets import DatasetError, load_dataset
    from scrapbench.datasets.resolve import parse_benchmark_spec
    from scrapbench.run.executors import ExecutorError, create_executor
    from scrapbench.run.grid import run_benchmark
    from scrapbench.run.plan import RunIdentityError, RunOptions
    from scrapbench.storage.run_folder import RunFolderError

    try:
        resolve_precision(precision, device)  # an unknown value or a GPU without bf16 stops here
        names = _method_names(methods, sweep)
        resolved = resolve_preset(preset, set_)
        overrides = with_weights(names, _with_base_settings(names, resolved.overrides), weights)
        unknown = sorted(set(overrides) - set(names) - {variant_base(name) for name in names})
        if unknown:
            fail(f"settings for methods not being run: {unknown}")
        _require_weights(names, resolved.name, overrides, preset)
        chosen, settings = _executor_settings(executor, jobs, device, ray_address, gpus_per_run, cpus_per_run,
                                              ray_storage, verbose)
        runner = create_executor(chosen, **settings)  # before the data: a missing Ray is told at once
        tracker = _open_tracker(track, out, verbose)  # also before the data: a missing MLflow is told at once
        per_category = train_on is not None or parse_benchmark_spec(dataset) is not None
        if not per_category:
            data = load_dataset(dataset, preset=resolved.name, seed=data_seed, show_progress=progress)
    except (KeyError, ValueError, OSError, DatasetError, ExecutorError) as exc:  # TrackError is a ValueError
        fail(error_text(exc))
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
            line = " ".join(f"{k}={100 * m[k]:.1f}" for k in ("auroc", "aupro", "ap", "f1max")
                            if m.get(k) is not None)
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
                                         per_defect_type, show, runner, tracker)
                results, left_out = grid.results, grid.failures
            else:
                results = run_benchmark(data, names, range(first_seed, first_seed + seeds), options, on_result=show,
                                        executor=runner, tracker=tracker)
    except (RunIdentityError, RunFolderError, OSError, DatasetError, ExecutorError) as exc:
        fail(error_text(exc))
    if tracker is not None and not tracker.problems:
        console.print(f"MLflow: {tracker.logged} run(s) logged, {tracker.present} already there ({tracker.uri})")
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


def _open_tracker(spec: str | None, out: Path, verbose: bool):
    """``--track``: the MLflow tracker, or None. Its problems later are one warning, never a failed run."""
    if spec is None:
        return None
    from scrapbench.track import require_mlflow, tracking_uri
    from scrapbench.track.log import MlflowTracker

    uri = tracking_uri(spec, out)
    require_mlflow()

    def warn(message: str) -> None:
        again = "" if spec == "mlflow" else f" --to {uri}"
        console.print(Text.assemble(("warning: ", "bold yellow"), f"MLflow at {uri}: {message}; the runs go on "
                                    f"without it, and `scrapbench track {out}{again}` logs them later"))

    try:
        return MlflowTracker(uri, warn, verbose)
    except Exception as exc:  # an URI MLflow has no store for, ...: before anything runs
        from scrapbench.run.compute import one_line_error

        raise ValueError(f"--track {spec}: {one_line_error(exc)}") from exc


def _run_per_category(spec: str, names: list[str], seeds: range, options, train_on: str | None,
                      per_defect_type: bool, show, executor, tracker):
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
                          say=lambda text: console.print(f"note: {text}"), executor=executor, tracker=tracker)


def _method_names(methods: list[str], sweep: list[str]) -> list[str]:
    """The methods to run: ``--methods`` (default ``all``) and the ``--sweep`` variants; with --sweep and no
    --methods, the variants alone."""
    from scrapbench.core.registry import resolve_method_names, sweep_names

    variants = sweep_names(sweep)
    names = resolve_method_names(methods or ([] if variants else ["all"]))
    return names + [name for name in variants if name not in names]


def _with_base_settings(names: list[str], overrides: dict) -> dict:
    """``--set`` / preset-file values of a method apply to its sweep variants too, except the fields a variant
    fixes (the swept value wins)."""
    from scrapbench.core.variants import parse_name

    out = {method: dict(values) for method, values in overrides.items()}
    for name in names:
        parsed = parse_name(name)
        if parsed is not None and parsed[0] in overrides:
            base, fields = parsed
            inherited = {key: value for key, value in overrides[base].items() if key not in fields}
            out[name] = {**inherited, **out.get(name, {})}
    return out


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
        fail(f"{', '.join(given)} {'needs' if len(given) == 1 else 'need'} --executor ray")
    count = resolve_jobs(jobs, device)
    if name == "pool" or (name == "local" and count > 1):
        return "pool", {"jobs": count}
    return name, {}


def _require_weights(names: list[str], preset_name: str, overrides: dict, preset_arg: str) -> None:
    """Stop before any data is generated when a configured weight is missing or fails its checks."""
    from scrapbench.core.weights import check_weights, problems

    bad = problems(check_weights(names, preset_name, overrides))
    if bad:
        print_weight_problems(bad)
        fail(f"{len(bad)} configured weight(s) not ready (nothing was run); "
              f"`scrapbench weights check --preset {preset_arg}` shows every weight")
