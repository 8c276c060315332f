"""The benchmarks' training protocols beyond "fit on the category's train split".

* Cross-dataset training (AnomalyCLIP's zero-shot protocol, Zhou et al., ICLR 2024, Sec. 4.1): a
  method that learns prompts is trained on the *test* set of another benchmark (all its categories,
  normal and anomalous images with their masks) and evaluated on this one: VisA → MVTec AD and
  MVTec AD → VisA. :func:`cross_dataset_train` builds that train split from ``--train-on``.
* Supervised methods (YOLO+SAM, Mask R-CNN, ours) need anomalous images with masks to learn from,
  which the one-class train splits of MVTec AD and VisA do not have. :func:`supervised_split` moves a
  seeded part of each defect type's test images into training, documented there.

A run records either protocol in its identity (:func:`training_identity`), so a run trained on
other data never pools with, nor is reused for, one that was not.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scrapbench.datasets.fingerprint import PREFIX, records_fingerprint
from scrapbench.datasets.io.cache import default_cache_dir
from scrapbench.datasets.resolve import benchmark_categories, parse_benchmark_spec
from scrapbench.datasets.split import check_records, checked_split, concat_splits
from scrapbench.datasets.types import Dataset, DatasetError, Split


@dataclass(frozen=True)
class TrainingData:
    """A train split from other data than the evaluated dataset's (``--train-on``), with its fingerprint."""

    spec: str
    split: Split
    fingerprint: str  # "sha256:<hex>" of the records and files, as a reader's dataset fingerprint
    categories: tuple[str, ...]
    folders: tuple[str, ...] = ()  # each category's folder, resolved

    @functools.cached_property
    def file_index(self) -> tuple[dict[str, str], dict[str, str]]:
        """The training files by resolved path and by content hash (each → the path as listed)."""
        by_path: dict[str, str] = {}
        by_hash: dict[str, str] = {}
        for files in self.split.files:
            for path, sha256 in files:
                by_path.setdefault(os.path.realpath(path), path)
                by_hash.setdefault(sha256, path)
        return by_path, by_hash


def cross_dataset_training(spec: str, show_progress: bool | None = None, use_cache: bool = True) -> TrainingData:
    """The test images of every category that ``spec`` (``visa:ROOT[#...]``, ``mvtec:ROOT[#...]``) names, as one
    train split, with the fingerprint of those files.

    Ids are ``<category>_<id>``; masks are binary (class 1, ``anomaly``) whatever the categories'
    defect types. Only the test images are read and checked (through the same file checks as every
    reader); the categories' images may differ in size from one category to the next.
    """
    parsed = parse_benchmark_spec(spec)
    if parsed is None:
        raise DatasetError(f"{spec}: --train-on takes mvtec:ROOT[#cat1,cat2] or visa:ROOT[#cat1,cat2]")
    categories = benchmark_categories(parsed)
    # Remembered checks of test-only reads live apart: a category's own cache file keeps all its files,
    # and a read of part of them would make it forget the others.
    cache = default_cache_dir() / "test-splits" if use_cache else None
    parts, manifest, folders = [], {}, []
    for category in categories:
        if parsed.kind == "mvtec":
            from scrapbench.datasets.public.mvtec import category_dir, mvtec_records

            folder = category_dir(parsed.root, category)
            records = mvtec_records(folder)[0]["test"]
        else:
            from scrapbench.datasets.public.visa import read_split_file

            folder = Path(parsed.root) / category
            records = read_split_file(parsed.root)[category]["test"]
        folders.append(os.path.realpath(folder))
        facts = check_records(records, folder, cache, show_progress)
        where = f"{parsed.kind} {category} test"
        parts.append((category, checked_split("train", records, facts, where, one_size=False)))
        manifest[category] = records_fingerprint({"category": category}, {"test": records}, facts, folder)
    header = json.dumps({"cross_dataset_train": parsed.kind, "classes": ["anomaly"], "categories": manifest},
                        sort_keys=True)
    fingerprint = PREFIX + hashlib.sha256(header.encode()).hexdigest()
    return TrainingData(spec, concat_splits("train", parts), fingerprint, tuple(categories), tuple(folders))


def cross_dataset_train(spec: str, show_progress: bool | None = None) -> Split:
    """The train split of :func:`cross_dataset_training` alone."""
    return cross_dataset_training(spec, show_progress).split


def with_training(dataset: Dataset, training: TrainingData) -> Dataset:
    """``dataset`` with ``training``'s train split (the test split stays); recorded in ``notes["training"]``.

    Refused (:func:`check_cross_dataset`) when the training data shares a file with the test split;
    ``shares_test_files: false`` records that this was checked file by file.
    """
    check_cross_dataset(training, dataset)
    notes = {**dataset.notes, "training": {"protocol": "cross_dataset", "train_on": training.spec,
                                           "fingerprint": training.fingerprint,
                                           "categories": list(training.categories),
                                           "num_train": len(training.split), "shares_test_files": False}}
    return dataclasses.replace(dataset, train=training.split, notes=notes)


def training_identity(dataset: Dataset) -> dict | None:
    """What a run's identity records of its training data besides the dataset's own fingerprint.

    ``None`` when the method trains on the dataset's train split as it is. Cross-dataset training:
    the training data's fingerprint (not its path: moving the data keeps the identity). A supervised
    split: its fraction (the split itself follows from the dataset and the run's seed).
    """
    training = dataset.notes.get("training")
    if isinstance(training, dict) and training.get("protocol") == "cross_dataset":
        return {"protocol": "cross_dataset", "fingerprint": training["fingerprint"]}
    split = dataset.notes.get("supervised_split")
    if isinstance(split, dict):
        return {"protocol": "supervised_split", "train_fraction": split["train_fraction"]}
    return None


def benchmark_record(dataset: Dataset) -> dict:
    """What ``run.json`` records of a benchmark category and its training protocol (empty for other data).

    ``benchmark`` and ``category`` let ``scrapbench report`` put a benchmark's categories side by
    side; ``training`` / ``supervised_split`` say that the train split is not the category's own.
    """
    record = {key: dataset.notes[key] for key in ("benchmark", "category") if key in dataset.notes}
    if dataset.object_name is not None:
        record["object_name"] = dataset.object_name
    for key in ("training", "supervised_split"):
        if isinstance(dataset.notes.get(key), dict):
            record[key] = dict(dataset.notes[key])
    return record


def shared_test_file(training: TrainingData, test: Split) -> tuple[str, str, str] | None:
    """The first file of ``test`` that the training data also holds: (training file, test file, how), found by
    resolved path (a link, another spelling of the root) or by content (a copy); ``None`` when they share none."""
    by_path, by_hash = training.file_index
    for files in test.files:
        for path, sha256 in files:
            real = os.path.realpath(path)
            if real in by_path:
                return by_path[real], path, "the same file"
            if sha256 in by_hash:
                return by_hash[sha256], path, "the same content"
    return None


def same_benchmark(training: TrainingData, dataset: Dataset) -> str | None:
    """The resolved folder of the benchmark that both the training data and ``dataset`` (one of its categories) come
    from, however each spec names it (``mvtec:ROOT``, ``mvtec:ROOT/bottle``, a link); ``None`` when they do not."""
    kind = training.spec.partition(":")[0]
    if dataset.notes.get("benchmark") != kind or dataset.root is None:
        return None
    benchmark = os.path.dirname(os.path.realpath(dataset.root))  # a category's folder lies in its benchmark's root
    return benchmark if any(os.path.dirname(folder) == benchmark for folder in training.folders) else None


def check_cross_dataset(training: TrainingData, dataset: Dataset) -> None:
    """Refuse to train on the evaluated benchmark's test images: on ``dataset``'s own benchmark (any of its
    categories), or on any file of ``dataset``'s test split, found by resolved path or content hash (a copy)."""
    advice = "train on the other benchmark (AnomalyCLIP: VisA → MVTec AD, MVTec AD → VisA)"
    shared = shared_test_file(training, dataset.test)
    if shared is not None:
        train_file, test_file, how = shared
        raise DatasetError(f"--train-on {training.spec} trains on the test images of {dataset.name}, which is "
                           f"evaluated: {train_file} is {how} as {test_file}; {advice}")
    benchmark = same_benchmark(training, dataset)
    if benchmark is not None:
        raise DatasetError(f"--train-on {training.spec} trains on the test images of {dataset.name}'s benchmark "
                           f"({benchmark}), which is evaluated; {advice}")


def shares_test_files(record: Mapping[str, Any]) -> bool:
    """Whether ``run.json``'s dataset record (:func:`benchmark_record`) says the run trained on data that overlaps its
    evaluated test set. Runs recorded before the check by file (no ``shares_test_files``): when its cross-dataset
    training data names its own benchmark category (the same data, or a copy of it)."""
    training = record.get("training")
    if not isinstance(training, Mapping) or training.get("protocol") != "cross_dataset":
        return False
    recorded = training.get("shares_test_files")
    if isinstance(recorded, bool):
        return recorded
    kind = str(training.get("train_on", "")).partition(":")[0]
    categories = training.get("categories")
    return (bool(kind) and kind == record.get("benchmark") and isinstance(categories, list)
            and record.get("category") in categories)


def _seeded_order(ids: Sequence[str], seed: int) -> list[str]:
    # A hash of (seed, id), not a shuffle of the list: the split does not depend on file order.
    return sorted(ids, key=lambda i: hashlib.sha256(f"{seed}:{i}".encode()).hexdigest())


def supervised_split(dataset: Dataset, seed: int, train_fraction: float = 0.5) -> Dataset:
    """Train/test for supervised methods on a benchmark category, drawn by ``seed``.

    Train: the category's own train images (all normal) plus, from each defect type of the test
    split, ``round(train_fraction · n)`` images (at least one, and at least one left, when the type
    has two or more), chosen by a hash of (seed, image id). Test: every other test image, normal
    test images included. So a supervised method sees each defect type, the evaluated images differ
    from the published protocol's full test set (say so next to any comparison), and mean ± std
    over seeds covers the choice of split. Defect types come from ``dataset.notes["test_groups"]``
    (the MVTec AD and VisA readers set it); without it, all anomalous test images form one group.
    """
    if not 0.0 < train_fraction < 1.0:
        raise ValueError(f"train_fraction must be in (0, 1), got {train_fraction}")
    test = dataset.test
    groups = dataset.notes.get("test_groups")
    if groups is None or len(groups) != len(test):
        groups = ["anomaly" if a else "normal" for a in test.has_anomaly]
    members: dict[str, list[int]] = {}
    for index, (group, anomalous) in enumerate(zip(groups, test.has_anomaly, strict=True)):
        if anomalous:
            members.setdefault(group, []).append(index)
    if not members:
        raise DatasetError(f"{dataset.name}: no anomalous test image to train a supervised method on")
    moved: set[int] = set()
    for indices in members.values():
        n_train = round(train_fraction * len(indices))
        if len(indices) >= 2:
            n_train = min(max(n_train, 1), len(indices) - 1)
        by_id = {test.ids[i]: i for i in indices}
        moved |= {by_id[i] for i in _seeded_order(list(by_id), seed)[:n_train]}
    kept = [i for i in range(len(test)) if i not in moved]
    if not moved or not any(test.has_anomaly[i] for i in kept):
        raise DatasetError(f"{dataset.name}: too few anomalous test images to both train a supervised method "
                           f"and evaluate it")
    chosen = sorted(moved)
    train = concat_splits("train", [("train", dataset.train), ("test", test.subset(chosen))])
    notes = {**dataset.notes, "supervised_split": {"seed": seed, "train_fraction": train_fraction,
                                                  "moved_test_images": len(chosen)},
             "test_groups": tuple(groups[i] for i in kept)}
    return dataclasses.replace(dataset, train=train, test=test.subset(kept), notes=notes)
