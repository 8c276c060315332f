"""The GPU path checked in one command: results/gpu_check.json and results/gpu_check.md.

    python scripts/gpu_check.py [--device cuda] [--budget-s 480] [--methods all] [--out results]
    python scripts/gpu_check.py --quick --device cpu --out /tmp/check     # tiny sizes: seconds a part
    scripts/gpu_check.sh                  # on an offline GPU server: installs wheelhouse/ first (README)

Six parts, each written to the JSON and the Markdown summary (atomically) as soon as it is done, so a check
cut short keeps the parts done before (part 6 runs right after part 3: it takes seconds and needs only part 2):

1. environment: device, memory, compute capability, torch / CUDA / cuDNN versions, and the dense matmul
   peak measured in this process (8192², fp32, TF32, bf16, fp16);
2. roofline: the bare paper encoder (ViT-L/14 at 518 px, batch 8) in bf16 and fp32, its FLOPs counted as
   ``bench_paper_preset.py`` counts them, achieved FLOP/s and that as a fraction of part 1's peak;
3. methods: every method at its paper architecture on random weights (``bench_paper_preset.py``'s
   measurement): prediction images/s at batch 8, one training step at the paper's batch size, peak device
   memory, in bf16 and fp32, and the CLIP methods' overhead over their bare encoder; the goals (bf16 encoder
   ≥ 40 % of the bf16 matmul peak, every CLIP method ≤ 1.3× its encoder) as pass / fail;
4. precision: the smoke grid trained and predicted in bf16 and in fp32: per method the smallest per-image
   correlation of the maps and each metric's difference;
5. determinism: the smoke grid again in the device's default precision: identical ``metrics.json`` (and
   maps), or the kernels without a deterministic implementation that ran (the report's § mark);
6. estimate: ``estimate_paper_grid.py`` with part 2's measured throughput for 1, 8 and 32 GPUs.

``--budget-s``: each part (and each method of part 3) has an expected duration (``EXPECTED_S``, estimated
for one H100); what does not fit in the time left is skipped, and the JSON and the summary say so. The
measurements of parts 2 and 3 run in subprocesses of their own (their peak memory is their own, a crash or
a timeout loses one measurement), stopped when the budget is spent.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

import bench_paper_preset as bench  # noqa: E402  (a script beside this one: the measurements and FLOP counts)

PARTS = ("environment", "roofline", "methods", "precision", "determinism", "estimate")
PRECISIONS = ("bf16", "fp32")
MATMUL_DTYPES = ("fp32", "tf32", "bf16", "fp16")
ENCODER_GOAL = 0.40  # bf16 encoder forward: at least this fraction of the bf16 matmul peak
OVERHEAD_GOAL = 1.3  # a CLIP method's prediction: at most this multiple of its bare encoder's forward
METRICS = ("auroc", "aupro", "ap", "f1max", "image_auroc", "image_ap")

# Expected seconds on one H100 (80 GB), the driver of --budget-s. Worked out from bench_paper_preset.py's
# structure and known figures (bf16 dense ~800 TFLOP/s, fp32 ~50; ViT-L/14@518 = 1.01 TFLOP an image):
# - environment: CUDA initialisation (~3 s) and 4 × 11 products of 8192² (1.1 TFLOP each; fp32 ~25 ms).
# - roofline: one subprocess (torch import ~5 s), per precision a random ViT-L built on the CPU and moved
#   (~5 s), 4 counted forwards and 3 timed repeats of batch 8 (fp32: ~0.2 s a forward).
# - methods: one subprocess per method (~5 s start, ~8 s with ultralytics), per precision the model(s) built
#   from random weights (ViT-L ~5 s and its bare encoder again for the ratio; SAM ViT-H ~10 s), 16 images
#   × 3 repeats (SAM ViT-H at 1024 px ~3 TFLOP an image: ~1 s per pass in fp32) and one training step.
# - precision: the smoke grid of the 7 methods twice (bf16, fp32): tiny models, ultralytics' trainer start-up
#   per detector (~5 s), ~30 s a grid; determinism: one grid more (the first is part 4's).
EXPECTED_S: dict[str, Any] = {
    "environment": 15, "roofline": 35,
    "methods": {"anomalyclip": 30, "ours": 35, "winclip": 20, "winclip_plus": 25, "yolov8_sam": 40,
                "yolo11_sam": 40, "mask_rcnn": 20},
    "precision": 70, "determinism": 40, "estimate": 5,
}
# --quick (CPU, tiny sizes): measured on a 2-core machine, with other work beside it.
EXPECTED_QUICK_S: dict[str, Any] = {
    "environment": 2, "roofline": 8,
    "methods": {"anomalyclip": 8, "ours": 8, "winclip": 8, "winclip_plus": 8, "yolov8_sam": 15,
                "yolo11_sam": 15, "mask_rcnn": 12},
    "precision": 10, "determinism": 6, "estimate": 2,
}


@dataclass(frozen=True)
class Sizes:
    """What ``--quick`` shrinks: the paper's architectures and sizes, or tiny ones."""

    preset: str  # the method configs of part 3
    patch: int  # input images of part 3
    images: int  # images per timed prediction
    batch: int  # prediction batch
    repeats: int  # timed repeats, the fastest counts
    matmul_n: int
    encoder: str  # part 2's model and input size
    encoder_size: int


FULL = Sizes("paper", bench.PATCH, 16, 8, 3, 8192, "ViT-L-14-336-quickgelu", 518)
QUICK = Sizes("smoke", 64, 2, 2, 1, 256, "scrapbench-vit-tiny", 64)


# -- the report: JSON and Markdown, rewritten after every part --------------------------------------
class Report:
    def __init__(self, out: Path, device: str, quick: bool, budget_s: float, methods: list[str]) -> None:
        self.json_path, self.md_path = out / "gpu_check.json", out / "gpu_check.md"
        self.start = time.monotonic()
        self.budget_s = budget_s
        self.expected = EXPECTED_QUICK_S if quick else EXPECTED_S
        self.data: dict[str, Any] = {
            "check": {"device": device, "quick": quick, "budget_s": budget_s, "methods": methods,
                      "sizes": asdict(QUICK if quick else FULL), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                      "expected_s_h100": EXPECTED_S, "expected_s": self.expected},
            "parts": {}}

    def left(self) -> float:
        return self.budget_s - (time.monotonic() - self.start)

    def expected_s(self, part: str, methods: list[str]) -> float:
        value = self.expected[part]
        return sum(value.get(m, 30) for m in methods) if isinstance(value, dict) else value

    def cap(self, expected: float) -> float:
        """A measurement's time limit: three times its expected time (a hang does not eat the whole budget), within
        what is left."""
        return min(self.left(), max(3 * expected, 60))

    def fits(self, seconds: float) -> bool:
        return seconds <= self.left()

    def skip_note(self, seconds: float) -> str:
        return f"expected {seconds:.0f} s, {max(self.left(), 0):.0f} s of --budget-s {self.budget_s:g} left"

    def put(self, part: str, result: dict[str, Any]) -> None:
        from scrapbench.storage.atomic import atomic_write_json, atomic_write_text

        self.data["parts"][part] = result
        self.data["parts"] = {name: self.data["parts"][name] for name in PARTS if name in self.data["parts"]}
        self.data["goals"] = goals(self.data["parts"])
        self.data["check"]["elapsed_s"] = round(time.monotonic() - self.start, 1)
        atomic_write_json(self.json_path, self.data)
        atomic_write_text(self.md_path, summary(self.data))


# -- part 1: environment ----------------------------------------------------------------------------
def environment(device: str, sizes: Sizes) -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {"machine": bench.machine(device), "torch": torch.__version__,
                            "cuda": torch.version.cuda, "python": sys.version.split()[0]}
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(torch.device(device))
        info.update(device_name=props.name, memory_gib=round(props.total_memory / 2**30, 1),
                    compute_capability=f"{props.major}.{props.minor}", multiprocessors=props.multi_processor_count,
                    cudnn=torch.backends.cudnn.version())
    else:
        info.update(device_name=info["machine"].get("cpu_model", "cpu"), cudnn=None)
    info["matmul"] = {dtype: bench.matmul_throughput(device, dtype, sizes.matmul_n) for dtype in MATMUL_DTYPES}
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return info


# -- parts 2 and 3: measurements in subprocesses -----------------------------------------------------
def measure_one(what: str, device: str, precision: str, quick: bool) -> dict[str, Any]:
    """``roofline`` or a method in one precision; an exception (out of memory, say) becomes the result's error."""
    import torch

    sizes = QUICK if quick else FULL
    torch.manual_seed(0)
    try:
        if what == "roofline":
            return bench.measure_roofline(device, precision, sizes.batch, sizes.repeats, sizes.encoder,
                                          sizes.encoder_size, sizes.matmul_n)
        return bench.measure_method(what, device, precision, sizes.images, sizes.batch, sizes.repeats, train=True,
                                    train_batch=None, preset=sizes.preset, patch=sizes.patch)
    except Exception as exc:
        return {"precision": precision, "error": f"{type(exc).__name__}: {exc}"[-2000:]}
    finally:
        if device.startswith("cuda"):  # the next measurement's peak memory is its own
            gc.collect()
            torch.cuda.empty_cache()


def worker(args: argparse.Namespace) -> None:
    """The subprocess side of :func:`measure`: each precision's result printed as a ``RESULT`` line when done."""
    for precision in args.precisions:
        print("RESULT " + json.dumps(measure_one(args.worker, args.device, precision, args.quick)), flush=True)


def measure(what: str, device: str, quick: bool, timeout_s: float, isolate: bool = True) -> dict[str, Any]:
    """``what`` (``roofline`` or a method) in bf16 and fp32, in a subprocess stopped after ``timeout_s``.

    ``isolate`` false: in this process instead (``--quick``'s default: a subprocess's start, importing torch,
    open_clip and anomalib again, takes longer than a tiny measurement; its own peak memory and time limit matter
    at real sizes)."""
    if not isolate:
        started = time.perf_counter()
        results = {p: measure_one(what, device, p, quick) for p in PRECISIONS}
        status = "partial" if any("error" in r for r in results.values()) else "done"
        return {"status": status, "seconds": round(time.perf_counter() - started, 1), "by_precision": results,
                "in_process": True}
    command = [sys.executable, __file__, "--worker", what, "--device", device, "--precisions", *PRECISIONS]
    if quick:
        command.append("--quick")
    started = time.perf_counter()
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", PYTHONUNBUFFERED="1")
    try:
        proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=max(timeout_s, 1))
        stdout, stderr, status = proc.stdout, proc.stderr, "done" if proc.returncode == 0 else "failed"
        problem = None if proc.returncode == 0 else _exit_problem(proc.returncode, stderr)
    except subprocess.TimeoutExpired as exc:
        stdout, stderr = _text(exc.stdout), _text(exc.stderr)
        status, problem = "timeout", f"stopped at its time limit, {timeout_s:.0f} s"
    results = {}
    for line in stdout.splitlines():
        if line.startswith("RESULT "):
            found = json.loads(line[len("RESULT "):])
            results[found.get("precision", "?")] = found
    if status == "done" and any("error" in r for r in results.values()):
        status = "partial"
    out: dict[str, Any] = {"status": status, "seconds": round(time.perf_counter() - started, 1),
                           "by_precision": results}
    if problem:
        out["error"] = problem
    return out


def _text(data: bytes | str | None) -> str:
    return data.decode(errors="replace") if isinstance(data, bytes) else data or ""


def _exit_problem(code: int, stderr: str) -> str:
    if code < 0:
        return f"killed by signal {-code}" + (" (SIGKILL: out of memory?)" if code == -9 else "")
    return stderr[-2000:] or f"exit code {code}"


def roofline(device: str, quick: bool, timeout_s: float, environment_part: dict[str, Any] | None,
             isolate: bool = True) -> dict[str, Any]:
    found = measure("roofline", device, quick, timeout_s, isolate)
    peaks = (environment_part or {}).get("matmul", {})
    for precision, result in found["by_precision"].items():
        if "error" in result:
            continue
        flops = result["flops_per_image"]["scrapbench_math"] * result["batch"]
        seconds = result["forward_s_per_image"]["scrapbench"] * result["batch"]
        achieved = flops / seconds / 1e9
        peak = peaks.get(precision, {}).get("gflops") or next(
            m["gflops"] for m in result["matmul"] if m["dtype"] == precision)
        result["achieved_gflops_scrapbench"] = round(achieved, 1)
        result["peak_gflops"] = peak
        result["fraction_of_peak"] = round(achieved / peak, 3)
        if precision == "bf16":
            result["goal"] = {"fraction_of_bf16_peak_at_least": ENCODER_GOAL,
                              "pass": result["fraction_of_peak"] >= ENCODER_GOAL}
    return found


def method_goals(result: dict[str, Any]) -> None:
    """The overhead goal on each precision's result of a CLIP method."""
    for row in result["by_precision"].values():
        if "overhead_ratio" in row:
            row["goal"] = {"overhead_ratio_at_most": OVERHEAD_GOAL, "pass": row["overhead_ratio"] <= OVERHEAD_GOAL}


# -- parts 4 and 5: the smoke grid on the device -------------------------------------------------------
class SmokeGrids:
    """The smoke grid of the methods, one folder per (precision, repeat), run through scrapbench's run path."""

    def __init__(self, device: str, methods: list[str], work: Path) -> None:
        self.device, self.methods, self.work = device, methods, work
        self.done: dict[str, dict[str, Any]] = {}  # grid tag → {method: RunResult}
        self._data = None

    def data(self):
        from scrapbench.datasets import load_dataset

        if self._data is None:
            self._data = load_dataset("synthetic", preset="smoke", seed=0, cache_dir=self.work / "cache")
        return self._data

    def run(self, tag: str, precision: str) -> dict[str, Any]:
        from scrapbench.run.grid import run_benchmark
        from scrapbench.run.plan import RunOptions

        options = RunOptions(preset="smoke", device=self.device, out=self.work / tag, show_progress=False,
                             save_maps=True, precision=precision)
        results = {result.method: result for result in run_benchmark(self.data(), self.methods, [0], options)}
        self.done[tag] = results
        return results


def _maps(directory: Path) -> dict[str, Any]:
    from scrapbench.storage.npz import read_npz

    with read_npz(directory / "maps.npz") as archive:
        return {key: archive[key].astype("float64") for key in archive}


def _metrics(directory: Path) -> dict[str, Any]:
    return json.loads((directory / "metrics.json").read_text())


def compare_precision(fp32: Any, bf16: Any) -> dict[str, Any]:
    """Smallest per-image map correlation and each metric's difference (percentage points) of two runs."""
    import numpy as np

    if fp32.status not in ("done", "skipped") or bf16.status not in ("done", "skipped"):
        return {"error": fp32.error or bf16.error}
    a, b = _maps(fp32.directory), _maps(bf16.directory)
    correlations = []
    for key in sorted(a):
        x, y = a[key].ravel(), b[key].ravel()
        if x.std() > 0 and y.std() > 0:
            correlations.append(float(np.corrcoef(x, y)[0, 1]))
    m32, m16 = _metrics(fp32.directory), _metrics(bf16.directory)
    delta = {k: round(100 * (m16[k] - m32[k]), 3) for k in METRICS
             if isinstance(m32.get(k), (int, float)) and isinstance(m16.get(k), (int, float))}
    return {"map_correlation_min": round(min(correlations), 6) if correlations else None,
            "images_compared": len(correlations), "images": len(a),
            "metric_delta_pp": delta, "max_abs_delta_pp": max((abs(v) for v in delta.values()), default=None)}


def compare_repeat(first: Any, second: Any) -> dict[str, Any]:
    """Identical metrics.json (and maps) twice, or the kernels without a deterministic variant that ran."""
    if first.status not in ("done", "skipped") or second.status not in ("done", "skipped"):
        return {"error": first.error or second.error}
    ops = set()
    for run in (first, second):
        record = json.loads((run.directory / "run.json").read_text())
        ops.update((record.get("determinism") or {}).get("nondeterministic_ops") or [])
    return {"identical_metrics": (first.directory / "metrics.json").read_bytes()
            == (second.directory / "metrics.json").read_bytes(),
            "identical_maps": (first.directory / "maps.npz").read_bytes()
            == (second.directory / "maps.npz").read_bytes(),
            "nondeterministic_ops": sorted(ops), "mark": "§" if ops else ""}


# -- part 6: the paper grid from the measured throughput ---------------------------------------------
def paper_estimate(roofline_part: dict[str, Any] | None) -> dict[str, Any]:
    import estimate_paper_grid

    rates = {p: r["achieved_gflops_scrapbench"] / 1e3 for p, r in
             ((roofline_part or {}).get("by_precision") or {}).items() if "achieved_gflops_scrapbench" in r}
    if not rates:
        return {"status": "skipped", "reason": "part 2 measured no throughput"}
    if not estimate_paper_grid.COSTS.is_file():
        return {"status": "skipped", "reason": f"{estimate_paper_grid.COSTS} is missing (estimate_paper_grid.py "
                                               "measure writes it)"}
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        found = estimate_paper_grid.estimate(list(rates.values()), [1, 8, 32], [1, 4], out=None)
    for scenario, precision in zip(found["scenarios"], rates, strict=True):
        scenario["precision"] = precision
        scenario["measured_as"] = "the bare ViT-L/14@518 forward's achieved FLOP/s (part 2)"
    return {"status": "done", **found, "printed": printed.getvalue()}


def goals(parts: dict[str, Any]) -> dict[str, Any]:
    """The efficiency goals, pass / fail, from parts 2 and 3 (absent: not measured)."""
    found: dict[str, Any] = {}
    bf16 = ((parts.get("roofline") or {}).get("by_precision") or {}).get("bf16") or {}
    if "goal" in bf16:
        found[f"bf16 encoder >= {ENCODER_GOAL:.0%} of the bf16 matmul peak"] = bf16["goal"]["pass"]
    for name, method in ((parts.get("methods") or {}).get("by_method") or {}).items():
        for precision, row in (method.get("by_precision") or {}).items():
            if "goal" in row:
                found[f"{name} {precision} <= {OVERHEAD_GOAL}x its bare encoder"] = row["goal"]["pass"]
    return found


# -- the Markdown summary ---------------------------------------------------------------------------
def _cell(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "pass" if value else "**fail**"
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return [*lines, ""]


def summary(data: dict[str, Any]) -> str:
    check, parts = data["check"], data["parts"]
    lines = ["# GPU check", "",
             f"Device `{check['device']}`{' (--quick: tiny sizes)' if check['quick'] else ''}, budget "
             f"{check['budget_s']:g} s, {check.get('elapsed_s', 0):g} s used; started {check['started']}.", ""]
    rows = []
    for name in PARTS:
        part = parts.get(name)
        expected = check["expected_s"][name]
        expected = sum(expected.values()) if isinstance(expected, dict) else expected
        rows.append([name, part["status"] if part else "not reached", part.get("seconds") if part else None,
                     expected, (part or {}).get("reason") or (part or {}).get("error")])
    lines += _table(["part", "status", "seconds", "expected s", "note"], rows)
    if data.get("goals"):
        lines += _table(["goal", "result"], [[goal, passed] for goal, passed in data["goals"].items()])
    env = parts.get("environment")
    if env and env["status"] == "done":
        gpu = f", {env['memory_gib']} GiB, compute capability {env['compute_capability']}, " \
              f"{env['multiprocessors']} multiprocessors" if env.get("compute_capability") else " (CPU)"
        lines += ["## 1. Environment", "",
                  f"{_cell(env.get('device_name'))}{gpu}; torch {env['torch']}, CUDA {_cell(env['cuda'])}, "
                  f"cuDNN {_cell(env.get('cudnn'))}, Python {env['python']}.", ""]
        lines += _table(["matmul", "n", "TFLOP/s (best)", "TFLOP/s (median)"],
                        [[k, m["n"], m["gflops"] / 1e3, m["gflops_median"] / 1e3] for k, m in env["matmul"].items()])
    roof = parts.get("roofline")
    if roof and roof.get("by_precision"):
        lines += ["## 2. Roofline of the bare encoder", ""]
        rows = []
        for precision, r in roof["by_precision"].items():
            if "error" in r:
                rows.append([precision, None, None, None, None, None, r["error"]])
                continue
            rows.append([precision, f"{r['model']} @ {r['image_size']}, batch {r['batch']}",
                         r["flops_per_image"]["scrapbench_math"] / 1e12, r["forward_s_per_image"]["scrapbench"],
                         r["achieved_gflops_scrapbench"] / 1e3, r["fraction_of_peak"],
                         (r.get("goal") or {}).get("pass")])
        lines += _table(["precision", "encoder", "TFLOP/image", "s/image", "TFLOP/s", "fraction of matmul peak",
                         f"goal ≥ {ENCODER_GOAL:.0%}"], rows)
    methods = parts.get("methods")
    if methods and methods.get("by_method"):
        lines += [f"## 3. Methods at the {check['sizes']['preset']} preset's architectures (random weights)", ""]
        rows = []
        for name, m in methods["by_method"].items():
            if not m.get("by_precision"):
                rows.append([name, None, None, None, None, None, None, m.get("reason") or m.get("error")])
            for precision, r in m.get("by_precision", {}).items():
                if "error" in r:
                    rows.append([name, precision, None, None, None, None, None, r["error"]])
                    continue
                train = r.get("train_step") or {}
                step = f"{train['seconds']} ({train['batch_size']})" if train else None
                rows.append([name, precision, r["predict_images_per_s"], step,
                             max(r["predict_peak_mb"], train.get("peak_mb", 0)), r.get("overhead_ratio"),
                             (r.get("goal") or {}).get("pass"), None])
        lines += _table(["method", "precision", "predict img/s", "train step s (batch)", "peak MB",
                         "overhead ratio", f"goal ≤ {OVERHEAD_GOAL}×", "note"], rows)
    precision = parts.get("precision")
    if precision and precision.get("by_method"):
        lines += ["## 4. Precision: smoke grid, bf16 against fp32", ""]
        rows = [[name, r.get("map_correlation_min"), r.get("max_abs_delta_pp"),
                 ", ".join(f"{k} {v:+.2f}" for k, v in (r.get("metric_delta_pp") or {}).items()) or r.get("error")]
                for name, r in precision["by_method"].items()]
        lines += _table(["method", "map correlation (min)", "max |Δ| pp", "Δ pp (bf16 − fp32)"], rows)
    det = parts.get("determinism")
    if det and det.get("by_method"):
        lines += [f"## 5. Determinism: smoke grid twice ({det.get('precision')})", ""]
        rows = [[name, r.get("identical_metrics"), r.get("identical_maps"),
                 ", ".join(r.get("nondeterministic_ops") or []) or r.get("error"), r.get("mark")]
                for name, r in det["by_method"].items()]
        lines += _table(["method", "identical metrics.json", "identical maps", "nondeterministic kernels", "mark"],
                        rows)
    est = parts.get("estimate")
    if est and est.get("scenarios"):
        lines += ["## 6. Paper grid from the measured throughput", ""]
        rows = []
        for s in est["scenarios"]:
            for gpus, by_shards in s["wall_hours"].items():
                rows.append([s["precision"], s["assumed_tflops"], s["gpu_hours"], gpus.removesuffix(" GPUs"),
                             *by_shards.values()])
        lines += ["Every method's FLOPs (counted on the CPU, `results/paper_grid_costs.json`) at the bare encoder's "
                  "achieved FLOP/s of part 2; SAM's and YOLO's convolutions and host-side work likely run slower.",
                  ""]
        shards = next(iter(est["scenarios"][0]["wall_hours"].values()))
        lines += _table(["precision", "TFLOP/s", "GPU-hours", "GPUs", *[f"wall h, {k}" for k in shards]], rows)
    return "\n".join(lines)


# -- the check ---------------------------------------------------------------------------------------
def run_check(args: argparse.Namespace) -> dict[str, Any]:
    from scrapbench.core.precision import resolve_precision
    from scrapbench.core.registry import resolve_method_names

    try:
        methods = resolve_method_names(args.methods)
    except KeyError as exc:
        print(f"gpu_check: --methods: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        sys.exit(2)
    report = Report(args.out, args.device, args.quick, args.budget_s, methods)
    sizes = QUICK if args.quick else FULL

    def part(name: str, expected: float, body, needs: float | None = None) -> dict[str, Any] | None:
        """Run ``body`` as part ``name`` if ``needs`` seconds (default: all it is expected to take) are left."""
        if not report.fits(expected if needs is None else needs):
            report.put(name, {"status": "skipped", "reason": report.skip_note(expected), "expected_s": expected})
            print(f"{name}: skipped ({report.skip_note(expected)})", flush=True)
            return None
        print(f"{name}: running (expected {expected:.0f} s) ...", flush=True)
        started = time.perf_counter()
        try:
            result = body()
        except Exception as exc:  # the check goes on with the next part
            result = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"[-2000:]}
        result = {"status": "done", **result, "seconds": round(time.perf_counter() - started, 1),
                  "expected_s": expected}
        report.put(name, result)
        print(f"{name}: {result['status']} in {result['seconds']} s", flush=True)
        return result

    env = part("environment", report.expected_s("environment", methods), lambda: environment(args.device, sizes))
    roof = part("roofline", report.expected_s("roofline", methods),
                lambda: roofline(args.device, args.quick, report.cap(report.expected_s("roofline", methods)), env,
                                 args.isolate))

    def all_methods() -> dict[str, Any]:
        by_method: dict[str, Any] = {}
        result = {"status": "done", "by_method": by_method}
        for name in methods:
            expected = report.expected_s("methods", [name])
            if name not in bench.RANDOM_WEIGHTS:
                by_method[name] = {"status": "skipped", "reason": "bench_paper_preset.py does not measure it"}
                continue
            if not report.fits(expected):
                by_method[name] = {"status": "skipped", "reason": report.skip_note(expected)}
                result["status"] = "partial"
                continue
            by_method[name] = found = measure(name, args.device, args.quick, report.cap(expected), args.isolate)
            method_goals(found)
            if found["status"] != "done":
                result["status"] = "partial"
            report.put("methods", {**result, "status": "running"})
            print(f"  {name}: {found['status']} in {found['seconds']} s", flush=True)
        return result

    part("methods", report.expected_s("methods", methods), all_methods,  # each method skipped on its own
         needs=min(report.expected_s("methods", [name]) for name in methods))
    # Part 6 needs only part 2 and takes seconds: before the grids, whose runs cannot be stopped half-way.
    part("estimate", report.expected_s("estimate", methods), lambda: paper_estimate(roof))
    grids = SmokeGrids(args.device, methods, Path(args.work))

    def precision_part() -> dict[str, Any]:
        runs = {p: grids.run(f"smoke-{p}", p) for p in ("fp32", "bf16")}
        return {"by_method": {m: compare_precision(runs["fp32"][m], runs["bf16"][m]) for m in methods}}

    part("precision", report.expected_s("precision", methods), precision_part)
    default = resolve_precision("auto", args.device)

    def determinism_part() -> dict[str, Any]:
        first = grids.done.get(f"smoke-{default}") or grids.run(f"smoke-{default}", default)
        second = grids.run(f"smoke-{default}-again", default)
        return {"precision": default, "by_method": {m: compare_repeat(first[m], second[m]) for m in methods}}

    expected = report.expected_s("determinism", methods) * (1 if f"smoke-{default}" in grids.done else 2)
    part("determinism", expected, determinism_part)
    return report.data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="cuda, cuda:1, … (the first CUDA device by default), cpu")
    parser.add_argument("--budget-s", type=float, default=480, help="total seconds; parts that do not fit are skipped")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (seconds a part), e.g. with --device cpu")
    parser.add_argument("--methods", nargs="+", default=["all"], help="names, comma lists or `all` (Table 2)")
    parser.add_argument("--out", type=Path, default=REPO / "results", help="folder of gpu_check.json / .md")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder of the smoke grids (default: temp)")
    parser.add_argument("--isolate", action=argparse.BooleanOptionalAction, default=None,
                        help="each measurement of parts 2 and 3 in a process of its own (default: yes, except --quick)")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--precisions", nargs="+", default=list(PRECISIONS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    args.isolate = not args.quick if args.isolate is None else args.isolate
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"gpu_check: --device {args.device}, but torch {torch.__version__} sees no CUDA device "
              "(use --quick --device cpu for the CPU check)", file=sys.stderr)
        sys.exit(2)
    if not math.isfinite(args.budget_s) or args.budget_s <= 0:
        print(f"gpu_check: --budget-s must be a positive number of seconds, got {args.budget_s:g}", file=sys.stderr)
        sys.exit(2)
    with contextlib.ExitStack() as stack:
        if args.work is None:
            args.work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="gpu-check-")))
        data = run_check(args)
    print(f"wrote {args.out / 'gpu_check.json'} and {args.out / 'gpu_check.md'} "
          f"({data['check']['elapsed_s']:g} s)")


if __name__ == "__main__":
    main()
