"""Streaming, exact pixel-level evaluation: ``PixelMetrics``, bootstrap comparisons, folder evaluation."""

from .bootstrap import bootstrap_ci, paired_bootstrap
from .folders import evaluate_folders
from .inputs import MetricsError
from .pixel import PixelMetrics

#: Part of every run's identity: bump it whenever a change to the evaluator changes any number it
#: reports, so that finished runs scored by the old evaluator are not mixed with new ones.
EVALUATOR_VERSION = "2"  # 2: region weights in 2**-32 units (exact sums: shards merge bit-identically)

__all__ = ["EVALUATOR_VERSION", "MetricsError", "PixelMetrics", "bootstrap_ci", "evaluate_folders",
           "paired_bootstrap"]
