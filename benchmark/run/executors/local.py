"""The default executor: every run in this process, one after another."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from scrapbench.datasets.types import Dataset
from scrapbench.run.lifecycle import RunOptions, RunResult, run_one


class LocalExecutor:
    """Runs each (method, seed) here; runs another process holds are waited for after the others."""

    def __enter__(self) -> LocalExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def compute_settings(self, options: RunOptions) -> None:
        return None  # this process's, measured when each run is planned

    def prepare(self, dataset: Dataset, options: RunOptions) -> RunOptions:
        return options

    def run_grid(self, dataset: Dataset, pairs: Sequence[tuple[str, int]], options: RunOptions,
                 retry: Mapping[tuple[str, int], str | None], report: Callable[[RunResult], None],
                 progress: Any) -> dict[tuple[str, int], RunResult]:
        results: dict[tuple[str, int], RunResult] = {}
        busy: list[tuple[str, int]] = []
        for pair in pairs:
            result = run_one(dataset, *pair, options, retry=retry[pair])
            report(result)
            if result.status == "busy":
                busy.append(pair)
            else:
                results[pair] = result
        for pair in busy:
            progress.set_postfix_str(f"waiting for {pair[0]} seed {pair[1]}")
            results[pair] = run_one(dataset, *pair, options, wait=True, retry=retry[pair])
            report(results[pair])
        return results
