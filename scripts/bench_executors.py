"""The same grid with the local executor and with Ray: wall time, peak memory, and whether every file is identical.

    .venv/bin/python scripts/bench_executors.py [--presets smoke cpu] [--seeds 3] [--methods all]

Per preset, in fresh folders (the synthetic dataset is generated once beforehand, into a private cache both use):

* ``local``: ``scrapbench run`` with the local executor and ``OMP_NUM_THREADS=1``, so that its runs have the
  identity of a Ray run with one CPU each (torch threads are part of it);
* ``ray``: ``scrapbench run --executor ray --cpus-per-run 1`` on a local Ray the command starts, sized to the
  machine: as many runs at once as it has CPUs;
* with ``--default-threads``, also the local executor with torch's default thread count (other numbers for some
  methods: a different identity, reported for its time only).

Peak memory is the largest sum of resident memory over the command's process tree (the driver, and for Ray its
GCS, raylet and workers), sampled every 0.2 s; shared pages (libraries, Ray's object store) count once per process,
so it overstates Ray's. Every run's metrics.json, per_image.csv, maps.npz and metrics_state.npz are compared byte
for byte, and the run identities for equality. Figures go to results/bench_executors.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
COMPARED = ("metrics.json", "per_image.csv", "maps.npz", "metrics_state.npz")


def _tree_rss(process: psutil.Process) -> int:
    total = 0
    for member in [process, *process.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            total += member.memory_info().rss
    return total


def timed(command: list[str], env: dict[str, str]) -> dict:
    """Run ``command``; its wall time, peak process-tree memory and exit code."""
    start = time.perf_counter()
    child = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    tree = psutil.Process(child.pid)
    peak, processes = 0, 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak, processes
        while not done.wait(0.2):
            try:
                peak = max(peak, _tree_rss(tree))
                processes = max(processes, len(tree.children(recursive=True)) + 1)
            except psutil.Error:
                pass

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output, _ = child.communicate()
    done.set()
    sampler.join()
    wall = time.perf_counter() - start
    if child.returncode != 0:
        print(output[-4000:])
    return {"wall_s": round(wall, 1), "peak_tree_rss_mb": round(peak / 2**20, 1), "max_processes": processes,
            "returncode": child.returncode}


def compare(a: Path, b: Path) -> dict:
    """Runs present in both folders, and those whose compared files or identities differ."""
    runs_a = {p.parent.relative_to(a) for p in a.glob("**/run.json")}
    runs_b = {p.parent.relative_to(b) for p in b.glob("**/run.json")}
    differing = []
    for run in sorted(runs_a & runs_b):
        files = [name for name in COMPARED if (a / run / name).exists() or (b / run / name).exists()]
        same = all((a / run / name).read_bytes() == (b / run / name).read_bytes() for name in files)
        ids = [json.loads((root / run / "run.json").read_text())["identity"] for root in (a, b)]
        if not same or ids[0] != ids[1]:
            differing.append(str(run))
    return {"runs_compared": len(runs_a & runs_b), "only_in_one": sorted(str(r) for r in runs_a ^ runs_b),
            "differing": differing}


def measure(preset: str, seeds: int, methods: str, default_threads: bool, tmp: Path) -> dict:
    env = dict(os.environ, SCRAPBENCH_CACHE=str(tmp / "cache"), OMP_WAIT_POLICY="PASSIVE")
    scrapbench = str(Path(sys.executable).with_name("scrapbench"))
    synth = subprocess.run([scrapbench, "run", "--methods", "winclip", "--seeds", "1", "--preset", preset,
                            "--out", str(tmp / f"warm-{preset}"), "--no-progress"], env=env, capture_output=True)
    assert synth.returncode == 0, synth.stdout[-2000:]  # the dataset is now in the cache for every job below
    base = [scrapbench, "run", "--methods", methods, "--seeds", str(seeds), "--preset", preset, "--no-progress"]
    jobs = {"local": ([*base, "--out", str(tmp / f"local-{preset}")], {"OMP_NUM_THREADS": "1"}),
            "ray": ([*base, "--out", str(tmp / f"ray-{preset}"), "--executor", "ray", "--cpus-per-run", "1"], {})}
    if default_threads:
        jobs["local_default_threads"] = ([*base, "--out", str(tmp / f"localdefault-{preset}")], {})
    report = {"preset": preset, "methods": methods, "seeds": seeds, "ray_workers": os.cpu_count()}
    for name, (command, extra) in jobs.items():
        report[name] = timed(command, {**env, **extra})
        print(f"{preset} {name}: {report[name]}", flush=True)
    report["local_vs_ray"] = compare(tmp / f"local-{preset}", tmp / f"ray-{preset}")
    print(f"{preset} local vs ray: {report['local_vs_ray']}", flush=True)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["smoke", "cpu"])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--methods", default="all")
    parser.add_argument("--default-threads", action="store_true", help="also time the local executor as it defaults")
    parser.add_argument("--out", type=Path, default=REPO / "results" / "bench_executors.json")
    args = parser.parse_args()
    result = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                          "load_avg_at_start": os.getloadavg()}, "jobs": []}
    with tempfile.TemporaryDirectory(prefix="bench-executors-") as tmp:
        for preset in args.presets:
            result["jobs"].append(measure(preset, args.seeds, args.methods, args.default_threads, Path(tmp)))
    result["machine"]["load_avg_at_end"] = os.getloadavg()
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
