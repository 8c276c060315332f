"""The grid in a local process pool (``scrapbench run --jobs N``): N runs side by side on this machine.

Small CPU runs keep few cores busy, so N runs with a share of the threads each finish a grid sooner than one
run after another with all of them. The thread count is part of a run's identity
(``scrapbench.run.provenance.compute_settings``): ``--jobs 2`` gives other numbers than ``--jobs 1``.

As with the Ray executor (``scrapbench.run.executors.ray``), each run lives through
``scrapbench.run.lifecycle.run_one`` in a worker, lease included, so concurrent drivers stay safe; the numerics
are measured in a worker before planning, and results and the progress bar are reported here. A worker
receives the dataset decoded, pickled once to a temporary file.

Workers are started with ``spawn``, not ``fork``: this process has torch and its OpenMP thread pool loaded, and
a forked child of a process whose OpenMP pool has run can hang in its first parallel region.

Faults: a worker that dies (killed, out of memory, a crash in native code) breaks the whole pool and takes the
other runs in flight with it. The pool is restarted and each of those runs is computed again alone; a run that
kills its worker alone more than ``max_retries`` times is reported failed, and the grid goes on.

Ctrl-C: each running worker gets one KeyboardInterrupt, so ``run_one`` removes its staging folder and releases
its lease before the driver stops.
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing
import os
import pickle
import shutil
import signal
import tempfile
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import psutil

from scrapbench.core.registry import MethodSpec, adopt_specs, get_spec
from scrapbench.datasets.types import Dataset, in_memory
from scrapbench.run.compute import one_line_error
from scrapbench.run.executors import ExecutorError
from scrapbench.run.executors.base import Report
from scrapbench.run.lifecycle import run_one
from scrapbench.run.plan import RunOptions, RunPlan, RunResult, process_numerics
from scrapbench.run.provenance import identity_differences, seed_everything

#: Memory ``--jobs auto`` sets aside for each run it starts (results/bench_run.json records the measured peaks).
MEMORY_PER_RUN = 2 * 2**30
DIED = ("its worker process died (killed, out of memory or crashed) each time it was computed alone; the "
        "staging folder it left is removed by the next attempt")

Pair = tuple[str, int]


def default_threads() -> int:
    """The torch threads a run in this process computes with (``--jobs 1``): torch's default here."""
    import torch

    return torch.get_num_threads()


def resolve_jobs(jobs: str, device: str) -> int:
    """``--jobs``: a number, or ``auto``: one run per core (one thread each) as far as memory allows, 1 on a GPU.

    With ``auto`` every run computes with one thread whatever the core count, so its numbers do not depend on
    how many cores the machine has (only its CPU's kernels, as always); the free memory only sets how many
    runs go side by side.
    """
    if jobs != "auto":
        try:
            value = int(jobs)
        except ValueError:
            raise ExecutorError(f"--jobs takes a number or auto (got {jobs!r})") from None
        if value < 1:
            raise ExecutorError(f"--jobs must be at least 1 (got {value})")
        return value
    if not device.startswith("cpu"):
        return 1  # runs on one GPU are not shared out
    return max(1, min(default_threads(), int(psutil.virtual_memory().available // MEMORY_PER_RUN)))


class PoolExecutor:
    """Runs a grid in ``jobs`` worker processes: ``with PoolExecutor(2) as ex: run_benchmark(..., executor=ex)``.

    Args:
        jobs: runs computed side by side.
        threads_per_run: each worker's torch threads (default: this process's, divided by ``jobs``, at least 1).
        max_retries: how often a run that kills its worker while computed alone is computed again.
    """

    def __init__(self, jobs: int, threads_per_run: int | None = None, max_retries: int = 1) -> None:
        if jobs < 1:
            raise ExecutorError(f"--jobs must be at least 1 (got {jobs})")
        if threads_per_run is not None and threads_per_run < 1:
            raise ExecutorError(f"threads per run must be at least 1 (got {threads_per_run})")
        if max_retries < 0:
            raise ExecutorError(f"max retries must not be negative (got {max_retries})")
        self.jobs, self.max_retries = jobs, max_retries
        self.threads = threads_per_run if threads_per_run is not None else max(1, default_threads() // jobs)
        self._context = multiprocessing.get_context("spawn")
        self._pids = self._context.SimpleQueue()  # each worker puts its pid here when it starts
        self._known_pids: set[int] = set()
        self._pool: ProcessPoolExecutor | None = None
        self._measured: dict[tuple[str, int, str], dict[str, Any]] = {}
        self._folder: Path | None = None  # holds the pickled dataset while the executor is open
        self._shipped: tuple[Dataset, Path] | None = None  # the dataset of the grid (its object) and its file
        self._files = 0

    # -- life of the pool -------------------------------------------------------------------------
    def __enter__(self) -> PoolExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the workers and remove the shipped datasets."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder, self._shipped = None, None

    def _submit(self, function: Callable, *args: Any) -> Future:
        """``function(*args)`` in a worker; a pool broken by a dead worker is replaced first."""
        if self._pool is not None:
            try:
                return self._pool.submit(function, *args)
            except BrokenProcessPool:
                self._pool.shutdown(wait=True)
        self._pool = ProcessPoolExecutor(self.jobs, mp_context=self._context, initializer=_worker_start,
                                         initargs=(self.threads, self._pids))
        return self._pool.submit(function, *args)

    def _interrupt(self) -> None:
        """Cancel the queued runs, interrupt the running ones once, and wait for the workers to clean up."""
        if self._pool is None:
            return
        self._pool.shutdown(wait=False, cancel_futures=True)
        while not self._pids.empty():
            self._known_pids.add(self._pids.get())
        alive = {child.pid for child in multiprocessing.active_children()}  # never a reused pid
        for pid in self._known_pids & alive:
            with contextlib.suppress(ProcessLookupError):  # exited meanwhile
                os.kill(pid, signal.SIGINT)
        self._pool.shutdown(wait=True)
        self._pool = None

    # -- before planning --------------------------------------------------------------------------
    def compute_settings(self, options: RunOptions) -> dict[str, Any]:
        """The numerics of a worker (measured once per device, batch size and precision)."""
        key = (options.device, options.batch_size, options.precision)
        if key not in self._measured:
            try:
                self._measured[key] = self._submit(_worker_numerics, options).result()
            except BaseException:
                self._interrupt()
                raise
        return self._measured[key]

    def prepare(self, dataset: Dataset, options: RunOptions) -> RunOptions:
        """The workers' numerics and this executor's record in the options the runs use."""
        execution = {"executor": "pool", "jobs": self.jobs, "threads_per_run": self.threads}
        return dataclasses.replace(options, compute_settings=self.compute_settings(options), execution=execution)

    def _ship(self, dataset: Dataset) -> Path:
        """The dataset's file for the workers, written once per dataset object: not per fingerprint, which
        datasets with other splits of the same data share (a supervised split per seed, ``--train-on``)."""
        if self._shipped is not None and self._shipped[0] is dataset:
            return self._shipped[1]
        if self._shipped is not None:  # the previous grid is over: no worker reads its file any more
            self._shipped[1].unlink(missing_ok=True)
        if self._folder is None:
            self._folder = Path(tempfile.mkdtemp(prefix="scrapbench-pool-"))
        path = self._folder / f"dataset-{self._files}.pickle"
        self._files += 1
        with open(path, "wb") as sink:
            pickle.dump(in_memory(dataset), sink, protocol=pickle.HIGHEST_PROTOCOL)
        self._shipped = (dataset, path)
        return path

    # -- the grid ---------------------------------------------------------------------------------
    def run_grid(self, dataset: Dataset, plans: Sequence[RunPlan], options: RunOptions,
                 retry: Mapping[Pair, str | None], report: Report, progress: Any) -> dict[Pair, RunResult]:
        """``jobs`` runs at a time; runs another process holds are waited for once the rest are done."""
        specs = tuple(get_spec(name) for name in dict.fromkeys(plan.method for plan in plans))
        task = _Task(str(self._ship(dataset)), specs, dataclasses.replace(options, show_progress=False), dict(retry))
        results: dict[Pair, RunResult] = {}
        try:
            busy = self._compute(task, plans, False, results, report)
            if busy:
                progress.set_postfix_str(f"waiting for {len(busy)} run(s) another process holds")
                self._compute(task, busy, True, results, report)
        except BaseException:
            self._interrupt()
            raise
        return results

    def _compute(self, task: _Task, plans: Sequence[RunPlan], wait_for_holder: bool,
                 results: dict[Pair, RunResult], report: Report) -> list[RunPlan]:
        """Compute ``plans``, at most ``jobs`` at once (so those in flight are known when a worker dies)."""
        queue, suspects = deque(plans), deque[RunPlan]()
        in_flight: dict[Future, tuple[RunPlan, bool]] = {}  # future → (plan, computed alone)
        deaths: dict[Pair, int] = {}  # how often each run killed its worker while computed alone
        busy = []
        while queue or suspects or in_flight:
            if suspects:  # runs a dead worker took down: one at a time, so that a second death names its run
                if not in_flight:
                    plan = suspects.popleft()
                    in_flight[self._submit(_worker_run, task, plan, wait_for_holder)] = (plan, True)
            else:
                while queue and len(in_flight) < self.jobs:
                    plan = queue.popleft()
                    in_flight[self._submit(_worker_run, task, plan, wait_for_holder)] = (plan, False)
            done, _ = wait(in_flight, timeout=1.0, return_when=FIRST_COMPLETED)  # a timeout keeps Ctrl-C alive
            for future in done:
                plan, alone = in_flight.pop(future)
                try:
                    result = future.result()
                except BrokenProcessPool:
                    if alone:
                        deaths[plan.pair] = deaths.get(plan.pair, 0) + 1
                    if deaths.get(plan.pair, 0) <= self.max_retries:
                        suspects.append(plan)
                        continue
                    result = RunResult(plan.method, plan.seed, plan.directory, "failed", error=DIED)
                except Exception as exc:  # e.g. the worker's numerics differ from the planned ones
                    result = RunResult(plan.method, plan.seed, plan.directory, "failed", error=one_line_error(exc))
                if result is None:
                    raise KeyboardInterrupt  # Ctrl-C reached the worker (its run left nothing behind)
                report(result)
                if result.status == "busy":
                    busy.append(plan)
                else:
                    results[plan.pair] = result
        return busy


@dataclasses.dataclass(frozen=True)
class _Task:
    """What every run of one grid shares, sent to the workers with each run."""

    dataset_file: str
    specs: tuple[MethodSpec, ...]  # the driver's methods (plugins, tests' methods) for the workers to adopt
    options: RunOptions
    retry: dict[Pair, str | None]


# -- what runs in the workers ----------------------------------------------------------------------


@dataclasses.dataclass
class _WorkerState:
    threads: int = 1
    running: bool = False  # a run is being computed: Ctrl-C interrupts it
    interrupted: bool = False  # one KeyboardInterrupt per worker: a second would cut the first one's clean-up
    dataset_file: str | None = None
    dataset: Dataset | None = None


_WORKER = _WorkerState()


def _worker_start(threads: int, pids: Any) -> None:
    _WORKER.threads = threads
    _set_threads(threads)
    signal.signal(signal.SIGINT, _worker_interrupted)
    pids.put(os.getpid())


def _worker_interrupted(signum: int, frame: Any) -> None:
    """Ctrl-C (from the terminal, or forwarded by the driver): interrupt the run once; an idle worker ignores it."""
    if _WORKER.running and not _WORKER.interrupted:
        _WORKER.interrupted = True
        raise KeyboardInterrupt


def _set_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _worker_numerics(options: RunOptions) -> dict[str, Any]:
    seed_everything(0)
    return process_numerics(options)


def _worker_run(task: _Task, plan: RunPlan, wait_for_holder: bool) -> RunResult | None:
    """One run's whole life in this worker; ``None`` when Ctrl-C interrupted it."""
    try:
        _WORKER.running = True
        if _WORKER.interrupted:
            return None
        if _WORKER.dataset_file != task.dataset_file:
            with open(task.dataset_file, "rb") as source:
                _WORKER.dataset = pickle.load(source)
            _WORKER.dataset_file = task.dataset_file
        assert _WORKER.dataset is not None
        adopt_specs(task.specs)
        _set_threads(_WORKER.threads)  # a method that changed them does not change the next run's
        seed_everything(plan.seed)
        planned, here = dict(task.options.compute_settings or {}), process_numerics(task.options)
        if here != planned:
            raise ExecutorError(f"worker {os.getpid()} computes with other numerics than the grid was planned with "
                                f"({'; '.join(identity_differences(planned, here))})")
        return run_one(_WORKER.dataset, plan, task.options, wait=wait_for_holder, retry=task.retry[plan.pair])
    except KeyboardInterrupt:
        return None
    finally:
        _WORKER.running = False
