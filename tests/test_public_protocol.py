"""MVTec AD / VisA through `run` and `report`: one run per category, per-category tables and the mean over
categories by value, --train-on, the supervised split, --published, a category that cannot be opened."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pandas as pd
import pytest
from public_layouts import write_mvtec, write_visa
from toy_method import ColourDistance, SupervisedColourDistance
from typer.testing import CliRunner

from scrapbench.cli.main import app
from scrapbench.core import registry

MVTEC = {
    "bottle": {"train": 3, "good": 2, "broken_large": 2, "contamination": 3},
    "metal_nut": {"train": 2, "good": 1, "bent": 2},
    "screw": {"train": 2, "good": 2},  # no defect type: cannot be opened, the others go on
}
VISA = {  # .JPG images, masks of small non-zero values
    "candle": {"train": 3, "test_normal": 2, "test_anomaly": 3},
    "pcb1": {"train": 2, "test_normal": 2, "test_anomaly": 2},
}


@pytest.fixture(autouse=True)
def toy_methods(monkeypatch, tmp_path):
    monkeypatch.setenv("SCRAPBENCH_CACHE", str(tmp_path / "cache"))
    registry.list_methods()  # the built-ins first
    monkeypatch.setitem(registry._REGISTRY, "toy", registry.MethodSpec("toy", ColourDistance, "toy", ("table2",),
                                                                        {"noise": 20.0}))
    monkeypatch.setitem(registry._REGISTRY, "toy_supervised", registry.MethodSpec(
        "toy_supervised", SupervisedColourDistance, "supervised toy", ("table2",), {"noise": 20.0}))


@pytest.fixture
def data(tmp_path):
    write_mvtec(tmp_path / "mvtec", MVTEC)
    write_visa(tmp_path / "visa", VISA, mask_value=2)
    return tmp_path


def _cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def _run(spec, out, methods="toy", seeds=2, *extra):
    return _cli("run", "--dataset", spec, "--methods", methods, "--seeds", seeds, "--preset", "smoke", "--out", out,
                "--no-progress", *extra)


def _metrics(out, dataset, method, seed):
    return json.loads((out / dataset / "smoke" / method / f"seed{seed}" / "metrics.json").read_text())


def _record(out, dataset, method, seed):
    return json.loads((out / dataset / "smoke" / method / f"seed{seed}" / "run.json").read_text())


# -- run + report, by value ---------------------------------------------------------------------------------------

def test_mvtec_runs_per_category_and_reports_categories_and_their_mean_by_value(data, tmp_path):
    from scrapbench.datasets.public.mvtec import read_mvtec_category

    out = tmp_path / "runs"
    result = _run(f"mvtec:{data / 'mvtec'}", out, "toy,toy_supervised")
    assert result.exit_code == 1, result.output  # screw could not be opened
    assert f"✗ mvtec:{data / 'mvtec'}#screw: {data / 'mvtec' / 'screw' / 'test'}: no defect-type folder" \
        in result.output
    assert "dataset mvtec-metal_nut: 2 train / 3 test images, classes anomaly, object 'metal nut'" in result.output
    assert "✓ mvtec-bottle toy seed 1" in result.output and "1 dataset(s) could not be run" in result.output
    assert sorted(p.name for p in out.iterdir()) == ["mvtec-bottle", "mvtec-metal_nut"]
    record = _record(out, "mvtec-metal_nut", "toy", 0)
    assert record["dataset"]["benchmark"] == "mvtec" and record["dataset"]["category"] == "metal_nut"
    assert record["dataset"]["spec"] == f"mvtec:{data / 'mvtec'}#metal_nut"
    assert record["identity"]["dataset_fingerprint"] == read_mvtec_category(data / "mvtec", "metal_nut").fingerprint
    assert "training" not in record["identity"]  # toy (few-shot) trains on the category's own train split

    report = _cli("report", out, "--no-figures")
    assert report.exit_code == 0, report.output
    table = pd.read_csv(out / "report" / "per_category_auroc.csv").set_index("category")
    means = pd.read_csv(out / "report" / "categories_mean.csv").set_index("method")
    for method in ("toy", "toy_supervised"):
        values = {c: [100 * _metrics(out, f"mvtec-{c}", method, s)["auroc"] for s in (0, 1)]
                  for c in ("bottle", "metal_nut")}
        for category, seeds in values.items():
            assert table.loc[category, f"{method}_mean_pct"] == pytest.approx(np.mean(seeds), abs=1e-5)
            assert table.loc[category, f"{method}_std_pct"] == pytest.approx(np.std(seeds, ddof=1), abs=1e-5)
        mean = np.mean([np.mean(v) for v in values.values()])  # mean over categories of the seed means
        std = np.std([np.mean([values[c][s] for c in values]) for s in (0, 1)], ddof=1)  # over seeds
        assert table.loc["mean", f"{method}_mean_pct"] == pytest.approx(mean, abs=1e-5)
        assert table.loc["mean", f"{method}_std_pct"] == pytest.approx(std, abs=1e-5)
        assert means.loc[method, "auroc_mean_pct"] == pytest.approx(mean, abs=1e-5)
        assert means.loc[method, "auroc_std_pct"] == pytest.approx(std, abs=1e-5)
        assert std != pytest.approx(np.std([x for v in values.values() for x in v], ddof=1))  # not the pooled std
    cost = pd.read_csv(out / "report" / "efficiency.csv").set_index("method")  # each method's cost: all its runs
    fit_s = [_record(out, f"mvtec-{c}", "toy", s)["timings"]["fit_s"] for c in ("bottle", "metal_nut") for s in (0, 1)]
    assert cost.loc["toy", "fit_s"] == pytest.approx(np.mean(fit_s), abs=1e-6)
    assert "## Cost" in (out / "report" / "report.md").read_text()
    markdown = (out / "report" / "per_category_aupro.md").read_text()
    assert markdown.splitlines()[0] == "| Category | toy | toy_supervised |"
    assert [line.split(" |")[0] for line in markdown.splitlines()[2:5]] == ["| bottle", "| metal_nut", "| Mean"]
    page = (out / "report" / "report.md").read_text()
    assert "# scrapbench report — MVTec AD, preset `smoke`" in page and "mean over categories" in page
    assert "toy_supervised was trained on a seeded split of each category's test images" in page
    assert (out / "report" / "per_category_image_auroc.tex").read_text().startswith("\\begin{table}")
    html = (out / "report" / "report.html").read_text()  # the same tables in the page, the mean first
    shown = re.findall(r'<section class="table" id="table-([^"]+)"', html)
    assert shown[0] == "categories_mean" and shown[-2:] == ["runs", "failed_runs"]
    assert sorted(shown[1:-2]) == sorted([*(p.stem for p in (out / "report").glob("per_category_*.csv")), "efficiency"])
    assert "one viewer per category" in html


def test_supervised_methods_get_a_seeded_split_of_the_test_images(data, tmp_path):
    from scrapbench.datasets.public.mvtec import read_mvtec_category

    out = tmp_path / "runs"
    result = _run(f"mvtec:{data / 'mvtec'}#bottle", out, "toy_supervised")
    assert result.exit_code == 0, result.output
    assert "no --train-on, so each trains on a seeded half of each defect type's test images" in result.output
    full = read_mvtec_category(data / "mvtec", "bottle")
    splits = []
    for seed in (0, 1):
        record = _record(out, "mvtec-bottle", "toy_supervised", seed)
        assert record["identity"]["training"] == {"protocol": "supervised_split", "train_fraction": 0.5}
        assert record["identity"]["dataset_fingerprint"] == full.fingerprint
        seen = json.loads((out / "mvtec-bottle" / "smoke" / "toy_supervised" / f"seed{seed}" / "work" /
                           "train.json").read_text())["ids"]
        moved = sorted(i.removeprefix("test_") for i in seen if i.startswith("test_"))
        assert len(moved) == 3 and record["dataset"]["num_test"] == len(full.test) - 3
        evaluated = pd.read_csv(out / "mvtec-bottle" / "smoke" / "toy_supervised" / f"seed{seed}" / "per_image.csv")
        assert set(evaluated["id"]).isdisjoint(moved)  # never evaluated on what it trained on
        splits.append(moved)
    assert splits[0] != splits[1]  # the seed draws the split
    # the seeds differ in the seed only: the report pools them
    assert _cli("report", out, "--no-figures").exit_code == 0


def test_train_on_the_other_benchmark_is_recorded_and_never_pooled_with_other_training(data, tmp_path):
    from scrapbench.datasets.protocols import cross_dataset_training

    out = tmp_path / "runs"
    train_on = f"mvtec:{data / 'mvtec'}#bottle,metal_nut"
    result = _run(f"visa:{data / 'visa'}", out, "toy,toy_supervised", 1, "--train-on", train_on)
    assert result.exit_code == 0, result.output
    assert "--train-on does not apply to toy" in result.output
    training = cross_dataset_training(train_on)
    for category in ("candle", "pcb1"):
        record = _record(out, f"visa-{category}", "toy_supervised", 0)
        assert record["identity"]["training"] == {"protocol": "cross_dataset", "fingerprint": training.fingerprint}
        assert record["dataset"]["training"]["train_on"] == train_on
        work = out / f"visa-{category}" / "smoke" / "toy_supervised" / "seed0" / "work" / "train.json"
        assert json.loads(work.read_text())["ids"] == training.split.ids  # every MVTec test image
        assert record["dataset"]["num_test"] == VISA[category]["test_normal"] + VISA[category]["test_anomaly"]
        toy = out / f"visa-{category}" / "smoke" / "toy" / "seed0" / "run.json"
        assert "training" not in json.loads(toy.read_text())["identity"]  # few-shot: its own train split
    # The same runs without --train-on are other runs: refused before anything runs, not reused
    again = _run(f"visa:{data / 'visa'}", out, "toy_supervised", 1)
    assert again.exit_code == 2 and "a finished run with another identity exists (training." in again.output
    # training on the evaluated test images is refused
    same = _run(f"visa:{data / 'visa'}", tmp_path / "other", "toy_supervised", 1, "--train-on", f"visa:{data / 'visa'}")
    assert same.exit_code == 2 and "trains on the test images of visa-candle" in same.output
    folder = _run(f"visa:{data / 'visa'}", tmp_path / "other", "toy", 1, "--train-on", data / "mvtec")
    assert folder.exit_code == 2 and "takes mvtec:ROOT[#cat1,cat2] or visa:ROOT" in folder.output


def test_published_numbers_beside_the_measured_means(data, tmp_path, monkeypatch):
    """Toy methods under the baselines' names: WinCLIP (own train split) and AnomalyCLIP (trained on MVTec AD)."""
    from scrapbench.report.published import published_for

    monkeypatch.setitem(registry._REGISTRY, "winclip", registry.MethodSpec("winclip", ColourDistance, "toy",
                                                                            ("table2",), {"noise": 20.0}))
    monkeypatch.setitem(registry._REGISTRY, "anomalyclip", registry.MethodSpec(
        "anomalyclip", SupervisedColourDistance, "toy", ("table2",), {"noise": 20.0}))
    out = tmp_path / "runs"
    result = _run(f"visa:{data / 'visa'}", out, "winclip,anomalyclip", 2, "--train-on",
                  f"mvtec:{data / 'mvtec'}#bottle")
    assert result.exit_code == 0, result.output
    report = _cli("report", out, "--published", "--no-figures")
    assert report.exit_code == 0, report.output
    table = pd.read_csv(out / "report" / "published.csv").set_index("method")
    for method in ("winclip", "anomalyclip"):
        paper = published_for(method, "visa")
        for key, metric in (("pixel_auroc", "auroc"), ("aupro", "aupro"), ("image_auroc", "image_auroc")):
            measured = np.mean([np.mean([100 * _metrics(out, f"visa-{c}", method, s)[metric] for s in (0, 1)])
                                for c in ("candle", "pcb1")])
            assert table.loc[method, f"{key}_measured_pct"] == pytest.approx(measured, abs=1e-5)
            assert table.loc[method, f"{key}_published_pct"] == paper.values[key]
            assert table.loc[method, f"{key}_diff_pp"] == pytest.approx(measured - paper.values[key], abs=1e-5)
    page = (out / "report" / "report.md").read_text()
    assert "## Published numbers" in page and "over 2 of the 12 VisA categories" in page
    assert "| WinCLIP | " in page and "arXiv 2310.18961, Table 1" in page

    # AnomalyCLIP without --train-on (a supervised split) is not the published protocol: no difference
    split_out = tmp_path / "split"
    assert _run(f"visa:{data / 'visa'}#candle", split_out, "anomalyclip", 1).exit_code == 0
    assert _cli("report", split_out, "--published", "--no-figures").exit_code == 0
    table = pd.read_csv(split_out / "report" / "published.csv").set_index("method")
    assert table.loc["anomalyclip", "aupro_published_pct"] == 87.0
    assert math.isnan(table.loc["anomalyclip", "aupro_diff_pp"])
    assert "the paper on the test images of MVTec AD; no difference shown" in \
        (split_out / "report" / "report.md").read_text()


def test_paper_methods_accept_the_benchmarks_unchanged(data, tmp_path):
    """The `paper` methods (smoke sizes, random weights): WinCLIP's prompts name the category's object,
    WinCLIP+ takes its shots from the category, AnomalyCLIP trains on the other benchmark."""
    out = tmp_path / "runs"
    result = _run(f"mvtec:{data / 'mvtec'}#metal_nut", out, "winclip,winclip_plus,anomalyclip", 1,
                  "--set", "winclip_plus.k_shot=1", "--train-on", f"visa:{data / 'visa'}")
    assert result.exit_code == 0, result.output
    folder = out / "mvtec-metal_nut" / "smoke"
    fit = json.loads((folder / "winclip" / "seed0" / "work" / "winclip_fit.json").read_text())
    assert fit["object_name"] == "metal nut" and "a photo of the flawless metal nut." in fit["prompts"]["normal"]
    plus = json.loads((folder / "winclip_plus" / "seed0" / "work" / "winclip_fit.json").read_text())
    assert len(plus["reference_ids"]) == 1 and plus["reference_ids"][0].startswith("good_")
    anomalyclip = _record(out, "mvtec-metal_nut", "anomalyclip", 0)
    assert anomalyclip["identity"]["training"]["protocol"] == "cross_dataset"
    assert anomalyclip["dataset"]["training"]["num_train"] == 4 + 5  # VisA's test images
    assert _cli("report", out, "--published", "--no-figures").exit_code == 0
    table = pd.read_csv(out / "report" / "published.csv").set_index("method")
    assert table.loc["winclip_plus", "shots"] == 1 and table.loc["winclip_plus", "aupro_published_pct"] == 87.1
    assert not math.isnan(table.loc["anomalyclip", "aupro_diff_pp"])  # trained as in the paper: compared


def test_report_selects_one_benchmark_or_one_category(data, tmp_path):
    out = tmp_path / "runs"
    assert _run(f"mvtec:{data / 'mvtec'}#bottle,metal_nut", out, "toy", 1).exit_code == 0
    assert _run(f"visa:{data / 'visa'}#candle", out, "toy", 1).exit_code == 0
    both = _cli("report", out, "--no-figures")
    assert both.exit_code == 2
    assert "choose one: --dataset mvtec --preset smoke, --dataset visa --preset smoke" in both.output
    assert _cli("report", out, "--dataset", "visa", "--no-figures", "--out", tmp_path / "v").exit_code == 0
    assert pd.read_csv(tmp_path / "v" / "per_category_auroc.csv")["category"].tolist() == ["candle", "mean"]
    one = _cli("report", out, "--dataset", "mvtec-bottle", "--no-figures", "--n-boot", 0, "--out", tmp_path / "b")
    assert one.exit_code == 0 and (tmp_path / "b" / "table2.csv").is_file()  # one category: the usual report
    refused = _cli("report", out, "--dataset", "mvtec-bottle", "--published", "--out", tmp_path / "p")
    assert refused.exit_code == 2 and "--published sets the papers' MVTec AD / VisA numbers beside" in refused.output
    # a method's categories run with other settings are not averaged
    record_path = out / "mvtec-bottle" / "smoke" / "toy" / "seed0" / "run.json"
    record = json.loads(record_path.read_text())
    record["identity"]["config"]["noise"] = 1.0
    record_path.write_text(json.dumps(record))
    mixed = _cli("report", out, "--dataset", "mvtec", "--out", tmp_path / "m")
    assert mixed.exit_code == 2
    assert "toy: categories bottle vs metal_nut (config.noise: 1.0 → 20.0) were run with different settings" \
        in mixed.output


def test_one_progress_bar_over_the_whole_grid(data, tmp_path, monkeypatch):
    from scrapbench.run import categories, compute, grid
    from scrapbench.run.plan import RunOptions

    bars = []

    class Recorder:
        def __init__(self, *args, total=None, desc=None, **kwargs):
            bars.append((desc, total))
            self.n = 0

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def update(self, n=1):
            self.n += n

        def set_postfix_str(self, text):
            pass

    monkeypatch.setattr(categories, "tqdm", Recorder)
    for module in (grid, compute):
        monkeypatch.setattr(module, "tqdm", lambda iterable=None, *a, **k: iterable if iterable is not None
                            else Recorder(*a, **k))
    options = RunOptions(preset="smoke", out=tmp_path / "runs", show_progress=False)
    outcome = categories.run_categories(f"mvtec:{data / 'mvtec'}", ["toy", "toy_supervised"], [0, 1], options)
    assert len(outcome.results) == 2 * 2 * 2 and [f.spec.rsplit("#")[1] for f in outcome.failures] == ["screw"]
    assert bars == [("runs", 8)]  # one bar for 2 categories × 2 methods × 2 seeds, none per category


def _error_json(folder):
    (folder / "run.json").unlink()  # as a failed run leaves it: error.json, no run.json
    (folder / "error.json").write_text(json.dumps({"method": "toy", "seed": 0, "message": "RuntimeError: boom"}))


def _edit_json(name, key, value):
    def edit(folder):
        record = json.loads((folder / name).read_text())
        (folder / name).write_text(json.dumps({**record, key: value}))
    return edit


BROKEN = {  # how metal_nut's toy seed 0 is broken → what the report lists
    "failed": (_error_json, "RuntimeError: boom"),
    "auroc true": (_edit_json("metrics.json", "auroc", True), "metrics.json: auroc is true, not a number in [0, 1]"),
    "aupro Infinity": (_edit_json("metrics.json", "aupro", math.inf), "metrics.json: aupro is Infinity"),
    "seed zero": (_edit_json("run.json", "seed", "zero"), 'run.json: seed is "zero", but the run\'s folder is seed0'),
    "config list": (_edit_json("run.json", "config", [1, 2]), "run.json: config is [1, 2], not an object"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_failed_runs_of_a_category_are_listed_and_its_mean_is_flagged(data, tmp_path, case):
    out = tmp_path / "runs"
    assert _run(f"mvtec:{data / 'mvtec'}#bottle,metal_nut", out, "toy,toy_supervised", 1).exit_code == 0
    folder = out / "mvtec-metal_nut" / "smoke" / "toy" / "seed0"
    breaks, message = BROKEN[case]
    breaks(folder)
    report = _cli("report", out, "--no-figures")
    assert report.exit_code == 0, report.output
    assert f"✗ toy seed 0: {message}" in report.output and "(mvtec-metal_nut/smoke/toy/seed0)" in report.output
    mean_row = (out / "report" / "per_category_auroc.md").read_text().splitlines()[4]
    toy = 100 * _metrics(out, "mvtec-bottle", "toy", 0)["auroc"]
    assert mean_row.startswith(f"| Mean | {toy:.2f} ‡ |")  # toy's mean covers bottle only
    assert "toy ‡ (1/2 categories)" in (out / "report" / "categories_mean.md").read_text()
    assert "## Failed runs" in (out / "report" / "report.md").read_text()


def test_per_defect_type_classes_from_the_command_line(data, tmp_path):
    out = tmp_path / "runs"
    assert _run(f"mvtec:{data / 'mvtec'}#bottle", out, "toy", 1, "--per-defect-type").exit_code == 0
    record = _record(out, "mvtec-bottle", "toy", 0)
    assert record["dataset"]["class_names"] == ["broken_large", "contamination"]


def _overlapping(variant, m, tmp_path):
    """(evaluated spec, --train-on spec) that share test files of mvtec-bottle, each spelled another way."""
    import shutil

    if variant == "category_root":  # the one-category root form against the benchmark root
        return f"mvtec:{m}", f"mvtec:{m / 'bottle'}"
    if variant == "hash_against_path":
        return f"mvtec:{m / 'bottle'}", f"mvtec:{m}#bottle"
    if variant == "copy":  # a copy of the whole folder: the same content elsewhere
        shutil.copytree(m, tmp_path / "copy")
        return f"mvtec:{m}#bottle", f"mvtec:{tmp_path / 'copy'}#bottle,metal_nut"
    if variant == "category_copy":
        shutil.copytree(m / "bottle", tmp_path / "elsewhere" / "bottle")
        return f"mvtec:{m}#bottle", f"mvtec:{tmp_path / 'elsewhere' / 'bottle'}"
    if variant == "link":
        (tmp_path / "link").symlink_to(m)
        return f"mvtec:{tmp_path / 'link'}#bottle", f"mvtec:{m}#bottle,metal_nut"
    # a dataset folder whose test split holds one MVTec AD bottle test image, copied
    from scrapbench.datasets.folder import write_folder_dataset
    from scrapbench.datasets.public.mvtec import read_mvtec_category

    bottle = read_mvtec_category(m, "bottle")
    folder = write_folder_dataset(tmp_path / "plant", ("anomaly",), {"train": bottle.train, "test": bottle.test},
                                  meta={"name": "plant"})
    shutil.copyfile(m / "bottle" / "test" / "good" / "001.png", folder / "test" / "images" / "good_001.png")
    return str(folder), f"mvtec:{m}#bottle"


@pytest.mark.parametrize("variant", ["category_root", "hash_against_path", "copy", "category_copy", "link",
                                     "folder_with_a_copied_file"])
def test_training_on_the_evaluated_test_files_is_refused_however_spelled(data, tmp_path, variant):
    evaluated, train_on = _overlapping(variant, data / "mvtec", tmp_path)
    out = tmp_path / "runs"
    result = _run(evaluated, out, "toy,toy_supervised", 1, "--train-on", train_on)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and "trains on the test images of " in result.output
    assert "which is evaluated" in result.output and "train on the other benchmark" in result.output
    assert not out.exists() or not any(out.iterdir())  # nothing ran


def test_training_on_another_category_copied_elsewhere_is_allowed(data, tmp_path):
    """Files are compared, not names: a copy of metal_nut alone shares no file with bottle's test split."""
    import shutil

    shutil.copytree(data / "mvtec" / "metal_nut", tmp_path / "elsewhere" / "metal_nut")
    out = tmp_path / "runs"
    result = _run(f"mvtec:{data / 'mvtec'}#bottle", out, "toy_supervised", 1, "--train-on",
                  f"mvtec:{tmp_path / 'elsewhere' / 'metal_nut'}")
    assert result.exit_code == 0, result.output
    assert _record(out, "mvtec-bottle", "toy_supervised", 0)["dataset"]["training"]["shares_test_files"] is False


def test_report_marks_cross_dataset_training_that_overlaps_the_evaluated_test_set(data, tmp_path):
    """Runs recorded before the check by file: their training data named the evaluated category (‡)."""
    out = tmp_path / "runs"
    spec = f"mvtec:{data / 'mvtec'}#bottle,metal_nut"
    assert _run(spec, out, "toy_supervised", 1, "--train-on", f"visa:{data / 'visa'}").exit_code == 0
    assert _cli("report", out, "--no-figures", "--n-boot", 0).exit_code == 0
    assert "‡" not in (out / "report" / "report.md").read_text()  # VisA → MVTec AD: no overlap
    path = out / "mvtec-bottle" / "smoke" / "toy_supervised" / "seed0" / "run.json"
    record = json.loads(path.read_text())
    training = record["dataset"]["training"]
    del training["shares_test_files"]  # as written before
    training.update(train_on=f"mvtec:{data / 'mvtec' / 'bottle'}", categories=["bottle"])
    path.write_text(json.dumps(record))
    assert _cli("report", out, "--no-figures", "--n-boot", 0).exit_code == 0
    report = (out / "report" / "report.md").read_text()
    assert "| toy_supervised ‡ |" in report and "‡ trained (--train-on) on data that overlaps the evaluated" in report


def test_train_on_with_a_dataset_folder_and_its_report_note(data, tmp_path, smoke_dataset):
    """--train-on works for any evaluated data (here a dataset folder); the usual report names the training data."""
    from scrapbench.datasets.folder import write_folder_dataset

    folder = write_folder_dataset(tmp_path / "plant", smoke_dataset.class_names,
                                  {"train": smoke_dataset.train[:4], "test": smoke_dataset.test[:6]})
    out = tmp_path / "runs"
    train_on = f"visa:{data / 'visa'}#candle"
    result = _run(folder, out, "toy,toy_supervised", 1, "--train-on", train_on)
    assert result.exit_code == 0, result.output
    record = _record(out, "plant", "toy_supervised", 0)
    assert record["identity"]["training"]["protocol"] == "cross_dataset"
    assert record["dataset"]["num_train"] == VISA["candle"]["test_normal"] + VISA["candle"]["test_anomaly"]
    assert _cli("report", out, "--no-figures", "--n-boot", 0).exit_code == 0
    assert f"toy_supervised was trained on the test images of {train_on}." in (out / "report" / "report.md").read_text()
