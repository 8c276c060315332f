"""``scrapbench report`` on a public benchmark's runs: per-category tables and the mean over categories.

MVTec AD and VisA results are printed category by category with the mean over categories as the
benchmark's number. For the runs of one benchmark (``mvtec-*`` or ``visa-*`` datasets) and one preset,
this writes to ``out_dir``::

    report.md                              # one page linking everything below
    runs.csv, failed_runs.csv              # as for any report
    categories_mean.{csv,md,tex}           # methods × metrics, the mean over categories (Table 2 layout)
    efficiency.{csv,md}                    # each method's cost, the mean over its runs (all categories)
    per_category_<metric>.{csv,md,tex}     # categories × methods, mean ± std over seeds; last row: the mean
    published.{csv,md,tex}                 # with --published: the papers' numbers beside the measured means
    sweep_<field>.{csv,md}, figures/sweep_*.png  # sweep variants over their values (report/sweep_report.py),
                                           # with --published: the published values of the same setting

The mean over categories of a method and metric is the mean over categories of each category's
mean over seeds. Its ± is the sample standard deviation over seeds of the per-seed means over
categories (seed k's mean over every category), taken over the seeds that every category has: the
seed-to-seed spread of the benchmark's number, not the spread between categories.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from scrapbench.core.variants import split_name
from scrapbench.report.cells import MARK_COLUMNS, mark_notes, marked_labels, mean_std_cell, metric_label
from scrapbench.report.collect import SummaryTable, cost_means, method_order
from scrapbench.report.efficiency import efficiency_section
from scrapbench.report.published import (
    BENCHMARK_CATEGORIES,
    DATASET_NAMES,
    METRICS,
    PublishedResult,
    load_published,
    load_published_papers,
    published_for,
)
from scrapbench.report.render import markdown_page, to_latex, to_markdown, write_summary
from scrapbench.report.sweep_report import write_sweeps
from scrapbench.storage.atomic import atomic_write_text

#: Metrics of the benchmark tables, in the order of the papers' tables.
BENCHMARK_METRICS = ("auroc", "aupro", "ap", "f1max", "image_auroc")
MEAN_ROW = "mean"
MEAN_CAPTION = ("Mean over categories: the mean over categories of each category's mean over seeds; ± is the sample "
                "standard deviation over seeds of the per-seed means over categories.")
INCOMPLETE_MARK = "‡"
INCOMPLETE_NOTE = (f"{INCOMPLETE_MARK} mean over fewer categories than the others: the method has no finished run "
                   f"on some category (see the Runs and Failed runs sections).")


# -- numbers -----------------------------------------------------------------------------------------------------


def category_cells(tidy: pd.DataFrame, metric: str) -> pd.DataFrame:
    """One row per (method, category): ``mean`` and ``std`` over seeds (in %), ``seeds``."""
    part = tidy[tidy["metric"] == metric]
    grouped = part.groupby(["method", "category"])["value"]
    return pd.DataFrame({"mean": grouped.mean() * 100, "std": grouped.std(ddof=1) * 100,
                         "seeds": grouped.count()}).reset_index()


def category_means(tidy: pd.DataFrame, metric: str) -> pd.DataFrame:
    """One row per method: the mean over categories and its ± (module docstring), in %.

    Columns: ``mean``, ``std``, ``seeds`` (seeds every category has: those behind ``std``),
    ``categories`` (how many categories the method has runs on).
    """
    rows = []
    for method, runs in tidy[tidy["metric"] == metric].groupby("method", sort=False):
        by_seed = runs.pivot_table(index="seed", columns="category", values="value", aggfunc="first") * 100
        complete = by_seed.dropna()  # seeds that every category of this method has
        seed_means = complete.mean(axis=1)
        rows.append({"method": method, "mean": by_seed.mean(axis=0).mean(),
                     "std": seed_means.std(ddof=1) if len(seed_means) > 1 else math.nan,
                     "seeds": len(complete), "categories": by_seed.shape[1]})
    return pd.DataFrame(rows, columns=["method", "mean", "std", "seeds", "categories"]).set_index("method")


# -- formatting --------------------------------------------------------------------------------------------------


def _labels(tidy: pd.DataFrame, methods: Sequence[str]) -> dict[str, str]:
    labels = marked_labels(tidy)
    return {m: labels[m] for m in methods}


def per_category_frames(tidy: pd.DataFrame, methods: Sequence[str], categories: Sequence[str], metric: str,
                        bold: tuple[str, str] = ("**", "**")) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(numbers, formatted) of one metric: rows = categories + the mean row, columns = methods.

    Formatted cells are ``mean ± std``; the best method of each row (rounded as shown) is in ``bold``.
    """
    cells = category_cells(tidy, metric).set_index(["method", "category"])
    means = category_means(tidy, metric)
    labels = _labels(tidy, methods)
    numbers, shown = [], []
    incomplete: dict[str, bool] = {}
    for category in [*categories, MEAN_ROW]:
        row: dict[str, object] = {"category": category}
        values: dict[str, tuple[float, float, int]] = {}
        for method in methods:
            if category == MEAN_ROW:
                hit = means.loc[method] if method in means.index else None
                incomplete[method] = hit is not None and int(hit["categories"]) < len(categories)
            else:
                hit = cells.loc[(method, category)] if (method, category) in cells.index else None
            values[method] = (hit["mean"], hit["std"], int(hit["seeds"])) if hit is not None else \
                (math.nan, math.nan, 0)
            row.update({f"{method}_mean_pct": values[method][0], f"{method}_std_pct": values[method][1],
                        f"{method}_seeds": values[method][2]})
        numbers.append(row)
        # An incomplete mean (fewer categories) is not comparable with the others: never marked best.
        rounded = {m: round(v[0], 2) for m, v in values.items()
                   if not pd.isna(v[0]) and not (category == MEAN_ROW and incomplete.get(m))}
        best = {m for m, v in rounded.items() if v == max(rounded.values())} if len(rounded) > 1 else set()
        marks = {m: f" {INCOMPLETE_MARK}" if incomplete.get(m) and category == MEAN_ROW else "" for m in values}
        written = {m: mean_std_cell(*v) for m, v in values.items()}
        shown.append({"Category": "Mean" if category == MEAN_ROW else category,
                      **{labels[m]: (f"{bold[0]}{cell}{bold[1]}" if m in best else cell) + marks[m]
                         for m, cell in written.items()}})
    return pd.DataFrame(numbers), pd.DataFrame(shown)


def mean_table(tidy: pd.DataFrame, methods: Sequence[str]) -> SummaryTable:
    """The mean over categories of every metric, as a Table 2 layout (methods × metrics)."""
    metrics = [m for m in BENCHMARK_METRICS if m in set(tidy["metric"])]
    rows, pooled = [], []
    for method in methods:
        runs = tidy[tidy["method"] == method]
        row: dict[str, object] = {"method": method, "label": runs["label"].iloc[0],
                                  **{c: bool(runs[c].any()) for c in MARK_COLUMNS}}
        seeds: dict[str, int] = {}
        for metric in metrics:
            means = category_means(runs, metric)
            hit = means.loc[method] if method in means.index else None
            row[f"{metric}_mean"] = hit["mean"] if hit is not None else math.nan
            row[f"{metric}_std"] = hit["std"] if hit is not None else math.nan
            seeds[metric] = int(hit["seeds"]) if hit is not None else 0
        row["n_seeds"] = min((n for m, n in seeds.items() if not pd.isna(row[f"{m}_mean"])), default=0)
        pooled.append({"method": method, **seeds})
        covered = runs["category"].nunique()
        if covered < tidy["category"].nunique():
            row["label"] = f"{row['label']} {INCOMPLETE_MARK} ({covered}/{tidy['category'].nunique()} categories)"
        row.update(cost_means(runs))  # over every category's runs
        rows.append(row)
    metric_seeds = pd.DataFrame(pooled, columns=["method", *metrics]).set_index("method")
    return SummaryTable(pd.DataFrame(rows).set_index("method"), tuple(metrics), "Method", metric_seeds)


# -- published numbers -------------------------------------------------------------------------------------------


def published_frames(tidy: pd.DataFrame, methods: Sequence[str], benchmark: str,
                     notes: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(numbers, formatted): the measured mean over categories beside each published value, and the difference.

    Cells a paper does not give stay empty. The difference is left empty (and ``notes`` says why) when
    the runs did not follow the published protocol: another shot count has no published row, and a
    method trained on other data than the paper's (AnomalyCLIP: the other benchmark's test images;
    the others: the category's own train split) is not compared.
    """
    keys = list(METRICS)
    categories = sorted(set(tidy["category"]))
    papers = load_published_papers()
    numbers, shown = [], []
    labels = _labels(tidy, methods)
    for method in methods:
        runs = tidy[tidy["method"] == method]
        shots = int(runs["shots"].iloc[0])
        row, comparable = published_setting(method, benchmark, shots, notes, labels[method])
        if row is not None:
            trained = set(runs["training"])
            expected = {f"cross_dataset:{row.train_on}"} if row.train_on else {""}
            if {_training_kind(t) for t in trained} != expected:
                comparable = False
                notes.append(f"{labels[method]}: trained on {_describe_training(trained)}, the paper on "
                             f"{_describe_training(expected, published=True)}; no difference shown.")
        measured = {k: category_means(runs, METRICS[k]) for k in keys}
        number: dict[str, object] = {"method": method, "shots": shots, "paper": row.paper if row else None,
                                     "table": row.table if row else None, "comparable": comparable}
        cells: dict[str, str] = {"Method": labels[method]}
        for key in keys:
            mean = measured[key].loc[method, "mean"] if method in measured[key].index else math.nan
            value = row.values.get(key) if row is not None else None
            diff = mean - value if comparable and value is not None and not pd.isna(mean) else math.nan
            number.update({f"{key}_measured_pct": mean, f"{key}_published_pct": value, f"{key}_diff_pp": diff})
            title = metric_label(METRICS[key], qualified=True)
            cells[f"{title} measured"] = "–" if pd.isna(mean) else f"{mean:.2f}"
            cells[f"{title} paper"] = "" if value is None else f"{value:.1f}"
            cells[f"{title} Δ"] = "" if pd.isna(diff) else f"{diff:+.2f}"
        cells["paper, table"] = "" if row is None else \
            f"arXiv {papers[row.paper]['arxiv']}, {row.table or 'table not verified'}"
        numbers.append(number)
        shown.append(cells)
    full = BENCHMARK_CATEGORIES[benchmark]
    if set(full) - set(categories):
        notes.append(f"measured means are over {len(categories)} of the {len(full)} {DATASET_NAMES[benchmark]} "
                     f"categories ({', '.join(categories)}); the published ones over all {len(full)}: the "
                     f"differences are indicative only.")
    if "anomalyclip" in methods:
        notes.append("AnomalyCLIP's published AUPRO follows its own evaluation code (200 thresholds, FPR rescaled; "
                     "docs/metrics.md); the measured one the MVTec AD recipe.")
    return pd.DataFrame(numbers), pd.DataFrame(shown)


def published_setting(method: str, benchmark: str, shots: int, notes: list[str] | None = None,
                      label: str | None = None) -> tuple[PublishedResult | None, bool]:
    """The published row of ``method``'s setting at ``shots`` on ``benchmark`` and whether it is that setting.

    A sweep variant (``winclip_plus[k_shot=2]``) is its method's row at its shot count; a variant that fixes
    another field than ``k_shot`` is not the paper's setting (no difference). ``notes`` gets why not.
    """
    base, fields = split_name(method)
    label = label or method
    row = published_for(base, benchmark, shots)
    given = sorted(r.shots for r in load_published() if r.method == base and r.dataset == benchmark)
    if row is None and given and notes is not None:
        hint = f"--sweep {base}.k_shot={','.join(map(str, given))}" if len(given) > 1 else \
            f"--set {base}.k_shot={given[-1]}"
        notes.append(f"{label}: the paper gives {', '.join(map(str, given))} shot(s), these runs used {shots}; "
                     f"compare with `{hint}`.")
    other = sorted(set(fields) - {"k_shot"})
    if row is not None and other:
        if notes is not None:
            notes.append(f"{label}: fixes {', '.join(other)}, which the paper's setting does not; no difference "
                         f"shown.")
        return row, False
    return row, row is not None


def _kind(spec: str) -> str:
    """``visa:/data/visa#pcb1`` → ``visa``."""
    return spec.split(":", 1)[0]


def _training_kind(protocol: str) -> str:
    """``cross_dataset:visa:/data/visa`` → ``cross_dataset:visa`` (the benchmark, not where it lies)."""
    if protocol.startswith("cross_dataset:"):
        return "cross_dataset:" + _kind(protocol.split(":", 1)[1])
    return protocol


def _describe_training(protocols: set[str], published: bool = False) -> str:
    parts = []
    for protocol in sorted(protocols):
        if protocol == "":
            parts.append("each category's own train split")
        elif protocol == "supervised_split":
            parts.append("a seeded split of each category's test images (supervised split)")
        else:
            spec = protocol.split(":", 1)[1]
            name = DATASET_NAMES.get(_kind(spec), spec) if published else spec
            parts.append(f"the test images of {name}")
    return " and ".join(parts)


# -- the report --------------------------------------------------------------------------------------------------


def write_benchmark_tables(tidy: pd.DataFrame, out_dir: Path, published: bool,
                           figures: bool = True) -> tuple[list[str], list[str]]:
    """Every table file (and the sweeps' figures); returns (report sections, notes)."""
    benchmark = str(tidy["benchmark"].iloc[0])
    name = DATASET_NAMES.get(benchmark, benchmark)
    methods = method_order(list(tidy["method"].unique()))
    categories = sorted(set(tidy["category"]))
    sections, notes = [], []
    footnotes = mark_notes(tidy)
    counts = tidy.groupby("method")["category"].nunique()
    if (counts < len(categories)).any():
        footnotes.append(INCOMPLETE_NOTE)

    means = mean_table(tidy, methods)
    write_summary(means, out_dir, "categories_mean", f"{name}: mean over {len(categories)} categories. {MEAN_CAPTION}")
    sections.append(f"## {name}: mean over categories\n\n{MEAN_CAPTION} Best mean per column in bold.\n\n"
                    + to_markdown(means.formatted()) + "".join(f"\n{n}\n" for n in footnotes)
                    + "\nFiles: [categories_mean.csv](categories_mean.csv) · "
                      "[categories_mean.md](categories_mean.md) · [categories_mean.tex](categories_mean.tex)\n")
    cost = efficiency_section(tidy, methods, out_dir, category_means(tidy, "ap"), "ap", figures=False, notes=notes)
    sections += [cost] if cost else []  # means over every category's runs
    for metric in means.metrics:
        stem = f"per_category_{metric}"
        numbers, shown = per_category_frames(tidy, methods, categories, metric)
        atomic_write_text(out_dir / f"{stem}.csv", numbers.to_csv(index=False, float_format="%.6f"))
        markdown = to_markdown(shown)
        atomic_write_text(out_dir / f"{stem}.md", markdown + "".join(f"\n{n}\n" for n in footnotes))
        title = metric_label(metric, qualified=True)
        caption = (f"{name}, {title} (%) per category: mean ± std over seeds; best per row in bold. "
                   f"{MEAN_CAPTION}")
        latex = to_latex(per_category_frames(tidy, methods, categories, metric, ("\\textbf{", "}"))[1], caption,
                         f"tab:{stem}", footnotes)
        atomic_write_text(out_dir / f"{stem}.tex", latex)
        sections.append(f"## {title} (%) per category\n\nMean ± std over seeds; best per row in bold; last "
                        f"row: the mean over categories (see above). Files: [{stem}.csv]({stem}.csv) · "
                        f"[{stem}.md]({stem}.md) · [{stem}.tex]({stem}.tex)\n\n{markdown}")
    if published:
        published_notes: list[str] = []
        numbers, shown = published_frames(tidy, methods, benchmark, published_notes)
        atomic_write_text(out_dir / "published.csv", numbers.to_csv(index=False, float_format="%.6f"))
        markdown = to_markdown(shown)
        atomic_write_text(out_dir / "published.md", markdown + "".join(f"\n- {n}\n" for n in published_notes))
        atomic_write_text(out_dir / "published.tex", to_latex(
            shown, f"{name}: measured means over categories beside the published values (%), Δ = measured − "
                   f"published (pp); empty: not given by the paper, or not comparable.", "tab:published",
            published_notes))
        sections.append(f"## Published numbers\n\nThe papers' {name} values (docs/published.md) beside the measured "
                        f"mean over categories, in %; Δ = measured − published, in percentage points. An empty cell: "
                        f"the paper does not give it, or the runs did not follow its protocol (below). Files: "
                        f"[published.csv](published.csv) · [published.md](published.md) · "
                        f"[published.tex](published.tex)\n\n{markdown}"
                        + "".join(f"\n- {n}" for n in published_notes) + "\n")
    sections += write_sweeps(tidy, means.metrics, _category_mean_stats, out_dir, figures,
                             f"{name} mean over categories, ± over seeds",
                             _published_lookup(numbers) if published else None)
    notes += protocol_notes(tidy, methods)
    return sections, notes


def _category_mean_stats(runs: pd.DataFrame, metric: str) -> tuple[float, float, int]:
    """A sweep cell on a benchmark: the method's mean over categories and its ± (module docstring)."""
    means = category_means(runs, metric)
    if means.empty:
        return math.nan, math.nan, 0
    hit = means.iloc[0]
    return float(hit["mean"]), float(hit["std"]), int(hit["seeds"])


def _published_lookup(numbers: pd.DataFrame):
    """(method, metric) → the published value of the method's setting, where the runs follow its protocol."""
    by_metric = {metric: key for key, metric in METRICS.items()}
    rows = numbers.set_index("method")

    def lookup(method: str, metric: str) -> float | None:
        key = by_metric.get(metric)
        if key is None or method not in rows.index or not rows.loc[method, "comparable"]:
            return None
        value = rows.loc[method, f"{key}_published_pct"]
        return None if value is None or pd.isna(value) else float(value)

    return lookup


def protocol_notes(tidy: pd.DataFrame, methods: Sequence[str]) -> list[str]:
    """One line per method that did not train on its dataset's own train split (what it trained on)."""
    notes = []
    labels = tidy.drop_duplicates("method").set_index("method")["label"]  # plain labels in prose
    for method in methods:
        trained = set(tidy.loc[tidy["method"] == method, "training"])
        if trained == {""}:
            continue
        text = f"{labels[method].strip()} was trained on {_describe_training(trained)}"
        if "supervised_split" in trained:
            text += (": each seed trains on part of each defect type's test images and is evaluated on the rest, so "
                     "its test set is not the published one (nor the other methods'); its ± includes the choice of "
                     "split")
        notes.append(text + ".")
    return notes


def benchmark_page(tidy: pd.DataFrame, failed: pd.DataFrame, runs_dir: Path, out_dir: Path, published: bool,
                   failed_section: str | None, figures: bool = True) -> str:
    """Write the tables and return ``report.md`` of a benchmark's runs (module docstring)."""
    benchmark = str(tidy["benchmark"].iloc[0])
    name = DATASET_NAMES.get(benchmark, benchmark)
    categories = sorted(set(tidy["category"]))
    methods = method_order(list(tidy["method"].unique()))
    sections, notes = write_benchmark_tables(tidy, out_dir, published, figures)
    if failed_section:
        sections.append(failed_section)
    sections.append(_runs_section(tidy, methods, categories))
    runs = tidy.drop_duplicates("folder")
    first = runs.iloc[0]
    example = f"{benchmark}-{categories[0]}"
    lines = [
        f"# scrapbench report — {name}, preset `{first['preset']}`",
        "",
        f"{len(methods)} methods on {len(categories)} categories ({', '.join(categories)}), {len(runs)} runs: one run "
        f"per (category, method, seed), each category its own dataset, as the {name} protocol prints results.",
        "",
        f"Regenerate: `scrapbench report {runs_dir} --out {out_dir}" + (" --published" if published else "") + "` "
        f"(a pure function of the run folders). One category's full report (breakdowns, bootstrap, figures): "
        f"`scrapbench report {runs_dir} --dataset {example}`.",
        "",
    ]
    return markdown_page(lines, sections, notes)


def _runs_section(tidy: pd.DataFrame, methods: Sequence[str], categories: Sequence[str]) -> str:
    runs = tidy.drop_duplicates("folder")
    rows = []
    for method in methods:
        mine = runs[runs["method"] == method]
        row = {"method": method}
        for category in categories:
            seeds = sorted(int(s) for s in mine.loc[mine["category"] == category, "seed"])
            row[category] = ",".join(map(str, seeds)) or "–"
        row["fit (s), mean"] = f"{mine['fit_s'].mean():.1f}" if mine["fit_s"].notna().any() else "–"
        rows.append(row)
    return ("## Runs\n\nSeeds per method and category. All numbers per run: [runs.csv](runs.csv)\n\n"
            + to_markdown(pd.DataFrame(rows)))
