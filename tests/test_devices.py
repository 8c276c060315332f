"""The CLIP methods keep every tensor on the model's device, checked without a GPU.

A CPU test cannot see a CPU tensor meeting a CUDA one. Two stand-ins do:

- ``FakeTensorMode`` (torch's tracing tensors) gives tensors on a *fake* CUDA device with real device
  rules: an op mixing fake-CUDA and CPU tensors raises, as on a GPU. It cannot read values, so it
  covers the forward passes (the methods are built on the CPU, then moved).
- Building the prompt learner reads token ids and the text mask; there the CLIP model sits on the
  ``meta`` device and a hook on its token embedding checks that the ids arrive on the table's device
  (on a GPU they did not: AnomalyCLIP and ours crashed on an H200).
"""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch

from scrapbench.core.registry import create_method
from scrapbench.methods.common.clip_backbone import preprocess_images
from scrapbench.methods.common.clip_weights import load_clip
from scrapbench.methods.common.prompt_learner import PromptLearner, _TextTower

fake_tensor = pytest.importorskip("torch._subclasses.fake_tensor")  # private torch API: skip if it moves

CLASSES = ("motor", "cable", "spray_can")


@contextlib.contextmanager
def fake_cuda():
    """Inside: tensors created or moved to "cuda" are fake CUDA tensors (no GPU needed). Build models
    before entering: parameters made inside are fake too and cannot be moved."""
    overwrite = torch.__future__.get_overwrite_module_params_on_conversion()
    # Fake parameters cannot be swapped in place when a module is moved twice (shared submodules).
    torch.__future__.set_overwrite_module_params_on_conversion(True)
    try:
        with fake_tensor.FakeTensorMode(allow_non_fake_inputs=True) as mode:
            yield mode
    finally:
        torch.__future__.set_overwrite_module_params_on_conversion(overwrite)


def _images() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (40, 52, 3), dtype=np.uint8), rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)]


def _on_cuda(*tensors: torch.Tensor) -> bool:
    return all(t.device.type == "cuda" for t in tensors)


def test_fake_cuda_catches_a_cpu_tensor_meeting_a_cuda_one():
    with fake_cuda(), pytest.raises(Exception, match="device"):
        torch.nn.functional.embedding(torch.tensor([1, 2]), torch.randn(10, 4).to("cuda"))  # the H200 crash


@pytest.mark.parametrize("resize", ["pil", "antialias", "pil_like"])
def test_preprocessing_ends_on_the_device(resize):
    with fake_cuda():
        assert _on_cuda(preprocess_images(_images(), 64, "cuda", resize=resize))


def test_prompt_learner_sends_token_ids_to_the_models_device(monkeypatch):
    clip = load_clip("scrapbench-vit-tiny", None, 64, init_seed=0)
    causal = _TextTower(clip.model).is_causal()  # read on the CPU: meta tensors hold no values
    monkeypatch.setattr(_TextTower, "is_causal", lambda self: causal)
    model = clip.model.to("meta")
    seen = []

    def same_device(module, args):
        seen.append(args[0].device)
        assert args[0].device == module.weight.device, f"token ids on {args[0].device}, table on {module.weight.device}"

    model.token_embedding.register_forward_pre_hook(same_device)
    learner = PromptLearner(model, clip.tokenizer, ("object", "damaged object"), context_length=4, deep_depth=2,
                            deep_length=2)
    features = learner.to("meta")()
    other = learner.encode_with_context(("object which is not steel",), learner.context[:1])
    assert features.device.type == other.device.type == "meta" and seen == [torch.device("meta")] * 2


def test_anomalyclip_runs_on_the_device():
    method = create_method("anomalyclip", CLASSES, "smoke")
    with fake_cuda():
        method.to_device("cuda")
        patches, cls = method._encode(_images())
        masks = torch.zeros(2, 64, 64, device="cuda")
        pixel_loss, image_loss = method._losses(patches, cls, masks)
        with torch.inference_mode():
            layers, scores = method._infer(_images())
        assert _on_cuda(patches, cls, pixel_loss, image_loss, layers, scores)


def test_ours_runs_on_the_device():
    method = create_method("ours", CLASSES, "smoke")
    model = method._build()
    texts = model.test_texts("averaged_prompt", "object which is not steel")  # tokenises: reads values
    with fake_cuda():
        # What to_device does, each module once (fake parameters cannot be moved twice; the encoder
        # belongs to both the CLIP model and ours').
        method._clip.model.to("cuda")
        model.prompts.to("cuda")
        model.msm.to("cuda")
        method.device = "cuda"
        pixels = preprocess_images(_images(), 64, "cuda")
        maps = model(pixels)
        loss = method._loss(maps, torch.zeros(2, 64, 64, dtype=torch.long, device="cuda"),
                            torch.ones(len(CLASSES) + 1, device="cuda"))
        binary, per_class = model.anomaly_maps(pixels, msm_map_weight=0.5, texts=tuple(t.to("cuda") for t in texts))
        assert _on_cuda(loss, binary, per_class, *maps[0], *maps[1])


@pytest.mark.parametrize("name", ["winclip", "winclip_plus"])
def test_winclip_runs_on_the_device(name):
    method = create_method(name, CLASSES, "smoke")
    method._text = method._text_embeddings()  # tokenises: reads values
    with fake_cuda():
        method.to_device("cuda")
        if name == "winclip_plus":
            method._memory = method._encode(_images())  # fit draws references by value: fill the memory directly
        maps = method.grid_maps(_images())
        assert _on_cuda(*maps.values()) and set(maps) >= {"zero_shot", "image_score"}
