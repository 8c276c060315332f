"""report.html without a browser: escaping, every table and figure of the folder, the viewer's files and data."""

from __future__ import annotations

import html
import json
import math
import re

import numpy as np
import pytest
import test_report
from PIL import Image

from scrapbench.metrics import PixelMetrics
from scrapbench.metrics.summary import per_image
from scrapbench.report.dataset_report import build_report
from scrapbench.report.html.page import figure_paths, inline, render_page, script_json, text
from scrapbench.report.html.tables import table_files
from scrapbench.report.html.viewer import encoding_range

XSS = "<img src=x onerror=alert(1)>"


def test_script_json_cannot_end_its_script_element_and_round_trips():
    payload = {"name": "</script><script>alert(1)</script>", "other": "a & b <!-- \u2028 \u2029 é", XSS: [1.5, None]}
    encoded = script_json(payload)
    assert not set(encoded) & {"<", ">", "&", "\u2028", "\u2029"}
    assert json.loads(encoded) == payload
    with pytest.raises(ValueError):  # NaN is not JSON: the viewer writes None instead
        script_json({"x": math.nan})


def test_user_text_is_escaped_and_only_relative_links_are_made():
    assert text(XSS) == "&lt;img src=x onerror=alert(1)&gt;"
    assert text('a"b\'c') == "a&quot;b&#x27;c"
    shown = inline(f"**{XSS}** `{XSS}`")
    assert "<img" not in shown and shown.startswith("<strong>&lt;img") and "<code>&lt;img" in shown
    assert inline("[table](table2.csv)") == '<a href="table2.csv">table</a>'
    assert "href" not in inline("[click](javascript:alert(1))") and "href" not in inline("[up](../secret.csv)")
    assert "href" not in inline('[x](a.csv" onclick="alert(1))')


def _folder(tmp_path):
    """A report folder as the report writes it, plus tables and figures that other report pages add."""
    (tmp_path / "report.md").write_text(
        f"# scrapbench report — {XSS}\n\nA line with `code`.\n\n## Table 2 — comparison of methods\n\nPixel "
        f"level. Files: [table2.csv](table2.csv) · [table2.md](table2.md)\n\n| x |\n|---|\n| 1 |\n\n"
        f"![Table 2 as bars](figures/table2_bars.png)\n\n## Notes\n\n- a note about {XSS}\n")
    (tmp_path / "table2.md").write_text(f"| Method | AP (%) |\n|:---|---:|\n| {XSS} | **2.20 ± 0.95** |\n"
                                        "| Ours † | 0.70 ± 0.08 |\n\n† a footnote\n")
    (tmp_path / "table2.csv").write_text("method,ap_mean_pct\nx,2.2\n")
    (tmp_path / "runs.csv").write_text("method,seed,value\nours,0,0.123456789\n")
    (tmp_path / "failed_runs.csv").write_text("method,seed,message,folder\n")
    (tmp_path / "efficiency.csv").write_text("method,params_total,flops_per_image\nours,12345,0.987654321\n")
    (tmp_path / "sweep_ap.md").write_text("| Variant | AP (%) |\n|---|---|\n| ours[k=3] | 1.00 |\n")
    (tmp_path / "sweep_ap.csv").write_text("variant,ap\nours[k=3],0.01\n")
    (tmp_path / ".table9.md.tmp").write_text("| half | written |\n")  # an atomic write's temporary file
    figures = tmp_path / "figures"
    for name in ("table2_bars.png", "zz_cost.png", "sweep/ap.png", "viewer/m0/00000.png", "viewer/image/00000.png"):
        (figures / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (4, 4)).save(figures / name)
    return tmp_path


def test_every_table_file_is_shown_the_known_ones_first(tmp_path):
    folder = _folder(tmp_path)
    tables = table_files(folder)
    assert [t.stem for t in tables] == ["table2", "efficiency", "sweep_ap", "runs", "failed_runs"]
    assert tables[0].title == "Table 2 — comparison of methods" and tables[0].caption == "Pixel level."
    assert tables[0].blocks[0].rows == [[XSS, "**2.20 ± 0.95**"], ["Ours †", "0.70 ± 0.08"]]
    assert tables[1].blocks[0].rows == [["ours", "12345", "0.9877"]]  # a CSV-only table, long decimals shortened
    assert tables[4].blocks[0].text == "(none)"
    page = render_page(folder, None, "no maps")
    assert page.count('<table class="sortable">') == 4
    for shown in ("<strong>2.20 ± 0.95</strong>", "ours[k=3]", "0.9877", "0.1235", "† a footnote"):
        assert shown in page
    assert "<img src=x" not in page and page.count("&lt;img src=x onerror=alert(1)&gt;") >= 4  # title, cell, note
    assert "half" not in page


def test_every_figure_is_shown_but_the_viewer_thumbnails(tmp_path):
    folder = _folder(tmp_path)
    assert figure_paths(folder) == ["table2_bars.png", "sweep/ap.png", "zz_cost.png"]
    page = render_page(folder, None)
    assert re.findall(r'<img src="(figures/[^"]+)"', page) == ["figures/table2_bars.png", "figures/sweep/ap.png",
                                                                "figures/zz_cost.png"]
    assert '<figcaption>Table 2 as bars</figcaption>' in page


def test_page_allows_only_its_own_script(tmp_path):
    page = render_page(_folder(tmp_path), None)
    policy = html.unescape(re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', page).group(1))
    assert "default-src 'none'" in policy and "script-src 'sha256-" in policy and "unsafe-inline" not in \
        policy.split("script-src")[1].split(";")[0]
    assert not re.search(r"(src|href)=\"(https?:)?//", page)  # nothing from the network


def test_per_image_metrics_match_an_exact_computation():
    from sklearn.metrics import average_precision_score, roc_auc_score

    rng = np.random.default_rng(0)
    masks = np.zeros((3, 64, 64), np.int64)  # region sizes: < 0.39 % of the image small, > 3.5 % large
    masks[0, 2:5, 2:5] = 1  # small
    masks[0, 20:50, 20:50] = 2  # large
    masks[1, 0:8, 0:8] = 2  # medium
    maps = rng.random((3, 64, 64)).astype(np.float32) + 0.8 * (masks > 0)
    m = PixelMetrics(class_names=("a", "b"))
    m.update(maps, masks, ids=["x", "y", "normal"])
    got = per_image(m)
    assert got["ids"] == ["x", "y", "normal"]
    for i in range(2):
        truth, score = (masks[i] > 0).ravel(), maps[i].ravel()
        assert got["auroc"][i] == pytest.approx(roc_auc_score(truth, score), abs=0.01)
        assert got["ap"][i] == pytest.approx(average_precision_score(truth, score), abs=0.01)
    assert math.isnan(got["ap"][2]) and math.isnan(got["auroc"][2])
    assert list(got["max"]) == pytest.approx([float(x.max()) for x in maps])
    assert list(got["classes"]) == [0b11, 0b10, 0] and list(got["sizes"]) == [0b101, 0b010, 0]


def test_encoding_range_holds_the_threshold():
    maps = [np.linspace(0, 1, 1000, dtype=np.float32)]
    lo, hi = encoding_range(maps, 5.0)
    assert lo < 5.0 < hi
    lo, hi = encoding_range(maps, 0.5)
    assert (lo, hi) == pytest.approx((0.01, 0.999), abs=1e-3)


@pytest.fixture(scope="module")
def html_report(tmp_path_factory, smoke_dataset):
    root = tmp_path_factory.mktemp("html")
    with pytest.MonkeyPatch.context() as patch:  # fewer runs than test_report's: a Table 2 method and an ablation row
        patch.setattr(test_report, "RUNS", {m: test_report.RUNS[m] for m in ("mask_rcnn", "ours_no_msm")})
        test_report._write_runs(root / "runs", smoke_dataset)
    build_report(root / "runs", root / "out", n_boot=0)
    return root / "out"


def _viewer_data(page: str) -> dict:
    found = re.search(r'<script type="application/json" id="viewer-data">(.*?)</script>', page, re.S)
    return json.loads(found.group(1))


def test_report_writes_the_page_and_the_viewer_thumbnails(html_report, smoke_dataset):
    page = (html_report / "report.html").read_text()
    data = _viewer_data(page)
    test = smoke_dataset.test
    assert data["ids"] == list(test.ids)
    assert [m["name"] for m in data["methods"]] == ["mask_rcnn", "ours_no_msm"]
    assert [m["label"] for m in data["methods"]] == ["Mask R-CNN", "Ours w/o MSM"]
    assert data["anomalous"] == [int(s.is_anomalous) for s in test]
    viewer = html_report / "figures" / "viewer"
    assert sorted(p.name for p in viewer.iterdir()) == ["image", "m0", "m1", "truth"]
    for k, method in enumerate(data["methods"]):
        assert len(list((viewer / f"m{k}").glob("*.png"))) == len(test) and method["missing"] == []
    # A map thumbnail holds the grey codes of the method's scale (the smoke images are under the thumbnail size)
    ours = data["methods"][1]
    with np.load(html_report.parent / "runs" / "synthetic-seed0" / "smoke" / "ours_no_msm" / "seed0" / "maps.npz") \
            as maps:
        score = maps[test.ids[3]].astype(np.float32)
    codes = np.asarray(Image.open(viewer / "m1" / "00003.png"))
    expected = np.round(np.clip((score - ours["lo"]) / (ours["hi"] - ours["lo"]), 0, 1) * 255)
    assert codes.shape == score.shape and np.abs(codes.astype(int) - expected).max() <= 1
    assert ours["max"][3] == pytest.approx(float(score.max()), rel=1e-3)
    assert ours["lo"] < ours["threshold"] < ours["hi"]
    image = np.asarray(Image.open(viewer / "image" / "00003.jpg"), np.float32)
    assert np.abs(image - test[3].image).mean() < 8  # JPEG of the same test image
    anomalous = [i for i, a in enumerate(data["anomalous"]) if a]
    assert all(ours["ap"][i] is not None for i in anomalous) and ours["ap"][data["anomalous"].index(0)] is None


def test_no_html_removes_an_older_page(html_report, tmp_path):
    runs = html_report.parent / "runs"
    out = tmp_path / "out"
    build_report(runs, out, n_boot=0, figures=False)
    assert "Not built: the report ran with --no-figures" in (out / "report.html").read_text()
    build_report(runs, out, n_boot=0, figures=False, html=False)
    assert not (out / "report.html").exists() and (out / "report.md").is_file()
