"""``scrapbench run`` on a public benchmark: one run per (category, method, seed), each category its own dataset.

Every category is opened before any method runs (one that cannot be opened is reported and left out), and the
whole grid is planned and checked at once. What a method trains on follows its learning type and ``--train-on``
(README, "Public benchmarks"; ``scrapbench.datasets.protocols``); the identity records it, so runs trained on
other data are never reused for, nor pooled with, runs that were not.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from tqdm.auto import tqdm

from scrapbench.core.method import LearningType
from scrapbench.core.registry import build_config, get_spec
from scrapbench.datasets import DatasetError, expand_dataset_spec, load_dataset
from scrapbench.datasets.protocols import (
    TrainingData,
    check_cross_dataset,
    cross_dataset_training,
    supervised_split,
    with_training,
)
from scrapbench.datasets.resolve import parse_benchmark_spec
from scrapbench.datasets.types import Dataset
from scrapbench.run.executors.base import Executor
from scrapbench.run.executors.local import LocalExecutor
from scrapbench.run.grid import Tracker, prepare, run_plans
from scrapbench.run.plan import RunOptions, RunResult, plan_grid, refuse_identity_mismatches, with_fingerprint


@dataclass(frozen=True)
class CategoryFailure:
    """A dataset of the grid that could not be opened (or split): its runs did not happen."""

    spec: str
    message: str
    methods: tuple[str, ...]  # the methods whose runs on it did not happen (for every seed)


@dataclass
class RunGroup:
    """Runs that share one dataset object: some methods, some seeds."""

    spec: str
    dataset: Dataset
    methods: list[str]
    seeds: list[int]


@dataclass
class CategoryRuns:
    """What :func:`run_categories` did: every run's result, and the datasets that failed."""

    results: list[RunResult] = field(default_factory=list)
    failures: list[CategoryFailure] = field(default_factory=list)


def planned_learning_type(name: str, options: RunOptions) -> LearningType:
    """A method's learning type from its config, without building it (no weights are loaded)."""
    config = build_config(name, options.preset, options.overrides.get(name))
    return LearningType(get_spec(name).load_class().learning_type_for(config))


def learns_from_anomalies(name: str, options: RunOptions) -> bool:
    """Whether the method trains on anomalous images (and so takes ``--train-on`` / the supervised split)."""
    return planned_learning_type(name, options) is LearningType.SUPERVISED


def run_groups(spec: str, dataset: Dataset, methods: Sequence[str], seeds: Sequence[int], learners: set[str],
               training: TrainingData | None) -> list[RunGroup]:
    """The datasets each method runs on for one category (README, "Public benchmarks")."""
    others = [m for m in methods if m not in learners]
    chosen = [m for m in methods if m in learners]
    groups = [RunGroup(spec, dataset, others, list(seeds))] if others else []
    if not chosen:
        return groups
    if training is not None:
        groups.append(RunGroup(spec, with_training(dataset, training), chosen, list(seeds)))
    elif dataset.notes.get("benchmark") is not None:
        groups += [RunGroup(spec, supervised_split(dataset, seed), chosen, [seed]) for seed in seeds]
    else:  # a dataset folder or the synthetic set: its train split has anomalies to learn from
        groups.append(RunGroup(spec, dataset, chosen, list(seeds)))
    return groups


def run_categories(
    spec: str,
    methods: Sequence[str],
    seeds: Sequence[int],
    options: RunOptions,
    *,
    train_on: str | None = None,
    per_defect_type: bool = False,
    on_result: Callable[[RunResult], None] | None = None,
    on_dataset: Callable[[str, Dataset], None] | None = None,
    on_failure: Callable[[CategoryFailure], None] | None = None,
    say: Callable[[str], None] = lambda text: None,
    executor: Executor | None = None,
    tracker: Tracker | None = None,
) -> CategoryRuns:
    """Every (dataset of ``spec``, method, seed), each method trained as its learning type and ``train_on`` say.

    Raises DatasetError for what concerns every category (a spec that names nothing, ``--train-on``
    data that cannot be read or that is the evaluated data) and RunIdentityError when a finished run
    of the grid has another identity (nothing is run then). ``on_dataset(spec, dataset)`` sees each
    dataset once opened, ``on_failure`` each one left out; ``say`` gets the protocol notes worth a line.
    """
    if train_on is not None and parse_benchmark_spec(train_on) is None:
        raise DatasetError(f"--train-on {train_on}: takes mvtec:ROOT[#cat1,cat2] or visa:ROOT[#cat1,cat2]")
    specs = expand_dataset_spec(spec)
    learners = {m for m in methods if learns_from_anomalies(m, options)}
    ignoring = [m for m in methods if m not in learners]
    training = None
    if train_on is not None:
        if ignoring:
            say(f"--train-on does not apply to {', '.join(ignoring)} (zero-/few-shot: the category's own "
                f"train split, as in their papers)")
        if learners:
            training = cross_dataset_training(train_on, show_progress=options.show_progress)
            say(f"{', '.join(m for m in methods if m in learners)}: trained on {len(training.split)} test images "
                f"of {len(training.categories)} categories of {train_on}")
    outcome = CategoryRuns()
    groups: list[RunGroup] = []

    def fail(failure: CategoryFailure) -> None:
        outcome.failures.append(failure)
        if on_failure is not None:
            on_failure(failure)

    for one in specs:
        try:
            dataset = load_dataset(one, preset=options.preset, seed=options.data_seed,
                                   per_defect_type=per_defect_type, show_progress=options.show_progress)
        except DatasetError as exc:
            fail(CategoryFailure(one, str(exc), tuple(methods)))
            continue
        if training is not None:  # before anything runs: training on the evaluated images stops the whole grid
            check_cross_dataset(training, dataset)
        if on_dataset is not None:
            on_dataset(one, dataset)
        try:
            groups += run_groups(one, dataset, methods, seeds, learners, training)
        except DatasetError as exc:  # too few anomalous test images for a supervised split
            fail(CategoryFailure(one, f"supervised split: {exc}", tuple(m for m in methods if m in learners)))
            groups += run_groups(one, dataset, ignoring, seeds, set(), None)  # the others still run
    if training is None and learners and any(g.dataset.notes.get("supervised_split") for g in groups):
        say(f"{', '.join(m for m in methods if m in learners)}: no --train-on, so each trains on a seeded half of "
            f"each defect type's test images and is evaluated on the rest (supervised split): not the published "
            f"test set")
    executor = executor if executor is not None else LocalExecutor()
    # The identities are those of the processes that will compute the runs.
    options = dataclasses.replace(options, compute_settings=executor.compute_settings(options))
    planned = []
    for group in groups:
        group_options = dataclasses.replace(options, dataset_spec=group.spec)
        dataset = with_fingerprint(group.dataset)
        planned.append((dataset, group_options, plan_grid(dataset, group.methods, group.seeds, group_options)))
    # Every finished run of the whole grid is checked before any runs: a grid half-resumed is worse than none.
    refuse_identity_mismatches([plan for _, _, plans in planned for plan in plans], options)
    total = sum(len(plans) for _, _, plans in planned)
    with tqdm(total=total, desc="runs", unit="run", disable=not options.show_progress) as progress:
        for dataset, group_options, plans in planned:
            dataset, group_options = prepare(dataset, group_options, executor)
            outcome.results += run_plans(dataset, plans, group_options, executor, on_result, progress, tracker)
    return outcome
