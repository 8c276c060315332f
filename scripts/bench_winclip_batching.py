"""WinCLIP's window embeddings: one window at a time, one image at a time, or windows × images in one batch.

    .venv/bin/python scripts/bench_winclip_batching.py [--label efficiency] [--images 8]

WinCLIP embeds every window of every image with the ViT (the class token plus the window's tokens).
Three ways to feed those short sequences to the network are timed here, per image, on random images,
with random weights, on the CPU:

- ``per_window``: each window of each image through the ViT on its own (a loop; timed on one image);
- ``per_image``: all windows of one image as one batch (``predict_batch_size`` 1);
- ``windows_x_images``: all windows of ``--images`` images as one batch (``predict_batch_size`` = images).

for the ``cpu`` preset (scrapbench-vit-small, 128 px, windows of 2 and 3 patches on a 16×16 grid)
and the paper's architecture (ViT-B-16-plus-240 at 240 px, 15×15 grid). ``--label`` names the code
measured; run it with another checkout on ``PYTHONPATH`` to time that code. Results are merged into
results/bench_winclip_batching.json under the label.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
SETTINGS = {"cpu_preset": ("cpu", {}, 128), "paper_architecture": ("paper", {"clip_pretrained": None}, 512)}


def _per_window_seconds(method, image: np.ndarray) -> float:
    """Seconds to embed every window of one image, one window per ViT forward."""
    from scrapbench.methods.common.clip_backbone import embed_patches, preprocess_images
    from scrapbench.methods.winclip.scores import window_embeddings

    visual = method._clip.visual
    with torch.inference_mode():
        pixels = preprocess_images([image], method.config.image_size, "cpu", resize="antialias")
        first = embed_patches(visual, pixels)
        start = time.perf_counter()
        for mask in method._masks:
            for window in range(mask.shape[1]):
                window_embeddings(visual, first, mask[:, window:window + 1], 1)
        return time.perf_counter() - start


def measure(setting: str, images: int) -> dict:
    from scrapbench.core.registry import create_method

    preset, overrides, side = SETTINGS[setting]
    rng = np.random.default_rng(0)
    inputs = [rng.integers(0, 256, (side, side, 3), dtype=np.uint8) for _ in range(images)]
    out = {"images": images, "image_side": side}
    for label, batch in (("per_image", 1), ("windows_x_images", images)):
        method = create_method("winclip", ("motor",), preset, {**overrides, "predict_batch_size": batch})
        method.predict(inputs[:1])  # warm-up, prompt embeddings
        start = time.perf_counter()
        method.predict(inputs)
        out[f"{label}_s_per_image"] = round((time.perf_counter() - start) / images, 4)
    out["windows_per_image"] = int(sum(mask.shape[1] for mask in method._masks))
    out["per_window_s_per_image"] = round(_per_window_seconds(method, inputs[0]), 4)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--label", default="efficiency", help="name of the code measured (e.g. a branch)")
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--out", type=Path, default=REPO / "results" / "bench_winclip_batching.json")
    args = parser.parse_args()
    import scrapbench

    report = json.loads(args.out.read_text()) if args.out.is_file() else {}
    entry = {"code": str(Path(scrapbench.__file__).parent), "torch_threads": torch.get_num_threads(),
             "load_before": round(os.getloadavg()[0], 2), "measured": time.strftime("%Y-%m-%d %H:%M:%S")}
    for setting in args.settings:
        entry[setting] = measure(setting, args.images)
        print(setting, entry[setting], flush=True)
    entry["load_after"] = round(os.getloadavg()[0], 2)
    report[args.label] = entry
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
