"""Turn a ``--dataset`` argument into datasets.

    synthetic                     the seeded synthetic set sized by the preset (default)
    PATH                          a folder in scrapbench's own format (scrapbench.datasets.folder)
    mvtec:ROOT                    MVTec AD read in place: one dataset per category
    mvtec:ROOT#bottle,cable       only these categories
    visa:ROOT[#candle,pcb1]       VisA read in place through ROOT/split_csv/1cls.csv

A benchmark spec names several datasets; :func:`expand_dataset_spec` turns it into one spec per
category (``mvtec:ROOT#bottle``), each of which :func:`load_dataset` opens, so a runner can open
(and validate) each category only when its turn comes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from scrapbench.datasets.types import Dataset, DatasetError

BENCHMARKS = ("mvtec", "visa")
SPEC_FORMS = "'synthetic', a dataset folder, 'mvtec:ROOT[#cat1,cat2]' or 'visa:ROOT[#cat1,cat2]'"


@dataclass(frozen=True)
class BenchmarkSpec:
    """A parsed ``mvtec:`` / ``visa:`` spec; ``categories`` empty means all of them."""

    kind: str
    root: Path
    categories: tuple[str, ...] = ()

    def category_spec(self, category: str) -> str:
        """The spec of one category (what a single run stores to reopen its data)."""
        return f"{self.kind}:{self.root}#{category}"


def parse_benchmark_spec(spec: str) -> BenchmarkSpec | None:
    """``mvtec:ROOT#a,b`` → BenchmarkSpec; ``None`` for specs that are not of that form.

    The categories follow the last ``#``; a root that itself contains ``#`` works when it exists
    as written.
    """
    kind, sep, rest = spec.partition(":")
    if not sep or kind not in BENCHMARKS:
        return None
    if not rest:
        raise DatasetError(f"{spec}: missing ROOT; write {kind}:ROOT or {kind}:ROOT#cat1,cat2")
    root, hash_, names = rest.rpartition("#")
    if not hash_ or Path(rest).is_dir():
        return BenchmarkSpec(kind, Path(rest))
    categories = tuple(name.strip() for name in names.split(","))
    if not root or not all(categories):
        raise DatasetError(f"{spec}: write {kind}:ROOT#cat1,cat2 (a ROOT, then category names separated by commas)")
    if len(set(categories)) != len(categories):
        raise DatasetError(f"{spec}: a category is named twice")
    return BenchmarkSpec(kind, Path(root), categories)


def benchmark_categories(spec: BenchmarkSpec) -> list[str]:
    """The categories that ``spec`` picks, checked against those present under its root."""
    if spec.kind == "mvtec":
        from scrapbench.datasets.public.mvtec import mvtec_categories

        available = mvtec_categories(spec.root)
    else:
        from scrapbench.datasets.public.visa import visa_categories

        available = visa_categories(spec.root)
    unknown = [name for name in spec.categories if name not in available]
    if unknown:
        raise DatasetError(f"{spec.root}: no {spec.kind} categor{'y' if len(unknown) == 1 else 'ies'} "
                           f"{', '.join(repr(u) for u in unknown)}; available: {', '.join(available)}")
    return list(spec.categories) or available


def expand_dataset_spec(spec: str) -> list[str]:
    """One spec per dataset: a benchmark spec becomes one per category; others stay as they are."""
    parsed = parse_benchmark_spec(spec)
    if parsed is None:
        return [spec]
    return [parsed.category_spec(name) for name in benchmark_categories(parsed)]


def load_dataset(spec: str, preset: str = "cpu", seed: int = 0, cache_dir: str | Path | None = None,
                 per_defect_type: bool = False, show_progress: bool = False) -> Dataset:
    """Open the one dataset that ``spec`` names (a benchmark spec must pick exactly one category).

    ``per_defect_type``: MVTec AD masks get one class per defect type instead of ``anomaly``.
    """
    parsed = parse_benchmark_spec(spec)
    if parsed is not None:
        categories = benchmark_categories(parsed)
        if len(categories) != 1:
            raise DatasetError(f"{spec}: names {len(categories)} categories; open them with load_datasets, "
                               f"or pick one with {parsed.kind}:ROOT#category")
        if parsed.kind == "mvtec":
            from scrapbench.datasets.public.mvtec import read_mvtec_category

            return read_mvtec_category(parsed.root, categories[0], per_defect_type, show_progress)
        from scrapbench.datasets.public.visa import read_visa_category

        return read_visa_category(parsed.root, categories[0], per_defect_type, show_progress)
    if spec == "synthetic":
        from scrapbench.core.presets import SYNTHETIC_PRESETS
        from scrapbench.datasets.synthetic.generator import synthetic_dataset

        if preset not in SYNTHETIC_PRESETS:
            raise DatasetError(f"no synthetic size for preset {preset!r}; known: {sorted(SYNTHETIC_PRESETS)}")
        return synthetic_dataset(SYNTHETIC_PRESETS[preset], seed=seed, cache_dir=cache_dir,
                                 show_progress=show_progress)
    from scrapbench.datasets.folder import read_folder_dataset

    path = Path(spec)
    if not path.exists():
        raise DatasetError(f"{spec}: not an existing dataset folder; --dataset takes {SPEC_FORMS}")
    return read_folder_dataset(path)


def load_datasets(spec: str, preset: str = "cpu", seed: int = 0, cache_dir: str | Path | None = None,
                  per_defect_type: bool = False, show_progress: bool = False) -> list[Dataset]:
    """Every dataset that ``spec`` names, in order (a benchmark spec: one per category)."""
    return [load_dataset(one, preset, seed, cache_dir, per_defect_type, show_progress)
            for one in expand_dataset_spec(spec)]
