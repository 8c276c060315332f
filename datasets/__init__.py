"""Datasets: the in-memory data contract, on-disk loaders, the synthetic steel-scrap generator."""

from scrapbench.datasets.resolve import expand_dataset_spec, load_dataset, load_datasets
from scrapbench.datasets.types import Dataset, DatasetError, Sample, Split

__all__ = ["Dataset", "DatasetError", "Sample", "Split", "expand_dataset_spec", "load_dataset", "load_datasets"]
