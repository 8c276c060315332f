"""``scrapbench report``: tables, confidence intervals and figures — a pure function of the run folders.

Writes to ``out_dir``::

    report.md                  # one page linking everything below
    runs.csv                   # tidy: one row per (run, metric)
    table2.{csv,md,tex}        # methods × AUROC/AUPRO/AP/F1-max, mean ± std over seeds, and each method's cost
    table3.{csv,md,tex}        # the MSM ablation (Table 3 layout), when ablation runs exist
    sweep_<field>.{csv,md}     # sweep variants (method[field=value]): methods × values (report/sweep_report.py)
    efficiency.{csv,md}        # every method's cost: params, FLOPs/image, peak memory, fit time, images/s
    bootstrap.{csv,md}         # paired bootstrap CI of (best − other), see below
    per_class.{csv,md}, per_size.{csv,md}   # breakdowns from the evaluator, mean ± std over seeds
    figures/*.png              # bars, ROC/PR curves, qualitative grid, sweep_<method>_<field>.png, AP against
                               # cost (accuracy_vs_cost.png)

Paired bootstrap: the best method is the one with the highest mean of ``primary_metric`` (AP by
default). Each other method is compared on the lowest seed both have run (the seed-0 runs in a
default benchmark): test images are resampled with replacement, the same resample for both methods,
and the CI is taken over the resampled differences. One seed keeps the cost at ``n_boot`` metric
evaluations per pair; seed-to-seed spread is what the ± std of Table 2 shows.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from scrapbench.metrics.summary import PIXEL_METRICS
from scrapbench.report.cells import marked_labels, mean_std_cell, metric_label
from scrapbench.report.collect import (
    ReportError,
    SummaryTable,
    collect,
    is_benchmark,
    method_order,
    seed_stats,
    select_group,
    suite_methods,
    summary_table,
)
from scrapbench.report.efficiency import efficiency_section
from scrapbench.report.render import markdown_page, to_markdown, write_summary
from scrapbench.storage.atomic import atomic_write_text
from scrapbench.storage.run_folder import iter_failed_runs, read_json_record

__all__ = ["ReportError", "build_report"]


def build_report(
    runs_dir: str | Path,
    out_dir: str | Path,
    dataset: str | None = None,
    preset: str | None = None,
    primary_metric: str = "ap",
    n_boot: int = 1000,
    ci: float = 0.95,
    bootstrap_seed: int = 0,
    qualitative_rows: int = 4,
    figures: bool = True,
    published: bool = False,
    html: bool = True,
) -> Path:
    """Build the report of the runs of one (dataset, preset) below ``runs_dir``; returns ``report.md``.

    ``n_boot=0`` skips the bootstrap; ``figures=False`` skips the PNGs. The runs of a public benchmark
    (its categories' datasets, ``mvtec-*`` / ``visa-*``) get the per-category report of
    :mod:`scrapbench.report.category_report` instead, unless ``dataset`` names one category's dataset;
    ``published`` adds the papers' numbers there. ``html``: also ``report.html``, the folder as one page
    (:mod:`scrapbench.report.html`), with the per-image viewer's thumbnails when ``figures`` is set.
    """
    runs_dir, out_dir = Path(runs_dir), Path(out_dir)
    collected = collect(runs_dir)
    if collected.tidy.empty:
        failed = failed_runs(runs_dir, unusable=collected.unusable)
        if not failed.empty:
            raise ReportError(f"no finished runs found, only {len(failed)} failed one(s): "
                              + "; ".join(f"{r.method} seed {r.seed}: {r.message}" for r in failed.itertuples()))
    tidy = select_group(collected.tidy, dataset, preset)
    per_category = is_benchmark(tidy) and dataset not in set(tidy["dataset"])
    if published and not per_category:
        raise ReportError(f"--published sets the papers' MVTec AD / VisA numbers beside a benchmark's runs "
                          f"(--dataset mvtec:ROOT or visa:ROOT); these runs are on {tidy['dataset'].iloc[0]}")
    failed = failed_runs(runs_dir, tidy, whole_benchmark=per_category, unusable=collected.unusable)
    out_dir.mkdir(parents=True, exist_ok=True)
    # The identity key is a long JSON string, the same for a method's seeds; run.json holds it.
    atomic_write_text(out_dir / "runs.csv", tidy.drop(columns="identity").to_csv(index=False, float_format="%.6f"))
    atomic_write_text(out_dir / "failed_runs.csv", failed.to_csv(index=False))
    if per_category:
        from scrapbench.report.category_report import benchmark_page

        page = benchmark_page(tidy, failed, runs_dir, out_dir, published,
                              _failed_section(failed) if not failed.empty else None, figures)
        atomic_write_text(out_dir / "report.md", page)
        _write_html(out_dir, html, None, f"a benchmark's report has one viewer per category: `scrapbench report "
                                         f"{runs_dir} --dataset {tidy['dataset'].iloc[0]}`")
        return out_dir / "report.md"
    records = _records(tidy)
    sections: list[str] = []
    from scrapbench.report.category_report import protocol_notes  # runs trained on other data (--train-on) say so

    notes: list[str] = protocol_notes(tidy, method_order(list(tidy["method"].unique())))

    table2_methods = suite_methods(tidy, "table2")
    table2 = summary_table(tidy, table2_methods)
    ablation_methods = suite_methods(tidy, "ablation")
    table3 = summary_table(tidy, ablation_methods, label_column="ablation_label", row_title="Scale sizes") \
        if ablation_methods else None

    if table2_methods:
        write_summary(table2, out_dir, "table2", "Comparison with baseline methods (pixel level, mean ± std over "
                                                 "seeds).")
        sections.append(_table_section("Table 2 — comparison of methods", table2, "table2"))
    if table3 is not None:
        write_summary(table3, out_dir, "table3", "Effect of the MSM scale sizes (mean ± std over seeds).")
        sections.append(_table_section("Table 3 — multi-scale mechanism ablation", table3, "table3"))

    from scrapbench.report.sweep_report import write_sweeps

    sections += write_sweeps(tidy, PIXEL_METRICS, seed_stats, out_dir, figures, "mean ± std over seeds")
    all_methods = method_order(list(tidy["method"].unique()))
    accuracy = summary_table(tidy, all_methods, metrics=(primary_metric,)).numbers
    cost = efficiency_section(tidy, all_methods, out_dir, accuracy.rename(
        columns={f"{primary_metric}_mean": "mean", f"{primary_metric}_std": "std"}), primary_metric, figures, notes,
        figure_methods=table2_methods or None)  # the Table 3 variants share Ours' cost: their labels would pile up
    sections += [cost] if cost else []
    if n_boot > 0 and len(table2_methods) > 1:
        sections.append(_bootstrap_section(tidy, table2, records, out_dir, primary_metric, n_boot, ci,
                                           bootstrap_seed, notes))
    for key, title in (("per_class", "Per anomaly class"), ("per_size", "Per anomaly size")):
        section = _breakdown_section(tidy, table2_methods + [m for m in ablation_methods if m not in table2_methods],
                                     records, out_dir, key, title)
        if section:
            sections.append(section)
    if figures:
        from scrapbench.report.figure_selection import make_figures

        drawn = make_figures(tidy, table2, table3, records, out_dir, qualitative_rows, notes)
        if drawn:
            sections.append(drawn)
    viewer, viewer_note = None, "the report ran with --no-figures"
    if html and figures:
        viewer, viewer_note = _viewer(tidy, records, out_dir, notes)
    if not failed.empty:
        sections.append(_failed_section(failed))
    sections.append(_runs_section(tidy, records))
    atomic_write_text(out_dir / "report.md", _page(tidy, records, runs_dir, out_dir, sections, notes))
    _write_html(out_dir, html, viewer, viewer_note)
    return out_dir / "report.md"


def _viewer(tidy: pd.DataFrame, records: dict, out_dir: Path, notes: list[str]) -> tuple[dict | None, str | None]:
    """The per-image viewer's thumbnails and data (None and why when it cannot be built)."""
    from scrapbench.report.html import write_viewer

    try:
        viewer = write_viewer(method_order(list(tidy["method"].unique())), marked_labels(tidy), records, out_dir)
    except Exception as exc:  # the dataset may be gone or moved; the tables are still worth having
        notes.append(f"per-image viewer skipped: {type(exc).__name__}: {exc}")
        return None, f"{type(exc).__name__}: {exc}"
    return viewer, None if viewer is not None else "no run saved its maps (maps.npz)"


def _write_html(out_dir: Path, html: bool, viewer: dict | None, viewer_note: str | None) -> None:
    """report.html from the folder as written now; without ``html``, an older one is removed (it would show other
    numbers than the folder's files)."""
    if html:
        from scrapbench.report.html import write_html

        write_html(out_dir, viewer, viewer_note)
    else:
        (out_dir / "report.html").unlink(missing_ok=True)


def failed_runs(runs_dir: str | Path, tidy: pd.DataFrame | None = None, whole_benchmark: bool = False,
                unusable: Sequence[tuple[Path, dict[str, Any]]] = ()) -> pd.DataFrame:
    """Failed runs (an error.json, no run.json) below ``runs_dir``, and the ``unusable`` finished ones
    (:class:`scrapbench.report.collect.Collected`): method, seed, one-line error, folder (relative to ``runs_dir``).

    With ``tidy``, only those of the same (dataset, preset) folder as the selected finished runs;
    ``whole_benchmark``: of any category of the selected runs' benchmark (a category whose every run
    failed has no finished run), with their preset.
    """
    runs_dir = Path(runs_dir)
    groups = None if tidy is None else {Path(f).parents[1] for f in tidy["folder"].unique()}
    prefix = f"{tidy['benchmark'].iloc[0]}-" if whole_benchmark and tidy is not None else None
    presets = set() if tidy is None else {Path(f).parents[1].name for f in tidy["folder"].unique()}
    rows = []
    for folder, record in sorted([*iter_failed_runs(runs_dir), *unusable], key=lambda item: item[0]):
        if prefix is not None:
            if not (folder.parents[2].name.startswith(prefix) and folder.parents[1].name in presets):
                continue
        elif groups is not None and folder.parents[1] not in groups:
            continue
        message = record.get("message") or record.get("error") or "(no message)"
        rows.append({"method": str(record.get("method", folder.parent.name)), "seed": record.get("seed"),
                     "message": " ".join(str(message).split()), "folder": folder.relative_to(runs_dir).as_posix()})
    return pd.DataFrame(rows, columns=["method", "seed", "message", "folder"])


# -- helpers -----------------------------------------------------------------------------------


def _records(tidy: pd.DataFrame) -> dict[tuple[str, int], dict[str, Any]]:
    """run.json and metrics.json of every (method, seed) in the selection."""
    out = {}
    for (method, seed), folder in tidy.groupby(["method", "seed"])["folder"].first().items():
        folder = Path(folder)
        out[(method, int(seed))] = {"folder": folder, "run": read_json_record(folder / "run.json"),
                                    "metrics": read_json_record(folder / "metrics.json")}
    return out


def _table_section(title: str, table: SummaryTable, stem: str) -> str:
    text = f"## {title}\n\n" + to_markdown(table.formatted()) + "".join(f"\n{note}\n" for note in table.notes())
    text += (f"\nBest mean per column in bold; ± is the sample standard deviation over seeds. "
             f"Files: [{stem}.csv]({stem}.csv) · [{stem}.md]({stem}.md) · [{stem}.tex]({stem}.tex)\n")
    return text


def _load_state(folder: Path):
    from scrapbench.metrics import PixelMetrics

    path = folder / "metrics_state.npz"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; the bootstrap and the curves need the evaluator's state")
    return PixelMetrics.load(path)


def _bootstrap_section(tidy: pd.DataFrame, table2: SummaryTable, records: dict, out_dir: Path, primary: str,
                       n_boot: int, ci: float, seed: int, notes: list[str]) -> str:
    from scrapbench.metrics import MetricsError, paired_bootstrap

    means = table2.numbers[f"{primary}_mean"]
    best = str(means.idxmax())
    rows = []
    for other in table2.numbers.index:
        if other == best:
            continue
        shared = sorted({s for m, s in records if m == best} & {s for m, s in records if m == other})
        if not shared:
            notes.append(f"bootstrap: {other} shares no seed with {best}; skipped")
            continue
        run_seed = shared[0]
        try:
            a = _load_state(records[(best, run_seed)]["folder"])
            b = _load_state(records[(other, run_seed)]["folder"])
        except FileNotFoundError as exc:
            notes.append(f"bootstrap: {exc}")
            continue
        for metric in PIXEL_METRICS:
            try:
                result = paired_bootstrap(a, b, metric, n_boot=n_boot, seed=seed, ci=ci)
            except MetricsError as exc:  # e.g. other test images, or a metric undefined on this test set
                notes.append(f"bootstrap {best} vs {other}, {metric}: {exc}")
                continue
            rows.append({"best": best, "method": other, "seed": run_seed, "metric": metric,
                         "diff_pct": 100 * result["diff"], "low_pct": 100 * result["low"],
                         "high_pct": 100 * result["high"], "p_value": result.get("p_value")})
    frame = pd.DataFrame(rows, columns=["best", "method", "seed", "metric", "diff_pct", "low_pct", "high_pct",
                                        "p_value"])
    atomic_write_text(out_dir / "bootstrap.csv", frame.to_csv(index=False, float_format="%.4f"))
    label = dict(zip(table2.numbers.index, table2.labels(), strict=True))
    display = []
    for other in [m for m in table2.numbers.index if m != best]:
        part = frame[frame["method"] == other]
        if part.empty:
            continue
        row = {"Method": label[other], "seed": str(int(part["seed"].iloc[0]))}
        for metric in PIXEL_METRICS:
            hit = part[part["metric"] == metric]
            if hit.empty:
                row[f"Δ{metric_label(metric)} (pp)"] = "–"
                continue
            r = hit.iloc[0]
            excludes_zero = r["low_pct"] > 0 or r["high_pct"] < 0
            row[f"Δ{metric_label(metric)} (pp)"] = (f"{r['diff_pct']:+.2f} [{r['low_pct']:+.2f}, "
                                                     f"{r['high_pct']:+.2f}]" + (" *" if excludes_zero else ""))
        display.append(row)
    markdown = to_markdown(pd.DataFrame(display)) if display else "(no comparable runs)\n"
    atomic_write_text(out_dir / "bootstrap.md", markdown)
    return (f"## Paired bootstrap: {label[best]} minus each other method\n\n"
            f"Difference in percentage points with its {100 * ci:.0f}% CI ({n_boot} paired resamples of the test "
            f"images, lowest shared seed); * marks a CI that excludes 0. Best = highest mean "
            f"{metric_label(primary)}. Files: [bootstrap.csv](bootstrap.csv)\n\n" + markdown)


def breakdown_rows(metrics: dict[str, Any], key: str) -> list[tuple[str, str, float]]:
    """(group, metric, value) from ``metrics[key]``: ``{group: {metric: value}}`` or a list of dicts."""
    entries = metrics.get(key)
    if isinstance(entries, list):  # [{"name"/"class"/"bucket": g, metric: value, ...}, ...]
        as_dict = {}
        for entry in entries:
            name = next((entry[k] for k in ("name", "class", "bucket", "size", "group") if k in entry), None)
            if name is not None:
                as_dict[str(name)] = entry
        entries = as_dict
    if not isinstance(entries, dict):
        return []
    out = []
    for group, values in entries.items():
        if not isinstance(values, dict):
            continue
        for metric, value in values.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and value is not None:
                out.append((str(group), str(metric), float(value)))
    return out


def _breakdown_section(tidy: pd.DataFrame, methods: Sequence[str], records: dict, out_dir: Path, key: str,
                       title: str) -> str | None:
    rows = []
    for (method, seed), rec in records.items():
        if method not in methods:
            continue
        for group, metric, value in breakdown_rows(rec["metrics"], key):
            rows.append({"method": method, "seed": seed, "group": group, "metric": metric, "value": value})
    if not rows:
        return None
    frame = pd.DataFrame(rows)
    ratio_metrics = [m for m in _BREAKDOWN_RATIOS if m in set(frame["metric"])]
    stats = frame.groupby(["method", "group", "metric"])["value"].agg(["mean", "std", "count"]).reset_index()
    atomic_write_text(out_dir / f"{key}.csv", stats.to_csv(index=False, float_format="%.6f"))
    groups = list(dict.fromkeys(frame["group"]))  # the evaluator's order (classes 1..K, small → large)
    label = marked_labels(tidy)
    parts = []
    counts = frame[frame["metric"].isin(_BREAKDOWN_COUNTS)]
    if not counts.empty:  # ground-truth sizes: the same for every run on this test set
        first = counts[(counts["method"] == counts["method"].iloc[0]) & (counts["seed"] == counts["seed"].iloc[0])]
        parts.append("Test set: " + "; ".join(
            f"{g}: " + ", ".join(f"{int(v)} {m}" for m, v in zip(part["metric"], part["value"], strict=True))
            for g, part in first.groupby("group", sort=False)) + ".\n")
    for metric in ratio_metrics:
        table = []
        for method in method_order([m for m in methods if m in set(frame["method"])]):
            row = {"Method": label.get(method, method)}
            for group in groups:
                hit = stats[(stats["method"] == method) & (stats["group"] == group) & (stats["metric"] == metric)]
                row[group] = _pct_cell(hit)
            table.append(row)
        parts.append(f"**{metric_label(metric)} (%)**\n\n" + to_markdown(pd.DataFrame(table)))
    other = sorted(set(frame["metric"]) - set(ratio_metrics) - set(_BREAKDOWN_COUNTS))
    extra = f"\nAlso in [{key}.csv]({key}.csv): {', '.join(other)}.\n" if other else ""
    markdown = "\n".join(parts)
    atomic_write_text(out_dir / f"{key}.md", markdown)
    return f"## {title}\n\nMean ± std over seeds. Files: [{key}.csv]({key}.csv)\n\n{markdown}{extra}"


# Breakdown values shown as % tables (in this order) and counts shown once (from the evaluator's summary).
_BREAKDOWN_RATIOS = ("pixel_auroc", "aupro", "pixel_recall", "region_recall", "auroc", "ap", "recall")
_BREAKDOWN_COUNTS = ("pixels", "regions")


def _pct_cell(hit: pd.DataFrame) -> str:
    """The mean ± std (in %) of a breakdown's (method, group, metric) statistics row; ``–`` without one."""
    if hit.empty:
        return "–"
    return mean_std_cell(hit["mean"].iloc[0] * 100, hit["std"].iloc[0] * 100, hit["count"].iloc[0])


def _failed_section(failed: pd.DataFrame) -> str:
    table = to_markdown(failed.rename(columns={"message": "error"}))
    return (f"## Failed runs\n\n{len(failed)} run(s) failed and are not in the tables above; each folder's "
            f"error.json holds the traceback. `scrapbench run` with the same arguments retries them. "
            f"Files: [failed_runs.csv](failed_runs.csv)\n\n{table}")


def _runs_section(tidy: pd.DataFrame, records: dict) -> str:
    rows = []
    for method in method_order(list({m for m, _ in records})):
        for (m, seed), rec in sorted(records.items(), key=lambda kv: kv[0][1]):
            if m != method:
                continue
            timings = rec["run"].get("timings", {})
            weights = rec["run"].get("weights", {})
            rows.append({"method": method, "seed": seed, "fit (s)": _num(timings.get("fit_s")),
                         "predict (img/s)": _num(timings.get("predict_images_per_s")),
                         "peak RSS (MB)": _num(timings.get("peak_rss_mb"), 0),
                         "weights": "random init" if weights.get("random_init") else "pretrained",
                         "device": _device(rec["run"].get("device"))})
    return "## Runs\n\n" + to_markdown(pd.DataFrame(rows)) + "\nAll numbers per run: [runs.csv](runs.csv)\n"


def _device(device: Any) -> str:
    """``cpu (2 cores)`` / ``cuda:0 (NVIDIA H100)`` from run.json's device record (a dict or a string)."""
    if not isinstance(device, dict):
        return str(device or "?")
    name = str(device.get("device", "?"))
    detail = device.get("gpu") or (f"{device['cpu_count']} cores" if device.get("cpu_count") else None)
    return f"{name} ({detail})" if detail else name


def _num(value: Any, digits: int = 1) -> str:
    return "–" if value is None else f"{float(value):.{digits}f}"


def _page(tidy: pd.DataFrame, records: dict, runs_dir: Path, out_dir: Path, sections: list[str],
          notes: list[str]) -> str:
    first = next(iter(records.values()))["run"]
    data = first.get("dataset", {})
    gits = sorted({str(r["run"].get("git")) for r in records.values() if r["run"].get("git")})
    versions = first.get("versions", {})
    shown = ", ".join(f"{k} {v}" for k, v in versions.items() if k in ("python", "torch", "open_clip_torch",
                                                                        "ultralytics", "numpy"))
    lines = [
        f"# scrapbench report — {data.get('name', tidy['dataset'].iloc[0])}, preset `{tidy['preset'].iloc[0]}`",
        "",
        f"{tidy['method'].nunique()} methods, {len(records)} runs. Dataset: {data.get('num_train', '?')} train / "
        f"{data.get('num_test', '?')} test images, classes {', '.join(data.get('class_names', []))}"
        + (f" (data seed {data['seed']})" if data.get("seed") is not None else "") + ".",
        f"Software: {shown or 'see run.json'}" + (f"; code {', '.join(g[:10] for g in gits)}" if gits else "") + ".",
        "",
        f"Regenerate: `scrapbench report {runs_dir} --out {out_dir}` (a pure function of the run folders).",
        "",
    ]
    return markdown_page(lines, sections, notes)
