"""Compute efficiency of the ``paper`` preset on the device at hand → results/bench_paper.json.

    .venv/bin/python scripts/bench_paper_preset.py [--device cpu|cuda] [--precision auto|fp32|bf16|fp16]
        [--only roofline anomalyclip ...] [--images 4] [--batch 2] [--max-load 1.5]

Every method runs with the paper preset's architectures and input sizes, from random weights (no
checkpoint is needed: speed does not depend on the values), on random 512×512 images (the paper's
patch size). Per method: prediction images/s, the time of one training step at the paper's batch
size, peak memory (resident memory on the CPU, allocated device memory on a GPU) and, for the CLIP
methods, the overhead ratio: end-to-end prediction time per image over the bare encoder forward of
the same architecture at the same input size and batch. ``roofline``: the FLOPs of the CLIP
ViT-L/14 forward at 518 px (``torch.utils.flop_counter.FlopCounterMode`` and an analytic count), its
achieved FLOP/s, and that as a fraction of this device's dense-matmul throughput measured in the
same process (the roofline ratio).

Each measurement runs in a subprocess of its own (its peak memory is its own, nothing carries
over) and is written to the JSON as soon as it is done, so ``--only`` re-measures some and keeps
the others. On a shared machine measure when it is idle: the script waits (up to ``--wait`` s) for
the 1-minute load average to fall below ``--max-load`` and records the load before and after.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
CLASSES = ("motor", "cable", "spray_can")
PATCH = 512  # the paper's training / test patch size
CLIP_METHODS = ("anomalyclip", "ours", "winclip", "winclip_plus")
DETECTORS = ("yolov8_sam", "yolo11_sam", "mask_rcnn")
MEASUREMENTS = ("roofline", *CLIP_METHODS, *DETECTORS)
# The encoder each CLIP method runs (architecture, input size) for its overhead ratio.
ENCODERS = {"anomalyclip": ("ViT-L-14-336-quickgelu", 518), "ours": ("ViT-L-14-336-quickgelu", 518),
            "winclip": ("ViT-B-16-plus-240", 240), "winclip_plus": ("ViT-B-16-plus-240", 240)}
# Paper configs with random weights: nothing to download or check.
RANDOM_WEIGHTS = {"anomalyclip": {"clip_pretrained": None}, "ours": {"clip_pretrained": None},
                  "winclip": {"clip_pretrained": None}, "winclip_plus": {"clip_pretrained": None},
                  "yolov8_sam": {"yolo_weights": None, "sam_checkpoint": None},
                  "yolo11_sam": {"yolo_weights": None, "sam_checkpoint": None},
                  "mask_rcnn": {"weights": None}}


# -- helpers (worker side) --------------------------------------------------------------------------
def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _timed(fn: Callable[[], Any], device: str, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return times


class _Peak:
    """Peak memory of a block: the device's allocator on CUDA, sampled resident memory on the CPU."""

    def __init__(self, device: str) -> None:
        self.device, self.mb = device, 0.0

    def __enter__(self) -> _Peak:
        from scrapbench.run.provenance import PeakMemory

        self._memory = PeakMemory(device=self.device).__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._memory.__exit__(*exc)
        cuda = self._memory.peak_cuda_mb
        self.mb = round(cuda if cuda is not None else self._memory.peak_mb, 1)


def _images(count: int, seed: int = 0, patch: int = PATCH) -> list:
    import numpy as np

    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (patch, patch, 3), dtype=np.uint8) for _ in range(count)]


def matmul_throughput(device: str, dtype_name: str, n: int | None = None) -> dict[str, Any]:
    """Dense square matmul FLOP/s (the best of several repeats): the device's practical peak.

    ``tf32``: float32 tensors with TensorFloat-32 matrix products allowed (``high`` float32 matmul
    precision), put back afterwards; ``fp32`` is full float32, torch's default."""
    import torch

    dtype = {"fp32": torch.float32, "tf32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype_name]
    n = n or (8192 if device.startswith("cuda") else 4096)
    a, b = (torch.randn(n, n, device=device).to(dtype) for _ in range(2))
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high" if dtype_name == "tf32" else "highest")
    try:
        a @ b  # warm-up (kernel choice, thread pools)
        times = _timed(lambda: a @ b, device, 10 if device.startswith("cuda") else 4)
    finally:
        torch.set_float32_matmul_precision(before)
    return {"dtype": dtype_name, "n": n, "gflops": round(2 * n**3 / min(times) / 1e9, 1),
            "gflops_median": round(2 * n**3 / statistics.median(times) / 1e9, 1)}


def bare_forwards(model_name: str, size: int, batch: int, device: str) -> dict[str, Callable[[], Any]]:
    """The bare vision forward the methods run (scrapbench's SDPA blocks, ``scrapbench``) and open_clip's
    own ``visual(pixels)`` (``open_clip``), on a random batch; call them inside ``inference(...)``."""
    import torch

    from scrapbench.methods.common.clip_backbone import layer_tokens, load_clip_resized, project_tokens

    visual = load_clip_resized(model_name, None, size, device).visual.eval()
    pixels = torch.randn(batch, 3, size, size, device=device)
    depth = len(visual.transformer.resblocks)

    def ours() -> None:
        _, final = layer_tokens(visual, pixels, (depth,))
        project_tokens(visual, final[:, 0])

    return {"scrapbench": ours, "open_clip": lambda: visual(pixels)}


def analytic_vit_flops(visual: Any, size: int, batch: int) -> dict[str, float]:
    """Multiply-adds × 2 of an open_clip ViT forward: patch embedding, per block q/k/v/out and MLP
    linears on every token, attention scores and weighted sums, the final projection of the class token."""
    width = visual.transformer.width
    layers = len(visual.transformer.resblocks)
    patch = visual.conv1.kernel_size[0]
    grid = size // patch
    tokens = grid * grid + 1
    hidden = visual.transformer.resblocks[0].mlp.c_fc.out_features
    linear = 2 * tokens * (4 * width * width + 2 * width * hidden) * layers
    attention = 2 * 2 * tokens * tokens * width * layers
    embed = 2 * grid * grid * 3 * patch * patch * width
    projection = 2 * width * (visual.proj.shape[1] if visual.proj is not None else 0)
    total = batch * (linear + attention + embed + projection)
    return {"total": total, "linear": batch * linear, "attention": batch * attention}


# -- measurements (worker side) ---------------------------------------------------------------------
def measure_roofline(device: str, precision: str, batch: int, repeats: int, model: str = "ViT-L-14-336-quickgelu",
                     size: int = 518, matmul_n: int | None = None) -> dict[str, Any]:
    """ViT-L/14 at 518 px (or ``model`` at ``size``): FLOPs (counted and analytic), achieved FLOP/s, fraction
    of matmul peak."""
    import torch

    from scrapbench.core.precision import inference
    from scrapbench.methods.common.clip_backbone import layer_tokens, load_clip_resized, project_tokens
    from scrapbench.run.cost import count_flops

    visual = load_clip_resized(model, None, size, device).visual.eval()
    pixels = torch.randn(batch, 3, size, size, device=device)
    depth = len(visual.transformer.resblocks)

    def ours() -> torch.Tensor:
        _, final = layer_tokens(visual, pixels, (depth,))
        return project_tokens(visual, final[:, 0])

    # scrapbench's count (scrapbench.run.cost.count_flops): the fast path off, attention on the math backend;
    # the other settings show what FlopCounterMode misses with torch's defaults.
    with torch.inference_mode():
        counted = {"open_clip_fastpath_on": count_flops(lambda: visual(pixels), fastpath=True, math_attention=False),
                   "open_clip_fastpath_off_flash": count_flops(lambda: visual(pixels), math_attention=False),
                   "open_clip_fastpath_off_math": count_flops(lambda: visual(pixels)),
                   "scrapbench_math": count_flops(ours, fastpath=True)}
    analytic = analytic_vit_flops(visual, size, batch)
    flops = counted["scrapbench_math"]
    # Matmul and forwards alternate, the best of each counts: on a shared machine a load that comes and
    # goes then weighs on both sides alike.
    times: dict[str, float] = {}
    matmul: dict[str, dict[str, Any]] = {}
    for _ in range(repeats):
        for name in dict.fromkeys(("fp32", precision)):  # outside autocast: each in its own dtype
            found = matmul_throughput(device, name, matmul_n)
            if name not in matmul or found["gflops"] > matmul[name]["gflops"]:
                matmul[name] = found
        with inference(precision, device):
            if not times:  # warm-up
                ours()
                visual(pixels)
            for label, fn in (("scrapbench", ours), ("open_clip", lambda: visual(pixels))):
                times[label] = min(times.get(label, float("inf")), *_timed(fn, device, 1))
    peak = matmul[precision]["gflops"] * 1e9
    return {
        "model": model, "image_size": size, "batch": batch, "precision": precision,
        "matmul": list(matmul.values()),
        "flops_per_image": {key: value / batch for key, value in counted.items()},
        "flops_analytic_per_image": {key: value / batch for key, value in analytic.items()},
        "forward_s_per_image": {key: round(value / batch, 4) for key, value in times.items()},
        "achieved_gflops": {key: round(flops / value / 1e9, 1) for key, value in times.items()},
        "roofline_ratio": {key: round(flops / value / peak, 3) for key, value in times.items()},
    }


def _method(name: str, precision: str, batch: int, preset: str = "paper"):
    """The paper configuration (or ``preset``'s) with random weights and ``batch`` images per forward at test
    time."""
    from scrapbench.core.registry import create_method

    method = create_method(name, CLASSES, preset, {**RANDOM_WEIGHTS[name], "predict_batch_size": batch})
    method.precision = precision
    return method


def _prepare_for_predict(method: Any, name: str, device: str, precision: str, patch: int = PATCH) -> dict[str, Any]:
    """Make a random-weight method ready to predict, as fit would leave it; returns notes."""
    import numpy as np

    from scrapbench.core.method import FitContext
    from scrapbench.datasets.types import Sample, Split

    if name in ("anomalyclip",):
        method.to_device(device)
        return {}
    if name == "ours":
        method.device = device
        method._build().eval()
        return {}
    if name in ("winclip", "winclip_plus"):
        k = method.config.k_shot
        samples = [Sample(image, np.zeros(image.shape[:2], np.uint8), f"n{i}")
                   for i, image in enumerate(_images(max(k, 1), seed=1, patch=patch))]
        start = time.perf_counter()
        method.fit(Split.from_samples("train", samples),
                   FitContext(0, device, Path(os.environ.get("TMPDIR", "/tmp")) / "bench_winclip", CLASSES,
                              show_progress=False, precision=precision))
        return {"fit_s": round(time.perf_counter() - start, 2), "k_shot": k}
    if name == "mask_rcnn":
        method._device, method._image_size = device, patch
        method._model = method._build(patch, None).to(device).eval()
        return {}
    if name in ("yolov8_sam", "yolo11_sam"):
        import tempfile

        from scrapbench.methods.yolo_sam.offline import import_ultralytics, third_party_output

        work = Path(tempfile.mkdtemp(prefix="bench-yolo-"))
        method._device, method._config_dir, method._log_path = device, work, work / "ultralytics.log"
        with third_party_output(method._log_path, False):
            import_ultralytics(work)
            from ultralytics import YOLO

            model = YOLO(method._yaml_name(), task="segment").model
        method._image_size = patch
        method._set_yolo(model)
        method._set_sam(seed=0)
        return {"sam_model": method.config.sam_model}
    raise KeyError(name)


def measure_method(name: str, device: str, precision: str, images: int, batch: int, repeats: int,
                   train: bool, train_batch: int | None, preset: str = "paper", patch: int = PATCH) -> dict[str, Any]:
    """Prediction images/s, peak memory, the CLIP methods' overhead ratio over their bare encoder (the
    architecture and input size of the method's config) and one training step, at ``preset``'s
    architectures (the paper's by default) on ``patch``-pixel random images."""
    method = _method(name, precision, batch, preset)
    notes = _prepare_for_predict(method, name, device, precision, patch)
    inputs = _images(images, patch=patch)
    if name in ("yolov8_sam", "yolo11_sam"):
        notes.update(_boxes_for_sam(method))
    method.predict_with_scores(inputs[:1])  # warm-up: kernels, thread pools, lazy state
    predict = lambda: method.predict_with_scores(inputs)  # noqa: E731
    with _Peak(device) as peak:  # before the bare encoder below is loaded: this is the method's own peak
        times = _timed(predict, device, 1)
    result: dict[str, Any] = {"method": name, "precision": precision, "device": device, "images": images,
                              "predict_batch_size": getattr(method.config, "predict_batch_size", None),
                              "predict_peak_mb": peak.mb, **notes}
    bare: dict[str, list[float]] = {}
    if name in ENCODERS:
        from scrapbench.core.precision import inference

        model_name, size = method.config.clip_model, method.config.image_size  # ENCODERS[name] for paper
        bare_batch = min(batch, images)
        forwards = bare_forwards(model_name, size, bare_batch, device)
        # Prediction and bare forward alternate, the best of each counts: a load that comes and goes on a
        # shared machine then weighs on both sides of the ratio alike.
        for repeat in range(repeats):
            with inference(precision, device):
                for label, fn in forwards.items():
                    if repeat == 0:
                        fn()  # warm-up
                    bare.setdefault(label, []).extend(t / bare_batch for t in _timed(fn, device, 1))
            if repeat < repeats - 1:
                times += _timed(predict, device, 1)
    else:
        times += _timed(predict, device, repeats - 1)
    per_image = min(times) / images
    result.update(predict_images_per_s=round(1 / per_image, 3), predict_s_per_image=round(per_image, 4))
    if bare:
        result["encoder"] = {"model": model_name, "image_size": size, "batch": bare_batch,
                             **{f"{label}_s_per_image": round(min(t), 4) for label, t in bare.items()}}
        result["overhead_ratio"] = round(per_image / min(bare["scrapbench"]), 3)
    if train:
        result["train_step"] = TRAIN_STEPS[name](method, device, precision, train_batch, patch) \
            if name in TRAIN_STEPS else None
    return result


def _boxes_for_sam(method: Any) -> dict[str, Any]:
    """Random YOLO weights detect nothing, and SAM then never runs: give every image at least the
    detections a trained detector might make (5 boxes), so that the time includes SAM's image
    encoder and mask decoder as in a real run."""
    import numpy as np

    detect = method._detect
    fixed = (np.array([[40, 40, 140, 120], [200, 60, 330, 160], [90, 250, 210, 400], [300, 300, 460, 430],
                       [20, 420, 120, 500]], np.float32), np.linspace(0.9, 0.5, 5, dtype=np.float32),
             np.array([1, 2, 3, 1, 2], np.int64))

    def at_least_five(images):
        return [found if len(found[0]) >= 5 else fixed for found in detect(images)]

    method._detect = at_least_five
    return {"sam_boxes_per_image": "the detections, or 5 fixed boxes when fewer"}


def _step_time(step: Callable[[], None], device: str) -> dict[str, Any]:
    step()  # warm-up (allocations, optimiser state)
    with _Peak(device) as peak:
        seconds = min(_timed(step, device, 1))
    return {"seconds": round(seconds, 3), "peak_mb": peak.mb}


def train_anomalyclip(method: Any, device: str, precision: str, cap: int | None, patch: int = PATCH) -> dict[str, Any]:
    """One step of prompt learning on cached features (the release's loop: the frozen encoder runs once
    per image, its cost is the prediction time above), at the paper's batch of 8."""
    import torch
    import torch.nn.functional as F

    c = method.config
    batch = _capped(c.batch_size, cap)
    grid = (c.image_size // method._clip.patch_size) ** 2
    dim = int(method._clip.visual.output_dim)
    patches = F.normalize(torch.randn(batch, len(c.feature_layers), grid, dim, device=device), dim=-1)
    cls = F.normalize(torch.randn(batch, dim, device=device), dim=-1)
    masks = (torch.rand(batch, c.image_size, c.image_size, device=device) > 0.98).float()
    optimiser = torch.optim.Adam(method.learner.parameters(), lr=c.lr)
    method.learner.train()

    def step() -> None:
        pixel, image = method._losses(patches, cls, masks)
        optimiser.zero_grad()
        (c.pixel_loss_weight * pixel + c.image_loss_weight * image).backward()
        optimiser.step()

    return {"batch_size": batch, "paper_batch_size": c.batch_size, "what": "prompt step on cached encoder features",
            **_step_time(step, device)}


def train_ours(method: Any, device: str, precision: str, cap: int | None, patch: int = PATCH) -> dict[str, Any]:
    """One fine-tuning step of the whole network (encoder, prompts, MSM) at the paper's batch of 4."""
    import schedulefree
    import torch

    from scrapbench.core.precision import autocast, grad_scaler

    c = method.config
    model = method.model.train()
    batch = _capped(c.batch_size, cap)
    pixels = torch.randn(batch, 3, c.image_size, c.image_size, device=device)
    target = torch.randint(0, len(CLASSES) + 1, (batch, c.image_size, c.image_size), device=device)
    weights = torch.ones(len(CLASSES) + 1, device=device)
    optimiser = schedulefree.AdamWScheduleFree([p for p in model.parameters() if p.requires_grad], lr=c.lr)
    optimiser.train()
    scaler = grad_scaler(precision, device)

    def step() -> None:
        with autocast(precision, device):
            maps = model(pixels)
        loss = method._loss(maps, target, weights)
        optimiser.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimiser)
        scaler.update()

    return {"batch_size": batch, "paper_batch_size": c.batch_size, "what": "full fine-tuning step",
            **_step_time(step, device)}


def train_mask_rcnn(method: Any, device: str, precision: str, cap: int | None, patch: int = PATCH) -> dict[str, Any]:
    """One SGD step of torchvision's Mask R-CNN (training stays float32) at the paper's batch of 4."""
    import torch

    c = method.config
    model = method._build(patch, None).to(device).train()
    batch = _capped(c.batch_size, cap)
    images = [torch.rand(3, patch, patch, device=device) for _ in range(batch)]
    targets = []
    for i in range(batch):  # two instances, placed for 512 px and scaled to ``patch``
        x = [[round(v * patch / PATCH) for v in box] for box in ([60, 40 + i, 200, 120], [250 + i, 300, 330, 380])]
        masks = torch.zeros(2, patch, patch, dtype=torch.uint8, device=device)
        for k, (x0, y0, x1, y1) in enumerate(x):
            masks[k, y0:y1, x0:x1] = 1
        targets.append({"boxes": torch.tensor(x, dtype=torch.float32, device=device),
                        "labels": torch.tensor([1, 2], device=device), "masks": masks})
    optimiser = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=c.lr, momentum=0.9)

    def step() -> None:
        loss = sum(model(images, targets).values())
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()

    return {"batch_size": batch, "paper_batch_size": c.batch_size, "what": "SGD step (float32)",
            **_step_time(step, device)}


def train_yolo(method: Any, device: str, precision: str, cap: int | None, patch: int = PATCH) -> dict[str, Any]:
    """Forward, loss and backward of the YOLO-seg model (ultralytics' segmentation loss, float32 as
    the method trains it) on one batch of the paper's size; not ultralytics' whole trainer."""
    import torch
    from ultralytics import YOLO
    from ultralytics.cfg import get_cfg

    from scrapbench.methods.yolo_sam.offline import third_party_output

    c = method.config
    with third_party_output(method._log_path, False):  # a fresh model: prediction fused conv and batch norm
        model = YOLO(method._yaml_name(), task="segment").model.to(device).train()
    model.args = get_cfg()  # the loss reads its gains (box, cls, dfl) from here
    for p in model.parameters():
        p.requires_grad_(True)
    batch = _capped(c.batch_size, cap)
    instances = 2
    boxes = torch.tensor([[0.25, 0.25, 0.2, 0.2], [0.7, 0.6, 0.3, 0.2]], device=device).repeat(batch, 1)
    masks = torch.zeros(batch, patch // 4, patch // 4, device=device)
    at = lambda v: round(v * patch / PATCH)  # noqa: E731  (placed for 512 px, scaled to ``patch``)
    masks[:, at(26):at(38), at(26):at(38)] = 1
    masks[:, at(64):at(90), at(70):at(110)] = 2
    data = {"img": torch.rand(batch, 3, patch, patch, device=device),
            "batch_idx": torch.arange(batch, device=device).repeat_interleave(instances).float(),
            "cls": torch.tensor([[0.0], [1.0]], device=device).repeat(batch, 1), "bboxes": boxes, "masks": masks}
    optimiser = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step() -> None:
        loss, _ = model.loss(data)
        optimiser.zero_grad()
        loss.sum().backward()
        optimiser.step()

    with third_party_output(method._log_path, False):
        return {"batch_size": batch, "paper_batch_size": c.batch_size,
                "what": "forward + loss + backward + SGD (float32)", **_step_time(step, device)}


def _capped(batch: int, cap: int | None) -> int:
    return batch if cap is None else min(batch, cap)


TRAIN_STEPS = {"anomalyclip": train_anomalyclip, "ours": train_ours, "mask_rcnn": train_mask_rcnn,
               "yolov8_sam": train_yolo, "yolo11_sam": train_yolo}


def worker(args: argparse.Namespace) -> None:
    import torch

    from scrapbench.core.precision import resolve_precision

    torch.manual_seed(0)
    precision = resolve_precision(args.precision, args.device)
    repeats = args.repeats or (5 if args.device.startswith("cuda") else 2)
    if args.worker == "roofline":
        result = measure_roofline(args.device, precision, args.batch, repeats)
    else:
        result = measure_method(args.worker, args.device, precision, args.images, args.batch, repeats,
                                train=not args.no_train, train_batch=args.train_batch)
    print("RESULT " + json.dumps(result), flush=True)


# -- driver -----------------------------------------------------------------------------------------
def load_average() -> float:
    return round(os.getloadavg()[0], 2)


def wait_for_quiet(max_load: float, wait_s: float) -> float:
    deadline = time.time() + wait_s
    while load_average() >= max_load and time.time() < deadline:
        time.sleep(30)
    return load_average()


def machine(device: str) -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                            "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
                            "cpu_capability": torch.backends.cpu.get_cpu_capability()}
    with contextlib.suppress(OSError, StopIteration):
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        info["cpu_model"] = next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(data, indent=1) + "\n")
    temporary.replace(path)


def table(report: dict) -> str:
    """The README table (markdown) from a report."""
    lines = ["| method | predict img/s | predict s/img | overhead ratio | train step s (batch) | peak memory MB |",
             "|---|---:|---:|---:|---:|---:|"]
    for name in (*CLIP_METHODS, *DETECTORS):
        row = report["methods"].get(name)
        if row is None or "error" in row:
            lines.append(f"| {name} | not measured | | | | |")
            continue
        train = row.get("train_step")
        step = "—"
        if train:
            paper = train.get("paper_batch_size", train["batch_size"])
            of_paper = f" of the paper's {paper}" if train["batch_size"] != paper else ""
            step = f"{train['seconds']} ({train['batch_size']}{of_paper})"
        memory = max(row["predict_peak_mb"], train["peak_mb"] if train else 0)
        ratio = row.get("overhead_ratio", "—")
        lines.append(f"| {name} | {row['predict_images_per_s']} | {row['predict_s_per_image']} | {ratio} | {step} | "
                     f"{memory} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--only", nargs="+", choices=MEASUREMENTS, default=list(MEASUREMENTS))
    parser.add_argument("--images", type=int, default=None, help="images per timed prediction (CPU 4, GPU 32)")
    parser.add_argument("--batch", type=int, default=None, help="predict batch (CPU 2, GPU: the paper's 8)")
    parser.add_argument("--repeats", type=int, default=0, help="timed repeats, the fastest counts (CPU 2, GPU 5)")
    parser.add_argument("--no-train", action="store_true", help="skip the training steps")
    parser.add_argument("--train-batch", type=int, default=None,
                        help="cap the training batch (memory on a shared machine); the JSON records both")
    parser.add_argument("--max-load", type=float, default=1.5, help="wait until the 1-min load is below this (CPU)")
    parser.add_argument("--wait", type=float, default=1800, help="longest wait for a quiet machine, seconds")
    parser.add_argument("--out", type=Path, default=REPO / "results" / "bench_paper.json")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    gpu = args.device.startswith("cuda")
    args.images = args.images or (32 if gpu else 4)
    args.batch = args.batch or (8 if gpu else 2)
    if args.worker:
        worker(args)
        return

    from scrapbench.core.precision import resolve_precision

    precision = resolve_precision(args.precision, args.device)
    report = json.loads(args.out.read_text()) if args.out.is_file() else {}
    key = "gpu" if gpu else "cpu"
    section = report.setdefault(key, {"methods": {}})
    section.update(machine=machine(args.device), precision=precision, images=args.images, batch=args.batch)
    for name in args.only:
        load_before = wait_for_quiet(args.max_load, args.wait) if not gpu else load_average()
        command = [sys.executable, __file__, "--worker", name, "--device", args.device, "--precision", precision,
                   "--images", str(args.images), "--batch", str(args.batch), "--repeats", str(args.repeats)]
        if args.no_train:
            command.append("--no-train")
        if args.train_batch:
            command += ["--train-batch", str(args.train_batch)]
        started = time.perf_counter()
        proc = subprocess.run(command, capture_output=True, text=True, env=dict(os.environ, OMP_WAIT_POLICY="PASSIVE"))
        lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
        if proc.returncode != 0 or not lines:
            killed = f"killed by signal {-proc.returncode}" + (" (SIGKILL: out of memory?)" if proc.returncode == -9
                                                                else "") if proc.returncode < 0 else None
            result = {"error": killed or (proc.stderr or proc.stdout)[-3000:] or f"exit code {proc.returncode}"}
        else:
            result = json.loads(lines[-1][len("RESULT "):])
        result.update(load_before=load_before, load_after=load_average(),
                      wall_s=round(time.perf_counter() - started, 1),
                      measured=time.strftime("%Y-%m-%d %H:%M:%S"))
        if name == "roofline":
            section["roofline"] = result
        else:
            section["methods"][name] = result
        write_json(args.out, report)
        print(f"{name}: {json.dumps(result)[:400]}", flush=True)
    report.setdefault("gpu" if not gpu else "cpu", {"not_measured": True})
    write_json(args.out, report)
    print(table(section))


if __name__ == "__main__":
    main()
