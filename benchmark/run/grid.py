"""``scrapbench run`` on one dataset: every (method, seed) planned once, checked, then computed by an executor.

Finished runs are reused, failures recorded and retried, runs another process holds waited for. Seed-independent
methods (``scrapbench.run.seed_reuse``) run in two waves: the first seed of each, then the others, which copy it,
so that an executor computing a wave at once never computes one twice.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

from tqdm.auto import tqdm

from scrapbench.datasets.types import Dataset
from scrapbench.run.executors.base import Executor
from scrapbench.run.executors.local import LocalExecutor
from scrapbench.run.lifecycle import failed_attempt
from scrapbench.run.plan import (
    RunOptions,
    RunPlan,
    RunResult,
    plan_grid,
    refuse_identity_mismatches,
    with_fingerprint,
)
from scrapbench.storage.run_folder import ensure_writable_dir


class GridTracking(Protocol):
    """One grid's log in an experiment tracker: each result as it comes in (on the driver), then ``close``."""

    def log(self, result: RunResult) -> None: ...

    def close(self) -> None: ...


class Tracker(Protocol):
    """An experiment tracker (``scrapbench.track``): it must never fail a run, whatever happens to it."""

    def open_grid(self, dataset: Dataset, plans: Sequence[RunPlan], options: RunOptions) -> GridTracking: ...


def run_benchmark(
    dataset: Dataset,
    methods: Sequence[str],
    seeds: Sequence[int],
    options: RunOptions,
    on_result: Callable[[RunResult], None] | None = None,
    progress: tqdm | None = None,
    executor: Executor | None = None,
    tracker: Tracker | None = None,
) -> list[RunResult]:
    """Run every (method, seed) of ``dataset``; the results in the order methods × seeds.

    Nothing runs when a finished run's identity differs from the one asked for (RunIdentityError,
    listing them), unless ``options.overwrite``. ``on_result`` sees every result (``busy`` ones too).
    ``progress``: a bar to advance instead of one of its own (one bar over several datasets). ``executor``
    computes the runs (``scrapbench.run.executors``; default: one after another in this process). ``tracker``
    logs each result as it comes (``scrapbench.track``).
    """
    executor = executor if executor is not None else LocalExecutor()
    dataset, options = prepare(dataset, options, executor)
    plans = plan_grid(dataset, methods, seeds, options)
    refuse_identity_mismatches(plans, options)
    return run_plans(dataset, plans, options, executor, on_result, progress, tracker)


def prepare(dataset: Dataset, options: RunOptions, executor: Executor) -> tuple[Dataset, RunOptions]:
    """Before ``dataset``'s runs: ``--out`` writable, the fingerprint computed once, the executor's options."""
    ensure_writable_dir(Path(options.out))
    dataset = with_fingerprint(dataset)
    return dataset, executor.prepare(dataset, options)


def run_plans(dataset: Dataset, plans: Sequence[RunPlan], options: RunOptions, executor: Executor,
              on_result: Callable[[RunResult], None] | None = None, progress: tqdm | None = None,
              tracker: Tracker | None = None) -> list[RunResult]:
    """Compute planned runs of ``dataset`` (checked and prepared: :func:`run_benchmark`); results in plan order.

    Runs leased by another process are skipped in a first pass; then each is waited for and reported as done
    elsewhere, or computed if its holder died. Failures found at the start are retried; a failure another
    process records meanwhile is reported, not computed again. ``tracker`` logs each result here, on the driver,
    whichever executor computed it.
    """
    retry = {plan.pair: failed_attempt(plan.directory) for plan in plans}
    bar = tqdm(total=len(plans), desc="runs", unit="run", disable=not options.show_progress) if progress is None \
        else contextlib.nullcontext(progress)
    tracking = tracker.open_grid(dataset, plans, options) if tracker is not None else None
    with bar as progress, contextlib.ExitStack() as stack:
        if tracking is not None:
            stack.callback(tracking.close)

        def report(result: RunResult) -> None:
            if on_result is not None:
                on_result(result)
            if result.status != "busy":
                if tracking is not None:
                    tracking.log(result)
                progress.update()

        # Later seeds of a seed-independent method wait for the first: they copy it, also where an executor runs
        # the first wave's runs at once.
        firsts = {plan.method: plan.pair for plan in reversed(plans)}
        later = [plan for plan in plans if plan.seed_independent and firsts[plan.method] != plan.pair]
        first = [plan for plan in plans if plan not in later]
        results = {}
        for wave in (first, later):
            if wave:
                results.update(executor.run_grid(dataset, wave, options, retry, report, progress))
    return [results[plan.pair] for plan in plans]
