"""A fit-free method for the prediction tests: the anomaly map is the image's red channel.

Per-class maps are the red and the green channel, so a region's class is predictable. It records
the shapes it was given, to check the tiling.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from scrapbench.core.method import AnomalyMethod, FitContext, LearningType


@dataclass(frozen=True)
class RedConfig:
    scale: float = 1.0


class RedChannel(AnomalyMethod):
    """Anomaly map = red channel × scale."""

    Config = RedConfig
    presets: ClassVar[dict[str, dict[str, Any]]] = {"smoke": {}, "cpu": {}}
    learning_type = LearningType.ZERO_SHOT

    def __init__(self, config, class_names) -> None:
        super().__init__(config, class_names)
        self.seen_shapes: list[tuple[int, ...]] = []

    def fit(self, train, ctx: FitContext) -> None:
        pass

    def predict(self, images):
        self.seen_shapes.extend(image.shape[:2] for image in images)
        return [image[..., 0].astype(np.float32) * self.config.scale for image in images]

    def predict_classes(self, images):
        return [np.stack([image[..., 0], image[..., 1]]).astype(np.float32) for image in images]

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass
