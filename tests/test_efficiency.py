"""The fast paths compute what the plain ones did: pre-processing, attention, smoothing, batching, loading."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from PIL import Image
from scipy import ndimage

from scrapbench.core.method import FitContext
from scrapbench.core.registry import create_method
from scrapbench.methods.common.clip_backbone import preprocess_images, run_block, run_block_first_token
from scrapbench.methods.common.clip_weights import load_clip
from scrapbench.methods.common.map_ops import gaussian_filter
from scrapbench.methods.common.vv_attention import block_with_vv, vv_attention

CLASSES = ("motor", "cable", "spray_can")


def _images(*shapes, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, shape, dtype=np.uint8) for shape in shapes]


def _previous_preprocessing(images, size, resize):
    """The pre-processing before device-side batches: per image, float on the device, then normalised."""
    if resize == "pil":
        arrays = [img if img.shape[:2] == (size, size) else np.array(Image.fromarray(img).resize((size, size),
                                                                                                  Image.BICUBIC))
                  for img in images]
        batch = torch.stack([torch.from_numpy(a).permute(2, 0, 1) for a in arrays]).to(torch.float32) / 255.0
    else:
        scaled = [torch.from_numpy(img).permute(2, 0, 1).to(torch.float32) / 255.0 for img in images]
        batch = torch.stack([s if s.shape[-2:] == (size, size) else
                             TF.resize(s, [size, size], interpolation=TF.InterpolationMode.BICUBIC, antialias=True)
                             for s in scaled])
    mean = torch.tensor(OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
    return (batch - mean) / torch.tensor(OPENAI_DATASET_STD).view(1, 3, 1, 1)


@pytest.mark.parametrize("resize", ["pil", "antialias"])
def test_batched_preprocessing_is_the_previous_one_bit_for_bit(resize):
    images = _images((96, 96, 3), (96, 96, 3), (50, 70, 3), (64, 64, 3), (96, 96, 3))  # mixed sizes, one at size
    for size in (64, 80):
        expected = _previous_preprocessing(images, size, resize)
        assert torch.equal(preprocess_images(images, size, "cpu", resize), expected)


def test_pil_like_stays_within_two_grey_levels_of_pil_on_square_patches():
    images = _images((120, 120, 3), (120, 120, 3), seed=3)
    std = torch.tensor(OPENAI_DATASET_STD).view(1, 3, 1, 1)
    for size in (64, 128):
        grey = (preprocess_images(images, size, "cpu", "pil_like") - preprocess_images(images, size, "cpu", "pil"))
        grey = (grey * std * 255).abs()
        assert grey.max() <= 2.0 + 1e-3 and (grey > 0.5).float().mean() < 0.05


@pytest.fixture(scope="module")
def vision():
    return load_clip("scrapbench-vit-tiny", None, 64, init_seed=1).visual.eval()


def test_sdpa_block_is_open_clips_block(vision):
    tokens = torch.randn(3, 65, vision.transformer.width)
    with torch.no_grad():
        for block in vision.transformer.resblocks:  # no_grad: open_clip takes nn.MultiheadAttention's fast path
            torch.testing.assert_close(run_block(block, tokens), block(tokens), atol=1e-5, rtol=0)
            torch.testing.assert_close(run_block_first_token(block, tokens), block(tokens)[:, :1], atol=1e-5, rtol=0)
            tokens = block(tokens)
    # With gradients (ours fine-tunes the encoder): same values and same gradients.
    block = vision.transformer.resblocks[0]
    ours, theirs = (tokens.clone().requires_grad_(True) for _ in range(2))
    run_block(block, ours).square().sum().backward()
    block(theirs).square().sum().backward()
    torch.testing.assert_close(ours.grad, theirs.grad, atol=1e-4, rtol=1e-5)


def test_fused_vv_block_is_the_two_paths_apart(vision):
    tokens = torch.randn(2, 65, vision.transformer.width)
    with torch.no_grad():
        for block in vision.transformer.resblocks:
            fused, update = block_with_vv(block, tokens)
            torch.testing.assert_close(fused, block(tokens), atol=1e-5, rtol=0)
            torch.testing.assert_close(update, block.ls_1(vv_attention(block, block.ln_1(tokens))), atol=1e-5, rtol=0)
            first, first_update = block_with_vv(block, tokens, class_token_only=True)  # AnomalyCLIP's last block
            torch.testing.assert_close(first, fused[:, :1], atol=1e-5, rtol=0)
            torch.testing.assert_close(first_update, update, atol=1e-5, rtol=0)
            tokens = fused


@pytest.mark.parametrize(("shape", "sigma"), [((64, 64), 0.5), ((130, 97), 4.0), ((6, 9), 3.0)])
def test_device_gaussian_is_scipys(shape, sigma):
    maps = np.random.default_rng(1).random((2, *shape)).astype(np.float32) * 4
    expected = np.stack([ndimage.gaussian_filter(m, sigma) for m in maps])
    smoothed = gaussian_filter(torch.from_numpy(maps), sigma, use_scipy=False)  # the GPU path, here on the CPU
    np.testing.assert_array_equal(smoothed.numpy(), expected)


@pytest.mark.parametrize("name", ["winclip", "winclip_plus"])
def test_windows_of_several_images_in_one_batch_give_the_per_image_maps(smoke_dataset, tmp_path, name):
    images = [smoke_dataset.test[i].image for i in range(5)]
    method = create_method(name, CLASSES, "smoke", {"predict_batch_size": 5})
    method.fit(smoke_dataset.train, FitContext(0, "cpu", tmp_path, CLASSES, False))
    together, scores = method.predict_with_scores(images)
    alone = [method.predict_with_scores([image]) for image in images]
    for i, (maps, image_scores) in enumerate(alone):
        np.testing.assert_allclose(together[i], maps[0], atol=1e-6, rtol=0)
        assert abs(scores[i] - image_scores[0]) < 1e-6


def test_training_batches_are_the_same_with_loader_workers(smoke_dataset):
    from scrapbench.methods.common.clip_loader import ChosenBatches, ResizedSamples, batch_loader

    batches = [[3, 0, 7], [5, 1], [2, 6, 4]]
    loaded = []
    for workers in (0, 2):
        sampler = ChosenBatches()
        sampler.set(batches)
        loader = batch_loader(ResizedSamples(smoke_dataset.train, 48, binary=False), sampler, workers, "cpu")
        loaded.append(list(loader))
        del loader
    for (pixels0, target0), (pixels2, target2) in zip(*loaded, strict=True):
        assert torch.equal(pixels0, pixels2) and torch.equal(target0, target2)
    first = smoke_dataset.train[3]
    assert torch.equal(loaded[0][0][0][0], torch.from_numpy(np.array(Image.fromarray(first.image).resize(
        (48, 48), Image.BICUBIC))).permute(2, 0, 1))


def test_anomalyclip_fits_the_same_with_loader_workers(smoke_dataset, tmp_path):
    maps = []
    for workers in (0, 2):
        method = create_method("anomalyclip", smoke_dataset.class_names, "smoke", {"loader_workers": workers})
        method.fit(smoke_dataset.train, FitContext(0, "cpu", tmp_path / str(workers), smoke_dataset.class_names,
                                                   False))
        maps.append(method.predict([smoke_dataset.test[i].image for i in range(4)]))
    for a, b in zip(*maps, strict=True):
        np.testing.assert_array_equal(a, b)


def test_ours_gives_maps_and_class_maps_from_one_pass(smoke_dataset, tmp_path):
    method = create_method("ours", smoke_dataset.class_names, "smoke", {"epochs": 1})
    method.fit(smoke_dataset.train, FitContext(0, "cpu", tmp_path, smoke_dataset.class_names, False))
    images = [smoke_dataset.test[i].image for i in range(3)]
    maps, class_maps = method.predict_with_classes(images)
    for a, b in zip(maps, method.predict(images), strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(class_maps, method.predict_classes(images), strict=True):
        np.testing.assert_array_equal(a, b)
