"""WinCLIP (zero-shot) and WinCLIP+ (few-shot) as scrapbench plugins: ``winclip`` / ``winclip_plus``.

One class; ``k_shot`` picks the variant (the registry fixes it per name: 0 and 10). Nothing is
learned: ``fit`` embeds the compositional prompt ensemble and, for WinCLIP+, fills the visual
memory from k normal train images chosen by the run's seed. The scoring is in
:mod:`scrapbench.methods.winclip.scores`.

Prompts are adapted to the domain as the steel paper did: the state phrases are "object which is
made of steel" (normal) and "object which is not steel" (anomalous), each composed with WinCLIP's
templates ("a photo of the {}." …); each ensemble's raw embeddings are averaged (anomalib). On data
that shows one named object (a MVTec AD / VisA category: ``FitContext.object_name``), the states are
WinCLIP's own state words around that name instead, as in the paper ("flawless metal nut", "metal nut
with defect").

Pre- and post-processing follow anomalib's WinCLIP (docs/fidelity.md lists every difference): the
input is resized with torchvision's antialiased bicubic; the image-level score is the class token's
zero-shot score, averaged with the few-shot map's maximum for WinCLIP+; the few-shot patch memory
holds the last block's tokens after ``ln_post``. Unlike anomalib 2.7 with open_clip 3.x, each window
runs through the ViT on its own (anomalib feeds a batch-first transformer sequence-first, so every
window embedding comes out the same); and maps are scored at each image's own resolution.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, get_args

import numpy as np
import torch
import torch.nn.functional as F

from scrapbench.core.method import AnomalyMethod, FitContext, LearningType
from scrapbench.core.precision import check_precision, inference
from scrapbench.datasets.types import Split
from scrapbench.methods.common.checkpoints import WeightCheck
from scrapbench.methods.common.clip_backbone import preprocess_images
from scrapbench.methods.common.clip_weights import clip_config_check, load_clip
from scrapbench.methods.common.map_ops import resize_each
from scrapbench.methods.winclip.scores import (
    WINCLIP_TEMPLATES,
    Encoding,
    encode,
    few_shot_map,
    image_zero_shot_score,
    window_masks,
    zero_shot_map,
)

NORMAL_STATES: tuple[str, ...] = ("object which is made of steel",)
ANOMALOUS_STATES: tuple[str, ...] = ("object which is not steel",)
ImageScore = Literal["class_token", "map_max"]
IMAGE_SCORES = get_args(ImageScore)


@dataclass(frozen=True)
class WinCLIPConfig:
    """Defaults: WinCLIP's own backbone (ViT-B-16-plus-240, LAION-400M, input 240, scales 2 and 3),
    since the steel paper does not name WinCLIP's; k_shot 10 for WinCLIP+ is the steel paper's.

    ``memory_layers``: blocks whose patch tokens go into the few-shot memory; 1-based, negative
    counts from the end. anomalib uses the last block's tokens after ``ln_post`` (unprojected):
    ``(-1,)`` with ``memory_ln_post``.
    """

    clip_model: str = "ViT-B-16-plus-240"
    clip_pretrained: str | None = "laion400m_e31"  # tag, checkpoint path, or None / "random"
    image_size: int = 240
    window_scales: tuple[int, ...] = (2, 3)  # in patches: small and mid windows
    window_stride: int = 1
    k_shot: int = 0  # 0: WinCLIP; > 0: WinCLIP+ with k normal references from the train split
    memory_layers: tuple[int, ...] = (-1,)
    memory_ln_post: bool = True  # apply the vision tower's ln_post to the memory tokens (anomalib)
    temperature: float = 0.07  # CLIP's softmax temperature
    normal_states: tuple[str, ...] = NORMAL_STATES
    anomalous_states: tuple[str, ...] = ANOMALOUS_STATES
    templates: tuple[str, ...] = WINCLIP_TEMPLATES
    predict_batch_size: int = 8
    window_chunk: int = 2048  # window sequences per ViT forward (bounds memory at large grids)
    image_score: ImageScore = "class_token"  # anomalib's zero-shot CLS score (+ few-shot max); "map_max"


class WinCLIP(AnomalyMethod):
    """WinCLIP / WinCLIP+: window-based CLIP scores with a compositional prompt ensemble."""

    Config = WinCLIPConfig
    weights_field = "clip_pretrained"
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        # 64 px / patch 8 → 8×8 grid; 128 px → 16×16; windows of 2 and 3 patches as in the paper.
        "smoke": {"clip_model": "scrapbench-vit-tiny", "clip_pretrained": None, "image_size": 64,
                  "window_scales": (2, 3)},
        "cpu": {"clip_model": "scrapbench-vit-small", "clip_pretrained": None, "image_size": 128,
                "window_scales": (2, 3)},
    }

    def __init__(self, config: WinCLIPConfig, class_names: Sequence[str]) -> None:
        super().__init__(config, class_names)
        _validate(config)
        self.device = "cpu"
        self._clip = load_clip(config.clip_model, config.clip_pretrained, config.image_size, self.device)
        self._clip.model.requires_grad_(False)
        depth = self._clip.num_layers
        if config.image_score not in IMAGE_SCORES:
            raise ValueError(f"image_score must be one of {IMAGE_SCORES}, got {config.image_score!r}")
        if not all(-depth <= i <= depth and i != 0 for i in config.memory_layers):
            raise ValueError(f"memory_layers {config.memory_layers} outside 1..{depth} (or -{depth}..-1) "
                             f"of {config.clip_model}")
        self._memory_layers = tuple(i if i > 0 else depth + 1 + i for i in config.memory_layers)
        self._masks = window_masks(self._clip.grid_size, config.window_scales, config.window_stride)
        self._text: torch.Tensor | None = None
        self._object_name: str | None = None  # set by fit from FitContext.object_name
        self._memory: Encoding | None = None
        self._reference_ids: list[str] = []

    @classmethod
    def learning_type_for(cls, config: WinCLIPConfig) -> LearningType:
        """WinCLIP is zero-shot; WinCLIP+ (``k_shot`` > 0) few-shot."""
        return LearningType.FEW_SHOT if config.k_shot > 0 else LearningType.ZERO_SHOT

    @property
    def learning_type(self) -> LearningType:  # type: ignore[override]
        return self.learning_type_for(self.config)

    @classmethod
    def weight_checks(cls, config: WinCLIPConfig, name: str) -> list[WeightCheck]:
        return [clip_config_check(config, name)]

    @classmethod
    def seed_independent(cls, config: WinCLIPConfig) -> bool:
        """Zero-shot WinCLIP draws nothing: its weights are pretrained, or random-initialised from the fixed
        ``init_seed`` of ``load_clip`` (not the run's seed), so its maps are the same for every seed.
        WinCLIP+ draws its references by seed."""
        return config.k_shot == 0

    # -- fit: prompts and (WinCLIP+) the visual memory ------------------------------------------
    def prompts(self) -> tuple[list[str], list[str]]:
        """The normal and anomalous prompt ensembles: every state phrase in every template.

        The states: WinCLIP's state words around the object's name when the data names one, else the
        config's (steel) phrases.
        """
        c = self.config
        normal, anomalous = object_states(self._object_name) if self._object_name else \
            (c.normal_states, c.anomalous_states)
        return ([t.format(s) for s in normal for t in c.templates],
                [t.format(s) for s in anomalous for t in c.templates])

    def _text_embeddings(self) -> torch.Tensor:
        """2×D: per ensemble the mean of the raw (unnormalised) prompt embeddings, as anomalib does,
        then normalised (normal, anomalous); the text encoder runs in ``self.precision``."""
        model, tokenizer = self._clip.model, self._clip.tokenizer
        with inference(self.precision, self.device):
            groups = [model.encode_text(tokenizer(prompts).to(self.device)).float().mean(dim=0)
                      for prompts in self.prompts()]
        return F.normalize(torch.stack(groups), dim=-1)

    def fit(self, train: Split, ctx: FitContext) -> None:
        self.precision = check_precision(ctx.precision)
        self.to_device(ctx.device)
        self._object_name = ctx.object_name
        self._text = self._text_embeddings()
        self._memory, self._reference_ids = None, []
        if self.config.k_shot > 0:
            indices = choose_references(train, self.config.k_shot, ctx.seed)
            self._reference_ids = [train.ids[i] for i in indices]
            self._memory = self._encode([train[i].image for i in indices])
        ctx.workdir.mkdir(parents=True, exist_ok=True)
        (ctx.workdir / "winclip_fit.json").write_text(json.dumps(
            {"k_shot": self.config.k_shot, "reference_ids": self._reference_ids, "object_name": self._object_name,
             "prompts": dict(zip(("normal", "anomalous"), self.prompts(), strict=True))}, indent=1))

    # -- predict ----------------------------------------------------------------------------------
    def _encode(self, images: Sequence[np.ndarray]) -> Encoding:
        """Features of images, batch by batch (resized on the device, in groups of equal size); the
        networks run in ``self.precision``, the features come out float32."""
        size, parts = self.config.image_size, []
        layers = self._memory_layers if self.config.k_shot > 0 else ()
        for start in range(0, len(images), self.config.predict_batch_size):
            batch = images[start : start + self.config.predict_batch_size]
            with inference(self.precision, self.device):
                pixels = preprocess_images(batch, size, self.device, resize="antialias")
                parts.append(encode(self._clip.visual, pixels, self._masks, layers, self.config.window_chunk,
                                    self.config.memory_ln_post))
        return Encoding(torch.cat([p.image for p in parts]),
                        [torch.cat(w) for w in zip(*(p.windows for p in parts), strict=True)],
                        [torch.cat(f) for f in zip(*(p.patches for p in parts), strict=True)])

    @torch.inference_mode()
    def grid_maps(self, images: Sequence[np.ndarray]) -> dict[str, torch.Tensor]:
        """Patch-grid maps B×g×g: ``zero_shot``, and for WinCLIP+ ``few_shot`` and ``combined``; and
        ``image_score`` [B]: the class token's zero-shot score, for WinCLIP+ averaged with the
        few-shot map's maximum (anomalib)."""
        if self._text is None:  # zero-shot needs no data: build the prompts on first use
            self._text = self._text_embeddings()
        if self.config.k_shot > 0 and self._memory is None:
            raise RuntimeError("WinCLIP+ (k_shot > 0) has no reference memory: call fit() or load a saved state")
        encoding, grid = self._encode(images), self._clip.grid_size
        maps = {"zero_shot": zero_shot_map(encoding, self._text, self._masks, grid, self.config.temperature),
                "image_score": image_zero_shot_score(encoding, self._text, self.config.temperature)}
        if self._memory is not None:
            maps["few_shot"] = few_shot_map(encoding, self._memory, self._masks, grid)
            maps["combined"] = (maps["zero_shot"] + maps["few_shot"]) / 2
            maps["image_score"] = (maps["image_score"] + maps["few_shot"].amax(dim=(-2, -1))) / 2
        return maps

    def predict(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        return self.predict_with_scores(images)[0]

    def predict_with_scores(self, images: Sequence[np.ndarray]) -> tuple[list[np.ndarray], list[float]]:
        """Maps at each image's resolution and image scores (``image_score``: anomalib's or the map maximum)."""
        out: list[np.ndarray] = []
        scores: list[float] = []
        for start in range(0, len(images), self.config.predict_batch_size):
            batch = images[start : start + self.config.predict_batch_size]
            maps = self.grid_maps(batch)
            grid = maps.get("combined", maps["zero_shot"]).float()
            resized = resize_each(grid, [image.shape[:2] for image in batch])  # on the device, by size
            for amap, score in zip(resized, maps["image_score"].tolist(), strict=True):
                out.append(amap)
                scores.append(score if self.config.image_score == "class_token" else float(amap.max()))
        return out, scores

    # -- state --------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        if self._text is None:
            self._text = self._text_embeddings()
        state: dict[str, Any] = {"text_embeddings": self._text.cpu(), "reference_ids": list(self._reference_ids)}
        if self._memory is not None:
            memory = self._memory.to("cpu")
            state.update(memory_image=memory.image, memory_windows=memory.windows, memory_patches=memory.patches)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._text = state["text_embeddings"].to(self.device)
        self._reference_ids = list(state.get("reference_ids", []))
        self._memory = None
        if self.config.k_shot > 0:
            if "memory_windows" not in state:
                raise ValueError("saved WinCLIP state has no reference memory, but the config asks for k_shot > 0")
            self._memory = Encoding(state["memory_image"], list(state["memory_windows"]),
                                    list(state["memory_patches"])).to(self.device)

    def to_device(self, device: str) -> None:
        self.device = device
        self._clip.model.to(device)
        self._masks = [m.to(device) for m in self._masks]
        self._text = self._text.to(device) if self._text is not None else None
        self._memory = self._memory.to(device) if self._memory is not None else None

    def weights_info(self) -> dict[str, Any]:
        return {**self._clip.weights_info, "trained": "nothing (frozen CLIP)", "k_shot": self.config.k_shot,
                "reference_ids": list(self._reference_ids)}


def object_states(object_name: str) -> tuple[list[str], list[str]]:
    """WinCLIP's normal and anomalous state phrases for ``object_name`` (its compositional prompt ensemble).

    The state words are anomalib's lists of the paper's (``"{}"``, ``"flawless {}"`` ... / ``"damaged {}"``,
    ``"{} with defect"`` ...), the name put in as anomalib does.
    """
    with warnings.catch_warnings():  # see winclip_scores: importing anomalib's models warns about others
        warnings.simplefilter("ignore", FutureWarning)
        from anomalib.models.image.winclip.prompting import ANOMALOUS_STATES, NORMAL_STATES
    return [s.format(object_name) for s in NORMAL_STATES], [s.format(object_name) for s in ANOMALOUS_STATES]


def choose_references(train: Split, k: int, seed: int) -> list[int]:
    """k normal train indices drawn by ``seed`` (sorted); all normals when there are fewer than k."""
    normals = train.normal_indices()
    if not normals:
        raise ValueError(f"{train.name}: WinCLIP+ needs normal train images as references, the split has none")
    if len(normals) <= k:
        if len(normals) < k:
            warnings.warn(f"{train.name}: only {len(normals)} normal images for k_shot={k}; using all of them",
                          stacklevel=2)
        return normals
    return sorted(np.random.default_rng(seed).choice(normals, size=k, replace=False).tolist())


def _validate(config: WinCLIPConfig) -> None:
    if config.k_shot < 0:
        raise ValueError(f"k_shot must be >= 0, got {config.k_shot}")
    if not config.window_scales:
        raise ValueError("window_scales is empty: WinCLIP needs at least one window scale")
    if not config.normal_states or not config.anomalous_states or not config.templates:
        raise ValueError("normal_states, anomalous_states and templates must each hold at least one entry")
    missing = [t for t in config.templates if "{}" not in t]
    if missing:
        raise ValueError(f"templates need a '{{}}' for the state phrase: {missing}")
