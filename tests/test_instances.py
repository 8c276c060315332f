"""Class-index mask → instances, YOLO labels, background subsampling, detections → anomaly map."""

from __future__ import annotations

import numpy as np
import pytest

from scrapbench.datasets.types import Sample, Split
from scrapbench.methods.common.instances import (
    detections_to_anomaly_map,
    detections_to_class_maps,
    instance_polygon,
    mask_to_instances,
    training_indices,
)
from scrapbench.methods.common.sam_refiner import box_masks
from scrapbench.methods.yolo_sam.dataset import yolo_label_lines


def _mask() -> np.ndarray:
    mask = np.zeros((20, 30), dtype=np.uint8)
    mask[2:6, 3:9] = 1  # class 1, 24 px
    mask[10:13, 20:25] = 1  # class 1, separate component, 15 px
    mask[14:18, 2:4] = 2  # class 2, 8 px: below the default minimum area of 9
    mask[8, 10] = 3  # class 3, one pixel
    mask[9, 11] = 3  # diagonal neighbour: same 8-connected component (2 px)
    return mask


def test_components_per_class_with_exclusive_boxes():
    instances = mask_to_instances(_mask(), min_area=1)
    by_class = {}
    for inst in instances:
        by_class.setdefault(inst.class_index, []).append(inst)
    assert sorted(by_class) == [1, 2, 3]
    assert [i.area for i in by_class[1]] == [24, 15]  # largest first
    assert by_class[1][0].box == (3, 2, 9, 6)
    assert by_class[1][1].box == (20, 10, 25, 13)
    assert len(by_class[3]) == 1 and by_class[3][0].area == 2  # diagonal pixels join
    for inst in instances:
        x0, y0, x1, y1 = inst.box
        assert x1 > x0 and y1 > y0
        assert inst.mask[y0:y1, x0:x1].sum() == inst.area  # box holds every pixel of the component
        assert inst.mask.dtype == bool and inst.mask.shape == (20, 30)


def test_tiny_fragments_are_dropped():
    instances = mask_to_instances(_mask())  # default min_area = 9
    assert [(i.class_index, i.area) for i in instances] == [(1, 24), (1, 15)]
    assert mask_to_instances(np.zeros((8, 8), np.uint8)) == []
    with pytest.raises(ValueError, match="H×W"):
        mask_to_instances(np.zeros((2, 8, 8), np.uint8))


def test_polygon_covers_the_component_and_degenerates_to_a_box():
    mask = np.zeros((16, 16), dtype=bool)
    mask[4:10, 5:12] = True
    polygon = instance_polygon(mask)
    assert polygon.shape[1] == 2 and len(polygon) >= 4
    assert polygon[:, 0].min() == 5 and polygon[:, 0].max() == 11  # pixel centres of the boundary
    line = np.zeros((16, 16), dtype=bool)
    line[7, 2:12] = True  # one pixel high: no area for a contour
    np.testing.assert_array_equal(instance_polygon(line), [[2, 7], [12, 7], [12, 8], [2, 8]])


def test_yolo_label_lines():
    text = yolo_label_lines(_mask(), min_area=9)
    lines = text.splitlines()
    assert len(lines) == 2 and all(line.split()[0] == "0" for line in lines)  # class 1 → YOLO class 0
    coords = np.array(lines[0].split()[1:], dtype=float).reshape(-1, 2)
    assert (coords >= 0).all() and (coords <= 1).all() and len(coords) >= 3
    assert yolo_label_lines(np.zeros((8, 8), np.uint8), 9) == ""  # background image: empty label file


def _split(n_anomalous: int, n_normal: int, n_speck: int = 0) -> Split:
    samples = []
    for i in range(n_anomalous + n_normal + n_speck):
        mask = np.zeros((12, 12), np.uint8)
        if i < n_anomalous:
            mask[2:7, 2:7] = 1
        elif i >= n_anomalous + n_normal:
            mask[0, 0] = 2  # anomalous, but only a speck
        samples.append(Sample(np.zeros((12, 12, 3), np.uint8), mask, f"s{i}"))
    return Split.from_samples("train", samples)


def test_background_subsampling():
    split = _split(n_anomalous=10, n_normal=50, n_speck=3)
    anomalous, background = training_indices(split, max_background_fraction=0.2, seed=0)
    assert anomalous == list(range(10))  # speck-only images are neither anomalous nor background
    assert len(background) == 2  # 2 / (10 + 2) ≤ 0.2
    assert all(10 <= i < 60 for i in background)
    assert training_indices(split, 0.2, seed=0) == (anomalous, background)  # seeded
    assert len(training_indices(split, 1.0, seed=0)[1]) == 50  # 1.0 keeps every normal image
    assert training_indices(split, 0.0, seed=0)[1] == []
    with pytest.raises(ValueError, match="no anomalous image"):
        training_indices(_split(0, 5, 2), 0.1, seed=0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        training_indices(split, 1.5, seed=0)


def test_anomaly_map_is_max_of_score_times_mask():
    masks = np.zeros((3, 4, 5), dtype=np.float32)
    masks[0, :2, :2] = 1.0
    masks[1, 1:3, 1:3] = 0.5  # overlaps detection 0 at pixel (1, 1)
    masks[2, 3, 4] = 1.0
    scores = np.array([0.9, 0.8, 0.3])
    amap = detections_to_anomaly_map(scores, masks, (4, 5))
    assert amap.dtype == np.float32 and amap.shape == (4, 5)
    assert amap[0, 0] == pytest.approx(0.9)
    assert amap[1, 1] == pytest.approx(0.9)  # overlap: max, not sum
    assert amap[2, 2] == pytest.approx(0.4)  # soft mask scales the score
    assert amap[3, 4] == pytest.approx(0.3)
    assert amap[3, 0] == 0.0  # no detection covers it
    assert amap.max() <= scores.max()
    empty = detections_to_anomaly_map([], np.zeros((0, 4, 5)), (4, 5))
    assert empty.dtype == np.float32 and not empty.any()
    with pytest.raises(ValueError, match="masks"):
        detections_to_anomaly_map(scores, masks[:2], (4, 5))


def test_class_maps_split_detections_by_label():
    masks = np.ones((2, 3, 3), dtype=np.float32)
    class_maps = detections_to_class_maps([0.7, 0.2], masks, labels=[2, 2], num_classes=3, shape=(3, 3))
    assert class_maps.shape == (3, 3, 3)
    assert not class_maps[0].any() and not class_maps[2].any()
    assert np.allclose(class_maps[1], 0.7)


def test_box_masks_use_pixel_centres():
    inside = box_masks(np.array([[1.0, 0.0, 3.0, 2.0]]), height=3, width=4)
    np.testing.assert_array_equal(inside[0], [[0, 1, 1, 0], [0, 1, 1, 0], [0, 0, 0, 0]])
