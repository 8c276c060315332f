"""Mask R-CNN (torchvision, ResNet-50 FPN) fine-tuned on the anomaly classes (paper Sec. 4.2).

Training targets are the instances of each anomalous patch (connected components per class, see
``instances.py``) plus a seeded subsample of normal patches as background images (empty
targets). At test time the anomaly map is, per pixel, the highest ``score × soft mask`` over the
detections (``instances.detections_to_anomaly_map``); torchvision pastes each instance's mask
probabilities into the image, so the map is graded, not binary.

Weights: ``paper`` starts from torchvision's COCO checkpoint (``weights="coco"``: looked up in the
torch hub cache, never downloaded) with the box and mask predictors replaced for K + 1 classes and
frozen batch norm, as torchvision fine-tunes (with ``eps`` 0, as torchvision's builder sets it for
these weights). The checkpoint is read weights-only and loaded strictly; a file under torchvision's
name must match the SHA-256 prefix that name carries. ``cpu`` / ``smoke`` start from random init
(trainable batch norm) with a partly frozen backbone and fewer sampled proposals, so that a few
dozen steps fit the CPU budget; ``weights_info`` marks those rows as random-init.
"""

from __future__ import annotations

import contextlib
import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, get_args

import numpy as np
import torch
from torch import nn
from torchvision.models.detection import MaskRCNN as TorchvisionMaskRCNN
from torchvision.models.detection._utils import overwrite_eps
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNN_ResNet50_FPN_Weights, MaskRCNNHeads, MaskRCNNPredictor
from torchvision.ops.misc import FrozenBatchNorm2d
from tqdm.auto import tqdm

from scrapbench.core.method import AnomalyMethod, FitContext, LearningType, WeightsError
from scrapbench.core.precision import autocast, check_precision
from scrapbench.datasets.types import Split
from scrapbench.methods.common.checkpoints import (
    WeightCheck,
    checkpoint_format,
    read_state_dict,
    require_state_dict_fits,
)
from scrapbench.methods.common.checksums import checksum_from_url, checksum_verdict, file_digest
from scrapbench.methods.common.instances import (
    detections_to_anomaly_map,
    detections_to_class_maps,
    mask_to_instances,
    training_indices,
)

COCO_WEIGHTS = MaskRCNN_ResNet50_FPN_Weights.COCO_V1
COCO_CHECKSUM = checksum_from_url(COCO_WEIGHTS.url)  # SHA-256 prefix in torchvision's file name
_COCO_CLASSES = 91  # torchvision's COCO head size (background + 90 category ids)
Optimizer = Literal["sgd", "adamw"]  # SGD with momentum 0.9, or AdamW


@dataclass(frozen=True)
class MaskRCNNConfig:
    """Defaults: the paper's model (R50-FPN, fine-tuned from COCO) with torchvision's recipe."""

    # "coco": torchvision's COCO checkpoint from the torch hub cache; a path to a checkpoint of the
    # same architecture (COCO head or ours); None: random init.
    weights: str | None = "coco"
    trainable_backbone_layers: int = 3  # of the ResNet's 5 stages, counted from the top
    box_head_size: int = 1024  # torchvision's two-layer box head width
    mask_head_channels: int = 256  # torchvision's four-conv mask head width
    image_size: int | None = None  # resize so the short side is this (long side capped too); None: patch size
    epochs: int = 20
    batch_size: int = 4
    optimizer: Optimizer = "sgd"  # "sgd" (momentum 0.9) or "adamw"
    lr: float = 0.005  # torchvision's reference 0.02 at batch 16, scaled to batch 4
    weight_decay: float = 1e-4
    warmup_iters: int = 500  # linear warm-up, then cosine decay to 0
    grad_clip_norm: float | None = None
    hflip: bool = True  # random horizontal flips
    rpn_proposals_train: int = 2000  # kept after RPN NMS while training
    rois_per_image: int = 512  # sampled for the box/mask heads while training
    rpn_proposals_test: int = 1000  # kept after RPN NMS at test time
    max_background_fraction: float = 0.1  # normal patches as ≤ this share of the training images
    min_instance_area: int = 9  # pixels; smaller components are not training targets
    score_threshold: float = 0.01  # low: weak detections still rank pixels for AP / AUROC
    max_detections: int = 100
    predict_batch_size: int = 8  # images per detector forward at test time


_SMALL = {"weights": None, "trainable_backbone_layers": 0, "box_head_size": 256, "mask_head_channels": 64,
          "optimizer": "adamw", "lr": 1e-3, "weight_decay": 1e-4, "grad_clip_norm": 10.0,
          "rpn_proposals_train": 300, "rois_per_image": 64, "rpn_proposals_test": 100, "max_detections": 20}


class MaskRCNN(AnomalyMethod):
    """Mask R-CNN R50-FPN; anomaly map = per-pixel max of score × soft instance mask."""

    Config = MaskRCNNConfig
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "smoke": {**_SMALL, "epochs": 1, "batch_size": 4, "warmup_iters": 2, "score_threshold": 0.0},
        "cpu": {**_SMALL, "epochs": 3, "batch_size": 4, "warmup_iters": 10},
    }
    learning_type = LearningType.SUPERVISED
    weights_field = "weights"  # what `scrapbench run --weights FILE` sets

    def __init__(self, config: MaskRCNNConfig, class_names: Sequence[str]) -> None:
        super().__init__(config, class_names)
        if config.optimizer not in get_args(Optimizer):
            raise ValueError(f"optimizer must be 'sgd' or 'adamw', got {config.optimizer!r}")
        if not 0 <= config.trainable_backbone_layers <= 5:
            raise ValueError(f"trainable_backbone_layers must be in 0..5, got {config.trainable_backbone_layers}")
        self._device = "cpu"
        self._model: TorchvisionMaskRCNN | None = None
        self._image_size: int | None = None

    # -- weights -------------------------------------------------------------------------------
    def weights_path(self) -> Path | None:
        """Where the configured checkpoint lives (``None`` for random init); it need not exist yet."""
        if self.config.weights is None:
            return None
        if self.config.weights == "coco":
            return Path(torch.hub.get_dir()) / "checkpoints" / Path(COCO_WEIGHTS.url).name
        return Path(self.config.weights).expanduser()

    def is_coco_v1(self) -> bool:
        """torchvision's COCO_V1 checkpoint: the ``coco`` tag, or a file under torchvision's name for it."""
        return self.config.weights == "coco" or (
            self.config.weights is not None and Path(self.config.weights).name == Path(COCO_WEIGHTS.url).name)

    def _read_weights(self) -> dict[str, torch.Tensor] | None:
        path = self.weights_path()
        if path is None:
            return None
        if not path.is_file():
            hint = (f"download {COCO_WEIGHTS.url} into {path.parent}" if self.config.weights == "coco"
                    else "put the checkpoint there")
            raise WeightsError(
                f"Mask R-CNN weights {path} not found: {hint}, or set `weights` to a checkpoint path; "
                f"weights=null trains from random init."
            )
        state = read_state_dict(path, "Mask R-CNN weights")  # weights-only: tensors, nothing executed
        accepted, checksum = checksum_verdict(path, COCO_CHECKSUM, binding=path.name == COCO_CHECKSUM.file_name)
        if not accepted:
            raise WeightsError(f"Mask R-CNN weights {path}: {checksum}")
        return state

    def weights_info(self) -> dict[str, Any]:
        path = self.weights_path()
        info: dict[str, Any] = {"random_init": path is None, "weights": self.config.weights,
                                "checkpoint": str(path) if path else None, "architecture": "maskrcnn_resnet50_fpn"}
        if path is not None:
            info["frozen_bn_eps"] = 0.0 if self.is_coco_v1() else FrozenBatchNorm2d(1).eps
            if path.is_file():
                info["sha256"] = file_digest(path)
        return info

    @classmethod
    def weight_checks(cls, config: MaskRCNNConfig, name: str) -> list[WeightCheck]:
        """The configured checkpoint, checked by :meth:`inspect_weights` (building a Mask R-CNN loads nothing)."""
        return [cls(config, ("class",)).inspect_weights(f"{name}.weights={config.weights}")]

    def inspect_weights(self, setting: str) -> WeightCheck:
        """A :class:`WeightCheck` of the configured checkpoint (read on the meta device: no tensor data)."""
        check = WeightCheck(f"Mask R-CNN {self.config.weights or 'random init'}", setting, "random")
        path = self.weights_path()
        if path is None:
            return check
        check.path = str(path)
        if not path.is_file():
            check.status, check.detail = "missing", "not found"
            check.where = (f"download {COCO_WEIGHTS.url} into {path.parent}" if self.config.weights == "coco"
                           else f"put the checkpoint at {path}")
            return check
        try:
            check.format = checkpoint_format(path)
            state = read_state_dict(path, "Mask R-CNN weights", "meta")
            head = state.get("roi_heads.box_predictor.cls_score.weight")
            if head is None:
                raise WeightsError(f"Mask R-CNN weights {path}: no roi_heads.box_predictor (not a Mask R-CNN)")
            with torch.device("meta"):
                expected = MaskRCNN(self.config, ("class",) * (head.shape[0] - 1))._build(64, None)
            require_state_dict_fits(expected.state_dict(), state, f"Mask R-CNN weights {path} do not fit "
                                    "maskrcnn_resnet50_fpn", ignore=_frozen_bn_counters(expected))
            eps = "frozen BN eps 0 (torchvision's COCO_V1)" if self.is_coco_v1() else "frozen BN"
            check.architecture = f"maskrcnn_resnet50_fpn, {head.shape[0]} classes, {eps}; keys and shapes match"
            check.sha256 = file_digest(path)
            accepted, check.checksum = checksum_verdict(path, COCO_CHECKSUM, path.name == COCO_CHECKSUM.file_name)
        except WeightsError as exc:
            check.status, check.detail = "invalid", str(exc)
            return check
        check.status, check.detail = ("ok", "") if accepted else ("invalid", check.checksum)
        return check

    # -- model ---------------------------------------------------------------------------------
    def _build(self, image_size: int, pretrained: dict[str, torch.Tensor] | None) -> TorchvisionMaskRCNN:
        """R50-FPN Mask R-CNN for K + 1 classes; ``pretrained`` (COCO head or ours) is loaded first."""
        cfg = self.config
        num_classes = len(self.class_names) + 1
        frozen_bn = cfg.weights is not None  # torchvision's choice: frozen statistics for pretrained weights
        backbone = resnet_fpn_backbone(backbone_name="resnet50", weights=None,
                                       norm_layer=FrozenBatchNorm2d if frozen_bn else nn.BatchNorm2d,
                                       trainable_layers=cfg.trainable_backbone_layers)
        file_head = (pretrained or {}).get("roi_heads.box_predictor.cls_score.weight")
        coco_head = file_head is not None and file_head.shape[0] == _COCO_CLASSES
        head_classes = _COCO_CLASSES if coco_head else num_classes
        pooled = backbone.out_channels * 7 * 7  # the box RoI pooler's 7×7 output
        mask_width = cfg.mask_head_channels
        model = TorchvisionMaskRCNN(
            backbone, num_classes=None, min_size=image_size, max_size=image_size,
            # The heads torchvision builds by default, with their widths as config fields.
            box_head=TwoMLPHead(pooled, cfg.box_head_size),
            box_predictor=FastRCNNPredictor(cfg.box_head_size, head_classes),
            mask_head=MaskRCNNHeads(backbone.out_channels, (mask_width,) * 4, 1),
            mask_predictor=MaskRCNNPredictor(mask_width, mask_width, head_classes),
            rpn_post_nms_top_n_train=cfg.rpn_proposals_train, rpn_post_nms_top_n_test=cfg.rpn_proposals_test,
            box_batch_size_per_image=cfg.rois_per_image,
            box_score_thresh=cfg.score_threshold, box_detections_per_img=cfg.max_detections,
        )
        if frozen_bn and self.is_coco_v1():
            overwrite_eps(model, 0.0)  # torchvision's builder does this for COCO_V1 (trained with eps 0)
        if pretrained is not None:
            require_state_dict_fits(
                model.state_dict(), pretrained,
                f"Mask R-CNN weights {self.weights_path()} do not fit maskrcnn_resnet50_fpn with {head_classes} "
                f"classes and heads of width {cfg.box_head_size}/{mask_width}", ignore=_frozen_bn_counters(model))
            model.load_state_dict(pretrained)
        if coco_head:  # new predictors for our classes, as torchvision's fine-tuning tutorial does
            model.roi_heads.box_predictor = FastRCNNPredictor(
                model.roi_heads.box_predictor.cls_score.in_features, num_classes)
            model.roi_heads.mask_predictor = MaskRCNNPredictor(mask_width, mask_width, num_classes)
        return model

    # -- fit -----------------------------------------------------------------------------------
    def fit(self, train: Split, ctx: FitContext) -> None:
        cfg = self.config
        pretrained = self._read_weights()  # fail before any work if a checkpoint is missing
        random.seed(ctx.seed)
        np.random.seed(ctx.seed % 2**32)
        torch.manual_seed(ctx.seed)
        anomalous, background = training_indices(train, cfg.max_background_fraction, ctx.seed,
                                                 cfg.min_instance_area)
        indices = anomalous + background
        self._image_size = cfg.image_size or max(train[indices[0]].image.shape[:2])
        self._device = ctx.device
        self.precision = check_precision(ctx.precision)  # prediction only: training stays float32
        model = self._build(self._image_size, pretrained).to(ctx.device)
        params = [p for p in model.parameters() if p.requires_grad]
        if cfg.optimizer == "sgd":
            optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)
        else:
            optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        steps_per_epoch = math.ceil(len(indices) / cfg.batch_size)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, _warmup_cosine(cfg.warmup_iters, cfg.epochs * steps_per_epoch))
        generator = torch.Generator().manual_seed(ctx.seed)

        model.train()
        progress = tqdm(total=cfg.epochs * steps_per_epoch, desc="mask_rcnn fit", unit="step",
                        disable=not ctx.show_progress)
        for _ in range(cfg.epochs):
            order = torch.randperm(len(indices), generator=generator).tolist()
            for begin in range(0, len(order), cfg.batch_size):
                chunk = order[begin:begin + cfg.batch_size]
                batch = [self._training_pair(train, indices[i], generator) for i in chunk]
                images = [image.to(ctx.device) for image, _ in batch]
                targets = [{k: v.to(ctx.device) for k, v in target.items()} for _, target in batch]
                losses = model(images, targets)
                loss = sum(losses.values())
                if not torch.isfinite(loss):
                    parts = {k: round(v.item(), 4) for k, v in losses.items()}
                    raise FloatingPointError(f"mask_rcnn: loss became {loss.item()} {parts}; "
                                             "lower `lr` or set `grad_clip_norm`")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.grad_clip_norm:
                    torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip_norm)
                optimizer.step()
                scheduler.step()
                progress.update(1)
                progress.set_postfix(loss=f"{loss.item():.3f}")
        progress.close()
        self._model = model.eval()

    def _training_pair(self, split: Split, index: int, generator: torch.Generator):
        """One image tensor (3×H×W in [0, 1]) and its torchvision target, flipped at random."""
        sample = split[index]
        instances = mask_to_instances(sample.mask, self.config.min_instance_area)
        height, width = sample.mask.shape
        image = _to_tensor(sample.image)
        boxes = torch.tensor([inst.box for inst in instances], dtype=torch.float32).reshape(-1, 4)
        masks = torch.from_numpy(np.stack([inst.mask for inst in instances]).astype(np.uint8)) \
            if instances else torch.zeros((0, height, width), dtype=torch.uint8)
        labels = torch.tensor([inst.class_index for inst in instances], dtype=torch.int64)
        if self.config.hflip and torch.rand((), generator=generator) < 0.5:
            image, masks = image.flip(-1), masks.flip(-1)
            boxes = torch.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], dim=1)
        return image, {"boxes": boxes, "labels": labels, "masks": masks}

    # -- predict -------------------------------------------------------------------------------
    @torch.inference_mode()
    def _detections(self, images: Sequence[np.ndarray]) -> list[dict[str, np.ndarray]]:
        """Per image: scores, labels and soft masks; the network runs in ``self.precision``, batch by batch."""
        if self._model is None:
            raise RuntimeError("MaskRCNN: call fit() (or load a fitted method) before predict()")
        out = []
        for start in range(0, len(images), self.config.predict_batch_size):
            # uint8 crosses to the device, which converts it (torchvision's detectors normalise themselves).
            tensors = [_to_tensor(img, self._device) for img in images[start:start + self.config.predict_batch_size]]
            with _backbone_in(self._model, self.precision, self._device):
                outputs = self._model(tensors)
            out += [{"scores": o["scores"].float().cpu().numpy(), "labels": o["labels"].cpu().numpy(),
                     "masks": o["masks"][:, 0].float().cpu().numpy()} for o in outputs]
        return out

    def predict(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        return [detections_to_anomaly_map(det["scores"], det["masks"], img.shape[:2])
                for img, det in zip(images, self._detections(images), strict=True)]

    def predict_classes(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        return self.predict_with_classes(images)[1]

    def predict_with_classes(self, images: Sequence[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
        detections = self._detections(images)
        return ([detections_to_anomaly_map(det["scores"], det["masks"], img.shape[:2])
                 for img, det in zip(images, detections, strict=True)],
                [detections_to_class_maps(det["scores"], det["masks"], det["labels"], len(self.class_names),
                                          img.shape[:2]) for img, det in zip(images, detections, strict=True)])

    # -- state ---------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        if self._model is None:
            raise RuntimeError("MaskRCNN: nothing to save before fit()")
        return {"model": self._model.state_dict(), "image_size": self._image_size}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._image_size = int(state["image_size"])
        model = self._build(self._image_size, None)
        model.load_state_dict(state["model"])
        self._model = model.to(self._device).eval()

    def to_device(self, device: str) -> None:
        self._device = device
        if self._model is not None:
            self._model.to(device)


class _AutocastBackbone(nn.Module):
    """A detector's backbone run in a 16-bit precision, its feature maps returned in float32."""

    def __init__(self, backbone: nn.Module, precision: str, device: str) -> None:
        super().__init__()
        self.inner, self.precision, self.device = backbone, precision, device
        self.out_channels = backbone.out_channels

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        with autocast(self.precision, self.device):
            features = self.inner(images)
        return {name: feature.float() for name, feature in features.items()}


@contextlib.contextmanager
def _backbone_in(model: TorchvisionMaskRCNN, precision: str, device: str) -> Iterator[None]:
    """Only the ResNet-FPN backbone (most of the FLOPs) in ``precision``; the RPN and the box and mask
    heads stay float32. Under autocast as a whole, box coordinates rounded to bfloat16 (a 2-pixel
    step at 256-512 px) flipped NMS decisions: smoke-preset maps correlated 0.38 with float32's."""
    if precision == "fp32":
        yield
        return
    backbone = model.backbone
    model.backbone = _AutocastBackbone(backbone, precision, device)
    try:
        yield
    finally:
        model.backbone = backbone


def _frozen_bn_counters(model: nn.Module) -> set[str]:
    """``num_batches_tracked`` keys that FrozenBatchNorm2d accepts and drops on loading (torchvision's rule)."""
    return {f"{name}.num_batches_tracked" for name, m in model.named_modules() if isinstance(m, FrozenBatchNorm2d)}


def _to_tensor(image: np.ndarray, device: str | torch.device = "cpu") -> torch.Tensor:
    """uint8 H×W×3 → float 3×H×W in [0, 1] on ``device`` (torchvision's detection models normalise
    themselves); the uint8 image crosses to the device, which converts it."""
    return torch.from_numpy(np.ascontiguousarray(image)).to(device).permute(2, 0, 1).float().div(255.0)


def _warmup_cosine(warmup: int, total: int):
    """Learning-rate factor: linear warm-up over ``warmup`` steps, then cosine decay to 0 at ``total``."""

    def factor(step: int) -> float:
        if warmup > 0 and step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    return factor
