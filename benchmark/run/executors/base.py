"""The contract every executor keeps: what the grid (``scrapbench.run.grid``) asks of whatever computes its runs."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from scrapbench.datasets.types import Dataset
from scrapbench.run.plan import RunOptions, RunPlan, RunResult

#: Called with each result as it comes, ``busy`` ones included.
Report = Callable[[RunResult], None]


class Executor(Protocol):
    """Computes the planned runs of a grid, each through ``scrapbench.run.lifecycle.run_one``.

    The grid asks, in this order: :meth:`compute_settings` (the numerics runs will be planned with), then per
    dataset :meth:`prepare` (before that dataset's runs are planned, or run when they were planned already), then
    :meth:`run_grid` once per wave of plans. Executors are context managers: ``with`` releases what they hold.
    """

    def __enter__(self) -> Executor: ...

    def __exit__(self, *exc: object) -> None: ...

    def compute_settings(self, options: RunOptions) -> Mapping[str, Any] | None:
        """The numerics the runs will be computed with (``scrapbench.run.provenance.compute_settings``);
        None: this process's."""

    def prepare(self, dataset: Dataset, options: RunOptions) -> RunOptions:
        """The options ``dataset``'s runs will be computed with (e.g. the workers' compute settings, how runs are
        executed for ``run.json``)."""

    def run_grid(self, dataset: Dataset, plans: Sequence[RunPlan], options: RunOptions,
                 retry: Mapping[tuple[str, int], str | None], report: Report,
                 progress: Any) -> dict[tuple[str, int], RunResult]:
        """Every plan's final result by (method, seed); ``report`` each result as it comes (busy ones too);
        ``progress`` is the grid's bar; ``retry``: the failed attempt of each pair found when the grid started
        (``scrapbench.run.lifecycle.run_one``'s ``retry``)."""
