"""Regenerate the reference report in ``results/reference/`` from the default benchmark run.

    .venv/bin/python scripts/reference_report.py [--runs runs/reference] [--device cpu]

Runs Table 2 and the Table 3 ablation (3 seeds, ``cpu`` preset, synthetic data seed 0, ``--jobs auto`` as
`make run`; finished runs in ``--runs`` are reused), then builds the report. The report is a pure function of the run
folders, so re-running on the same runs gives the same files. Paths are relative to the
repository root.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=Path, default=Path("runs/reference"), help="results folder of the runs")
    parser.add_argument("--out", type=Path, default=Path("results/reference"), help="report folder")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--jobs", default="auto", help="scrapbench run --jobs, as `make run` runs it")
    args = parser.parse_args()
    scrapbench = str(Path(sys.executable).with_name("scrapbench"))
    subprocess.run([scrapbench, "run", "--methods", "all,ablation", "--seeds", str(args.seeds), "--preset", "cpu",
                    "--device", args.device, "--jobs", args.jobs, "--out", str(args.runs), "--no-progress"],
                   check=True, cwd=REPO)
    # Relative paths (from the repository root) keep machine-specific paths out of the committed report. No
    # report.html: its viewer's thumbnails (1,200 files, ~5 MB) stay out of the repository; its screenshots
    # (report_first_screen.png, report_viewer.png) are made by scripts/bench_report_html.py --screenshots.
    subprocess.run([scrapbench, "report", str(args.runs), "--out", str(args.out), "--no-html"], check=True, cwd=REPO)


if __name__ == "__main__":
    main()
