"""WinCLIP / WinCLIP+ on a tiny random CLIP: weights by path, windows, aggregation, few-shot memory."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

from scrapbench.core.method import FitContext, LearningType, WeightsError
from scrapbench.core.registry import create_method
from scrapbench.methods.common.clip_backbone import layer_tokens, preprocess_images
from scrapbench.methods.common.clip_weights import load_clip
from scrapbench.methods.winclip.scores import (
    Encoding,
    encode,
    few_shot_map,
    harmonic_mean,
    window_masks,
    zero_shot_map,
)

CLASSES = ("motor", "cable", "spray_can")


def _context(tmp_path, seed=0):
    return FitContext(seed=seed, device="cpu", workdir=tmp_path, class_names=CLASSES, show_progress=False)


@pytest.fixture(scope="module")
def plus(smoke_dataset, clip_checkpoint, tmp_path_factory):
    """WinCLIP+ (k = 10) built from the checkpoint and fitted on the smoke train split."""
    method = create_method("winclip_plus", smoke_dataset.class_names, preset="smoke",
                           overrides={"clip_pretrained": str(clip_checkpoint[0])})
    method.fit(smoke_dataset.train, _context(tmp_path_factory.mktemp("fit")))
    return method


# -- weights ---------------------------------------------------------------------------------------
def test_checkpoint_path_loads_through_the_registry(clip_checkpoint):
    path, saved = clip_checkpoint
    method = create_method("winclip", CLASSES, preset="smoke", overrides={"clip_pretrained": str(path)})
    loaded = method._clip.model.state_dict()
    for key, value in saved.items():
        torch.testing.assert_close(loaded[key], value, msg=key)
    info = method.weights_info()
    assert info["random_init"] is False and info["checkpoint"] == str(path)


def test_missing_checkpoint_names_the_file(tmp_path):
    missing = tmp_path / "nowhere" / "vit_b_16_plus_240.pt"
    with pytest.raises(WeightsError, match=re.escape(str(missing))):
        create_method("winclip", CLASSES, preset="smoke", overrides={"clip_pretrained": str(missing)})


def test_presets_mark_random_init_and_names_set_the_variant():
    zero = create_method("winclip", CLASSES, preset="smoke")
    few = create_method("winclip_plus", CLASSES, preset="smoke")
    assert zero.weights_info()["random_init"] is True
    assert (zero.config.k_shot, zero.learning_type) == (0, LearningType.ZERO_SHOT)
    assert (few.config.k_shot, few.learning_type) == (10, LearningType.FEW_SHOT)


def test_prompts_compose_domain_states_with_templates():
    method = create_method("winclip", CLASSES, preset="smoke")
    normal, anomalous = method.prompts()
    templates = method.config.templates
    assert len(normal) == len(templates) and len(anomalous) == len(templates)
    assert "a photo of the object which is made of steel." in normal
    assert "a photo of the object which is not steel." in anomalous
    text = method._text_embeddings()
    assert text.shape == (2, method._clip.model.text_projection.shape[1])
    torch.testing.assert_close(text.norm(dim=-1), torch.ones(2))


def test_prompts_name_the_object_when_the_data_names_one(tmp_path, smoke_dataset):
    """A benchmark category's object name goes into WinCLIP's own state words (as in the paper and anomalib)."""
    from anomalib.models.image.winclip.prompting import create_prompt_ensemble

    method = create_method("winclip", CLASSES, preset="smoke")
    steel = method._text_embeddings()
    ctx = FitContext(seed=0, device="cpu", workdir=tmp_path, class_names=CLASSES, show_progress=False,
                     object_name="metal nut")
    method.fit(smoke_dataset.train, ctx)
    normal, anomalous = method.prompts()
    expected = create_prompt_ensemble("metal nut")
    templates = method.config.templates  # anomalib's, without its one duplicate
    assert set(normal) == set(expected[0]) and set(anomalous) == set(expected[1])
    assert len(normal) == 7 * len(templates) and len(anomalous) == 4 * len(templates)
    assert "a photo of the flawless metal nut." in normal and "a photo of the metal nut with defect." in anomalous
    assert not torch.allclose(method._text, steel)
    assert '"object_name": "metal nut"' in (tmp_path / "winclip_fit.json").read_text()
    method.fit(smoke_dataset.train, _context(tmp_path))  # no object: the steel phrases again
    torch.testing.assert_close(method._text, steel)


# -- windows and aggregation -----------------------------------------------------------------------
def test_window_masks_cover_the_grid():
    small, mid = window_masks(8, (2, 3))
    assert small.shape == (4, 49) and mid.shape == (9, 36)
    for mask, scale in ((small, 2), (mid, 3)):
        rows, cols = mask // 8, mask % 8  # every window is a contiguous scale×scale block
        assert ((rows.max(0).values - rows.min(0).values) == scale - 1).all()
        assert ((cols.max(0).values - cols.min(0).values) == scale - 1).all()
        counts = torch.bincount(mask.flatten(), minlength=64).view(8, 8)
        assert counts[0, 0] == 1 and counts[4, 4] == scale * scale  # corners once, inside scale² times
    with pytest.raises(ValueError, match="uncovered"):
        window_masks(8, (3,), stride=2)  # 8 − 3 = 5 is odd: the last row would be missed
    with pytest.raises(ValueError, match="does not fit"):
        window_masks(8, (9,))


def test_zero_shot_map_by_hand():
    """3×3 grid, 2×2 windows; window 0 (top-left) looks anomalous, everything else normal."""
    text = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # normal, anomalous
    normal, anomalous = text
    windows = torch.stack([anomalous, normal, normal, normal])[None]  # 1×4×2
    encoding = Encoding(image=normal[None], windows=[windows], patches=[])
    amap = zero_shot_map(encoding, text, window_masks(3, (2,)), 3, temperature=1.0)
    p_anom, p_norm = math.e / (1 + math.e), 1 / (1 + math.e)  # softmax of cosines (1, 0) at T = 1
    top_left = 2 / (1 / p_anom + 1 / p_norm)  # only window 0 covers it; harmonic with the image scale
    centre_window = 4 / (1 / p_anom + 3 / p_norm)  # the centre is covered by all four windows
    centre = 2 / (1 / centre_window + 1 / p_norm)
    torch.testing.assert_close(amap[0, 0, 0], torch.tensor(top_left))
    torch.testing.assert_close(amap[0, 1, 1], torch.tensor(centre))
    torch.testing.assert_close(amap[0, 2, 2], torch.tensor(p_norm))
    assert amap[0, 0, 0] > amap[0, 1, 1] > amap[0, 2, 2]


def test_harmonic_mean_is_pulled_down_by_small_values():
    values = torch.tensor([[1.0, 0.25], [0.5, 0.0]])
    torch.testing.assert_close(harmonic_mean(values, dim=1), torch.tensor([0.4, 0.0]))


def test_window_embedding_sees_only_its_window(clip_checkpoint):
    """Token masking: pixels outside a window do not change its embedding; they change the image's."""
    loaded = load_clip("scrapbench-vit-tiny", str(clip_checkpoint[0]), 64)
    image = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    changed = image.copy()
    changed[32:] = 255 - changed[32:]  # patch rows 4..7 of the 8×8 grid
    masks = window_masks(8, (2,))
    with torch.inference_mode():
        pixels = preprocess_images([image, changed], 64, "cpu")
        enc = encode(loaded.visual, pixels, masks, memory_layers=(3,), memory_ln_post=False)
    top_windows = (masks[0] // 8).max(0).values <= 3  # windows entirely in patch rows 0..3
    torch.testing.assert_close(enc.windows[0][0, top_windows], enc.windows[0][1, top_windows])
    assert not torch.allclose(enc.windows[0][0, ~top_windows], enc.windows[0][1, ~top_windows])
    assert not torch.allclose(enc.image[0], enc.image[1])
    assert enc.patches[0].shape == (2, 64, loaded.visual.transformer.width)


# -- few-shot --------------------------------------------------------------------------------------
def test_references_are_k_normals_chosen_by_seed(plus, smoke_dataset, tmp_path):
    train = smoke_dataset.train
    ids = plus.weights_info()["reference_ids"]
    assert len(ids) == 10 == len(set(ids))
    assert all(not train.has_anomaly[train.ids.index(i)] for i in ids)
    again = create_method("winclip_plus", CLASSES, preset="smoke")
    again.fit(train, _context(tmp_path / "same"))
    assert again.weights_info()["reference_ids"] == ids
    again.fit(train, _context(tmp_path / "other", seed=1))
    assert again.weights_info()["reference_ids"] != ids


def test_reference_as_query_gives_near_zero_few_shot_anomaly(plus, smoke_dataset):
    train = smoke_dataset.train
    reference = train[train.ids.index(plus.weights_info()["reference_ids"][0])].image
    edited = reference.copy()
    edited[:24, :24] = np.random.default_rng(1).integers(0, 256, (24, 24, 3), dtype=np.uint8)
    maps = plus.grid_maps([reference, edited])
    few = maps["few_shot"]
    assert few[0].abs().max() < 1e-4
    region = torch.zeros(8, 8, dtype=torch.bool)
    region[:3, :3] = True  # the 24×24 px edit covers patches 0..2 in both directions
    assert few[1][region].mean() > 10 * few[1][~region].mean() + 1e-3
    assert few[1][region].min() > few[0].max()
    torch.testing.assert_close(maps["combined"], (maps["zero_shot"] + few) / 2)
    out = plus.predict([edited])[0]
    assert out.shape == (64, 64) and out.dtype == np.float32
    assert out[:16, :16].mean() > out[40:, 40:].mean()


def test_few_shot_map_is_the_mean_of_window_and_patch_maps():
    """One reference, 2×2 grid, one 1×1 'window' scale: maps average the scales."""
    masks = window_masks(2, (1,))
    basis = torch.eye(3)
    memory = Encoding(basis[:1], [basis[None, [0, 0, 0, 0]]], [basis[None, [0, 0, 0, 0]]])
    query = Encoding(basis[:1], [basis[None, [0, 1, 0, 0]]], [basis[None, [0, 0, 2, 0]]])
    amap = few_shot_map(query, memory, masks, 2)[0]
    # orthogonal to the memory: (1 − 0) / 2 = 0.5; window map and patch map each flag one patch.
    torch.testing.assert_close(amap, torch.tensor([[0.0, 0.25], [0.25, 0.0]]))


def test_same_seed_same_maps(plus, smoke_dataset, clip_checkpoint, tmp_path):
    images = [s.image for s in smoke_dataset.test[:3]]
    again = create_method("winclip_plus", CLASSES, preset="smoke",
                          overrides={"clip_pretrained": str(clip_checkpoint[0])})
    again.fit(smoke_dataset.train, _context(tmp_path))
    for first, second in zip(plus.predict(images), again.predict(images), strict=True):
        np.testing.assert_array_equal(first, second)


def test_plus_without_memory_fails_clearly():
    method = create_method("winclip_plus", CLASSES, preset="smoke")
    with pytest.raises(RuntimeError, match="call fit"):
        method.predict([np.zeros((64, 64, 3), dtype=np.uint8)])


# -- anomalib's pre- and post-processing ---------------------------------------------------------------------------
def test_text_features_average_the_raw_prompt_embeddings(clip_checkpoint):
    method = create_method("winclip", CLASSES, preset="smoke", overrides={"clip_pretrained": str(clip_checkpoint[0])})
    model, tokenizer = method._clip.model, method._clip.tokenizer
    with torch.no_grad():
        raw = [model.encode_text(tokenizer(group)).mean(0) for group in method.prompts()]
        normalised_first = [torch.nn.functional.normalize(model.encode_text(tokenizer(group)), dim=-1).mean(0)
                            for group in method.prompts()]
    expected = torch.nn.functional.normalize(torch.stack(raw), dim=-1)
    torch.testing.assert_close(method._text_embeddings(), expected)
    assert (torch.nn.functional.normalize(torch.stack(normalised_first), dim=-1) - expected).abs().max() > 1e-5
    # anomalib's template list, duplicate included: 21 templates per state phrase.
    assert len(method.prompts()[0]) == 21


def test_image_scores_are_the_class_token_score_and_the_few_shot_maximum(plus, smoke_dataset):
    images = [s.image for s in smoke_dataset.test[:3]]
    maps = plus.grid_maps(images)
    encoding = plus._encode(images)
    zero_shot = torch.softmax(encoding.image @ plus._text.T / 0.07, dim=-1)[:, 1]
    expected = (zero_shot + maps["few_shot"].amax(dim=(-2, -1))) / 2
    _, scores = plus.predict_with_scores(images)
    np.testing.assert_allclose(scores, expected.numpy(), atol=1e-6)
    zero = create_method("winclip", CLASSES, preset="smoke")
    zero.load_state_dict({"text_embeddings": plus._text})
    zero._clip = plus._clip
    _, zero_scores = zero.predict_with_scores(images)
    np.testing.assert_allclose(zero_scores, zero_shot.numpy(), atol=1e-6)


def test_every_window_runs_through_the_vit_alone(clip_checkpoint):
    """Pins the window embedding to a ViT forward on the CLS token plus the window's own tokens. anomalib 2.7
    feeds open_clip 3.x's batch-first transformer sequence-first: attention then mixes the windows and every
    window embedding comes out the same."""
    loaded = load_clip("scrapbench-vit-tiny", str(clip_checkpoint[0]), 64)
    visual = loaded.visual
    image = np.random.default_rng(3).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    masks = window_masks(8, (2, 3))
    with torch.inference_mode():
        pixels = preprocess_images([image], 64, "cpu", resize="antialias")
        enc = encode(visual, pixels, masks, memory_layers=())
        tokens = visual.ln_pre(torch.cat([visual.class_embedding.expand(1, 1, -1),
                                          visual.conv1(pixels).flatten(2).transpose(1, 2)], dim=1)
                               + visual.positional_embedding)
        for scale, mask in zip((0, 1), masks, strict=True):
            for window in (0, 7, mask.shape[1] - 1):
                alone = tokens[:, torch.cat([torch.tensor([0]), mask[:, window] + 1])]  # 1×(1+s²)×width
                expected = visual.ln_post(visual.transformer(alone)[:, 0]) @ visual.proj
                torch.testing.assert_close(enc.windows[scale][0, window],
                                           torch.nn.functional.normalize(expected, dim=-1)[0], atol=1e-5, rtol=0)
    for windows in enc.windows:
        assert windows[0].std(dim=0).max() > 1e-2  # windows differ (anomalib 2.7: all equal, std 0)


def test_few_shot_memory_is_the_last_block_after_ln_post(plus, smoke_dataset):
    images = [s.image for s in smoke_dataset.test[:2]]
    visual = plus._clip.visual
    with torch.inference_mode():
        pixels = preprocess_images(images, 64, "cpu", resize="antialias")
        _, final = layer_tokens(visual, pixels, (4,))
        expected = torch.nn.functional.normalize(visual.ln_post(final[:, 1:]), dim=-1)
    torch.testing.assert_close(plus._encode(images).patches[0], expected)
