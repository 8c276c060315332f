"""Regions of interest: where the truck bed (the scrap) is in a raw crane-camera image.

The paper crops the truck bed with Language Segment-Anything and the prompt "the scrap". We offer
two ways that need nothing beyond our own dependencies:

- a crop file given per image (box or polygon, JSON), read by :func:`read_roi_file`;
- :class:`TextPromptedRoi`: Segment Anything's automatic masks, each scored against a text prompt
  with CLIP, the best one kept. Both models come from files the user has (no downloads here); the
  mask generator and the scorer are plain callables, so the selection logic is testable alone.

:func:`save_roi_preview` draws the chosen region over the image so a person can check it before
tiling a whole folder.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from scrapbench.datasets.folder import read_json_file
from scrapbench.datasets.types import DatasetError

# CLIP's mean pixel: what a region's background is filled with before scoring, so that the crop
# shows the region and not its surroundings.
_CLIP_MEAN_RGB = (123, 117, 104)


@dataclass(frozen=True)
class Roi:
    """A box (x0, y0, x1, y1; pixels, x1/y1 exclusive) and optionally the region inside it (bool)."""

    box: tuple[int, int, int, int]
    mask: np.ndarray | None = None  # bool, (y1 - y0) × (x1 - x0); None = the whole box
    score: float | None = None  # the text score of a text-prompted region

    def inside_fraction(self, x0: int, y0: int, x1: int, y1: int) -> float:
        """Fraction of a box (in cropped coordinates) that lies inside the region."""
        if self.mask is None:
            return 1.0
        part = self.mask[y0:y1, x0:x1]
        return float(part.mean()) if part.size else 0.0


def full_image_roi(height: int, width: int) -> Roi:
    return Roi((0, 0, width, height))


def _polygon_mask(points: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    x0, y0, x1, y1 = box
    canvas = Image.new("1", (x1 - x0, y1 - y0), 0)
    ImageDraw.Draw(canvas).polygon([(x - x0, y - y0) for x, y in points.tolist()], fill=1, outline=1)
    return np.asarray(canvas, dtype=bool).copy()


def roi_from_spec(spec: dict[str, Any], size: tuple[int, int], where: str) -> Roi:
    """``{"box": [x0, y0, x1, y1]}`` or ``{"polygon": [[x, y], ...]}`` → a Roi inside an H×W image."""
    height, width = size
    if "box" in spec:
        try:
            x0, y0, x1, y1 = (round(float(v)) for v in spec["box"])
        except (TypeError, ValueError) as exc:
            raise DatasetError(f"{where}: box must be four numbers [x0, y0, x1, y1], got {spec['box']!r}") from exc
        if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
            raise DatasetError(f"{where}: box {[x0, y0, x1, y1]} is empty or outside the image ({width}x{height})")
        return Roi((x0, y0, x1, y1))
    if "polygon" in spec:
        points = np.asarray(spec["polygon"], dtype=np.float64)
        if points.ndim != 2 or points.shape[1] != 2 or len(points) < 3:
            raise DatasetError(f"{where}: polygon must be a list of at least 3 [x, y] points")
        if points[:, 0].min() < 0 or points[:, 1].min() < 0 or points[:, 0].max() > width \
                or points[:, 1].max() > height:
            raise DatasetError(f"{where}: polygon outside the image ({width}x{height})")
        box = (int(np.floor(points[:, 0].min())), int(np.floor(points[:, 1].min())),
               int(np.ceil(points[:, 0].max())), int(np.ceil(points[:, 1].max())))
        if box[2] <= box[0] or box[3] <= box[1]:
            raise DatasetError(f"{where}: polygon has no area")
        return Roi(box, _polygon_mask(points, box))
    raise DatasetError(f"{where}: expected a 'box' or a 'polygon' entry, got keys {sorted(spec)}")


def read_roi_file(path: str | Path) -> dict[str, dict[str, Any]]:
    """A JSON object mapping image file names (or stems) to ``{"box": ...}`` / ``{"polygon": ...}``."""
    path = Path(path)
    doc = read_json_file(path, "region-of-interest file")
    if not isinstance(doc, dict) or not all(isinstance(v, dict) for v in doc.values()):
        raise DatasetError(f'{path}: expected {{"image.jpg": {{"box": [x0, y0, x1, y1]}}, ...}}')
    return doc


class RoiFile:
    """Regions from a crop file, looked up by image file name, then by stem, then by source id."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.entries = read_roi_file(self.path)
        self.description = f"crop file {self.path.name}"

    def __call__(self, image: np.ndarray, image_path: Path, source_id: str) -> Roi:
        for key in (image_path.name, image_path.stem, source_id):
            if key in self.entries:
                return roi_from_spec(self.entries[key], image.shape[:2], f"{self.path}: entry {key!r}")
        raise DatasetError(f"{self.path}: no region for image {image_path} (keys tried: {image_path.name!r}, "
                           f"{image_path.stem!r})")


MaskGenerator = Callable[[np.ndarray], list[dict[str, Any]]]
TextScorer = Callable[[list[np.ndarray], str], np.ndarray]


class TextPromptedRoi:
    """SAM automatic masks scored against a text with CLIP; the best-scoring large region wins.

    ``mask_generator(image)`` returns SAM-style dicts with a bool ``segmentation``; ``scorer(crops,
    prompt)`` returns one score per crop. Regions smaller than ``min_area_fraction`` of the image
    are ignored (small parts of a truck bed can look like "scrap" as well as the whole one).
    """

    def __init__(self, mask_generator: MaskGenerator, scorer: TextScorer, prompt: str = "the scrap",
                 min_area_fraction: float = 0.05) -> None:
        self.mask_generator = mask_generator
        self.scorer = scorer
        self.prompt = prompt
        self.min_area_fraction = min_area_fraction
        self.description = f"text prompt {prompt!r} (SAM masks scored by CLIP)"

    def __call__(self, image: np.ndarray, image_path: Path, source_id: str) -> Roi:
        height, width = image.shape[:2]
        candidates = []
        for proposal in self.mask_generator(image):
            region = np.asarray(proposal["segmentation"], dtype=bool)
            if region.shape != (height, width):
                raise ValueError(f"mask generator returned a {region.shape} mask for a {height}x{width} image")
            if region.mean() >= self.min_area_fraction:
                candidates.append(region)
        if not candidates:
            raise DatasetError(
                f"{image_path}: no region covering ≥{self.min_area_fraction:.0%} of the image was proposed; "
                f"give this image a box in a crop file (--roi-file) instead"
            )
        crops, boxes = [], []
        for region in candidates:
            box = _bounding_box(region)
            x0, y0, x1, y1 = box
            crop = image[y0:y1, x0:x1].copy()
            crop[~region[y0:y1, x0:x1]] = _CLIP_MEAN_RGB
            crops.append(crop)
            boxes.append(box)
        scores = np.asarray(self.scorer(crops, self.prompt), dtype=np.float64)
        if scores.shape != (len(crops),):
            raise ValueError(f"scorer returned {scores.shape} scores for {len(crops)} crops")
        # Ties go to the larger region, then to the first proposed: deterministic.
        order = sorted(range(len(crops)), key=lambda i: (-scores[i], -int(candidates[i].sum()), i))
        best = order[0]
        x0, y0, x1, y1 = boxes[best]
        return Roi(boxes[best], candidates[best][y0:y1, x0:x1].copy(), float(scores[best]))


def _bounding_box(region: np.ndarray) -> tuple[int, int, int, int]:
    rows, cols = np.flatnonzero(region.any(axis=1)), np.flatnonzero(region.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def sam_mask_generator(architecture: str, checkpoint: str | Path | None, points_per_side: int = 32,
                       pred_iou_thresh: float = 0.88, stability_score_thresh: float = 0.95,
                       device: str = "cpu") -> MaskGenerator:
    """Segment Anything's automatic mask generator (weights from ``checkpoint``, see methods.sam_refiner)."""
    from segment_anything import SamAutomaticMaskGenerator

    from scrapbench.core.method import WeightsError
    from scrapbench.methods.common.sam_refiner import build_sam

    if checkpoint is None:  # a random SAM proposes noise: never a useful crop
        raise WeightsError("the text-prompted crop needs Segment Anything weights: pass --sam-checkpoint PATH")
    try:
        sam = build_sam(architecture, checkpoint).model.to(device)
    except WeightsError as exc:
        raise WeightsError(f"{exc} (for `scrapbench prepare`: --sam-checkpoint PATH --sam-model SIZE)") from exc
    generator = SamAutomaticMaskGenerator(sam, points_per_side=points_per_side, pred_iou_thresh=pred_iou_thresh,
                                          stability_score_thresh=stability_score_thresh)
    return generator.generate


class ClipTextScorer:
    """Cosine similarity between CLIP embeddings of image crops and of one text prompt."""

    def __init__(self, model_name: str = "ViT-B-16", pretrained: str | None = "openai", image_size: int = 224,
                 device: str = "cpu") -> None:
        from scrapbench.methods.common.clip_weights import load_clip

        self.clip = load_clip(model_name, pretrained, image_size, device)
        self.device = device

    def __call__(self, crops: Sequence[np.ndarray], prompt: str) -> np.ndarray:
        import torch

        from scrapbench.methods.common.clip_backbone import preprocess_images

        size = self.clip.image_size
        squares = [_pad_to_square(crop, size) for crop in crops]
        with torch.no_grad():
            text = self.clip.model.encode_text(self.clip.tokenizer([prompt]).to(self.device))
            images = self.clip.model.encode_image(preprocess_images(squares, size, self.device))
            text = text / text.norm(dim=-1, keepdim=True)
            images = images / images.norm(dim=-1, keepdim=True)
            return (images @ text.T).squeeze(1).cpu().numpy().astype(np.float64)


def _pad_to_square(crop: np.ndarray, size: int) -> np.ndarray:
    """Pad with the CLIP mean colour to a square (keeps the aspect ratio), then resize to ``size``."""
    height, width = crop.shape[:2]
    side = max(height, width)
    square = np.empty((side, side, 3), np.uint8)
    square[:] = _CLIP_MEAN_RGB
    top, left = (side - height) // 2, (side - width) // 2
    square[top:top + height, left:left + width] = crop
    return np.array(Image.fromarray(square).resize((size, size), Image.BICUBIC))


def save_roi_preview(image: np.ndarray, roi: Roi, path: str | Path, tiles: Sequence[tuple[int, int, int, int]] = (),
                     max_side: int = 1024) -> Path:
    """A PNG of the image (downscaled) with the region's outline, its box and the kept tiles."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    height, width = image.shape[:2]
    scale = min(1.0, max_side / max(height, width))
    base = Image.fromarray(image).convert("RGB")
    if roi.mask is not None:  # dim what lies outside the region
        x0, y0, x1, y1 = roi.box
        outside = np.ones((height, width), bool)
        outside[y0:y1, x0:x1] = ~roi.mask
        dimmed = np.asarray(base).copy()
        dimmed[outside] = (dimmed[outside] * 0.4).astype(np.uint8)
        base = Image.fromarray(dimmed)
    if scale < 1.0:
        base = base.resize((max(1, round(width * scale)), max(1, round(height * scale))), Image.BILINEAR)
    draw = ImageDraw.Draw(base)
    line = max(2, round(3 * scale * max(height, width) / 1024))
    for tx0, ty0, tx1, ty1 in tiles:
        draw.rectangle([tx0 * scale, ty0 * scale, tx1 * scale - 1, ty1 * scale - 1], outline=(255, 255, 0), width=1)
    x0, y0, x1, y1 = roi.box
    draw.rectangle([x0 * scale, y0 * scale, x1 * scale - 1, y1 * scale - 1], outline=(255, 40, 40), width=line)
    if roi.score is not None:
        draw.text((x0 * scale + 4, y0 * scale + 4), f"score {roi.score:.3f}", fill=(255, 40, 40))
    base.save(path)
    return path
