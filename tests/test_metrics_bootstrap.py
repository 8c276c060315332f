"""Bootstrap confidence intervals and the paired comparison."""

from __future__ import annotations

import numpy as np
import pytest
from metrics_reference import make_set

from scrapbench.metrics import MetricsError, PixelMetrics, bootstrap_ci, paired_bootstrap
from scrapbench.metrics.bootstrap import _stats, _values

IDS = [f"img{i:03d}" for i in range(40)]


def _metrics(maps, masks, ids=IDS, **kwargs) -> PixelMetrics:
    m = PixelMetrics(**kwargs)
    m.update(maps, masks, ids=ids[: len(maps)])
    return m


@pytest.fixture(scope="module")
def two_methods():
    maps, masks = make_set(30, n=40, size=24)
    noise = np.random.default_rng(1).normal(0, 1.5, maps.shape).astype(np.float32)
    return maps, masks, _metrics(maps, masks), _metrics(maps + noise, masks)


@pytest.mark.parametrize("metric", ["auroc", "ap", "f1max", "aupro", "image_auroc", "image_ap"])
def test_replicate_equals_the_metric_of_the_resampled_set(metric):
    # Integer scores on 1024 bins: per-image and pooled grids are both lossless, so a bootstrap replicate must equal
    # the metric computed from scratch on the resampled images.
    maps, masks = make_set(31, n=12, size=16)
    maps = np.round(maps * 40).astype(np.int32)
    m = _metrics(maps, masks, bins=1024, bootstrap_bins=1024)
    counts = np.random.default_rng(2).multinomial(12, np.full(12, 1 / 12))
    picked = np.repeat(np.arange(12), counts)
    resampled = _metrics(maps[picked], masks[picked], ids=[f"r{i}" for i in range(12)], bins=1024,
                         bootstrap_bins=1024)
    value = resampled.compute()[metric]
    if value is None:
        pytest.skip("the resample has one image class only")
    assert _values(_stats(m), metric, counts[None].astype(float))[0] == pytest.approx(value, abs=1e-12)


def test_ci_contains_the_estimate_and_is_reproducible(two_methods):
    _, _, a, _ = two_methods
    first = bootstrap_ci(a, "aupro", n_boot=300, seed=3)
    again = bootstrap_ci(a, "aupro", n_boot=300, seed=3)
    assert first == again
    assert first["low"] < first["value"] < first["high"]
    assert first["value"] == a.compute()["aupro"]
    assert 0 < first["high"] - first["low"] < 0.5


def test_paired_bootstrap_finds_the_better_method(two_methods):
    _, _, a, b = two_methods
    result = paired_bootstrap(a, b, "auroc", n_boot=400, seed=0)
    assert result["diff"] == pytest.approx(a.compute()["auroc"] - b.compute()["auroc"])
    assert result["diff"] > 0 and result["low"] > 0 and result["p_value"] < 0.01
    reverse = paired_bootstrap(b, a, "auroc", n_boot=400, seed=0)
    assert reverse["high"] < 0 and reverse["p_value"] == result["p_value"]


def test_paired_bootstrap_of_a_method_with_itself(two_methods):
    _, _, a, _ = two_methods
    result = paired_bootstrap(a, a, "ap", n_boot=100)
    assert (result["diff"], result["low"], result["high"], result["p_value"]) == (0.0, 0.0, 0.0, 1.0)


def test_paired_bootstrap_matches_images_by_id(two_methods):
    maps, masks, a, b = two_methods
    order = np.random.default_rng(4).permutation(len(maps))
    shuffled = PixelMetrics()
    noise = np.random.default_rng(1).normal(0, 1.5, maps.shape).astype(np.float32)
    shuffled.update((maps + noise)[order], masks[order], ids=[IDS[i] for i in order])
    assert paired_bootstrap(a, shuffled, "aupro", n_boot=200) == paired_bootstrap(a, b, "aupro", n_boot=200)


def test_paired_bootstrap_refuses_different_test_sets(two_methods):
    maps, masks, a, _ = two_methods
    fewer = _metrics(maps[:30], masks[:30])
    with pytest.raises(MetricsError, match="different images"):
        paired_bootstrap(a, fewer, "auroc")
    other_masks = _metrics(maps, np.roll(masks, 1, axis=0))
    with pytest.raises(MetricsError, match="same ground truth"):
        paired_bootstrap(a, other_masks, "auroc")
    with pytest.raises(MetricsError, match="cannot bootstrap"):
        bootstrap_ci(a, "accuracy")


def test_bootstrap_survives_a_save_load_round_trip(two_methods, tmp_path):
    _, _, a, b = two_methods
    a.save(tmp_path / "a.npz")
    b.save(tmp_path / "b.npz")
    restored = paired_bootstrap(PixelMetrics.load(tmp_path / "a.npz"), PixelMetrics.load(tmp_path / "b.npz"),
                                "f1max", n_boot=100)
    assert restored == paired_bootstrap(a, b, "f1max", n_boot=100)
