"""The network of the paper (Fig. 2): a fine-tuned CLIP image encoder, multiclass learnable text
prompts, per-stage patch-text similarity maps, and an MSM block per stage.

Choice: no V-V attention path. AnomalyCLIP adds it because its encoder is frozen and the ordinary
q·k attention of CLIP is not local enough; here the encoder itself is fine-tuned for the task, and
the paper describes patch tokens taken straight from the four stages.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from scrapbench.methods.clip_backbone import LoadedClip, layer_tokens, project_tokens
from scrapbench.methods.ours.config import OursConfig
from scrapbench.methods.ours.msm import MultiScaleMechanism
from scrapbench.methods.prompt_learner import PromptLearner, class_prompt_texts


class SteelScrapCLIP(nn.Module):
    """Outputs, per stage, logits over (normal, class 1..K) on the patch grid: local and MSM."""

    def __init__(self, clip: LoadedClip, class_names: Sequence[str], config: OursConfig) -> None:
        super().__init__()
        self.config = config
        self.visual = clip.visual  # trained: the encoder is fine-tuned, not frozen
        texts = class_prompt_texts(class_names, config.normal_prompt, config.anomaly_prompt_template)
        self.prompts = PromptLearner(clip.model, clip.tokenizer, texts, context_length=config.prompt_length,
                                     deep_depth=config.deep_prompt_depth, deep_length=config.deep_prompt_length)
        dim = int(self.visual.proj.shape[1]) if self.visual.proj is not None else int(self.visual.conv1.out_channels)
        num_outputs = len(texts)
        self.msm = nn.ModuleList(
            MultiScaleMechanism(dim, num_outputs, config.msm_scales, config.msm_heads, stride=config.msm_stride)
            for _ in config.feature_layers
        ) if config.use_msm else None

    def stage_features(self, pixels: torch.Tensor) -> list[torch.Tensor]:
        """Normalised patch features in the joint space, one B×D×g×g grid per stage."""
        tokens, _ = layer_tokens(self.visual, pixels, self.config.feature_layers)
        grids = []
        for stage in tokens:
            patches = F.normalize(project_tokens(self.visual, stage[:, 1:]), dim=-1)
            side = round(patches.shape[1] ** 0.5)
            grids.append(patches.transpose(1, 2).reshape(patches.shape[0], -1, side, side))
        return grids

    def forward(self, pixels: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor] | None]:
        """Local logits and MSM logits (or None), each a list over stages of B×(K+1)×g×g."""
        text = self.prompts()
        grids = self.stage_features(pixels)
        local = [torch.einsum("bdhw,cd->bchw", grid, text) / self.config.temperature for grid in grids]
        if self.msm is None:
            return local, None
        msm = [block(grid, text, self.config.temperature) for block, grid in zip(self.msm, grids, strict=True)]
        return local, msm

    @torch.no_grad()
    def anomaly_maps(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Binary anomaly map B×g×g and per-class maps B×K×g×g (probabilities).

        Per class: each stage's softmax over (normal, classes) on the local similarities, averaged
        over stages, plus the MSM maps combined over stages with the L_MSM stage weights. Binary,
        as the paper tests: the anomaly classes' outputs averaged, i.e. (1 − p(normal)) / K.
        (Averaging the three anomaly prompts' text features into one prompt instead scored worse
        here: it mixes directions trained to be told apart.)
        """
        local, msm = self(pixels)
        per_class = sum(logits.softmax(1)[:, 1:] for logits in local) / len(local)
        if msm is not None:
            weights = torch.tensor(self.config.msm_stage_weights, device=pixels.device)
            weights = weights / weights.sum()
            per_class = per_class + sum(w * logits.softmax(1)[:, 1:] for w, logits in zip(weights, msm, strict=True))
        return per_class.mean(1), per_class
