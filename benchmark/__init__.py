"""scrapbench: pixel-level anomaly segmentation benchmark for steel-scrap recycling."""

__version__ = "0.1.0"
