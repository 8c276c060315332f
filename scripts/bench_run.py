"""Wall time and peak memory of the main job, for the closing notes and the README.

    .venv/bin/python scripts/bench_run.py [--presets smoke cpu] [--seeds 3] [--methods all] [--jobs auto]

Each preset runs `scrapbench run` in a fresh subprocess into a fresh folder (nothing resumed, the
synthetic dataset cache included), and the figures are written to results/bench_run.json. ``--jobs`` is passed
to `scrapbench run` (default ``auto``, as `make run` does). Memory: ``peak_rss_mb`` is the largest single
process's peak, ``peak_tree_rss_mb`` the largest sum over the driver and its workers (sampled).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]


def _tree_rss(pid: int) -> int:
    """Resident bytes of a process and all its descendants now (0 once it is gone)."""
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += process.memory_info().rss
    return total


def measure(preset: str, seeds: int, methods: str, jobs: str, keep: Path | None) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"bench-{preset}-") as tmp:
        env = dict(os.environ, SCRAPBENCH_CACHE=str(Path(tmp) / "cache"))
        out = keep if keep is not None else Path(tmp) / "runs"
        if (out / "synthetic-seed0" / preset).exists():
            raise SystemExit(f"{out}: already holds {preset} runs; the benchmark must start from nothing")
        command = [str(Path(sys.executable).with_name("scrapbench")), "run", "--methods", methods,
                   "--seeds", str(seeds), "--preset", preset, "--jobs", jobs, "--out", str(out), "--no-progress"]
        start = time.perf_counter()
        # A child per preset: ru_maxrss of RUSAGE_CHILDREN is then that job's own peak.
        with tempfile.TemporaryFile("w+") as stdout, tempfile.TemporaryFile("w+") as stderr:
            proc = subprocess.Popen(command, env=env, stdout=stdout, stderr=stderr, text=True)
            tree_peak = 0
            while proc.poll() is None:
                tree_peak = max(tree_peak, _tree_rss(proc.pid))
                time.sleep(0.5)
            wall = time.perf_counter() - start
            stdout.seek(0)
            stderr.seek(0)
            output, errors = stdout.read(), stderr.read()
        peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        runs = [json.loads(p.read_text()) for p in sorted((out / "synthetic-seed0" / preset).glob("**/run.json"))]
    if proc.returncode != 0:
        print(output[-4000:], errors[-4000:], sep="\n")
    return {
        "preset": preset, "methods": methods, "seeds": seeds, "jobs": jobs, "returncode": proc.returncode,
        "wall_s": round(wall, 1), "peak_rss_mb": round(peak_kb / 1024, 1),
        "peak_tree_rss_mb": round(tree_peak / 2**20, 1),
        "per_run": [{"method": r["method"], "seed": r["seed"], **r["timings"]} for r in runs],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--presets", nargs="+", default=["smoke", "cpu"])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--methods", default="all")
    parser.add_argument("--jobs", default="auto", help="scrapbench run --jobs (a number or auto)")
    parser.add_argument("--out", type=Path, default=REPO / "results" / "bench_run.json")
    parser.add_argument("--keep-runs", type=Path, default=None,
                        help="write the runs here (kept, e.g. for the reference report) instead of a temp dir")
    args = parser.parse_args()
    report = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count()}, "jobs": []}
    for preset in args.presets:
        job = measure(preset, args.seeds, args.methods, args.jobs, args.keep_runs)
        print(f"{preset}: {job['wall_s']} s wall, peak RSS {job['peak_rss_mb']} MB, exit {job['returncode']}")
        report["jobs"].append(job)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
