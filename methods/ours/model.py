"""The network of the paper (Fig. 2): a fine-tuned CLIP image encoder, multiclass learnable text
prompts, per-stage patch-text similarity maps, and an MSM block per stage.

Choice: no V-V attention path. AnomalyCLIP adds it because its encoder is frozen and the ordinary
q·k attention of CLIP is not local enough; here the encoder itself is fine-tuned for the task, and
the paper describes patch tokens taken straight from the four stages.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import get_args

import torch
import torch.nn.functional as F
from torch import nn

from scrapbench.core.precision import full_precision
from scrapbench.methods.common.clip_backbone import layer_tokens, project_tokens
from scrapbench.methods.common.clip_weights import LoadedClip
from scrapbench.methods.common.prompt_learner import PromptLearner, class_prompt_texts
from scrapbench.methods.ours.config import BinaryScoring, OursConfig
from scrapbench.methods.ours.msm import MultiScaleMechanism

BINARY_SCORINGS = get_args(BinaryScoring)


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
        """Normalised patch features in the joint space, one B×D×g×g grid per stage (float32; the
        encoder runs in whatever precision the caller's autocast sets)."""
        tokens, _ = layer_tokens(self.visual, pixels, self.config.feature_layers)
        grids = []
        for stage in tokens:
            patches = F.normalize(project_tokens(self.visual, stage[:, 1:]).float(), dim=-1)
            side = round(patches.shape[1] ** 0.5)
            grids.append(patches.transpose(1, 2).reshape(patches.shape[0], -1, side, side))
        return grids

    def similarities(self, grid: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """Patch-text logits B×C×g×g, in float32 even inside a 16-bit autocast region (cheap, and the
        1/temperature scaling would magnify 16-bit rounding)."""
        with full_precision(grid.device):
            return torch.einsum("bdhw,cd->bchw", grid.float(), text.float()) / self.config.temperature

    def forward(self, pixels: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor] | None]:
        """Local logits and MSM logits (or None), each a list over stages of B×(K+1)×g×g (float32)."""
        text = self.prompts().float()
        grids = self.stage_features(pixels)
        local = [self.similarities(grid, text) for grid in grids]
        if self.msm is None:
            return local, None
        msm = [block(grid, text, self.config.temperature).float() for block, grid in zip(self.msm, grids, strict=True)]
        return local, msm

    def test_texts(self, binary_scoring: str, anomaly_prompt: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The text features :meth:`anomaly_maps` compares with: the K + 1 prompts, and for
        ``averaged_prompt`` the binary pair (:meth:`binary_text`). Fixed after training: compute once."""
        if binary_scoring not in BINARY_SCORINGS:
            raise ValueError(f"binary_scoring must be one of {BINARY_SCORINGS}, got {binary_scoring!r}")
        text = self.prompts().float()
        return text, self.binary_text(anomaly_prompt).float() if binary_scoring == "averaged_prompt" else None

    def binary_text(self, anomaly_prompt: str) -> torch.Tensor:
        """Normalised [2, D] features for the paper's binary test: the normal prompt as trained, and
        ``anomaly_prompt`` whose learnable context is the mean of the anomaly prompts' contexts."""
        context = self.prompts.context
        binary = torch.cat([context[:1], context[1:].mean(dim=0, keepdim=True)])
        return self.prompts.encode_with_context((self.prompts.texts[0], anomaly_prompt), binary)

    @torch.no_grad()
    def anomaly_maps(
        self, pixels: torch.Tensor, binary_scoring: str = "averaged_prompt",
        anomaly_prompt: str = "object which is not steel", msm_map_weight: float = 0.0,
        texts: tuple[torch.Tensor, torch.Tensor | None] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Binary anomaly map B×g×g and per-class maps B×K×g×g (probabilities).

        Local maps: per stage a softmax over the prompts of the patch-text similarities, averaged
        over stages. MSM maps: per stage the softmax of the MSM logits, combined over stages with
        the L_MSM stage weights. Each output is ``(1 − msm_map_weight)·local + msm_map_weight·MSM``.

        Per class: the multiclass softmax's class probabilities. Binary (``binary_scoring``):
        ``"averaged_prompt"``, the paper's test, the anomaly probability of a two-way softmax of the
        normal prompt against :meth:`binary_text`; in the MSM, whose head was trained on K + 1
        prompt channels, the averaged anomaly prompt fills all K anomaly channels and P(anomaly) is
        1 − P(normal). ``"class_mean"``: the mean of the per-class maps. ``texts``: what
        :meth:`test_texts` returned for the same arguments (computed here when ``None``).
        """
        if not 0.0 <= msm_map_weight <= 1.0:
            raise ValueError(f"msm_map_weight must be in [0, 1], got {msm_map_weight}")
        text, pair = texts if texts is not None else self.test_texts(binary_scoring, anomaly_prompt)
        if binary_scoring not in BINARY_SCORINGS:
            raise ValueError(f"binary_scoring must be one of {BINARY_SCORINGS}, got {binary_scoring!r}")
        grids = self.stage_features(pixels)
        local, msm = self._probabilities(grids, text, with_msm=msm_map_weight > 0)
        per_class = self._combine(local, msm, msm_map_weight)[:, 1:]
        if binary_scoring == "class_mean":
            return per_class.mean(1), per_class
        local, _ = self._probabilities(grids, pair, with_msm=False)
        msm_binary = None
        if self.msm is not None and msm_map_weight > 0:
            replicated = torch.cat([pair[:1], pair[1:].expand(text.shape[0] - 1, -1)])
            _, msm_binary = self._probabilities(grids, replicated, with_local=False)
        normal = self._combine(local[:, 0], msm_binary[:, 0] if msm_binary is not None else None, msm_map_weight)
        return 1.0 - normal, per_class

    def _probabilities(
        self, grids: list[torch.Tensor], text: torch.Tensor, with_local: bool = True, with_msm: bool = True,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Stage-combined softmax maps B×C×g×g over the prompts ``text``: local and MSM (or None)."""
        temperature = self.config.temperature
        local = msm = None
        if with_local:
            local = sum(self.similarities(grid, text).softmax(1) for grid in grids)
            local = local / len(grids)
        if with_msm and self.msm is not None:
            weights = torch.tensor(self.config.msm_stage_weights, device=text.device)
            weights = weights / weights.sum()
            msm = sum(w * block(grid, text, temperature).float().softmax(1)
                      for w, block, grid in zip(weights, self.msm, grids, strict=True))
        return local, msm

    @staticmethod
    def _combine(local: torch.Tensor, msm: torch.Tensor | None, msm_map_weight: float) -> torch.Tensor:
        if msm is None or msm_map_weight == 0:
            return local
        return (1.0 - msm_map_weight) * local + msm_map_weight * msm
