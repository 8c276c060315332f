"""Streaming, exact pixel-level evaluation: ``PixelMetrics``, bootstrap comparisons, folder evaluation."""

from .bootstrap import bootstrap_ci, paired_bootstrap
from .folders import evaluate_folders
from .inputs import MetricsError
from .pixel import PixelMetrics

__all__ = ["MetricsError", "PixelMetrics", "bootstrap_ci", "evaluate_folders", "paired_bootstrap"]
