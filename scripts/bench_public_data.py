"""Time to read and validate a full-size-like MVTec AD layout (what `--dataset mvtec:ROOT` does first).

    .venv/bin/python scripts/bench_public_data.py                  # 15 categories, 5,355 images of 64×64
    .venv/bin/python scripts/bench_public_data.py --size 256       # same counts, larger images
    .venv/bin/python scripts/bench_public_data.py --workers 1      # also with one decoding thread

The layout is fabricated in a temporary folder with MVTec AD's image count (5,354 images: 3,629 train,
1,725 test; here 15 × (242 train + 25 good + 3 × 30 defect) = 5,355, every defect image with a 0/255
mask), then timed: expanding ``mvtec:ROOT`` into categories (directory listing only) and opening every
category (every image and mask read, hashed and decoded, the fingerprint computed): first with no
remembered checks ("cold"), then again with the checks the first pass remembered ("cached": only
``stat`` per file; a private cache folder is used). Real MVTec AD images are 700–1024 px, so decoding
grows with their pixels: run with ``--size`` to see how. The files were just written, so they are read
from the OS cache (a cold disk adds its read time). Figures go to results/bench_public_data.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the fabricator the tests use

from public_layouts import write_mvtec  # noqa: E402

from scrapbench.datasets.public.mvtec import mvtec_categories, read_mvtec_category  # noqa: E402
from scrapbench.datasets.resolve import expand_dataset_spec, load_dataset  # noqa: E402

CATEGORIES = 15
LAYOUT = {"train": 242, "good": 25, "crack": 30, "scratch": 30, "hole": 30}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64, help="image side in pixels (default 64)")
    parser.add_argument("--workers", type=int, nargs="*", default=[],
                        help="also time these numbers of decoding threads (default: CPUs, at most 8)")
    parser.add_argument("--out", type=Path, default=REPO / "results" / "bench_public_data.json")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench_public_data_"))
    try:
        started = time.perf_counter()
        layout = {f"category{k:02d}": LAYOUT for k in range(CATEGORIES)}
        write_mvtec(tmp / "mvtec", layout, size=(args.size, args.size))
        write_s = time.perf_counter() - started
        images = sum(1 for _ in (tmp / "mvtec").rglob("*.png") if not _.name.endswith("_mask.png"))

        started = time.perf_counter()
        specs = expand_dataset_spec(f"mvtec:{tmp / 'mvtec'}")
        expand_s = time.perf_counter() - started
        assert len(specs) == CATEGORIES
        results = {}
        os.environ["SCRAPBENCH_CACHE"] = str(tmp / "cache")  # remembered checks go to the temporary folder
        runs = [("cold", None), ("cached", None)] + [(f"cold_workers_{w}", w) for w in args.workers]
        for label, workers in runs:
            started = time.perf_counter()
            if workers is None:  # what `--dataset mvtec:ROOT` runs (the default cache folder: remembered checks)
                datasets = [load_dataset(spec) for spec in specs]
            else:  # the same work with a chosen number of decoding threads, nothing remembered
                datasets = [read_mvtec_category(tmp / "mvtec", category, use_cache=False, workers=workers)
                            for category in mvtec_categories(tmp / "mvtec")]
            load_s = time.perf_counter() - started
            assert sum(len(d.train) + len(d.test) for d in datasets) == images
            assert all(d.fingerprint for d in datasets)
            results[f"mvtec_{args.size}px_{label}"] = {
                "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                            "load_average_1min": round(os.getloadavg()[0], 2)},
                "images": images, "masks": CATEGORIES * 90, "categories": len(specs), "image_size": args.size,
                "workers": workers or "default", "remembered_checks": label == "cached",
                "fabricate_s": round(write_s, 2), "expand_s": round(expand_s, 3),
                "read_and_validate_s": round(load_s, 2), "images_per_s": round(images / load_s, 1),
            }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(results, indent=1))
    stored = json.loads(args.out.read_text()) if args.out.is_file() else {}
    args.out.write_text(json.dumps({**stored, **results}, indent=1) + "\n")

if __name__ == "__main__":
    main()
