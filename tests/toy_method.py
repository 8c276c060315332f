"""A tiny, dependency-free method for testing the runner, the CLI and the reports.

It learns the mean colour of normal training pixels and scores each pixel by its colour distance.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from scrapbench.core.method import AnomalyMethod, FitContext, LearningType


@dataclass(frozen=True)
class ToyConfig:
    max_images: int = 8
    noise: float = 0.0  # seeded noise, so that seeds give different (but repeatable) maps
    fail_on_predict: bool = False


class ColourDistance(AnomalyMethod):
    """Distance of each pixel's colour from the mean normal colour."""

    Config = ToyConfig
    presets: ClassVar[dict[str, dict[str, Any]]] = {"smoke": {"max_images": 4}, "cpu": {}}
    learning_type = LearningType.FEW_SHOT

    def fit(self, train, ctx: FitContext) -> None:
        normals = train.normal_indices()[: self.config.max_images]
        pixels = np.concatenate([train[i].image.reshape(-1, 3) for i in normals]).astype(np.float32)
        self.mean = pixels.mean(axis=0)
        self.rng_seed = ctx.seed

    def predict(self, images):
        if self.config.fail_on_predict:
            raise RuntimeError("toy failure")
        out = []
        rng = np.random.default_rng(self.rng_seed)
        for image in images:
            dist = np.linalg.norm(image.astype(np.float32) - self.mean, axis=-1)
            out.append((dist + self.config.noise * rng.standard_normal(dist.shape)).astype(np.float32))
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"mean": self.mean, "rng_seed": self.rng_seed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.mean, self.rng_seed = np.asarray(state["mean"]), int(state["rng_seed"])


@dataclass(frozen=True)
class RecordingConfig(ToyConfig):
    fit_log: str = ""  # a file that gets one line per fit: "<seed> <pid>"
    fit_seconds: float = 0.0  # a slow fit, so that concurrent processes overlap


class RecordingColourDistance(ColourDistance):
    """The toy method, recording every fit in a file (proves which process computed what, and how often)."""

    Config = RecordingConfig

    def fit(self, train, ctx: FitContext) -> None:
        with open(self.config.fit_log, "a") as log:  # O_APPEND: lines from several processes stay whole
            log.write(f"{ctx.seed} {os.getpid()}\n")
        time.sleep(self.config.fit_seconds)
        super().fit(train, ctx)


@dataclass(frozen=True)
class WeightsConfig(ToyConfig):
    weights: str | None = None


class LoadsWeightsWhenBuilt(ColourDistance):
    """The toy method, reading a weights file when it is built (as WinCLIP reads its CLIP)."""

    Config = WeightsConfig
    weights_field = "weights"

    def __init__(self, config: WeightsConfig, class_names) -> None:
        super().__init__(config, class_names)
        if config.weights is not None and not Path(config.weights).read_bytes().startswith(b"TOY"):
            raise ValueError("not a checkpoint")


class SupervisedColourDistance(ColourDistance):
    """The toy method as a supervised one (it takes ``--train-on`` and the supervised split); it records the
    ids of the train split it saw and the object name it was given in its work folder."""

    learning_type = LearningType.SUPERVISED

    def fit(self, train, ctx: FitContext) -> None:
        import json

        ctx.workdir.mkdir(parents=True, exist_ok=True)
        (ctx.workdir / "train.json").write_text(json.dumps({"ids": list(train.ids),
                                                           "object_name": ctx.object_name}))
        super().fit(train, ctx)


@dataclass(frozen=True)
class DyingConfig(ToyConfig):
    die_marker: str = ""  # absent: the first fit writes its work folder here and kills its own process


class DiesOnceWhileFitting(ColourDistance):
    """The toy method, whose first fit kills its process (a worker lost mid-run); later fits succeed."""

    Config = DyingConfig

    def fit(self, train, ctx: FitContext) -> None:
        marker = Path(self.config.die_marker)
        if not marker.exists():
            marker.write_text(str(ctx.workdir))
            os.kill(os.getpid(), 9)  # SIGKILL: no clean-up, no exception, as when a machine is lost
        super().fit(train, ctx)


class SeedIndependentColourDistance(RecordingColourDistance):
    """The recording toy method declaring itself seed-independent when it adds no seeded noise (as zero-shot
    WinCLIP with pretrained weights does)."""

    @classmethod
    def seed_independent(cls, config: RecordingConfig) -> bool:
        return config.noise == 0.0


class DiesWhileFitting(ColourDistance):
    """The toy method, whose every fit kills its process (a run that cannot be computed where it is)."""

    def fit(self, train, ctx: FitContext) -> None:
        os.kill(os.getpid(), 9)
