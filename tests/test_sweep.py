"""Parameter sweeps: `--sweep METHOD.FIELD=V1,V2` → variants `METHOD[FIELD=V]` that the registry resolves anywhere,
refused before anything runs when a field or value is wrong, run on the pool and resumed, reported as a table and a
line plot per swept field, and lined up with the published per-shot rows (`report --published`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pandas as pd
import pytest
from executor_checks import register_toys
from PIL import Image
from public_layouts import write_visa
from toy_method import ColourDistance, ToyConfig
from typer.testing import CliRunner

from scrapbench.cli.main import app
from scrapbench.core import registry
from scrapbench.core.variants import SweepError, format_value, parse_name, parse_values
from scrapbench.storage.run_folder import method_folder, path_component


@dataclass(frozen=True)
class ShotConfig(ToyConfig):
    k_shot: int = 1
    noise: float = 20.0


class ShotColourDistance(ColourDistance):
    """The toy with a shot count, standing in for WinCLIP+ (whose runs record ``k_shot``)."""

    Config = ShotConfig
    presets: ClassVar[dict] = {"smoke": {"max_images": 4}, "cpu": {}}


@pytest.fixture(autouse=True)
def toys(monkeypatch, tmp_path):
    monkeypatch.setenv("SCRAPBENCH_CACHE", str(tmp_path / "cache"))
    register_toys(monkeypatch, "toy_noisy")
    monkeypatch.setattr(registry, "_VARIANTS", {})  # variants of this test's toys only


def _cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_sweeps_expand_into_canonical_variants_the_registry_resolves():
    names = registry.sweep_names(["toy_noisy.noise=1,2.5", "toy_noisy.max_images=2,4", "ours.msm_scales=[3,9]"])
    # the cartesian product of one method's fields, each name in the Config's field order
    assert names == ["toy_noisy[max_images=2,noise=1]", "toy_noisy[max_images=4,noise=1]",
                     "toy_noisy[max_images=2,noise=2.5]", "toy_noisy[max_images=4,noise=2.5]",
                     "ours[msm_scales=[3,9]]"]
    spec = registry.get_spec("toy_noisy[ noise=2.5 , max_images=4]")  # any spelling → the canonical name
    assert spec.name == "toy_noisy[max_images=4,noise=2.5]" and spec.target is ColourDistance
    assert spec.overrides == {"max_images": 4, "noise": 2.5} and spec.suites == (registry.SWEEP,)
    ours = registry.get_spec("ours[msm_scales=[3,9]]")
    assert ours.overrides["msm_scales"] == (3, 9) and ours.overrides["use_msm"] is True  # the base's own fields kept
    assert registry.build_config("toy_noisy[max_images=4,noise=2.5]", "smoke").noise == 2.5
    assert registry.resolve_method_names(["toy_noisy,toy_noisy[noise=3 ]"]) == ["toy_noisy", "toy_noisy[noise=3]"]
    # one safe, distinct folder per variant; strings and lists of strings get a digest
    folders = {method_folder(name) for name in names}
    assert len(folders) == len(names) and all(path_component(f, "") == f for f in folders)
    assert method_folder("ours[msm_scales=[3,9]]") == "ours@msm_scales=3+9"
    assert method_folder("winclip_plus[k_shot=2]") == "winclip_plus@k_shot=2" and method_folder("ours") == "ours"
    assert method_folder('m[s="a_b"]') == method_folder("m[s=a_b]") == "m@s=a_b"
    odd = [method_folder('m[s="a b"]'), method_folder('m[s="true"]'), method_folder("m[s=[a,b]]")]
    assert len(set(odd)) == 3 and all(f.startswith("m@h") and path_component(f, "") == f for f in odd)
    for value in (2, 0.001, True, None, "name", "a,b [c]", "true", (3, 9), ("x", 1.5)):
        assert parse_values(format_value(value), "v")[0] in (value, list(value) if isinstance(value, tuple) else value)
    assert parse_values("1e-3,2", "v") == [0.001, 2]
    assert parse_name("winclip_plus") is None
    with pytest.raises(SweepError):
        parse_name("toy_noisy[noise]")


@pytest.mark.parametrize(("sweep", "message"), [
    ("toy_noisy.nope=1,2", "--sweep toy_noisy.nope: toy_noisy has no config field 'nope'; its fields: "
                           "max_images (int (64-bit)); noise (float (finite)); fail_on_predict (bool)"),
    ("toy_noisy.max_images=2,a", "--sweep toy_noisy.max_images = 'a': expected int (64-bit); toy_noisy's fields: "
                                 "max_images (int (64-bit));"),
    ("toy_noisy.noise=[1,2]", "--sweep toy_noisy.noise = [1, 2]: expected float (finite)"),
    ("ours.msm_scales=3,9", "--sweep ours.msm_scales = 3: expected a list of int (64-bit); a list value is written "
                            "in brackets, one per value: [3,9],[3,9,15]; ours's fields:"),
    ("toy_noisy.noise", "expected METHOD.FIELD=V1,V2,..."),
    ("nope.k_shot=1", "unknown method 'nope'"),
])
def test_a_wrong_sweep_is_refused_before_anything_runs(tmp_path, sweep, message):
    result = _cli("run", "--sweep", sweep, "--preset", "smoke", "--seeds", 1, "--out", tmp_path / "runs",
                  "--no-progress")
    assert result.exit_code == 2 and message in " ".join(result.output.split()), result.output
    assert len([line for line in result.output.splitlines() if line.strip()]) <= 3  # one error (wrapped)
    assert not (tmp_path / "runs").exists()


def test_sweep_on_the_pool_resumes_and_is_reported(tmp_path, one_thread):
    out = tmp_path / "runs"
    args = ("--sweep", "toy_noisy.noise=1,8", "--preset", "smoke", "--seeds", 2, "--out", out, "--no-progress")
    # the pool: two worker processes (one thread each), which resolve the variants' names themselves
    first = _cli("run", *args, "--jobs", 2, "--set", "toy_noisy.max_images=3")
    assert first.exit_code == 0, first.output
    assert "2 methods × 2 seeds" in first.output and first.output.count("✓ toy_noisy[noise=") == 4
    runs = out / "synthetic-seed0" / "smoke"
    assert sorted(p.name for p in runs.iterdir()) == ["toy_noisy@noise=1", "toy_noisy@noise=8"]
    record = json.loads((runs / "toy_noisy@noise=8" / "seed1" / "run.json").read_text())
    assert record["method"] == "toy_noisy[noise=8]" and record["config"]["noise"] == 8
    assert record["config"]["max_images"] == 3  # the method's --set reaches its variants
    identities = {json.dumps(json.loads((runs / m / "seed0" / "run.json").read_text())["identity"], sort_keys=True)
                  for m in ("toy_noisy@noise=1", "toy_noisy@noise=8")}
    assert len(identities) == 2
    # resumed here (this process with a worker's one thread: the same identity): every run reused, none recomputed
    again = _cli("run", *args, "--set", "toy_noisy.max_images=3")
    assert again.exit_code == 0 and again.output.count("↷ toy_noisy[noise=") == 4, again.output
    # --methods with --sweep: both; the base keeps its Table 2 row, the variants go to the sweep table
    both = _cli("run", *args, "--methods", "toy_noisy", "--set", "toy_noisy.max_images=3")
    assert both.exit_code == 0 and both.output.count("✓ toy_noisy seed") == 2, both.output

    # a variant's model folder names the variant; `scrapbench predict` resolves it through the registry
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(np.full((40, 40, 3), 90, np.uint8)).save(images / "a.png")
    predicted = _cli("predict", runs / "toy_noisy@noise=8" / "seed0" / "model", images, "--out", tmp_path / "pred",
                     "--no-progress")
    assert predicted.exit_code == 0 and predicted.output.startswith("toy_noisy[noise=8]: 1 images"), predicted.output

    report = _cli("report", out, "--n-boot", 0)
    assert report.exit_code == 0, report.output
    folder = out / "report"
    table2 = pd.read_csv(folder / "table2.csv")
    assert list(table2["method"]) == ["toy_noisy"]
    sweep = pd.read_csv(folder / "sweep_noise.csv")
    ap = sweep[sweep["metric"] == "ap"].set_index("value")
    for value in (1, 8):
        values = [100 * json.loads((runs / f"toy_noisy@noise={value}" / f"seed{s}" / "metrics.json").read_text())["ap"]
                  for s in (0, 1)]
        assert ap.loc[value, "mean_pct"] == pytest.approx(sum(values) / 2, abs=1e-5)
        assert ap.loc[value, "std_pct"] == pytest.approx(pd.Series(values).std(ddof=1), abs=1e-5)
    markdown = (folder / "sweep_noise.md").read_text()
    assert "| Method \\ noise | 1 | 8 |" in markdown and "**pixel AP (%)**" in markdown
    page = (folder / "report.md").read_text()
    assert "## Sweep — noise" in page and "figures/sweep_toy_noisy_noise.png" in page
    assert (folder / "figures" / "sweep_toy_noisy_noise.png").stat().st_size > 10_000


def test_published_alignment_of_a_shot_sweep(tmp_path, monkeypatch):
    """WinCLIP+'s name on a toy with `k_shot`: each shot variant beside the published row of its shot count."""
    from scrapbench.report.published import published_for

    monkeypatch.setitem(registry._REGISTRY, "winclip_plus", registry.MethodSpec(
        "winclip_plus", ShotColourDistance, "toy WinCLIP+", ("table2",)))
    write_visa(tmp_path / "visa", {"candle": {"train": 3, "test_normal": 2, "test_anomaly": 2}}, mask_value=2)
    out = tmp_path / "runs"
    result = _cli("run", "--dataset", f"visa:{tmp_path / 'visa'}", "--sweep", "winclip_plus.k_shot=1,2,4,8",
                  "--seeds", 2, "--preset", "smoke", "--out", out, "--no-progress")
    assert result.exit_code == 0, result.output
    report = _cli("report", out, "--published")
    assert report.exit_code == 0, report.output
    folder = out / "report"
    published = pd.read_csv(folder / "published.csv").set_index("method")
    sweep = pd.read_csv(folder / "sweep_k_shot.csv")
    for shots in (1, 2, 4):
        paper = published_for("winclip_plus", "visa", shots)
        row = published.loc[f"winclip_plus[k_shot={shots}]"]
        assert row["shots"] == shots and row["aupro_published_pct"] == paper.values["aupro"]
        assert row["aupro_diff_pp"] == pytest.approx(row["aupro_measured_pct"] - paper.values["aupro"], abs=1e-6)
        cell = sweep[(sweep["value"] == shots) & (sweep["metric"] == "aupro")].iloc[0]
        assert cell["published_pct"] == paper.values["aupro"]
        assert cell["mean_pct"] == pytest.approx(row["aupro_measured_pct"], abs=1e-5)
    assert sweep[(sweep["value"] == 8)]["published_pct"].isna().all()  # no published 8-shot row
    assert pd.isna(published.loc["winclip_plus[k_shot=8]", "aupro_published_pct"])
    markdown = (folder / "sweep_k_shot.md").read_text()
    assert "| WinCLIP+, published | 85.1 | 86.2 | 87.6 |  |" in markdown
    assert (folder / "figures" / "sweep_winclip_plus_k_shot.png").is_file()
