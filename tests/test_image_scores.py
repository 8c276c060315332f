"""Image-level scores: the runner writes what a method's ``predict_with_scores`` returns (default: map maxima)."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from toy_method import ColourDistance

from scrapbench.core import registry
from scrapbench.core.method import check_scores
from scrapbench.run.grid import run_benchmark
from scrapbench.run.plan import RunOptions


class ScoredColourDistance(ColourDistance):
    """The toy method with its own image scores: the mean of the map instead of its maximum."""

    def predict_with_scores(self, images):
        maps = self.predict(images)
        return maps, [float(m.mean()) for m in maps]


@pytest.fixture(autouse=True)
def toy_methods(monkeypatch):
    registry.list_methods()
    monkeypatch.setitem(registry._REGISTRY, "toy", registry.MethodSpec("toy", ColourDistance, "toy"))
    monkeypatch.setitem(registry._REGISTRY, "toy_scored",
                        registry.MethodSpec("toy_scored", ScoredColourDistance, "toy with image scores"))


def _scores(result) -> dict[str, float]:
    with open(result.directory / "per_image.csv") as handle:
        return {row["id"]: float(row["image_score"]) for row in csv.DictReader(handle)}


def _ctx(tmp_path):
    from scrapbench.core.method import FitContext

    return FitContext(seed=0, device="cpu", workdir=tmp_path / "fit", class_names=("motor", "cable", "spray_can"))


def test_runner_writes_the_methods_image_scores(smoke_dataset, tmp_path):
    options = RunOptions(preset="smoke", out=tmp_path / "runs", show_progress=False, save_maps=True)
    plain, scored = run_benchmark(smoke_dataset, ["toy", "toy_scored"], [0], options)
    maps = np.load(plain.directory / "maps.npz")
    assert _scores(plain) == pytest.approx({k: float(maps[k].astype(np.float32).max()) for k in maps.files},
                                           rel=1e-3)
    method = ScoredColourDistance(ColourDistance.Config(max_images=4), smoke_dataset.class_names)
    method.fit(smoke_dataset.train, _ctx(tmp_path))
    images = [s.image for s in smoke_dataset.test]
    expected = {s.id: float(m.mean()) for s, m in zip(smoke_dataset.test, method.predict(images), strict=True)}
    assert _scores(scored) == pytest.approx(expected, rel=1e-6)


def test_bad_image_scores_are_named():
    images = [np.zeros((2, 2, 3), np.uint8)] * 2
    with pytest.raises(RuntimeError, match="1 image scores for 2 images"):
        check_scores([0.5], images, "m")
    with pytest.raises(RuntimeError, match="image score 1 is NaN"):
        check_scores([0.5, float("nan")], images, "m")
