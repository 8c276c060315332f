"""anomalib's image models behind the registry (methods/anomalib_zoo): table, protocol, weights, equivalence.

The registry-wide checks (fit, predict, evaluate, save/reload on the smoke preset) are in
tests/test_methods.py and tests/test_zoo_runs.py; this file pins what is particular to the adapter.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from scrapbench.core.method import FitContext, LearningType
from scrapbench.core.registry import ZOO, build_config, create_method, get_spec, list_methods, resolve_method_names
from scrapbench.methods.anomalib_zoo.models import ZOO as ROWS
from scrapbench.run.provenance import seed_everything

RUNNABLE = [row.method_name for row in ROWS if row.runs_offline]


def _fit(name, dataset, workdir, seed=0, **overrides):
    method = create_method(name, dataset.class_names, preset="smoke", overrides=overrides)
    workdir.mkdir(parents=True, exist_ok=True)
    seed_everything(seed)
    method.fit(dataset.train, FitContext(seed=seed, device="cpu", workdir=workdir, class_names=dataset.class_names,
                                         show_progress=False))
    return method


def test_zoo_suite_is_the_runnable_rows_and_not_part_of_all():
    assert [s.name for s in list_methods(ZOO)] == RUNNABLE
    assert {"anomalib.patchcore", "anomalib.padim", "anomalib.supersimplenet", "anomalib.dinomaly"} <= set(RUNNABLE)
    assert resolve_method_names(["zoo"]) == RUNNABLE
    assert not any(name.startswith("anomalib.") for name in resolve_method_names(["all"]))
    listed_only = [row for row in ROWS if not row.runs_offline]
    assert any(row.name == "efficient_ad" for row in listed_only)
    for row in listed_only:
        assert "not runnable here" in get_spec(row.method_name).description


def test_learning_types_follow_the_model_and_its_config():
    cls = get_spec("anomalib.supersimplenet").load_class()
    assert cls.learning_type_for(build_config("anomalib.supersimplenet", "smoke")) is LearningType.ONE_CLASS
    supervised = build_config("anomalib.supersimplenet", "smoke", {"supervised": True})
    assert cls.learning_type_for(supervised) is LearningType.SUPERVISED
    assert get_spec("anomalib.patchcore").load_class().learning_type is LearningType.ONE_CLASS


def test_set_reaches_the_models_own_hyperparameters():
    from scrapbench.core.presets import resolve_preset

    settings = ["anomalib.patchcore.coreset_sampling_ratio=0.01", "anomalib.padim.n_features=20"]
    resolved = resolve_preset("smoke", settings)
    assert resolved.overrides == {"anomalib.patchcore": {"coreset_sampling_ratio": 0.01},
                                  "anomalib.padim": {"n_features": 20}}
    config = build_config("anomalib.patchcore", "paper", resolved.overrides["anomalib.patchcore"])
    assert (config.coreset_sampling_ratio, config.backbone, config.num_neighbors) == (0.01, "wide_resnet50_2", 9)
    with pytest.raises(ValueError, match="coreset_sampling_ratio"):
        resolve_preset("smoke", ["anomalib.patchcore.coreset_sampling_ratio=many"])


def test_unavailable_models_refuse_in_one_line_before_any_work(smoke_dataset, tmp_path):
    from scrapbench.core.weights import check_weights, problems

    bad = problems(check_weights(["anomalib.efficient_ad", "anomalib.patchcore"], "smoke"))
    assert [r.methods for r in bad] == [["anomalib.efficient_ad"]]
    assert "Imagenette" in bad[0].check.detail
    method = create_method("anomalib.efficient_ad", smoke_dataset.class_names, preset="smoke")
    with pytest.raises(RuntimeError, match=r"^anomalib.efficient_ad cannot run here: needs the ImageNet"):
        method.fit(smoke_dataset.train, FitContext(seed=0, device="cpu", workdir=tmp_path,
                                                   class_names=smoke_dataset.class_names))
    assert not any(tmp_path.iterdir())


def test_pretrained_backbones_are_checked_and_named_when_missing(monkeypatch, tmp_path):
    import torch

    from scrapbench.core.weights import method_weight_checks

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    paper = method_weight_checks("anomalib.patchcore", "paper")
    assert [(c.weight, c.status) for c in paper] == [("timm wide_resnet50_2", "missing")]
    assert "timm.create_model('wide_resnet50_2', pretrained=True)" in paper[0].where
    cfa = method_weight_checks("anomalib.cfa", "paper")
    assert cfa[0].status == "missing" and cfa[0].where.startswith("download https://download.pytorch.org/")
    assert [c.status for c in method_weight_checks("anomalib.patchcore", "smoke")] == ["random"]


def test_one_class_models_train_on_the_normal_images_only(smoke_dataset, tmp_path):
    """PaDiM's Gaussians fitted on the whole train split equal those fitted on its normal images alone."""
    from scrapbench.datasets.types import Dataset

    whole = _fit("anomalib.padim", smoke_dataset, tmp_path / "whole")
    normal = Dataset(smoke_dataset.name, smoke_dataset.class_names,
                     smoke_dataset.train.subset(smoke_dataset.train.normal_indices()), smoke_dataset.test)
    assert len(normal.train) < len(smoke_dataset.train)
    only_normal = _fit("anomalib.padim", normal, tmp_path / "normal")
    for key, value in whole.state_dict()["module"].items():
        np.testing.assert_array_equal(value.numpy(), only_normal.state_dict()["module"][key].numpy(), err_msg=key)


def test_lightning_output_stays_out_of_the_console_and_the_cwd(smoke_dataset, tmp_path, monkeypatch, capfd):
    monkeypatch.chdir(tmp_path)
    _fit("anomalib.padim", smoke_dataset, tmp_path / "work").predict([smoke_dataset.test[0].image])
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["work"]


@pytest.mark.parametrize("name", ["anomalib.patchcore", "anomalib.fastflow"])
def test_maps_equal_anomalibs_own_prediction(name, smoke_dataset, tmp_path):
    """On the same fitted weights and images, the adapter's maps are anomalib's ``Engine.predict`` maps of the
    same images read from PNG files by anomalib's ``PredictDataset`` in batches of the same size (the model's
    input size is the images' size, so neither side resizes)."""
    from anomalib.data import PredictDataset
    from anomalib.engine import Engine
    from torch.utils.data import DataLoader

    method = _fit(name, smoke_dataset, tmp_path / "work")
    images = [sample.image for sample in smoke_dataset.test[:6]]
    assert all(image.shape[:2] == (method.config.image_size,) * 2 for image in images)
    ours = method.predict(images)

    folder = tmp_path / "images"
    folder.mkdir()
    for i, image in enumerate(images):
        Image.fromarray(image).save(folder / f"{i:02d}.png")
    engine = Engine(default_root_dir=tmp_path / "anomalib", logger=False, accelerator="cpu", devices=1,
                    barebones=True)
    dataset = PredictDataset(folder)  # anomalib's reader of image files; batched as the adapter batches
    loader = DataLoader(dataset, batch_size=method.config.batch_size, collate_fn=dataset.collate_fn)
    batches = engine.predict(method._module, dataloaders=loader, return_predictions=True)
    theirs = [amap.reshape(amap.shape[-2:]).numpy() for batch in batches for amap in batch.anomaly_map]

    diff = max(float(np.abs(a - b).max()) for a, b in zip(ours, theirs, strict=True))
    print(f"{name}: max |adapter - anomalib| = {diff:.3g} over {len(images)} maps")
    assert diff == 0.0
    assert max(float(np.ptp(m)) for m in ours) > 0  # real maps, not constants


def test_a_zoo_run_is_evaluated_and_reported_beside_the_papers_methods(smoke_dataset, tmp_path):
    """The runner fits, predicts and evaluates a zoo model like any method; Table 2 shows it, marked ¶ (one-class)."""
    import json

    import pandas as pd

    from scrapbench.report.dataset_report import build_report
    from scrapbench.run.grid import run_benchmark
    from scrapbench.run.plan import RunOptions

    options = RunOptions(preset="smoke", out=tmp_path / "runs", show_progress=False)
    [result] = run_benchmark(smoke_dataset, ["anomalib.padim"], [0], options)
    assert result.status == "done"
    record = json.loads((result.directory / "run.json").read_text())
    assert record["learning_type"] == "one_class" and record["weights"]["random_init"]
    assert 0 <= json.loads((result.directory / "metrics.json").read_text())["auroc"] <= 1
    build_report(tmp_path / "runs", tmp_path / "report", n_boot=20)
    assert list(pd.read_csv(tmp_path / "report" / "table2.csv")["method"]) == ["anomalib.padim"]
    markdown = (tmp_path / "report" / "table2.md").read_text()
    assert "| PaDiM (anomalib) †¶ |" in markdown and "¶ one-class: trained on the normal training images" in markdown


def test_list_shows_the_zoo_with_learning_types(monkeypatch):
    from typer.testing import CliRunner

    from scrapbench.cli.main import app

    monkeypatch.setenv("COLUMNS", "300")
    result = CliRunner().invoke(app, ["list", "--suite", "zoo"])
    assert result.exit_code == 0, result.output
    rows = [line for line in result.output.splitlines() if "anomalib." in line]
    assert len(rows) == len(RUNNABLE) and all("one_class" in row for row in rows)
