"""The report's figures from run folders: which runs, which images, which curves.

Drawing them is :mod:`scrapbench.report.drawing`.

- Bars: Table 2 methods and the Table 3 ablation, mean ± std over seeds.
- ROC/PR curves: the evaluator's curves of each method's lowest-seed run.
- Qualitative grid (paper Fig. 4): rows are anomalous test images picked deterministically, from the
  smallest to the largest anomaly (evenly spaced in the ranking by anomalous pixels); columns are
  the Table 2 methods plus the ablation's "w/o MSM" row, each from its lowest seed with saved maps.
  Test images come from re-loading the dataset named in run.json (data seed included).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from scrapbench.metrics.summary import PIXEL_METRICS
from scrapbench.report.cells import marked_labels, metric_label
from scrapbench.report.collect import SummaryTable, method_order
from scrapbench.report.drawing import curves_figure, metric_bars, qualitative_grid, robust_range
from scrapbench.storage.npz import read_npz

# Colour limits come from at most this many maps per method (the paper preset has ~2,400 test maps).
_MAX_MAPS_FOR_LIMITS = 64


def make_figures(tidy: pd.DataFrame, table2: SummaryTable, table3: SummaryTable | None, records: dict,
                 out_dir: Path, qualitative_rows: int, notes: list[str]) -> str:
    """Draw every figure that the runs allow; returns the report's Markdown section (empty when none was drawn)."""
    fig_dir = out_dir / "figures"
    lines = ["## Figures", ""]
    metric_labels = [(m, metric_label(m)) for m in PIXEL_METRICS]
    if not table2.numbers.empty:
        means, stds = _bar_data(table2)
        metric_bars(means, stds, metric_labels, fig_dir / "table2_bars.png", "Methods (Table 2)")
        lines.append("![Table 2 as bars](figures/table2_bars.png)\n")
    if table3 is not None and not table3.numbers.empty:
        means, stds = _bar_data(table3)
        metric_bars(means, stds, metric_labels, fig_dir / "ablation.png", "Multi-scale mechanism ablation (Table 3)",
                    legend_title="MSM scales")
        lines.append("![MSM ablation](figures/ablation.png)\n")

    shown = _figure_methods(tidy, table2, table3)
    labels = marked_labels(tidy)
    try:
        curves = _curves(shown, labels, records)
    except (ImportError, AttributeError, FileNotFoundError, KeyError, ValueError) as exc:
        notes.append(f"ROC/PR curves skipped: {type(exc).__name__}: {exc}")
        curves = {}
    if curves:
        curves_figure(curves, fig_dir / "curves.png")
        lines.append("![ROC and PR curves](figures/curves.png)\n")

    try:
        drawn = _qualitative(shown, labels, records, fig_dir / "qualitative.png", qualitative_rows)
    except Exception as exc:  # the dataset may be gone or moved; the tables are still worth having
        notes.append(f"qualitative figure skipped: {type(exc).__name__}: {exc}")
        drawn = False
    if drawn:
        lines.append("![Qualitative comparison](figures/qualitative.png)\n")
    return "\n".join(lines) if len(lines) > 2 else ""  # nothing to draw (e.g. sweep variants alone): no section


def _bar_data(table: SummaryTable) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, float]]]:
    means, stds = {}, {}
    for name, (_, row) in zip(table.labels(), table.numbers.iterrows(), strict=True):
        means[name] = {m: row[f"{m}_mean"] for m in table.metrics}
        stds[name] = {m: row[f"{m}_std"] for m in table.metrics}
    return means, stds


def _figure_methods(tidy: pd.DataFrame, table2: SummaryTable, table3: SummaryTable | None) -> list[str]:
    """Table 2 methods plus the ablation rows without MSM (the paper's Fig. 4 columns)."""
    methods = list(table2.numbers.index)
    if table3 is not None:
        methods += [m for m in table3.numbers.index if m not in methods and table3.numbers.loc[m, "label"] == "w/o MSM"]
    return method_order(methods) if methods else []


def lowest_seed(records: dict, method: str, needs: str | None = None) -> tuple[int, dict] | None:
    """(seed, record) of ``method``'s lowest seed (whose folder holds the file ``needs``); None without one."""
    for (m, seed), rec in sorted(records.items(), key=lambda kv: kv[0][1]):
        if m == method and (needs is None or (rec["folder"] / needs).is_file()):
            return seed, rec
    return None


def curve_arrays(raw: Any) -> dict[str, np.ndarray]:
    """The evaluator's ``curves()`` (``{"roc": {fpr, tpr}, "pr": {recall, precision}, "pro": {fpr, pro}}``)
    as flat arrays: ``fpr``, ``tpr``, ``recall``, ``precision`` and, when present, ``pro_fpr``, ``pro``.
    """
    if not isinstance(raw, Mapping) or not isinstance(raw.get("roc"), Mapping) or not isinstance(raw.get("pr"),
                                                                                                  Mapping):
        raise KeyError(f"curves() should give 'roc' and 'pr' mappings; got {type(raw).__name__}")
    roc, pr = raw["roc"], raw["pr"]
    out = {"fpr": roc["fpr"], "tpr": roc["tpr"], "recall": pr["recall"], "precision": pr["precision"]}
    if isinstance(raw.get("pro"), Mapping):
        out.update(pro_fpr=raw["pro"]["fpr"], pro=raw["pro"]["pro"])
    return {key: np.asarray(value, dtype=np.float64) for key, value in out.items()}


def _curves(methods: Sequence[str], labels: Mapping[str, str], records: dict) -> dict[str, dict[str, Any]]:
    from scrapbench.metrics import PixelMetrics

    out = {}
    for method in methods:
        found = lowest_seed(records, method, "metrics_state.npz")
        if found is None:
            continue
        seed, rec = found
        arrays: dict[str, Any] = curve_arrays(PixelMetrics.load(rec["folder"] / "metrics_state.npz").curves())
        arrays.update({k: rec["metrics"].get(k) for k in ("auroc", "ap", "aupro")})
        out[f"{labels.get(method, method)}, seed {seed}"] = arrays
    return out


def choose_examples(per_image: pd.DataFrame, available: set[str], n: int) -> list[str]:
    """Anomalous ids from the smallest to the largest anomaly, evenly spaced in that ranking."""
    frame = per_image[(per_image["is_anomalous"] == 1) & per_image["id"].astype(str).isin(available)]
    frame = frame.assign(id=frame["id"].astype(str)).sort_values(["anomalous_pixels", "id"])
    ids = frame["id"].tolist()
    if len(ids) <= n:
        return ids
    picks = np.unique(np.round(np.linspace(0, len(ids) - 1, n)).astype(int))
    return [ids[i] for i in picks]


def run_dataset(run: Mapping[str, Any]):
    """The dataset named in a run.json record (data seed included), checked against the run's fingerprint
    (ValueError when it changed: its images would not be the ones the run's maps were made of)."""
    from scrapbench.datasets import load_dataset
    from scrapbench.datasets.fingerprint import dataset_fingerprint

    data = run.get("dataset", {})
    dataset = load_dataset(data.get("spec", "synthetic"), preset=run.get("preset", "cpu"),
                           seed=int(data.get("seed") or 0))
    if dataset_fingerprint(dataset) != run.get("identity", {}).get("dataset_fingerprint"):
        raise ValueError(f"the dataset {data.get('spec')!r} has changed since the runs (its fingerprint differs)")
    return dataset


def _qualitative(methods: Sequence[str], labels: Mapping[str, str], records: dict, path: Path, n_rows: int) -> bool:
    chosen = {}
    for method in methods:
        found = lowest_seed(records, method, "maps.npz")
        if found is not None:
            chosen[method] = found
    if not chosen or n_rows <= 0:
        return False
    with ExitStack() as stack:
        archives = {m: stack.enter_context(read_npz(rec["folder"] / "maps.npz")) for m, (_, rec) in chosen.items()}
        available = set.intersection(*(set(a.files) for a in archives.values()))
        first_rec = next(iter(chosen.values()))[1]
        ids = choose_examples(pd.read_csv(first_rec["folder"] / "per_image.csv", dtype={"id": str},
                                       keep_default_na=False), available, n_rows)
        if not ids:
            return False
        dataset = run_dataset(first_rec["run"])
        position = {sample_id: i for i, sample_id in enumerate(dataset.test.ids)}
        samples = [dataset.test[position[i]] for i in ids]
        rows = [(s.id, s.image, s.mask) for s in samples]
        maps, limits = {}, {}
        for method, archive in archives.items():
            name = labels.get(method, method)
            maps[name] = {i: archive[i].astype(np.float32) for i in ids}
            sample_keys = sorted(archive.files)[:_MAX_MAPS_FOR_LIMITS]
            limits[name] = robust_range([archive[k] for k in sample_keys])
    title = f"Qualitative comparison: {len(ids)} anomalous test images, smallest to largest anomaly"
    qualitative_grid(rows, maps, limits, dataset.class_names, path, title=title)
    return True
