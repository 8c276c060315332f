"""Datasets: the in-memory data contract, on-disk loaders, the synthetic steel-scrap generator."""

from scrapbench.datasets.resolve import load_dataset
from scrapbench.datasets.types import Dataset, DatasetError, Sample, Split

__all__ = ["Dataset", "DatasetError", "Sample", "Split", "load_dataset"]
