"""The seeded synthetic scrap generator: determinism, sizes, masks, cache, on-disk round trip."""

from __future__ import annotations

import numpy as np
import pytest

from scrapbench.core.presets import SYNTHETIC_PRESETS
from scrapbench.datasets.folder import read_folder_dataset
from scrapbench.datasets.synthetic import generator as synthetic
from scrapbench.datasets.synthetic.generator import (
    CLASS_NAMES,
    PAPER_CLASS_RATIO,
    SyntheticConfig,
    generate_sample,
    split_plan,
    synthetic_dataset,
    write_synthetic,
)

SMOKE = SYNTHETIC_PRESETS["smoke"]
# Smallest useful dataset for tests that render on their own.
TINY = SyntheticConfig(
    name="tiny", patch_size=64, train_normal=2, train_anomalous=(1, 1, 1), test_normal=1, test_anomalous=(1, 0, 1)
)


def test_same_seed_same_bytes_and_other_seed_differs():
    first = generate_sample(SMOKE, 3, "train", 5, 2)
    again = generate_sample(SMOKE, 3, "train", 5, 2)
    assert first.image.tobytes() == again.image.tobytes()
    assert first.mask.tobytes() == again.mask.tobytes()
    other = generate_sample(SMOKE, 4, "train", 5, 2)
    assert first.image.tobytes() != other.image.tobytes()
    assert generate_sample(SMOKE, 3, "test", 5, 2).image.tobytes() != first.image.tobytes()


def test_samples_do_not_depend_on_generation_order():
    plan = split_plan(SMOKE, 0, "test")
    forward = [generate_sample(SMOKE, 0, "test", i, plan[i]).image for i in range(3)]
    backward = [generate_sample(SMOKE, 0, "test", i, plan[i]).image for i in reversed(range(3))][::-1]
    assert all(np.array_equal(a, b) for a, b in zip(forward, backward, strict=True))


def test_smoke_dataset_matches_preset(smoke_dataset):
    assert smoke_dataset.class_names == CLASS_NAMES
    for split, normal, anomalous in (("train", 16, 8), ("test", 8, 4)):
        data = getattr(smoke_dataset, split)
        assert len(data.normal_indices()) == normal
        assert len(data.anomalous_indices()) == anomalous
        # Every class is present in every split, even at smoke size.
        assert set().union(*data.class_presence) == {1, 2, 3}
        for sample in data:
            assert sample.image.shape == (64, 64, 3) and sample.image.dtype == np.uint8
            assert sample.mask.shape == (64, 64) and sample.mask.dtype == np.uint8
            assert set(np.unique(sample.mask)) <= {0, 1, 2, 3}
            # One class per anomalous image, and it is really visible.
            assert len(set(np.unique(sample.mask)) - {0}) <= 1
            if sample.is_anomalous:
                assert (sample.mask > 0).sum() >= SMOKE.min_visible_px * (64 / 128) ** 2


def test_presets_counts_and_class_ratios():
    cpu, paper = SYNTHETIC_PRESETS["cpu"], SYNTHETIC_PRESETS["paper"]
    assert cpu.patch_size == 128 and paper.patch_size == 512 and SMOKE.patch_size == 64
    assert cpu.counts("train") == {"normal": 240, "motor": 38, "cable": 14, "spray_can": 8}
    assert sum(cpu.test_anomalous) == 20 and cpu.test_normal == 80
    assert paper.counts("train") == {"normal": 7838, "motor": 467, "cable": 172, "spray_can": 97}
    assert paper.test_normal == 2065 and sum(paper.test_anomalous) == 353
    ratio = np.asarray(PAPER_CLASS_RATIO) / sum(PAPER_CLASS_RATIO)
    for counts in (cpu.train_anomalous, cpu.test_anomalous, paper.test_anomalous):
        assert np.abs(np.asarray(counts) / sum(counts) - ratio).max() < 0.06
    assert (SMOKE.train_normal, sum(SMOKE.train_anomalous), SMOKE.test_normal, sum(SMOKE.test_anomalous)) == (
        16,
        8,
        8,
        4,
    )


def test_split_plan_follows_counts():
    plan = split_plan(SYNTHETIC_PRESETS["cpu"], 0, "train")
    assert np.bincount(plan).tolist() == [240, 38, 14, 8]
    assert plan != sorted(plan)  # classes are shuffled, not in blocks


def test_scaled_config_keeps_ratio():
    half = SYNTHETIC_PRESETS["cpu"].scaled(0.5)
    assert half.train_normal == 120 and sum(half.train_anomalous) == 30 and half.test_normal == 40
    assert half.train_anomalous[0] > half.train_anomalous[1] > half.train_anomalous[2]
    with pytest.raises(ValueError):
        SYNTHETIC_PRESETS["cpu"].scaled(0)


def test_config_validation():
    with pytest.raises(ValueError, match="one value per class"):
        SyntheticConfig(train_anomalous=(1, 2))
    with pytest.raises(ValueError, match="test split needs anomalous"):
        SyntheticConfig(test_anomalous=(0, 0, 0))


def test_anomaly_sizes_are_long_tailed():
    areas = []
    for index in range(24):
        mask = generate_sample(SMOKE, 0, "train", index, 1 + index % 3).mask
        areas.append(int((mask > 0).sum()))
    areas = np.asarray(areas)
    assert (areas > 0).all()
    # Most anomalies are small (a few ViT patches), a few are much larger.
    assert np.median(areas) < 0.06 * 64 * 64
    assert areas.max() > 3 * np.median(areas)


def test_normal_image_is_cluttered_and_unlabelled():
    sample = generate_sample(SMOKE, 0, "train", 0, 0)
    assert not sample.mask.any()
    assert sample.image.std() > 10  # a cluttered pile, not a flat image


def test_parallel_rendering_gives_the_same_bytes():
    serial = list(synthetic.iter_split(TINY, 5, "train", workers=1))
    parallel = list(synthetic.iter_split(TINY, 5, "train", workers=2))
    assert [s.id for s in serial] == [s.id for s in parallel]
    assert all(a.image.tobytes() == b.image.tobytes() for a, b in zip(serial, parallel, strict=True))
    assert synthetic.default_workers(SMOKE) == 1  # small sets stay on one core


def test_cache_is_reused(tmp_path, monkeypatch):
    first = synthetic_dataset(TINY, seed=1, cache_dir=tmp_path)
    stamp = (first.root / "dataset.yaml").stat().st_mtime_ns

    def fail(*args, **kwargs):
        raise AssertionError("the cached dataset was regenerated")

    monkeypatch.setattr(synthetic, "write_synthetic", fail)
    second = synthetic_dataset(TINY, seed=1, cache_dir=tmp_path)
    assert second.root == first.root
    assert (second.root / "dataset.yaml").stat().st_mtime_ns == stamp
    assert np.array_equal(first.test[0].image, second.test[0].image)
    # A different seed is a different cache entry.
    monkeypatch.undo()
    assert synthetic_dataset(TINY, seed=2, cache_dir=tmp_path).root != first.root


def test_incomplete_cache_entry_is_replaced(tmp_path):
    folder = tmp_path / "synthetic" / synthetic.cache_key(TINY, 0)
    (folder / "train").mkdir(parents=True)  # e.g. a copy that was interrupted
    data = synthetic_dataset(TINY, seed=0, cache_dir=tmp_path)
    assert data.root == folder and len(data.train) == 5
    assert sorted(p.name for p in folder.parent.iterdir()) == [folder.name]  # no staging folder left


def test_cache_dir_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("SCRAPBENCH_CACHE", str(tmp_path))
    data = synthetic_dataset(TINY, seed=0)
    assert data.root.is_relative_to(tmp_path)


def test_write_synthetic_round_trip(tmp_path):
    out = write_synthetic(tmp_path / "synth", TINY, seed=7)
    data = read_folder_dataset(out)
    assert data.class_names == CLASS_NAMES
    assert len(data.train) == 5 and len(data.test) == 3
    assert data.notes["seed"] == 7 and data.notes["config"]["patch_size"] == 64
    plan = split_plan(TINY, 7, "test")
    for index, sample in enumerate(data.test):
        direct = generate_sample(TINY, 7, "test", index, plan[index])
        assert np.array_equal(sample.image, direct.image) and np.array_equal(sample.mask, direct.mask)


@pytest.mark.parametrize("bend", [0.0, 0.3, 3.0, 8.0])
def test_curve_frame_finds_every_pixel_of_a_tube(bend):
    from scrapbench.datasets.synthetic.canvas import Canvas, curve_frame, wander_curve

    rng = np.random.default_rng(int(bend * 10))
    canvas = Canvas(128, rng)
    region = canvas.region(64.0, 64.0, 60.0)
    radius = 3.0
    for _ in range(5):
        points = wander_curve(rng, np.array([-40.0, 0.0]), 90.0, 4.0, bend, rng.uniform(-0.5, 0.5))
        frame = curve_frame(region, points, radius)
        yy, xx = region.grid()
        a, b = points[:-1], points[1:]
        d = b - a
        rel_x, rel_y = xx[..., None] - a[:, 0], yy[..., None] - a[:, 1]
        t = np.clip((rel_x * d[:, 0] + rel_y * d[:, 1]) / (d * d).sum(1), 0, 1)
        dist = np.hypot(rel_x - t * d[:, 0], rel_y - t * d[:, 1]).min(-1)
        # Ends are cut flat (the candidate pixels come from a butt-capped line): skip the caps.
        ends = np.minimum(*(np.hypot(xx - p[0], yy - p[1]) for p in (points[0], points[-1])))
        inside = np.zeros(yy.shape, bool)
        inside[frame.index] = True
        assert inside[(dist <= radius + 0.5) & (ends > radius + 3)].all()
        assert np.allclose(np.abs(frame.dist), dist[frame.index], atol=1e-3)
