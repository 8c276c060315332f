"""What a run costs: FLOPs per test image, counted the one way scrapbench counts them, and the run's cost record.

FLOPs are torch's own count (``torch.utils.flop_counter.FlopCounterMode``: 2 × the multiply-adds of matrix
products and convolutions; element-wise work, and anything numpy or scipy computes, is not counted).
The counter sees neither ``nn.MultiheadAttention``'s fused fast path (its projections and attention vanish
from the count) nor ``scaled_dot_product_attention``'s flash / memory-efficient kernels (the attention
vanishes), so the count runs with the fast path off and attention on the math backend, which computes the
same attention as matrix products it can see. ``scripts/bench_paper_preset.py`` counts with these switches.

A run counts the FLOPs of one ``predict_with_scores`` call on its first test image, after the timed
predictions (:func:`scrapbench.run.compute.predict_part`), with the random generators restored afterwards:
the maps, metrics, timings and peak memory of the run are those it has without the count.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np


def count_flops(fn: Callable[[], Any], fastpath: bool = False, math_attention: bool = True) -> int:
    """FLOPs of the torch operators ``fn()`` runs. Defaults: the fused attention fast path off and attention
    on the math backend (module docstring); ``fastpath=True`` / ``math_attention=False`` count as torch runs
    by default, which shows what the counter misses there."""
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    before = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(fastpath)
    try:
        with (sdpa_kernel(SDPBackend.MATH) if math_attention else contextlib.nullcontext()), \
                FlopCounterMode(display=False) as counter:
            fn()
    finally:
        torch.backends.mha.set_fastpath_enabled(before)
    return int(counter.get_total_flops())


@contextlib.contextmanager
def random_state_kept(device: str) -> Iterator[None]:
    """Python's, numpy's and torch's global generators (the CUDA one of ``device`` included) are back where
    they were when the block ends, whatever it drew."""
    import torch

    python, legacy = random.getstate(), np.random.get_state()
    cuda = [torch.device(device)] if str(device).startswith("cuda") and torch.cuda.is_available() else []
    try:
        with torch.random.fork_rng(devices=cuda):
            yield
    finally:
        random.setstate(python)
        np.random.set_state(legacy)


def flops_per_image(method: Any, image: np.ndarray, device: str) -> int | None:
    """FLOPs of ``method.predict_with_scores([image])`` (module docstring); ``None`` when the method holds no
    torch network (:meth:`~scrapbench.core.method.AnomalyMethod.parameter_counts` is ``None``): the counter
    sees torch operators only, so a count of numpy work would read as free."""
    if method.parameter_counts() is None:
        return None
    with random_state_kept(device):
        return count_flops(lambda: method.predict_with_scores([image]))


def cost_record(fitted: Any, parts: Sequence[Any]) -> dict[str, Any]:
    """run.json's ``cost`` from the fit record and the prediction parts (``scrapbench.run.compute``): parameters
    (total, trained) as fitted, FLOPs per test image from the part that counted them (the first; its error if the
    count failed), and the peak memory of fit and of predict (resident MB; allocated CUDA MB on a GPU, else null).
    A run predicted in parts reports its largest part's peak (the memory one worker needs)."""

    def largest(values: Sequence[float | None]) -> float | None:
        known = [v for v in values if v is not None]
        return round(max(known), 1) if known else None

    parameters = fitted.parameters
    record: dict[str, Any] = {
        "params_total": None if parameters is None else int(parameters[0]),
        "params_trained": None if parameters is None else int(parameters[1]),
        "flops_per_image": next((part.flops_per_image for part in parts if part.flops_per_image is not None), None),
        "fit_peak_rss_mb": largest([fitted.peak_rss_mb]),
        "predict_peak_rss_mb": largest([part.peak_rss_mb for part in parts]),
        "fit_peak_cuda_mb": largest([fitted.peak_cuda_mb]),
        "predict_peak_cuda_mb": largest([part.peak_cuda_mb for part in parts]),
    }
    flops_error = next((part.flops_error for part in parts if part.flops_error), None)
    if flops_error:
        record["flops_error"] = flops_error
    return record
