"""What each method costs, from its runs' records: ``efficiency.{csv,md}`` and ``figures/accuracy_vs_cost.png``.

Every number is the mean over the method's runs that recorded it (run.json's ``cost`` and ``timings``,
:func:`scrapbench.report.collect.cost_means`): parameters (total and trained), FLOPs per test image
(``scrapbench.run.cost``), peak memory of fit and of predict (resident; allocated on the GPU for CUDA
runs), fit time and test images per second. Runs from before scrapbench recorded cost show ``–``.
The figure puts each method's accuracy (mean ± std over seeds) against its FLOPs and its speed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from scrapbench.report.cells import count_cell, gflops_cell, marked_labels, metric_label, number_cell
from scrapbench.report.collect import cost_means
from scrapbench.report.drawing import accuracy_cost_figure
from scrapbench.report.render import to_markdown
from scrapbench.storage.atomic import atomic_write_text

FIGURE = "figures/accuracy_vs_cost.png"
NOTE = ("FLOPs: torch's count (2 × multiply-adds of matrix products and convolutions) of predicting one test "
        "image at the preset's input size, attention fast paths off; numpy/scipy post-processing is not counted. "
        "Params: the networks' parameters; Trained: those the fit optimises. Peak memory: resident MB of the "
        "process during fit and during predict{gpu}. – : not recorded (runs from before scrapbench recorded cost, "
        "or a method without torch networks).")


def efficiency_numbers(tidy: pd.DataFrame, methods: Sequence[str],
                       accuracy: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per method (index: method): ``label`` (with its marks), ``seeds``, the cost means and, with
    ``accuracy`` (index: method; columns ``mean``, ``std`` in %), ``accuracy_mean_pct`` / ``accuracy_std_pct``."""
    labels = marked_labels(tidy)
    rows = []
    for method in methods:
        runs = tidy[tidy["method"] == method]
        if runs.empty:
            continue
        row = {"method": method, "label": labels.get(method, method), "seeds": int(runs["seed"].nunique()),
               **cost_means(runs)}
        if accuracy is not None:
            hit = accuracy.loc[method] if method in accuracy.index else None
            row["accuracy_mean_pct"] = float(hit["mean"]) if hit is not None else math.nan
            row["accuracy_std_pct"] = float(hit["std"]) if hit is not None else math.nan
        rows.append(row)
    return pd.DataFrame(rows).set_index("method") if rows else pd.DataFrame()


def efficiency_table(numbers: pd.DataFrame) -> pd.DataFrame:
    """The formatted table; the GPU memory columns only when some run was on a GPU."""
    out = pd.DataFrame({"Method": numbers["label"]})
    out["Params"] = [count_cell(v) for v in numbers["params_total"]]
    out["Trained"] = [count_cell(v) for v in numbers["params_trained"]]
    out["GFLOPs/img"] = [gflops_cell(v) for v in numbers["flops_per_image"]]
    out["Fit peak RSS (MB)"] = [number_cell(v, 0) for v in numbers["fit_peak_rss_mb"]]
    out["Predict peak RSS (MB)"] = [number_cell(v, 0) for v in numbers["predict_peak_rss_mb"]]
    if numbers[["fit_peak_cuda_mb", "predict_peak_cuda_mb"]].notna().any().any():
        out["Fit peak GPU (MB)"] = [number_cell(v, 0) for v in numbers["fit_peak_cuda_mb"]]
        out["Predict peak GPU (MB)"] = [number_cell(v, 0) for v in numbers["predict_peak_cuda_mb"]]
    out["Fit (s)"] = [number_cell(v) for v in numbers["fit_s"]]
    out["images/s"] = [number_cell(v) for v in numbers["images_per_s"]]
    out["seeds"] = numbers["seeds"].astype(str)
    return out.reset_index(drop=True)


def efficiency_section(tidy: pd.DataFrame, methods: Sequence[str], out_dir: Path, accuracy: pd.DataFrame | None,
                       accuracy_metric: str = "ap", figures: bool = True, notes: list[str] | None = None,
                       figure_methods: Sequence[str] | None = None) -> str:
    """Write ``efficiency.csv`` / ``.md`` (and, with ``figures`` and ``accuracy``, the accuracy-vs-cost figure of
    ``figure_methods``, default all); returns the report's section."""
    numbers = efficiency_numbers(tidy, methods, accuracy)
    if numbers.empty:
        return ""
    name = metric_label(accuracy_metric)
    csv = numbers.rename(columns={"accuracy_mean_pct": f"{accuracy_metric}_mean_pct",
                                  "accuracy_std_pct": f"{accuracy_metric}_std_pct"})
    atomic_write_text(out_dir / "efficiency.csv", csv.reset_index().to_csv(index=False, float_format="%.6g"))
    gpu = numbers[["fit_peak_cuda_mb", "predict_peak_cuda_mb"]].notna().any().any()
    note = NOTE.format(gpu="; GPU: the most torch's allocator held on the device" if gpu else "")
    markdown = to_markdown(efficiency_table(numbers)) + f"\n{note}\n"
    atomic_write_text(out_dir / "efficiency.md", markdown)
    if notes is not None:
        failed = tidy.dropna(subset=["flops_error"]).drop_duplicates("method")
        notes += [f"FLOPs of {label} not counted: {error}" for label, error in
                  zip(failed["label"], failed["flops_error"], strict=True)]
    section = (f"## Cost\n\nMean over each method's runs. Files: [efficiency.csv](efficiency.csv) · "
               f"[efficiency.md](efficiency.md)\n\n{markdown}")
    if figures and accuracy is not None:
        points = [{"label": row["label"], "accuracy": row["accuracy_mean_pct"], "accuracy_std": row["accuracy_std_pct"],
                   "gflops": row["flops_per_image"] / 1e9, "images_per_s": row["images_per_s"],
                   "images_per_s_std": row["images_per_s_std"]} for method, row in numbers.iterrows()
                  if figure_methods is None or method in figure_methods]
        accuracy_cost_figure(points, out_dir / FIGURE, name, f"{name} against cost: one point per method, "
                                                             f"bars = std over seeds")
        section += f"\n![{name} against FLOPs per image and images/s]({FIGURE})\n"
    return section
