"""The paper's method: MSM geometry, losses, what trains and what stays frozen, ablations, weights."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from scrapbench.core.method import FitContext, WeightsError
from scrapbench.core.registry import create_method
from scrapbench.methods.common.clip_backbone import preprocess_images
from scrapbench.methods.common.losses import class_balanced_weights, multiclass_dice_loss, multiclass_focal_loss
from scrapbench.methods.ours.method import random_dihedral
from scrapbench.methods.ours.msm import MultiScaleMechanism, ScalePath, pool_tokens

CLASSES = ("motor", "cable", "spray_can")


def test_pooling_averages_windows_and_clips_large_ones():
    grid = torch.arange(36, dtype=torch.float32).reshape(1, 1, 6, 6)
    pooled = pool_tokens(grid, 3)
    assert pooled.shape == (1, 1, 2, 2)
    assert pooled[0, 0, 0, 0] == grid[0, 0, :3, :3].mean()
    assert pooled[0, 0, 1, 1] == grid[0, 0, 3:, 3:].mean()
    whole = pool_tokens(grid, 9)  # a 9×9 window on a 6×6 grid sees the whole grid once
    assert whole.shape == (1, 1, 1, 1) and whole.item() == pytest.approx(grid.mean().item())
    ragged = pool_tokens(torch.ones(1, 1, 8, 8), 3)  # ceil mode: the border windows are partial
    assert ragged.shape == (1, 1, 3, 3) and torch.allclose(ragged, torch.ones_like(ragged))


def test_pooling_with_stride_one_slides_the_window():
    grid = torch.arange(36, dtype=torch.float32).reshape(1, 1, 6, 6)
    pooled = pool_tokens(grid, 3, stride=1)
    assert pooled.shape == (1, 1, 4, 4)
    assert pooled[0, 0, 1, 2] == grid[0, 0, 1:4, 2:5].mean()


def test_scale_path_starts_as_the_plain_similarity():
    """The attention enters through a zero-initialised residual, so at first a pseudo map is the
    similarity of the pooled tokens with the text; one step later the attention contributes."""
    torch.manual_seed(0)
    path = ScalePath(dim=8, heads=2)
    tokens, text = torch.randn(2, 5, 8), torch.nn.functional.normalize(torch.randn(3, 8), dim=-1)
    plain = torch.nn.functional.normalize(tokens, dim=-1) @ text.t() / 0.5
    torch.testing.assert_close(path(tokens, text, 0.5), plain)
    path(tokens, text, 0.5)[..., 0].sum().backward()
    assert path.proj.weight.grad.abs().sum() > 0


def test_pseudo_maps_upsample_each_scale_to_the_patch_grid():
    """Hand-made grid: left half of the tokens = text 0, right half = text 1. With 2×2 windows the
    coarse pseudo map keeps the halves apart; the 6×6 window sees one mixed token everywhere."""
    text = torch.eye(4)[:2]
    grid = torch.zeros(1, 4, 6, 6)
    grid[0, 0, :, :3] = 1.0
    grid[0, 1, :, 3:] = 1.0
    fine = MultiScaleMechanism(dim=4, num_classes=2, scales=(2,), heads=1).pseudo_maps(grid, text, 1.0)
    assert fine.shape == (1, 2, 6, 6)
    assert torch.allclose(fine[0, 0, :, 0], torch.ones(6)) and torch.allclose(fine[0, 0, :, 5], torch.zeros(6))
    assert (fine[0, 0, 0, :-1] >= fine[0, 0, 0, 1:]).all()  # bilinear: monotone from left to right
    whole = MultiScaleMechanism(dim=4, num_classes=2, scales=(6,), heads=1).pseudo_maps(grid, text, 1.0)
    assert torch.allclose(whole, torch.full_like(whole, 2 ** -0.5))
    both = MultiScaleMechanism(dim=4, num_classes=2, scales=(2, 6), heads=1).pseudo_maps(grid, text, 1.0)
    torch.testing.assert_close(both, fine + whole)  # scales are summed


def test_augmentation_turns_image_and_mask_together():
    torch.manual_seed(0)
    mask = torch.randint(0, 4, (6, 8, 8))
    pixels = torch.stack([mask.float(), -mask.float(), torch.rand(6, 8, 8)], dim=1)
    turned, turned_mask = random_dihedral(pixels, mask, np.random.default_rng(0))
    assert torch.equal(turned[:, 0].long(), turned_mask) and torch.equal(turned[:, 1], -turned[:, 0])
    assert not torch.equal(turned_mask, mask)
    again, _ = random_dihedral(pixels, mask, np.random.default_rng(0))
    assert torch.equal(again, turned)


def test_msm_returns_a_map_on_the_patch_grid():
    torch.manual_seed(0)
    msm = MultiScaleMechanism(dim=16, num_classes=4, scales=(3, 9), heads=2)
    grid = torch.nn.functional.normalize(torch.randn(2, 16, 8, 8), dim=1)
    text = torch.nn.functional.normalize(torch.randn(4, 16), dim=-1)
    out = msm(grid, text, temperature=0.07)
    assert out.shape == (2, 4, 8, 8) and torch.isfinite(out).all()
    out.sum().backward()
    assert all(p.grad is not None for p in msm.parameters())


def test_constant_coarse_maps_upsample_to_constants():
    """A grid whose tokens are all equal gives the same pseudo map everywhere, at every scale."""
    torch.manual_seed(0)
    msm = MultiScaleMechanism(dim=8, num_classes=2, scales=(2, 4), heads=1)
    msm.encoder = torch.nn.Identity()
    token = torch.nn.functional.normalize(torch.randn(8), dim=0)
    grid = token.view(1, 8, 1, 1).expand(1, 8, 8, 8).contiguous()
    out = msm(grid, torch.nn.functional.normalize(torch.randn(2, 8), dim=-1), temperature=1.0)
    assert torch.allclose(out, out[..., :1, :1].expand_as(out), atol=1e-5)


def test_class_balanced_weights_favour_rare_classes():
    weights = class_balanced_weights(torch.tensor([1_000_000, 5000, 500, 0]), beta=0.99999)
    assert weights[0] < weights[1] < weights[2] <= weights[3]
    assert weights.sum().item() == pytest.approx(4.0)


def test_class_balance_at_table_1_counts_balances():
    """Table 1: 7,838 normal train images; 467 motor, 172 cable, 97 spray-can images. Counting images with
    β = (N − 1)/N (Cui et al.) the weights differ materially; counting pixels they come out equal."""
    images = class_balanced_weights(torch.tensor([7838.0, 467.0, 172.0, 97.0]))
    assert images[0] < 0.1 and images[3] > 2.0 and images[3] / images[0] > 40
    assert images[0] < images[1] < images[2] < images[3]
    beta = (8574 - 1) / 8574
    torch.testing.assert_close(images, class_balanced_weights(torch.tensor([7838.0, 467.0, 172.0, 97.0]), beta))
    # The old choices: pixel counts at 518 px (a few % of each anomalous image per class) with β near 1.
    pixels = torch.tensor([8574 * 518**2 * 0.99, 467 * 518**2 * 0.05, 172 * 518**2 * 0.02, 97 * 518**2 * 0.02])
    flat = class_balanced_weights(pixels, 0.99999)
    assert (flat.max() - flat.min()) < 0.01  # no balancing at all
    saturated = class_balanced_weights(pixels, 0.999999)
    assert saturated[0].item() == pytest.approx(saturated[1].item(), rel=0.01)  # normal weighs as much as motor
    with pytest.raises(ValueError, match="β"):
        class_balanced_weights(torch.tensor([5.0, 1.0]), beta=1.0)


def test_losses_reward_the_right_answer():
    target = torch.zeros(1, 4, 4, dtype=torch.long)
    target[0, 1:3, 1:3] = 2
    right = torch.nn.functional.one_hot(target, 3).permute(0, 3, 1, 2).float() * 20
    wrong = torch.roll(right, 1, dims=1)
    assert multiclass_focal_loss(right, target, 2.0, None) < 1e-6 < multiclass_focal_loss(wrong, target, 2.0, None)
    assert multiclass_dice_loss(right, target) < 0.05 < multiclass_dice_loss(wrong, target)
    heavy = multiclass_focal_loss(wrong, target, 2.0, torch.tensor([1.0, 1.0, 10.0]))
    assert heavy > multiclass_focal_loss(wrong, target, 2.0, None)  # the weighted class costs more when missed


def test_one_fit_trains_encoder_prompts_and_msm_but_not_the_text_tower(smoke_dataset, tmp_path):
    method = create_method("ours", smoke_dataset.class_names, preset="smoke", overrides={"epochs": 1})
    method._build()
    before = {k: v.clone() for k, v in method.model.state_dict().items()}
    text_before = {k: v.clone() for k, v in method.model.prompts._text.tower.transformer.state_dict().items()}
    method.model = None  # fit builds it again from the same seeds
    method.fit(smoke_dataset.train, FitContext(0, "cpu", tmp_path, smoke_dataset.class_names, False))
    after = method.model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert any(k.startswith("visual.transformer") for k in changed), "image encoder must be fine-tuned"
    assert any(k.startswith("prompts.") for k in changed) and any(k.startswith("msm.") for k in changed)
    text_after = method.model.prompts._text.tower.transformer.state_dict()
    assert all(torch.equal(text_before[k], text_after[k]) for k in text_before), "text tower must stay frozen"
    log = json.loads((tmp_path / "ours_train_log.json").read_text())
    assert len(log["epochs"]) == 1 and len(log["class_weights"]) == 4
    [classes] = method.predict_classes([smoke_dataset.test[0].image])
    assert classes.shape == (3, 64, 64)
    [binary] = method.predict([smoke_dataset.test[0].image])
    assert binary.shape == (64, 64) and not np.allclose(binary, classes.mean(0), atol=1e-4)
    method.config = replace(method.config, binary_scoring="class_mean")
    [binary] = method.predict([smoke_dataset.test[0].image])
    np.testing.assert_allclose(binary, classes.mean(0), rtol=1e-4, atol=1e-5)


def test_ablations_differ_only_in_msm():
    full = create_method("ours", CLASSES, preset="smoke")
    assert full.config.msm_scales == (3, 9) and full.config.use_msm
    assert create_method("ours_msm_5_11", CLASSES, preset="smoke").config.msm_scales == (5, 11)
    assert create_method("ours_msm_7_13", CLASSES, preset="smoke").config.msm_scales == (7, 13)
    no_msm = create_method("ours_no_msm", CLASSES, preset="smoke")
    assert no_msm._build().msm is None
    assert not any(k.startswith("msm.") for k in no_msm.model.state_dict())
    assert full._build().msm is not None


def test_paper_preset_is_the_papers_configuration():
    config = create_method("ours", CLASSES, preset="paper").config
    assert (config.clip_model, config.clip_pretrained, config.image_size) == ("ViT-L-14-336-quickgelu", "openai", 518)
    assert config.feature_layers == (6, 12, 18, 24) and config.msm_scales == (3, 9)
    assert (config.lr, config.epochs, config.batch_size) == (1e-6, 15, 4)
    assert (config.prompt_length, config.deep_prompt_depth, config.deep_prompt_length) == (16, 9, 4)
    assert config.msm_stage_weights == (0.1, 0.1, 0.1, 0.7)


def test_weights_load_from_a_checkpoint_file(clip_checkpoint, tmp_path):
    path, saved = clip_checkpoint
    method = create_method("ours", CLASSES, preset="smoke", overrides={"clip_pretrained": str(path)})
    model = method._build()
    assert torch.equal(model.visual.conv1.weight, saved["visual.conv1.weight"])
    assert method.weights_info()["random_init"] is False
    missing = create_method("ours", CLASSES, preset="smoke", overrides={"clip_pretrained": str(tmp_path / "no.pt")})
    with pytest.raises(WeightsError, match=r"no\.pt"):
        missing._build()


def test_class_weights_count_images_of_the_train_split():
    method = create_method("ours", CLASSES, preset="smoke")
    one, two = np.zeros((64, 64), np.uint8), np.zeros((64, 64), np.uint8)
    one[:10, :10] = 1
    one[20:22, :5] = 3
    two[5:9, 5:9] = 1
    weights = method._class_weights({"a": one, "b": two}, num_normal_images=7)
    torch.testing.assert_close(weights, class_balanced_weights(torch.tensor([7.0, 2.0, 0.0, 1.0])))
    assert weights[0] < weights[1] < weights[3]


def test_class_weights_can_count_pixels():
    method = create_method("ours", CLASSES, preset="smoke",
                           overrides={"class_balance_counts": "pixels", "class_balance_beta": 0.999})
    mask = np.zeros((64, 64), np.uint8)
    mask[:10, :10] = 1
    mask[20:22, :5] = 3
    weights = method._class_weights({"a": mask}, num_normal_images=3)
    expected = class_balanced_weights(torch.tensor([4 * 64 * 64 - 110, 100, 0, 10]), 0.999)
    torch.testing.assert_close(weights, expected)


@pytest.fixture(scope="module")
def fitted_ours(smoke_dataset, tmp_path_factory):
    method = create_method("ours", CLASSES, preset="smoke", overrides={"epochs": 1})
    method.fit(smoke_dataset.train, FitContext(0, "cpu", tmp_path_factory.mktemp("ours"), CLASSES, False))
    return method


def test_binary_test_is_a_two_way_softmax_against_the_averaged_anomaly_prompt(fitted_ours, smoke_dataset):
    """Sec. 4.1: normal prompt vs one anomaly prompt, "object which is not steel", whose learned context is
    the mean of the three anomaly prompts' contexts."""
    model = fitted_ours.model
    prompts = model.prompts
    with torch.no_grad():
        pair = model.binary_text("object which is not steel")
        mean = prompts.context[1:].mean(0, keepdim=True)
        expected = prompts.encode_with_context((prompts.texts[0], "object which is not steel"),
                                               torch.cat([prompts.context[:1], mean]))
        torch.testing.assert_close(pair, expected)
        torch.testing.assert_close(pair[0], prompts()[0])
        pixels = preprocess_images([smoke_dataset.test[0].image], 64, "cpu")
        grids = model.stage_features(pixels)
        local = sum((torch.einsum("bdhw,cd->bchw", g, pair) / 0.07).softmax(1)[:, 1] for g in grids) / len(grids)
        binary, _ = model.anomaly_maps(pixels, "averaged_prompt", "object which is not steel", 0.0)
    torch.testing.assert_close(binary, local)


def test_msm_map_weight_mixes_local_and_msm_maps(fitted_ours, smoke_dataset):
    model = fitted_ours.model
    pixels = preprocess_images([smoke_dataset.test[0].image], 64, "cpu")
    maps = {w: model.anomaly_maps(pixels, "class_mean", "object which is not steel", w) for w in (0.0, 0.25, 1.0)}
    torch.testing.assert_close(maps[0.25][1], 0.75 * maps[0.0][1] + 0.25 * maps[1.0][1])
    assert not torch.allclose(maps[0.0][1], maps[1.0][1])
    binary = {w: model.anomaly_maps(pixels, "averaged_prompt", "object which is not steel", w)[0]
              for w in (0.0, 0.25, 1.0)}
    torch.testing.assert_close(binary[0.25], 0.75 * binary[0.0] + 0.25 * binary[1.0])
    with pytest.raises(ValueError, match="msm_map_weight"):
        create_method("ours", CLASSES, preset="smoke", overrides={"msm_map_weight": 1.5})
    with pytest.raises(ValueError, match="binary_scoring"):
        create_method("ours", CLASSES, preset="smoke", overrides={"binary_scoring": "max"})
