"""A seeded synthetic steel-scrap dataset: crane-camera patches of scrap piles with hidden anomalies.

Each patch is a top-down view of a cluttered pile (plates, sheets, beams, rebar, pipes, debris; rust,
shadows, light falloff, blur, sensor noise). Anomalous patches also hold a partially occluded motor,
cable or spray can; the mask labels only its visible pixels with the class index (1..3). Hard
negatives (painted pipe stubs, bent rebar and black wire, painted round parts) appear in every kind
of patch, so colour or shape alone does not separate the classes.

Every sample is drawn from its own ``numpy`` generator seeded by (seed, split, index), so the same
seed gives byte-identical data and any sample can be produced alone. ``synthetic_dataset`` writes the
data once in the on-disk folder format and reads it back with the same reader as user data.

The preset sizes (smoke, cpu = ``SyntheticConfig()``, paper = Table 1) are
``scrapbench.core.presets.SYNTHETIC_PRESETS``; any other size: ``config.scaled(2.0)`` or
``dataclasses.replace(config, patch_size=...)``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from scrapbench.datasets.folder import read_folder_dataset, write_folder_dataset
from scrapbench.datasets.io.cache import default_cache_dir
from scrapbench.datasets.synthetic.anomaly_shapes import ANOMALY_DRAWERS
from scrapbench.datasets.synthetic.canvas import Canvas
from scrapbench.datasets.synthetic.scrap_shapes import HARD_NEGATIVES, STEEL_DRAWERS, Drawer, ground, large_plate, sheet
from scrapbench.datasets.synthetic.textures import finish, relief
from scrapbench.datasets.types import Dataset, Sample

# Bump when the renderer changes what a (config, seed) produces: it keys the cache.
GENERATOR_VERSION = 2
CLASS_NAMES = ("motor", "cable", "spray_can")
# Table 1 of the paper: anomalous training images per class (motor, cable, spray can).
PAPER_CLASS_RATIO = (467, 172, 97)
_SPLIT_CODES = {"train": 1, "test": 2}


def split_by_ratio(total: int, ratio: tuple[int, ...] = PAPER_CLASS_RATIO) -> tuple[int, ...]:
    """Divide ``total`` images among classes in proportion to ``ratio`` (largest remainder).

    When there are at least as many images as classes, a class that would get none takes one from
    the largest, so tiny presets still contain every class (classes with ratio 0 stay at 0).
    """
    weights = np.asarray(ratio, float)
    if total <= 0 or weights.sum() <= 0:
        return tuple(0 for _ in ratio)
    shares = weights / weights.sum() * total
    counts = np.floor(shares).astype(int)
    for i in np.argsort(-(shares - counts), kind="stable")[: total - counts.sum()]:
        counts[i] += 1
    if total >= np.count_nonzero(weights):
        for i in np.flatnonzero((counts == 0) & (weights > 0)):
            counts[np.argmax(counts)] -= 1
            counts[i] = 1
    return tuple(int(c) for c in counts)


@dataclass(frozen=True)
class SyntheticConfig:
    """Size and look of a synthetic dataset; every field is part of the cache key.

    Geometry is relative to ``patch_size``, so presets show the same kind of scene at different
    resolutions. Anomaly sizes are log-normal (long-tailed): most are small, a few are large.
    """

    name: str = "cpu"
    patch_size: int = 128
    train_normal: int = 240
    train_anomalous: tuple[int, ...] = split_by_ratio(60)  # per class, in CLASS_NAMES order
    test_normal: int = 80
    test_anomalous: tuple[int, ...] = split_by_ratio(20)
    class_names: tuple[str, ...] = CLASS_NAMES
    pieces: tuple[int, int] = (20, 30)  # steel pieces per patch (min, max)
    hard_negatives: float = 2.0  # mean number of anomaly look-alikes per patch (Poisson)
    # Median long extent per class as a fraction of the patch (a cable's length, a motor's body).
    anomaly_size: tuple[float, ...] = (0.15, 0.34, 0.11)
    size_spread: float = 0.5  # log-normal sigma of anomaly sizes
    occlusion: float = 0.6  # chance that steel is dropped on top of an anomaly
    second_instance: float = 0.15  # chance of a second object of the same class
    min_visible_px: float = 12.0  # at 128 px (scaled with the area): smaller visible parts are redrawn

    def __post_init__(self) -> None:
        k = len(self.class_names)
        if tuple(self.class_names) != CLASS_NAMES[:k] or k == 0:
            raise ValueError(f"synthetic classes must be a prefix of {CLASS_NAMES}, got {self.class_names}")
        for name in ("train_anomalous", "test_anomalous", "anomaly_size"):
            if len(getattr(self, name)) != k:
                raise ValueError(f"{name} needs one value per class ({k}), got {getattr(self, name)}")
        if self.patch_size < 32:
            raise ValueError(f"patch_size must be at least 32, got {self.patch_size}")
        if not 0 <= self.pieces[0] <= self.pieces[1]:
            raise ValueError(f"pieces must be (min, max) with 0 <= min <= max, got {self.pieces}")
        if min(self.anomaly_size) <= 0:
            raise ValueError(f"anomaly_size must be positive fractions of the patch, got {self.anomaly_size}")
        if min(self.train_normal, self.test_normal, *self.train_anomalous, *self.test_anomalous) < 0:
            raise ValueError("image counts must be non-negative")
        if sum(self.test_anomalous) == 0:
            raise ValueError("the test split needs anomalous images (pixel metrics need positives)")

    def scaled(self, factor: float) -> SyntheticConfig:
        """The same dataset with every split ``factor`` times as large (class ratios kept)."""
        if factor <= 0:
            raise ValueError(f"scale factor must be positive, got {factor}")

        def anomalous(counts: tuple[int, ...]) -> tuple[int, ...]:
            return split_by_ratio(max(round(sum(counts) * factor), 1) if sum(counts) else 0, counts)

        return replace(
            self,
            name=f"{self.name}-x{factor:g}",
            train_normal=round(self.train_normal * factor),
            train_anomalous=anomalous(self.train_anomalous),
            test_normal=round(self.test_normal * factor),
            test_anomalous=anomalous(self.test_anomalous),
        )

    def counts(self, split: str) -> dict[str, int]:
        """Images per kind in a split: ``{"normal": n, "motor": ..., ...}``."""
        normal, anomalous = (
            (self.train_normal, self.train_anomalous) if split == "train" else (self.test_normal, self.test_anomalous)
        )
        return {"normal": normal, **dict(zip(self.class_names, anomalous, strict=True))}


def split_plan(config: SyntheticConfig, seed: int, split: str) -> list[int]:
    """Class index (0 = normal) of every image of a split, in a seeded shuffled order."""
    counts = config.counts(split)
    labels = np.repeat(np.arange(len(counts)), list(counts.values()))
    rng = np.random.default_rng([seed, _SPLIT_CODES[split], GENERATOR_VERSION, 0])
    return [int(c) for c in rng.permutation(labels)]


def generate_sample(config: SyntheticConfig, seed: int, split: str, index: int, class_index: int) -> Sample:
    """Render one patch; depends only on (config, seed, split, index, class_index)."""
    rng = np.random.default_rng([seed, _SPLIT_CODES[split], GENERATOR_VERSION, 1, index])
    unit = config.patch_size / 128.0
    min_area = config.min_visible_px * unit * unit
    for attempt in range(10):
        # After a few failed tries nothing is drawn over the anomalies, so they stay visible.
        canvas = _compose(config, rng, class_index, cover_anomalies=attempt < 6)
        if all(area >= min_area for area in canvas.visible_areas().values()):
            break
    shaded = canvas.rgb * relief(canvas.height, canvas.light, unit)[..., None]
    image = finish(shaded, rng, unit, canvas.light)
    return Sample(image=image, mask=canvas.class_mask(), id=f"{split}_{index:05d}")


def _compose(config: SyntheticConfig, rng: np.random.Generator, class_index: int, cover_anomalies: bool) -> Canvas:
    """Lay out one pile: steel and look-alikes, then the anomalies, then steel on top of them."""
    size = config.patch_size
    cv = Canvas(size, rng)
    ground(cv, rng)
    # A per-patch "theme" (more sheets here, more rebar there) varies piles like a real yard does.
    steel = list(STEEL_DRAWERS.values())
    weights = rng.dirichlet(np.full(len(steel), 1.5)) + 0.05
    cumulative = np.cumsum(weights / weights.sum())

    def random_steel() -> Drawer:
        return steel[min(int(np.searchsorted(cumulative, rng.random())), len(steel) - 1)]

    def anywhere() -> tuple[float, float]:
        return tuple(rng.uniform(-0.1 * size, 1.1 * size, 2))

    # The bottom of the pile: a few large plates and sheets, so little bare ground shows.
    for _ in range(int(rng.integers(4, 8))):
        (large_plate if rng.random() < 0.6 else sheet)(cv, rng, *rng.uniform(0.0, size, 2))
    total = int(rng.integers(config.pieces[0], config.pieces[1] + 1))
    below = round(total * rng.uniform(0.65, 0.85))
    hard = list(HARD_NEGATIVES.values())
    layer = [random_steel() for _ in range(below)]
    layer += [hard[int(i)] for i in rng.integers(0, len(hard), rng.poisson(config.hard_negatives))]
    for i in rng.permutation(len(layer)):
        layer[i](cv, rng, *anywhere())

    on_top = total - below
    if class_index:
        draw_anomaly = ANOMALY_DRAWERS[config.class_names[class_index - 1]]
        median = config.anomaly_size[class_index - 1] * size
        for _ in range(1 + int(rng.random() < config.second_instance)):
            extent = float(np.clip(median * rng.lognormal(0.0, config.size_spread), 0.4 * median, 0.85 * size))
            cy, cx = rng.uniform(0.12 * size, 0.88 * size, 2)
            draw_anomaly(cv, rng, cy, cx, extent, cv.new_instance(class_index))
            if cover_anomalies and rng.random() < config.occlusion:  # steel dropped across the object
                for _ in range(int(rng.integers(1, 3))):
                    drawer = _OCCLUDERS[int(rng.integers(len(_OCCLUDERS)))]
                    drawer(cv, rng, *(np.array([cy, cx]) + rng.normal(0.0, 0.45 * extent + 0.05 * size, 2)))
                    on_top -= 1
    for _ in range(max(on_top, 0) if cover_anomalies or not class_index else 0):
        random_steel()(cv, rng, *anywhere())
    return cv


_OCCLUDERS = tuple(STEEL_DRAWERS[name] for name in ("rebar", "plate", "pipe", "debris", "beam"))


def iter_split(config: SyntheticConfig, seed: int, split: str, workers: int = 1) -> Iterator[Sample]:
    """Render a split lazily, in order; ``workers`` > 1 renders in that many processes.

    Samples depend only on their own seed, so the output is identical for any number of workers.
    """
    tasks = [
        (config, seed, split, index, class_index) for index, class_index in enumerate(split_plan(config, seed, split))
    ]
    if workers <= 1:
        for task in tasks:
            yield generate_sample(*task)
        return
    with ProcessPoolExecutor(workers) as pool:
        # A bounded window of pending renders keeps memory flat when writing is slower than rendering.
        pending: deque[Future[Sample]] = deque()
        for task in tasks:
            pending.append(pool.submit(generate_sample, *task))
            if len(pending) >= 4 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def default_workers(config: SyntheticConfig) -> int:
    """One process for small sets (the shared-CPU default); up to 8 for large ones like ``paper``."""
    images = sum(sum(config.counts(split).values()) for split in ("train", "test"))
    return 1 if images < 2000 else max(1, min(8, os.cpu_count() or 1))


def write_synthetic(
    out_dir: str | Path,
    config: SyntheticConfig,
    seed: int = 0,
    workers: int | None = None,
    show_progress: bool | None = None,
    keep_existing: bool = False,
    force: bool = False,
) -> Path:
    """Render a dataset into ``out_dir`` in the on-disk folder format (atomically); returns the folder.

    ``workers``: processes (default: ``default_workers``). ``show_progress``: a progress bar
    (default: only on a terminal). An existing ``out_dir`` is replaced only if scrapbench wrote it
    (:mod:`scrapbench.storage.outdir`; ``force``: whichever scrapbench command wrote it); ``keep_existing``
    keeps one that appears while rendering.
    """
    meta = {
        "name": f"synthetic-{config.name}",
        "notes": {
            "generator": "scrapbench.synthetic",
            "version": GENERATOR_VERSION,
            "seed": seed,
            "config": _jsonable(asdict(config)),
        },
    }
    workers = default_workers(config) if workers is None else workers
    disable = None if show_progress is None else not show_progress
    splits = {
        split: tqdm(
            iter_split(config, seed, split, workers),
            total=sum(config.counts(split).values()),
            desc=f"synthetic {config.name} {split}",
            unit="img",
            disable=disable,
        )
        for split in ("train", "test")
    }
    return write_folder_dataset(out_dir, config.class_names, splits, meta=meta, command="synth",
                                keep_existing=keep_existing, force=force)


def cache_key(config: SyntheticConfig, seed: int) -> str:
    """Folder name of a (config, seed, generator version) in the cache."""
    doc = json.dumps({"config": _jsonable(asdict(config)), "seed": seed, "version": GENERATOR_VERSION}, sort_keys=True)
    return f"{config.name}-seed{seed}-{hashlib.sha256(doc.encode()).hexdigest()[:12]}"


def synthetic_dataset(
    config: SyntheticConfig, seed: int = 0, cache_dir: str | Path | None = None, workers: int | None = None,
    show_progress: bool | None = None,
) -> Dataset:
    """The synthetic dataset for (config, seed): rendered once into the cache, then read from disk.

    The cache folder is ``cache_dir`` (default ``$SCRAPBENCH_CACHE`` or ``~/.cache/scrapbench``)
    / ``synthetic`` / a name hashed from the config, the seed and the generator version.
    ``show_progress``: a progress bar with ETA while rendering (default: only on a terminal).
    """
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    folder = root / "synthetic" / cache_key(config, seed)
    if not (folder / "dataset.yaml").is_file():
        if folder.exists():
            shutil.rmtree(folder, ignore_errors=True)  # an incomplete entry (not published by write_synthetic)
        # Rendered into a staging folder beside the entry, then renamed; when two processes fill the
        # same entry at once, the first one's folder stays (a reader may already be using it). Staging
        # folders of killed processes are removed here too (scrapbench.storage.writers.remove_abandoned).
        write_synthetic(folder, config, seed, workers, show_progress, keep_existing=True)
    return read_folder_dataset(folder, cache_dir=root)


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    return value


__all__ = [
    "CLASS_NAMES",
    "GENERATOR_VERSION",
    "SyntheticConfig",
    "default_cache_dir",
    "default_workers",
    "generate_sample",
    "split_by_ratio",
    "synthetic_dataset",
    "write_synthetic",
]
