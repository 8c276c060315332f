"""AnomalyCLIP (Zhou et al., ICLR 2024) on a frozen CLIP, as the steel paper runs it.

Object-agnostic learnable prompts (normal / abnormal, initial words "object which is made of steel"
/ "object which is not steel") with deep text prompts are trained on the train split; the image
encoder stays frozen. Patch tokens of the V-V path at four layers are compared with the two text
features (cosine / temperature, softmax) → one map per layer; training minimises focal + dice per
layer (plus the release's image-level cross-entropy on the CLS embedding); the test map is the sum
of the four *real* layer maps (the release returned one layer four times), upsampled to the input
size and Gaussian-smoothed. The image-level score is the release's: the abnormal probability of
the class token (final ordinary-path CLS, projected *without* ``ln_post``) against the two text
features.

Pre- and post-processing follow the release (docs/fidelity.md lists every difference): the input is
resized with PIL bicubic, position embeddings are interpolated bilinearly from the checkpoint's grid,
training masks are resized bilinearly and kept above 0.5. Unlike the release, maps are scored at
each image's own resolution, not at the model's 518 px.

``gaussian_sigma`` is in pixels of the model input (518 in the paper: σ = 4). The small presets
scale it with the input size (64 px → 0.5, 128 px → 1.0) so that it smooths the same fraction of
the image.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, get_args

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from scrapbench.core.method import AnomalyMethod, FitContext, LearningType
from scrapbench.core.precision import autocast, check_precision, full_precision
from scrapbench.datasets.types import Split
from scrapbench.methods.common.checkpoints import WeightCheck
from scrapbench.methods.common.clip_backbone import (
    InputResize,
    load_clip_resized,
    preprocess_images,
    project_tokens,
    upsample_maps,
)
from scrapbench.methods.common.clip_loader import ChosenBatches, ResizedSamples, batch_loader, device_batch
from scrapbench.methods.common.clip_weights import clip_config_check
from scrapbench.methods.common.losses import binary_dice_loss, binary_focal_loss
from scrapbench.methods.common.map_ops import gaussian_filter, resize_each
from scrapbench.methods.common.prompt_learner import ANOMALY_PROMPT, NORMAL_PROMPT, PromptLearner
from scrapbench.methods.common.vv_attention import vv_layer_tokens
from scrapbench.run.provenance import seed_everything

ImageScore = Literal["class_token", "map_max"]
IMAGE_SCORES = get_args(ImageScore)


@dataclass(frozen=True)
class AnomalyCLIPConfig:
    """Defaults: the paper's setting (ViT-L/14@336 OpenAI, input 518, layers 6/12/18/24)."""

    clip_model: str = "ViT-L-14-336-quickgelu"  # OpenAI trained it with QuickGELU; open_clip names that so
    clip_pretrained: str | None = "openai"  # tag, checkpoint path, or None / "random"
    image_size: int = 518
    feature_layers: tuple[int, ...] = (6, 12, 18, 24)
    vv_from_layer: int = 6  # first block with the V-V path (the release's DPAM_layer=20 on 24 blocks)
    normal_prompt: str = NORMAL_PROMPT
    anomaly_prompt: str = ANOMALY_PROMPT
    prompt_length: int = 12
    deep_prompt_depth: int = 9
    deep_prompt_length: int = 4
    learn_prompt_words: bool = False  # the release keeps the words fixed after the learnable context
    temperature: float = 0.07
    epochs: int = 15
    batch_size: int = 8
    lr: float = 1e-3
    focal_gamma: float = 2.0
    pixel_loss_weight: float = 4.0  # the release's λ on focal + dice
    image_loss_weight: float = 1.0  # the release's CLS cross-entropy; 0 turns it off
    gaussian_sigma: float = 4.0
    image_score: ImageScore = "class_token"  # the release's CLS softmax; "map_max": the anomaly map's maximum
    max_train_images: int | None = None  # keep anomalous images, subsample normals down to this
    feature_cache_mb: int = 2048  # frozen encoder: cache train features once when they fit
    predict_batch_size: int = 8  # images per encoder forward at test time (and when caching features)
    # "pil": the release's PIL bicubic resize (CPU); "pil_like": torchvision's antialiased bicubic of the
    # uint8 image on the device, within 2 grey levels of PIL, not the release's (docs/fidelity.md).
    input_resize: InputResize = "pil"
    loader_workers: int = 4  # DataLoader processes decoding and resizing train images (0: this process)


class AnomalyCLIP(AnomalyMethod):
    """AnomalyCLIP: object-agnostic learnable prompts on a frozen CLIP with the V-V path."""

    Config = AnomalyCLIPConfig
    learning_type = LearningType.SUPERVISED
    weights_field = "clip_pretrained"
    # Small presets scale the paper's choices to their depth: four evenly spaced layers, the V-V path
    # from the first of them (6/24 → 1/4, 2/8), deep prompts on 3 of the 4 text layers (9 of 12).
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "smoke": {"clip_model": "scrapbench-vit-tiny", "clip_pretrained": None, "image_size": 64,
                  "feature_layers": (1, 2, 3, 4), "vv_from_layer": 1, "deep_prompt_depth": 2,
                  "epochs": 1, "batch_size": 8, "max_train_images": 16, "gaussian_sigma": 0.5, "loader_workers": 0},
        "cpu": {"clip_model": "scrapbench-vit-small", "clip_pretrained": None, "image_size": 128,
                "feature_layers": (2, 4, 6, 8), "vv_from_layer": 2, "deep_prompt_depth": 3,
                "epochs": 8, "batch_size": 8, "max_train_images": 300, "gaussian_sigma": 1.0,
                "loader_workers": 0},
    }

    @classmethod
    def weight_checks(cls, config: AnomalyCLIPConfig, name: str) -> list[WeightCheck]:
        return [clip_config_check(config, name)]

    def __init__(self, config: AnomalyCLIPConfig, class_names: Sequence[str]) -> None:
        super().__init__(config, class_names)
        self.device = "cpu"
        if config.image_score not in IMAGE_SCORES:
            raise ValueError(f"image_score must be one of {IMAGE_SCORES}, got {config.image_score!r}")
        if config.input_resize not in get_args(InputResize):
            raise ValueError(f"input_resize must be 'pil' or 'pil_like', got {config.input_resize!r}")
        if config.loader_workers < 0:
            raise ValueError(f"loader_workers must be ≥ 0, got {config.loader_workers}")
        self._clip = load_clip_resized(config.clip_model, config.clip_pretrained, config.image_size, self.device)
        self._clip.model.visual.requires_grad_(False)  # frozen image encoder
        num_layers = self._clip.num_layers
        if not config.feature_layers or not all(1 <= i <= num_layers for i in config.feature_layers):
            raise ValueError(f"feature_layers {config.feature_layers} outside 1..{num_layers} of {config.clip_model}")
        self.learner = self._new_learner()
        self._text_features: torch.Tensor | None = None

    def _new_learner(self) -> PromptLearner:
        c = self.config
        return PromptLearner(self._clip.model, self._clip.tokenizer, (c.normal_prompt, c.anomaly_prompt),
                             context_length=c.prompt_length, deep_depth=c.deep_prompt_depth,
                             deep_length=c.deep_prompt_length, learn_words=c.learn_prompt_words).to(self.device)

    # -- features --------------------------------------------------------------------------------
    def _encode(self, images: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised V-V patch features [B, layers, N, D] and CLS image embeddings [B, D] (float32)."""
        return self._encode_pixels(preprocess_images(images, self.config.image_size, self.device,
                                                     resize=self.config.input_resize))

    @torch.no_grad()
    def _encode_pixels(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`_encode` of normalised pixels; the encoder runs in ``self.precision``, the features
        come out float32 (similarities and losses are computed in float32)."""
        visual = self._clip.visual
        with autocast(self.precision, self.device):
            # Only the class token of the final ordinary tokens is read (the image score).
            last_has_vv = self.config.vv_from_layer <= self._clip.num_layers
            layer_tokens, final = vv_layer_tokens(visual, pixels, self.config.feature_layers,
                                                  self.config.vv_from_layer, final_class_token_only=last_has_vv)
            patches = torch.stack([project_tokens(visual, t[:, 1:]) for t in layer_tokens], dim=1)
            # The release projects the class token without ln_post (patch tokens get it); so do we.
            cls = final[:, 0] @ visual.proj if visual.proj is not None else final[:, 0]
        return F.normalize(patches.float(), dim=-1), F.normalize(cls.float(), dim=-1)

    def _prompt_features(self) -> torch.Tensor:
        """The learner's text features [2, D], always in float32: the text encoder sees two prompts
        (nothing to gain from 16 bits), and the prompts it trains get float32 gradients, so no loss
        scaling is needed in fp16 (in fp16 the prompts' gradients overflowed under all but tiny loss scales)."""
        with full_precision(self.device):
            return self.learner().float()

    def _layer_probabilities(self, patches: torch.Tensor, text: torch.Tensor,
                             channels: slice = slice(None)) -> torch.Tensor:
        """[B, layers, N, D] × [2, D] → normal/abnormal probabilities [B, layers, 2, S, S] at input size
        (``channels``: only those, e.g. ``slice(1, 2)`` for the abnormal one: half the upsampling)."""
        batch, layers, tokens, _ = patches.shape
        side = round(tokens**0.5)
        probs = (patches @ text.T / self.config.temperature).softmax(dim=-1)[..., channels]  # [B, L, N, C]
        count = probs.shape[-1]
        probs = probs.permute(0, 1, 3, 2).reshape(batch * layers, count, side, side)
        size = self.config.image_size
        return upsample_maps(probs, (size, size)).view(batch, layers, count, size, size)

    def _text(self) -> torch.Tensor:
        if self._text_features is None:
            with torch.no_grad():
                self._text_features = self._prompt_features().detach()
        return self._text_features

    # -- training --------------------------------------------------------------------------------
    def _training_indices(self, train: Split, seed: int) -> list[int]:
        limit = self.config.max_train_images
        if limit is None or len(train) <= limit:
            return list(range(len(train)))
        rng = np.random.default_rng(seed)
        anomalous = train.anomalous_indices()
        if len(anomalous) >= limit:
            return sorted(rng.choice(anomalous, size=limit, replace=False).tolist())
        normals = rng.choice(train.normal_indices(), size=limit - len(anomalous), replace=False).tolist()
        return sorted(anomalous + normals)

    def fit(self, train: Split, ctx: FitContext) -> None:
        c = self.config
        seed_everything(ctx.seed)
        self.precision = check_precision(ctx.precision)
        self.to_device(ctx.device)
        self.learner = self._new_learner()  # prompt initialisation follows the run's seed
        self._text_features = None
        indices = self._training_indices(train, ctx.seed)
        if not indices:
            raise ValueError(f"{train.name}: AnomalyCLIP needs training images, the split is empty")
        started = time.perf_counter()
        samples = ResizedSamples(train, c.image_size, binary=True, resize=c.input_resize)
        batches = ChosenBatches()
        loader = batch_loader(samples, batches, c.loader_workers, self.device)
        cached = self._cache_features(loader, batches, indices) if self._cache_fits(len(indices)) else None
        encode_s = time.perf_counter() - started
        optimiser = torch.optim.Adam(self.learner.parameters(), lr=c.lr, betas=(0.5, 0.999))
        generator = torch.Generator().manual_seed(ctx.seed)
        log: list[dict[str, float]] = []
        self.learner.train()
        for epoch in tqdm(range(c.epochs), desc="anomalyclip", disable=not ctx.show_progress):
            order = torch.randperm(len(indices), generator=generator).tolist()
            steps = [order[start : start + c.batch_size] for start in range(0, len(order), c.batch_size)]
            if cached is None:  # encode each batch as it comes: the loader reads and resizes ahead
                batches.set([[indices[p] for p in positions] for positions in steps])
                encoded = (self._encode_batch(batch) for batch in loader)
            else:
                encoded = ((t[positions] for t in cached) for positions in steps)
            totals = {"pixel_loss": 0.0, "image_loss": 0.0}
            for positions, (patches, cls, masks) in zip(steps, encoded, strict=True):
                pixel_loss, image_loss = self._losses(patches, cls, masks)
                loss = c.pixel_loss_weight * pixel_loss + c.image_loss_weight * image_loss
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
                totals["pixel_loss"] += pixel_loss.item() * len(positions)
                totals["image_loss"] += image_loss.item() * len(positions)
            log.append({"epoch": epoch + 1, **{k: v / len(order) for k, v in totals.items()}})
        del loader  # ends its worker processes
        self.learner.eval()
        summary = {"train_images": len(indices), "cached_features": cached is not None, "precision": self.precision,
                   "encode_s": round(encode_s, 2), "fit_s": round(time.perf_counter() - started, 2), "epochs": log}
        ctx.workdir.mkdir(parents=True, exist_ok=True)
        (ctx.workdir / "anomalyclip_train_log.json").write_text(json.dumps(summary, indent=1))

    def _cache_fits(self, count: int) -> bool:
        grid = (self.config.image_size // self._clip.patch_size) ** 2
        dim = int(self._clip.visual.output_dim)
        megabytes = count * (len(self.config.feature_layers) * grid * dim + self.config.image_size**2) * 4 / 2**20
        return megabytes <= self.config.feature_cache_mb

    def _cache_features(self, loader: DataLoader, batches: ChosenBatches,
                        indices: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The frozen encoder gives the same features every epoch: encode the train images once."""
        step = self.config.predict_batch_size
        batches.set([indices[start : start + step] for start in range(0, len(indices), step)])
        parts = [self._encode_batch(batch) for batch in loader]
        return tuple(torch.cat(part) for part in zip(*parts, strict=True))  # type: ignore[return-value]

    def _encode_batch(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """A loader batch → (patch features, CLS features, binary float masks) on the device."""
        pixels, masks = device_batch(batch, self.config.image_size, self.config.input_resize, self.device)
        return (*self._encode_pixels(pixels), masks.float())

    def _losses(self, patches: torch.Tensor, cls: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Focal + dice (both channels) summed over layers, and the CLS cross-entropy (float32: in
        training only the frozen image encoder runs in ``self.precision``)."""
        text = self._prompt_features()
        probs = self._layer_probabilities(patches, text)  # [B, L, 2, S, S]
        target = masks.unsqueeze(1).expand(-1, probs.shape[1], -1, -1)  # [B, L, S, S]
        # All layers at once (per-layer slicing made the backward pass allocate a full tensor per layer).
        pixel = binary_focal_loss(probs, target, self.config.focal_gamma).sum()
        pixel = (pixel + binary_dice_loss(probs[:, :, 1], target).sum()
                 + binary_dice_loss(probs[:, :, 0], 1 - target).sum())
        labels = (masks.flatten(1).amax(dim=1) > 0).long()
        image = F.cross_entropy(cls @ text.T / self.config.temperature, labels)
        return pixel, image

    # -- inference -------------------------------------------------------------------------------
    @torch.inference_mode()
    def _infer(self, images: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-layer abnormal probability [B, layers, S, S] at the model input size (before smoothing)
        and the class token's abnormal probability [B]."""
        patches, cls = self._encode(images)
        text = self._text()
        # With two groups (p_abnormal + 1 − p_normal) / 2, the release's formula, is p_abnormal.
        layers = self._layer_probabilities(patches, text, slice(1, 2))[:, :, 0]
        return layers, (cls @ text.T / self.config.temperature).softmax(dim=-1)[:, 1]

    def layer_anomaly_maps(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """Per-layer abnormal probability [B, layers, S, S] at the model input size (before smoothing)."""
        return self._infer(images)[0]

    def predict(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        return self.predict_with_scores(images)[0]

    def predict_with_scores(self, images: Sequence[np.ndarray]) -> tuple[list[np.ndarray], list[float]]:
        """Maps at each image's resolution and image scores (``image_score``: CLS softmax or map maximum)."""
        maps: list[np.ndarray] = []
        scores: list[float] = []
        for start in range(0, len(images), self.config.predict_batch_size):
            batch = images[start : start + self.config.predict_batch_size]
            layers, cls_scores = self._infer(batch)
            # On the device: scipy's Gaussian (methods/common/map_ops.py), then each image's own size.
            summed = gaussian_filter(layers.sum(dim=1), self.config.gaussian_sigma)
            for amap, cls_score in zip(resize_each(summed, [image.shape[:2] for image in batch]),
                                       cls_scores.tolist(), strict=True):
                maps.append(amap)
                scores.append(cls_score if self.config.image_score == "class_token" else float(amap.max()))
        return maps, scores

    # -- state -----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"prompt_learner": {k: v.detach().cpu() for k, v in self.learner.state_dict().items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.learner.load_state_dict(state["prompt_learner"])
        self._text_features = None

    def to_device(self, device: str) -> None:
        self.device = device
        self._clip.model.to(device)
        self.learner.to(device)
        self._text_features = None

    def weights_info(self) -> dict[str, Any]:
        return {**self._clip.weights_info, "trained": "prompts only (frozen image and text encoders)"}
