"""The ``ours`` plugin: training loop (schedule-free AdamW), prediction, saving."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import schedulefree
import torch
import torch.nn.functional as F
from scipy import ndimage
from tqdm.auto import tqdm

from scrapbench.datasets.types import Split
from scrapbench.method import AnomalyMethod, FitContext, LearningType
from scrapbench.methods.clip_backbone import load_clip, preprocess_images
from scrapbench.methods.ours.config import PRESETS, OursConfig
from scrapbench.methods.ours.losses import class_balanced_weights, segmentation_loss
from scrapbench.methods.ours.model import SteelScrapCLIP


class FineTunedCLIP(AnomalyMethod):
    """Fine-tuned CLIP encoder + multiclass prompts + multi-scale mechanism (the paper's method)."""

    Config = OursConfig
    presets: ClassVar[dict[str, dict[str, Any]]] = PRESETS
    learning_type = LearningType.SUPERVISED
    weights_field = "clip_pretrained"

    def __init__(self, config: OursConfig, class_names: Sequence[str]) -> None:
        super().__init__(config, class_names)
        if len(config.feature_layers) != len(config.msm_stage_weights):
            raise ValueError(f"{len(config.feature_layers)} feature layers but "
                             f"{len(config.msm_stage_weights)} MSM stage weights")
        self.device = "cpu"
        self.model: SteelScrapCLIP | None = None
        self._weights_info: dict[str, Any] = {}

    # -- building -------------------------------------------------------------------------------
    def _build(self) -> SteelScrapCLIP:
        cfg = self.config
        clip = load_clip(cfg.clip_model, cfg.clip_pretrained, cfg.image_size, self.device, init_seed=cfg.init_seed)
        self._weights_info = dict(clip.weights_info)
        self.model = SteelScrapCLIP(clip, self.class_names, cfg).to(self.device)
        return self.model

    def to_device(self, device: str) -> None:
        self.device = device
        if self.model is not None:
            self.model.to(device)

    def weights_info(self) -> dict[str, Any]:
        return self._weights_info or {"random_init": not self.config.clip_pretrained,
                                      "clip_model": self.config.clip_model}

    # -- training -------------------------------------------------------------------------------
    def fit(self, train: Split, ctx: FitContext) -> None:
        cfg = self.config
        self.device = ctx.device
        torch.manual_seed(ctx.seed)
        model = self._build()
        targets = self._load_targets(train)
        counts = torch.bincount(torch.from_numpy(np.concatenate([t.ravel() for t in targets.values()])).long(),
                                minlength=len(self.class_names) + 1)
        class_weights = class_balanced_weights(counts, cfg.class_balance_beta).to(self.device)
        optimizer = schedulefree.AdamWScheduleFree(
            [p for p in model.parameters() if p.requires_grad], lr=cfg.lr,
            weight_decay=cfg.weight_decay, warmup_steps=cfg.warmup_steps)
        rng = np.random.default_rng(ctx.seed)
        anomalous, normals = train.anomalous_indices(), train.normal_indices()
        log = []
        model.train()
        optimizer.train()
        for epoch in range(cfg.epochs):
            picked = normals if cfg.normals_per_epoch is None else \
                list(rng.choice(normals, size=min(cfg.normals_per_epoch, len(normals)), replace=False))
            order = rng.permutation(np.array(anomalous + [int(i) for i in picked], dtype=np.int64))
            batches = [order[i:i + cfg.batch_size] for i in range(0, len(order), cfg.batch_size)]
            total = 0.0
            for batch in tqdm(batches, desc=f"ours epoch {epoch + 1}/{cfg.epochs}", leave=False,
                              disable=not ctx.show_progress):
                samples = [train[int(i)] for i in batch]
                pixels = preprocess_images([s.image for s in samples], cfg.image_size, self.device)
                target = torch.from_numpy(np.stack([targets[s.id] for s in samples])).long().to(self.device)
                local, msm = model(pixels)
                loss = sum(segmentation_loss(m, target, cfg.focal_gamma, class_weights) for m in local)
                if msm is not None:
                    loss = loss + sum(w * segmentation_loss(m, target, cfg.focal_gamma, class_weights)
                                      for w, m in zip(cfg.msm_stage_weights, msm, strict=True))
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"ours: loss became {loss.item()} in epoch {epoch + 1}; lower `lr`")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += float(loss.detach()) * len(batch)
            log.append({"epoch": epoch + 1, "images": len(order), "mean_loss": total / max(len(order), 1)})
        optimizer.eval()  # schedule-free: switch the parameters to the averaged sequence for inference
        model.eval()
        ctx.workdir.mkdir(parents=True, exist_ok=True)
        (ctx.workdir / "ours_train_log.json").write_text(json.dumps(log, indent=2))

    def _load_targets(self, train: Split) -> dict[str, np.ndarray]:
        """Class-index masks at the input resolution (nearest), for training images only."""
        size = self.config.image_size
        out = {}
        for index in train.anomalous_indices():
            sample = train[index]
            mask = torch.from_numpy(sample.mask)[None, None].float()
            out[sample.id] = F.interpolate(mask, size=(size, size), mode="nearest")[0, 0].byte().numpy()
        for index in train.normal_indices():
            out[train.ids[index]] = np.zeros((size, size), np.uint8)
        return out

    # -- prediction -----------------------------------------------------------------------------
    def _maps(self, images: Sequence[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
        if self.model is None:
            raise RuntimeError("ours: call fit() or load a saved model before predict()")
        binary_out: list[np.ndarray] = []
        class_out: list[np.ndarray] = []
        step = self.config.predict_batch_size
        for begin in range(0, len(images), step):
            chunk = images[begin:begin + step]
            pixels = torch.cat([preprocess_images([img], self.config.image_size, self.device) for img in chunk])
            binary, per_class = self.model.anomaly_maps(pixels)
            for img, b, c in zip(chunk, binary, per_class, strict=True):
                height, width = img.shape[:2]
                up = F.interpolate(torch.cat([b[None], c])[None], size=(height, width), mode="bilinear",
                                   align_corners=False)[0].float().cpu().numpy()
                sigma = self.config.gaussian_sigma * max(height, width) / self.config.image_size
                if sigma > 0:
                    up = np.stack([ndimage.gaussian_filter(m, sigma=sigma) for m in up])
                binary_out.append(up[0].astype(np.float32))
                class_out.append(up[1:].astype(np.float32))
        return binary_out, class_out

    def predict(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        return self._maps(images)[0]

    def predict_classes(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        return self._maps(images)[1]

    # -- state ----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        if self.model is None:
            raise RuntimeError("ours: nothing to save before fit()")
        return {"model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        model = self.model or self._build()
        model.load_state_dict(state["model"])
        model.eval()


