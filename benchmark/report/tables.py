"""Tables from finished runs: a tidy frame, then the paper's Table 2 / Table 3 layouts.

``collect_runs`` reads every run folder into one row per (run, metric). ``summary_table`` averages
over seeds (mean ± sample std, in %) and marks the best mean per metric; the same table is written
as CSV (numbers), Markdown and LaTeX (formatted, best in bold, rows flagged by ``ROW_MARKS``:
† random-initialised weights, § non-deterministic kernels, ° one run reused for every seed). LaTeX
is written by hand (booktabs) because pandas' ``to_latex`` needs jinja2, not one of our dependencies.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from scrapbench.run.provenance import identity_differences, without_seed
from scrapbench.storage.run_folder import RunFolderError, iter_run_records, read_json_record

PIXEL_METRICS = ("auroc", "aupro", "ap", "f1max")
IMAGE_METRICS = ("image_auroc", "image_ap")
METRIC_LABELS = {"auroc": "AUROC", "aupro": "AUPRO", "ap": "AP", "f1max": "F1-max",
                 "image_auroc": "image AUROC", "image_ap": "image AP", "pixel_auroc": "pixel AUROC",
                 "pixel_recall": "pixel recall at the F1-max threshold",
                 "region_recall": "region recall at the F1-max threshold"}


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
DISPLAY_NAMES = {"winclip": "WinCLIP", "winclip_plus": "WinCLIP+", "anomalyclip": "AnomalyCLIP",
                 "yolov8_sam": "YOLOv8-seg + SAM", "yolo11_sam": "YOLO11-seg + SAM", "mask_rcnn": "Mask R-CNN",
                 "ours": "Ours", "ours_no_msm": "Ours w/o MSM", "ours_msm_5_11": "Ours, MSM 5×5 & 11×11",
                 "ours_msm_7_13": "Ours, MSM 7×7 & 13×13"}


class ReportError(ValueError):
    """No usable runs, or an ambiguous selection; the message says what to pass."""


def method_label(method: str, config: dict[str, Any]) -> str:
    """How the paper names a method row (WinCLIP+ gets its shot count)."""
    label = DISPLAY_NAMES.get(method, method)
    if method == "winclip_plus" and config.get("k_shot"):
        label += f" ({config['k_shot']} shot{'s' if config['k_shot'] != 1 else ''})"
    return label


def ablation_label(method: str, config: dict[str, Any]) -> str:
    """Table 3 names rows by the MSM setting: ``3×3 & 9×9`` or ``w/o MSM``."""
    if config.get("use_msm") is False:
        return "w/o MSM"
    scales = config.get("msm_scales")
    if isinstance(scales, (list, tuple)) and scales:
        return " & ".join(f"{s}×{s}" for s in scales)
    return method_label(method, config)


def collect_runs(runs_dir: str | Path) -> pd.DataFrame:
    """One row per (finished run, metric) with the run's identity, weights flag and timings."""
    rows = []
    try:
        records = list(iter_run_records(runs_dir))
    except RunFolderError as exc:
        raise ReportError(str(exc)) from exc
    for folder, record in records:
        try:
            metrics = read_json_record(folder / "metrics.json")
        except RunFolderError as exc:
            raise ReportError(f"{exc}; delete {folder} (or recompute it with `scrapbench run --overwrite`)") from exc
        identity = record.get("identity")
        if not isinstance(identity, dict):
            raise ReportError(f"{folder / 'run.json'}: no run identity (written by an older scrapbench), so it cannot "
                              f"be pooled safely; recompute it with `scrapbench run --overwrite`")
        dataset = record.get("dataset", {})
        timings = record.get("timings", {})
        config = record.get("config", {})
        base = {
            "dataset": dataset.get("name", "?"),
            "preset": record.get("preset", "?"),
            "method": record["method"],
            "seed": int(record["seed"]),
            "label": method_label(record["method"], config),
            "ablation_label": ablation_label(record["method"], config),
            "suites": ",".join(record.get("suites", [])),
            "learning_type": record.get("learning_type"),
            "random_init": bool(record.get("weights", {}).get("random_init", False)),
            "nondeterministic": (record.get("determinism") or {}).get("deterministic") is False,
            "seed_reused": bool(record.get("reused_from")),
            "fit_s": timings.get("fit_s"),
            "predict_images_per_s": timings.get("predict_images_per_s"),
            "peak_rss_mb": timings.get("peak_rss_mb"),
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
        for metric in (*PIXEL_METRICS, *IMAGE_METRICS):
            value = metrics.get(metric)
            if isinstance(value, (int, float)) and value is not None:
                rows.append({**base, "metric": metric, "value": float(value)})
    columns = ["dataset", "preset", "method", "seed", "label", "ablation_label", "suites", "learning_type",
               *MARK_COLUMNS, "fit_s", "predict_images_per_s", "peak_rss_mb", "folder", "dataset_fingerprint",
               "evaluator_version", "identity", "benchmark", "category", "training", "shots", "metric", "value"]
    return pd.DataFrame(rows, columns=columns)


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

    numbers: pd.DataFrame  # index: method; columns: label, the MARK_COLUMNS, n_seeds, <m>_mean, <m>_std, images_per_s
    metrics: tuple[str, ...]
    row_title: str

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
                mean, std = row[f"{metric}_mean"], row[f"{metric}_std"]
                if pd.isna(mean):
                    cells.append("–")
                    continue
                cell = f"{mean:.2f}" + (f" {pm} {std:.2f}" if row["n_seeds"] > 1 and not pd.isna(std) else "")
                cells.append(f"{bold[0]}{cell}{bold[1]}" if method in best else cell)
            out[f"{METRIC_LABELS[metric]} (%)"] = cells
        out["images/s"] = [f"{v:.1f}" if not pd.isna(v) else "–" for v in self.numbers["images_per_s"]]
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
    rows = []
    for method in methods:
        runs = tidy[tidy["method"] == method]
        if runs.empty:
            continue
        row: dict[str, Any] = {"method": method, "label": runs[label_column].iloc[0],
                               **{c: c in runs and bool(runs[c].any()) for c in MARK_COLUMNS},
                               "n_seeds": runs["seed"].nunique()}
        for metric in metrics:
            values = runs.loc[runs["metric"] == metric, "value"] * 100.0
            row[f"{metric}_mean"] = values.mean() if len(values) else math.nan
            row[f"{metric}_std"] = values.std(ddof=1) if len(values) > 1 else math.nan
        per_run = runs.drop_duplicates("seed")["predict_images_per_s"].dropna()
        row["images_per_s"] = per_run.mean() if len(per_run) else math.nan
        rows.append(row)
    numbers = pd.DataFrame(rows).set_index("method") if rows else pd.DataFrame()
    return SummaryTable(numbers, tuple(metrics), row_title)


def suite_methods(tidy: pd.DataFrame, suite: str) -> list[str]:
    """Methods of Table 2 (``table2``: also methods in no suite) or Table 3 (``ablation``)."""
    runs = tidy.drop_duplicates("method")
    if suite == "ablation":
        chosen = [m for m, s in zip(runs["method"], runs["suites"], strict=True) if "ablation" in s.split(",")]
    else:
        chosen = [m for m, s in zip(runs["method"], runs["suites"], strict=True)
                  if "table2" in s.split(",") or not s]
    return method_order(chosen)


# -- renderers ---------------------------------------------------------------------------------


def to_markdown(frame: pd.DataFrame) -> str:
    """A GitHub Markdown table (numbers right-aligned, the first column left)."""
    header = "| " + " | ".join(str(c) for c in frame.columns) + " |"
    align = "|" + "|".join("---:" if i > 0 and _numeric_column(frame.iloc[:, i]) else ":---"
                           for i in range(len(frame.columns))) + "|"
    body = ["| " + " | ".join(str(v).replace("|", "\\|") for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, align, *body]) + "\n"


def _numeric_column(values: pd.Series) -> bool:
    """Cells that start with a number (``85.40 ± 1.2``, ``**85.40**``, ``–``) are aligned right."""
    text = [str(v).strip("*+ ") for v in values]
    return all(t in ("–", "") or t[:1].isdigit() or t[:1] == "-" for t in text)


_LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                  "×": r"$\times$", "±": r"$\pm$", "†": r"$^\dagger$", "–": "--", "Δ": r"$\Delta$",
                  "§": r"\S{}", "°": r"$^\circ$", "‡": r"$^\ddagger$"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_ESCAPES.get(ch, ch) for ch in str(text))


def to_latex(frame: pd.DataFrame, caption: str, label: str, notes: Sequence[str] = ()) -> str:
    """A booktabs table; cells already holding ``\\textbf{...}`` keep their command."""
    def cell(value: Any) -> str:
        text = str(value)
        if text.startswith("\\textbf{") and text.endswith("}"):
            return "\\textbf{" + latex_escape(text[len("\\textbf{"):-1]) + "}"
        return latex_escape(text)

    spec = "l" + "r" * (len(frame.columns) - 1)
    lines = ["\\begin{table}[t]", "\\centering", f"\\caption{{{latex_escape(caption)}}}", f"\\label{{{label}}}",
             f"\\begin{{tabular}}{{{spec}}}", "\\toprule", " & ".join(cell(c) for c in frame.columns) + " \\\\",
             "\\midrule"]
    lines += [" & ".join(cell(v) for v in row) + " \\\\" for row in frame.itertuples(index=False)]
    lines += ["\\bottomrule", "\\end{tabular}"]
    lines += [f"\\par\\smallskip{{\\footnotesize {latex_escape(note)}}}" for note in notes]
    lines.append("\\end{table}")
    return "\n".join(lines) + "\n"


def write_summary(table: SummaryTable, out_dir: Path, stem: str, caption: str) -> dict[str, Path]:
    """``<stem>.csv`` (numbers), ``<stem>.md`` and ``<stem>.tex`` (formatted); returns the paths."""
    from scrapbench.storage.run_folder import atomic_write_text

    numbers = table.numbers.reset_index()
    numbers = numbers.rename(columns={c: c.replace("_mean", "_mean_pct").replace("_std", "_std_pct")
                                      for c in numbers.columns})
    notes = table.notes()
    paths = {"csv": out_dir / f"{stem}.csv", "md": out_dir / f"{stem}.md", "tex": out_dir / f"{stem}.tex"}
    atomic_write_text(paths["csv"], numbers.to_csv(index=False, float_format="%.6f"))
    markdown = to_markdown(table.formatted()) + "".join(f"\n{note}\n" for note in notes)
    atomic_write_text(paths["md"], markdown)
    latex = to_latex(table.formatted(bold=("\\textbf{", "}")), caption, f"tab:{stem}", notes)
    atomic_write_text(paths["tex"], latex)
    return paths


def markdown_page(header: Sequence[str], sections: Sequence[str], notes: Sequence[str] = ()) -> str:
    """A report page: header lines, then each section, then the notes as a list under "## Notes"."""
    body = "\n".join(header) + "\n" + "\n".join(section.rstrip() + "\n" for section in sections)
    if notes:
        body += "\n## Notes\n\n" + "".join(f"- {note}\n" for note in notes)
    return body
