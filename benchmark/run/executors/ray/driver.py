"""The driver side of ``--executor ray``: probes the nodes, plans with a worker's numerics, dispatches the runs.

Where a run's life is spent depends on the storage. ``shared`` (every node sees ``--out``): a worker runs
``run_one`` itself, lease included. ``ship`` (they do not): ``run_one`` runs here, holding the lease while a worker
computes the folder and returns it as an archive. Runs with ``--shards N`` are assembled here: one task fits, N tasks
predict a part each, and their evaluators are merged exactly. ``auto`` decides by a probe: a token written under
``--out`` that every node that can take a run must see. A worker killed mid-run leaves only a staging folder; Ray
retries the task, and the retry takes the released lease and computes the run again.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import secrets
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

from scrapbench.core.method import AnomalyMethod
from scrapbench.core.registry import MethodSpec, get_spec
from scrapbench.datasets.fingerprint import dataset_fingerprint
from scrapbench.datasets.types import Dataset, in_memory
from scrapbench.run.compute import Compute, FitRecord, Predictions, one_line_error, shard_bounds, shard_label
from scrapbench.run.executors import ExecutorError
from scrapbench.run.executors.base import Report
from scrapbench.run.executors.ray import worker
from scrapbench.run.executors.ray.transfer import (
    DataSource,
    absolute_spec,
    layout,
    pack,
    rearranged,
    spec_path,
    unpack,
)
from scrapbench.run.lease import wait_for_lease
from scrapbench.run.lifecycle import run_one
from scrapbench.run.plan import RunOptions, RunPlan, RunResult
from scrapbench.storage.run_folder import read_json_record

STORAGE_MODES = ("auto", "shared", "ship")
INSTALL_HINT = "pip install 'scrapbench[ray]'"
_MAX_DRIVER_THREADS = 64  # one per run in flight; each only waits on Ray


class RayExecutor:
    """Runs a grid on Ray: ``with RayExecutor(...) as ex: run_benchmark(..., executor=ex)``.

    Args:
        address: ``None`` starts a local Ray sized to this machine; ``"auto"`` joins the cluster this machine
            belongs to (``ray start``); ``"ray://HOST:PORT"`` connects a Ray client. An already initialised Ray
            (``ray.init`` in this process) is used as it is and left running.
        gpus_per_run: GPUs a run asks for (``None``: 1 when ``--device`` is CUDA, else 0; fractions allowed).
        cpus_per_run: CPUs a run asks for, and its torch threads (part of the run identity).
        storage: ``auto``, ``shared`` or ``ship`` (see the module docstring).
        max_retries: how often Ray retries a task whose worker died.
        verbose: Ray's own logs, the raylet's messages (e.g. "A worker died…") and the workers' output on the
            console; without it they stay off the console (a run whose worker died says so in its own result).

    A local Ray this executor started is shut down on :meth:`close`, and its session folder (``session_*`` in Ray's
    temp folder, ``/tmp/ray`` unless ``RAY_TMPDIR`` says otherwise: logs, sockets, spilled objects) removed with it,
    unless ``verbose`` (then it keeps Ray's logs of the dead workers that the errors point to).
    """

    def __init__(self, address: str | None = None, gpus_per_run: float | None = None, cpus_per_run: int = 1,
                 storage: str = "auto", max_retries: int = 3, verbose: bool = False) -> None:
        import importlib.util

        if importlib.util.find_spec("ray") is None:
            raise ExecutorError(f"--executor ray needs Ray, which is not installed: {INSTALL_HINT}")
        if storage not in STORAGE_MODES:
            raise ExecutorError(f"unknown Ray storage {storage!r}; choose from {', '.join(STORAGE_MODES)}")
        if cpus_per_run < 1:
            raise ExecutorError(f"cpus per run must be at least 1 (got {cpus_per_run})")
        if gpus_per_run is not None and gpus_per_run < 0:
            raise ExecutorError(f"gpus per run must not be negative (got {gpus_per_run})")
        if max_retries < 0:
            raise ExecutorError(f"max retries must not be negative (got {max_retries})")
        self.address, self.gpus_per_run, self.cpus_per_run = address, gpus_per_run, cpus_per_run
        self.storage, self.max_retries, self.verbose = storage, max_retries, verbose
        self._started_ray = False
        self._session_dir: Path | None = None  # the session folder of the local Ray this executor started
        self._restore_console: Callable[[], None] | None = None
        self._source: DataSource | None = None
        self._specs: tuple[MethodSpec, ...] = ()
        self._gpus = 0.0
        self._measured: dict[tuple[str, int], dict[str, Any]] = {}
        self._storage = "shared"
        self._probe_file: tuple[str, str] | None = None  # (path, token) under --out while a grid runs
        self._in_flight: set[Any] = set()
        self._lock = threading.Lock()

    # -- life of the connection -----------------------------------------------------------------
    def __enter__(self) -> RayExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Shut Ray down if this executor started it (a Ray initialised by the caller stays)."""
        self._remove_probe()
        if self._started_ray:
            import ray

            ray.shutdown()
            self._started_ray = False
            if self._restore_console is not None:
                self._restore_console()
                self._restore_console = None
            if self._session_dir is not None:
                remove_session(self._session_dir)
                self._session_dir = None

    def _connect(self) -> None:
        import ray

        if ray.is_initialized():
            return
        level = logging.INFO if self.verbose else logging.ERROR
        try:
            ray.init(address=self.address or "local", include_dashboard=False, log_to_driver=self.verbose,
                     logging_level=level)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            where = self.address or "a local Ray instance"
            raise ExecutorError(f"could not start or reach {where}: {one_line_error(exc)}") from exc
        self._started_ray = True
        if self.address is None and not self.verbose:  # a Ray of our own: its session folder goes when it does
            context = ray.get_runtime_context()
            self._session_dir = Path(context.get_temp_dir()) / context.get_session_name()
        if not self.verbose:
            self._restore_console = quiet_raylet()

    # -- before planning --------------------------------------------------------------------------
    def compute_settings(self, options: RunOptions) -> dict[str, Any]:
        """The numerics of a worker with a run's resources (measured once per device and batch size)."""
        import ray

        self._check_device(options)
        self._connect()
        key = (options.device, options.batch_size, options.precision)
        if key not in self._measured:
            self._measured[key] = ray.get(self._task(worker.measure_numerics).remote(options, self.cpus_per_run))
        return self._measured[key]

    def prepare(self, dataset: Dataset, options: RunOptions) -> RunOptions:
        """Connect, probe the nodes (storage, data), measure a worker's numerics; the options runs use."""
        import ray

        measured = self.compute_settings(options)
        options = dataclasses.replace(options, out=Path(options.out).resolve())  # the same path on every node
        nodes = self._run_nodes()
        storage, data_mode = self._probe(nodes, options)
        if data_mode != "regenerated" and rearranged(dataset):
            data_mode = "shipped"  # a split made by the driver (--train-on, supervised split): no file holds it
        shipped = None
        if data_mode == "shipped":
            shipped = ray.put(dataclasses.replace(in_memory(dataset), fingerprint=dataset_fingerprint(dataset)))
        self._source = DataSource(data_mode, absolute_spec(options.dataset_spec), options.preset, options.data_seed,
                                  dataset_fingerprint(dataset), layout(dataset), shipped)
        self._storage = storage
        execution = {"executor": "ray", "storage": storage, "data": data_mode, "cpus_per_run": self.cpus_per_run,
                     "gpus_per_run": self._gpus, "ray": ray.__version__}
        return dataclasses.replace(options, compute_settings=measured, execution=execution)

    def _check_device(self, options: RunOptions) -> None:
        if options.device.startswith("cuda:"):
            raise ExecutorError(f"--device {options.device}: with --executor ray use --device cuda; Ray gives each "
                                "run its own GPU (--gpus-per-run)")
        self._gpus = (1.0 if options.device.startswith("cuda") else 0.0) if self.gpus_per_run is None \
            else float(self.gpus_per_run)
        if options.device.startswith("cuda") and self._gpus == 0:
            raise ExecutorError("--device cuda with --gpus-per-run 0: Ray hides the GPUs from tasks that ask for none")

    def _run_nodes(self) -> list[dict[str, Any]]:
        """Alive nodes with room for one run; an error naming the request when there is none."""
        import ray

        nodes = [node for node in ray.nodes() if node.get("Alive")]
        fitting = [node for node in nodes if node["Resources"].get("CPU", 0) >= self.cpus_per_run
                   and node["Resources"].get("GPU", 0) >= self._gpus]
        if not fitting:
            have = "; ".join(f"{node.get('NodeManagerAddress')}: {node['Resources'].get('CPU', 0):g} CPU, "
                             f"{node['Resources'].get('GPU', 0):g} GPU" for node in nodes)
            raise ExecutorError(f"no node of the Ray cluster has {self.cpus_per_run} CPU and {self._gpus:g} GPU for a "
                                f"run ({have}); lower --cpus-per-run / --gpus-per-run or add nodes")
        return fitting

    def _probe(self, nodes: list[dict[str, Any]], options: RunOptions) -> tuple[str, str]:
        """(storage, data mode): whether every node that may take a run sees ``--out`` and the dataset folder."""
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        probe, token = self._write_token(options.out)
        data_path = None if options.dataset_spec == "synthetic" else str(spec_path(options.dataset_spec))
        try:
            refs = [self._task(worker.probe, cpus=0, gpus=0,
                               scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)).remote(
                                   probe, token, data_path) for node in nodes]
            seen = ray.get(refs)
        finally:
            Path(probe).unlink(missing_ok=True)
        blind = [host for host, sees_out, _ in seen if not sees_out]
        storage = self.storage if self.storage != "auto" else ("ship" if blind else "shared")
        if storage == "shared" and blind:
            raise ExecutorError(f"--ray-storage shared, but node(s) {', '.join(blind)} do not see {options.out}; "
                                "mount it there or use --ray-storage ship")
        if data_path is None:
            return storage, "regenerated"
        if self.storage == "ship" or not all(sees_data for _, _, sees_data in seen):
            return storage, "shipped"
        return storage, "read"

    @staticmethod
    def _write_token(out: Path) -> tuple[str, str]:
        token = secrets.token_hex(16)
        path = Path(out) / f".scrapbench-probe-{token}"
        path.write_text(token)
        return str(path), token

    def _remove_probe(self) -> None:
        if self._probe_file is not None:
            Path(self._probe_file[0]).unlink(missing_ok=True)
            self._probe_file = None

    # -- the grid ---------------------------------------------------------------------------------
    def run_grid(self, dataset: Dataset, plans: Sequence[RunPlan], options: RunOptions,
                 retry: Mapping[tuple[str, int], str | None], report: Report,
                 progress: Any) -> dict[tuple[str, int], RunResult]:
        """All plans at once (Ray queues what does not fit); busy runs are waited for once the rest are done."""
        self._specs = tuple(get_spec(name) for name in dict.fromkeys(plan.method for plan in plans))
        # A worker has another working folder: the run folders are named by absolute paths.
        plans = [dataclasses.replace(plan, directory=plan.directory.absolute()) for plan in plans]
        if self._storage == "shared":
            # Under --out while the grid runs: a worker checks it sees it before writing there (a node that
            # joined after the probe and does not share the folder fails its runs, not writes them elsewhere).
            self._probe_file = self._write_token(options.out)
        results: dict[tuple[str, int], RunResult] = {}
        pool = ThreadPoolExecutor(max_workers=max(1, min(len(plans), _MAX_DRIVER_THREADS)),
                                  thread_name_prefix="scrapbench-ray")
        try:
            busy = self._collect({pool.submit(self._run_plan, dataset, plan, options, retry[plan.pair], False): plan
                                  for plan in plans}, results, report)
            if busy:
                progress.set_postfix_str(f"waiting for {len(busy)} run(s) another process holds")
                self._collect({pool.submit(self._run_plan, dataset, plan, options, retry[plan.pair], True): plan
                               for plan in busy}, results, report)
        except BaseException:
            self._cancel_in_flight()
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        finally:
            self._remove_probe()
        pool.shutdown()
        return results

    @staticmethod
    def _collect(futures: dict[Future, RunPlan], results: dict[tuple[str, int], RunResult],
                 report: Report) -> list[RunPlan]:
        busy = []
        pending = set(futures)
        while pending:
            done, pending = wait(pending, timeout=1.0, return_when=FIRST_COMPLETED)  # a timeout keeps Ctrl-C alive
            for future in done:
                result = future.result()
                report(result)
                if result.status == "busy":
                    busy.append(futures[future])
                else:
                    results[futures[future].pair] = result
        return busy

    def _run_plan(self, dataset: Dataset, plan: RunPlan, options: RunOptions, retry: str | None,
                  wait_for_holder: bool) -> RunResult:
        """One run's driver side (in a thread): ``run_one`` on a worker, or here with the files computed remotely."""
        if options.shards > 1:
            return run_one(dataset, plan, options, wait=wait_for_holder, retry=retry, compute=_PartsOnWorkers(self))
        if self._storage == "ship":
            return run_one(dataset, plan, options, wait=wait_for_holder, retry=retry, compute=_FolderOnWorker(self))
        if wait_for_holder:  # wait here, not in a task that would hold a worker's CPUs and GPU meanwhile
            wait_for_lease(plan.directory).release()
        try:
            return self._get(self._task(worker.run_whole).remote(self._source, self._specs, plan,
                                                                 worker_options(options), wait_for_holder, retry,
                                                                 self._probe_file))
        except Exception as exc:  # data or numerics differ on the worker, or it died more often than retried
            return RunResult(plan.method, plan.seed, plan.directory, "failed", error=one_line_error(exc))

    # -- Ray plumbing -----------------------------------------------------------------------------
    def _task(self, function: Callable, cpus: float | None = None, gpus: float | None = None, **options: Any) -> Any:
        """``function`` as a Ray task with a run's resources (or those given), retried when its worker dies."""
        env = {"OMP_WAIT_POLICY": "PASSIVE"}  # as in scrapbench.cli.main: spinning OpenMP threads stall shared cores
        return remote(function).options(
            num_cpus=self.cpus_per_run if cpus is None else cpus, num_gpus=self._gpus if gpus is None else gpus,
            max_retries=self.max_retries, retry_exceptions=False, runtime_env={"env_vars": env}, **options)

    def _get(self, ref: Any) -> Any:
        """``ray.get``, raising the task's own exception (not Ray's wrapper) when it failed."""
        import ray
        from ray.exceptions import RayTaskError

        with self._lock:
            self._in_flight.add(ref)
        try:
            return ray.get(ref)
        except RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, Exception):
                raise cause from exc  # the one-line error is the task's own; the chain keeps the remote traceback
            raise
        finally:
            with self._lock:
                self._in_flight.discard(ref)

    def _cancel_in_flight(self) -> None:
        with self._lock:
            refs = list(self._in_flight)
        cancel_unfinished(refs)


def cancel_unfinished(refs: Sequence[Any]) -> None:
    """Cancel the tasks of ``refs`` that have not finished (cancelling a finished task upsets Ray 2.60)."""
    import ray

    if not refs:
        return
    _, unfinished = ray.wait(list(refs), num_returns=len(refs), timeout=0)
    for ref in unfinished:
        ray.cancel(ref)



def quiet_raylet() -> Callable[[], None] | None:
    """Keep the raylet's messages, which Ray prints on the driver's console whatever ``log_to_driver`` says, off the
    console (they go to the ``scrapbench.ray`` logger); returns what undoes it (``None`` where this Ray prints
    them otherwise)."""
    from ray._private import worker as ray_worker

    printing = getattr(ray_worker, "print_to_stdstream", None)
    if printing is None:
        return None

    def print_but_raylet(data: dict[str, Any], *args: Any, **kwargs: Any) -> None:
        if data.get("pid") == "raylet":
            for line in data.get("lines", ()):
                logging.getLogger("scrapbench.ray").info("(raylet) %s", line)
            return
        printing(data, *args, **kwargs)

    ray_worker.print_to_stdstream = print_but_raylet
    return lambda: setattr(ray_worker, "print_to_stdstream", printing)


def remove_session(session: Path) -> None:
    """Remove a stopped local Ray's session folder, and Ray's ``session_latest`` link when it points there."""
    import shutil

    latest = session.parent / "session_latest"
    if latest.is_symlink() and Path(os.readlink(latest)).name == session.name:
        latest.unlink(missing_ok=True)
    if session.name.startswith("session_") and session.is_dir() and not session.is_symlink():
        shutil.rmtree(session, ignore_errors=True)


@functools.cache
def remote(function: Callable) -> Any:
    """The Ray remote function of ``function``, made once (each one is exported to the cluster)."""
    import ray

    return ray.remote(function)


def worker_options(options: RunOptions) -> RunOptions:
    """Workers draw no progress bars: their output goes to Ray's logs (or, with --verbose, interleaved here)."""
    return dataclasses.replace(options, show_progress=False)




class _FolderOnWorker(Compute):
    """``--ray-storage ship``: a worker computes the whole folder on its own disk; it comes back as an archive."""

    def __init__(self, executor: RayExecutor) -> None:
        self._executor = executor

    def files(self, dataset: Dataset, plan: RunPlan, options: RunOptions, folder: Path, attempt: str) -> dict[str, Any]:
        ex = self._executor
        archive = ex._get(ex._task(worker.compute_folder).remote(ex._source, ex._specs, plan, worker_options(options),
                                                                 attempt))
        unpack(archive, folder)
        return read_json_record(folder / "metrics.json")


class _PartsOnWorkers(Compute):
    """``--shards N``: one worker fits, N workers predict a part each; the parts are merged and written here."""

    def __init__(self, executor: RayExecutor) -> None:
        self._executor = executor

    def fit(self, dataset: Dataset, plan: RunPlan, options: RunOptions,
            folder: Path) -> tuple[AnomalyMethod | None, FitRecord]:
        ex = self._executor
        fitted, archive = ex._get(ex._task(worker.fit).remote(ex._source, ex._specs, plan, worker_options(options)))
        unpack(archive, folder)
        return None, fitted

    def predict(self, method: AnomalyMethod | None, dataset: Dataset, plan: RunPlan, options: RunOptions,
                folder: Path) -> list[Predictions]:
        import ray

        ex = self._executor
        model = ray.put(pack(folder / "model"))
        bounds = shard_bounds(len(dataset.test), options.shards, options.batch_size)
        refs = [ex._task(worker.predict).remote(ex._source, ex._specs, plan, worker_options(options), model, part,
                                                shard_label(index, bounds))
                for index, part in enumerate(bounds)]
        try:
            return [ex._get(ref) for ref in refs]
        except BaseException:
            cancel_unfinished(refs)  # a failed part stops the others
            raise
