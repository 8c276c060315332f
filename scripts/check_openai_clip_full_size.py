"""Full-size check of the OpenAI CLIP route on fabricated weights (nothing is downloaded).

    .venv/bin/python scripts/check_openai_clip_full_size.py --device cuda          # ViT-L/14@336, as the paper
    .venv/bin/python scripts/check_openai_clip_full_size.py --model ViT-B-32 --device cpu   # smaller, for a CPU

Random weights in the shapes of ``--model`` are written as OpenAI publishes them (a traced TorchScript
archive in fp16, ``tests/official_formats.py``); then scrapbench's ``load_clip`` (which reads the archive
as data) and open_clip's ``load_openai_model`` (which runs it through ``torch.jit.load``) load it, and
their image and text features are compared on ``--device``. Also timed: the weights-only read of the
archive, its SHA-256, and a forward pass at the paper's 518 px input. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import open_clip
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from official_formats import write_openai_torchscript  # noqa: E402

from scrapbench.methods.common.checkpoints import read_torchscript_state_dict  # noqa: E402
from scrapbench.methods.common.checksums import file_digest  # noqa: E402
from scrapbench.methods.common.clip_weights import load_clip  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ViT-L-14-336", help="open_clip name with an `openai` tag")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--size", type=int, default=518, help="input size of the timed forward pass")
    args = parser.parse_args()
    result: dict = {"model": args.model, "device": args.device, "torch": torch.__version__}
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        source = open_clip.create_model(f"{args.model}-quickgelu", pretrained=None)
        archive = Path(tmp) / "openai.pt"
        start = time.perf_counter()
        write_openai_torchscript(archive, source.eval())
        result["archive_mb"] = round(archive.stat().st_size / 2**20, 1)
        result["write_s"] = round(time.perf_counter() - start, 1)
        del source

        start = time.perf_counter()
        state = read_torchscript_state_dict(archive)
        result["read_s"] = round(time.perf_counter() - start, 2)
        result["tensors"] = len(state)
        start = time.perf_counter()
        file_digest(archive)
        result["sha256_s"] = round(time.perf_counter() - start, 2)

        native = open_clip.get_model_config(args.model)["vision_cfg"]["image_size"]
        start = time.perf_counter()
        ours = load_clip(args.model, str(archive), native, device=args.device)
        result["load_clip_s"] = round(time.perf_counter() - start, 1)
        result["weights_info"] = {k: ours.weights_info[k] for k in ("clip_architecture", "quick_gelu",
                                                                     "quick_gelu_source", "weights_format")}
        reference = open_clip.load_openai_model(str(archive), device=args.device, precision="fp32")
        result["same_module_types"] = [type(m) for m in ours.model.modules()] == [type(m) for m in reference.modules()]

        generator = torch.Generator().manual_seed(0)
        images = torch.randn(4, 3, native, native, generator=generator).to(args.device)
        text = open_clip.get_tokenizer(args.model)(["a photo of scrap steel", "a motor", "a cable"]).to(args.device)
        with torch.no_grad():
            pairs = [(ours.model.encode_image(images), reference.encode_image(images)),
                     (ours.model.encode_text(text), reference.encode_text(text))]
        result["max_abs_diff"] = {name: float((a - b).abs().max())
                                  for name, (a, b) in zip(("image", "text"), pairs, strict=True)}
        result["bitwise_equal"] = all(torch.equal(a, b) for a, b in pairs)
        del reference, ours

        start = time.perf_counter()
        large = load_clip(args.model, str(archive), args.size, device=args.device)
        with torch.no_grad():
            features = large.model.encode_image(torch.randn(1, 3, args.size, args.size, device=args.device))
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        result[f"load_and_forward_{args.size}px_s"] = round(time.perf_counter() - start, 1)
        result["features_finite"] = bool(torch.isfinite(features).all())
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
