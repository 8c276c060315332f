"""``scrapbench report``: tables (values, bold, mean ± std, markers), breakdowns, figures, files."""

from __future__ import annotations

import csv
import io
import json
import math

import numpy as np
import pandas as pd
import pytest

from scrapbench.datasets.fingerprint import dataset_fingerprint
from scrapbench.metrics import PixelMetrics
from scrapbench.report.collect import ReportError, collect_runs, summary_table
from scrapbench.report.dataset_report import breakdown_rows, build_report
from scrapbench.report.figure_selection import choose_examples, curve_arrays
from scrapbench.report.render import to_latex

# method → (suites, random_init, config, {seed: (auroc, aupro, ap, f1max)})
RUNS = {
    "winclip": (["table2"], True, {"k_shot": 0}, {0: (0.50, 0.06, 0.01, 0.02), 1: (0.52, 0.08, 0.01, 0.02)}),
    "mask_rcnn": (["table2"], False, {}, {0: (0.66, 0.20, 0.10, 0.22), 1: (0.70, 0.22, 0.12, 0.24),
                                          2: (0.68, 0.21, 0.11, 0.23)}),
    "ours": (["table2", "ablation"], False, {"msm_scales": [3, 9], "use_msm": True},
             {0: (0.85, 0.19, 0.28, 0.35), 1: (0.86, 0.20, 0.29, 0.36), 2: (0.84, 0.18, 0.27, 0.37)}),
    "ours_no_msm": (["ablation"], False, {"msm_scales": [3, 9], "use_msm": False},
                    {0: (0.83, 0.16, 0.25, 0.33), 1: (0.84, 0.17, 0.26, 0.34)}),
}

# run.json's cost record (scrapbench.run.cost) of the methods that have one; winclip's runs are as an older
# scrapbench wrote them, without it.
COSTS = {"mask_rcnn": {"params_total": 43_971_000, "params_trained": 43_700_000, "flops_per_image": 268_000_000_000,
                       "fit_peak_rss_mb": 3000.0, "predict_peak_rss_mb": 1200.0},
         "ours": {"params_total": 428_000_000, "params_trained": 304_000_000, "flops_per_image": 190_500_000_000,
                  "fit_peak_rss_mb": 6000.0, "predict_peak_rss_mb": 2000.0},
         "ours_no_msm": {"params_total": 428_000_000, "params_trained": 304_000_000, "flops_per_image": 190_000_000_000,
                         "fit_peak_rss_mb": 5900.0, "predict_peak_rss_mb": 1900.0}}


def _write_runs(root, dataset, preset="smoke", with_maps=True, with_state=True):
    """Run folders as the runner writes them (hand-written metrics; maps = noisy ground truth)."""
    test = list(dataset.test)
    for method, (suites, random_init, config, seeds) in RUNS.items():
        for seed, (auroc, aupro, ap, f1max) in seeds.items():
            folder = root / "synthetic-seed0" / preset / method / f"seed{seed}"
            folder.mkdir(parents=True)
            rng = np.random.default_rng(seed)
            maps = {s.id: ((s.mask > 0) * auroc + rng.random(s.mask.shape) * 0.9).astype(np.float32) for s in test}
            computed = {"f1max_threshold": 0.5, "per_class": {}, "per_size": {}}
            if with_state:
                state = PixelMetrics(class_names=dataset.class_names)
                state.update(np.stack([maps[s.id] for s in test]), np.stack([s.mask for s in test]),
                             ids=[s.id for s in test])
                state.save(folder / "metrics_state.npz")
                computed = state.compute()
            # Table values are hand-set (known means/stds); breakdowns and curves come from the real evaluator.
            metrics = {"auroc": auroc, "aupro": aupro, "ap": ap, "f1max": f1max, "image_auroc": auroc,
                       "image_ap": ap, "f1max_threshold": computed["f1max_threshold"],
                       "per_class": computed["per_class"], "per_size": computed["per_size"]}
            (folder / "metrics.json").write_text(json.dumps(metrics))
            buffer = io.StringIO()
            writer = csv.writer(buffer)
            writer.writerow(["id", "is_anomalous", "image_score", "anomalous_pixels"])
            for s in test:
                writer.writerow([s.id, int(s.is_anomalous), float(maps[s.id].max()), int((s.mask > 0).sum())])
            (folder / "per_image.csv").write_text(buffer.getvalue())
            if with_maps:
                np.savez_compressed(folder / "maps.npz", **{k: v.astype(np.float16) for k, v in maps.items()})
            identity = {"method": method, "seed": seed, "preset": preset, "config": config,
                        "dataset_fingerprint": dataset_fingerprint(dataset), "evaluator_version": "1",
                        "compute": {"device": "cpu", "torch_threads": 2}}
            record = {"method": method, "seed": seed, "preset": preset, "suites": suites, "identity": identity,
                      "learning_type": "supervised", "config": config,
                      "dataset": {"name": dataset.name, "spec": "synthetic", "seed": 0,
                                  "class_names": list(dataset.class_names), "num_train": len(dataset.train),
                                  "num_test": len(test)},
                      "weights": {"random_init": random_init}, "device": "cpu",
                      "timings": {"fit_s": 1.0, "predict_s": 2.0, "predict_images_per_s": 10.0 + seed,
                                  "peak_rss_mb": 500.0},
                      "versions": {"torch": "2.x"}, "git": None, "date": "2025-01-01T00:00:00+00:00"}
            if method in COSTS:
                record["cost"] = {"fit_peak_cuda_mb": None, "predict_peak_cuda_mb": None, **COSTS[method]}
            (folder / "run.json").write_text(json.dumps(record))


@pytest.fixture(scope="module")
def report(tmp_path_factory, smoke_dataset):
    root = tmp_path_factory.mktemp("report")
    _write_runs(root / "runs", smoke_dataset)
    path = build_report(root / "runs", root / "out", n_boot=50)
    return root, path


def test_tidy_frame_has_one_row_per_run_and_metric(report):
    root, _ = report
    tidy = collect_runs(root / "runs")
    assert len(tidy) == 10 * 6  # 10 runs × (4 pixel + 2 image metrics)
    row = tidy[(tidy.method == "ours") & (tidy.seed == 1) & (tidy.metric == "ap")].iloc[0]
    assert row.value == 0.29 and row.ablation_label == "3×3 & 9×9" and not row.random_init
    written = pd.read_csv(root / "out" / "runs.csv")
    assert len(written) == len(tidy)


def test_table2_values_mean_std_bold_and_markers(report):
    root, _ = report
    numbers = pd.read_csv(root / "out" / "table2.csv").set_index("method")
    assert list(numbers.index) == ["winclip", "mask_rcnn", "ours"]  # registry order, ablation-only rows left out
    assert numbers.loc["ours", "ap_mean_pct"] == pytest.approx(28.0)
    assert numbers.loc["ours", "ap_std_pct"] == pytest.approx(1.0)
    assert numbers.loc["mask_rcnn", "auroc_std_pct"] == pytest.approx(2.0)
    assert numbers.loc["winclip", "images_per_s"] == pytest.approx(10.5)
    markdown = (root / "out" / "table2.md").read_text()
    assert ("| Ours | **85.00 ± 1.00** | 19.00 ± 1.00 | **28.00 ± 1.00** | **36.00 ± 1.00** | 428M (304M) | 190.5 | "
            "11.0 | 3 |") in markdown
    assert "| WinCLIP † | 51.00 ± 1.41 | 7.00 ± 1.41 | 1.00 ± 0.00 | 2.00 ± 0.00 | – | – | 10.5 | 2 |" in markdown
    assert "| Mask R-CNN | 68.00 ± 2.00 | **21.00 ± 1.00** |" in markdown  # best AUPRO, as in the paper
    assert "| WinCLIP † |" in markdown and "† run with random-initialised" in markdown
    latex = (root / "out" / "table2.tex").read_text()
    assert r"\textbf{85.00 $\pm$ 1.00}" in latex and r"WinCLIP $^\dagger$" in latex and r"\toprule" in latex


def test_table3_rows_are_named_by_msm_setting(report):
    root, _ = report
    markdown = (root / "out" / "table3.md").read_text()
    assert "| Scale sizes |" in markdown
    assert "| 3×3 & 9×9 | **85.00 ± 1.00** |" in markdown and "| w/o MSM | 83.50 ± 0.71 |" in markdown
    assert "†" not in markdown
    assert r"3$\times$3 \& 9$\times$9" in (root / "out" / "table3.tex").read_text()


def _breakdown_mean(root, method, key, group, metric):
    values = [json.loads(p.read_text())[key][group][metric]
              for p in sorted((root / "runs").glob(f"*/smoke/{method}/seed*/metrics.json"))]
    return 100 * np.mean(values), 100 * np.std(values, ddof=1)


def test_breakdowns_and_report_page(report):
    root, path = report
    per_class = (root / "out" / "per_class.md").read_text()
    assert "| Method | motor | cable | spray_can |" in per_class and "**pixel AUROC (%)**" in per_class
    mean, std = _breakdown_mean(root, "ours", "per_class", "motor", "pixel_auroc")
    assert f"| Ours | {mean:.2f} ± {std:.2f} |" in per_class
    assert "| WinCLIP † |" in per_class and "| Ours w/o MSM |" in per_class
    per_size = (root / "out" / "per_size.md").read_text()
    assert "| Method | small | medium | large |" in per_size and "Test set: small: 0 regions" in per_size
    page = path.read_text()
    for link in ("table2.csv", "table3.tex", "bootstrap.csv", "per_class.csv", "figures/table2_bars.png",
                 "figures/ablation.png", "figures/curves.png", "figures/qualitative.png", "runs.csv"):
        assert f"({link})" in page, link
        assert (root / "out" / link).is_file(), link
    assert "## Runs" in page and "random init" in page and "## Notes" not in page


def test_bootstrap_compares_the_best_method_with_each_other_one(report):
    root, _ = report
    frame = pd.read_csv(root / "out" / "bootstrap.csv")
    assert set(frame["best"]) == {"ours"} and set(frame["method"]) == {"winclip", "mask_rcnn"}
    assert len(frame) == 2 * 4 and set(frame["seed"]) == {0}
    ours = PixelMetrics.load(next((root / "runs").glob("*/smoke/ours/seed0")) / "metrics_state.npz").compute()
    other = PixelMetrics.load(next((root / "runs").glob("*/smoke/winclip/seed0")) / "metrics_state.npz").compute()
    row = frame[(frame["method"] == "winclip") & (frame["metric"] == "ap")].iloc[0]
    assert row["diff_pct"] == pytest.approx(100 * (ours["ap"] - other["ap"]), abs=1e-3)
    assert row["low_pct"] <= row["diff_pct"] <= row["high_pct"]
    assert "| WinCLIP † | 0 |" in (root / "out" / "bootstrap.md").read_text()


def test_report_is_a_pure_function_of_the_runs(report, tmp_path):
    root, path = report
    again = build_report(root / "runs", tmp_path / "again", n_boot=50)
    assert again.read_text().replace(str(tmp_path / "again"), "OUT") == path.read_text().replace(
        str(root / "out"), "OUT")
    for name in ("table2.md", "table3.tex", "per_class.csv", "bootstrap.csv", "figures/ablation.png",
                 "figures/curves.png", "figures/qualitative.png"):
        assert (tmp_path / "again" / name).read_bytes() == (root / "out" / name).read_bytes(), name


def test_qualitative_rows_go_from_smallest_to_largest_anomaly():
    frame = pd.DataFrame({"id": list("abcdefg"), "is_anomalous": [1, 1, 0, 1, 1, 1, 1],
                          "anomalous_pixels": [50, 10, 0, 30, 20, 70, 60]})
    assert choose_examples(frame, set("abcdefg"), 3) == ["b", "d", "f"]  # pixels 10, 30, 70
    assert choose_examples(frame, {"a", "c"}, 3) == ["a"]


def test_several_presets_need_a_choice_and_empty_folders_are_clear(tmp_path, smoke_dataset):
    _write_runs(tmp_path / "runs", smoke_dataset, preset="smoke", with_maps=False, with_state=False)
    _write_runs(tmp_path / "runs", smoke_dataset, preset="cpu", with_maps=False, with_state=False)
    with pytest.raises(ReportError, match=r"--dataset .* --preset cpu, --dataset .* --preset smoke"):
        build_report(tmp_path / "runs", tmp_path / "out", n_boot=0, figures=False)
    path = build_report(tmp_path / "runs", tmp_path / "out", preset="cpu", n_boot=0, figures=False)
    assert "preset `cpu`" in path.read_text()
    with pytest.raises(ReportError, match="no finished runs"):
        build_report(tmp_path / "nothing", tmp_path / "out2")


def test_single_seed_cells_have_no_std_and_ties_are_all_bold():
    tidy = pd.DataFrame([
        {"method": m, "seed": 0, "label": m, "random_init": False, "predict_images_per_s": None, "metric": k,
         "value": 0.5} for m in ("a", "b") for k in ("auroc", "aupro", "ap", "f1max")])
    table = summary_table(tidy, ["a", "b"]).formatted()
    assert table["AUROC (%)"].tolist() == ["**50.00**", "**50.00**"]
    assert table["images/s"].tolist() == ["–", "–"]
    assert "a\\_b" in to_latex(pd.DataFrame({"x": ["a_b"]}), "c", "l")


def test_breakdown_rows_accept_dicts_and_lists():
    assert breakdown_rows({"per_class": {"motor": {"ap": 0.5, "n": 3}}}, "per_class") == [("motor", "ap", 0.5),
                                                                                         ("motor", "n", 3.0)]
    assert breakdown_rows({"per_size": [{"bucket": "small", "recall": 0.2}]}, "per_size") == [("small", "recall", 0.2)]
    assert breakdown_rows({}, "per_class") == []


def test_curve_arrays_reads_the_evaluator_layout():
    raw = {"roc": {"fpr": [0, 1], "tpr": [0, 1], "threshold": [2, 0]},
           "pr": {"recall": [1, 0], "precision": [0.1, 1], "threshold": [0, 2]},
           "pro": {"fpr": [0, 0.3], "pro": [0, 0.5], "threshold": [2, 1]}}
    arrays = curve_arrays(raw)
    np.testing.assert_array_equal(arrays["fpr"], [0, 1])  # the ROC's, not the PRO curve's
    np.testing.assert_array_equal(arrays["pro_fpr"], [0, 0.3])
    np.testing.assert_array_equal(arrays["precision"], [0.1, 1])
    with pytest.raises(KeyError, match="'roc' and 'pr'"):
        curve_arrays({"fpr": [0, 1]})


def test_report_of_real_runner_output(smoke_dataset, tmp_path, monkeypatch):
    """The runner's files (not hand-written ones) go through the whole report, figures and bootstrap included."""
    from toy_method import ColourDistance

    from scrapbench.core import registry
    from scrapbench.run.grid import run_benchmark
    from scrapbench.run.plan import RunOptions

    monkeypatch.setenv("SCRAPBENCH_CACHE", str(tmp_path / "cache"))  # the qualitative figure reloads the data
    registry.list_methods()
    monkeypatch.setitem(registry._REGISTRY, "toy", registry.MethodSpec("toy", ColourDistance, "toy", ("table2",)))
    monkeypatch.setitem(registry._REGISTRY, "toy_noisy", registry.MethodSpec(
        "toy_noisy", ColourDistance, "noisy toy", ("table2",), {"noise": 40.0}))
    options = RunOptions(preset="smoke", out=tmp_path / "runs", show_progress=False)
    results = run_benchmark(smoke_dataset, ["toy", "toy_noisy"], [0, 1], options)
    assert all(r.status == "done" for r in results)
    page = build_report(tmp_path / "runs", tmp_path / "out", n_boot=20).read_text()
    assert "## Notes" not in page  # nothing was skipped
    numbers = pd.read_csv(tmp_path / "out" / "table2.csv").set_index("method")
    runs = {(r.method, r.seed): r.metrics for r in results}
    assert numbers.loc["toy_noisy", "ap_mean_pct"] == pytest.approx(
        50 * (runs[("toy_noisy", 0)]["ap"] + runs[("toy_noisy", 1)]["ap"]), abs=1e-5)
    for name in ("bootstrap.csv", "per_class.md", "per_size.md", "figures/curves.png", "figures/qualitative.png"):
        assert (tmp_path / "out" / name).is_file(), name


# -- what may be pooled, and what failed ---------------------------------------------------------------


def _edit_record(folder, edit):
    path = folder / "run.json"
    record = json.loads(path.read_text())
    edit(record)
    path.write_text(json.dumps(record))


@pytest.fixture()
def small_runs(tmp_path, smoke_dataset):
    _write_runs(tmp_path / "runs", smoke_dataset, with_maps=False, with_state=False)
    return tmp_path / "runs"


def test_seeds_that_differ_in_more_than_the_seed_are_not_pooled(small_runs, tmp_path):
    [seed2] = small_runs.glob("*/smoke/ours/seed2")
    _edit_record(seed2, lambda r: r["identity"]["compute"].update(torch_threads=1))
    with pytest.raises(ReportError, match=r"ours: seeds 0, 1 vs seed 2 \(compute.torch_threads: 2 → 1\) differ in "
                                          r"more than the seed"):
        build_report(small_runs, tmp_path / "out", n_boot=0, figures=False)


def test_runs_on_other_data_under_one_name_are_not_compared(small_runs, tmp_path):
    for folder in small_runs.glob("*/smoke/winclip/seed*"):
        _edit_record(folder, lambda r: r["identity"].update(dataset_fingerprint="sha256:zzzz"))
    with pytest.raises(ReportError, match=r"on different data under the same dataset name, so one report cannot "
                                          r"compare them: sha256:[0-9a-f]{12}: mask_rcnn seeds 0, 1, 2, .*; "
                                          r"sha256:zzzz: winclip seeds 0, 1"):
        build_report(small_runs, tmp_path / "out", n_boot=0, figures=False)


def test_runs_without_an_identity_are_refused(small_runs, tmp_path):
    [seed0] = small_runs.glob("*/smoke/ours/seed0")
    _edit_record(seed0, lambda r: r.pop("identity"))
    build_report(small_runs, tmp_path / "out", n_boot=0, figures=False)
    [failed] = pd.read_csv(tmp_path / "out" / "failed_runs.csv").itertuples()
    assert (failed.method, failed.seed) == ("ours", 0) and failed.message.startswith("run.json: no run identity")
    assert pd.read_csv(tmp_path / "out" / "table2.csv").set_index("method").loc["ours", "n_seeds"] == 2


def test_failed_runs_are_listed_and_left_out(small_runs, tmp_path):
    from typer.testing import CliRunner

    from scrapbench.cli.main import app

    failed = small_runs / "synthetic-seed0" / "smoke" / "ours" / "seed5"
    failed.mkdir()
    (failed / "error.json").write_text(json.dumps({"method": "ours", "seed": 5, "message": "RuntimeError: [boom]",
                                                   "traceback": "..."}))
    elsewhere = small_runs / "synthetic-seed0" / "cpu" / "ours" / "seed0"  # another preset: not this report's
    elsewhere.mkdir(parents=True)
    (elsewhere / "error.json").write_text(json.dumps({"method": "ours", "seed": 0, "message": "other"}))
    page = build_report(small_runs, tmp_path / "out", n_boot=0, figures=False).read_text()
    assert "## Failed runs" in page
    assert "| ours | 5 | RuntimeError: [boom] | synthetic-seed0/smoke/ours/seed5 |" in page and "other" not in page
    assert pd.read_csv(tmp_path / "out" / "table2.csv").set_index("method").loc["ours", "n_seeds"] == 3
    result = CliRunner().invoke(app, ["report", str(small_runs), "--out", str(tmp_path / "cli"), "--no-figures",
                                      "--n-boot", "0"])
    assert result.exit_code == 0, result.output
    assert "1 failed run(s)" in result.output and "✗ ours seed 5: RuntimeError: [boom]" in result.output


def test_only_failed_runs_is_a_clear_error(tmp_path):
    folder = tmp_path / "runs" / "d" / "smoke" / "ours" / "seed0"
    folder.mkdir(parents=True)
    (folder / "error.json").write_text(json.dumps({"method": "ours", "seed": 0, "message": "ValueError: bad"}))
    with pytest.raises(ReportError, match=r"no finished runs found, only 1 failed one.*ours seed 0: ValueError: bad"):
        build_report(tmp_path / "runs", tmp_path / "out")


def test_corrupt_records_are_named_without_a_traceback(small_runs, tmp_path):
    """An unreadable record leaves its run out of the tables, listed as failed (it never aborts the report)."""
    from typer.testing import CliRunner

    from scrapbench.cli.main import app

    [metrics] = small_runs.glob("*/smoke/ours/seed1/metrics.json")
    metrics.write_text("{")
    [record] = small_runs.glob("*/smoke/ours/seed2/run.json")
    record.write_text("")
    result = CliRunner().invoke(app, ["report", str(small_runs), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0 and "Traceback" not in result.output
    assert "✗ ours seed 1: metrics.json: corrupt (" in result.output
    assert "✗ ours seed 2: run.json: corrupt (" in result.output
    assert pd.read_csv(tmp_path / "out" / "table2.csv").set_index("method").loc["ours", "n_seeds"] == 1


def _set(file, key, value):
    """An edit of a run's ``file``: ``key`` (dotted) set to ``value``."""
    def edit(folder):
        path = folder / file
        record = json.loads(path.read_text())
        *parents, last = key.split(".")
        inner = record
        for part in parents:
            inner = inner[part]
        inner[last] = value
        path.write_text(json.dumps(record))
    return edit


def _write(file, text):
    return lambda folder: (folder / file).write_text(text)


DEEP = "[" * 100_000 + "]" * 100_000
UNUSABLE = {  # what breaks ours seed 1 → what its listing says
    "auroc true": (_set("metrics.json", "auroc", True), "metrics.json: auroc is true, not a number in [0, 1]"),
    "auroc 1.5": (_set("metrics.json", "auroc", 1.5), "metrics.json: auroc is 1.5, not a number in [0, 1]"),
    "ap negative": (_set("metrics.json", "ap", -0.25), "metrics.json: ap is -0.25, not a number in [0, 1]"),
    "aupro Infinity": (_set("metrics.json", "aupro", math.inf), "metrics.json: aupro is Infinity, not a number"),
    "f1max NaN": (_set("metrics.json", "f1max", math.nan), "metrics.json: f1max is NaN, not a number in [0, 1]"),
    "auroc string": (_set("metrics.json", "auroc", "0.9"), 'metrics.json: auroc is "0.9", not a number in [0, 1]'),
    "auroc list": (_set("metrics.json", "auroc", [0.9]), "metrics.json: auroc is [0.9], not a number in [0, 1]"),
    "image_ap object": (_set("metrics.json", "image_ap", {}), "metrics.json: image_ap is {}, not a number"),
    "breakdown NaN": (_set("metrics.json", "per_size", {"small": {"pixel_recall": math.nan}}),
                      "metrics.json: per_size.small.pixel_recall is NaN"),
    "no metric": (_write("metrics.json", "{}"), "metrics.json: holds no metric value (auroc, aupro"),
    "metrics nested deep": (_write("metrics.json", '{"auroc": 0.5, "x": ' + DEEP + "}"),
                            "metrics.json: corrupt (nested too deeply)"),
    "metrics nested 200": (_write("metrics.json", '{"auroc": 0.5, "x": ' + "[" * 200 + "]" * 200 + "}"),
                           "metrics.json: corrupt (nested more than 100 levels deep)"),
    "huge integer": (_write("metrics.json", '{"auroc": 1' + "0" * 100_000 + "}"), "metrics.json: corrupt ("),
    "seed zero": (_set("run.json", "seed", "zero"), 'run.json: seed is "zero", but the run\'s folder is seed1'),
    "seed of another folder": (_set("run.json", "seed", 0), "run.json: seed is 0, but the run's folder is seed1"),
    "seed true": (_set("run.json", "seed", True), "run.json: seed is true, but the run's folder is seed1"),
    "identity seed": (_set("run.json", "identity.seed", 0), "run.json: identity.seed 0 is not the run's seed 1"),
    "config list": (_set("run.json", "config", [1, 2]), "run.json: config is [1, 2], not an object"),
    "dataset string": (_set("run.json", "dataset", "x"), 'run.json: dataset is "x", not an object'),
    "method number": (_set("run.json", "method", 5), "run.json: method is 5, not a method name"),
    "suites string": (_set("run.json", "suites", "table2"), 'run.json: suites is "table2", not what'),
    "class names": (_set("run.json", "dataset.class_names", [1]), "run.json: dataset.class_names is [1], not"),
    "k_shot string": (_set("run.json", "config.k_shot", "abc"), 'run.json: config.k_shot is "abc", not'),
    "timing string": (_set("run.json", "timings.fit_s", "abc"), 'run.json: timings.fit_s is "abc", not'),
    "cost string": (_set("run.json", "cost.flops_per_image", "1e9"), 'run.json: cost.flops_per_image is "1e9", not'),
    "cost negative": (_set("run.json", "cost.params_total", -1), "run.json: cost.params_total is -1, not"),
    "cost list": (_set("run.json", "cost", [1]), "run.json: cost is [1], not an object"),
    "run nested deep": (_write("run.json", '{"method": "ours", "seed": 1, "x": ' + DEEP + "}"),
                        "run.json: corrupt (nested too deeply)"),
}


@pytest.mark.parametrize("case", list(UNUSABLE))
def test_unusable_runs_are_listed_as_failed_and_not_pooled(small_runs, tmp_path, case):
    """Only finite numbers in [0, 1] are pooled, each run under its own folder's seed: a run whose records
    hold anything else is left out of every table and listed with the failed runs (the report goes on)."""
    edit, message = UNUSABLE[case]
    [seed1] = small_runs.glob("*/smoke/ours/seed1")
    edit(seed1)
    page = build_report(small_runs, tmp_path / "out", n_boot=0, figures=False).read_text()
    [failed] = pd.read_csv(tmp_path / "out" / "failed_runs.csv").itertuples()
    assert (failed.method, failed.seed, failed.folder) == ("ours", 1, "synthetic-seed0/smoke/ours/seed1")
    assert failed.message.startswith(message) and failed.message.endswith("`scrapbench run --overwrite`")
    assert "## Failed runs" in page
    table = pd.read_csv(tmp_path / "out" / "table2.csv").set_index("method")
    assert table.loc["ours", "n_seeds"] == 2  # seeds 0 and 2
    assert table.loc["ours", "auroc_mean_pct"] == pytest.approx(84.5) and table.loc["ours", "ap_mean_pct"] == 27.5
    assert ("| Ours | **84.50 ± 0.71** | 18.50 ± 0.71 | **27.50 ± 0.71** | **36.00 ± 1.41** | 428M (304M) | 190.5 | "
            "11.0 | 2 |") in (tmp_path / "out" / "table2.md").read_text()
    assert set(pd.read_csv(tmp_path / "out" / "runs.csv").query("method == 'ours'")["seed"]) == {0, 2}


@pytest.mark.parametrize("where", ["ours_copy", "../../../synthetic-copy/smoke/ours"])
def test_a_seed_claimed_by_two_runs_is_pooled_from_neither(small_runs, tmp_path, where):
    """Two runs of one (dataset, preset, method) that claim the same seed are never averaged as one."""
    import shutil

    [seed1] = small_runs.glob("*/smoke/ours/seed1")
    copy = (seed1.parent / where / "seed1").resolve()
    shutil.copytree(seed1, copy)
    build_report(small_runs, tmp_path / "out", n_boot=0, figures=False)
    failed = pd.read_csv(tmp_path / "out" / "failed_runs.csv").set_index("folder")
    claimed = copy.relative_to(small_runs).as_posix()
    assert failed.loc["synthetic-seed0/smoke/ours/seed1", "message"].startswith(
        f"run.json: ours seed 1 on synthetic-smoke is also claimed by {claimed};")
    assert pd.read_csv(tmp_path / "out" / "table2.csv").set_index("method").loc["ours", "n_seeds"] == 2


def test_seeds_are_counted_per_metric(small_runs, tmp_path):
    """A metric undefined for one seed (null) pools the others, and its cells say how many."""
    [seed1] = small_runs.glob("*/smoke/ours/seed1")
    _set("metrics.json", "aupro", None)(seed1)
    build_report(small_runs, tmp_path / "out", n_boot=0, figures=False)
    assert "| Ours | **85.00 ± 1.00** | 18.50 ± 0.71 (2 of 3 seeds) | **28.00 ± 1.00** |" in \
        (tmp_path / "out" / "table2.md").read_text()
    assert pd.read_csv(tmp_path / "out" / "failed_runs.csv").empty


def test_qualitative_figure_needs_the_data_the_runs_saw(tmp_path, smoke_dataset, monkeypatch):
    monkeypatch.setenv("SCRAPBENCH_CACHE", str(smoke_dataset.root.parents[1]))
    _write_runs(tmp_path / "runs", smoke_dataset, with_state=False)
    for folder in (tmp_path / "runs").glob("*/smoke/*/seed*"):
        _edit_record(folder, lambda r: r["identity"].update(dataset_fingerprint="sha256:other"))
    page = build_report(tmp_path / "runs", tmp_path / "out", n_boot=0).read_text()
    assert "qualitative figure skipped: ValueError: the dataset 'synthetic' has changed since the runs" in page
    assert not (tmp_path / "out" / "figures" / "qualitative.png").exists()


def test_rows_carry_a_mark_for_every_flag_their_runs_have(small_runs, tmp_path):
    """† random init (winclip), § a kernel without a deterministic implementation ran (mask_rcnn seed 1)."""
    [seed1] = small_runs.glob("*/smoke/mask_rcnn/seed1")
    _edit_record(seed1, lambda r: r.update(determinism={"deterministic": False,
                                                        "nondeterministic_ops": ["aten::index_add_"]}))
    build_report(small_runs, tmp_path / "out", n_boot=0, figures=False)
    table = (tmp_path / "out" / "table2.md").read_text()
    assert "| WinCLIP † |" in table and "| Mask R-CNN § |" in table and "| Ours |" in table
    assert "† run with random-initialised" in table and "§ ran kernels that have no deterministic" in table
    assert "°" not in table  # no run reused another seed's record
    assert "Mask R-CNN \\S{}" in (tmp_path / "out" / "table2.tex").read_text()
    numbers = pd.read_csv(tmp_path / "out" / "table2.csv").set_index("method")
    assert bool(numbers.loc["mask_rcnn", "nondeterministic"]) and not bool(numbers.loc["ours", "nondeterministic"])


def test_efficiency_table_and_accuracy_cost_figure(report):
    """Every method's cost, the mean over its seeds; runs without a cost record (winclip's) show –."""
    root, path = report
    numbers = pd.read_csv(root / "out" / "efficiency.csv").set_index("method")
    assert list(numbers.index) == ["winclip", "mask_rcnn", "ours", "ours_no_msm"]
    assert numbers.loc["ours", "flops_per_image"] == pytest.approx(190.5e9)
    assert numbers.loc["ours", "params_trained"] == 304_000_000 and numbers.loc["ours", "ap_mean_pct"] == \
        pytest.approx(28.0)
    assert numbers.loc["ours_no_msm", "ap_std_pct"] == pytest.approx(math.sqrt(0.5))
    assert math.isnan(numbers.loc["winclip", "flops_per_image"]) and numbers.loc["winclip", "images_per_s"] == 10.5
    markdown = (root / "out" / "efficiency.md").read_text()
    assert "| Method | Params | Trained | GFLOPs/img | Fit peak RSS (MB) | Predict peak RSS (MB) | Fit (s) |" in \
        markdown
    assert "| Ours | 428M | 304M | 190.5 | 6000 | 2000 | 1.00 | 11.0 | 3 |" in markdown
    assert "| WinCLIP † | – | – | – | – | – | 1.00 | 10.5 | 2 |" in markdown
    assert "GPU" not in markdown.split("\n")[0]  # no run on a GPU: no GPU columns
    page = path.read_text()
    assert "## Cost" in page and "(efficiency.csv)" in page and "(figures/accuracy_vs_cost.png)" in page
    figure = (root / "out" / "figures" / "accuracy_vs_cost.png").read_bytes()
    assert figure.startswith(b"\x89PNG") and len(figure) > 20_000
