"""A run's identity: everything its numbers depend on, recorded in ``run.json``.

Two runs with equal identities give the same numbers (see the README: on CPU, with the same library
versions). ``scrapbench run`` reuses a finished run only when its recorded identity equals the one
asked for, and ``scrapbench report`` pools seeds into one row only when their identities differ in
nothing but the seed. Library versions and the code's commit are recorded beside the identity, not
in it: resuming after an upgrade is allowed, and the report names the versions it pooled.
"""

from __future__ import annotations

import json
import platform
from collections.abc import Mapping
from typing import Any

from scrapbench.metrics import EVALUATOR_VERSION


def compute_settings(device: str, predict_batch_size: int, precision: str = "fp32") -> dict[str, Any]:
    """The numerics the process runs with now: device and hardware, torch threads, determinism flags,
    and the networks' precision (resolved: fp32 / bf16 / fp16, see ``scrapbench.core.precision``).

    Read after ``seed_everything`` (which sets the determinism flags). The thread count matters on
    CPU: reductions are split per thread, so 1 and 2 threads round differently (measured: Mask R-CNN
    seed 0 scored AUROC 49.1 with 2 threads and 64.0 with 1).
    """
    import torch

    kind = torch.device(device).type
    if kind == "cuda" and torch.cuda.is_available():
        hardware = f"{torch.cuda.get_device_name(torch.device(device))}, CUDA {torch.version.cuda}"
    elif kind == "cpu":
        # The ATen kernels chosen at run time (AVX2 / AVX512 / ...) round differently.
        hardware = f"{platform.machine()} {torch.backends.cpu.get_cpu_capability()}"
    else:
        hardware = platform.machine()
    return {
        "device": kind,
        "hardware": hardware,
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


def identity_differences(recorded: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """``field: recorded → current`` for every field (dotted path) whose value differs."""
    before, after = _flatten(recorded), _flatten(current)
    return [f"{key}: {before.get(key, '(absent)')!r} → {after.get(key, '(absent)')!r}"
            for key in sorted(set(before) | set(after)) if before.get(key, _ABSENT) != after.get(key, _ABSENT)]


_ABSENT = object()


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: value}
