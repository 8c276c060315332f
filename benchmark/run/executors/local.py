"""The default executor: every run in this process, one after another."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from scrapbench.datasets.types import Dataset
from scrapbench.run.executors.base import Report
from scrapbench.run.lifecycle import run_one
from scrapbench.run.plan import RunOptions, RunPlan, RunResult


class LocalExecutor:
    """Runs each plan here; runs another process holds are waited for after the others."""

    def __enter__(self) -> LocalExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def compute_settings(self, options: RunOptions) -> None:
        return None  # this process's, measured when each run is planned

    def prepare(self, dataset: Dataset, options: RunOptions) -> RunOptions:
        return options

    def run_grid(self, dataset: Dataset, plans: Sequence[RunPlan], options: RunOptions,
                 retry: Mapping[tuple[str, int], str | None], report: Report,
                 progress: Any) -> dict[tuple[str, int], RunResult]:
        results: dict[tuple[str, int], RunResult] = {}
        busy: list[RunPlan] = []
        for plan in plans:
            result = run_one(dataset, plan, options, retry=retry[plan.pair])
            report(result)
            if result.status == "busy":
                busy.append(plan)
            else:
                results[plan.pair] = result
        for plan in busy:
            progress.set_postfix_str(f"waiting for {plan.method} seed {plan.seed}")
            results[plan.pair] = run_one(dataset, plan, options, wait=True, retry=retry[plan.pair])
            report(results[plan.pair])
        return results
