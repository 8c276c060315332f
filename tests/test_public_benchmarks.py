"""MVTec AD and VisA read in place: layouts, binarised masks, errors naming the file, specs, protocols."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from public_layouts import SIZE, write_mvtec, write_visa

from scrapbench.datasets import DatasetError, load_dataset
from scrapbench.datasets.protocols import (
    check_cross_dataset,
    cross_dataset_train,
    cross_dataset_training,
    supervised_split,
)
from scrapbench.datasets.public.mvtec import read_mvtec_category
from scrapbench.datasets.public.visa import read_visa_category
from scrapbench.datasets.resolve import expand_dataset_spec, load_datasets, parse_benchmark_spec

MVTEC = {
    "bottle": {"train": 3, "good": 2, "broken_large": 2, "contamination": 3},
    "metal_nut": {"train": 2, "good": 1, "bent": 2},
    "screw": {"train": 2, "good": 2},  # a category without a defect type
}
VISA = {
    "candle": {"train": 3, "test_normal": 2, "test_anomaly": 3},
    "pcb1": {"train": 2, "test_normal": 1, "test_anomaly": 2},
}


@pytest.fixture
def mvtec(tmp_path):
    root = tmp_path / "mvtec"
    return root, write_mvtec(root, MVTEC)


@pytest.fixture
def visa(tmp_path):
    root = tmp_path / "visa"
    return root, write_visa(root, VISA, mask_value=3)


def _check_by_value(split, expected: dict, prefix: str = "") -> None:
    for sample in split:
        image, mask = expected[prefix + sample.id]
        np.testing.assert_array_equal(sample.image, image)
        np.testing.assert_array_equal(sample.mask, mask.astype(np.uint8))


# -- MVTec AD ---------------------------------------------------------------------------------

def test_mvtec_category_read_in_place_by_value(mvtec):
    root, written = mvtec
    data = read_mvtec_category(root, "bottle")
    assert data.name == "mvtec-bottle" and data.class_names == ("anomaly",) and data.object_name == "bottle"
    assert data.root == root / "bottle" and data.notes["spec"] == f"mvtec:{root}#bottle"
    assert data.train.ids == ["good_000", "good_001", "good_002"]
    assert data.test.ids == ["good_000", "good_001", "broken_large_000", "broken_large_001",
                             "contamination_000", "contamination_001", "contamination_002"]
    assert data.test.has_anomaly == [False, False, True, True, True, True, True]
    assert data.notes["test_groups"] == ("good", "good", "broken_large", "broken_large",
                                         "contamination", "contamination", "contamination")
    _check_by_value(data.train, written["bottle"], "train/")
    _check_by_value(data.test, written["bottle"])  # 0/255 masks binarised to 0/1
    assert data.test[2].mask.shape == (SIZE[1], SIZE[0])


def test_mvtec_per_defect_type_classes(mvtec):
    root, written = mvtec
    data = read_mvtec_category(root, "bottle", per_defect_type=True)
    assert data.class_names == ("broken_large", "contamination")
    assert {int(data.test[i].mask.max()) for i in range(len(data.test))} == {0, 1, 2}
    assert data.test[4].id == "contamination_000"
    np.testing.assert_array_equal(data.test[4].mask, written["bottle"]["contamination_000"][1].astype(np.uint8) * 2)
    assert data.test.class_presence[2:] == [frozenset({1})] * 2 + [frozenset({2})] * 3


def test_mvtec_object_name_from_category(mvtec):
    root, _ = mvtec
    assert read_mvtec_category(root, "metal_nut").object_name == "metal nut"


def test_mvtec_root_may_be_one_category_folder(mvtec):
    root, _ = mvtec
    assert load_dataset(f"mvtec:{root / 'bottle'}").name == "mvtec-bottle"


def test_mvtec_category_without_defect_type_is_refused_naming_the_folder(mvtec):
    root, _ = mvtec
    with pytest.raises(DatasetError, match=r"screw/test: no defect-type folder"):
        read_mvtec_category(root, "screw")


def test_empty_train_split_names_the_folder_or_split_file(mvtec, visa):
    root, _ = mvtec
    for path in (root / "bottle" / "train" / "good").iterdir():
        path.unlink()
    with pytest.raises(DatasetError, match=r"bottle/train/good: no images"):
        read_mvtec_category(root, "bottle")
    visa_root, _ = visa
    csv_path = visa_root / "split_csv" / "1cls.csv"
    csv_path.write_text("\n".join(r for r in csv_path.read_text().splitlines() if not r.startswith("pcb1,train")))
    with pytest.raises(DatasetError, match=r"1cls.csv: object 'pcb1' has no train row"):
        read_visa_category(visa_root, "pcb1")


def test_mvtec_missing_mask_names_the_mask(mvtec):
    root, _ = mvtec
    (root / "bottle" / "ground_truth" / "contamination" / "001_mask.png").unlink()
    with pytest.raises(DatasetError, match=r"contamination/001_mask.png: missing ground-truth mask of .*001.png"):
        read_mvtec_category(root, "bottle")


def test_mvtec_orphan_mask_and_stray_mask_folder(mvtec):
    root, _ = mvtec
    (root / "bottle" / "test" / "broken_large" / "001.png").unlink()
    with pytest.raises(DatasetError, match=r"broken_large: masks without an image .*001_mask.png"):
        read_mvtec_category(root, "bottle")
    (root / "metal_nut" / "ground_truth" / "scratch").mkdir()
    with pytest.raises(DatasetError, match=r"mask folders \['scratch'\] have no test/<defect>"):
        read_mvtec_category(root, "metal_nut")


@pytest.mark.parametrize("case", ["truncated_image", "mask_size", "empty_mask", "rgba_mask"])
def test_mvtec_bad_files_are_named(mvtec, case):
    root, _ = mvtec
    image = root / "bottle" / "test" / "contamination" / "002.png"
    mask = root / "bottle" / "ground_truth" / "contamination" / "002_mask.png"
    if case == "truncated_image":
        image.write_bytes(image.read_bytes()[:60])
        expected, named = "cannot decode image", image
    elif case == "mask_size":
        Image.fromarray(np.full((SIZE[0], SIZE[1]), 255, np.uint8)).save(mask)  # transposed
        expected, named = "mask is 14x20 but its image is 20x14", mask
    elif case == "empty_mask":
        Image.fromarray(np.zeros((SIZE[1], SIZE[0]), np.uint8)).save(mask)
        expected, named = "has no anomalous pixel", mask
    else:
        Image.fromarray(np.zeros((SIZE[1], SIZE[0], 4), np.uint8)).save(mask)
        expected, named = "mode 'RGBA'", mask
    with pytest.raises(DatasetError, match=expected) as info:
        read_mvtec_category(root, "bottle")
    assert str(info.value).startswith(str(named))


def test_first_bad_file_in_order_is_reported_whatever_the_threads(mvtec):
    from scrapbench.datasets.public.mvtec import category_dir, mvtec_records
    from scrapbench.datasets.split import validated_split

    root, _ = mvtec
    for stem in ("000", "002"):
        path = root / "bottle" / "test" / "contamination" / f"{stem}.png"
        path.write_bytes(b"not an image")
    records = mvtec_records(category_dir(root, "bottle"))[0]["test"]
    for workers in (1, 4):
        with pytest.raises(DatasetError, match=r"contamination/000.png: not a readable image .*\(and 1 more bad"):
            validated_split("test", records, workers=workers)


def test_mvtec_masks_get_the_folder_checks(mvtec):
    """Masks are checked as in dataset folders: single-channel PNGs (an RGB mask is refused, naming it),
    16-bit masks binarised like 8-bit ones."""
    root, written = mvtec
    mask = written["bottle"]["broken_large_000"][1]
    path = root / "bottle" / "ground_truth" / "broken_large" / "000_mask.png"
    rgb = np.zeros((*mask.shape, 3), np.uint8)
    rgb[mask, 0] = 255  # red on black
    Image.fromarray(rgb).save(path)
    with pytest.raises(DatasetError, match=r"000_mask.png: mask has mode 'RGB'; expected a single-channel PNG"):
        read_mvtec_category(root, "bottle")
    Image.fromarray(mask.astype(np.uint16) * 65535).save(path)  # 16-bit grey
    np.testing.assert_array_equal(read_mvtec_category(root, "bottle").test[2].mask, mask.astype(np.uint8))


def test_category_fingerprint_comes_from_the_file_check(mvtec, visa, monkeypatch):
    """The readers set the fingerprint in the same pass (no second decode) and remember checked files."""
    from scrapbench.datasets.io import filecheck

    root, _ = mvtec
    first = read_mvtec_category(root, "bottle")
    assert first.fingerprint.startswith("sha256:")
    assert read_mvtec_category(root, "metal_nut").fingerprint != first.fingerprint
    decoded = []
    monkeypatch.setattr(filecheck, "check_file", lambda path, kind: decoded.append(path))
    assert read_mvtec_category(root, "bottle").fingerprint == first.fingerprint  # remembered: nothing decoded
    assert decoded == []
    monkeypatch.undo()
    image = root / "bottle" / "test" / "good" / "001.png"
    Image.fromarray(np.zeros((SIZE[1], SIZE[0], 3), np.uint8)).save(image)
    assert read_mvtec_category(root, "bottle").fingerprint != first.fingerprint  # content changed
    # VisA: the split file is part of it (the same files in other splits are other data): a train image moves to test
    visa_root, _ = visa
    before = read_visa_category(visa_root, "pcb1").fingerprint
    csv_path = visa_root / "split_csv" / "1cls.csv"
    rows = csv_path.read_text().splitlines()
    train_row = next(i for i, r in enumerate(rows) if r.startswith("pcb1,train"))
    rows[train_row] = rows[train_row].replace(",train,", ",test,")
    csv_path.write_text("\n".join(rows) + "\n")
    assert read_visa_category(visa_root, "pcb1").fingerprint != before


def test_images_of_one_split_must_share_one_size(mvtec):
    root, _ = mvtec
    odd = root / "bottle" / "train" / "good" / "001.png"
    Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(odd)
    with pytest.raises(DatasetError, match=r"train/good/001.png: image is 10x10 but 2 of 3 images of .*bottle/train "
                                           r"are 20x14"):
        read_mvtec_category(root, "bottle")


# -- VisA -------------------------------------------------------------------------------------

def test_visa_object_read_through_split_file_by_value(visa):
    root, written = visa
    data = read_visa_category(root, "candle")
    assert data.name == "visa-candle" and data.class_names == ("anomaly",) and data.object_name == "candle"
    assert data.train.ids == ["normal_0000", "normal_0001", "normal_0002"]
    assert data.test.ids == ["normal_0003", "normal_0004", "anomaly_000", "anomaly_001", "anomaly_002"]
    assert data.test.has_anomaly == [False, False, True, True, True]
    _check_by_value(data.train, written["candle"], "train/")
    _check_by_value(data.test, written["candle"])  # .JPG images, masks of value 3 binarised to 1


def test_visa_per_defect_type_is_refused(visa):
    root, _ = visa
    with pytest.raises(DatasetError, match="names no defect types"):
        read_visa_category(root, "candle", per_defect_type=True)


@pytest.mark.parametrize(("edit", "expected"), [
    (lambda rows: [*rows[:3], rows[3].replace("0002.JPG", "9999.JPG"), *rows[4:]],
     r"1cls.csv:4: image .*9999.JPG does not exist"),
    (lambda rows: [r.replace("Anomaly/000.png", "Anomaly/000") for r in rows],
     r"1cls.csv:7: mask .*Masks/Anomaly/000 does not exist"),
    (lambda rows: [r.replace(",candle/Data/Masks/Anomaly/001.png", ",") for r in rows],
     r"1cls.csv:8: anomalous image candle/Data/Images/Anomaly/001.JPG has no mask"),
    (lambda rows: [*rows, "candle,val,normal,candle/Data/Images/Normal/0000.JPG,"], r"1cls.csv:\d+: split 'val'"),
    (lambda rows: [*rows, "candle,test,normal,../outside.JPG,"],
     r"1cls.csv:\d+: path '../outside.JPG' must be relative"),
    (lambda rows: [*rows, rows[1]], r"1cls.csv:\d+: image .*0000.JPG is listed twice \(also line 2\)"),
    (lambda rows: ["object,set,label,image,mask", *rows[1:]], r"1cls.csv: header is 'object,set,label,image,mask'"),
])
def test_visa_split_file_errors_name_file_and_line(visa, edit, expected):
    root, _ = visa
    csv_path = root / "split_csv" / "1cls.csv"
    csv_path.write_text("\n".join(edit(csv_path.read_text().splitlines())) + "\n")
    with pytest.raises(DatasetError, match=expected):
        read_visa_category(root, "candle")


_LONG = "x" * 200_000


@pytest.mark.parametrize(("content", "expected"), [
    # a field over the csv module's 131,072 characters, unquoted and quoted over several lines
    (lambda rows: [*rows[:2], f"candle,train,normal,{_LONG},", *rows[2:]],
     r"1cls.csv:3: not a valid CSV row \(field larger than field limit"),
    (lambda rows: [*rows[:2], f'candle,train,normal,"a\n{_LONG}",', *rows[2:]], r"1cls.csv:4: not a valid CSV row"),
    (lambda rows: [*rows[:2], f"candle,train,normal,{'y' * 5000},", *rows[2:]],
     r"1cls.csv:3: field 4 is 5,000 characters long"),
    (lambda rows: [*rows[:2], "candle,train,normal,candle/Data/Images/Normal/0000\0.JPG,", *rows[2:]],
     r"1cls.csv:3: field 4 holds the control character U\+0000"),
    (lambda rows: [rows[0] + "\0", *rows[1:]], r"1cls.csv:1: field 5 holds the control character U\+0000"),
    (lambda rows: [*rows[:2], f"candle,train,normal,candle/{'z' * 300}.JPG,", *rows[2:]],
     r"1cls.csv:3: cannot check "),
    # a quoted field over two lines (named by the line it starts on); a tab
    (lambda rows: [*rows[:2], 'candle,"tr\nain",normal,x,', *rows[2:]], r"1cls.csv:3: field 2 holds .* U\+000A"),
    (lambda rows: [*rows, 'candle,train,normal,"a\nb",'], r"1cls.csv:\d+: field 4 holds .* U\+000A"),
    (lambda rows: [*rows[:2], "candle,train,normal,a\tb,", *rows[2:]], r"1cls.csv:3: field 4 holds .* U\+0009"),
])
def test_visa_malformed_split_file_is_one_line_naming_file_and_line(visa, content, expected):
    """Any csv.Error, a NUL byte, an over-long field: ``1cls.csv:LINE: reason``, never a traceback (issue #22.8)."""
    root, _ = visa
    csv_path = root / "split_csv" / "1cls.csv"
    csv_path.write_text("\n".join(content(csv_path.read_text().splitlines())) + "\n")
    with pytest.raises(DatasetError, match=expected) as info:
        read_visa_category(root, "candle")
    assert "\n" not in str(info.value) and len(str(info.value)) < 1000


@pytest.mark.parametrize(("data", "line"), [(b"\xff\xfe\n", 1), (b"ok\r\nbad \xc3(\n", 2), (b"a\rb\rc\x80\n", 3)])
def test_visa_split_file_not_utf8_names_the_line(visa, data, line):
    root, _ = visa
    csv_path = root / "split_csv" / "1cls.csv"
    before = csv_path.read_bytes().count(b"\n")  # lines of the file as written (each ends with \n)
    csv_path.write_bytes(csv_path.read_bytes() + data)
    with pytest.raises(DatasetError, match=rf"1cls\.csv:{before + line}: not UTF-8 text \(byte 0x"):
        read_visa_category(root, "candle")


def test_visa_missing_split_file(visa):
    root, _ = visa
    (root / "split_csv" / "1cls.csv").unlink()
    with pytest.raises(DatasetError, match=r"split_csv/1cls.csv: VisA split file missing"):
        load_datasets(f"visa:{root}")


# -- specs ------------------------------------------------------------------------------------

def test_benchmark_specs_expand_to_one_spec_per_category(mvtec, visa):
    mvtec_root, _ = mvtec
    visa_root, _ = visa
    assert expand_dataset_spec(f"mvtec:{mvtec_root}") == [f"mvtec:{mvtec_root}#{c}" for c in
                                                          ("bottle", "metal_nut", "screw")]
    assert expand_dataset_spec(f"mvtec:{mvtec_root}#metal_nut, bottle") == [f"mvtec:{mvtec_root}#metal_nut",
                                                                            f"mvtec:{mvtec_root}#bottle"]
    assert expand_dataset_spec(f"visa:{visa_root}#pcb1") == [f"visa:{visa_root}#pcb1"]
    assert expand_dataset_spec("synthetic") == ["synthetic"]
    datasets = load_datasets(f"mvtec:{mvtec_root}#bottle,metal_nut")
    assert [d.name for d in datasets] == ["mvtec-bottle", "mvtec-metal_nut"]
    assert [d.name for d in load_datasets(f"visa:{visa_root}")] == ["visa-candle", "visa-pcb1"]


def test_unknown_category_lists_the_available_ones(mvtec, visa):
    mvtec_root, _ = mvtec
    with pytest.raises(DatasetError, match=r"no mvtec category 'bottel'; available: bottle, metal_nut, screw"):
        expand_dataset_spec(f"mvtec:{mvtec_root}#bottel")
    visa_root, _ = visa
    with pytest.raises(DatasetError, match=r"no visa categories 'pcb9', 'x'; available: candle, pcb1"):
        load_datasets(f"visa:{visa_root}#pcb9,x")


def test_spec_errors(mvtec, tmp_path):
    root, _ = mvtec
    with pytest.raises(DatasetError, match="names 3 categories; open them with load_datasets"):
        load_dataset(f"mvtec:{root}")
    with pytest.raises(DatasetError, match="missing ROOT"):
        parse_benchmark_spec("visa:")
    with pytest.raises(DatasetError, match="category names separated by commas"):
        parse_benchmark_spec(f"mvtec:{root}#bottle,")
    with pytest.raises(DatasetError, match="MVTec AD root folder does not exist"):
        expand_dataset_spec(f"mvtec:{tmp_path / 'nowhere'}")
    with pytest.raises(DatasetError, match="--dataset takes 'synthetic'"):
        load_dataset(str(tmp_path / "nowhere"))


def test_root_containing_hash_still_works(tmp_path):
    root = tmp_path / "data#1"
    write_mvtec(root, {"bottle": MVTEC["bottle"]})
    assert expand_dataset_spec(f"mvtec:{root}") == [f"mvtec:{root}#bottle"]
    assert load_dataset(f"mvtec:{root}#bottle").name == "mvtec-bottle"


def test_folder_and_synthetic_specs_still_load(tmp_path, smoke_dataset):
    from scrapbench.datasets.folder import write_folder_dataset

    folder = write_folder_dataset(tmp_path / "mine", smoke_dataset.class_names,
                                  {"train": smoke_dataset.train[:3], "test": smoke_dataset.test[:6]})
    assert [d.name for d in load_datasets(str(folder))] == ["mine"]
    assert load_datasets("synthetic", preset="smoke", cache_dir=tmp_path / "c")[0].class_names == \
        smoke_dataset.class_names


# -- protocols --------------------------------------------------------------------------------

def test_cross_dataset_train_is_every_test_image_of_the_other_benchmark(visa, mvtec):
    root, written = visa
    train = cross_dataset_train(f"visa:{root}")
    assert len(train) == 5 + 3
    assert train.ids[:2] == ["candle_normal_0003", "candle_normal_0004"]
    assert train.ids[-2:] == ["pcb1_anomaly_000", "pcb1_anomaly_001"]
    assert sum(train.has_anomaly) == 3 + 2
    for sample in train:
        category, sample_id = sample.id.split("_", 1)
        image, mask = written[category][sample_id]
        np.testing.assert_array_equal(sample.image, image)
        np.testing.assert_array_equal(sample.mask, mask.astype(np.uint8))
    mvtec_root, _ = mvtec
    evaluated = read_mvtec_category(mvtec_root, "bottle")
    check_cross_dataset(cross_dataset_training(f"visa:{root}"), evaluated)  # another benchmark: fine
    with pytest.raises(DatasetError, match="trains on the test images of mvtec-bottle"):
        check_cross_dataset(cross_dataset_training(f"mvtec:{mvtec_root}#metal_nut"), evaluated)


def test_cross_dataset_train_binary_even_with_per_defect_types(mvtec):
    root, _ = mvtec
    train = cross_dataset_train(f"mvtec:{root}#bottle,metal_nut")
    assert len(train) == 7 + 3
    assert {int(train[i].mask.max()) for i in range(len(train))} == {0, 1}


def test_supervised_split_is_seeded_stratified_and_disjoint(mvtec):
    root, _ = mvtec
    data = read_mvtec_category(root, "bottle")
    splits = [supervised_split(data, seed) for seed in range(6)]
    for split in splits:
        moved = [i.removeprefix("test_") for i in split.train.ids if i.startswith("test_")]
        assert split.train.ids[:3] == ["train_good_000", "train_good_001", "train_good_002"]
        # one of two broken_large, round(1.5) = 2 of three contamination; normal test images stay
        assert sorted(m.rsplit("_", 1)[0] for m in moved) == ["broken_large", "contamination", "contamination"]
        assert set(moved).isdisjoint(split.test.ids) and set(moved) | set(split.test.ids) == set(data.test.ids)
        assert split.notes["test_groups"] == tuple(i.rsplit("_", 1)[0] for i in split.test.ids)
    assert supervised_split(data, 3).train.ids == splits[3].train.ids  # same seed, same split
    assert len({tuple(s.test.ids) for s in splits}) > 1  # the seed decides


def test_supervised_split_needs_anomalies_left_to_evaluate(mvtec):
    root, _ = mvtec
    data = read_mvtec_category(root, "metal_nut")
    assert supervised_split(data, 0).test.has_anomaly.count(True) == 1
    only_one = data.test.subset([0, 1])
    with pytest.raises(DatasetError, match="too few anomalous test images"):
        supervised_split(type(data)(data.name, data.class_names, data.train, only_one), 0)
