"""The grid on a Ray cluster: each (method, seed) one Ray task, placed by Ray on a free GPU of any machine.

Every run still lives through ``scrapbench.run.lifecycle.run_one`` (plan, reuse, lease, compute, place), so runs
computed here equal, file for file, the local executor's with the same identity (same threads, hardware,
libraries). Where that life is spent depends on the storage:

* ``shared`` (the workers see ``--out``: a shared filesystem, or one machine): the worker runs ``run_one``
  itself, lease included, and writes its run folder.
* ``ship`` (they do not): the driver runs ``run_one``, holding the lease while a worker computes the run into
  a local temporary folder and returns it as a tar archive through the object store; the driver places it.

``auto`` (default) decides by a probe: the driver writes a token under ``--out`` and every node that can take a
run checks it sees the token. Runs with ``--shards N`` are always assembled by the driver: one task fits and
returns the model folder, N tasks load it and predict a part of the test set each, and the driver merges their
evaluators (exactly, ``scrapbench.metrics.merge``) and writes the folder under the lease.

Data: the synthetic dataset is regenerated on each worker (cached per node as usual); a dataset folder is read
from its path when every node sees it, else shipped once through the object store (in memory, read-only). Each
worker checks that its dataset's fingerprint equals the driver's and that it computes with the numerics the
grid was planned with (``identity.compute_settings``, measured on a worker before planning: torch threads =
``cpus_per_run``); otherwise the run fails with a message saying what differs.

Faults: a worker killed mid-run leaves only a staging folder; Ray retries the task (``max_retries``), the retry
takes the (released) lease, removes that folder and computes the run again. A method that raises is recorded in
``error.json`` as with the local executor, and the grid goes on.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import json
import logging
import os
import secrets
import shutil
import socket
import tarfile
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from scrapbench.core.registry import MethodSpec, adopt_specs, get_spec
from scrapbench.datasets.fingerprint import dataset_fingerprint
from scrapbench.datasets.types import Dataset, in_memory
from scrapbench.run.executors import ExecutorError
from scrapbench.run.identity import identity_differences
from scrapbench.run.lease import wait_for_lease
from scrapbench.run.lifecycle import (
    FitRecord,
    Predictions,
    RunOptions,
    RunPlan,
    RunResult,
    compute_run,
    dataset_slug,
    execute_run,
    finish_run,
    fit_run,
    one_line_error,
    process_numerics,
    run_one,
)
from scrapbench.run.seeding import seed_everything
from scrapbench.run.shards import predict_shard, shard_bounds
from scrapbench.storage.run_folder import read_json_record, run_dir

STORAGE_MODES = ("auto", "shared", "ship")
INSTALL_HINT = "pip install 'scrapbench[ray]'"
_MAX_DRIVER_THREADS = 64  # one per run in flight; each only waits on Ray


@dataclass(frozen=True)
class DataSource:
    """How a worker gets the dataset: ``regenerated`` (synthetic) or ``read`` from ``spec``, or ``shipped``."""

    mode: str
    spec: str
    preset: str
    seed: int
    fingerprint: str
    layout: str  # digest of the splits' ids: a worker's dataset must have the driver's splits too
    shipped: Any = None  # ObjectRef of the in-memory dataset when shipped


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
        verbose: Ray's own logs and the workers' output on the console.
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

    # -- before planning --------------------------------------------------------------------------
    def compute_settings(self, options: RunOptions) -> dict[str, Any]:
        """The numerics of a worker with a run's resources (measured once per device and batch size)."""
        import ray

        self._check_device(options)
        self._connect()
        key = (options.device, options.batch_size, options.precision)
        if key not in self._measured:
            self._measured[key] = ray.get(self._task(_worker_compute_settings).remote(options, self.cpus_per_run))
        return self._measured[key]

    def prepare(self, dataset: Dataset, options: RunOptions) -> RunOptions:
        """Connect, probe the nodes (storage, data), measure a worker's numerics; the options runs use."""
        import ray

        measured = self.compute_settings(options)
        options = dataclasses.replace(options, out=Path(options.out).resolve())  # the same path on every node
        nodes = self._run_nodes()
        storage, data_mode = self._probe(nodes, options)
        if data_mode != "regenerated" and _rearranged(dataset):
            data_mode = "shipped"  # a split made by the driver (--train-on, supervised split): no file holds it
        shipped = None
        if data_mode == "shipped":
            shipped = ray.put(dataclasses.replace(in_memory(dataset), fingerprint=dataset_fingerprint(dataset)))
        self._source = DataSource(data_mode, _absolute_spec(options.dataset_spec), options.preset, options.data_seed,
                                  dataset_fingerprint(dataset), _layout(dataset), shipped)
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
        data_path = None if options.dataset_spec == "synthetic" else str(_spec_path(options.dataset_spec))
        try:
            refs = [self._task(_worker_probe, cpus=0, gpus=0,
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
    def run_grid(self, dataset: Dataset, pairs: Sequence[tuple[str, int]], options: RunOptions,
                 retry: Mapping[tuple[str, int], str | None], report: Callable[[RunResult], None],
                 progress: Any) -> dict[tuple[str, int], RunResult]:
        """All pairs at once (Ray queues what does not fit); busy runs are waited for once the rest are done."""
        self._specs = tuple(get_spec(name) for name in dict.fromkeys(method for method, _ in pairs))
        if self._storage == "shared":
            # Under --out while the grid runs: a worker checks it sees it before writing there (a node that
            # joined after the probe and does not share the folder fails its runs, not writes them elsewhere).
            self._probe_file = self._write_token(options.out)
        results: dict[tuple[str, int], RunResult] = {}
        pool = ThreadPoolExecutor(max_workers=max(1, min(len(pairs), _MAX_DRIVER_THREADS)),
                                  thread_name_prefix="scrapbench-ray")
        try:
            busy = self._collect({pool.submit(self._run_pair, dataset, pair, options, retry[pair], False): pair
                                  for pair in pairs}, results, report)
            if busy:
                progress.set_postfix_str(f"waiting for {len(busy)} run(s) another process holds")
                self._collect({pool.submit(self._run_pair, dataset, pair, options, retry[pair], True): pair
                               for pair in busy}, results, report)
        except BaseException:
            self._cancel_in_flight()
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        finally:
            self._remove_probe()
        pool.shutdown()
        return results

    @staticmethod
    def _collect(futures: dict[Future, tuple[str, int]], results: dict[tuple[str, int], RunResult],
                 report: Callable[[RunResult], None]) -> list[tuple[str, int]]:
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
                    results[futures[future]] = result
        return busy

    def _run_pair(self, dataset: Dataset, pair: tuple[str, int], options: RunOptions, retry: str | None,
                  wait_for_holder: bool) -> RunResult:
        """One run's driver side (in a thread): the worker's ``run_one``, or ``run_one`` here with remote compute."""
        method, seed = pair
        if options.shards > 1 or self._storage == "ship":
            execute = self._execute_sharded if options.shards > 1 else self._execute_shipped
            return run_one(dataset, method, seed, options, wait=wait_for_holder, retry=retry,
                           compute=functools.partial(compute_run, execute=execute))
        directory = run_dir(options.out, dataset_slug(dataset, options), options.preset, method, seed)
        if wait_for_holder:  # wait here, not in a task that would hold a worker's CPUs and GPU meanwhile
            wait_for_lease(directory).release()
        try:
            return self._get(self._task(_worker_run_one).remote(self._source, self._specs, method, seed,
                                                                _worker_options(options), wait_for_holder, retry,
                                                                self._probe_file))
        except Exception as exc:  # data or numerics differ on the worker, or it died more often than retried
            return RunResult(method, seed, directory, "failed", error=one_line_error(exc))

    def _execute_shipped(self, dataset: Dataset, plan: RunPlan, options: RunOptions, folder: Path,
                         attempt: str) -> dict[str, Any]:
        """``execute_run`` on a worker, into its local disk; its folder comes back as a tar archive."""
        archive = self._get(self._task(_worker_execute).remote(self._source, self._specs, plan,
                                                               _worker_options(options), attempt))
        _unpack(archive, folder)
        return read_json_record(folder / "metrics.json")

    def _execute_sharded(self, dataset: Dataset, plan: RunPlan, options: RunOptions, folder: Path,
                         attempt: str) -> dict[str, Any]:
        """Fit on one worker, predict the parts on ``options.shards`` workers, merge and write here."""
        import ray

        worker_options = _worker_options(options)
        fitted, archive = self._get(self._task(_worker_fit).remote(self._source, self._specs, plan, worker_options))
        _unpack(archive, folder)
        model = ray.put(_pack(folder / "model"))
        bounds = shard_bounds(len(dataset.test), options.shards, options.batch_size)
        refs = [self._task(_worker_predict).remote(self._source, self._specs, plan, worker_options, model, part,
                                                   f" shard {index + 1}/{len(bounds)}")
                for index, part in enumerate(bounds)]
        try:
            parts = [self._get(ref) for ref in refs]
        except BaseException:
            _cancel_unfinished(refs)  # a failed part stops the others
            raise
        return finish_run(folder, dataset, plan, options, fitted, parts, attempt)

    # -- Ray plumbing -----------------------------------------------------------------------------
    def _task(self, function: Callable, cpus: float | None = None, gpus: float | None = None, **options: Any) -> Any:
        """``function`` as a Ray task with a run's resources (or those given), retried when its worker dies."""
        env = {"OMP_WAIT_POLICY": "PASSIVE"}  # see scrapbench/cli.py: spinning OpenMP threads stall shared cores
        return _remote(function).options(
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
        _cancel_unfinished(refs)


def _cancel_unfinished(refs: Sequence[Any]) -> None:
    """Cancel the tasks of ``refs`` that have not finished (cancelling a finished task upsets Ray 2.60)."""
    import ray

    if not refs:
        return
    _, unfinished = ray.wait(list(refs), num_returns=len(refs), timeout=0)
    for ref in unfinished:
        ray.cancel(ref)


# -- helpers used on both sides ------------------------------------------------------------------

@functools.cache
def _remote(function: Callable) -> Any:
    """The Ray remote function of ``function``, made once (each one is exported to the cluster)."""
    import ray

    return ray.remote(function)


def _absolute_spec(spec: str) -> str:
    """A dataset spec whose folder is absolute, so that workers with another working folder find it."""
    from scrapbench.datasets.resolve import parse_benchmark_spec

    if spec == "synthetic":
        return spec
    parsed = parse_benchmark_spec(spec)
    if parsed is None:
        return str(Path(spec).resolve())
    categories = f"#{','.join(parsed.categories)}" if parsed.categories else ""
    return f"{parsed.kind}:{parsed.root.resolve()}{categories}"


def _spec_path(spec: str) -> Path:
    """The folder a dataset spec reads (``mvtec:ROOT#cat`` → ROOT)."""
    from scrapbench.datasets.resolve import parse_benchmark_spec

    parsed = parse_benchmark_spec(spec)
    return Path(parsed.root if parsed is not None else spec).resolve()


def _rearranged(dataset: Dataset) -> bool:
    """Whether the driver rearranged the splits (``scrapbench.datasets.protocols``): no spec reopens them."""
    return any(isinstance(dataset.notes.get(key), dict) for key in ("training", "supervised_split"))


def _layout(dataset: Dataset) -> str:
    """Digest of the splits as the runs see them: names, image ids, which are anomalous."""
    digest = hashlib.sha256()
    for split in (dataset.train, dataset.test):
        digest.update(json.dumps([split.name, list(split.ids), list(split.has_anomaly)]).encode())
    return digest.hexdigest()


def _worker_options(options: RunOptions) -> RunOptions:
    """Workers draw no progress bars: their output goes to Ray's logs (or, with --verbose, interleaved here)."""
    return dataclasses.replace(options, show_progress=False)


def _pack(folder: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_symlink():
                raise ExecutorError(f"{path}: a run folder holds a symbolic link, which is not shipped")
            archive.add(path, arcname=path.relative_to(folder).as_posix(), recursive=False)
    return buffer.getvalue()


def _unpack(data: bytes, folder: Path) -> None:
    """Extract an archive made by ``_pack`` into ``folder``: only plain files and folders, all inside it.

    By hand rather than ``TarFile.extractall(filter="data")``: that filter still extracts links that stay
    inside the folder (a run folder has none, so any is refused here), and it is missing from Python
    releases this project supports (3.10 before 3.10.12)."""
    folder.mkdir(parents=True, exist_ok=True)
    root = folder.resolve()
    with tarfile.open(fileobj=io.BytesIO(data), mode="r") as archive:
        for member in archive.getmembers():
            target = (root / member.name).resolve()
            if not (member.isfile() or member.isdir()) or root not in (target, *target.parents):
                raise ExecutorError(f"refused archive entry {member.name!r} from a worker")
            if member.isdir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            source = archive.extractfile(member)
            assert source is not None
            with source, open(target, "wb") as sink:
                while chunk := source.read(1 << 20):
                    sink.write(chunk)


# -- what runs on the workers --------------------------------------------------------------------
#
# Plain module functions, wrapped by ``RayExecutor._task``; a worker imports this module to run them.

_WORKER_DATASETS: dict[tuple, Dataset] = {}  # this worker process's dataset, loaded once for all its tasks


def _worker_probe(probe: str, token: str, data_path: str | None) -> tuple[str, bool, bool]:
    """(host, sees the driver's token under --out, sees the dataset folder)."""
    try:
        sees_out = Path(probe).read_text() == token
    except OSError:
        sees_out = False
    return socket.gethostname(), sees_out, data_path is None or Path(data_path).exists()


def _worker_compute_settings(options: RunOptions, threads: int) -> dict[str, Any]:
    _set_threads(threads)
    seed_everything(0)
    return process_numerics(options)


def _set_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _enter(source: DataSource, specs: Sequence[MethodSpec], options: RunOptions, seed: int) -> Dataset:
    """Set a task up on its worker: threads, methods, numerics and data checked against the driver's."""
    planned = dict(options.compute_settings or {})
    _set_threads(int(planned.get("torch_threads", 1)))
    adopt_specs(specs)  # methods registered in the driver (plugins, tests) are known here too
    seed_everything(seed)
    here = process_numerics(options)
    if here != planned:
        changes = "; ".join(identity_differences(planned, here))
        raise ExecutorError(f"worker {socket.gethostname()} computes with other numerics than the grid was planned "
                            f"with ({changes}); give every node the same hardware and libraries, or keep runs on one "
                            "kind of node with Ray resources")
    return _worker_dataset(source)


def _worker_dataset(source: DataSource) -> Dataset:
    import ray

    from scrapbench.datasets import load_dataset

    key = (source.mode, source.spec, source.preset, source.seed, source.fingerprint, source.layout)
    if key not in _WORKER_DATASETS:
        if source.mode == "shipped":
            dataset = ray.get(source.shipped)
        else:
            dataset = load_dataset(source.spec, preset=source.preset, seed=source.seed)
        found = dataset_fingerprint(dataset)
        if found != source.fingerprint or _layout(dataset) != source.layout:
            raise ExecutorError(f"the dataset {source.spec!r} on worker {socket.gethostname()} is not the driver's "
                                f"(fingerprint {found[:19]}… here, {source.fingerprint[:19]}… there, or other "
                                "splits); give every node the same files, or let the driver ship them "
                                "(--ray-storage ship)")
        _WORKER_DATASETS.clear()  # one dataset per worker process
        _WORKER_DATASETS[key] = dataset
    return _WORKER_DATASETS[key]


def _worker_run_one(source: DataSource, specs: Sequence[MethodSpec], method: str, seed: int, options: RunOptions,
                    wait_for_holder: bool, retry: str | None, probe: tuple[str, str] | None) -> RunResult:
    """Shared storage: the run's whole life on the worker, lease included."""
    if probe is None or not _worker_probe(*probe, None)[1]:
        raise ExecutorError(f"worker {socket.gethostname()} does not see the results folder {options.out} (not "
                            "shared with the driver); use --ray-storage ship")
    dataset = _enter(source, specs, options, seed)
    return run_one(dataset, method, seed, options, wait=wait_for_holder, retry=retry)


@contextmanager
def _worker_folder() -> Iterator[Path]:
    """A temporary folder on the worker's disk, named by its process: folders of killed workers are removed here."""
    for stale in Path(tempfile.gettempdir()).glob("scrapbench-ray-*-*"):
        pid = stale.name.split("-")[2]
        if pid.isdigit() and not psutil.pid_exists(int(pid)) and stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale, ignore_errors=True)
    with tempfile.TemporaryDirectory(prefix=f"scrapbench-ray-{os.getpid()}-") as tmp:
        yield Path(tmp)


def _worker_execute(source: DataSource, specs: Sequence[MethodSpec], plan: RunPlan, options: RunOptions,
                    attempt: str) -> bytes:
    """No shared storage: compute the run into a local temporary folder and return it as a tar archive."""
    dataset = _enter(source, specs, options, plan.seed)
    with _worker_folder() as tmp:
        folder = tmp / "run"
        folder.mkdir()
        execute_run(dataset, plan, options, folder, attempt)
        return _pack(folder)


def _worker_fit(source: DataSource, specs: Sequence[MethodSpec], plan: RunPlan,
                options: RunOptions) -> tuple[FitRecord, bytes]:
    """The first step of a sharded run: fit, save; the fit record and the model and work folders as a tar."""
    dataset = _enter(source, specs, options, plan.seed)
    with _worker_folder() as tmp:
        _, record = fit_run(dataset, plan, options, tmp)
        return record, _pack(tmp)


def _worker_predict(source: DataSource, specs: Sequence[MethodSpec], plan: RunPlan, options: RunOptions,
                    model: bytes, bounds: tuple[int, int], label: str) -> Predictions:
    """One part of a sharded run: load the fitted model, predict and evaluate ``test[lo:hi]``."""
    dataset = _enter(source, specs, options, plan.seed)
    with _worker_folder() as tmp:
        _unpack(model, tmp / "model")
        return predict_shard(tmp / "model", dataset.test, bounds, options, plan, label)

