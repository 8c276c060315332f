"""From run folders to pooled numbers: the tidy frame of finished runs, the checks that decide which
runs one report may pool, and each method's mean ± std over seeds.

``collect`` reads every finished run folder into one row per (run, metric), and sets aside the runs that
cannot be pooled (listed as failed runs are); ``collect_runs`` is its rows. ``select_group`` picks one
(dataset, preset), or one public benchmark's categories, and refuses runs that must not be pooled
(``check_poolable``: different data, evaluator or setting). ``summary_table`` averages over seeds
(mean ± sample std, in %). How the numbers are written is :mod:`scrapbench.report.cells` and
:mod:`scrapbench.report.render`.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from scrapbench.datasets.protocols import shares_test_files
from scrapbench.metrics.summary import IMAGE_METRICS, PIXEL_METRICS
from scrapbench.report.cells import (
    MARK_COLUMNS,
    ablation_label,
    cost_cells,
    mark_notes,
    marked,
    mean_std_cell,
    method_label,
    metric_label,
)
from scrapbench.run.provenance import identity_differences, without_seed
from scrapbench.storage.run_folder import RunFolderError, iter_finished_runs, read_finished_run

#: run.json's ``cost`` record (``scrapbench.run.cost.cost_record``), one tidy column each.
COST_COLUMNS = ("params_total", "params_trained", "flops_per_image", "fit_peak_rss_mb", "predict_peak_rss_mb",
                "fit_peak_cuda_mb", "predict_peak_cuda_mb")


class ReportError(ValueError):
    """No usable runs, or an ambiguous selection; the message says what to pass."""


@dataclass(frozen=True)
class Collected:
    """The finished runs below a results folder: those a report may pool and those it may not."""

    tidy: pd.DataFrame  # one row per (usable run, metric): :func:`collect_runs`
    #: (run folder, {"method", "seed", "message"}): shaped as error.json, so that they are listed as failed runs are
    unusable: list[tuple[Path, dict[str, Any]]]


def collect_runs(runs_dir: str | Path) -> pd.DataFrame:
    """One row per (usable finished run, metric) with the run's identity, weights flag and timings."""
    return collect(runs_dir).tidy


def collect(runs_dir: str | Path) -> Collected:
    """Every finished run below ``runs_dir``: rows of those that can be pooled, and why the others cannot.

    A run cannot be pooled when its records are unreadable or hold what the runner never writes
    (:func:`scrapbench.storage.run_folder.read_finished_run`), when it has no identity, or when
    another run claims the same (dataset, preset, method, seed).
    """
    runs_dir = Path(runs_dir)
    runs, unusable = [], []
    for folder in iter_finished_runs(runs_dir):
        try:
            record, metrics = read_finished_run(folder)
            runs.append((folder, _run_columns(folder, record), _metric_values(metrics)))
        except RunFolderError as exc:
            unusable.append(_unusable(folder, str(exc)))
    claims: dict[tuple[Any, ...], list[Path]] = {}
    for folder, base, _ in runs:
        claims.setdefault((base["dataset"], base["preset"], base["method"], base["seed"]), []).append(folder)
    rows = []
    for folder, base, values in runs:
        others = [f for f in claims[(base["dataset"], base["preset"], base["method"], base["seed"])] if f != folder]
        if others:
            claimed = ", ".join(other.relative_to(runs_dir).as_posix() for other in others)
            unusable.append(_unusable(folder, f"{folder / 'run.json'}: {base['method']} seed {base['seed']} on "
                                              f"{base['dataset']} is also claimed by {claimed}"))
            continue
        rows += [{**base, "metric": metric, "value": value} for metric, value in values.items()]
    columns = ["dataset", "preset", "method", "seed", "label", "ablation_label", "suites", "learning_type",
               *MARK_COLUMNS, "fit_s", "predict_images_per_s", "peak_rss_mb", *COST_COLUMNS, "flops_error", "folder",
               "dataset_fingerprint",
               "evaluator_version", "identity", "benchmark", "category", "training", "shots", "metric", "value"]
    return Collected(pd.DataFrame(rows, columns=columns), sorted(unusable, key=lambda item: item[0]))


def _run_columns(folder: Path, record: dict[str, Any]) -> dict[str, Any]:
    """A run's columns of the tidy frame (RunFolderError when it has no identity for its seed)."""
    identity = record.get("identity")
    if not isinstance(identity, dict):
        raise RunFolderError(f"{folder / 'run.json'}: no run identity (written by an older scrapbench), so it cannot "
                             f"be pooled safely")
    if identity.get("seed", record["seed"]) != record["seed"]:
        raise RunFolderError(f"{folder / 'run.json'}: identity.seed {identity['seed']!r} is not the run's seed "
                             f"{record['seed']}")
    dataset = record.get("dataset", {})
    timings = record.get("timings", {})
    cost = record.get("cost") or {}  # absent in runs from before scrapbench recorded it: their cells show –
    config = record.get("config", {})
    display_name = record.get("display_name") if isinstance(record.get("display_name"), str) else None
    return {
        "dataset": dataset.get("name", "?"),
        "preset": record.get("preset", "?"),
        "method": record["method"],
        "seed": int(record["seed"]),
        "label": method_label(record["method"], config, display_name),
        "ablation_label": ablation_label(record["method"], config, display_name),
        "suites": ",".join(record.get("suites", [])),
        "learning_type": record.get("learning_type"),
        "random_init": bool(record.get("weights", {}).get("random_init", False)),
        "nondeterministic": (record.get("determinism") or {}).get("deterministic") is False,
        "seed_reused": bool(record.get("reused_from")),
        "one_class": record.get("learning_type") == "one_class",
        "train_test_overlap": shares_test_files(dataset),
        "fit_s": timings.get("fit_s"),
        "predict_images_per_s": timings.get("predict_images_per_s"),
        "peak_rss_mb": timings.get("peak_rss_mb"),
        **{column: cost.get(column) for column in COST_COLUMNS},
        "flops_error": cost.get("flops_error"),
        "folder": str(folder),
        "dataset_fingerprint": identity.get("dataset_fingerprint"),
        "evaluator_version": identity.get("evaluator_version"),
        "identity": without_seed(identity),
        # A public benchmark's category ("" otherwise) and what the method trained on (run.json's dataset record)
        "benchmark": str(dataset.get("benchmark") or ""),
        "category": str(dataset.get("category") or ""),
        "training": training_protocol(dataset),
        "shots": int(config.get("k_shot") or 0),
    }


def _metric_values(metrics: dict[str, Any]) -> dict[str, float]:
    """The run's metrics that are set (checked by ``read_finished_run``: numbers in [0, 1] or null)."""
    return {metric: float(metrics[metric]) for metric in (*PIXEL_METRICS, *IMAGE_METRICS)
            if metrics.get(metric) is not None}


def _unusable(folder: Path, message: str) -> tuple[Path, dict[str, Any]]:
    """A finished run that cannot be pooled, as a failed run's record: method and seed from its folder names
    (its record is the suspect one), the message without the folder's path (the listing names it)."""
    seed = folder.name[len("seed"):]
    message = message.replace(f"{folder}{os.sep}", "")
    return folder, {"method": folder.parent.name, "seed": int(seed) if seed.isdigit() else seed,
                    "message": f"{message}; not pooled, recompute it with `scrapbench run --overwrite`"}


def training_protocol(dataset_record: dict[str, Any]) -> str:
    """What a run trained on, from run.json's dataset record: ``""`` (its own train split),
    ``"supervised_split"`` or ``"cross_dataset:<train spec>"``."""
    training = dataset_record.get("training")
    if isinstance(training, dict) and training.get("protocol") == "cross_dataset":
        return f"cross_dataset:{training.get('train_on', '?')}"
    if isinstance(dataset_record.get("supervised_split"), dict):
        return "supervised_split"
    return ""


def select_group(tidy: pd.DataFrame, dataset: str | None = None, preset: str | None = None) -> pd.DataFrame:
    """The runs of one (dataset, preset), or of one public benchmark's categories and one preset.

    A report compares methods on the same data only; a benchmark's categories (``mvtec-bottle``,
    ``mvtec-cable`` ...) are reported together, category by category (``dataset`` may name the
    benchmark, ``mvtec`` / ``visa``, or one of its categories' datasets alone).
    """
    if tidy.empty:
        raise ReportError("no finished runs found (run.json + metrics.json); run `scrapbench run` first")
    if dataset is not None:
        tidy = tidy[(tidy["dataset"] == dataset) | (tidy["benchmark"] == dataset)]
    if preset is not None:
        tidy = tidy[tidy["preset"] == preset]
    groups = sorted(set(zip(tidy["dataset"], tidy["preset"], strict=True)))
    if not groups:
        raise ReportError(f"no runs for dataset={dataset!r} preset={preset!r}")
    choices = sorted(set(zip(tidy["benchmark"].where(tidy["benchmark"] != "", tidy["dataset"]), tidy["preset"],
                             strict=True)))
    if len(choices) > 1:
        listing = ", ".join(f"--dataset {d} --preset {p}" for d, p in choices)
        raise ReportError(f"runs of several datasets/presets found; choose one: {listing}")
    tidy = tidy.reset_index(drop=True)
    for _, category in tidy.groupby("dataset", sort=True):  # one group, or each category of a benchmark
        check_poolable(category)
    if len(groups) > 1:
        check_poolable_across_categories(tidy)
    return tidy


def is_benchmark(tidy: pd.DataFrame) -> bool:
    """Whether the selected runs are categories of a public benchmark (MVTec AD, VisA)."""
    return bool(len(tidy)) and bool((tidy["benchmark"] != "").all())


def check_poolable_across_categories(tidy: pd.DataFrame) -> None:
    """A method's mean over categories averages runs of one setting: across categories its runs may
    differ in the data (and the seed) only (ReportError otherwise, naming the categories)."""
    runs = tidy.drop_duplicates("folder")
    for method, part in runs.groupby("method", sort=True):
        keys = {}
        for category, key in zip(part["category"], part["identity"], strict=True):
            setting = {k: v for k, v in json.loads(key).items() if k != "dataset_fingerprint"}
            keys.setdefault(json.dumps(setting, sort_keys=True), []).append(category)
        if len(keys) < 2:
            continue
        (first, first_categories), *others = keys.items()
        described = [f"{', '.join(sorted(set(first_categories)))}"]
        for key, categories in others:
            changes = "; ".join(identity_differences(json.loads(first), json.loads(key)))
            described.append(f"{', '.join(sorted(set(categories)))} ({changes})")
        raise ReportError(f"{method}: categories {' vs '.join(described)} were run with different settings, so their "
                          f"mean over categories would mix them. Keep one setting: move the other run folders out of "
                          f"the results folder, or recompute them with `scrapbench run --overwrite`.")


def check_poolable(tidy: pd.DataFrame) -> None:
    """Refuse runs that one report must not put side by side or average (ReportError says which).

    All runs must share the dataset fingerprint and the evaluator version (a table compares methods
    on the same data, scored the same way); the seeds of one method must differ in nothing else.
    """
    runs = tidy.drop_duplicates("folder")
    for column, what in (("dataset_fingerprint", "on different data under the same dataset name"),
                         ("evaluator_version", "by different evaluator versions")):
        if runs[column].nunique(dropna=False) > 1:
            listing = "; ".join(f"{str(value)[:19]}: {_runs_listing(part)}"
                                for value, part in runs.groupby(column, sort=True, dropna=False))
            raise ReportError(f"these runs were computed {what}, so one report cannot compare them: {listing}. "
                              f"Move one set of run folders to another results folder.")
    for method, part in runs.groupby("method", sort=True):
        groups = list(part.groupby("identity", sort=False))
        if len(groups) < 2:
            continue
        first = json.loads(groups[0][0])
        described = [f"{_seeds(groups[0][1])}"]
        for key, group in groups[1:]:
            changes = "; ".join(identity_differences(first, json.loads(key)))
            described.append(f"{_seeds(group)} ({changes})")
        raise ReportError(f"{method}: {' vs '.join(described)} differ in more than the seed, so their numbers cannot "
                          f"be pooled into one row. Keep one setting: move the other run folders out of the results "
                          f"folder, or recompute them with `scrapbench run --overwrite` under the same setting.")


def _seeds(runs: pd.DataFrame) -> str:
    seeds = sorted(int(s) for s in runs["seed"])
    return ("seed " if len(seeds) == 1 else "seeds ") + ", ".join(str(s) for s in seeds)


def _runs_listing(runs: pd.DataFrame) -> str:
    return ", ".join(f"{method} {_seeds(part)}" for method, part in runs.groupby("method", sort=True))


def method_order(methods: Sequence[str]) -> list[str]:
    """Registry order (the paper's row order), unknown names after it, alphabetically."""
    from scrapbench.core.registry import list_methods

    known = [s.name for s in list_methods()]
    present = set(methods)
    return [m for m in known if m in present] + sorted(present - set(known))


@dataclass
class SummaryTable:
    """Mean/std (in %) per method and metric, plus what the formatted tables need."""

    #: index: method; columns: label, the MARK_COLUMNS, n_seeds, <m>_mean, <m>_std, and :func:`cost_means`'s
    numbers: pd.DataFrame
    metrics: tuple[str, ...]
    row_title: str
    #: Seeds pooled per (method, metric) where that is not ``n_seeds`` (index: method; columns: metrics)
    metric_seeds: pd.DataFrame | None = None

    def seeds(self, method: str, metric: str) -> int:
        """How many seeds the cell of ``method`` and ``metric`` pools."""
        if self.metric_seeds is not None and metric in self.metric_seeds:
            return int(self.metric_seeds.loc[method, metric])
        return int(self.numbers.loc[method, "n_seeds"])

    def best(self, metric: str) -> set[str]:
        """Methods with the highest mean (all of them on a tie, after rounding to the shown digits)."""
        means = self.numbers[f"{metric}_mean"].round(2)
        return set(means.index[means == means.max()]) if means.notna().any() else set()

    def formatted(self, bold: tuple[str, str] = ("**", "**"), pm: str = "±") -> pd.DataFrame:
        """Strings: ``85.40 ± 1.23`` with the best per column wrapped in ``bold``, labels with their marks."""
        out = pd.DataFrame(index=self.numbers.index)
        out[self.row_title] = self.labels()
        for metric in self.metrics:
            best = self.best(metric)
            cells = []
            for method, row in self.numbers.iterrows():
                seeds = self.seeds(str(method), metric)
                cell = mean_std_cell(row[f"{metric}_mean"], row[f"{metric}_std"], seeds, pm)
                if 0 < seeds < row["n_seeds"]:  # some seeds have no value of this metric
                    cell += f" ({seeds} of {int(row['n_seeds'])} seeds)"
                cells.append(f"{bold[0]}{cell}{bold[1]}" if method in best else cell)
            out[f"{metric_label(metric)} (%)"] = cells
        for title, cells in cost_cells(self.numbers).items():
            out[title] = cells
        out["seeds"] = self.numbers["n_seeds"].astype(int).astype(str)
        return out.reset_index(drop=True)

    def labels(self) -> list[str]:
        """Each row's label with its marks (``ROW_MARKS``)."""
        return [marked(row["label"], row) for _, row in self.numbers.iterrows()]

    def notes(self) -> list[str]:
        """Footnotes of the marks some row carries."""
        return mark_notes(self.numbers) if not self.numbers.empty else []


def summary_table(tidy: pd.DataFrame, methods: Sequence[str], label_column: str = "label",
                  row_title: str = "Method", metrics: Sequence[str] = PIXEL_METRICS) -> SummaryTable:
    """Mean ± sample std over seeds (in %) for ``methods`` (rows in that order)."""
    rows, seeds = [], []
    for method in methods:
        runs = tidy[tidy["method"] == method]
        if runs.empty:
            continue
        row: dict[str, Any] = {"method": method, "label": runs[label_column].iloc[0],
                               **{c: c in runs and bool(runs[c].any()) for c in MARK_COLUMNS},
                               "n_seeds": runs["seed"].nunique()}
        pooled: dict[str, Any] = {"method": method}
        for metric in metrics:
            row[f"{metric}_mean"], row[f"{metric}_std"], _ = seed_stats(runs, metric)
            pooled[metric] = runs.loc[runs["metric"] == metric, "seed"].nunique()
        row.update(cost_means(runs))
        rows.append(row)
        seeds.append(pooled)
    numbers = pd.DataFrame(rows).set_index("method") if rows else pd.DataFrame()
    metric_seeds = pd.DataFrame(seeds, columns=["method", *metrics]).set_index("method")
    return SummaryTable(numbers, tuple(metrics), row_title, metric_seeds)


def seed_stats(runs: pd.DataFrame, metric: str) -> tuple[float, float, int]:
    """Mean ± sample std over the seeds of one method's ``runs`` (one dataset), in %, and how many values."""
    values = runs.loc[runs["metric"] == metric, "value"] * 100.0
    std = values.std(ddof=1) if len(values) > 1 else math.nan
    return (values.mean() if len(values) else math.nan), std, len(values)


def cost_means(runs: pd.DataFrame) -> dict[str, float]:
    """One method's cost, each the mean over its runs that recorded it (NaN where none did): the
    :data:`COST_COLUMNS`, ``fit_s``, ``images_per_s`` and its sample std over runs, ``images_per_s_std``."""
    per_run = runs.drop_duplicates("folder" if "folder" in runs else "seed")
    out = {}
    for column, name in (*((c, c) for c in COST_COLUMNS), ("fit_s", "fit_s"),
                         ("predict_images_per_s", "images_per_s")):
        values = pd.to_numeric(per_run[column], errors="coerce").dropna() if column in per_run \
            else pd.Series(dtype=float)
        out[name] = float(values.mean()) if len(values) else math.nan
        if name == "images_per_s":
            out["images_per_s_std"] = float(values.std(ddof=1)) if len(values) > 1 else math.nan
    return out


def suite_methods(tidy: pd.DataFrame, suite: str) -> list[str]:
    """Methods of Table 2 (``table2``, ``zoo`` beside them, and methods in no suite) or Table 3 (``ablation``)."""
    runs = tidy.drop_duplicates("method")
    if suite == "ablation":
        chosen = [m for m, s in zip(runs["method"], runs["suites"], strict=True) if "ablation" in s.split(",")]
    else:
        chosen = [m for m, s in zip(runs["method"], runs["suites"], strict=True)
                  if {"table2", "zoo"} & set(s.split(",")) or not s]
    return method_order(chosen)
