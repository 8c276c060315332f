"""Wall time of anomalib's model zoo on the cpu preset, for the closing notes and the README.

    nice .venv/bin/python scripts/bench_zoo.py [--preset cpu] [--seeds 1] [--jobs auto]

Runs ``scrapbench run --methods zoo --seeds 1 --preset cpu`` in a fresh subprocess into a fresh folder
(the measurement of ``scripts/bench_run.py``), and writes the wall time, peak memory and each model's
fit / predict timings to results/bench_zoo.json.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_run import REPO, measure

from scrapbench.storage.atomic import atomic_write_json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--jobs", default="auto", help="scrapbench run --jobs (a number or auto)")
    parser.add_argument("--out", type=Path, default=REPO / "results" / "bench_zoo.json")
    args = parser.parse_args()
    job = measure(args.preset, args.seeds, "zoo", args.jobs, None)
    print(f"zoo, {args.preset}, {args.seeds} seed(s): {job['wall_s']} s wall, peak RSS {job['peak_rss_mb']} MB, "
          f"exit {job['returncode']}")
    for run in job["per_run"]:
        speed = run.get("predict_images_per_s") or 0
        print(f"  {run['method']:32s} fit {run.get('fit_s') or 0:7.1f} s   {speed:7.1f} img/s")
    atomic_write_json(args.out, {"machine": {"platform": platform.platform(), "cpus": os.cpu_count()}, **job})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
