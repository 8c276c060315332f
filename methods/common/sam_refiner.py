"""Segment Anything (segment-anything package): build, load weights, turn boxes into masks.

``segment_anything.build_sam`` offers only the three published sizes, fixed at 1024-pixel input,
and loads checkpoints without checks. :func:`build_sam` assembles the same modules
(``ImageEncoderViT``, ``PromptEncoder``, ``MaskDecoder``) from a :class:`SamArchitecture`, so the
published sizes load the official checkpoints unchanged and a ``tiny`` size (128-pixel input,
two narrow blocks) serves CPU runs and tests. Without a checkpoint the weights are a seeded random
initialisation, and :attr:`LoadedSam.weights_info` says so.

A checkpoint is a ``torch.save``d state dict (the official ``sam_vit_h_4b8939.pth`` is one); it is read
weights-only and loaded strictly. The official file names end in the first six hex digits of the
file's MD5, which a file carrying such a name must match.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer
from segment_anything.predictor import SamPredictor

from scrapbench.core.method import WeightsError
from scrapbench.core.precision import autocast
from scrapbench.methods.common.checkpoints import (
    WeightCheck,
    checkpoint_format,
    read_state_dict,
    require_state_dict_fits,
)
from scrapbench.methods.common.checksums import PublishedChecksum, checksum_from_url, checksum_verdict, file_digest


@dataclass(frozen=True)
class SamArchitecture:
    """The sizes ``segment_anything.build_sam._build_sam`` hard-codes, as fields."""

    encoder_embed_dim: int
    encoder_depth: int
    encoder_num_heads: int
    encoder_global_attn_indexes: tuple[int, ...]
    image_size: int = 1024
    patch_size: int = 16
    window_size: int = 14
    prompt_embed_dim: int = 256
    decoder_depth: int = 2
    decoder_mlp_dim: int = 2048
    decoder_num_heads: int = 8
    iou_head_hidden_dim: int = 256
    mask_in_chans: int = 16


SAM_ARCHITECTURES: dict[str, SamArchitecture] = {
    "vit_h": SamArchitecture(1280, 32, 16, (7, 15, 23, 31)),
    "vit_l": SamArchitecture(1024, 24, 16, (5, 11, 17, 23)),
    "vit_b": SamArchitecture(768, 12, 12, (2, 5, 8, 11)),
    # Not a published model: small enough to run on a CPU in milliseconds per image.
    "tiny": SamArchitecture(64, 2, 2, (1,), image_size=128, window_size=4, prompt_embed_dim=64,
                            decoder_depth=1, decoder_mlp_dim=128, decoder_num_heads=2,
                            iou_head_hidden_dim=64, mask_in_chans=4),
}

SAM_CHECKPOINT_URLS: dict[str, str] = {
    "vit_h": "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth",
    "vit_l": "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_l_0b3195.pth",
    "vit_b": "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth",
}


@dataclass
class LoadedSam:
    model: Sam
    weights_info: dict[str, Any] = field(default_factory=dict)


def build_sam(architecture: str, checkpoint: str | Path | None, seed: int = 0) -> LoadedSam:
    """A SAM of ``architecture`` with weights from ``checkpoint`` (``None``: seeded random init).

    The checkpoint is read weights-only, must hold exactly the architecture's keys and shapes, and,
    when it carries an official file name, the MD5 prefix that name publishes.
    """
    if architecture not in SAM_ARCHITECTURES:
        raise ValueError(f"unknown SAM architecture {architecture!r}; known: {sorted(SAM_ARCHITECTURES)}")
    arch = SAM_ARCHITECTURES[architecture]
    state = _read_checkpoint(architecture, Path(checkpoint)) if checkpoint else None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # random init must not depend on (or disturb) the caller's RNG state
        model = _assemble(arch)
    info: dict[str, Any] = {"sam_model": architecture, "sam_checkpoint": str(checkpoint) if checkpoint else None,
                            "sam_random_init": state is None}
    if state is not None:
        require_state_dict_fits(model.state_dict(), state, _misfit(checkpoint, architecture))
        accepted, checksum = checksum_verdict(checkpoint, *_published(architecture, Path(checkpoint)))
        if not accepted:
            raise WeightsError(f"SAM checkpoint {checkpoint}: {checksum}")
        model.load_state_dict(state)
        info.update(sam_sha256=file_digest(checkpoint), sam_checksum=checksum)
    model.eval()
    return LoadedSam(model, info)


def _misfit(checkpoint: str | Path, architecture: str) -> str:
    return f"SAM checkpoint {checkpoint} does not fit sam_model={architecture!r} (is it a checkpoint of another size?)"


def _published(architecture: str, path: Path) -> tuple[PublishedChecksum | None, bool]:
    """The official checksum of this size, and whether the file claims to be that file (by its name)."""
    url = SAM_CHECKPOINT_URLS.get(architecture)
    published = checksum_from_url(url) if url else None
    return published, published is not None and path.name == published.file_name


def inspect_sam(architecture: str, checkpoint: str | Path | None, setting: str) -> WeightCheck:
    """A :class:`WeightCheck` of a configured SAM checkpoint (read on the meta device: no tensor data)."""
    check = WeightCheck(f"SAM {architecture}", setting, "random", architecture=architecture)
    if checkpoint is None:
        return check
    path = Path(checkpoint)
    check.path = str(path.resolve())
    url = SAM_CHECKPOINT_URLS.get(architecture)
    if not path.is_file():
        check.status, check.detail = "missing", "not found"
        where = path.resolve()
        check.where = f"download {url} to {where}" if url else f"put the {architecture} checkpoint at {where}"
        return check
    try:
        if architecture not in SAM_ARCHITECTURES:
            raise WeightsError(f"unknown SAM architecture {architecture!r}; known: {sorted(SAM_ARCHITECTURES)}")
        check.format = checkpoint_format(path)
        with torch.device("meta"):
            expected = _assemble(SAM_ARCHITECTURES[architecture]).state_dict()
        require_state_dict_fits(expected, read_state_dict(path, "SAM checkpoint", "meta"), _misfit(path, architecture))
        check.architecture = f"SAM {architecture}; keys and shapes match"
        check.sha256 = file_digest(path)
        accepted, check.checksum = checksum_verdict(path, *_published(architecture, path))
    except WeightsError as exc:
        check.status, check.detail = "invalid", str(exc)
        return check
    check.status, check.detail = ("ok", "") if accepted else ("invalid", check.checksum)
    return check


def _assemble(arch: SamArchitecture) -> Sam:
    embedding_size = arch.image_size // arch.patch_size
    return Sam(
        image_encoder=ImageEncoderViT(
            depth=arch.encoder_depth,
            embed_dim=arch.encoder_embed_dim,
            img_size=arch.image_size,
            mlp_ratio=4,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            num_heads=arch.encoder_num_heads,
            patch_size=arch.patch_size,
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=arch.encoder_global_attn_indexes,
            window_size=arch.window_size,
            out_chans=arch.prompt_embed_dim,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=arch.prompt_embed_dim,
            image_embedding_size=(embedding_size, embedding_size),
            input_image_size=(arch.image_size, arch.image_size),
            mask_in_chans=arch.mask_in_chans,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(
                depth=arch.decoder_depth,
                embedding_dim=arch.prompt_embed_dim,
                mlp_dim=arch.decoder_mlp_dim,
                num_heads=arch.decoder_num_heads,
            ),
            transformer_dim=arch.prompt_embed_dim,
            iou_head_depth=3,
            iou_head_hidden_dim=arch.iou_head_hidden_dim,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )


def _read_checkpoint(architecture: str, path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        url = SAM_CHECKPOINT_URLS.get(architecture)
        where = f"download {url} and " if url else ""
        raise WeightsError(
            f"SAM checkpoint {path} (sam_model={architecture!r}) not found. {where}point `sam_checkpoint` "
            f"at the file, or set sam_checkpoint=null for a random-initialised SAM."
        )
    return read_state_dict(path, "SAM checkpoint")


class SamBoxRefiner:
    """Box prompts → SAM masks at image resolution (one image embedding per image)."""

    def __init__(self, sam: Sam, soft_masks: bool = True, clip_to_box: bool = True) -> None:
        self.predictor = SamPredictor(sam)
        self.soft_masks = soft_masks
        self.clip_to_box = clip_to_box

    @torch.inference_mode()
    def masks(self, image: np.ndarray, boxes: np.ndarray, precision: str = "fp32") -> np.ndarray:
        """N×H×W float32 masks for N ``(x0, y0, x1, y1)`` pixel boxes of an RGB uint8 image.

        Soft masks are ``sigmoid(logit)``; hard masks are ``logit > 0`` (SAM's threshold). With
        ``clip_to_box`` pixels outside their prompt box are set to 0: the box already says where
        the object is, and an untrained SAM would otherwise spread a detection over the image.
        SAM's networks run in ``precision`` (``scrapbench.core.precision``); the masks are float32.
        """
        height, width = image.shape[:2]
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        if len(boxes) == 0:
            return np.zeros((0, height, width), dtype=np.float32)
        device = self.predictor.device
        with autocast(precision, device):
            self.predictor.set_image(np.ascontiguousarray(image), image_format="RGB")
            prompts = self.predictor.transform.apply_boxes_torch(torch.as_tensor(boxes, device=device),
                                                                 (height, width))
            logits, _, _ = self.predictor.predict_torch(
                point_coords=None, point_labels=None, boxes=prompts, multimask_output=False, return_logits=True
            )
        self.predictor.reset_image()
        logits = logits[:, 0].float().cpu()
        masks = torch.sigmoid(logits) if self.soft_masks else (logits > self.predictor.model.mask_threshold).float()
        masks = masks.numpy()
        if self.clip_to_box:
            masks *= box_masks(boxes, height, width)
        return masks.astype(np.float32, copy=False)


def box_masks(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    """N×H×W masks, 1 on pixels whose centre lies inside each ``(x0, y0, x1, y1)`` box."""
    centres_x = np.arange(width, dtype=np.float32) + 0.5
    centres_y = np.arange(height, dtype=np.float32) + 0.5
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    inside_x = (centres_x[None] >= boxes[:, 0:1]) & (centres_x[None] <= boxes[:, 2:3])
    inside_y = (centres_y[None] >= boxes[:, 1:2]) & (centres_y[None] <= boxes[:, 3:4])
    return (inside_y[:, :, None] & inside_x[:, None, :]).astype(np.float32)
