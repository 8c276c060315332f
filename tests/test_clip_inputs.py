"""Input pipelines of the CLIP methods, each pinned to its reference: PIL bicubic (AnomalyCLIP, ours),
torchvision antialiased bicubic (anomalib's WinCLIP), bilinear position embeddings, bilinear masks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TVF
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from PIL import Image
from torchvision.transforms import v2

from scrapbench.methods.common.clip_backbone import (
    interpolate_positions,
    load_clip_resized,
    preprocess_images,
    resize_masks,
)
from scrapbench.methods.common.clip_weights import load_clip

MEAN = torch.tensor(OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
STD = torch.tensor(OPENAI_DATASET_STD).view(1, 3, 1, 1)


def _noisy(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _grey_levels(pixels: torch.Tensor) -> np.ndarray:
    """Undo the CLIP normalisation: B×3×S×S → B×S×S×3 in grey levels (0..255)."""
    return ((pixels * STD + MEAN) * 255).permute(0, 2, 3, 1).numpy()


def test_pil_resize_is_pils_bicubic():
    image = _noisy(200, 300)
    ours = _grey_levels(preprocess_images([image], 64, "cpu", resize="pil"))[0]
    reference = np.asarray(Image.fromarray(image).resize((64, 64), Image.BICUBIC)).astype(np.float32)
    assert np.abs(ours - reference).max() <= 1.0  # ±1 grey level (here: float rounding only)
    # The old resize (torch bicubic, no antialiasing) is far from it when shrinking a noisy image.
    plain = F.interpolate(torch.from_numpy(image).permute(2, 0, 1)[None].float(), size=(64, 64), mode="bicubic",
                          align_corners=False).clamp(0, 255)[0].permute(1, 2, 0).numpy()
    assert np.abs(plain - reference).max() > 20


def test_antialias_resize_is_torchvisions_on_float_images_unclamped():
    image = np.kron(np.indices((8, 12)).sum(0) % 2, np.ones((13, 13)))[..., None].repeat(3, 2)
    image = (image * 255).astype(np.uint8)  # a checkerboard: bicubic overshoots at its edges
    ours = preprocess_images([image], 40, "cpu", resize="antialias")
    as_float = torch.from_numpy(image).permute(2, 0, 1).float() / 255
    reference = v2.Resize((40, 40), interpolation=v2.InterpolationMode.BICUBIC, antialias=True)(as_float)
    torch.testing.assert_close(ours, ((reference[None] - MEAN) / STD), atol=1e-5, rtol=0)
    assert (ours * STD + MEAN).max() > 1.0  # not clamped, as anomalib's pre-processor
    pil = preprocess_images([image], 40, "cpu", resize="pil")
    assert (ours - pil).abs().max() > 0.05  # the two pipelines differ


def test_images_at_the_input_size_are_left_alone_and_bad_input_is_named():
    image = _noisy(32, 32)
    for mode in ("pil", "antialias"):
        np.testing.assert_allclose(_grey_levels(preprocess_images([image], 32, "cpu", resize=mode))[0], image,
                                   atol=1e-3)
    with pytest.raises(ValueError, match="image 1: expected uint8"):
        preprocess_images([image, image.astype(np.uint16)], 32, "cpu")
    with pytest.raises(ValueError, match="resize must be"):
        preprocess_images([image], 32, "cpu", resize="nearest")


def test_positions_are_interpolated_bilinearly_from_the_checkpoint_grid(clip_checkpoint):
    path, saved = clip_checkpoint  # the tiny CLIP is defined at 64 px: an 8×8 grid
    loaded = load_clip_resized("scrapbench-vit-tiny", str(path), 96, init_seed=0)
    original = saved["visual.positional_embedding"]
    grid = original[1:].reshape(1, 8, 8, -1).permute(0, 3, 1, 2)
    expected = F.interpolate(grid, size=(12, 12), mode="bilinear", align_corners=False)
    expected = torch.cat([original[:1], expected.permute(0, 2, 3, 1).reshape(144, -1)])
    torch.testing.assert_close(loaded.visual.positional_embedding.detach(), expected)
    assert loaded.image_size == 96 and loaded.grid_size == 12 and loaded.visual.grid_size == (12, 12)
    # open_clip's own resize at load time (bicubic with antialiasing) gives other embeddings.
    theirs = load_clip("scrapbench-vit-tiny", str(path), 96).visual.positional_embedding.detach()
    assert (theirs - expected).abs().max() > 1e-3
    mine_bicubic = interpolate_positions(load_clip("scrapbench-vit-tiny", str(path), 64), 96, "bicubic")
    torch.testing.assert_close(mine_bicubic.visual.positional_embedding.detach(), theirs)
    with torch.no_grad():  # the model runs at the new size
        tokens = loaded.model.encode_image(torch.zeros(1, 3, 96, 96))
    assert tokens.shape == (1, loaded.model.visual.output_dim)


def test_masks_are_resized_bilinearly_then_kept_above_half():
    mask = np.zeros((120, 90), np.uint8)
    mask[20:50, 10:40] = 1
    mask[80, :] = 1  # a one-pixel line
    ours = resize_masks([mask], 30)[0]
    # AnomalyCLIP: torchvision Resize (bilinear) on the 0/255 PIL mask, ToTensor, > 0.5.
    reference = TVF.to_tensor(TVF.resize(Image.fromarray(mask * 255, mode="L"), [30, 30]))[0] > 0.5
    assert torch.equal(ours, reference.long())
    nearest = F.interpolate(torch.from_numpy(mask)[None, None].float(), size=(30, 30), mode="nearest")[0, 0]
    assert (nearest.long() != ours).sum() > 5


def test_class_masks_keep_each_class_where_it_dominates():
    mask = np.zeros((60, 60), np.uint8)
    mask[:, :30] = 2
    mask[:, 30:] = 3
    mask[:10] = 0
    ours = resize_masks([mask, np.zeros((60, 60), np.uint8)], 20)
    assert set(ours[0].unique().tolist()) == {0, 2, 3}
    assert (ours[0, 5:, :9] == 2).all() and (ours[0, 5:, 11:] == 3).all() and (ours[0, :3] == 0).all()
    assert not ours[1].any()
