"""Configuration of the paper's method; defaults are the paper's Sec. 4.1 settings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class OursConfig:
    """Fine-tuned CLIP + multiclass prompts + multi-scale mechanism (MSM).

    Defaults = the paper: ViT-L/14@336 (OpenAI) at input 518, layers 6/12/18/24, prompts of length
    16, depth 9, embedding length 4; schedule-free AdamW, lr 1e-6, 15 epochs, batch 4; MSM scales
    3×3 & 9×9; L_MSM weights 0.1/0.1/0.1/0.7.
    """

    clip_model: str = "ViT-L-14-336"
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
    msm_heads: int = 4
    msm_stage_weights: tuple[float, ...] = (0.1, 0.1, 0.1, 0.7)
    temperature: float = 0.07
    focal_gamma: float = 2.0
    class_balance_beta: float = 0.99999  # Cui et al.'s β over *pixel* counts per class
    epochs: int = 15
    batch_size: int = 4
    lr: float = 1e-6
    weight_decay: float = 0.0
    warmup_steps: int = 0
    normals_per_epoch: int | None = None  # None: every normal image, every epoch
    gaussian_sigma: float = 4.0  # test-time smoothing in pixels of the input resolution
    predict_batch_size: int = 8
    init_seed: int = 0  # random initialisation of a CLIP without weights (cpu / smoke presets)


# The paper's lr of 1e-6 fine-tunes *pretrained* CLIP weights. The presets that run here start from
# random weights and train for a minute, so they need a learning rate three orders larger and a few
# short epochs over all anomalous images plus an equal number of normal ones.
PRESETS: dict[str, dict[str, Any]] = {
    "smoke": {
        "clip_model": "scrapbench-vit-tiny", "clip_pretrained": None, "image_size": 64,
        "feature_layers": (1, 2, 3, 4), "prompt_length": 6, "deep_prompt_depth": 2, "deep_prompt_length": 2,
        "msm_heads": 2, "epochs": 1, "batch_size": 4, "lr": 1e-3, "normals_per_epoch": 8,
        "gaussian_sigma": 0.5, "predict_batch_size": 16,
    },
    "cpu": {
        "clip_model": "scrapbench-vit-small", "clip_pretrained": None, "image_size": 128,
        "feature_layers": (2, 4, 6, 8), "prompt_length": 8, "deep_prompt_depth": 4, "deep_prompt_length": 4,
        "epochs": 6, "batch_size": 8, "lr": 3e-3, "weight_decay": 0.01, "warmup_steps": 10,
        "normals_per_epoch": 30, "gaussian_sigma": 1.0, "predict_batch_size": 16,
    },
}
