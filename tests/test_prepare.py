"""``scrapbench prepare``: annotation formats, tiling, split by source image, regions of interest, errors."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image

from scrapbench.datasets.folder import read_folder_dataset
from scrapbench.datasets.io.annotations import decode_rle, read_coco, read_mask_folder
from scrapbench.datasets.prepare.roi import RoiFile, TextPromptedRoi, full_image_roi
from scrapbench.datasets.prepare.tiling import (
    PrepareConfig,
    prepare_dataset,
    preview_rois,
    read_sources,
    split_sources,
    tile_boxes,
    tile_starts,
)
from scrapbench.datasets.types import DatasetError

CLASSES = ("motor", "cable")


def _image(seed: int, height: int = 30, width: int = 40) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)


def _mask_folder(tmp_path, n: int = 6, height: int = 30, width: int = 40):
    """n images; even ones hold a class-1 box and a class-2 box, odd ones are normal."""
    images, masks = tmp_path / "raw" / "images", tmp_path / "raw" / "masks"
    images.mkdir(parents=True)
    masks.mkdir(parents=True)
    truth = {}
    for i in range(n):
        image = _image(i, height, width)
        mask = np.zeros((height, width), np.uint8)
        if i % 2 == 0:
            mask[2:9, 3:12] = 1
            mask[20:27, 30:38] = 2
        Image.fromarray(image).save(images / f"cam{i}.png")
        Image.fromarray(mask).save(masks / f"cam{i}.png")
        truth[f"cam{i}"] = (image, mask)
    return images, masks, truth


def _encode_rle(mask: np.ndarray) -> tuple[list[int], str]:
    """Test-side encoder (column-major runs, then COCO's compressed string) to check the decoder."""
    flat = mask.T.reshape(-1).astype(bool)
    runs, current, length = [], False, 0
    for value in flat:
        if value == current:
            length += 1
        else:
            runs.append(length)
            current, length = value, 1
    runs.append(length)
    chars = []
    for m, run in enumerate(runs):
        x = run - runs[m - 2] if m > 2 else run
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = x != -1 if c & 0x10 else x != 0
            if more:
                c |= 0x20
            chars.append(chr(c + 48))
    return runs, "".join(chars)


# -- tiling and split --------------------------------------------------------------------------


def test_tiles_cover_the_image_and_the_last_one_ends_at_the_border():
    assert tile_starts(100, 32, 0) == [0, 32, 64, 68]
    assert tile_starts(96, 32, 0) == [0, 32, 64]
    assert tile_starts(100, 32, 8) == [0, 24, 48, 68]
    assert tile_starts(20, 32, 0) == [0]
    covered = np.zeros((70, 100), int)
    for x0, y0, x1, y1 in tile_boxes(70, 100, 32, 4):
        covered[y0:y1, x0:x1] += 1
        assert x1 - x0 == 32 and y1 - y0 == 32 and x1 <= 100 and y1 <= 70
    assert covered.min() >= 1


def test_split_is_by_source_deterministic_stratified_and_order_free():
    flags = {f"img{i}": i % 3 == 0 for i in range(30)}
    a = split_sources(flags, 0.2, seed=0)
    assert a == split_sources(dict(reversed(list(flags.items()))), 0.2, seed=0)
    assert a != split_sources(flags, 0.2, seed=1)
    anomalous_test = [k for k, v in a.items() if v == "test" and flags[k]]
    normal_test = [k for k, v in a.items() if v == "test" and not flags[k]]
    assert len(anomalous_test) == 2 and len(normal_test) == 4  # round(0.2 * 10), round(0.2 * 20)
    # Two anomalous images: one goes to test even if 0.2 * 2 rounds to 0.
    assert sorted(split_sources({"a": True, "b": True}, 0.2, 0).values()) == ["test", "train"]


# -- class-index masks -------------------------------------------------------------------------


def test_mask_folder_round_trip_tiles_masks_identically(tmp_path):
    images, masks, truth = _mask_folder(tmp_path)
    sources, classes = read_sources("masks", images, masks, CLASSES)
    out = prepare_dataset(sources, classes, tmp_path / "ds", config=PrepareConfig(patch_size=16, test_fraction=0.34))
    data = read_folder_dataset(out)
    assert data.class_names == CLASSES
    assert data.notes["patch_size"] == 16 and data.notes["prepared_by"] == "scrapbench prepare"
    samples = list(data.train) + list(data.test)
    assert len(samples) == 6 * len(tile_boxes(30, 40, 16, 0))
    for sample in samples:
        source, rest = sample.id.split("_y")
        y, x = (int(v) for v in rest.split("_x"))
        image, mask = truth[source]
        np.testing.assert_array_equal(sample.image, image[y:y + 16, x:x + 16])
        np.testing.assert_array_equal(sample.mask, mask[y:y + 16, x:x + 16])
    # patches without anomalies are normal (no mask file written)
    normal = [s for s in samples if not s.mask.any()]
    assert normal and all(not (out / split / "masks" / f"{s.id}.png").exists()
                          for split in ("train", "test") for s in normal)
    # never one source image on both sides
    sources_of = {split: {s.id.split("_y")[0] for s in getattr(data, split)} for split in ("train", "test")}
    assert not sources_of["train"] & sources_of["test"]
    rows = list(csv.DictReader((out / "sources.csv").open()))
    assert len(rows) == len(samples) and {r["split"] for r in rows} == {"train", "test"}


def test_same_seed_same_dataset_other_seed_other_split(tmp_path):
    images, masks, _ = _mask_folder(tmp_path, n=10)
    sources, classes = read_sources("masks", images, masks, CLASSES)
    a = read_folder_dataset(prepare_dataset(sources, classes, tmp_path / "a", config=PrepareConfig(patch_size=16)))
    b = read_folder_dataset(prepare_dataset(sources[::-1], classes, tmp_path / "b",
                                            config=PrepareConfig(patch_size=16)))
    c = read_folder_dataset(prepare_dataset(sources, classes, tmp_path / "c",
                                            config=PrepareConfig(patch_size=16, seed=5)))
    assert sorted(a.test.ids) == sorted(b.test.ids)
    assert sorted(a.test.ids) != sorted(c.test.ids)


def test_missing_mask_is_an_error_naming_the_file_unless_allowed(tmp_path):
    images, masks, _ = _mask_folder(tmp_path, n=4)
    (masks / "cam1.png").unlink()
    with pytest.raises(DatasetError, match=r"cam1\.png: missing annotation"):
        read_sources("masks", images, masks, CLASSES)
    sources, _ = read_sources("masks", images, masks, CLASSES, missing_mask_is_normal=True)
    assert len(sources) == 4


def test_mask_value_beyond_the_classes_names_the_mask(tmp_path):
    images, masks, _ = _mask_folder(tmp_path, n=2)
    Image.fromarray(np.full((30, 40), 255, np.uint8)).save(masks / "cam0.png")
    sources, classes = read_sources("masks", images, masks, CLASSES)
    with pytest.raises(DatasetError, match=r"cam0\.png: mask has values \[255\]"):
        prepare_dataset(sources, classes, tmp_path / "ds", config=PrepareConfig(patch_size=16))
    assert not (tmp_path / "ds").exists()  # nothing half-written


# -- COCO --------------------------------------------------------------------------------------


def test_rle_decoding_list_and_compressed():
    assert decode_rle("325", (2, 5)).T.reshape(-1).tolist() == [0, 0, 0, 1, 1, 0, 0, 0, 0, 0]
    rng = np.random.default_rng(0)
    for _ in range(20):
        mask = rng.random((int(rng.integers(1, 30)), int(rng.integers(1, 30)))) < rng.random()
        runs, text = _encode_rle(mask)
        np.testing.assert_array_equal(decode_rle(runs, mask.shape), mask)
        np.testing.assert_array_equal(decode_rle(text, mask.shape), mask)
    with pytest.raises(ValueError, match="covers 9 pixels"):
        decode_rle([4, 5], (2, 5))


def _coco(tmp_path, annotations, categories=None):
    images = tmp_path / "coco_images"
    images.mkdir(exist_ok=True)
    for i in range(4):
        Image.fromarray(_image(i)).save(images / f"f{i}.jpg")
    doc = {
        "images": [{"id": i, "file_name": f"f{i}.jpg", "width": 40, "height": 30} for i in range(4)],
        "annotations": annotations,
        "categories": categories or [{"id": 7, "name": "cable"}, {"id": 3, "name": "motor"}],
    }
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(doc))
    return images, path


def test_coco_polygons_and_rle_become_class_index_masks(tmp_path):
    rle_mask = np.zeros((30, 40), bool)
    rle_mask[10:20, 25:35] = True
    runs, text = _encode_rle(rle_mask)
    anns = [
        {"id": 1, "image_id": 0, "category_id": 3, "segmentation": [[2, 2, 12, 2, 12, 8, 2, 8]], "area": 60},
        {"id": 2, "image_id": 0, "category_id": 7, "segmentation": {"size": [30, 40], "counts": text}, "area": 100},
        {"id": 3, "image_id": 2, "category_id": 7, "segmentation": {"size": [30, 40], "counts": runs}, "area": 100},
    ]
    images, path = _coco(tmp_path, anns)
    sources, classes = read_coco(images, path)
    assert classes == ("motor", "cable")  # categories sorted by id: 3, 7
    mask0 = sources[0].load_mask((30, 40))
    assert (mask0[3:8, 3:12] == 1).all() and mask0[0, 0] == 0 and mask0[:, 13:20].max() == 0
    np.testing.assert_array_equal(mask0 == 2, rle_mask)
    np.testing.assert_array_equal(sources[2].load_mask((30, 40)), rle_mask.astype(np.uint8) * 2)
    assert not sources[1].load_mask((30, 40)).any()
    # A given class order re-indexes the categories.
    sources, classes = read_coco(images, path, class_names=("cable", "motor"))
    assert classes == ("cable", "motor") and sources[0].load_mask((30, 40))[5, 5] == 2
    out = prepare_dataset(sources, classes, tmp_path / "ds", config=PrepareConfig(patch_size=16, test_fraction=0.5))
    assert read_folder_dataset(out).class_names == ("cable", "motor")


@pytest.mark.parametrize(("annotation", "message"), [
    ({"id": 9, "image_id": 1, "category_id": 3, "segmentation": [[2, 2, 60, 2, 60, 8]]}, "annotation 9.*outside"),
    ({"id": 8, "image_id": 1, "category_id": 5, "segmentation": [[2, 2, 6, 2, 6, 8]]}, "annotation 8.*category_id 5"),
    ({"id": 6, "image_id": 1, "category_id": 3, "segmentation": {"size": [30, 41], "counts": [1230]}},
     "annotation 6: RLE size"),
])
def test_bad_coco_annotations_name_the_file(tmp_path, annotation, message):
    images, path = _coco(tmp_path, [annotation])
    with pytest.raises(DatasetError, match=rf"instances\.json: {message}"):
        read_coco(images, path)


def test_coco_category_not_in_the_given_classes_and_missing_files(tmp_path):
    ann = {"id": 4, "image_id": 1, "category_id": 7, "segmentation": [[2, 2, 6, 2, 6, 8]]}
    images, path = _coco(tmp_path, [ann])
    with pytest.raises(DatasetError, match=r"instances\.json: annotation 4: unknown category 'cable'"):
        read_coco(images, path, class_names=("motor",))
    (images / "f3.jpg").unlink()
    with pytest.raises(DatasetError, match=r"f3\.jpg: image listed in .*instances\.json is missing"):
        read_coco(images, path)
    with pytest.raises(DatasetError, match=r"nope\.json: COCO annotation file does not exist"):
        read_coco(images, tmp_path / "nope.json")


# -- MVTec AD ----------------------------------------------------------------------------------


def test_mvtec_binary_masks_become_one_class_and_the_split_can_be_kept(tmp_path):
    root = tmp_path / "bottle"
    for split, defect, n in (("train", "good", 3), ("test", "good", 2), ("test", "crack", 2)):
        (root / split / defect).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(_image(i + 10 * n, 32, 32)).save(root / split / defect / f"{i:03d}.png")
            if defect != "good":
                (root / "ground_truth" / defect).mkdir(parents=True, exist_ok=True)
                mask = np.zeros((32, 32), np.uint8)
                mask[4:12, 4:12] = 255
                Image.fromarray(mask).save(root / "ground_truth" / defect / f"{i:03d}_mask.png")
    sources, classes = read_sources("mvtec", root)
    assert classes == ("anomaly",) and len(sources) == 7
    out = prepare_dataset(sources, classes, tmp_path / "ds", config=PrepareConfig(patch_size=16, keep_split=True))
    data = read_folder_dataset(out)
    assert len(data.train) == 3 * 4 and len(data.test) == 4 * 4
    anomalous = [s for s in data.test if s.is_anomalous]
    assert len(anomalous) == 2 and all(set(np.unique(s.mask)) == {0, 1} for s in anomalous)
    (root / "ground_truth" / "crack" / "001_mask.png").unlink()
    with pytest.raises(DatasetError, match=r"001_mask\.png: missing ground truth"):
        read_sources("mvtec", root)


# -- regions of interest -----------------------------------------------------------------------


def test_crop_file_boxes_and_polygons(tmp_path):
    images, masks, truth = _mask_folder(tmp_path, n=4)
    roi_file = tmp_path / "roi.json"
    roi_file.write_text(json.dumps({
        "cam0.png": {"box": [8, 0, 40, 30]},
        "cam1": {"box": [0, 0, 20, 20]},
        "cam2.png": {"polygon": [[0, 0], [40, 0], [0, 30]]},  # a triangle: the lower-right tiles drop out
        "cam3.png": {"box": [0, 0, 40, 30]},
    }))
    sources, classes = read_sources("masks", images, masks, CLASSES)
    config = PrepareConfig(patch_size=16, test_fraction=0.5)
    out = prepare_dataset(sources, classes, tmp_path / "ds", roi=RoiFile(roi_file), config=config,
                          preview_dir=tmp_path / "previews")
    data = read_folder_dataset(out)
    by_source: dict[str, list] = {}
    for sample in list(data.train) + list(data.test):
        by_source.setdefault(sample.id.split("_y")[0], []).append(sample)
    assert sorted(s.id for s in by_source["cam0"])[0] == "cam0_y00000_x00008"  # crop starts at x = 8
    for sample in by_source["cam0"]:
        y, x = (int(v) for v in sample.id.split("_y")[1].split("_x"))
        np.testing.assert_array_equal(sample.mask, truth["cam0"][1][y:y + 16, x:x + 16])
    assert len(by_source["cam1"]) == 4  # a 20×20 crop: two tiles per axis
    assert len(by_source["cam2"]) == 3  # of 2×3 tiles, those mostly below the diagonal are dropped
    assert data.notes["roi"] == "crop file roi.json"
    assert sorted(p.name for p in (tmp_path / "previews").iterdir()) == [f"cam{i}.png" for i in range(4)]
    with Image.open(tmp_path / "previews" / "cam0.png") as preview:
        assert preview.size == (40, 30)


@pytest.mark.parametrize(("entry", "message"), [
    ({"box": [0, 0, 50, 10]}, r"roi\.json: entry 'cam0\.png': box .* outside the image"),
    ({"polygon": [[0, 0], [45, 0], [0, 10]]}, r"roi\.json: entry 'cam0\.png': polygon outside"),
    ({"circle": 3}, r"roi\.json: entry 'cam0\.png': expected a 'box' or a 'polygon'"),
])
def test_bad_crop_entries_name_the_file(tmp_path, entry, message):
    images, masks, _ = _mask_folder(tmp_path, n=2)
    roi_file = tmp_path / "roi.json"
    roi_file.write_text(json.dumps({"cam0.png": entry, "cam1.png": {"box": [0, 0, 40, 30]}}))
    sources, _ = read_sources("masks", images, masks, CLASSES)
    with pytest.raises(DatasetError, match=message):
        preview_rois(sources, RoiFile(roi_file), tmp_path / "p", PrepareConfig(patch_size=16))


def test_image_without_a_crop_entry_is_named(tmp_path):
    images, masks, _ = _mask_folder(tmp_path, n=2)
    roi_file = tmp_path / "roi.json"
    roi_file.write_text(json.dumps({"cam0.png": {"box": [0, 0, 40, 30]}}))
    sources, _ = read_sources("masks", images, masks, CLASSES)
    with pytest.raises(DatasetError, match=r"roi\.json: no region for image .*cam1\.png"):
        preview_rois(sources, RoiFile(roi_file), tmp_path / "p")


def test_text_prompted_region_keeps_the_best_scoring_large_mask(tmp_path):
    image = _image(0, 40, 60)
    small, left, right = (np.zeros((40, 60), bool) for _ in range(3))
    small[:3, :3] = True
    left[5:35, 2:30] = True
    right[0:40, 31:58] = True
    proposals = [{"segmentation": m} for m in (small, left, right)]
    seen = {}

    def scorer(crops, prompt):
        seen["prompt"], seen["shapes"] = prompt, [c.shape for c in crops]
        # prefer the crop whose mean colour is darkest (a stand-in for CLIP's judgement)
        return np.array([-c.mean() for c in crops])

    roi = TextPromptedRoi(lambda img: proposals, scorer, prompt="the scrap", min_area_fraction=0.05)
    result = roi(image, tmp_path / "x.png", "x")
    assert seen["prompt"] == "the scrap" and seen["shapes"] == [(30, 28, 3), (40, 27, 3)]  # small one dropped
    expected = int(np.argmax([-(image[5:35, 2:30].mean()), -(image[0:40, 31:58].mean())]))
    assert result.box == [(2, 5, 30, 35), (31, 0, 58, 40)][expected]
    assert result.mask.shape == (result.box[3] - result.box[1], result.box[2] - result.box[0])
    with pytest.raises(DatasetError, match=r"x\.png: no region covering"):
        TextPromptedRoi(lambda img: proposals[:1], scorer)(image, tmp_path / "x.png", "x")


def test_text_prompted_region_with_tiny_random_sam_and_clip(tmp_path):
    """Plumbing only: real SAM and CLIP code paths with tiny random weights loaded from files."""
    import torch

    from scrapbench.core.method import WeightsError
    from scrapbench.datasets.prepare.roi import ClipTextScorer, sam_mask_generator
    from scrapbench.methods.common.sam_refiner import build_sam

    checkpoint = tmp_path / "sam_tiny.pth"
    torch.save(build_sam("tiny", None, seed=0).model.state_dict(), checkpoint)
    generator = sam_mask_generator("tiny", checkpoint, points_per_side=4, pred_iou_thresh=0.0,
                                   stability_score_thresh=0.0)
    scorer = ClipTextScorer("scrapbench-vit-tiny", pretrained=None, image_size=64)
    image = _image(1, 48, 64)
    proposals = generator(image)
    assert proposals and all(p["segmentation"].shape == (48, 64) for p in proposals)
    scores = scorer([image, image[:10, :10]], "the scrap")
    assert scores.shape == (2,) and np.isfinite(scores).all()
    roi = TextPromptedRoi(generator, scorer, min_area_fraction=0.0)(image, tmp_path / "x.png", "x")
    assert roi.mask is not None and roi.mask.any() and np.isfinite(roi.score)
    with pytest.raises(WeightsError, match=r"missing\.pth"):
        sam_mask_generator("vit_b", tmp_path / "missing.pth")


def test_cli_prepare_and_its_errors(tmp_path):
    from typer.testing import CliRunner

    from scrapbench.cli.main import app

    images, masks, _ = _mask_folder(tmp_path, n=4)
    runner = CliRunner()
    result = runner.invoke(app, ["prepare", str(images), "--annotations", str(masks), "--classes", "motor,cable",
                                 "--patch-size", "16", "--test-fraction", "0.5", "--out", str(tmp_path / "ds")])
    assert result.exit_code == 0, result.output
    assert "anomalous test patches" in result.output and read_folder_dataset(tmp_path / "ds").class_names == CLASSES
    (masks / "cam2.png").unlink()
    result = runner.invoke(app, ["prepare", str(images), "--annotations", str(masks), "--classes", "motor,cable",
                                 "--out", str(tmp_path / "ds2")])
    text = "".join(result.output.split())
    assert result.exit_code == 2 and "cam2.png:missingannotation" in text


# -- COCO: paths, references, values, laziness, pycocotools --------------------------------------


@pytest.mark.parametrize("file_name", ["../secret.jpg", "/etc/secret.jpg", "sub/../../secret.jpg", "C:\\x.jpg"])
def test_coco_file_name_outside_the_image_folder_is_refused(tmp_path, file_name):
    images, path = _coco(tmp_path, [])
    Image.fromarray(_image(9)).save(tmp_path / "secret.jpg")  # exists, but outside the image folder
    doc = json.loads(path.read_text())
    doc["images"][0]["file_name"] = file_name
    path.write_text(json.dumps(doc))
    with pytest.raises(DatasetError, match=r"instances\.json: image 0: file_name .* outside the image folder"):
        read_coco(images, path)


def test_coco_annotation_of_an_unlisted_image_is_refused(tmp_path):
    ann = {"id": 5, "image_id": 99, "category_id": 3, "segmentation": [[2, 2, 6, 2, 6, 8]]}
    images, path = _coco(tmp_path, [ann])
    with pytest.raises(DatasetError, match=r"instances\.json: annotation 5: image_id 99 is not among the images"):
        read_coco(images, path)


@pytest.mark.parametrize(("segmentation", "message"), [
    ([[2, 2, float("nan"), 2, 6, 8]], "non-finite"),
    ([[2, 2, "x", 2, 6, 8]], "flat list of numbers"),
    ({"size": [30, 40], "counts": None}, "RLE counts must be"),
    ({"size": [30, 40], "counts": 1200}, "RLE counts must be"),
    ({"size": [30, 40], "counts": [600, -5, 605]}, "negative run"),
    ({"size": [30, 40], "counts": [600, 5]}, "covers 605 pixels"),
    ({"size": [30, 40], "counts": "0é"}, "ASCII"),
    ({"size": [30, 40], "counts": "1"}, "covers 1 pixels"),
])
def test_bad_coco_segmentations_are_refused_with_one_clear_error(tmp_path, segmentation, message):
    ann = {"id": 5, "image_id": 1, "category_id": 3, "segmentation": segmentation}
    images, path = _coco(tmp_path, [ann])
    with pytest.raises(DatasetError, match=rf"instances\.json: annotation 5: .*{message}"):
        read_coco(images, path)


def test_coco_declared_size_is_checked_against_the_image_before_decoding(tmp_path):
    huge = {"id": 5, "image_id": 1, "category_id": 3, "segmentation": {"size": [60000, 60000], "counts": [3600000000]}}
    images, path = _coco(tmp_path, [huge])
    doc = json.loads(path.read_text())
    doc["images"][1].update(width=60000, height=60000)
    path.write_text(json.dumps(doc))
    with pytest.raises(DatasetError, match=r"f1\.jpg: image is 60000x60000 .*above the limit"):
        read_coco(images, path)
    doc["images"][1].update(width=41, height=30)
    path.write_text(json.dumps(doc))
    with pytest.raises(DatasetError, match=r"f1\.jpg: image is 40x30 but .*instances\.json says 41x30"):
        read_coco(images, path)


def test_coco_masks_are_decoded_lazily_one_image_at_a_time(tmp_path, monkeypatch):
    from pycocotools import mask as coco_mask

    rle = coco_mask.encode(np.asfortranarray(np.eye(30, 40, dtype=np.uint8)))
    rle["counts"] = rle["counts"].decode()
    anns = [{"id": i, "image_id": i % 2, "category_id": 3, "segmentation": rle} for i in range(40)]
    images, path = _coco(tmp_path, anns)
    calls = []
    real = coco_mask.decode
    monkeypatch.setattr(coco_mask, "decode", lambda obj: calls.append(1) or real(obj))
    sources, _ = read_coco(images, path)
    assert calls == []  # reading the annotations decodes nothing
    mask = sources[0].load_mask((30, 40))
    assert len(calls) == 20 and np.array_equal(mask, np.eye(30, 40, dtype=np.uint8))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pycocotools' own decode under NumPy 2
def test_coco_masks_equal_pycocotools_decoding(tmp_path):
    from pycocotools import mask as coco_mask

    rng = np.random.default_rng(3)
    truth = rng.random((30, 40)) < 0.3
    rle = coco_mask.encode(np.asfortranarray(truth.astype(np.uint8)))
    runs, _ = _encode_rle(truth)
    anns = [{"id": 1, "image_id": 0, "category_id": 3, "segmentation": {"size": [30, 40],
                                                                         "counts": rle["counts"].decode()}},
            {"id": 2, "image_id": 1, "category_id": 3, "segmentation": {"size": [30, 40], "counts": runs}},
            {"id": 3, "image_id": 2, "category_id": 7, "segmentation": [[5.5, 3, 30, 4, 18, 25]]}]
    images, path = _coco(tmp_path, anns)
    sources, _ = read_coco(images, path)
    np.testing.assert_array_equal(sources[0].load_mask((30, 40)), truth)
    np.testing.assert_array_equal(sources[1].load_mask((30, 40)), truth)
    polygon = coco_mask.decode(coco_mask.merge(coco_mask.frPyObjects([[5.5, 3, 30, 4, 18, 25]], 30, 40)))
    np.testing.assert_array_equal(sources[2].load_mask((30, 40)), polygon * 2)


@pytest.mark.parametrize("categories", [
    [{"id": 3, "name": "motor"}, {"id": 7, "name": "motor"}],
    [{"id": 3, "name": 5}, {"id": 7, "name": "cable"}],
    [{"id": 3, "name": "motor"}, {"id": 3, "name": "cable"}],
])
def test_prepare_refuses_category_names_its_reader_would_refuse_before_writing(tmp_path, categories):
    from typer.testing import CliRunner

    from scrapbench.cli.main import app

    ann = {"id": 4, "image_id": 1, "category_id": 3, "segmentation": [[2, 2, 6, 2, 6, 8]]}
    images, path = _coco(tmp_path, [ann], categories=categories)
    result = CliRunner().invoke(app, ["prepare", str(images), "--format", "coco", "--annotations", str(path),
                                      "--patch-size", "16", "--out", str(tmp_path / "ds")])
    assert result.exit_code == 2 and "instances.json" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "ds").exists()


def test_mask_folder_matches_upper_case_extensions_and_refuses_orphans(tmp_path):
    images, masks, truth = _mask_folder(tmp_path, n=2)
    (masks / "cam0.png").rename(masks / "cam0.PNG")
    sources = read_mask_folder(images, masks, CLASSES)
    np.testing.assert_array_equal(sources[0].load_mask((30, 40)), truth["cam0"][1])
    Image.fromarray(np.zeros((30, 40), np.uint8)).save(masks / "CAM1.PNG")  # no image CAM1
    with pytest.raises(DatasetError, match=r"masks without an image .*CAM1\.PNG"):
        read_mask_folder(images, masks, CLASSES)


def test_a_truncated_source_image_fails_before_anything_is_written(tmp_path):
    images, masks, _ = _mask_folder(tmp_path, n=4)
    bad = images / "cam3.jpg"
    Image.fromarray(_image(3)).save(bad, quality=95)
    (images / "cam3.png").unlink()
    bad.write_bytes(bad.read_bytes()[:-100])
    sources = read_mask_folder(images, masks, CLASSES)
    cropped = []

    def roi(image, path, source_id):  # a slow text-prompted crop would run here, once per image
        cropped.append(path)
        return full_image_roi(*image.shape[:2])

    with pytest.raises(DatasetError, match=r"cam3\.jpg: .*truncated"):
        prepare_dataset(sources, CLASSES, tmp_path / "ds", roi=roi,
                        config=PrepareConfig(patch_size=16, test_fraction=0.5))
    assert cropped == [] and not (tmp_path / "ds").exists()
