"""The evaluator against independent references (sklearn, a sort-based AUPRO, anomalib, torchmetrics)."""

from __future__ import annotations

import numpy as np
import pytest
from metrics_reference import FOUR, aupro_anomalyclip, f1_max, make_set
from metrics_reference import aupro as reference_aupro
from sklearn.metrics import average_precision_score, roc_auc_score

from scrapbench.metrics import MetricsError, PixelMetrics

MAIN = ("auroc", "ap", "f1max", "aupro")


def _evaluate(maps, masks, batch: int = 5, **kwargs) -> dict:
    m = PixelMetrics(**kwargs)
    for start in range(0, len(maps), batch):
        m.update(maps[start:start + batch], masks[start:start + batch])
    return m.compute()


def _reference(maps: np.ndarray, masks: np.ndarray) -> dict[str, float]:
    labels, scores = (masks > 0).ravel(), maps.astype(np.float64).ravel()
    return {"auroc": roc_auc_score(labels, scores), "ap": average_precision_score(labels, scores),
            "f1max": f1_max(labels, scores), "aupro": reference_aupro(maps, masks)}


@pytest.mark.parametrize(("seed", "levels"), [(0, 4), (1, 16), (2, 256), (3, 1024)])
def test_exact_when_scores_lie_on_the_grid(seed, levels):
    # Multiples of 1/levels (heavy ties for small levels) sit on bin edges: the grid is then lossless.
    maps, masks = make_set(seed, levels=levels)
    ours, ref = _evaluate(maps, masks), _reference(maps, masks)
    for key in MAIN:
        # AUPRO: region weights are whole 2**-32 units (regions.pro_weights), within 2**-32 of 1/area.
        assert ours[key] == pytest.approx(ref[key], abs=2**-32 if key == "aupro" else 1e-12), key


@pytest.mark.parametrize("seed", [4, 5])
def test_raw_float_scores_within_the_reported_bound(seed):
    maps, masks = make_set(seed, n=16, size=32)
    ours, ref = _evaluate(maps, masks), _reference(maps, masks)
    for key in MAIN:
        assert abs(ours[key] - ref[key]) <= ours["grid_error_bound"][key] + 1e-12, key
        assert ours["grid_error_bound"][key] < 1e-3


@pytest.mark.parametrize("seed", [6, 7, 8])
def test_error_bound_holds_on_a_coarse_grid(seed):
    # 32 bins: quantisation visibly changes the metrics, and the bound must still cover the change.
    maps, masks = make_set(seed, n=10, size=20)
    ours, ref = _evaluate(maps, masks, bins=32, bootstrap_bins=16), _reference(maps, masks)
    changed = 0
    for key in MAIN:
        gap = abs(ours[key] - ref[key])
        assert gap <= ours["grid_error_bound"][key] + 1e-12, key
        changed += gap > 1e-6
    assert changed >= 2


def test_agrees_with_anomalib_aupro_and_torchmetrics_on_tensors():
    torch = pytest.importorskip("torch")
    aupro_module = pytest.importorskip("anomalib.metrics.aupro")
    classification = pytest.importorskip("torchmetrics.classification")
    maps, masks = make_set(9, n=10, size=32, levels=512)
    maps_t, masks_t = torch.from_numpy(maps), torch.from_numpy(masks.astype(np.int64))
    m = PixelMetrics()
    m.update(maps_t[:4], masks_t[:4])  # tensors in, as a training loop would pass them
    m.update(maps_t[4:], masks_t[4:])
    ours = m.compute()
    anomalib_aupro = aupro_module._AUPRO(fpr_limit=0.3)  # the tensor-level metric under anomalib's AUPRO wrapper
    anomalib_aupro.update(maps_t, (masks_t > 0).int())
    auroc = classification.BinaryAUROC(thresholds=None)
    ap = classification.BinaryAveragePrecision(thresholds=None)
    binary = (masks_t > 0).int().ravel()
    assert ours["aupro"] == pytest.approx(float(anomalib_aupro.compute()), abs=1e-5)
    assert ours["auroc"] == pytest.approx(float(auroc(maps_t.ravel(), binary)), abs=1e-6)
    assert ours["ap"] == pytest.approx(float(ap(maps_t.ravel(), binary)), abs=1e-6)


def test_scores_far_from_zero_and_large_batches(monkeypatch):
    import scrapbench.metrics.pixel as pixel

    monkeypatch.setattr(pixel, "_CHUNK_PIXELS", 1000)  # one batch, quantised in chunks of a few images
    maps, masks = make_set(21, n=9, size=16)
    shifted = maps.astype(np.float64) * 1e-3 + 1e6  # tiny spread on a large offset: float64 path, fine bins
    ours, ref = _evaluate(shifted, masks, batch=9), _reference(shifted, masks)
    for key in MAIN:
        assert abs(ours[key] - ref[key]) <= ours["grid_error_bound"][key] + 1e-12, key


@pytest.mark.parametrize("dtype", [np.int64, np.uint64, np.int32, np.uint32])
def test_wide_integer_maps_keep_their_ranking(dtype):
    # Distinct integers far above float32's exact range (2**24): converting to float32 merged them into one value,
    # AUROC became 0.5 and the integer shortcut still reported a zero error bound.
    maps, masks = make_set(12, levels=64)
    ranks = np.round((maps - maps.min()) * 64).astype(np.int64)  # distinct small integers, ties where maps tie
    offset = 10**15 if np.dtype(dtype).itemsize == 8 else 2**31 + 12345
    wide = (ranks + offset).astype(dtype)
    ours, ref = _evaluate(wide, masks), _evaluate(ranks, masks)
    for key in MAIN:
        assert ours[key] == ref[key], key
        # exact: the grid holds one integer per bin (AUPRO: within the 2**-32 units of its region weights)
        assert ours["grid_error_bound"][key] == (2**-32 if key == "aupro" else 0.0), key
    assert ours["auroc"] == pytest.approx(roc_auc_score((masks > 0).ravel(), ranks.ravel()), abs=1e-12)


@pytest.mark.parametrize("offset", [2**62, 2**53 + 1])
def test_integer_maps_beyond_float64_precision_report_an_honest_bound(offset):
    # Beyond 2**53 integers that differ can round to one float64 and the grid bins are several integers wide: the
    # metrics may lose some ranking, and the bound must say by how much at most (never 0).
    maps, masks = make_set(13, levels=8)
    ranks = np.round((maps - maps.min()) * 8).astype(np.int64)
    true = _evaluate(ranks, masks)
    ours = _evaluate(ranks.astype(np.uint64) + np.uint64(offset), masks)
    for key in MAIN:
        assert ours["grid_error_bound"][key] > 0, key
        assert abs(ours[key] - true[key]) <= ours["grid_error_bound"][key] + 1e-12, key


def test_float64_maps_finer_than_float32_keep_their_ranking():
    maps, masks = make_set(14)
    tiny = 1.0 + maps.astype(np.float64) * 2**-40  # all equal in float32
    ours, ref = _evaluate(tiny, masks), _reference(maps, masks)
    for key in MAIN:
        assert abs(ours[key] - ref[key]) <= ours["grid_error_bound"][key] + 1e-12, key
    assert ours["grid_error_bound"]["auroc"] < 1e-3


def test_bfloat16_tensors_are_accepted():
    torch = pytest.importorskip("torch")
    maps, masks = make_set(15, levels=16)  # multiples of 1/16 in a small range: exact in bfloat16
    ours = _evaluate(torch.from_numpy(maps).to(torch.bfloat16), torch.from_numpy(masks))
    ref = _evaluate(maps, masks)
    for key in MAIN:
        assert ours[key] == ref[key], key


def test_same_result_whatever_the_batch_order_and_size():
    maps, masks = make_set(10, n=12, size=16)
    maps = maps.astype(np.float64)
    maps[3] *= 1000.0  # a late outlier forces the grid to grow and re-bin what was counted
    maps[7] -= 50.0
    ids = [f"im{i}" for i in range(len(maps))]
    whole = PixelMetrics()
    whole.update(maps, masks, ids=ids)
    streamed = PixelMetrics()
    for i in np.random.default_rng(0).permutation(len(maps)):
        streamed.update(maps[i], masks[i], ids=[ids[i]])  # one [H, W] map at a time
    transposed = PixelMetrics()
    transposed.update(maps.transpose(0, 2, 1), masks.transpose(0, 2, 1), ids=ids)  # non-contiguous input
    a, b, c = whole.compute(), streamed.compute(), transposed.compute()
    assert whole.grid.exponent == streamed.grid.exponent
    for key in (*MAIN, "f1max_threshold", "per_class", "per_size", "image_auroc", "grid_error_bound"):
        assert a[key] == b[key] == c[key], key


def test_all_equal_scores():
    maps, masks = make_set(11)
    maps = np.full(maps.shape, 0.25, np.float32)
    result = _evaluate(maps, masks)
    positives, total = int((masks > 0).sum()), masks.size
    assert result["auroc"] == 0.5
    assert result["ap"] == pytest.approx(positives / total)
    assert result["f1max"] == pytest.approx(2 * positives / (positives + total))
    assert result["aupro"] == pytest.approx(0.15)  # the diagonal (0,0)-(1,1) up to FPR 0.3, divided by 0.3
    assert result["aupro"] == pytest.approx(reference_aupro(maps, masks))
    assert result["f1max_threshold"] <= 0.25


def test_curve_point_exactly_at_the_fpr_limit():
    # 20 normal pixels, 6 of them at the top normal score: the PRO curve has a point at FPR exactly 0.3.
    maps, masks = np.zeros((1, 3, 9), np.float32), np.zeros((1, 3, 9), np.uint8)
    masks[0, 2, :4], masks[0, 2, 6:] = 1, 2
    maps[0, 2, :4], maps[0, 2, 6:] = [0.95, 0.9, 0.6, 0.2], [0.8, 0.1, 0.05]
    normal = masks[0] == 0
    maps[0][normal] = np.r_[np.full(6, 0.9), np.linspace(0.5, 0.0, 14)]
    m = PixelMetrics()
    m.update(maps, masks)
    result = m.compute()
    assert 0.3 in m.curves()["pro"]["fpr"]
    assert result["aupro"] == pytest.approx(reference_aupro(maps, masks), abs=1e-12)
    anomalib = pytest.importorskip("anomalib.metrics.aupro")
    torch = pytest.importorskip("torch")
    metric = anomalib._AUPRO(fpr_limit=0.3)
    metric.update(torch.from_numpy(maps), torch.from_numpy((masks > 0).astype(np.int32)))
    assert result["aupro"] == pytest.approx(float(metric.compute()), abs=1e-6)


def test_regions_touching_only_diagonally_are_one_region():
    masks = np.zeros((1, 8, 8), np.uint8)
    masks[0, 2, 2] = masks[0, 3, 3] = masks[0, 4, 4] = 1  # a diagonal line: one 8-connected region
    masks[0, 6, 0] = 1
    maps = np.random.default_rng(0).random((1, 8, 8)).astype(np.float32)
    maps[0, 2, 2] = 2.0  # one pixel of the diagonal region found early
    m = PixelMetrics()
    m.update(maps, masks)
    result = m.compute()
    assert result["num_regions"] == 2
    assert result["aupro"] == pytest.approx(reference_aupro(maps, masks), abs=2**-32)  # regions.pro_weights
    assert result["aupro"] != pytest.approx(reference_aupro(maps, masks, structure=FOUR), abs=1e-3)


def test_masks_stored_as_0_255_give_the_same_metrics():
    maps, masks = make_set(12, levels=64)
    binary = _evaluate(maps, (masks > 0).astype(np.uint8))
    stored = _evaluate(maps, np.where(masks > 0, 255, 0).astype(np.uint8))
    for key in (*MAIN, "f1max_threshold", "image_auroc", "per_size"):
        assert stored[key] == binary[key], key
    assert list(stored["per_class"]) == ["class_255"]
    with pytest.raises(MetricsError, match="0/255"):
        _evaluate(maps, np.where(masks > 0, 255, 0).astype(np.uint8), class_names=("motor",))


def test_no_anomalous_pixel_is_a_clear_error():
    m = PixelMetrics()
    m.update(np.random.default_rng(0).random((2, 8, 8)), np.zeros((2, 8, 8), np.uint8))
    with pytest.raises(MetricsError, match="no anomalous pixel"):
        m.compute()
    with pytest.raises(MetricsError, match="no maps"):
        PixelMetrics().compute()
    every = PixelMetrics()
    every.update(np.random.default_rng(0).random((1, 4, 4)), np.ones((1, 4, 4), np.uint8))
    with pytest.raises(MetricsError, match="no normal pixel"):
        every.compute()


@pytest.mark.parametrize(("value", "word"), [(np.nan, "NaN"), (np.inf, "infinite"), (-np.inf, "infinite")])
def test_non_finite_scores_name_the_image(value, word):
    maps, masks = make_set(13, n=3)
    maps[2, 5, 5] = value
    m = PixelMetrics()
    with pytest.raises(MetricsError, match=f"{word}.*'scrap_0042'"):
        m.update(maps, masks, ids=["a", "b", "scrap_0042"])
    assert m.count == 0 and m.ids == []  # nothing of the failed batch was counted


def test_bad_inputs_are_rejected_clearly():
    m = PixelMetrics(class_names=("motor", "cable"))
    maps = np.zeros((2, 4, 4), np.float32)
    with pytest.raises(MetricsError, match="differ in shape"):
        m.update(maps, np.zeros((2, 4, 5), np.uint8))
    with pytest.raises(MetricsError, match=r"'x'.*negative"):
        m.update(maps, np.full((2, 4, 4), -1), ids=["x", "y"])
    with pytest.raises(MetricsError, match="fractional"):
        m.update(maps, np.full((2, 4, 4), 0.5))
    with pytest.raises(MetricsError, match="class index 3"):
        m.update(maps, np.full((2, 4, 4), 3, np.uint8), ids=["p", "q"])
    m.update(maps, np.zeros((2, 4, 4), bool), ids=["p", "q"])
    with pytest.raises(MetricsError, match="more than once"):
        m.update(maps, np.zeros((2, 4, 4), bool), ids=["q", "r"])
    with pytest.raises(MetricsError, match="shape"):
        m.update(np.zeros(4), np.zeros(4))
    noisy = np.arange(64, dtype=np.uint8).reshape(1, 8, 8)  # e.g. a JPEG-compressed mask
    with pytest.raises(MetricsError, match="distinct non-zero values"):
        PixelMetrics().update(np.zeros((1, 8, 8)), noisy)


def test_image_level_metrics_match_sklearn():
    maps, masks = make_set(14, n=20, levels=8)  # coarse levels: tied image maxima
    result = _evaluate(maps, masks)
    labels = masks.reshape(len(masks), -1).max(axis=1) > 0
    scores = maps.reshape(len(maps), -1).max(axis=1)
    assert result["image_auroc"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert result["image_ap"] == pytest.approx(average_precision_score(labels, scores), abs=1e-12)
    all_anomalous = _evaluate(maps[labels], masks[labels])
    assert all_anomalous["image_auroc"] is None


def test_f1max_threshold_reproduces_f1max():
    maps, masks = make_set(15, n=10, size=32)
    result = _evaluate(maps, masks)
    predicted, truth = maps >= result["f1max_threshold"], masks > 0
    tp = np.sum(predicted & truth)
    f1 = 2 * tp / (2 * tp + np.sum(predicted & ~truth) + np.sum(~predicted & truth))
    assert f1 == pytest.approx(result["f1max"], abs=1e-12)


def test_per_class_and_per_size_breakdowns():
    maps, masks = make_set(16, n=14, size=32, levels=512)
    names = ("motor", "cable", "spray_can")
    result = _evaluate(maps, masks, class_names=names)
    threshold, normal = result["f1max_threshold"], masks == 0
    for value, name in enumerate(names, start=1):
        entry, present = result["per_class"][name], masks == value
        assert entry["pixels"] == int(present.sum())
        scores = np.concatenate([maps[present], maps[normal]]).astype(np.float64)
        labels = np.r_[np.ones(present.sum()), np.zeros(normal.sum())]
        assert entry["pixel_auroc"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
        assert entry["pixel_recall"] == pytest.approx(np.mean(maps[present] >= threshold), abs=1e-12)
    # Region recall and size classes, region by region.
    from scipy import ndimage

    sizes, recalled = {"small": 0, "medium": 0, "large": 0}, {"small": [], "medium": [], "large": []}
    for amap, mask in zip(maps, masks, strict=True):
        labels, count = ndimage.label(mask > 0, structure=np.ones((3, 3)))
        for r in range(1, count + 1):
            region = labels == r
            fraction = region.sum() / mask.size
            size = "small" if fraction < 1 / 256 else "medium" if fraction < 9 / 256 else "large"
            sizes[size] += 1
            recalled[size].append(np.mean(amap[region] >= threshold) >= 0.5)
    for size, count in sizes.items():
        assert result["per_size"][size]["regions"] == count
        if count:
            assert result["per_size"][size]["region_recall"] == pytest.approx(np.mean(recalled[size]))
    assert sum(result["per_class"][n]["regions"] for n in names) == result["num_regions"]
    import json

    json.dumps(result, allow_nan=False)  # strict JSON: no NaN anywhere


def test_save_and_load_keep_every_statistic(tmp_path):
    maps, masks = make_set(17, n=10)
    first = PixelMetrics(class_names=("motor", "cable", "spray_can"))
    first.update(maps[:6], masks[:6], ids=[f"i{i}" for i in range(6)])
    first.save(tmp_path / "state.npz")
    restored = PixelMetrics.load(tmp_path / "state.npz")
    assert restored.compute() == first.compute()
    restored.update(maps[6:], masks[6:], ids=[f"i{i}" for i in range(6, 10)])  # and it keeps streaming
    whole = PixelMetrics(class_names=("motor", "cable", "spray_can"))
    whole.update(maps, masks, ids=[f"i{i}" for i in range(10)])
    assert restored.compute() == whole.compute()
    PixelMetrics().save(tmp_path / "empty.npz")
    assert PixelMetrics.load(tmp_path / "empty.npz").count == 0
    (tmp_path / "bad.npz").write_bytes(b"not a state")
    with pytest.raises(MetricsError, match=r"bad\.npz"):
        PixelMetrics.load(tmp_path / "bad.npz")
    with pytest.raises(FileNotFoundError):
        PixelMetrics.load(tmp_path / "missing.npz")


def test_curves_for_figures():
    maps, masks = make_set(18, n=12, size=48)
    m = PixelMetrics()
    m.update(maps, masks)
    curves = m.curves(max_points=200)
    roc, pr, pro = curves["roc"], curves["pr"], curves["pro"]
    assert 2 < len(roc["fpr"]) <= 200 and len(pr["recall"]) <= 200 and len(pro["fpr"]) <= 200
    assert (roc["fpr"][0], roc["tpr"][0], roc["fpr"][-1], roc["tpr"][-1]) == (0.0, 0.0, 1.0, 1.0)
    assert np.all(np.diff(roc["fpr"]) >= 0) and np.all(np.diff(roc["tpr"]) >= 0)
    assert np.all(np.diff(roc["threshold"]) <= 0)
    assert max(pro["fpr"]) <= 0.3
    full = m.curves(max_points=10**7)["roc"]
    assert np.trapezoid(full["tpr"], full["fpr"]) == pytest.approx(m.compute()["auroc"], abs=1e-12)


def test_anomalyclip_compat_recipe():
    maps, masks = make_set(19, n=8, size=24)
    result = _evaluate(maps, masks, compat="anomalyclip")
    assert result["aupro"] == pytest.approx(aupro_anomalyclip(maps, masks), abs=1e-4)
    assert result["aupro_mvtec"] == pytest.approx(reference_aupro(maps, masks), abs=1e-3)
    assert result["compat"] == "anomalyclip"
    with pytest.raises(MetricsError, match="compat"):
        PixelMetrics(compat="visa")


def test_memory_does_not_grow_with_pixels():
    # Same images at 4x the pixels: the kept statistics stay the same size.
    small, large = PixelMetrics(), PixelMetrics()
    maps, masks = make_set(20, n=6, size=16)
    small.update(maps, masks)
    large.update(np.repeat(np.repeat(maps, 2, 1), 2, 2), np.repeat(np.repeat(masks, 2, 1), 2, 2))

    def kept_bytes(m: PixelMetrics) -> int:
        arrays = [m.neg, m.pos, m.pro_size, m.pro_class]
        for store in (m.images, m.anomalous_images, m.regions):
            arrays += [a for parts in store.values() for a in parts]
        return sum(a.nbytes for a in arrays)

    assert kept_bytes(large) == kept_bytes(small)


def test_grid_grows_from_tiny_scores_to_large_ones():
    # 1e-300 then 1e3: the grid width grows by ~2**1000, beyond int64; counts must move over exactly.
    maps, masks = make_set(22, n=4, size=12)
    m = PixelMetrics()
    m.update(np.full((1, 12, 12), 1e-300), masks[:1], ids=["tiny"])
    m.update(maps[1:].astype(np.float64) * 1e3, masks[1:], ids=["a", "b", "c"])
    both = np.concatenate([np.full((1, 12, 12), 1e-300), maps[1:].astype(np.float64) * 1e3])
    whole = PixelMetrics()
    whole.update(both, masks, ids=["tiny", "a", "b", "c"])
    assert m.compute()["auroc"] == whole.compute()["auroc"]
    assert int(m.neg.sum() + m.pos.sum()) == masks.size


def test_rebin_merges_exactly():
    from scrapbench.metrics.histogram import covering_grid, rebin, remap

    rng = np.random.default_rng(0)
    scores = rng.normal(0, 1, 5000)
    old = covering_grid(-1.0, 1.0, 256, 16, -60)
    inside = scores[(scores >= -1) & (scores < 1)]
    counts = np.bincount(old.quantise(inside), minlength=256)
    new = covering_grid(scores.min(), scores.max(), 256, 16, -60)
    shift, factor = remap(old, new)
    merged = rebin(counts, shift, factor, 256)
    assert np.array_equal(merged, np.bincount(new.quantise(inside), minlength=256))
    assert new.exponent > old.exponent and new.offset % 16 == 0
