"""One place that makes a run repeatable: same seed, same numbers on the same machine and thread count.

What still changes the numbers, and why it is recorded rather than fought (see README, "Reproducibility"):

- the torch thread count (reductions are split differently), and the CPU's vector instructions (torch, oneDNN and
  MKL pick AVX2 or AVX-512 kernels, which round differently; MKL also picks by vendor). Training the detectors on a
  few hundred images turns such last-bit differences into different models: threads and kernel flavour are part
  of a run's identity (``scrapbench.run.identity.compute_settings``), the CPU model is recorded beside it;
- kernels that have no deterministic implementation (on CUDA: atomic-add backward passes such as nearest or
  bilinear upsampling and RoIAlign). torch only warns about them (``warn_only``: failing would make those methods
  unusable on a GPU); :class:`NondeterminismMonitor` collects the warnings so that the run record says so.
"""

from __future__ import annotations

import os
import platform
import random
import re
import warnings
from typing import Any

import numpy as np

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
    # warn_only: some CUDA kernels (backward passes using atomic adds) have no deterministic variant; they warn and
    # NondeterminismMonitor records them. On CPU every kernel these methods use is deterministic.
    torch.use_deterministic_algorithms(True, warn_only=True)
    # cuDNN's benchmark mode times candidate algorithms, so the one picked (and its rounding) depends on load.
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    # oneDNN may otherwise choose implementations built on atomics (its documented "deterministic" attribute).
    torch.backends.mkldnn.deterministic = True


def cpu_model() -> str:
    """The CPU's model name (MKL chooses its code paths by vendor and model, not only by instruction set)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


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
