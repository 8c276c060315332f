"""Evaluators of parts of a test set merge into the evaluator of the whole, bit for bit (sharded prediction)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from scrapbench.metrics import MetricsError, PixelMetrics
from scrapbench.metrics.merge import merge
from scrapbench.metrics.regions import ground_truth_regions, pro_weights
from scrapbench.metrics.state import ANOMALOUS_FIELDS, IMAGE_FIELDS, REGION_FIELDS, gather


def _many_regions(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Maps with many small regions of awkward areas (1/area rounds), scaled per image so the grid grows."""
    rng = np.random.default_rng(seed)
    maps = rng.random((n, 48, 48)).astype(np.float32)
    masks = np.zeros((n, 48, 48), np.int64)
    for i in range(n):
        for _ in range(5):
            y, x = rng.integers(0, 40, 2)
            h, w = rng.integers(2, 9, 2)
            masks[i, y:y + h, x:x + w] = rng.integers(1, 3) if i < n // 2 else rng.integers(1, 4)  # class 3: late
        maps[i][masks[i] > 0] += 0.3
        maps[i] *= rng.uniform(0.5, 2.0)
    maps[-2] *= 50.0  # a late outlier: the second part's grid is much coarser than the first's
    return maps, masks, [f"im{i}" for i in range(n)]


def _streamed(maps, masks, ids, lo, hi, batch, **kw) -> PixelMetrics:
    m = PixelMetrics(**kw)
    for start in range(lo, hi, batch):
        stop = min(start + batch, hi)
        m.update(maps[start:stop], masks[start:stop], ids=ids[start:stop])
    return m


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("bins", [1024, 1 << 18])
def test_merged_parts_equal_the_whole_bit_for_bit(seed, bins):
    maps, masks, ids = _many_regions(30, seed)
    kw = {"class_names": ("a", "b", "c"), "bins": bins, "bootstrap_bins": 64}
    whole = _streamed(maps, masks, ids, 0, 30, 8, **kw)
    parts = [_streamed(maps, masks, ids, lo, hi, 8, **kw) for lo, hi in ((0, 8), (8, 24), (24, 30))]
    merged = merge(parts)
    assert json.dumps(merged.compute()) == json.dumps(whole.compute())
    assert merged.grid == whole.grid and merged.ids == whole.ids and merged.count == whole.count
    np.testing.assert_array_equal(merged.class_values, whole.class_values)
    for name in ("neg", "pos", "pro_size", "pro_class"):
        assert np.array_equal(getattr(merged, name), getattr(whole, name)), name
    for group, fields in (("images", IMAGE_FIELDS), ("anomalous_images", ANOMALOUS_FIELDS),
                          ("regions", REGION_FIELDS)):
        for key in fields:
            assert np.array_equal(gather(merged, group, key), gather(whole, group, key)), (group, key)


def test_batch_size_and_order_do_not_change_a_bit():
    maps, masks, ids = _many_regions(20, 5)
    kw = {"class_names": ("a", "b", "c"), "bins": 1024, "bootstrap_bins": 64}
    by_eight = _streamed(maps, masks, ids, 0, 20, 8, **kw)
    one_by_one = PixelMetrics(**kw)
    for i in np.random.default_rng(0).permutation(20):
        one_by_one.update(maps[i], masks[i], ids=[ids[i]])
    assert np.array_equal(by_eight.pro_size, one_by_one.pro_size)
    assert np.array_equal(by_eight.pro_class, one_by_one.pro_class)


def test_region_weights_sum_to_one_and_follow_the_score_order():
    rng = np.random.default_rng(3)
    mask = np.zeros((40, 40), np.int64)
    mask[2:9, 3:10] = 1  # 49 pixels
    mask[20:23, 20:31] = 2  # 33 pixels
    scores = rng.random((40, 40))
    found = ground_truth_regions(mask, scores)
    weights = pro_weights(found, scores)
    for region, area in enumerate(found.area):
        mine = found.pixel_region == region
        assert weights[mine].sum() == 1.0  # exactly
        assert np.all(np.abs(weights[mine] - 1 / area) < 2**-32)
        # Any top-score prefix of m pixels holds floor(m·2**32 / area) units: within 2**-32 of m / area.
        by_score = weights[mine][np.argsort(-scores.ravel()[found.pixel_flat[mine]], kind="stable")]
        prefix = np.cumsum(by_score)
        m = np.arange(1, area + 1)
        assert np.all(np.ldexp(prefix, 32) == (m << 32) // area)
        assert np.all(np.ldexp(by_score, 32) == np.round(np.ldexp(by_score, 32)))  # whole units


def test_merge_refuses_mixed_settings_and_repeated_images():
    maps, masks, ids = _many_regions(6, 7)
    a = _streamed(maps, masks, ids, 0, 3, 3)
    with pytest.raises(MetricsError, match="different settings: fpr_limit"):
        merge([a, _streamed(maps, masks, ids, 3, 6, 3, fpr_limit=0.1)])
    with pytest.raises(MetricsError, match="image id 'im2' is in two"):
        merge([a, _streamed(maps, masks, ids, 2, 6, 3)])
    with pytest.raises(MetricsError, match="nothing to merge"):
        merge([])


def test_empty_parts_are_ignored():
    maps, masks, ids = _many_regions(6, 8)
    whole = _streamed(maps, masks, ids, 0, 6, 3)
    merged = merge([PixelMetrics(), whole, PixelMetrics()])
    assert json.dumps(merged.compute()) == json.dumps(whole.compute())
