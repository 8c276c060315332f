"""``scrapbench run``: every (method, seed) pair on one dataset, resumable, safe with concurrent writers.

The life of one run is :func:`run_one`; every executor (this process's loop, or workers on other
machines sharing the results folder) goes through it:

1. plan: the method's config and the run's identity (``scrapbench.run.identity``);
2. reuse a finished run whose recorded identity is the same; refuse one whose identity differs
   (unless ``--overwrite``);
3. take the run's lease (``scrapbench.run.lease``), or report the run as busy when another process holds it;
4. compute it in a hidden staging folder (:func:`compute_run`) and move the folder into place whole
   (``store.place_run_folder``): ``run.json`` when it finished, ``error.json`` when it failed.

So an interrupted benchmark loses at most the runs in progress, two processes never compute the same
run nor delete each other's work, and a crashed process's runs are picked up by the next one.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import shutil
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from tqdm.auto import tqdm

from scrapbench import __version__
from scrapbench.core.method import AnomalyMethod, FitContext, LearningType, check_maps, check_scores, config_to_dict
from scrapbench.core.precision import resolve_precision
from scrapbench.core.registry import build_config, create_method, get_spec
from scrapbench.datasets.fingerprint import dataset_fingerprint
from scrapbench.datasets.protocols import benchmark_record, training_identity
from scrapbench.datasets.types import Dataset, Sample
from scrapbench.run.environment import PeakMemory, device_description, git_commit, library_versions
from scrapbench.run.identity import compute_settings, identity_differences, run_identity
from scrapbench.run.lease import try_lease, wait_for_lease
from scrapbench.run.seed_reuse import copy_seed_twin, find_seed_twin
from scrapbench.run.seeding import NondeterminismMonitor, seed_everything
from scrapbench.storage.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text
from scrapbench.storage.run_folder import (
    RunFolderError,
    attempt_token,
    check_run_folder,
    ensure_writable_dir,
    is_finished,
    new_staging_dir,
    path_component,
    place_run_folder,
    read_json_record,
    remove_stale_attempts,
    run_dir,
)

MAX_MAPS_SAVED_BY_DEFAULT = 500
_MAX_LISTED = 5


@dataclass(frozen=True)
class RunOptions:
    """Everything that decides a run besides the method name and the seed."""

    preset: str = "cpu"
    device: str = "cpu"
    out: Path = Path("runs")
    dataset_spec: str = "synthetic"
    data_seed: int = 0
    save_maps: bool | None = None  # None: save when the test split is small
    batch_size: int = 8
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)  # method → field → value
    overwrite: bool = False  # replace finished runs whose identity differs (and unreadable ones)
    show_progress: bool = True
    verbose: bool = False  # third-party libraries' own output to the console
    shards: int = 1  # predict the test set in this many parts, merged exactly (scrapbench.run.shards)
    # The numerics (identity.compute_settings) of the processes that compute the runs, when they are not this one:
    # the Ray executor measures them on a worker. None: this process's.
    compute_settings: Mapping[str, Any] | None = None
    execution: Mapping[str, Any] | None = None  # how the runs are computed, for run.json (not part of the identity)
    precision: str = "auto"  # auto | fp32 | bf16 | fp16 (scrapbench.core.precision); auto is fp32 on CPU


@dataclass
class RunResult:
    """What happened to one (method, seed).

    ``status``: ``done`` (computed now), ``skipped`` (finished before), ``failed`` (``error`` says why)
    or ``busy`` (another process holds the lease; only from :func:`run_one`). ``elsewhere``: another
    process computed it while this one waited.
    """

    method: str
    seed: int
    directory: Path
    status: str
    metrics: dict[str, Any] | None = None
    error: str | None = None
    elsewhere: bool = False
    attempt: str | None = None  # the attempt that wrote the folder's record (run.json / error.json)
    reused_from: int | None = None  # done by copying this seed's finished run (``scrapbench.run.seed_reuse``)


class RunIdentityError(RuntimeError):
    """A finished run exists whose identity differs from the one asked for."""


@dataclass(frozen=True)
class RunPlan:
    """One (method, seed) before it runs: where it goes and what it will be."""

    method: str
    seed: int
    directory: Path
    identity: dict[str, Any]
    #: The method's result cannot depend on the seed with this config (``AnomalyMethod.seed_independent``):
    #: a finished run of another seed with the same identity otherwise is copied (``scrapbench.run.seed_reuse``).
    seed_independent: bool = False


def dataset_slug(dataset: Dataset, options: RunOptions) -> str:
    """The dataset's folder name in the results folder: always one safe path component."""
    if options.dataset_spec == "synthetic":
        return f"synthetic-seed{options.data_seed}"
    return path_component(dataset.name)


def plan_run(dataset: Dataset, method_name: str, seed: int, options: RunOptions) -> RunPlan:
    """The run's folder and identity (seeds the process: the identity records the flags that sets)."""
    config = build_config(method_name, options.preset, options.overrides.get(method_name))
    seed_everything(seed)
    compute = options.compute_settings if options.compute_settings is not None else process_numerics(options)
    identity = run_identity(method_name, seed, options.preset, config_to_dict(config), dataset_fingerprint(dataset),
                            compute, training_identity(dataset))
    directory = run_dir(options.out, dataset_slug(dataset, options), options.preset, method_name, seed)
    seed_independent = get_spec(method_name).load_class().seed_independent(config)
    return RunPlan(method_name, seed, directory, identity, seed_independent)


def process_numerics(options: RunOptions) -> dict[str, Any]:
    """This process's numerics for ``options`` (``identity.compute_settings``: device, batch size, the resolved
    ``--precision``, threads and determinism flags as set now)."""
    return compute_settings(options.device, options.batch_size, resolve_precision(options.precision, options.device))


def run_benchmark(
    dataset: Dataset,
    methods: Sequence[str],
    seeds: Sequence[int],
    options: RunOptions,
    on_result: Callable[[RunResult], None] | None = None,
    progress: tqdm | None = None,
    executor: Executor | None = None,
) -> list[RunResult]:
    """Run every (method, seed): finished runs are reused, failures recorded, busy runs waited for.

    Nothing runs when a finished run's identity differs from the one asked for (RunIdentityError,
    listing them), unless ``options.overwrite``. Runs leased by another process are skipped in a first
    pass; then each is waited for and reported as done elsewhere, or computed if its holder died.
    Failures found at the start are retried; a failure another process records meanwhile is reported,
    not computed again. ``on_result`` sees every result (``busy`` ones too). ``progress``: a bar to
    advance instead of one of its own (one bar over several datasets). ``executor`` computes the runs
    (``scrapbench.run.executors``; default: one after another in this process).
    """
    ensure_writable_dir(Path(options.out))
    if dataset.fingerprint is None:  # computed once here, not once per run
        dataset = dataclasses.replace(dataset, fingerprint=dataset_fingerprint(dataset))
    if executor is None:
        from scrapbench.run.executors.local import LocalExecutor

        executor = LocalExecutor()
    options = executor.prepare(dataset, options)
    pairs = [(m, s) for m in methods for s in seeds]
    plans = {pair: plan_run(dataset, *pair, options) for pair in pairs}
    _refuse_identity_mismatches(list(plans.values()), options)
    retry = {pair: failed_attempt(plan.directory) for pair, plan in plans.items()}
    bar = tqdm(total=len(pairs), desc="runs", unit="run", disable=not options.show_progress) if progress is None \
        else contextlib.nullcontext(progress)
    with bar as progress:

        def report(result: RunResult) -> None:
            if on_result is not None:
                on_result(result)
            if result.status != "busy":
                progress.update()

        # Later seeds of a seed-independent method wait for the first: they copy it (scrapbench.run.seed_reuse),
        # also where an executor runs the first wave's runs at once.
        firsts = {plan.method: pair for pair, plan in reversed(plans.items())}
        later = [pair for pair in pairs if plans[pair].seed_independent and firsts[pair[0]] != pair]
        results = {}
        for wave in ([pair for pair in pairs if pair not in later], later):
            if wave:
                results.update(executor.run_grid(dataset, wave, options, retry, report, progress))
    return [results[pair] for pair in pairs]


class Executor(Protocol):
    """Computes the runs of a grid (``scrapbench.run.executors``): this process, or workers of a cluster."""

    def compute_settings(self, options: RunOptions) -> Mapping[str, Any] | None:
        """The numerics the runs will be computed with (``identity.compute_settings``); None: this process's."""

    def prepare(self, dataset: Dataset, options: RunOptions) -> RunOptions:
        """The options the runs will be computed with (e.g. the workers' compute settings), before planning."""

    def run_grid(self, dataset: Dataset, pairs: Sequence[tuple[str, int]], options: RunOptions,
                 retry: Mapping[tuple[str, int], str | None], report: Callable[[RunResult], None],
                 progress: Any) -> dict[tuple[str, int], RunResult]:
        """Every pair's final result; ``report`` each result as it comes (busy ones too), ``progress`` is the bar."""


def _refuse_identity_mismatches(plans: Sequence[RunPlan], options: RunOptions) -> None:
    """Check every finished run before anything runs: a grid half-resumed is worse than none."""
    problems = []
    for plan in plans:
        try:
            reusable_result(plan, options)
        except RunIdentityError as exc:
            problems.append(str(exc))
        except RunFolderError:
            pass  # an unreadable record fails that run alone (run_one reports it)
    if problems:
        more = f"\n… and {len(problems) - _MAX_LISTED} more" if len(problems) > _MAX_LISTED else ""
        raise RunIdentityError("\n".join(problems[:_MAX_LISTED]) + more + "\nNothing was run. Use another --out, "
                               "or --overwrite to recompute these runs.")


def reusable_result(plan: RunPlan, options: RunOptions) -> RunResult | None:
    """The finished run at ``plan.directory`` if it may be reused; ``None`` if it must be computed.

    Raises RunIdentityError when its identity differs, RunFolderError when its run.json or
    metrics.json cannot be read (both: unless ``options.overwrite``, which recomputes it).
    """
    if not is_finished(plan.directory):
        return None
    try:
        record = read_json_record(plan.directory / "run.json")
        metrics = read_json_record(plan.directory / "metrics.json")
    except RunFolderError as exc:
        if options.overwrite:
            return None
        raise RunFolderError(f"{exc}; use --overwrite to recompute this run, or delete {plan.directory}") from exc
    recorded = record.get("identity")
    if recorded == plan.identity:
        return RunResult(plan.method, plan.seed, plan.directory, "skipped", metrics, attempt=record.get("attempt"))
    if options.overwrite:
        return None
    if not isinstance(recorded, dict):
        raise RunIdentityError(f"{plan.directory}: finished by an older scrapbench that recorded no run identity")
    changes = "; ".join(identity_differences(recorded, plan.identity))
    raise RunIdentityError(f"{plan.directory}: a finished run with another identity exists ({changes})")


#: ``run_one(retry=RETRY_ANY)``: recompute whatever failed run is found (the default).
RETRY_ANY = "*"


#: ``compute_run``'s signature: fill an empty folder with a run (``run.json`` or ``error.json`` last).
ComputeRun = Callable[[Dataset, RunPlan, RunOptions, Path], RunResult]


def run_one(
    dataset: Dataset, method_name: str, seed: int, options: RunOptions, *, wait: bool = False,
    retry: str | None = RETRY_ANY, compute: ComputeRun | None = None,
) -> RunResult:
    """The whole life of one run (see the module docstring); never computes a run another process holds.

    ``wait=False`` returns a ``busy`` result at once when another process holds the lease;
    ``wait=True`` waits for the lease, then returns what the holder left (``elsewhere=True``) or
    computes the run if the holder died without finishing it. ``retry`` says which failed attempt
    found in the run's folder is recomputed: any (``RETRY_ANY``), or only the one with this attempt
    token (``None``: none) — a benchmark passes the failure it found at its start, so a failure that
    another process records meanwhile is reported rather than computed a second time. ``compute``
    fills the staging folder (default :func:`compute_run`, here; the Ray executor computes elsewhere).
    """
    plan = plan_run(dataset, method_name, seed, options)
    try:
        found = reusable_result(plan, options)
        if found is not None:  # after waiting: the holder finished it meanwhile
            return dataclasses.replace(found, elsewhere=wait)
        lease = wait_for_lease(plan.directory) if wait else try_lease(plan.directory)
        if lease is None:
            return RunResult(method_name, seed, plan.directory, "busy")
        with lease:
            found = reusable_result(plan, options)
            if found is not None:
                return dataclasses.replace(found, elsewhere=wait)
            failed = failed_attempt(plan.directory)
            if failed is not None and retry not in (RETRY_ANY, failed):
                record = read_json_record(plan.directory / "error.json")
                return RunResult(method_name, seed, plan.directory, "failed", error=record.get("message"),
                                 elsewhere=True, attempt=failed)
            return _compute_and_place(dataset, plan, options, compute or compute_run)
    except RunFolderError as exc:
        return RunResult(method_name, seed, plan.directory, "failed", error=str(exc))


def failed_attempt(directory: Path) -> str | None:
    """The attempt token of the failed run recorded at ``directory`` (an error.json, no run.json)."""
    if is_finished(directory) or not (directory / "error.json").is_file():
        return None
    try:
        return str(read_json_record(directory / "error.json").get("attempt"))
    except RunFolderError:
        return None


def _compute_and_place(dataset: Dataset, plan: RunPlan, options: RunOptions, compute: ComputeRun) -> RunResult:
    """Under the lease: clear dead attempts, compute in a staging folder, move it into place."""
    remove_stale_attempts(plan.directory)
    if plan.directory.exists() or plan.directory.is_symlink():
        check_run_folder(plan.directory)  # it will be replaced: it must be one of ours
    staging = new_staging_dir(plan.directory)
    try:
        twin = find_seed_twin(plan.directory, plan.identity) if plan.seed_independent else None
        if twin is None:
            result = compute(dataset, plan, options, staging)
        else:
            attempt = attempt_token()
            metrics = copy_seed_twin(*twin, plan.identity, staging, attempt)
            result = RunResult(plan.method, plan.seed, staging, "done", metrics, attempt=attempt,
                               reused_from=int(twin[1]["seed"]))
        place_run_folder(staging, plan.directory)
    finally:
        if staging.exists():  # interrupted, or the move failed: the attempt leaves nothing behind
            shutil.rmtree(staging, ignore_errors=True)
    return dataclasses.replace(result, directory=plan.directory)


#: What computes a run's files into a folder and returns its metrics: :func:`execute_run` here, or a
#: cluster's version of it (the Ray executor's sharded runs). Arguments: dataset, plan, options, folder, attempt.
ExecuteRun = Callable[[Dataset, RunPlan, RunOptions, Path, str], dict[str, Any]]


def compute_run(dataset: Dataset, plan: RunPlan, options: RunOptions, folder: Path, *,
                execute: ExecuteRun | None = None) -> RunResult:
    """Fit, predict and evaluate into ``folder`` (empty, anywhere); ``run.json`` or ``error.json`` last.

    A failure of the method (building it included: e.g. a bad weights file) is recorded in
    ``error.json`` and returned as a ``failed`` result; only KeyboardInterrupt and a failure to write
    the record propagate. The caller holds the lease and places the folder.
    """
    attempt = attempt_token()
    try:
        metrics = (execute or execute_run)(dataset, plan, options, folder, attempt)
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # one broken method must not stop the others; the record says why
        message = one_line_error(exc)
        atomic_write_json(folder / "error.json", {
            "method": plan.method, "seed": plan.seed, "message": message, "error": repr(exc),
            "traceback": traceback.format_exc(), "identity": plan.identity, "attempt": attempt,
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds")})
        return RunResult(plan.method, plan.seed, folder, "failed", error=message, attempt=attempt)
    return RunResult(plan.method, plan.seed, folder, "done", metrics, attempt=attempt)


def one_line_error(exc: BaseException) -> str:
    """``Type: first line of the message`` (the full text and traceback stay in error.json)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[0] if lines else ""
    if len(lines) > 1 or len(text) > 300:
        text = text[:300] + " …"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class MethodBuildError(RuntimeError):
    """A method could not be built from its config (often: its weights file); says which file."""


def _build_method(name: str, dataset: Dataset, options: RunOptions) -> AnomalyMethod:
    """``create_method``, with the configured weights named in the error when building fails."""
    try:
        return create_method(name, dataset.class_names, options.preset, options.overrides.get(name))
    except Exception as exc:
        field_name = get_spec(name).load_class().weights_field
        weights = (options.overrides.get(name) or {}).get(field_name) if field_name else None
        source = f" from weights {weights}" if weights is not None else ""
        raise MethodBuildError(f"{name} could not be built{source} ({one_line_error(exc)})") from exc


def execute_run(dataset: Dataset, plan: RunPlan, options: RunOptions, directory: Path, attempt: str) -> dict[str, Any]:
    """Fit, predict the test set (whole, or in ``options.shards`` parts), write the run's files; the metrics."""
    method, fitted = fit_run(dataset, plan, options, directory)
    if options.shards > 1:
        from scrapbench.run.shards import predict_in_shards

        parts = predict_in_shards(directory / "model", dataset.test, options, plan)
    else:
        parts = [predict_part(method, dataset.test, options, plan)]
    return finish_run(directory, dataset, plan, options, fitted, parts, attempt)


@dataclass
class FitRecord:
    """What fitting a run recorded, wherever it ran: the method's facts, the cost, the environment."""

    learning_type: str
    config: dict[str, Any]
    weights: dict[str, Any]
    fit_s: float
    peak_rss_mb: float
    nondeterministic_ops: list[str]
    environment: dict[str, Any]  # device, versions, git commit, CPU model of the fitting process


def fit_run(dataset: Dataset, plan: RunPlan, options: RunOptions, directory: Path) -> tuple[AnomalyMethod, FitRecord]:
    """Build and fit the method (scratch space ``directory/work``) and save it to ``directory/model``."""
    method = _build_method(plan.method, dataset, options)
    workdir = directory / "work"
    workdir.mkdir()
    seed_everything(plan.seed)
    ctx = FitContext(seed=plan.seed, device=options.device, workdir=workdir, class_names=dataset.class_names,
                     show_progress=options.show_progress, verbose=options.verbose, object_name=dataset.object_name,
                     precision=plan.identity["compute"]["precision"])
    with PeakMemory() as memory, NondeterminismMonitor() as nondeterminism:
        start = time.perf_counter()
        method.fit(dataset.train, ctx)
        fit_s = time.perf_counter() - start
    method.save(directory / "model")
    record = FitRecord(
        learning_type=LearningType(type(method).learning_type_for(method.config)).value,
        config=config_to_dict(method.config), weights=method.weights_info(), fit_s=fit_s,
        peak_rss_mb=memory.peak_mb, nondeterministic_ops=sorted(nondeterminism.ops),
        environment={"device": device_description(options.device), "versions": library_versions(),
                     "git": git_commit(), "cpu_model": nondeterminism.record()["cpu_model"]})
    return method, record


@dataclass
class Predictions:
    """A fitted method's output on (part of) the test set, in test order: evaluator statistics, rows, maps."""

    metrics: Any  # scrapbench.metrics.PixelMetrics
    rows: list[dict[str, Any]]
    maps: dict[str, np.ndarray]  # float16 maps by image id, when kept
    predict_s: float
    peak_rss_mb: float
    nondeterministic_ops: list[str]


def keep_maps(options: RunOptions, num_test: int) -> bool:
    return options.save_maps if options.save_maps is not None else num_test <= MAX_MAPS_SAVED_BY_DEFAULT


def predict_part(method: AnomalyMethod, samples: Sequence[Sample], options: RunOptions, plan: RunPlan, *,
                 num_test: int | None = None, label: str = "") -> Predictions:
    """Predict ``samples`` in batches of ``options.batch_size`` and evaluate them (``num_test``: the whole test
    set's size, which decides whether maps are kept; default ``len(samples)``)."""
    from scrapbench.metrics import PixelMetrics

    save_maps = keep_maps(options, len(samples) if num_test is None else num_test)
    metrics = PixelMetrics(class_names=method.class_names)
    kept_maps: dict[str, np.ndarray] = {}
    rows = []
    predict_s = 0.0
    batches = range(0, len(samples), options.batch_size)
    with PeakMemory() as memory, NondeterminismMonitor() as nondeterminism:
        for begin in tqdm(batches, desc=f"{plan.method} seed {plan.seed}: predict{label}", unit="batch", leave=False,
                          disable=not options.show_progress):
            batch = samples[begin:begin + options.batch_size]
            images = [s.image for s in batch]
            start = time.perf_counter()
            maps, scores = method.predict_with_scores(images)
            maps, scores = check_maps(maps, images, plan.method), check_scores(scores, images, plan.method)
            predict_s += time.perf_counter() - start
            metrics.update(np.stack(maps), np.stack([s.mask for s in batch]), ids=[s.id for s in batch])
            for sample, amap, score in zip(batch, maps, scores, strict=True):
                rows.append({"id": sample.id, "is_anomalous": int(sample.is_anomalous),
                             "image_score": score, "anomalous_pixels": int((sample.mask > 0).sum())})
                if save_maps:
                    kept_maps[sample.id] = amap.astype(np.float16)
    return Predictions(metrics, rows, kept_maps, predict_s, memory.peak_mb, sorted(nondeterminism.ops))


def finish_run(directory: Path, dataset: Dataset, plan: RunPlan, options: RunOptions, fitted: FitRecord,
               parts: Sequence[Predictions], attempt: str) -> dict[str, Any]:
    """Merge the parts' statistics (exactly: ``metrics.merge``), write the run's files, ``run.json`` last."""
    from scrapbench.metrics.merge import merge

    metrics = parts[0].metrics if len(parts) == 1 else merge([part.metrics for part in parts])
    result = metrics.compute()
    rows = [row for part in parts for row in part.rows]
    kept_maps = {key: value for part in parts for key, value in part.maps.items()}
    atomic_write_json(directory / "metrics.json", result)
    metrics.save(directory / "metrics_state.npz")
    atomic_write_text(directory / "per_image.csv", _csv(rows))
    if keep_maps(options, len(dataset.test)):
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **kept_maps)
        atomic_write_bytes(directory / "maps.npz", buffer.getvalue())
    predict_s = sum(part.predict_s for part in parts)
    ops = sorted(set(fitted.nondeterministic_ops).union(*(part.nondeterministic_ops for part in parts)))
    spec = get_spec(plan.method)
    environment = fitted.environment
    record = {
        "scrapbench_version": __version__,
        "method": plan.method,
        "description": spec.description,
        "suites": list(spec.suites),
        "learning_type": fitted.learning_type,
        "seed": plan.seed,
        "preset": options.preset,
        "identity": plan.identity,
        "attempt": attempt,
        "dataset": {"name": dataset.name, "spec": options.dataset_spec, "seed": options.data_seed,
                    "fingerprint": plan.identity["dataset_fingerprint"],
                    "class_names": list(dataset.class_names), "num_train": len(dataset.train),
                    "num_test": len(dataset.test), **benchmark_record(dataset)},
        "config": fitted.config,
        "weights": fitted.weights,
        "device": environment["device"],
        "precision": plan.identity["compute"]["precision"],  # the resolved --precision
        # kernels without a deterministic variant that ran, CPU model
        "determinism": {"deterministic": not ops, "nondeterministic_ops": ops, "cpu_model": environment["cpu_model"]},
        "timings": {"fit_s": round(fitted.fit_s, 3), "predict_s": round(predict_s, 3),
                    "predict_images_per_s": round(len(dataset.test) / predict_s, 3) if predict_s else None,
                    "peak_rss_mb": round(max([fitted.peak_rss_mb, *(part.peak_rss_mb for part in parts)]), 1)},
        "execution": {**(options.execution or {"executor": "local"}), "shards": len(parts)},
        "versions": environment["versions"],
        "git": environment["git"],
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    atomic_write_json(directory / "run.json", record)  # last: marks the run finished
    return result


def _csv(rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["id", "is_anomalous", "image_score", "anomalous_pixels"])
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()
