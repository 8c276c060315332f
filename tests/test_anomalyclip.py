"""AnomalyCLIP through the registry on a tiny random CLIP: weights by path, V-V path, frozen encoder."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from scrapbench.core.method import FitContext, WeightsError
from scrapbench.core.registry import create_method
from scrapbench.methods.common.clip_backbone import layer_tokens, preprocess_images, project_tokens
from scrapbench.methods.common.clip_weights import load_clip
from scrapbench.methods.common.losses import binary_dice_loss, binary_focal_loss
from scrapbench.methods.common.vv_attention import vv_layer_tokens
from scrapbench.run.provenance import seed_everything

CLASSES = ("motor", "cable", "spray_can")


def _context(tmp_path, seed=0):
    return FitContext(seed=seed, device="cpu", workdir=tmp_path, class_names=CLASSES, show_progress=False)


@pytest.fixture(scope="module")
def fitted(smoke_dataset, clip_checkpoint, tmp_path_factory):
    """Method loaded from the checkpoint, with image/text weights before and after fit."""
    path, _ = clip_checkpoint
    method = create_method("anomalyclip", smoke_dataset.class_names, preset="smoke",
                           overrides={"clip_pretrained": str(path)})
    before = {k: v.clone() for k, v in method._clip.model.state_dict().items()}
    method.fit(smoke_dataset.train, _context(tmp_path_factory.mktemp("fit")))
    return method, before


def test_checkpoint_path_loads_through_the_registry(fitted, clip_checkpoint):
    method, before = fitted
    path, saved = clip_checkpoint
    assert before.keys() == saved.keys()
    for key, value in saved.items():
        torch.testing.assert_close(before[key], value, msg=key)
    info = method.weights_info()
    assert info["random_init"] is False and info["checkpoint"] == str(path)
    default_init = load_clip("scrapbench-vit-tiny", None, 64).model.state_dict()
    assert not torch.equal(default_init["visual.conv1.weight"], saved["visual.conv1.weight"])


def test_missing_checkpoint_names_the_file(tmp_path):
    missing = tmp_path / "nowhere" / "ViT-L-14-336.pt"
    with pytest.raises(WeightsError, match=re.escape(str(missing))):
        create_method("anomalyclip", CLASSES, preset="smoke", overrides={"clip_pretrained": str(missing)})


def test_smoke_preset_is_marked_random_init():
    assert create_method("anomalyclip", CLASSES, preset="smoke").weights_info()["random_init"] is True


def test_encoders_frozen_and_prompts_trained(fitted):
    method, before = fitted
    after = method._clip.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "CLIP weights changed during fit"
    assert not any(p.requires_grad for p in method._clip.model.visual.parameters())
    # fit starts from the prompts that seed 0 draws; they must have moved.
    seed_everything(0)
    initial = method._new_learner().state_dict()
    trained = method.learner.state_dict()
    assert not torch.allclose(initial["context"], trained["context"])
    assert not torch.allclose(initial["deep_prompts.0"], trained["deep_prompts.0"])


def test_training_log_in_workdir(smoke_dataset, tmp_path):
    method = create_method("anomalyclip", CLASSES, preset="smoke", overrides={"epochs": 2})
    method.fit(smoke_dataset.train, _context(tmp_path))
    log = (tmp_path / "anomalyclip_train_log.json").read_text()
    assert '"epoch": 2' in log


def test_four_layer_maps_differ(fitted, smoke_dataset):
    method, _ = fitted
    images = [s.image for s in smoke_dataset.test[:2]]
    layer_maps = method.layer_anomaly_maps(images)
    assert layer_maps.shape == (2, 4, 64, 64)
    for i in range(4):
        for j in range(i + 1, 4):
            assert not torch.allclose(layer_maps[:, i], layer_maps[:, j]), f"layers {i} and {j} gave the same map"


def test_predict_maps_each_image_at_its_own_size(fitted):
    method, _ = fitted
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (48, 80, 3), dtype=np.uint8), rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)]
    maps = method.predict(images)
    assert [m.shape for m in maps] == [(48, 80), (64, 64)]
    assert all(m.dtype == np.float32 and np.isfinite(m).all() for m in maps)


def test_vv_path_keeps_the_ordinary_path_and_changes_patch_tokens():
    torch.manual_seed(0)
    visual = load_clip("scrapbench-vit-tiny", None, 64).visual
    pixels = preprocess_images([np.full((64, 64, 3), 128, np.uint8), np.zeros((64, 64, 3), np.uint8)], 64, "cpu")
    pixels = pixels + 0.1 * torch.randn_like(pixels)
    with torch.no_grad():
        plain, plain_final = layer_tokens(visual, pixels, (1, 2, 3, 4))
        off, _ = vv_layer_tokens(visual, pixels, (1, 2, 3, 4), vv_from_layer=5)  # past the last block
        vv, vv_final = vv_layer_tokens(visual, pixels, (1, 2, 3, 4), vv_from_layer=3)
    for a, b in zip(plain, off, strict=True):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(vv_final, plain_final)  # the ordinary path is the frozen encoder's
    torch.testing.assert_close(vv[0], plain[0])
    torch.testing.assert_close(vv[1], plain[1])  # before vv_from_layer: ordinary tokens
    assert not torch.allclose(vv[2], plain[2]) and not torch.allclose(vv[3], plain[3])


def test_losses_reward_the_right_map():
    target = torch.zeros(2, 1, 8, 8)
    target[0, 0, 2:5, 2:5] = 1
    perfect = torch.stack([1 - target, target], dim=2)  # [B, L, 2, H, W]
    wrong = perfect.flip(2)
    assert binary_focal_loss(perfect.clamp(1e-6, 1), target, 2.0).item() < 1e-6
    assert binary_focal_loss(wrong.clamp(1e-6, 1 - 1e-6), target, 2.0).item() > 1.0
    assert binary_dice_loss(perfect[:, :, 1], target).item() < 1e-6
    assert binary_dice_loss(wrong[:, :, 1], target).item() > 0.4


# -- the release's pre- and post-processing ----------------------------------------------------------------------
def test_image_score_is_the_class_token_softmax_without_ln_post(fitted, smoke_dataset):
    """The release scores an image by the abnormal softmax of the final CLS token projected without ln_post."""
    method, _ = fitted
    images = [s.image for s in smoke_dataset.test[:4]]
    maps, scores = method.predict_with_scores(images)
    visual = method._clip.visual
    with torch.no_grad():
        pixels = preprocess_images(images, 64, "cpu", resize="pil")
        _, final = vv_layer_tokens(visual, pixels, (1, 2, 3, 4), vv_from_layer=1)
        text = method.learner()
        cls = torch.nn.functional.normalize(final[:, 0] @ visual.proj, dim=-1)
        expected = (cls @ text.T / 0.07).softmax(dim=-1)[:, 1]
        with_ln_post = torch.nn.functional.normalize(project_tokens(visual, final[:, 0]), dim=-1)
        other = (with_ln_post @ text.T / 0.07).softmax(dim=-1)[:, 1]
    np.testing.assert_allclose(scores, expected.numpy(), atol=1e-6)
    assert np.abs(other.numpy() - expected.numpy()).max() > 1e-4  # ln_post would change the score
    assert not np.allclose(scores, [m.max() for m in maps])
    by_max = create_method("anomalyclip", CLASSES, preset="smoke", overrides={"image_score": "map_max"})
    by_max.load_state_dict(method.state_dict())
    max_maps, max_scores = by_max.predict_with_scores(images)
    np.testing.assert_allclose(max_scores, [m.max() for m in max_maps])


def test_positions_come_bilinearly_from_the_checkpoint_grid(clip_checkpoint):
    path, saved = clip_checkpoint  # saved at the tiny CLIP's own 64 px
    method = create_method("anomalyclip", CLASSES, preset="smoke",
                           overrides={"clip_pretrained": str(path), "image_size": 96})
    grid = saved["visual.positional_embedding"][1:].reshape(1, 8, 8, -1).permute(0, 3, 1, 2)
    expected = torch.nn.functional.interpolate(grid, size=(12, 12), mode="bilinear", align_corners=False)
    torch.testing.assert_close(method._clip.visual.positional_embedding[1:].detach(),
                               expected.permute(0, 2, 3, 1).reshape(144, -1))


def test_training_masks_are_resized_bilinearly_and_thresholded():
    import torchvision.transforms.functional as TVF
    from PIL import Image

    from scrapbench.datasets.types import Sample, Split
    from scrapbench.methods.common.clip_loader import ResizedSamples

    method = create_method("anomalyclip", CLASSES, preset="smoke")
    mask = np.zeros((256, 200), np.uint8)
    mask[100, :] = 2  # a one-pixel line of class 2, and a block of class 1
    mask[30:90, 40:120] = 1
    split = Split.from_samples("train", [Sample(np.zeros((256, 200, 3), np.uint8), mask, "a")])
    # What fit's loader hands each training step (binary=True is AnomalyCLIP's).
    pixels, target = ResizedSamples(split, method.config.image_size, binary=True)[0]
    assert pixels.dtype == torch.uint8 and pixels.shape == (3, 64, 64)
    masks = target[None].float()
    reference = TVF.to_tensor(TVF.resize(Image.fromarray((mask > 0).astype(np.uint8) * 255, mode="L"), [64, 64]))
    assert torch.equal(masks[0], (reference[0] > 0.5).float())
    assert masks.dtype == torch.float32 and set(masks.unique().tolist()) == {0.0, 1.0}
