"""The report's sweep section: each swept field as a table (one row per method, one column per value, per metric,
mean ± std) and a line plot per method over the swept values, with ± std bands.

Sweep variants (``winclip_plus[k_shot=2]``, :mod:`scrapbench.core.variants`) are reported here, not in Table 2 /
Table 3 (which keep the registered methods' rows as they are). For the field ``f`` this writes::

    sweep_<f>.csv                      # one row per (method, value, metric): mean, std (in %), seeds, published
    sweep_<f>.md                       # one table per metric: rows = methods, columns = the values of f
    figures/sweep_<method>_<f>.png     # one panel per metric, a line per row over the values of f

A variant that fixes several fields is a point of each field's sweep; its other fields name its row
(``Ours [epochs=2]``). How a cell's mean ± std is taken is the caller's (over seeds on one dataset; the mean
over categories on a public benchmark), as is the published value beside it (``report --published``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from scrapbench.core.variants import format_value, split_name
from scrapbench.report.cells import DISPLAY_NAMES, mark_notes, marked, mean_std_cell, method_flags, metric_label
from scrapbench.report.drawing import sweep_lines
from scrapbench.report.render import to_markdown
from scrapbench.storage.atomic import atomic_write_text
from scrapbench.storage.run_folder import path_component

#: (runs of one method, metric) → (mean %, std %, seeds behind the std)
CellStats = Callable[[pd.DataFrame, str], tuple[float, float, int]]
#: (variant name, metric) → the published value (%) of the same setting, or None
Published = Callable[[str, str], float | None]


@dataclass
class SweepRow:
    """One line of a sweep: a registered method with every other fixed field held, over the values of one field."""

    base: str
    others: tuple[tuple[str, str], ...]  # the variant's other fixed fields, written as in its name
    points: dict[str, Any] = field(default_factory=dict)  # variant name → its value of the swept field

    @property
    def label(self) -> str:
        name = DISPLAY_NAMES.get(self.base, self.base)
        return name + (" [" + ", ".join(f"{k}={v}" for k, v in self.others) + "]" if self.others else "")

    @property
    def slug(self) -> str:
        """The row in a file name: ``winclip_plus``, ``ours_epochs=2``."""
        return path_component("_".join([self.base, *(f"{k}={v}" for k, v in self.others)]), "method")


def sweeps(methods: Sequence[str]) -> dict[str, list[SweepRow]]:
    """Swept field → its rows (in ``methods`` order), from the variant names among ``methods``."""
    out: dict[str, dict[tuple, SweepRow]] = {}
    for method in methods:
        base, fields = split_name(method)
        for swept, value in fields.items():
            others = tuple((k, format_value(v)) for k, v in fields.items() if k != swept)
            row = out.setdefault(swept, {}).setdefault((base, others), SweepRow(base, others))
            row.points[method] = value
    return {swept: list(rows.values()) for swept, rows in out.items()}


def swept_values(rows: Sequence[SweepRow]) -> tuple[list[Any], bool]:
    """The distinct values of a field over its rows, and whether they are numbers (then sorted, else in order)."""
    values: list[Any] = []
    for row in rows:
        values += [v for v in row.points.values() if not any(_same(v, seen) for seen in values)]
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    return (sorted(values) if numeric else values), numeric


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b


def write_sweeps(tidy: pd.DataFrame, metrics: Sequence[str], stats: CellStats, out_dir: Path, figures: bool,
                 caption: str, published: Published | None = None) -> list[str]:
    """Every sweep's table and figure; returns the report sections (none without variants in ``tidy``)."""
    from scrapbench.report.collect import method_order

    sections = []
    flags = method_flags(tidy)
    for swept, rows in sweeps(method_order(list(tidy["method"].unique()))).items():
        values, numeric = swept_values(rows)
        row_flags = pd.DataFrame([flags.loc[list(row.points)].any() for row in rows])
        labels = [marked(row.label, row_flags.iloc[i]) for i, row in enumerate(rows)]
        footnotes = "".join(f"\n{note}\n" for note in mark_notes(row_flags))
        columns = [format_value(v) for v in values]
        records, tables = [], []
        lines: dict[str, dict[str, dict[str, tuple[list[float], list[float]]]]] = {}
        paper: dict[str, dict[str, list[float]]] = {}
        for metric in metrics:
            shown = []
            for row, label in zip(rows, labels, strict=True):
                cells = {f"Method \\ {swept}": label}
                published_cells: dict[str, str] = {}
                means, stds, paper_values = [], [], []
                for value, column in zip(values, columns, strict=True):
                    method = next((m for m, v in row.points.items() if _same(v, value)), None)
                    runs = tidy[tidy["method"] == method] if method is not None else tidy.iloc[0:0]
                    mean, std, seeds = stats(runs, metric) if not runs.empty else (float("nan"),) * 2 + (0,)
                    value_published = published(method, metric) if published and method is not None else None
                    records.append({"method": method, "row": label, "field": swept, "value": column,
                                    "metric": metric, "mean_pct": mean, "std_pct": std, "seeds": seeds,
                                    "published_pct": value_published})
                    cells[column] = mean_std_cell(mean, std, seeds)
                    published_cells[column] = "" if value_published is None else f"{value_published:.1f}"
                    means.append(mean)
                    stds.append(std)
                    paper_values.append(float("nan") if value_published is None else value_published)
                shown.append(cells)
                if any(published_cells.values()):
                    shown.append({f"Method \\ {swept}": f"{row.label}, published", **published_cells})
                lines.setdefault(row.slug, {})[metric] = (means, stds)
                paper.setdefault(row.slug, {})[metric] = paper_values
            tables.append(f"**{metric_label(metric, qualified=True)} (%)**\n\n" + to_markdown(pd.DataFrame(shown)))
        stem = f"sweep_{path_component(swept, 'field')}"
        atomic_write_text(out_dir / f"{stem}.csv", pd.DataFrame(records).to_csv(index=False, float_format="%.6f"))
        markdown = "\n".join(tables) + footnotes
        atomic_write_text(out_dir / f"{stem}.md", markdown)
        pictures = []
        if figures:
            for row, label in zip(rows, labels, strict=True):
                path = out_dir / "figures" / f"sweep_{row.slug}_{path_component(swept, 'field')}.png"
                has_paper = {m: v for m, v in paper[row.slug].items() if any(x == x for x in v)}
                sweep_lines(columns, [float(v) for v in values] if numeric else None, {label: lines[row.slug]},
                            [(m, metric_label(m, qualified=True)) for m in metrics], path,
                            f"{label}: {swept} ({caption})", swept, has_paper or None)
                pictures.append(f"![{row.label} over {swept}](figures/{path.name})\n")
        sections.append(f"## Sweep — {swept}\n\nOne column per value of `{swept}`, {caption}. Files: "
                        f"[{stem}.csv]({stem}.csv) · [{stem}.md]({stem}.md)\n\n{markdown}\n" + "\n".join(pictures))
    return sections

