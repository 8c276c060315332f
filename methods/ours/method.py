"""The ``ours`` plugin: training loop (schedule-free AdamW), prediction, saving.

Training (Sec. 4.1): every step encodes the prompts, runs the fine-tuned encoder and the MSM blocks,
and minimises L_local + L_MSM, where L_local sums focal + dice over the four stages' local maps and
L_MSM weights the stages' MSM maps by ``msm_stage_weights`` (0.1/0.1/0.1/0.7). Maps are up-sampled
from the patch grid to the input resolution to meet the class-index masks. The paper's settings are
AnomalyCLIP's (input 518, layers 6/12/18/24, its prompt-learner parameter names), so the input
pipeline is AnomalyCLIP's too: PIL bicubic resize, position embeddings interpolated bilinearly,
masks resized bilinearly and kept above 0.5 (per class).
Schedule-free AdamW keeps two parameter sequences: ``optimizer.train()`` before the steps and
``optimizer.eval()`` after them put the averaged weights in place, which is what is predicted with
and saved.
"""

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
from scrapbench.methods.clip_backbone import LoadedClip, load_clip_resized, preprocess_images, resize_masks
from scrapbench.methods.ours.config import PRESETS, OursConfig
from scrapbench.methods.ours.losses import class_balanced_weights, segmentation_loss
from scrapbench.methods.ours.model import BINARY_SCORINGS, SteelScrapCLIP
from scrapbench.seeding import seed_everything


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
        if config.binary_scoring not in BINARY_SCORINGS:
            raise ValueError(f"binary_scoring must be one of {BINARY_SCORINGS}, got {config.binary_scoring!r}")
        if config.class_balance_counts not in ("images", "pixels"):
            raise ValueError(f"class_balance_counts must be 'images' or 'pixels', got {config.class_balance_counts!r}")
        if not 0.0 <= config.msm_map_weight <= 1.0:
            raise ValueError(f"msm_map_weight must be in [0, 1], got {config.msm_map_weight}")
        self.device = "cpu"
        self.model: SteelScrapCLIP | None = None
        self._clip: LoadedClip | None = None
        self._weights_info: dict[str, Any] = {}

    # -- building -------------------------------------------------------------------------------
    def _build(self) -> SteelScrapCLIP:
        cfg = self.config
        clip = load_clip_resized(cfg.clip_model, cfg.clip_pretrained, cfg.image_size, self.device,
                                 init_seed=cfg.init_seed)
        self._clip = clip  # its frozen text tower is used by the prompts but is not a submodule
        self._weights_info = dict(clip.weights_info)
        self.model = SteelScrapCLIP(clip, self.class_names, cfg).to(self.device)
        return self.model

    def to_device(self, device: str) -> None:
        self.device = device
        if self.model is not None:
            self._clip.model.to(device)
            self.model.to(device)

    def weights_info(self) -> dict[str, Any]:
        return self._weights_info or {"random_init": not self.config.clip_pretrained,
                                      "clip_model": self.config.clip_model}

    # -- training -------------------------------------------------------------------------------
    def fit(self, train: Split, ctx: FitContext) -> None:
        cfg = self.config
        self.device = ctx.device
        seed_everything(ctx.seed)
        model = self._build()
        masks = self._anomalous_masks(train)
        class_weights = self._class_weights(masks, len(train.normal_indices())).to(self.device)
        optimizer = schedulefree.AdamWScheduleFree(
            [p for p in model.parameters() if p.requires_grad], lr=cfg.lr,
            weight_decay=cfg.weight_decay, warmup_steps=cfg.warmup_steps)
        rng = np.random.default_rng(ctx.seed)
        empty = np.zeros((cfg.image_size, cfg.image_size), np.uint8)
        log = []
        model.train()
        optimizer.train()
        for epoch in range(cfg.epochs):
            order = self._epoch_order(train, rng)
            batches = [order[i:i + cfg.batch_size] for i in range(0, len(order), cfg.batch_size)]
            total = 0.0
            for batch in tqdm(batches, desc=f"ours epoch {epoch + 1}/{cfg.epochs}", leave=False,
                              disable=not ctx.show_progress):
                samples = [train[int(i)] for i in batch]
                pixels = preprocess_images([s.image for s in samples], cfg.image_size, self.device, resize="pil")
                target = torch.from_numpy(np.stack([masks.get(s.id, empty) for s in samples])).long()
                if cfg.augment:
                    pixels, target = random_dihedral(pixels, target.to(self.device), rng)
                loss = self._loss(model(pixels), target.to(self.device), class_weights)
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
        (ctx.workdir / "ours_train_log.json").write_text(
            json.dumps({"class_weights": class_weights.tolist(), "epochs": log}, indent=2))

    def _loss(self, maps: tuple[list[torch.Tensor], list[torch.Tensor] | None], target: torch.Tensor,
              class_weights: torch.Tensor) -> torch.Tensor:
        """L_local (sum over stages) + L_MSM (stage-weighted), each term focal + dice."""
        local, msm = maps
        gamma = self.config.focal_gamma
        loss = sum(segmentation_loss(m, target, gamma, class_weights) for m in local)
        if msm is not None:
            loss = loss + sum(w * segmentation_loss(m, target, gamma, class_weights)
                              for w, m in zip(self.config.msm_stage_weights, msm, strict=True))
        return loss

    def _epoch_order(self, train: Split, rng: np.random.Generator) -> np.ndarray:
        """Every anomalous image plus all (or ``normals_per_epoch`` random) normal ones, shuffled."""
        normals = train.normal_indices()
        if self.config.normals_per_epoch is not None:
            count = min(self.config.normals_per_epoch, len(normals))
            normals = [int(i) for i in rng.choice(normals, size=count, replace=False)] if count else []
        return rng.permutation(np.array(train.anomalous_indices() + normals, dtype=np.int64))

    def _anomalous_masks(self, train: Split) -> dict[str, np.ndarray]:
        """Class-index masks at the input resolution of the anomalous train images only (bilinear per
        class, kept above 0.5: AnomalyCLIP's mask resize)."""
        out = {}
        for index in train.anomalous_indices():
            sample = train[index]
            out[sample.id] = resize_masks([sample.mask], self.config.image_size)[0].to(torch.uint8).numpy()
        return out

    def _class_weights(self, masks: dict[str, np.ndarray], num_normal_images: int) -> torch.Tensor:
        """Class-balanced weights from the train split at the input resolution (docs/fidelity.md).

        ``class_balance_counts`` "images": the normal class counts the images without anomalies, an
        anomaly class the images showing it; "pixels": pixel counts per class.
        """
        num_classes = len(self.class_names) + 1
        counts = torch.zeros(num_classes, dtype=torch.float64)
        if self.config.class_balance_counts == "images":
            for mask in masks.values():
                counts += (torch.bincount(torch.from_numpy(mask.ravel()).long(), minlength=num_classes) > 0).double()
            counts[0] = float(num_normal_images)
        else:
            for mask in masks.values():
                counts += torch.bincount(torch.from_numpy(mask.ravel()).long(), minlength=num_classes).double()
            counts[0] += float(num_normal_images) * self.config.image_size ** 2
        return class_balanced_weights(counts, self.config.class_balance_beta)

    # -- prediction -----------------------------------------------------------------------------
    def _maps(self, images: Sequence[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
        if self.model is None:
            raise RuntimeError("ours: call fit() or load a saved model before predict()")
        binary_out: list[np.ndarray] = []
        class_out: list[np.ndarray] = []
        step = self.config.predict_batch_size
        for begin in range(0, len(images), step):
            chunk = images[begin:begin + step]
            pixels = preprocess_images(chunk, self.config.image_size, self.device, resize="pil")
            binary, per_class = self.model.anomaly_maps(pixels, self.config.binary_scoring,
                                                        self.config.binary_anomaly_prompt, self.config.msm_map_weight)
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
        """Encoder, prompts and MSM weights (the frozen text tower comes from ``clip_pretrained``)."""
        if self.model is None:
            raise RuntimeError("ours: nothing to save before fit()")
        return {"model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        model = self.model or self._build()
        model.load_state_dict(state["model"])
        model.eval()


def random_dihedral(
    pixels: torch.Tensor, target: torch.Tensor, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Turn each image B×3×S×S and its mask B×S×S by the same random 90° multiple, maybe mirrored.

    Top-down crane views have no canonical orientation, so all eight are plausible scrap piles.
    """
    images, masks = [], []
    for image, mask in zip(pixels, target, strict=True):
        turns, mirror = int(rng.integers(4)), bool(rng.integers(2))
        image, mask = torch.rot90(image, turns, (1, 2)), torch.rot90(mask, turns, (0, 1))
        if mirror:
            image, mask = image.flip(2), mask.flip(1)
        images.append(image)
        masks.append(mask)
    return torch.stack(images), torch.stack(masks)
