"""Speed and memory of the evaluator, for the closing notes and the README.

    .venv/bin/python scripts/bench_metrics.py                     # both parts below
    .venv/bin/python scripts/bench_metrics.py --part full         # 2,418 maps of 518×518 (paper-sized test set)
    .venv/bin/python scripts/bench_metrics.py --part compare      # 300 maps: ours vs torchmetrics / anomalib

Maps and masks are generated on the fly, image by image from a seed (never all held at once): ViT-like
37×37 patch scores upsampled bilinearly to 518×518 plus pixel noise, and for ~15 % of the images (the paper's
353 / 2,418) one to three anomalies (blobs, thin cable-like strokes) of classes 1–3 that raise the scores under
them by a random amount, so some are found and some missed. Every measured job runs in its own subprocess, so its
peak RSS (``ru_maxrss``) is its own; ``eval_s`` is the time inside update()/compute() only, generation excluded.
Figures go to results/bench_metrics.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SIZE = 518
PATCHES = 37  # ViT-L/14 at input 518
ANOMALOUS_SHARE = 353 / 2418


def _bilinear(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lower index, upper index, upper weight) per output position: bilinear, align_corners=False."""
    position = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
    low = np.floor(position).astype(np.intp)
    return low, np.minimum(low + 1, n_in - 1), (position - low).astype(np.float32)


def upsample(patches: np.ndarray) -> np.ndarray:
    """Separable bilinear upsampling (cheaper than a BLAS product on a crowded machine)."""
    low, high, weight = UPSAMPLE
    rows = patches[low] * (1 - weight)[:, None] + patches[high] * weight[:, None]
    return np.ascontiguousarray(rows[:, low] * (1 - weight) + rows[:, high] * weight)


UPSAMPLE = _bilinear(PATCHES, SIZE)
PIXEL_NOISE = np.float32(0.05) * np.random.default_rng(12345).standard_normal((SIZE, SIZE), dtype=np.float32)


def _paint_anomaly(rng: np.random.Generator, mask: np.ndarray) -> None:
    """One anomaly: an ellipse (motor, spray can) or a thin stroke (cable), of small to large area."""
    cy, cx = rng.uniform(40, SIZE - 40, 2)
    angle = rng.uniform(0, np.pi)
    if rng.random() < 0.3:
        a, b = rng.uniform(60, 200), rng.uniform(3, 8)
    else:
        a = np.exp(rng.uniform(np.log(8), np.log(120)))
        b = a * rng.uniform(0.4, 1.0)
    y0, y1 = int(max(cy - a, 0)), int(min(cy + a + 1, SIZE))
    x0, x1 = int(max(cx - a, 0)), int(min(cx + a + 1, SIZE))
    yy, xx = np.mgrid[y0:y1, x0:x1]
    u = (xx - cx) * np.cos(angle) + (yy - cy) * np.sin(angle)
    v = -(xx - cx) * np.sin(angle) + (yy - cy) * np.cos(angle)
    mask[y0:y1, x0:x1][(u / a) ** 2 + (v / b) ** 2 <= 1] = rng.integers(1, 4)


def sample(seed: int, index: int) -> tuple[np.ndarray, np.ndarray]:
    """(anomaly map float32 518×518, class mask uint8) of image ``index``; the same for every caller."""
    rng = np.random.default_rng([seed, index])
    mask = np.zeros((SIZE, SIZE), np.uint8)
    patches = rng.standard_normal((PATCHES, PATCHES), dtype=np.float32)
    if rng.random() < ANOMALOUS_SHARE:
        for _ in range(rng.integers(1, 4)):
            _paint_anomaly(rng, mask)
        # Raise the patch scores under the anomaly (patch-level coverage), by a random margin.
        cover = (mask > 0).reshape(PATCHES, SIZE // PATCHES, PATCHES, SIZE // PATCHES).mean(axis=(1, 3))
        patches += np.float32(rng.uniform(0.0, 4.0)) * cover.astype(np.float32)
    amap = upsample(patches)
    # Pixel noise: one fixed field, rolled by a random offset per image (drawing fresh noise costs more than the
    # evaluation being measured).
    amap += np.roll(PIXEL_NOISE, tuple(rng.integers(0, SIZE, 2)), axis=(0, 1))
    return amap, mask


def batches(seed: int, count: int, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray, list[str]]]:
    for start in range(0, count, batch_size):
        items = [sample(seed, i) for i in range(start, min(start + batch_size, count))]
        yield (np.stack([m for m, _ in items]), np.stack([k for _, k in items]),
               [f"img{i:05d}" for i in range(start, start + len(items))])


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker(job: str, count: int, seed: int, batch_size: int) -> dict:
    """One measured job in this process: feed ``count`` maps to ``job``'s metric, time update+compute."""
    if job == "ours":
        from scrapbench.metrics import PixelMetrics

        metric = PixelMetrics(class_names=("motor", "cable", "spray_can"))

        def update(maps, masks, ids):
            metric.update(maps, masks, ids=ids)

        def compute():
            r = metric.compute()
            return {k: r[k] for k in ("auroc", "aupro", "ap", "f1max")} | {"grid_error_bound": r["grid_error_bound"]}

        def extra():
            from scrapbench.metrics import bootstrap_ci

            t0 = time.perf_counter()
            ci = bootstrap_ci(metric, "aupro", n_boot=1000)
            return {"bootstrap_aupro_1000_s": round(time.perf_counter() - t0, 2),
                    "aupro_ci95": [round(ci["low"], 4), round(ci["high"], 4)]}
    else:
        import torch

        torch.set_num_threads(2)
        if job == "anomalib_aupro":
            from anomalib.metrics.aupro import _AUPRO

            tm = _AUPRO(fpr_limit=0.3)
        else:
            from torchmetrics.classification import BinaryAUROC, BinaryAveragePrecision

            tm = (BinaryAUROC if job == "torchmetrics_auroc" else BinaryAveragePrecision)(thresholds=None)

        def update(maps, masks, ids):
            tm.update(torch.from_numpy(maps), torch.from_numpy((masks > 0).astype(np.int64)))

        def compute():
            return {job: float(tm.compute())}

        def extra():
            return {}
    baseline = _rss_mb()
    generate_s = eval_s = 0.0
    start = time.perf_counter()
    for maps, masks, ids in batches(seed, count, batch_size):
        t0 = time.perf_counter()
        generate_s += t0 - start
        update(maps, masks, ids)
        start = time.perf_counter()
        eval_s += start - t0
    t0 = time.perf_counter()
    values = compute()
    eval_s += time.perf_counter() - t0
    peak = _rss_mb()  # before the optional bootstrap, so eval figures are for the four metrics alone
    return {"job": job, "images": count, "eval_s": round(eval_s, 2), "generate_s": round(generate_s, 2),
            "peak_rss_mb": round(peak, 1), "rss_before_mb": round(baseline, 1), "values": values} | extra()


def run_worker(job: str, count: int, seed: int, batch_size: int) -> dict:
    command = [sys.executable, __file__, "--worker", job, "--count", str(count), "--seed", str(seed),
               "--batch-size", str(batch_size)]
    proc = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    if proc.returncode != 0:
        return {"job": job, "images": count, "error": proc.stderr.strip().splitlines()[-1:] or ["failed"],
                "returncode": proc.returncode}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=("full", "compare", "all"), default="all")
    parser.add_argument("--full-count", type=int, default=2418)
    parser.add_argument("--compare-count", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--out", type=Path, default=REPO / "results" / "bench_metrics.json")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.count, args.seed, args.batch_size)))
        return
    report: dict = {"machine": {"cpus": __import__("os").cpu_count(), "python": platform.python_version(),
                                "platform": platform.platform()}}
    if args.part in ("full", "all"):
        report["full"] = run_worker("ours", args.full_count, args.seed, args.batch_size)
        print(json.dumps(report["full"], indent=1), flush=True)
    if args.part in ("compare", "all"):
        jobs = ("ours", "torchmetrics_auroc", "torchmetrics_ap", "anomalib_aupro")
        results = {job: run_worker(job, args.compare_count, args.seed, args.batch_size) for job in jobs}
        ours = results["ours"]
        for job in jobs[1:]:
            other = results[job]
            if "error" not in other and "error" not in ours:
                other["time_ratio_vs_ours"] = round(other["eval_s"] / ours["eval_s"], 1)
                other["peak_rss_ratio_vs_ours"] = round(other["peak_rss_mb"] / ours["peak_rss_mb"], 1)
                grown, ours_grown = (other["peak_rss_mb"] - other["rss_before_mb"],
                                     ours["peak_rss_mb"] - ours["rss_before_mb"])
                other["rss_growth_ratio_vs_ours"] = round(grown / max(ours_grown, 1.0), 1)
        report["compare"] = results
        print(json.dumps(results, indent=1), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(args.out.read_text()) if args.out.is_file() else {}
    args.out.write_text(json.dumps(previous | report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
