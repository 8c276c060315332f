"""Report figures (PNG): a qualitative grid like the paper's Fig. 4, ROC/PR curves, metric bar charts.

Functions take plain data (images, maps, numbers) and a path; reading run folders is the report's
job. Figures are built on ``matplotlib.figure.Figure`` directly (no pyplot state, no GUI backend).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter, NullLocator

DPI = 120
_FONT = {"title": 11, "label": 10, "tick": 9, "legend": 9}


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # No "Software"/date metadata: the same runs give byte-identical PNGs.
    fig.savefig(path, dpi=DPI, bbox_inches="tight", metadata={"Software": None})
    return path


def robust_range(maps: Sequence[np.ndarray], low: float = 1.0, high: float = 99.9) -> tuple[float, float]:
    """Colour limits of one method: percentiles over all its maps (one outlier pixel cannot wash it out)."""
    values = np.concatenate([np.asarray(m, np.float32).ravel() for m in maps])
    values = values[np.isfinite(values)]
    if values.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(values, [low, high])
    return float(lo), float(hi if hi > lo else lo + 1e-6)


def class_overlay(image: np.ndarray, mask: np.ndarray, alpha: float = 0.6) -> np.ndarray:
    """The image with each anomaly class painted in its own colour (tab10, class 1 = first colour)."""
    from matplotlib import colormaps

    palette = np.asarray(colormaps["tab10"].colors)[:, :3] * 255
    out = image.astype(np.float32).copy()
    for k in np.unique(mask[mask > 0]):
        where = mask == k
        out[where] = (1 - alpha) * out[where] + alpha * palette[(int(k) - 1) % 10]
    return out.round().astype(np.uint8)


def qualitative_grid(
    rows: Sequence[tuple[str, np.ndarray, np.ndarray]],
    method_maps: Mapping[str, Mapping[str, np.ndarray]],
    color_limits: Mapping[str, tuple[float, float]],
    class_names: Sequence[str],
    path: str | Path,
    title: str = "Qualitative comparison",
    cmap: str = "jet",
) -> Path:
    """Rows = test images (id, image, class-index mask); columns = image, ground truth, each method.

    Each method's map is drawn over the image with that method's own colour limits; the ground
    truth outline (white) is drawn on every map so misses and false alarms are visible.
    """
    from matplotlib import colormaps

    methods = list(method_maps)
    n_cols, n_rows = 2 + len(methods), len(rows)
    cell = 2.1
    fig = Figure(figsize=(cell * n_cols, cell * n_rows + 0.9), layout="constrained")
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    titles = ["Image", "Ground truth", *methods]
    for r, (sample_id, image, mask) in enumerate(rows):
        panels = [image, class_overlay(image, mask)]
        for c in range(n_cols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c < 2:
                ax.imshow(panels[c], interpolation="nearest")
            else:
                method = methods[c - 2]
                lo, hi = color_limits[method]
                ax.imshow(image, interpolation="nearest")
                ax.imshow(np.asarray(method_maps[method][sample_id], np.float32), cmap=cmap, vmin=lo, vmax=hi,
                          alpha=0.55, interpolation="bilinear")
                if mask.any():
                    ax.contour(mask > 0, levels=[0.5], colors="white", linewidths=0.9)
            if r == 0:
                ax.set_title(titles[c], fontsize=_FONT["label"])
            if c == 0:
                ax.set_ylabel(sample_id, fontsize=_FONT["tick"])
    used = sorted({int(k) for _, _, m in rows for k in np.unique(m) if k})
    palette = colormaps["tab10"].colors
    handles = [Patch(color=palette[(k - 1) % 10], label=class_names[k - 1] if k <= len(class_names) else str(k))
               for k in used]
    handles.append(Patch(facecolor="none", edgecolor="black", label="ground-truth outline (white) on maps"))
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), fontsize=_FONT["legend"],
               frameon=False)
    fig.suptitle(f"{title}; map colours {cmap}, scaled per method", fontsize=_FONT["title"])
    return _save(fig, path)


def curves_figure(curves: Mapping[str, Mapping[str, np.ndarray]], path: str | Path,
                  title: str = "Pixel-level curves") -> Path:
    """ROC, precision–recall and (when given) PRO panels, one line per method.

    ``curves[method]`` holds ``fpr``, ``tpr``, ``recall``, ``precision`` arrays, optionally ``pro_fpr``
    and ``pro`` (the PRO curve up to the FPR limit) and ``auroc`` / ``ap`` / ``aupro`` for the legends.
    """
    from matplotlib import colormaps

    with_pro = all("pro" in c for c in curves.values()) and bool(curves)
    fig = Figure(figsize=(16 if with_pro else 11, 4.8), layout="constrained")
    axes = fig.subplots(1, 3 if with_pro else 2)
    palette = colormaps["tab10"].colors

    def label(method: str, c: Mapping[str, np.ndarray], key: str) -> str:
        return method + (f" ({100 * c[key]:.1f})" if c.get(key) is not None else "")

    for i, (method, c) in enumerate(curves.items()):
        colour = palette[i % 10]
        axes[0].plot(c["fpr"], c["tpr"], color=colour, lw=1.6, label=label(method, c, "auroc"))
        axes[1].plot(c["recall"], c["precision"], color=colour, lw=1.6, label=label(method, c, "ap"))
        if with_pro:
            axes[2].plot(c["pro_fpr"], c["pro"], color=colour, lw=1.6, label=label(method, c, "aupro"))
    axes[0].plot([0, 1], [0, 1], ls="--", color="grey", lw=0.8)
    panels = [("False positive rate", "True positive rate", "ROC", "method (AUROC %)", "lower right"),
              ("Recall", "Precision", "Precision–recall", "method (AP %)", "best")]
    if with_pro:
        panels.append(("False positive rate", "Per-region overlap", "PRO (to the FPR limit)", "method (AUPRO %)",
                       "best"))
    for ax, (xlabel, ylabel, name, legend_title, where) in zip(axes, panels, strict=True):
        ax.set_ylim(0, 1.01)
        ax.set_xlabel(xlabel, fontsize=_FONT["label"])
        ax.set_ylabel(ylabel, fontsize=_FONT["label"])
        ax.set_title(name, fontsize=_FONT["title"])
        ax.tick_params(labelsize=_FONT["tick"])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=_FONT["legend"] - 1, title=legend_title, title_fontsize=_FONT["legend"], loc=where)
    axes[0].set_xlim(0, 1)
    axes[1].set_xlim(0, 1)
    # Low-AP methods hug the x axis: zoom the PR panel to the highest precision reached at recall > 0.
    reached = [np.max(np.asarray(c["precision"])[np.asarray(c["recall"]) > 0], initial=0.0) for c in curves.values()]
    axes[1].set_ylim(0, min(1.01, max(0.02, 1.1 * max(reached, default=1.0))))
    fig.suptitle(title, fontsize=_FONT["title"] + 1)
    return _save(fig, path)


def metric_bars(
    means: Mapping[str, Mapping[str, float]],
    stds: Mapping[str, Mapping[str, float]],
    metric_labels: Sequence[tuple[str, str]],
    path: str | Path,
    title: str,
    legend_title: str = "",
) -> Path:
    """Grouped bars: one group per metric, one bar per row (method or ablation variant), ± std."""
    from matplotlib import colormaps

    rows = list(means)
    n = len(rows)
    x = np.arange(len(metric_labels))
    width = 0.8 / max(n, 1)
    fig = Figure(figsize=(max(6.5, 1.2 * len(metric_labels) * max(n, 2) * 0.45 + 2), 4.4), layout="constrained")
    ax = fig.subplots()
    palette = colormaps["tab10"].colors
    top = 0.0
    for i, row in enumerate(rows):
        heights = np.array([means[row].get(m, np.nan) for m, _ in metric_labels], float)
        errors = np.array([stds[row].get(m, np.nan) for m, _ in metric_labels], float)
        errors = np.where(np.isfinite(errors), errors, 0.0)
        positions = x - 0.4 + width * (i + 0.5)
        ax.bar(positions, heights, width * 0.92, yerr=errors, capsize=3, color=palette[i % 10], label=row,
               error_kw={"elinewidth": 1.0})
        for px, h, e in zip(positions, heights, errors, strict=True):
            if np.isfinite(h) and n <= 6:  # the value above its error bar
                ax.text(px, h + e + 0.8, f"{h:.1f}", ha="center", va="bottom", fontsize=_FONT["tick"] - 1.5,
                        rotation=90)
        top = max(top, float(np.nanmax(heights + errors)) if np.isfinite(heights).any() else 0.0)
    ax.set_xticks(x, [label for _, label in metric_labels], fontsize=_FONT["label"])
    ax.set_ylabel("%  (mean ± std over seeds)", fontsize=_FONT["label"])
    ax.set_ylim(0, min(112.0, top * 1.18 + 4))
    ax.tick_params(labelsize=_FONT["tick"])
    ax.grid(axis="y", alpha=0.3)
    fig.legend(fontsize=_FONT["legend"], title=legend_title or None, title_fontsize=_FONT["legend"],
               loc="outside right upper", frameon=False)
    ax.set_title(title, fontsize=_FONT["title"])
    return _save(fig, path)


def sweep_lines(
    x_labels: Sequence[str],
    x_values: Sequence[float] | None,
    lines: Mapping[str, Mapping[str, tuple[Sequence[float], Sequence[float]]]],
    metric_labels: Sequence[tuple[str, str]],
    path: str | Path,
    title: str,
    x_title: str,
    published: Mapping[str, Sequence[float]] | None = None,
) -> Path:
    """One panel per metric: each line's mean over the swept values with a ± std band, and the published values
    (when given) as dashed crosses. ``lines[name][metric]`` = (means, stds), in % (NaN: no value there);
    ``x_values``: numeric positions (``None``: the labels evenly spaced, in order)."""
    from matplotlib import colormaps

    x = np.asarray(x_values if x_values is not None else range(len(x_labels)), float)
    n = len(metric_labels)
    columns = 2 if n == 4 else min(n, 3)
    rows = -(-n // columns)
    fig = Figure(figsize=(4.3 * columns + 0.6, 3.6 * rows + 0.4), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, columns, squeeze=False)).ravel()
    palette = colormaps["tab10"].colors
    for ax, (metric, label) in zip(axes, metric_labels, strict=False):
        values: list[float] = []
        for i, (name, by_metric) in enumerate(lines.items()):
            means, stds = (np.asarray(a, float) for a in by_metric.get(metric, ([np.nan] * len(x),) * 2))
            colour = palette[i % 10]
            ax.plot(x, means, marker="o", ms=5, lw=1.8, color=colour, label=name)
            band = np.where(np.isfinite(stds), stds, 0.0)
            ax.fill_between(x, means - band, means + band, color=colour, alpha=0.18, lw=0)
            values += list((means - band)[np.isfinite(means)]) + list((means + band)[np.isfinite(means)])
        if published and metric in published:
            paper = np.asarray(published[metric], float)
            if np.isfinite(paper).any():
                ax.plot(x, paper, ls="--", marker="x", ms=7, lw=1.2, color="black", label="published")
                values += list(paper[np.isfinite(paper)])
        ax.set_xticks(x, list(x_labels))
        ax.set_xlabel(x_title, fontsize=_FONT["label"])
        ax.set_ylabel(f"{label} (%)", fontsize=_FONT["label"])
        ax.set_title(label, fontsize=_FONT["title"])
        ax.tick_params(labelsize=_FONT["tick"])
        ax.grid(alpha=0.3)
        if values:
            low, high = min(values), max(values)
            pad = max(2.0, 0.12 * (high - low))
            ax.set_ylim(max(0.0, low - pad), min(101.0, high + pad))  # a line at 100 % stays visible
    for ax in axes[n:]:
        ax.set_visible(False)
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, fontsize=_FONT["legend"], loc="outside lower center", ncols=min(len(names), 4),
               frameon=False)
    fig.suptitle(title, fontsize=_FONT["title"] + 1)
    return _save(fig, path)


def accuracy_cost_figure(points: Sequence[Mapping[str, float | str]], path: str | Path, accuracy_label: str = "AP",
                         title: str = "Accuracy against cost") -> Path:
    """Two panels: accuracy against GFLOPs per image, and against images per second; one labelled point per
    method with error bars of its spread over seeds.

    ``points``: ``label``, ``accuracy`` and ``accuracy_std`` (%), ``gflops``, ``images_per_s`` and
    ``images_per_s_std`` (NaN where not recorded: such a method is left out of that panel, and named there).
    """
    from matplotlib import colormaps

    fig = Figure(figsize=(13, 5.2), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    palette = colormaps["tab10"].colors
    panels = (("gflops", None, "GFLOPs per test image (log scale)", "better: up and to the left"),
              ("images_per_s", "images_per_s_std", "Test images per second (log scale)", "better: up and to the right"))
    ys = [float(p["accuracy"]) for p in points if np.isfinite(float(p["accuracy"]))]
    y_span = (max(ys) - min(ys)) if len(ys) > 1 and max(ys) > min(ys) else 1.0
    for ax, (key, spread, xlabel, better) in zip(axes, panels, strict=True):
        missing, shown, labelled = [], [], []
        for i, point in enumerate(points):
            x, y = float(point[key]), float(point["accuracy"])
            if not (np.isfinite(x) and x > 0 and np.isfinite(y)):
                missing.append(str(point["label"]))
                continue
            shown.append(x)
            yerr = float(point["accuracy_std"])
            xerr = float(point[spread]) if spread else math.nan
            ax.errorbar([x], [y], yerr=[yerr] if np.isfinite(yerr) else None,
                        xerr=[xerr] if np.isfinite(xerr) else None, fmt="o", ms=7, capsize=3,
                        color=palette[i % 10], elinewidth=1.0)
            # A label whose point sits next to an earlier one goes below it, so the two stay readable.
            near = any(abs(math.log10(x / px)) < 0.15 and abs(y - py) < 0.06 * y_span for px, py in labelled)
            labelled.append((x, y))
            ax.annotate(str(point["label"]), (x, y), xytext=(6, -12 if near else 5), textcoords="offset points",
                        fontsize=_FONT["tick"], color=palette[i % 10])
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        if shown and max(shown) / min(shown) < 30:  # within about a decade: ticks at 1, 2 and 5 × 10^k too
            ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xlabel(xlabel, fontsize=_FONT["label"])
        ax.set_title(better, fontsize=_FONT["label"], style="italic")
        ax.tick_params(labelsize=_FONT["tick"])
        ax.grid(alpha=0.3, which="both")
        ax.margins(x=0.3, y=0.15)  # room for the labels right of the points
        if missing and not shown:
            ax.set_xticks([])
            ax.xaxis.set_minor_locator(NullLocator())
            ax.text(0.5, 0.5, "not recorded by these runs", transform=ax.transAxes, ha="center",
                    fontsize=_FONT["label"], color="grey")
        elif missing:
            ax.text(0.01, 0.01, "not recorded: " + ", ".join(missing), transform=ax.transAxes,
                    fontsize=_FONT["tick"] - 1, color="grey", va="bottom")
    axes[0].set_ylabel(f"{accuracy_label} (%), mean ± std over seeds", fontsize=_FONT["label"])
    fig.suptitle(title, fontsize=_FONT["title"] + 1)
    return _save(fig, path)
