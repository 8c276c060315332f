"""Time the dataset fingerprint (``scrapbench.datasets.fingerprint``) on a folder of many small files.

    .venv/bin/python scripts/bench_fingerprint.py [--files 12000] [--side 128] [--keep DIR]

Writes a dataset folder of ``--files`` random RGB PNG patches (side × side, 1 in 4 with a mask) in a
temporary folder, then times ``dataset_fingerprint`` twice: the first pass may read from disk, the
second reads from the page cache. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from scrapbench.datasets.fingerprint import dataset_fingerprint
from scrapbench.datasets.types import Dataset, Split


def write_folder(root: Path, files: int, side: int) -> int:
    """A scrapbench-layout folder with ``files`` images (+ masks for every 4th); returns the bytes written."""
    rng = np.random.default_rng(0)
    (root / "dataset.yaml").write_text("classes: [motor]\n")
    total = 0
    for i in range(files):
        split = "test" if i % 5 == 0 else "train"
        images, masks = root / split / "images", root / split / "masks"
        images.mkdir(parents=True, exist_ok=True)
        masks.mkdir(parents=True, exist_ok=True)
        path = images / f"p{i:05d}.png"
        Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8)).save(path, compress_level=1)
        total += path.stat().st_size
        if i % 4 == 0:
            mask = np.zeros((side, side), np.uint8)
            mask[: side // 4, : side // 4] = 1
            Image.fromarray(mask).save(masks / f"p{i:05d}.png")
            total += (masks / f"p{i:05d}.png").stat().st_size
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=12000)
    parser.add_argument("--side", type=int, default=128)
    parser.add_argument("--keep", type=Path, default=None, help="write the folder here and keep it")
    args = parser.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="scrapbench-fingerprint-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        written = write_folder(root, args.files, args.side)
        empty = Split("x", [], lambda i: None, [])  # the manifest digest never decodes a sample
        dataset = Dataset(root.name, ("motor",), empty, empty, root=root)
        times = []
        for _ in range(2):
            start = time.perf_counter()
            fingerprint = dataset_fingerprint(dataset)
            times.append(round(time.perf_counter() - start, 3))
        print(json.dumps({"files": sum(1 for _ in root.glob("*/*/*.png")), "megabytes": round(written / 2**20, 1),
                          "first_s": times[0], "cached_s": times[1], "fingerprint": fingerprint}))
    finally:
        if args.keep is None:
            shutil.rmtree(root)


if __name__ == "__main__":
    main()
