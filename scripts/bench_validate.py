"""Time of opening a dataset folder: every file decoded and hashed (fingerprint), first and second time.

    .venv/bin/python scripts/bench_validate.py                    # 10,000 images of 128×128 + 2,000 masks
    .venv/bin/python scripts/bench_validate.py --images 5000 --size 64

A folder is fabricated in a temp dir (random-noise PNGs, the worst case for PNG decoding; a fifth of the
images get a mask), then opened with ``read_folder_dataset``: cold (no remembered checks) with 1 thread and
with the default thread count, then warm (the checks remembered in the cache). For scale, ``header_s`` is
the old check (Pillow header + ``verify()`` only, no full decode, no hash). Figures go to
results/bench_validate.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def fabricate(root: Path, images: int, size: int) -> int:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    (root / "dataset.yaml").write_text("classes: [motor, cable, spray_can]\n")
    n_test = images // 4
    for split, count in (("train", images - n_test), ("test", n_test)):
        (root / split / "images").mkdir(parents=True)
        (root / split / "masks").mkdir(parents=True)
        for i in range(count):
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(
                root / split / "images" / f"{i:05d}.png")
            if i % 5 == 0:
                mask = np.zeros((size, size), np.uint8)
                mask[size // 4: size // 2, size // 4: size // 2] = 1 + i % 3
                Image.fromarray(mask).save(root / split / "masks" / f"{i:05d}.png")
    return sum(1 for _ in root.rglob("*.png"))


def header_only(root: Path) -> float:
    start = time.perf_counter()
    for path in sorted(root.rglob("*.png")):
        with Image.open(path) as img:
            img.verify()
        with Image.open(path) as img:
            _ = img.size
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=10000)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--out", type=Path, default=REPO / "results" / "bench_validate.json")
    args = parser.parse_args()

    from scrapbench.datasets.folder import read_folder_dataset

    with tempfile.TemporaryDirectory() as tmp:
        root, cache = Path(tmp) / "data", Path(tmp) / "cache"
        start = time.perf_counter()
        files = fabricate(root, args.images, args.size)
        fabricate_s = time.perf_counter() - start
        bytes_total = sum(p.stat().st_size for p in root.rglob("*.png"))
        timings = {"header_s": header_only(root)}

        for label, workers in (("one_thread", 1), ("default_threads", None)):
            start = time.perf_counter()
            data = read_folder_dataset(root, use_cache=False, show_progress=False, workers=workers)
            timings[f"cold_{label}_s"] = time.perf_counter() - start
        read_folder_dataset(root, cache_dir=cache, show_progress=False)  # fills the cache
        start = time.perf_counter()
        warm = read_folder_dataset(root, cache_dir=cache, show_progress=False)
        timings["warm_cache_s"] = time.perf_counter() - start
        assert warm.fingerprint == data.fingerprint

    report = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                    "load_average_1min": round(os.getloadavg()[0], 1)},  # other work on the machine meanwhile
        "files": files, "megabytes": round(bytes_total / 1e6, 1), "image_size": args.size,
        "fabricate_s": round(fabricate_s, 2), **{k: round(v, 2) for k, v in timings.items()},
        "fingerprint": data.fingerprint,
    }
    print(json.dumps(report, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
