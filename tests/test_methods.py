"""Every registered method, through the same public interface the CLI uses (smoke preset): fit, predict,
evaluate, save and reload."""

from __future__ import annotations

import numpy as np
import pytest
from saved_folder import assert_holds_no_pickle

from scrapbench.core.method import AnomalyMethod, FitContext, check_maps
from scrapbench.core.registry import create_method, list_methods
from scrapbench.methods.anomalib_zoo.models import ZOO as ZOO_ROWS
from scrapbench.metrics import PixelMetrics
from scrapbench.run.provenance import seed_everything

METHOD_NAMES = [spec.name for spec in list_methods()]
# What the fit trains on the smoke preset: nothing (a frozen CLIP, perhaps with a memory of reference images), a
# few prompt vectors on a frozen CLIP (under 1% of the parameters), or some of the networks (the rest frozen:
# CLIP's text tower, Mask R-CNN's backbone on small presets, SAM beside the fine-tuned YOLO).
TRAINED = {"winclip": "none", "winclip_plus": "none", "anomalyclip": "prompts", "yolov8_sam": "part",
           "yolo11_sam": "part", "mask_rcnn": "part", "ours": "part", "ours_msm_5_11": "part",
           "ours_msm_7_13": "part", "ours_no_msm": "part"}


def _check_parameter_counts(name, counts):
    """``parameter_counts()`` of a fitted built-in: (total, trained) as its fit trains (TRAINED)."""
    assert counts is not None, f"{name}: holds torch networks, yet counts no parameters"
    total, trained = counts
    assert total > 0 and 0 <= trained <= total, (name, counts)
    kind = TRAINED.get(name)
    if kind == "none":
        assert trained == 0, (name, counts)
    elif kind == "prompts":
        assert 0 < trained < total / 100, (name, counts)
    elif kind == "part":
        assert 0 < trained < total, (name, counts)
#: anomalib models that refuse to run here (downloads, no pixel maps): listed, never fitted (test_anomalib_zoo.py)
_REFUSED = {row.method_name for row in ZOO_ROWS if not row.runs_offline}
RUNNABLE = [name for name in METHOD_NAMES if name not in _REFUSED]
#: The zoo's models get the same-seed refit on two representatives (a memory bank, a trained flow); every zoo
#: model still fits, predicts and is saved and reloaded here, and is evaluated in test_anomalib_zoo.py.
_REFIT = {name for name in RUNNABLE if not name.startswith("anomalib.")} | {"anomalib.patchcore", "anomalib.fastflow"}


def _fit(name, dataset, workdir, seed=0):
    method = create_method(name, dataset.class_names, preset="smoke")
    workdir.mkdir(parents=True)
    seed_everything(seed)
    method.fit(dataset.train, FitContext(seed=seed, device="cpu", workdir=workdir,
                                         class_names=dataset.class_names, show_progress=False))
    return method


@pytest.fixture(scope="module")
def test_images(smoke_dataset):
    return [sample.image for sample in smoke_dataset.test[:4]]


@pytest.mark.parametrize("name", RUNNABLE)
def test_fit_predict_contract(name, smoke_dataset, test_images, tmp_path):
    method = _fit(name, smoke_dataset, tmp_path / "a")
    maps = check_maps(method.predict(test_images), test_images, name)
    assert all(m.dtype == np.float32 and m.shape == img.shape[:2] for m, img in zip(maps, test_images, strict=True))
    assert "random_init" in method.weights_info()
    _check_parameter_counts(name, method.parameter_counts())
    evaluator = PixelMetrics(class_names=smoke_dataset.class_names)  # the runner's evaluator
    evaluator.update(np.stack(maps), np.stack([sample.mask for sample in smoke_dataset.test[:4]]))
    assert 0.0 <= evaluator.compute()["auroc"] <= 1.0

    if name in _REFIT:
        again = _fit(name, smoke_dataset, tmp_path / "b")
        for first, second in zip(maps, again.predict(test_images), strict=True):
            np.testing.assert_allclose(first, second, rtol=1e-5, atol=1e-6, err_msg=f"{name}: same seed, other maps")

    method.save(tmp_path / "saved")
    assert_holds_no_pickle(tmp_path / "saved")
    loaded = AnomalyMethod.load(tmp_path / "saved")
    assert loaded.parameter_counts() == method.parameter_counts(), f"{name}: the loaded method counts otherwise"
    for first, reloaded in zip(maps, loaded.predict(test_images), strict=True):
        np.testing.assert_allclose(first, reloaded, rtol=1e-5, atol=1e-6, err_msg=f"{name}: save/load changed maps")


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_presets_are_data(name):
    """smoke and cpu presets only override known fields; paper is the defaults plus the name's own fields."""
    from scrapbench.core.method import config_to_dict
    from scrapbench.core.registry import build_config, get_spec

    spec = get_spec(name)
    cls = spec.load_class()
    assert {"smoke", "cpu"} <= set(cls.presets)
    paper = config_to_dict(build_config(name, "paper"))
    defaults = config_to_dict(cls.Config())
    for key, value in spec.overrides.items():
        assert paper[key] == (list(value) if isinstance(value, tuple) else value)
    assert {k: v for k, v in paper.items() if k not in spec.overrides} == \
        {k: v for k, v in defaults.items() if k not in spec.overrides}
    assert config_to_dict(build_config(name, "smoke")) != paper
