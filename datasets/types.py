"""The data contract every loader produces and every method consumes.

A sample is an RGB image (uint8, H×W×3), a class-index mask (uint8, H×W; 0 = normal,
1..K = anomaly classes) and an id. Evaluation is binary (mask > 0); training may use classes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


class DatasetError(ValueError):
    """Bad input data; the message names the file and the problem."""


@dataclass(frozen=True)
class Sample:
    """One patch: image (H×W×3 uint8), class-index mask (H×W uint8) and a stable id."""

    image: np.ndarray
    mask: np.ndarray
    id: str

    @property
    def is_anomalous(self) -> bool:
        return bool(self.mask.any())


#: The files one sample was read from: (path, SHA-256 of the bytes) for its image, then its mask.
SampleFiles = tuple[tuple[str, str], ...]


class Split(Sequence[Sample]):
    """A lazily loaded, indexable list of samples (a split may not fit in memory).

    ``ids`` fixes the order; ``loader(i)`` returns sample ``i``. ``has_anomaly`` (per sample)
    lets methods pick normal references without decoding every image. ``files`` (per sample) holds
    the files it was read from, as (path, SHA-256) pairs: image, then mask; none for data built in memory.
    """

    def __init__(
        self,
        name: str,
        ids: Sequence[str],
        loader: Callable[[int], Sample],
        has_anomaly: Sequence[bool],
        class_presence: Sequence[frozenset[int]] | None = None,
        files: Sequence[SampleFiles] | None = None,
    ) -> None:
        if len(ids) != len(has_anomaly) or (files is not None and len(files) != len(ids)):
            raise ValueError("ids, has_anomaly and files must have the same length")
        self.name = name
        self.ids = list(ids)
        self._loader = loader
        self.has_anomaly = [bool(v) for v in has_anomaly]
        self.class_presence = (
            list(class_presence) if class_presence is not None else [frozenset() for _ in self.ids]
        )
        self.files: list[SampleFiles] = list(files) if files is not None else [() for _ in self.ids]

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        return self._loader(index)

    def __iter__(self) -> Iterator[Sample]:
        for i in range(len(self)):
            yield self._loader(i)

    def normal_indices(self) -> list[int]:
        return [i for i, a in enumerate(self.has_anomaly) if not a]

    def anomalous_indices(self) -> list[int]:
        return [i for i, a in enumerate(self.has_anomaly) if a]

    def subset(self, indices: Sequence[int], name: str | None = None) -> Split:
        """A view on some samples (same lazy loading)."""
        indices = list(indices)
        return Split(
            name or self.name,
            [self.ids[i] for i in indices],
            lambda j: self._loader(indices[j]),
            [self.has_anomaly[i] for i in indices],
            [self.class_presence[i] for i in indices],
            [self.files[i] for i in indices],
        )

    @classmethod
    def from_samples(cls, name: str, samples: Sequence[Sample]) -> Split:
        """An in-memory split (tests, small synthetic sets)."""
        samples = list(samples)
        return cls(
            name,
            [s.id for s in samples],
            lambda i: samples[i],
            [s.is_anomalous for s in samples],
            [frozenset(int(v) for v in np.unique(s.mask) if v) for s in samples],
        )


@dataclass(frozen=True)
class Dataset:
    """Class names (index 1..K in masks) and the train/test splits.

    ``fingerprint`` ("sha256:<hex>") identifies the data itself; readers that validate every file set it,
    otherwise :func:`scrapbench.datasets.fingerprint.dataset_fingerprint` computes it.
    """

    name: str
    class_names: tuple[str, ...]
    train: Split
    test: Split
    root: Path | None = None
    notes: dict = field(default_factory=dict)
    #: The object a category shows, in words ("metal nut"), for methods whose prompts name it
    #: (WinCLIP); ``None`` when the data has no single object (synthetic scrap, folders).
    object_name: str | None = None
    fingerprint: str | None = None  # "sha256:<hex>" of the files, set by readers that validate them

    @property
    def num_classes(self) -> int:
        """Number of anomaly classes K (masks hold 0..K)."""
        return len(self.class_names)


def in_memory(dataset: Dataset) -> Dataset:
    """A copy with every sample decoded and nothing but data in it, so that it can be pickled to another process
    (a lazy split reads files through a closure, which pickle refuses)."""

    def loaded(split: Split) -> Split:
        samples = list(split)
        return Split(split.name, split.ids, samples.__getitem__, split.has_anomaly, split.class_presence, split.files)

    return dataclasses.replace(dataset, train=loaded(dataset.train), test=loaded(dataset.test))
