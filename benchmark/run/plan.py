"""What a run is before and after it runs: its options, its plan (folder and identity), its result.

A grid is planned once, before anything runs (:func:`plan_grid`), so that :func:`refuse_identity_mismatches` can
refuse the whole grid when a finished run's recorded identity differs from the one asked for: a grid half-resumed
is worse than none. Executors and :func:`scrapbench.run.lifecycle.run_one` receive the plans; nothing replans.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scrapbench.core.method import config_to_dict
from scrapbench.core.precision import resolve_precision
from scrapbench.core.registry import build_config, get_spec
from scrapbench.datasets.fingerprint import dataset_fingerprint
from scrapbench.datasets.protocols import training_identity
from scrapbench.datasets.types import Dataset
from scrapbench.run.provenance import (
    compute_settings,
    identity_differences,
    numerics_advice,
    run_identity,
    seed_everything,
)
from scrapbench.storage.run_folder import RunFolderError, is_finished, path_component, read_finished_run, run_dir

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
    shards: int = 1  # predict the test set in this many parts, merged exactly (scrapbench.run.compute)
    # The numerics (scrapbench.run.provenance.compute_settings) of the processes that compute the runs, when they
    # are not this one: the Ray executor measures them on a worker. None: this process's.
    compute_settings: Mapping[str, Any] | None = None
    execution: Mapping[str, Any] | None = None  # how the runs are computed, for run.json (not part of the identity)
    precision: str = "auto"  # auto | fp32 | bf16 | fp16 (scrapbench.core.precision); auto is fp32 on CPU


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

    @property
    def pair(self) -> tuple[str, int]:
        return self.method, self.seed


@dataclass
class RunResult:
    """What happened to one (method, seed).

    ``status``: ``done`` (computed now), ``skipped`` (finished before), ``failed`` (``error`` says why)
    or ``busy`` (another process holds the lease; only from ``run_one``). ``elsewhere``: another
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
    """A finished run exists whose identity differs from the one asked for (``numerics``: in its ``compute``)."""

    def __init__(self, message: str, numerics: bool = False) -> None:
        super().__init__(message)
        self.numerics = numerics


def with_fingerprint(dataset: Dataset) -> Dataset:
    """The dataset with its fingerprint computed (once per grid, not once per run)."""
    if dataset.fingerprint is not None:
        return dataset
    return dataclasses.replace(dataset, fingerprint=dataset_fingerprint(dataset))


def dataset_slug(dataset: Dataset, options: RunOptions) -> str:
    """The dataset's folder name in the results folder: always one safe path component."""
    if options.dataset_spec == "synthetic":
        return f"synthetic-seed{options.data_seed}"
    return path_component(dataset.name)


def process_numerics(options: RunOptions) -> dict[str, Any]:
    """This process's numerics for ``options`` (``scrapbench.run.provenance.compute_settings``: device, batch size,
    the resolved ``--precision``, threads and determinism flags as set now)."""
    return compute_settings(options.device, options.batch_size, resolve_precision(options.precision, options.device))


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


def plan_grid(dataset: Dataset, methods: Sequence[str], seeds: Sequence[int], options: RunOptions) -> list[RunPlan]:
    """Every (method, seed) planned, methods first (the order the runs are reported in)."""
    return [plan_run(dataset, method, seed, options) for method in methods for seed in seeds]


def reusable_result(plan: RunPlan, options: RunOptions) -> RunResult | None:
    """The finished run at ``plan.directory`` if it may be reused; ``None`` if it must be computed.

    Raises RunIdentityError when its identity differs, RunFolderError when its run.json or
    metrics.json cannot be read or holds what the runner never writes (``read_finished_run``; both: unless
    ``options.overwrite``, which recomputes it).
    """
    if not is_finished(plan.directory):
        return None
    try:
        record, metrics = read_finished_run(plan.directory)
    except RunFolderError as exc:
        if options.overwrite:
            return None
        raise RunFolderError(f"{exc}; use --overwrite to recompute this run, or delete {plan.directory}") from exc
    recorded = record.get("identity")
    if recorded == plan.identity:
        return RunResult(plan.method, plan.seed, plan.directory, "skipped", metrics, attempt=record.get("attempt"))
    if options.overwrite:
        return None
    changes = identity_differences(recorded if isinstance(recorded, dict) else {}, plan.identity)
    raise RunIdentityError(f"{plan.directory}: a finished run with another identity exists ({'; '.join(changes)})",
                           numerics=any(change.startswith("compute.") for change in changes))


def refuse_identity_mismatches(plans: Sequence[RunPlan], options: RunOptions) -> None:
    """Raise RunIdentityError, listing them, when finished runs of ``plans`` have another identity (unless
    ``options.overwrite``). Checked before anything runs: a grid half-resumed is worse than none."""
    problems: list[RunIdentityError] = []
    for plan in plans:
        try:
            reusable_result(plan, options)
        except RunIdentityError as exc:
            problems.append(exc)
        except RunFolderError:
            pass  # an unreadable record fails that run alone (run_one reports it)
    if problems:
        more = f"\n… and {len(problems) - _MAX_LISTED} more" if len(problems) > _MAX_LISTED else ""
        numerics = any(problem.numerics for problem in problems)
        advice = f"\n{numerics_advice()}." if numerics else ""
        raise RunIdentityError("\n".join(map(str, problems[:_MAX_LISTED])) + more + advice + "\nNothing was run. "
                               "Use another --out, or --overwrite to recompute these runs.", numerics)
