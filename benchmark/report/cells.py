"""How a report writes its cells and names: one formatter for "mean ± std", one metric-label map, the
methods' display names and the marks their rows carry.

Every table of ``scrapbench report`` (the dataset report, the per-category report, breakdowns,
figures) takes its cells and labels from here, so that the same number is written the same way
everywhere.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

#: A metric's name in a table. The pixel-level ``auroc``, ``ap`` and ``f1max`` carry no "pixel" here: a
#: table of pixel metrics only (Table 2, the breakdowns) says so in its caption. Where pixel- and
#: image-level numbers meet, :func:`metric_label` with ``qualified=True`` names the level.
METRIC_LABELS = {"auroc": "AUROC", "aupro": "AUPRO", "ap": "AP", "f1max": "F1-max",
                 "image_auroc": "image AUROC", "image_ap": "image AP", "pixel_auroc": "pixel AUROC",
                 "pixel_recall": "pixel recall at the F1-max threshold",
                 "region_recall": "region recall at the F1-max threshold"}
_PIXEL_LEVEL = ("auroc", "ap", "f1max")  # METRIC_LABELS entries that do not name their level


def metric_label(metric: str, qualified: bool = False) -> str:
    """``metric``'s label (the key itself when it has none); ``qualified``: ``pixel AUROC`` for ``auroc``."""
    label = METRIC_LABELS.get(metric, metric)
    return f"pixel {label}" if qualified and metric in _PIXEL_LEVEL else label


def mean_std_cell(mean: float, std: float, seeds: int, pm: str = "±") -> str:
    """``85.40 ± 1.23`` (the ± only over more than one seed and a defined std), ``–`` without a mean."""
    if pd.isna(mean):
        return "–"
    return f"{mean:.2f}" + (f" {pm} {std:.2f}" if seeds > 1 and not pd.isna(std) else "")


#: How the paper names each method's row (registry name → label).
DISPLAY_NAMES = {"winclip": "WinCLIP", "winclip_plus": "WinCLIP+", "anomalyclip": "AnomalyCLIP",
                 "yolov8_sam": "YOLOv8-seg + SAM", "yolo11_sam": "YOLO11-seg + SAM", "mask_rcnn": "Mask R-CNN",
                 "ours": "Ours", "ours_no_msm": "Ours w/o MSM", "ours_msm_5_11": "Ours, MSM 5×5 & 11×11",
                 "ours_msm_7_13": "Ours, MSM 7×7 & 13×13"}


def method_label(method: str, config: dict[str, Any], display_name: str | None = None) -> str:
    """How the paper names a method row (WinCLIP+ gets its shot count); another method's row: its class's
    ``display_name`` (run.json) or its registered name. A sweep variant is its method's label and the fields it
    fixes (``WinCLIP+ (2 shots)``, ``Ours [epochs=2]``)."""
    from scrapbench.core.variants import format_value, split_name

    base, fields = split_name(method)
    label = DISPLAY_NAMES.get(base) or display_name or base
    if base == "winclip_plus" and config.get("k_shot"):
        label += f" ({config['k_shot']} shot{'s' if config['k_shot'] != 1 else ''})"
        fields = {key: value for key, value in fields.items() if key != "k_shot"}
    if fields:
        label += " [" + ", ".join(f"{key}={format_value(value)}" for key, value in fields.items()) + "]"
    return label


def ablation_label(method: str, config: dict[str, Any], display_name: str | None = None) -> str:
    """Table 3 names rows by the MSM setting: ``3×3 & 9×9`` or ``w/o MSM``."""
    if config.get("use_msm") is False:
        return "w/o MSM"
    scales = config.get("msm_scales")
    if isinstance(scales, (list, tuple)) and scales:
        return " & ".join(f"{s}×{s}" for s in scales)
    return method_label(method, config, display_name)


@dataclass(frozen=True)
class RowMark:
    """A flag a method's row can carry: its boolean column in the tidy frame, its symbol, its footnote."""

    column: str
    symbol: str
    note: str


ROW_MARKS = (
    RowMark("random_init", "†", "† run with random-initialised pretrained weights (none were available offline): "
                                "the numbers show that the pipeline runs, not what the method can do."),
    RowMark("nondeterministic", "§", "§ ran kernels that have no deterministic implementation (run.json: "
                                     "determinism.nondeterministic_ops): the same seed need not give the same "
                                     "numbers."),
    RowMark("seed_reused", "°", "° zero-shot with fixed weights: its maps do not depend on the seed, so one run was "
                                "computed and its record reused for the other seeds (± 0 over one distinct run)."),
    RowMark("one_class", "¶", "¶ one-class: trained on the normal training images only (empty masks), as anomalib "
                              "trains it; the other rows learn as the paper's protocol says (docs/protocols.md)."),
    RowMark("train_test_overlap", "‡", "‡ trained (--train-on) on data that overlaps the evaluated test images "
                                       "(run.json: dataset.training): its numbers score images it was trained on."),
)
MARK_COLUMNS = tuple(mark.column for mark in ROW_MARKS)


def marked(label: str, flags: Mapping[str, bool]) -> str:
    """``label`` followed by the symbol of every mark whose flag is set (e.g. ``Ours †``)."""
    symbols = "".join(mark.symbol for mark in ROW_MARKS if flags.get(mark.column))
    return f"{label} {symbols}" if symbols else label


def method_flags(tidy: pd.DataFrame) -> pd.DataFrame:
    """Per method: a mark's flag is set when any of its runs has it (index: method)."""
    return tidy.groupby("method")[list(MARK_COLUMNS)].any()


def marked_labels(tidy: pd.DataFrame) -> dict[str, str]:
    """Every method's label with its marks."""
    flags = method_flags(tidy)
    labels = tidy.drop_duplicates("method").set_index("method")["label"]
    return {method: marked(label, flags.loc[method]) for method, label in labels.items()}


def mark_notes(flags: pd.DataFrame) -> list[str]:
    """The footnotes of the marks set in any row of ``flags`` (a frame with the mark columns)."""
    return [mark.note for mark in ROW_MARKS if mark.column in flags and bool(flags[mark.column].any())]


# -- cost --------------------------------------------------------------------------------------------------------


def count_cell(value: float) -> str:
    """A parameter count, short: ``428M``, ``44.0M``, ``3.49M``, ``1.79k``, ``0``; ``–`` when not recorded."""
    if pd.isna(value):
        return "–"
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= scale:
            short = value / scale
            return f"{short:.{0 if short >= 100 else 1 if short >= 10 else 2}f}{suffix}"
    return f"{value:.0f}"


def number_cell(value: float, digits: int = 1) -> str:
    """``12.3`` (``digits`` after the point); values under 10 keep three significant digits (``0.0425``);
    ``–`` when not recorded."""
    if pd.isna(value):
        return "–"
    return f"{value:.{digits}f}" if abs(value) >= 10 or value == 0 else f"{value:#.3g}"


def gflops_cell(flops: float) -> str:
    """FLOPs as GFLOPs (``–`` when not recorded)."""
    return number_cell(flops / 1e9)


def params_cell(total: float, trained: float) -> str:
    """``149M (0.59M)``: the parameters and, in brackets, those the fit trains."""
    return "–" if pd.isna(total) else f"{count_cell(total)} ({count_cell(trained)})"


def cost_cells(numbers: pd.DataFrame) -> dict[str, list[str]]:
    """The cost columns of a Table 2 layout (``numbers``: :func:`scrapbench.report.collect.cost_means` per row)."""
    def column(name: str) -> pd.Series:
        return numbers[name] if name in numbers else pd.Series(float("nan"), index=numbers.index)

    return {"Params (trained)": [params_cell(t, r) for t, r in zip(column("params_total"), column("params_trained"),
                                                                   strict=True)],
            "GFLOPs/img": [gflops_cell(v) for v in column("flops_per_image")],
            "images/s": [number_cell(v) for v in column("images_per_s")]}
