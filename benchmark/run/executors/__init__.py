"""Executors: what computes the runs of a grid. ``local`` (default): this process, one run after another;
``pool`` (``--jobs N``): N worker processes on this machine, N runs side by side;
``ray``: a Ray cluster, one task per (method, seed) on the GPUs and machines it has.

A small lazy table, like the method registry: an executor's module (and Ray) is imported only when chosen.
Every executor computes a run through ``scrapbench.run.lifecycle.run_one``, the one place a run's life is written.
"""

from __future__ import annotations

import difflib
import importlib
from typing import Any

EXECUTORS = {
    "local": "scrapbench.run.executors.local:LocalExecutor",
    "pool": "scrapbench.run.executors.pool:PoolExecutor",
    "ray": "scrapbench.run.executors.ray.driver:RayExecutor",
}


class ExecutorError(RuntimeError):
    """An executor cannot run as asked (Ray missing, no node fits a run, ...); the message says what to do."""


def executor_class(name: str) -> type:
    """The class registered as ``name``; unknown names get a "did you mean"."""
    if name not in EXECUTORS:
        close = difflib.get_close_matches(name, list(EXECUTORS), n=2)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise KeyError(f"unknown executor {name!r}{hint} (choose from {', '.join(EXECUTORS)})")
    module_name, _, attr = EXECUTORS[name].partition(":")
    return getattr(importlib.import_module(module_name), attr)


def create_executor(name: str, **settings: Any) -> Any:
    """An executor by name, e.g. ``create_executor("ray", address="auto", gpus_per_run=1)``."""
    return executor_class(name)(**settings)
