"""Expected wall time of the paper's full grid (10 methods × 3 seeds, `paper` preset) on 1, 8 and 32 GPUs.

    .venv/bin/python scripts/estimate_paper_grid.py measure   # per-method costs → results/paper_grid_costs.json
    .venv/bin/python scripts/estimate_paper_grid.py estimate [--tflops 25 200] [--gpus 1 8 32] [--shards 1 4]

``measure`` builds every method with its `paper` configuration (ViT-L/14@336 at 518 px, WinCLIP's ViT-B-16+ at
240, YOLO-x-seg, SAM ViT-H, Mask R-CNN R50-FPN) from random weights, on CPU, each in its own process, and times
it on a few 512 px synthetic images: ``fit`` with 1 and with 2 epochs on 4 anomalous training images (the
difference is one epoch: the per-image training cost without set-up), and ``predict`` on 2 test images. Torch's
FLOP counter runs alongside. Measurement-only settings, stated in the output: training batches of 1-2 images
(CPU memory; `ours` without loader processes, whose copies ran the 24 GB machine out of memory), no feature
cache (at the paper's 8,574 images AnomalyCLIP's cache does not fit either).

``estimate`` extrapolates each run to Table 1's sizes: training images per epoch × the paper's epochs (8,574 for
the CLIP methods, which train on every image; 736 anomalous + 10 % background for the detectors) plus the
measured set-up, and 2,418 test images. GPU durations are those FLOPs at ``--tflops`` sustained, plus the set-up
time measured on CPU. The throughputs are assumptions (no GPU was measured): 25 TFLOPS is ~40 % of an H100/H200's
FP32 peak (``--precision fp32``); 200 TFLOPS is ~20 % of its dense bfloat16 peak (``--precision auto`` runs bf16
autocast there; small kernels, SAM's and YOLO's convolutions and the host-side work keep it far below the peak).
The runs are then list-scheduled (longest first) onto N GPUs; ``--shards S`` splits each run's prediction into
S tasks that start when its fit ends (``scrapbench run --shards``). The figures are printed and written to
results/paper_grid_estimate.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COSTS = REPO / "results" / "paper_grid_costs.json"
ESTIMATE = REPO / "results" / "paper_grid_estimate.json"
SEEDS = 3
TRAIN_IMAGES, TEST_IMAGES = 7838 + 736, 2418  # Table 1
DETECTOR_IMAGES = round(736 / 0.9)  # anomalous images + at most 10 % background (max_background_fraction)
MEASURED_TRAIN = 4  # anomalous training images in the measurement set

# Measured method → (registered names it stands for, settings for the measurement, trains per epoch on).
# The ablations differ from `ours` only in the MSM's pooling windows, a negligible share of the ViT-L's cost.
MEASURED = {
    "winclip": (["winclip"], {"clip_pretrained": None}, None),
    "winclip_plus": (["winclip_plus"], {"clip_pretrained": None}, None),
    "anomalyclip": (["anomalyclip"], {"clip_pretrained": None, "max_train_images": MEASURED_TRAIN,
                                      "feature_cache_mb": 0, "batch_size": 2}, TRAIN_IMAGES),
    "yolov8_sam": (["yolov8_sam"], {"yolo_weights": None, "sam_checkpoint": None, "batch_size": 2,
                                    "val_images": 1}, DETECTOR_IMAGES),
    "yolo11_sam": (["yolo11_sam"], {"yolo_weights": None, "sam_checkpoint": None, "batch_size": 2,
                                    "val_images": 1}, DETECTOR_IMAGES),
    "mask_rcnn": (["mask_rcnn"], {"weights": None, "batch_size": 2, "warmup_iters": 1}, DETECTOR_IMAGES),
    "ours": (["ours", "ours_msm_5_11", "ours_msm_7_13", "ours_no_msm"],
             {"clip_pretrained": None, "normals_per_epoch": 0, "batch_size": 1, "loader_workers": 0}, TRAIN_IMAGES),
}


# -- measure -------------------------------------------------------------------------------------

def _dataset(cache: Path):
    from scrapbench.core.presets import SYNTHETIC_PRESETS
    from scrapbench.datasets.synthetic.generator import split_by_ratio, synthetic_dataset

    config = replace(SYNTHETIC_PRESETS["paper"], name="paper-grid-probe", train_normal=10,
                     train_anomalous=split_by_ratio(MEASURED_TRAIN), test_normal=1, test_anomalous=(1, 0, 0))
    return synthetic_dataset(config, seed=0, cache_dir=cache)


def _timed(function) -> tuple[float, float]:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    start = time.perf_counter()
    with counter:
        function()
    return time.perf_counter() - start, float(counter.get_total_flops())


def measure_one(name: str, cache: Path) -> dict:
    """Fit (1 and 2 epochs) and predict one method, in this process."""
    import torch

    from scrapbench.core.method import FitContext
    from scrapbench.core.registry import build_config, create_method
    from scrapbench.run.provenance import seed_everything

    _, settings, per_epoch = MEASURED[name]
    data = _dataset(cache)
    trains = per_epoch is not None
    result: dict = {"method": name, "settings": settings, "torch_threads": torch.get_num_threads()}
    fits = {}
    for epochs in (1, 2) if trains else (1,):
        overrides = {**settings, **({"epochs": epochs} if trains else {})}
        method = create_method(name, data.class_names, "paper", overrides)
        with tempfile.TemporaryDirectory() as work:
            seed_everything(0)
            ctx = FitContext(seed=0, device="cpu", workdir=Path(work), class_names=data.class_names,
                             show_progress=False)
            fits[epochs] = _timed(lambda m=method, c=ctx: m.fit(data.train, c))
        if epochs == 1:
            images = [s.image for s in data.test]
            predict_s, predict_flops = _timed(lambda m=method, x=images: m.predict(x))
            result["predict_s_per_image"] = predict_s / len(images)
            result["predict_flops_per_image"] = predict_flops / len(images)
        result[f"fit_{epochs}_epoch_s"], result[f"fit_{epochs}_epoch_flops"] = fits[epochs]
    if trains:
        epoch_s = max(fits[2][0] - fits[1][0], 0.0)
        epoch_flops = max(fits[2][1] - fits[1][1], 0.0)
        result["train_s_per_image_epoch"] = epoch_s / MEASURED_TRAIN
        result["train_flops_per_image_epoch"] = epoch_flops / MEASURED_TRAIN
        result["setup_s"] = max(fits[1][0] - epoch_s, 0.0)
    else:
        result["setup_s"] = fits[1][0]
        result["setup_flops"] = fits[1][1]
    result["config"] = {k: v for k, v in vars(build_config(name, "paper", settings)).items()
                        if k in ("clip_model", "image_size", "epochs", "yolo_scale", "sam_model", "batch_size")}
    return result


def measure(names: list[str]) -> None:
    costs = json.loads(COSTS.read_text()) if COSTS.exists() else {"methods": {}}
    with tempfile.TemporaryDirectory(prefix="paper-grid-") as tmp:
        _dataset(Path(tmp))  # generated once, read by every method's process
        for name in names:
            start = time.perf_counter()
            proc = subprocess.run([sys.executable, __file__, "one", name, tmp], capture_output=True, text=True)
            if proc.returncode != 0:
                print(f"{name}: failed\n{proc.stderr[-3000:]}", flush=True)
                continue
            costs["methods"][name] = json.loads(proc.stdout.strip().splitlines()[-1])
            print(f"{name}: measured in {time.perf_counter() - start:.0f} s: {costs['methods'][name]}", flush=True)
            COSTS.write_text(json.dumps(costs, indent=2) + "\n")


# -- estimate ------------------------------------------------------------------------------------

def run_costs(costs: dict, tflops: float) -> list[dict]:
    """The 30 runs: fit and predict seconds on CPU (as measured) and on a GPU (FLOPs at ``tflops``)."""
    rate = tflops * 1e12
    runs = []
    for name, (registered, _, per_epoch) in MEASURED.items():
        cost = costs["methods"][name]
        epochs = cost["config"].get("epochs", 0) if per_epoch else 0
        image_epochs = (per_epoch or 0) * epochs
        cpu_fit = cost["setup_s"] + cost.get("train_s_per_image_epoch", 0.0) * image_epochs
        # Set-up (building the model, writing the detectors' training files, ...) as measured on CPU.
        gpu_fit = cost["setup_s"] + cost.get("train_flops_per_image_epoch", 0.0) * image_epochs / rate
        cpu_predict = cost["predict_s_per_image"] * TEST_IMAGES
        gpu_predict = cost["predict_flops_per_image"] * TEST_IMAGES / rate
        for method in registered:
            copied = _seed_independent(method)  # seeds after the first copy its run (scrapbench.run.seed_reuse)
            for seed in range(SEEDS):
                share = 0.0 if copied and seed > 0 else 1.0
                runs.append({"method": method, "seed": seed, "cpu_fit_s": share * cpu_fit,
                             "cpu_predict_s": share * cpu_predict, "gpu_fit_s": share * gpu_fit,
                             "gpu_predict_s": share * gpu_predict})
    return runs


def _seed_independent(method: str) -> bool:
    from scrapbench.core.registry import build_config, get_spec

    return get_spec(method).load_class().seed_independent(build_config(method, "paper"))


def makespan(runs: list[dict], gpus: int, shards: int, kind: str = "gpu") -> float:
    """List scheduling, longest task first, of each run's fit then its ``shards`` prediction parts."""
    import heapq

    free = [0.0] * gpus  # when each GPU is next free
    ready: list[tuple[float, float, int]] = []  # (-duration, ready time, run) of prediction parts
    order = sorted(range(len(runs)), key=lambda i: -(runs[i][f"{kind}_fit_s"] + runs[i][f"{kind}_predict_s"]))
    end = 0.0
    fits_done = []
    for i in order:  # fits first, longest run first: a run's parts can start only after its fit
        start = heapq.heappop(free)
        done = start + runs[i][f"{kind}_fit_s"]
        if shards == 1:  # unsharded: the run keeps its GPU for its prediction
            done += runs[i][f"{kind}_predict_s"]
            end = max(end, done)
        else:
            fits_done.append((done, i))
        heapq.heappush(free, done)
    if shards > 1:
        for done, i in sorted(fits_done):
            for _ in range(shards):
                ready.append((done, runs[i][f"{kind}_predict_s"] / shards, i))
        # Parts in order of readiness, each on the GPU that frees first (no GPU idles while a part is ready).
        for at, duration, _ in sorted(ready):
            start = max(heapq.heappop(free), at)
            heapq.heappush(free, start + duration)
            end = max(end, start + duration)
    return end


def estimate(tflops_options: list[float], gpu_counts: list[int], shard_counts: list[int],
             out: Path | None = ESTIMATE) -> dict:
    """Print and return, per assumed throughput, each run's hours and the grid's wall time on N GPUs; written to
    ``out`` (none: not written)."""
    costs = json.loads(COSTS.read_text())
    result = {"costs_measured_on": costs.get("machine"), "train_images": TRAIN_IMAGES, "test_images": TEST_IMAGES,
              "seeds": SEEDS, "scenarios": []}
    for tflops in tflops_options:
        runs = run_costs(costs, tflops)
        print(f"Per run (extrapolated to Table 1: {TRAIN_IMAGES} train / {TEST_IMAGES} test images; GPU at an "
              f"assumed {tflops:g} TFLOPS sustained):")
        print(f"{'method':<15}{'CPU fit h':>11}{'CPU pred h':>12}{'GPU fit h':>11}{'GPU pred h':>12}")
        per_run = {}
        for run in runs[::SEEDS]:
            per_run[run["method"]] = {key: round(run[key] / 3600, 3) for key in
                                      ("cpu_fit_s", "cpu_predict_s", "gpu_fit_s", "gpu_predict_s")}
            print(f"{run['method']:<15}{run['cpu_fit_s'] / 3600:>11.1f}{run['cpu_predict_s'] / 3600:>12.1f}"
                  f"{run['gpu_fit_s'] / 3600:>11.2f}{run['gpu_predict_s'] / 3600:>12.2f}")
        total = sum(r["gpu_fit_s"] + r["gpu_predict_s"] for r in runs)
        wall = {gpus: {shards: round(makespan(runs, gpus, shards) / 3600, 2) for shards in shard_counts}
                for gpus in gpu_counts}
        print(f"\n{len(runs)} runs, {total / 3600:.1f} GPU-hours in all. Wall time of the grid:")
        print(f"{'GPUs':>5}" + "".join(f"{f'--shards {s}':>14}" for s in shard_counts))
        for gpus in gpu_counts:
            print(f"{gpus:>5}" + "".join(f"{wall[gpus][s]:>13.1f}h" for s in shard_counts))
        print()
        result["scenarios"].append({
            "assumed_tflops": tflops, "runs": len(runs), "gpu_hours": round(total / 3600, 2),
            "cpu_hours_one_process": round(sum(r["cpu_fit_s"] + r["cpu_predict_s"] for r in runs) / 3600, 1),
            "per_run_hours": per_run,
            "wall_hours": {f"{gpus} GPUs": {f"shards {s}": hours for s, hours in by_shards.items()}
                           for gpus, by_shards in wall.items()}})
    if out is not None:
        out.write_text(json.dumps(result, indent=2) + "\n")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("measure")
    run.add_argument("--methods", nargs="+", default=list(MEASURED))
    one = sub.add_parser("one")
    one.add_argument("method")
    one.add_argument("cache", type=Path)
    est = sub.add_parser("estimate")
    est.add_argument("--tflops", type=float, nargs="+", default=[25.0, 200.0])
    est.add_argument("--gpus", type=int, nargs="+", default=[1, 8, 32])
    est.add_argument("--shards", type=int, nargs="+", default=[1, 4])
    args = parser.parse_args()
    if args.command == "measure":
        measure(args.methods)
    elif args.command == "one":
        print(json.dumps(measure_one(args.method, args.cache)))
    else:
        estimate(args.tflops, args.gpus, args.shards)


if __name__ == "__main__":
    main()
