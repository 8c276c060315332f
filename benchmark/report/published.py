"""The baselines' published numbers on MVTec AD and VisA (``published.json``), to set beside measured ones.

Values are the papers' dataset rows: means over the benchmark's categories, in percent. A value the
sources did not give is ``None``, never a guess; ``docs/published.md`` is rendered from the same
file (:func:`published_markdown`) and says where each number comes from.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cache
from importlib import resources

#: published key → scrapbench metrics.json key (0..1 there, percent here).
METRICS: dict[str, str] = {"pixel_auroc": "auroc", "aupro": "aupro", "image_auroc": "image_auroc",
                           "image_ap": "image_ap"}
DATASET_NAMES = {"mvtec": "MVTec AD", "visa": "VisA"}
#: The categories the published means are taken over (MVTec AD's 15, VisA's 12 objects).
BENCHMARK_CATEGORIES: dict[str, tuple[str, ...]] = {
    "mvtec": ("bottle", "cable", "capsule", "carpet", "grid", "hazelnut", "leather", "metal_nut", "pill", "screw",
              "tile", "toothbrush", "transistor", "wood", "zipper"),
    "visa": ("candle", "capsules", "cashew", "chewinggum", "fryum", "macaroni1", "macaroni2", "pcb1", "pcb2", "pcb3",
             "pcb4", "pipe_fryum"),
}


@dataclass(frozen=True)
class PublishedResult:
    """One published row: a method at a shot count on one benchmark."""

    method: str  # scrapbench method name
    shots: int  # normal reference images (WinCLIP+); 0 for zero-shot
    dataset: str  # "mvtec" | "visa"
    paper: str
    table: str | None  # the table of ``paper`` the values were read from; None: not verified
    values: dict[str, float | None]
    sources: dict[str, str] = field(default_factory=dict)
    train_on: str | None = None  # AnomalyCLIP: the benchmark whose test set it was trained on


@cache
def _document() -> dict:
    return json.loads(resources.files("scrapbench.report").joinpath("published.json").read_text(encoding="utf-8"))


def load_published() -> list[PublishedResult]:
    """Every published row, in file order."""
    return [PublishedResult(**row) for row in _document()["results"]]


def load_published_papers() -> dict[str, dict[str, str]]:
    """The papers the values come from: key → citation, arXiv id."""
    return dict(_document()["papers"])


def published_for(method: str, dataset: str, shots: int = 0) -> PublishedResult | None:
    """The published row of ``method`` with ``shots`` references on ``dataset`` ("mvtec" / "visa"), if any."""
    for row in load_published():
        if (row.method, row.dataset, row.shots) == (method, dataset, shots):
            return row
    return None


def _cell(value: float | None) -> str:
    return "" if value is None else f"{value:.1f}"


def published_markdown() -> str:
    """The published numbers as a Markdown table (what docs/published.md shows)."""
    papers = _document()["papers"]
    lines = ["| method | shots | dataset | pixel AUROC | AUPRO | image AUROC | image AP | paper, table |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in load_published():
        where = f"arXiv {papers[row.paper]['arxiv']}, {row.table or 'table not verified'}"
        lines.append(f"| {row.method} | {row.shots} | {DATASET_NAMES[row.dataset]} | "
                     + " | ".join(_cell(row.values.get(key)) for key in METRICS) + f" | {where} |")
    return "\n".join(lines) + "\n"
