"""A run's provenance: its identity, how the process is seeded, and what its record says about where it ran.

The identity (:func:`run_identity`) is everything a run's numbers depend on: ``scrapbench run`` reuses a finished
run only when its recorded identity equals the one asked for, and ``scrapbench report`` pools seeds only when their
identities differ in the seed alone. The process's numerics (:func:`compute_settings`) are part of it: torch threads
and the CPU's kernel flavour round differently, so they are recorded rather than fought (README, "Reproducibility").
Library versions, the git commit, the machine's description and the kernels that ran without a deterministic
variant are recorded beside the identity, not in it: resuming after an upgrade is allowed.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import random
import re
import subprocess
import threading
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from scrapbench.metrics import EVALUATOR_VERSION

# -- the identity ---------------------------------------------------------------------------------


def compute_settings(device: str, predict_batch_size: int, precision: str = "fp32") -> dict[str, Any]:
    """The numerics the process runs with now: device and hardware (on CPU also its vendor and model), torch
    threads, determinism flags, and the networks' precision (resolved: fp32 / bf16 / fp16, see
    ``scrapbench.core.precision``).

    Read after :func:`seed_everything` (which sets the determinism flags). The thread count matters on
    CPU: reductions are split per thread, so 1 and 2 threads round differently.
    """
    import torch

    kind = torch.device(device).type
    gpu = gpu_name(device)
    if gpu is not None:
        hardware = f"{gpu}, CUDA {torch.version.cuda}"
    elif kind == "cpu":
        # The ATen kernels chosen at run time (AVX2 / AVX512 / ...) round differently.
        hardware = f"{platform.machine()} {torch.backends.cpu.get_cpu_capability()}"
    else:
        hardware = platform.machine()
    # MKL and oneDNN also pick their code by CPU vendor and model, beyond the SIMD level: a CPU run records both.
    cpu = {"cpu_vendor": cpu_vendor(), "cpu_model": cpu_model()} if gpu is None and kind == "cpu" else {}
    return {
        "device": kind,
        "hardware": hardware,
        **cpu,
        "torch_threads": torch.get_num_threads(),
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "deterministic_warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
        "cudnn_deterministic": bool(torch.backends.cudnn.deterministic),
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "predict_batch_size": predict_batch_size,
        "precision": precision,
    }


def run_identity(method: str, seed: int, preset: str, config: Mapping[str, Any], dataset_fingerprint: str,
                 compute: Mapping[str, Any], training: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The identity recorded in ``run.json`` (plain JSON values, so it compares equal once reloaded).

    ``training``: how the train split departs from the dataset's own (other data, a supervised split;
    :func:`scrapbench.datasets.protocols.training_identity`); absent when it does not.
    """
    identity = {"method": method, "seed": seed, "preset": preset, "config": dict(config),
                "dataset_fingerprint": dataset_fingerprint, "evaluator_version": EVALUATOR_VERSION,
                "compute": dict(compute)}
    if training is not None:
        identity["training"] = dict(training)
    return json.loads(json.dumps(identity))


def without_seed(identity: Mapping[str, Any]) -> str:
    """A key equal for two runs exactly when their identities differ at most in the seed."""
    return json.dumps({k: v for k, v in identity.items() if k != "seed"}, sort_keys=True)


def identity_hash(identity: Mapping[str, Any]) -> str:
    """A short, stable name of a whole identity (``sha256:<hex>`` of its canonical JSON): what an experiment
    tracker finds a run again by (``scrapbench.track``)."""
    canonical = json.dumps(identity, sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def identity_differences(recorded: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """``field: recorded → current`` for every field (dotted path) whose value differs."""
    before, after = flatten(recorded), flatten(current)
    return [f"{key}: {before.get(key, '(absent)')!r} → {after.get(key, '(absent)')!r}"
            for key in sorted(set(before) | set(after)) if before.get(key, _ABSENT) != after.get(key, _ABSENT)]


_ABSENT = object()


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested objects as one level of dotted keys (``config.lr``); lists and other values stay as they are."""
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(flatten(item, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: value}


# -- seeding and the kernels that stay nondeterministic -------------------------------------------

# torch's alerts (torch.use_deterministic_algorithms with warn_only=True), as they reach Python.
_KERNEL_ALERT = re.compile(r"(\S+) does not have a deterministic implementation")
_CUBLAS_ALERT = re.compile(r"this operation is not deterministic because it uses CuBLAS")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch, and ask torch (and cuDNN, oneDNN) for deterministic kernels."""
    import torch

    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # read when cuBLAS starts: deterministic GEMMs
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    # warn_only: some CUDA kernels (backward passes using atomic adds, e.g. upsampling, RoIAlign) have no
    # deterministic variant; they warn and NondeterminismMonitor records them. On CPU every kernel these methods
    # use is deterministic.
    torch.use_deterministic_algorithms(True, warn_only=True)
    # cuDNN's benchmark mode times candidate algorithms, so the one picked (and its rounding) depends on load.
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    # oneDNN may otherwise choose implementations built on atomics (its documented "deterministic" attribute).
    torch.backends.mkldnn.deterministic = True


class NondeterminismMonitor:
    """Within ``with``: collects the kernels torch reports as nondeterministic (``ops``), one warning shown per kernel.

    Warnings that are not such alerts pass through unchanged. The alerts are let through the warning filters every
    time (the default shows a warning once per code location and process, which would hide them from later runs).
    """

    def __init__(self) -> None:
        self.ops: set[str] = set()
        self._catcher: Any = None
        self._show: Any = None

    def __enter__(self) -> NondeterminismMonitor:
        self._catcher = warnings.catch_warnings()  # restores filters and showwarning on exit
        self._catcher.__enter__()
        warnings.filterwarnings("always", message=r".*does not have a deterministic implementation")
        warnings.filterwarnings("always", message=r".*not deterministic because it uses CuBLAS")
        self._show = warnings.showwarning
        warnings.showwarning = self._record
        return self

    def __exit__(self, *exc: object) -> None:
        self._catcher.__exit__(*exc)

    def _record(self, message: Warning | str, category: type[Warning], filename: str, lineno: int,
                file: Any = None, line: str | None = None) -> None:
        text = str(message)
        kernel = _KERNEL_ALERT.search(text)
        op = kernel.group(1) if kernel else "cuBLAS" if _CUBLAS_ALERT.search(text) else None
        if op is not None:
            if op in self.ops:
                return
            self.ops.add(op)
        self._show(message, category, filename, lineno, file, line)

    def record(self) -> dict[str, Any]:
        """The run record's ``determinism`` entry."""
        return {"deterministic": not self.ops, "nondeterministic_ops": sorted(self.ops), "cpu_model": cpu_model()}


# -- where it ran: the machine, the libraries, the code, the memory -------------------------------

_PACKAGES = ("scrapbench", "torch", "torchvision", "open_clip_torch", "ultralytics", "segment-anything",
             "anomalib", "schedulefree", "numpy", "scipy", "pandas")


def gpu_name(device: str) -> str | None:
    """The GPU's name when ``device`` is a CUDA device this process sees, else ``None``."""
    import torch

    if torch.device(device).type == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    return None


def device_description(device: str) -> dict[str, object]:
    """The run record's ``device`` entry: the device asked for, the platform, CPUs and threads, the GPU."""
    import torch

    info: dict[str, object] = {"device": device, "platform": platform.platform(),
                               "cpu_count": psutil.cpu_count(), "torch_threads": torch.get_num_threads()}
    gpu = gpu_name(device)
    if gpu is not None:
        info["gpu"] = gpu
    return info


def _cpuinfo(field: str) -> str | None:
    """The first value of ``field`` in ``/proc/cpuinfo`` (Linux), else ``None``."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                name, sep, value = line.partition(":")
                if sep and name.strip() == field:
                    return value.strip() or None
    except OSError:
        pass
    return None


def cpu_model() -> str:
    """The CPU's model name (MKL chooses its code paths by vendor and model, not only by instruction set)."""
    return _cpuinfo("model name") or platform.processor() or "unknown"


def cpu_vendor() -> str:
    """The CPU's vendor (``GenuineIntel``, ``AuthenticAMD``; the implementer code on ARM), else ``unknown``."""
    return _cpuinfo("vendor_id") or _cpuinfo("CPU implementer") or "unknown"


def numerics_advice() -> str:
    """What to do when a run's ``compute`` fields differ: what can be pinned and what cannot."""
    return ("compute.* is the machine's numerics: pin the threads to the recorded compute.torch_threads "
            "(OMP_NUM_THREADS=N scrapbench run ..., --jobs with as many threads per run, or --cpus-per-run N on "
            "Ray); the device, the hardware (SIMD level, GPU and CUDA version) and the CPU vendor and model "
            "cannot be pinned: compute on a machine like the one that wrote these runs")


def library_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_commit() -> str | None:
    """The commit of the scrapbench checkout, when it is one (an installed wheel has none)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


class PeakMemory:
    """Samples this process's resident memory in a thread; ``peak_mb`` is the maximum seen. With a CUDA
    ``device``, ``peak_cuda_mb`` is also the most memory torch's allocator held on it in the block
    (``torch.cuda.max_memory_allocated``, reset on entry); ``None`` on other devices.

    ``ru_maxrss`` only reports the whole process's lifetime peak, so it cannot tell runs apart.
    """

    def __init__(self, interval_s: float = 0.05, device: str = "cpu") -> None:
        self._process = psutil.Process()
        self._interval = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self.peak_bytes = self._process.memory_info().rss
        self._cuda = str(device) if str(device).startswith("cuda") else None
        self.peak_cuda_bytes: int | None = None

    def _sample(self) -> None:
        while not self._stop.wait(self._interval):
            self.peak_bytes = max(self.peak_bytes, self._process.memory_info().rss)

    def __enter__(self) -> PeakMemory:
        if self._cuda is not None:
            import torch

            torch.cuda.reset_peak_memory_stats(self._cuda)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_bytes = max(self.peak_bytes, self._process.memory_info().rss)
        if self._cuda is not None:
            import torch

            self.peak_cuda_bytes = torch.cuda.max_memory_allocated(self._cuda)

    @property
    def peak_mb(self) -> float:
        return self.peak_bytes / 2**20

    @property
    def peak_cuda_mb(self) -> float | None:
        return None if self.peak_cuda_bytes is None else self.peak_cuda_bytes / 2**20


@contextmanager
def restored_environ(*keys: str) -> Iterator[None]:
    """Put the named environment variables back as they were (or unset) when the block ends (the seeding and
    offline switches that a library sets for itself must not leak into the next run)."""
    saved = {key: os.environ.get(key) for key in keys}
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
