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
from typing import Any, ClassVar, get_args

import numpy as np
import schedulefree
import torch
from tqdm.auto import tqdm

from scrapbench.core.method import AnomalyMethod, FitContext, LearningType
from scrapbench.core.precision import autocast, check_precision, grad_scaler, inference
from scrapbench.datasets.types import Split
from scrapbench.methods.common.checkpoints import WeightCheck
from scrapbench.methods.common.clip_backbone import InputResize, load_clip_resized, preprocess_images, resize_masks
from scrapbench.methods.common.clip_loader import ChosenBatches, ResizedSamples, batch_loader, device_batch
from scrapbench.methods.common.clip_weights import LoadedClip, clip_config_check
from scrapbench.methods.common.losses import class_balanced_weights, multiclass_segmentation_loss
from scrapbench.methods.common.map_ops import gaussian_filter, resize_each, scaled_sigma
from scrapbench.methods.ours.config import PRESETS, OursConfig
from scrapbench.methods.ours.model import BINARY_SCORINGS, SteelScrapCLIP
from scrapbench.run.provenance import seed_everything


class FineTunedCLIP(AnomalyMethod):
    """Fine-tuned CLIP encoder + multiclass prompts + multi-scale mechanism (the paper's method)."""

    Config = OursConfig
    presets: ClassVar[dict[str, dict[str, Any]]] = PRESETS
    learning_type = LearningType.SUPERVISED
    weights_field = "clip_pretrained"

    @classmethod
    def weight_checks(cls, config: OursConfig, name: str) -> list[WeightCheck]:
        return [clip_config_check(config, name)]

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
        if config.input_resize not in get_args(InputResize):
            raise ValueError(f"input_resize must be 'pil' or 'pil_like', got {config.input_resize!r}")
        if config.loader_workers < 0:
            raise ValueError(f"loader_workers must be ≥ 0, got {config.loader_workers}")
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
        self.precision = check_precision(ctx.precision)
        seed_everything(ctx.seed)
        model = self._build()
        masks = self._anomalous_masks(train)
        class_weights = self._class_weights(masks, len(train.normal_indices())).to(self.device)
        optimizer = schedulefree.AdamWScheduleFree(
            [p for p in model.parameters() if p.requires_grad], lr=cfg.lr,
            weight_decay=cfg.weight_decay, warmup_steps=cfg.warmup_steps)
        scaler = grad_scaler(self.precision, self.device)  # active for fp16 only
        rng = np.random.default_rng(ctx.seed)
        # Workers decode and resize the images (PIL) while the device trains; uint8 batches are
        # normalised on the device. The batches are this loop's own seeded choice (see clip_loader).
        samples = ResizedSamples(train, cfg.image_size, binary=False, targets=masks, resize=cfg.input_resize)
        chosen = ChosenBatches()
        loader = batch_loader(samples, chosen, cfg.loader_workers, self.device)
        log = []
        model.train()
        optimizer.train()
        for epoch in range(cfg.epochs):
            order = self._epoch_order(train, rng)
            batches = [order[i:i + cfg.batch_size] for i in range(0, len(order), cfg.batch_size)]
            chosen.set(batches)
            total = 0.0
            for batch, loaded in zip(tqdm(batches, desc=f"ours epoch {epoch + 1}/{cfg.epochs}", leave=False,
                                          disable=not ctx.show_progress), loader, strict=True):
                pixels, target = device_batch(loaded, cfg.image_size, cfg.input_resize, self.device)
                if cfg.augment:
                    pixels, target = random_dihedral(pixels, target, rng)
                with autocast(self.precision, self.device):
                    maps = model(pixels)
                loss = self._loss(maps, target, class_weights)  # float32 (the model returns float32 logits)
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"ours: loss became {loss.item()} in epoch {epoch + 1}; lower `lr`")
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                total += float(loss.detach()) * len(batch)
            log.append({"epoch": epoch + 1, "images": len(order), "mean_loss": total / max(len(order), 1)})
        del loader  # ends its worker processes
        optimizer.eval()  # schedule-free: switch the parameters to the averaged sequence for inference
        model.eval()
        ctx.workdir.mkdir(parents=True, exist_ok=True)
        (ctx.workdir / "ours_train_log.json").write_text(json.dumps(
            {"class_weights": class_weights.tolist(), "precision": self.precision, "epochs": log}, indent=2))

    def _loss(self, maps: tuple[list[torch.Tensor], list[torch.Tensor] | None], target: torch.Tensor,
              class_weights: torch.Tensor) -> torch.Tensor:
        """L_local (sum over stages) + L_MSM (stage-weighted), each term focal + dice."""
        local, msm = maps
        gamma = self.config.focal_gamma
        loss = sum(multiclass_segmentation_loss(m, target, gamma, class_weights) for m in local)
        if msm is not None:
            loss = loss + sum(w * multiclass_segmentation_loss(m, target, gamma, class_weights)
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
        cfg = self.config
        binary_out: list[np.ndarray] = []
        class_out: list[np.ndarray] = []
        with inference(self.precision, self.device):
            texts = self.model.test_texts(cfg.binary_scoring, cfg.binary_anomaly_prompt)  # once, not per batch
            for begin in range(0, len(images), cfg.predict_batch_size):
                chunk = images[begin:begin + cfg.predict_batch_size]
                pixels = preprocess_images(chunk, cfg.image_size, self.device, resize=cfg.input_resize)
                binary, per_class = self.model.anomaly_maps(pixels, cfg.binary_scoring, cfg.binary_anomaly_prompt,
                                                            cfg.msm_map_weight, texts=texts)
                maps = torch.cat([binary[:, None], per_class], dim=1).float()
                for up in self._at_image_sizes(maps, [img.shape[:2] for img in chunk]):
                    binary_out.append(up[0])
                    class_out.append(up[1:])
        return binary_out, class_out

    def _at_image_sizes(self, maps: torch.Tensor, sizes: Sequence[tuple[int, int]]) -> list[np.ndarray]:
        """B×C×g×g grid maps → per image C×H×W float32 at its size: bilinear, then the Gaussian (σ in
        input pixels, scaled to the image), on the device; images of one size go together."""
        sigma, side = self.config.gaussian_sigma, self.config.image_size
        return resize_each(maps, sizes, then=lambda up, size: gaussian_filter(up, scaled_sigma(sigma, size, side)))

    def predict(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        return self._maps(images)[0]

    def predict_classes(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        return self._maps(images)[1]

    def predict_with_classes(self, images: Sequence[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
        return self._maps(images)  # one forward for both

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
