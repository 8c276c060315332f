"""Numeric precision of the networks: ``--precision auto|fp32|bf16|fp16``.

A method keeps its weights in float32 and runs its networks under ``torch.autocast`` with the chosen
16-bit type (matrix products and convolutions in 16 bits, reductions and normalisations in 32); the
scores and maps it returns stay float32. ``auto`` picks what the device does well: bfloat16 on a CUDA
GPU that computes it natively (compute capability 8.0 and up: A100, H100, RTX 30xx ...), float16 on
older CUDA GPUs (training then scales the loss against underflow), float32 on the CPU and anything
else. The resolved value is part of a run's identity: 16-bit runs give other numbers.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def native_bf16(device: str | torch.device) -> bool:
    """Whether ``device`` is a CUDA GPU with bfloat16 tensor cores (compute capability ≥ 8.0).

    Not ``torch.cuda.is_bf16_supported()``: that also says yes where bfloat16 is only emulated.
    """
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return False
    return torch.cuda.get_device_capability(device) >= (8, 0)


def resolve_precision(requested: str, device: str | torch.device) -> str:
    """``auto`` → the device's choice; an explicit value is checked against the device and returned.

    Raises ValueError for an unknown value, and for bf16 on a CUDA GPU without native bfloat16.
    """
    if requested not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {requested!r}")
    kind = torch.device(device).type
    if requested == "auto":
        if kind == "cuda" and torch.cuda.is_available():
            return "bf16" if native_bf16(device) else "fp16"
        return "fp32"
    if requested == "bf16" and kind == "cuda" and torch.cuda.is_available() and not native_bf16(device):
        raise ValueError(f"{device} has no native bfloat16 (compute capability < 8.0); use --precision fp16 or auto")
    return requested


def check_precision(precision: str) -> str:
    """A resolved precision (fp32 / bf16 / fp16), as methods store it; ValueError otherwise."""
    if precision not in DTYPES:
        raise ValueError(f"a method runs in one of {tuple(DTYPES)}, got {precision!r} (resolve 'auto' first)")
    return precision


def autocast(precision: str, device: str | torch.device) -> contextlib.AbstractContextManager:
    """``torch.autocast`` for a 16-bit precision on ``device``; no change for fp32.

    fp32 also switches autocast *off*, so an fp32 method called inside someone else's autocast region
    still computes in float32.
    """
    if check_precision(precision) == "fp32":
        return full_precision(device)
    return torch.autocast(torch.device(device).type, dtype=DTYPES[precision])


def full_precision(device: str | torch.device) -> contextlib.AbstractContextManager:
    """Autocast off: float32 inside a 16-bit region (similarities, softmaxes and losses)."""
    kind = torch.device(device).type
    return torch.autocast(kind, enabled=False) if kind in ("cpu", "cuda") else contextlib.nullcontext()


def grad_scaler(precision: str, device: str | torch.device) -> torch.amp.GradScaler:
    """A loss scaler that is active only for fp16 training (bf16 has float32's exponent range)."""
    kind = torch.device(device).type
    return torch.amp.GradScaler(kind, enabled=check_precision(precision) == "fp16" and kind in ("cpu", "cuda"))


@contextlib.contextmanager
def inference(precision: str, device: str | torch.device) -> Iterator[None]:
    """Prediction: ``torch.inference_mode`` and :func:`autocast` together."""
    with torch.inference_mode(), autocast(precision, device):
        yield
