"""Configuration of the paper's method; defaults are the paper's Sec. 4.1 settings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from scrapbench.methods.common.clip_backbone import InputResize

BinaryScoring = Literal["averaged_prompt", "class_mean"]


@dataclass(frozen=True)
class OursConfig:
    """Fine-tuned CLIP + multiclass prompts + multi-scale mechanism (MSM).

    Defaults = the paper: ViT-L/14@336 (OpenAI) at input 518, layers 6/12/18/24, prompts of length
    16, depth 9, embedding length 4; schedule-free AdamW, lr 1e-6, 15 epochs, batch 4; MSM scales
    3×3 & 9×9; L_MSM weights 0.1/0.1/0.1/0.7; at test a binary softmax of the normal prompt against
    one anomaly prompt, "object which is not steel", whose learned context is the mean of the three
    anomaly prompts' (Sec. 4.1). Fields the paper does not give (β, MSM head count, temperature,
    test-time smoothing, how local and MSM maps combine) follow Cui et al. / AnomalyCLIP or an
    ablation (docs/fidelity.md) and are marked below.
    """

    clip_model: str = "ViT-L-14-336-quickgelu"  # OpenAI trained it with QuickGELU; open_clip names that so
    clip_pretrained: str | None = "openai"
    image_size: int = 518
    feature_layers: tuple[int, ...] = (6, 12, 18, 24)
    normal_prompt: str = "object which is made of steel"
    anomaly_prompt_template: str = "object which is not steel but {}"
    prompt_length: int = 16
    deep_prompt_depth: int = 9
    deep_prompt_length: int = 4
    use_msm: bool = True
    msm_scales: tuple[int, ...] = (3, 9)
    msm_stride: int | None = None  # None: stride = window (coarser grid per scale); 1: overlapping windows
    msm_heads: int = 4  # not in the paper
    msm_stage_weights: tuple[float, ...] = (0.1, 0.1, 0.1, 0.7)
    temperature: float = 0.07  # AnomalyCLIP's; not in the paper
    # Test time (Sec. 4.1): "averaged_prompt": binary softmax of the normal prompt against
    # `binary_anomaly_prompt` with the mean of the anomaly prompts' learned contexts; "class_mean":
    # the mean of the K anomaly classes' probabilities of the multiclass softmax.
    binary_scoring: BinaryScoring = "averaged_prompt"
    binary_anomaly_prompt: str = "object which is not steel"
    # Weight of the MSM map against the local map in the test map, (1 − w)·local + w·MSM. Not in
    # the paper; chosen by the ablation in docs/fidelity.md (scripts/fidelity_ablation.py).
    msm_map_weight: float = 0.0
    focal_gamma: float = 2.0
    # Class-balanced focal loss (Cui et al. 2019): weights ∝ (1 − β)/(1 − β^n). Cui et al. count
    # samples, so n counts train *images* per class (normal: images without anomalies, Table 1's
    # 7,838; a class: images showing it). β None: (N − 1)/N with N all counted images, their rule for
    # β from the data volume. "pixels" counts pixels instead; at paper scale every class then has
    # n ≫ 1/(1 − β) and the weights come out equal (docs/fidelity.md).
    class_balance_counts: Literal["images", "pixels"] = "images"
    class_balance_beta: float | None = None
    epochs: int = 15
    batch_size: int = 4
    lr: float = 1e-6
    weight_decay: float = 0.0
    warmup_steps: int = 0
    normals_per_epoch: int | None = None  # None: every normal image, every epoch
    augment: bool = False  # random flips / 90° turns of train images and masks (not in the paper)
    gaussian_sigma: float = 4.0  # test-time smoothing in pixels of the input resolution (AnomalyCLIP's)
    predict_batch_size: int = 8  # images per encoder forward at test time
    # "pil": AnomalyCLIP's PIL bicubic resize (CPU); "pil_like": torchvision's antialiased bicubic of the
    # uint8 image on the device, within 2 grey levels of PIL, not the official pipeline (docs/fidelity.md).
    input_resize: InputResize = "pil"
    loader_workers: int = 4  # DataLoader processes decoding and resizing train images (0: this process)
    init_seed: int = 0  # random initialisation of a CLIP without weights (cpu / smoke presets)


# The paper's lr of 1e-6 fine-tunes *pretrained* CLIP weights; the small presets start from random
# weights (nothing can be downloaded here) and have a minute of CPU, so they differ from it in:
# - lr 1e-3 (three orders larger), with a short warm-up and a little weight decay;
# - each epoch: every anomalous image plus a small random draw of normal ones (anomalous images are
#   ~98 % normal pixels already), so that the cpu preset's epochs fit in a minute of CPU;
# - augment: random flips / 90° turns: from random weights the encoder overfits the few anomalous
#   images quickly without them (results/reference has the numbers with it);
# - smaller scrapbench ViTs (layers 2/4/6/8 of 8 keep the paper's quarter spacing), shorter prompts,
#   deep prompts in every layer of the small text towers (9 of 12 in the paper), and the test
#   smoothing σ scaled with the input size (4 px at 518 ≈ 1 px at 128).
PRESETS: dict[str, dict[str, Any]] = {
    "smoke": {
        "clip_model": "scrapbench-vit-tiny", "clip_pretrained": None, "image_size": 64,
        "feature_layers": (1, 2, 3, 4), "prompt_length": 6, "deep_prompt_depth": 2, "deep_prompt_length": 2,
        "msm_heads": 2, "epochs": 1, "batch_size": 4, "lr": 1e-3, "normals_per_epoch": 8, "augment": True,
        "gaussian_sigma": 0.5, "predict_batch_size": 16, "loader_workers": 0,
    },
    "cpu": {
        "clip_model": "scrapbench-vit-small", "clip_pretrained": None, "image_size": 128,
        "feature_layers": (2, 4, 6, 8), "prompt_length": 8, "deep_prompt_depth": 4, "deep_prompt_length": 4,
        "epochs": 7, "batch_size": 8, "lr": 1e-3, "weight_decay": 0.01, "warmup_steps": 10,
        "normals_per_epoch": 10, "augment": True, "gaussian_sigma": 1.0, "predict_batch_size": 16,
        "loader_workers": 0,
    },
}
