"""Turn a ``--dataset`` argument into a Dataset: ``synthetic`` (default) or a folder path."""

from __future__ import annotations

from pathlib import Path

from scrapbench.datasets.types import Dataset, DatasetError


def load_dataset(spec: str, preset: str = "cpu", seed: int = 0, cache_dir: str | Path | None = None) -> Dataset:
    """``synthetic`` → the seeded synthetic set sized by ``preset``; anything else → a folder."""
    if spec == "synthetic":
        from scrapbench.datasets.synthetic import SYNTHETIC_PRESETS, synthetic_dataset

        if preset not in SYNTHETIC_PRESETS:
            raise DatasetError(f"no synthetic size for preset {preset!r}; known: {sorted(SYNTHETIC_PRESETS)}")
        return synthetic_dataset(SYNTHETIC_PRESETS[preset], seed=seed, cache_dir=cache_dir)
    from scrapbench.datasets.folder import read_folder_dataset

    path = Path(spec)
    if not path.exists():
        raise DatasetError(f"{spec}: neither 'synthetic' nor an existing dataset folder")
    return read_folder_dataset(path)
