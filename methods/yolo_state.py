"""A trained ultralytics segmentation model as tensors + its architecture, rebuilt without unpickling.

ultralytics saves models as pickled modules (``.pt``); loading one runs whatever the file names. A
fitted YOLO is stored instead as its ``state_dict`` plus what rebuilds the exact architecture: the
model's YAML dict (as ultralytics keeps it in ``model.yaml``: layers, scale, ``nc``, channels),
the class count of the checkpoint it was fine-tuned from, and the strides (checked after rebuild).

Why the checkpoint's class count: in ultralytics 8.4 the width of the head's class branch (``cv3``)
depends on ``nc`` (``max(ch[0], min(nc, 100))``), and ``BaseModel.load`` rebuilds that branch at the
*checkpoint's* width when fine-tuning (measured: yolov8n from an 80-class checkpoint trains cv3 at
width 80; the YAML with nc=3 builds 64). So the YAML alone does not describe such a model. Rebuilding
replays what the trainer did, with ultralytics' own code: build from the YAML for our classes, let
``load`` graft a branch from a YAML-built model at the checkpoint's class count (random weights,
nothing read from disk), then load the trained tensors strictly.
"""

from __future__ import annotations

import copy
from typing import Any

import torch


def yolo_architecture(model: torch.nn.Module, head_source_nc: int | None) -> dict[str, Any]:
    """What :func:`rebuild_yolo` needs besides the tensors (plain JSON values)."""
    return {"yaml": copy.deepcopy(model.yaml), "head_source_nc": head_source_nc,
            "stride": [float(s) for s in model.stride.tolist()]}


def rebuild_yolo(architecture: dict[str, Any], weights: dict[str, torch.Tensor], num_classes: int) -> torch.nn.Module:
    """A ``SegmentationModel`` of ``architecture`` holding ``weights`` (ValueError when they do not fit)."""
    from ultralytics.nn.tasks import SegmentationModel

    yaml = architecture["yaml"]
    if not isinstance(yaml, dict) or yaml.get("nc") != num_classes:
        raise ValueError(f"the stored YOLO architecture is not a model for {num_classes} classes")
    channels = int(yaml.get("channels", 3))
    head_nc = architecture.get("head_source_nc")
    with torch.random.fork_rng(devices=[]):  # the throw-away random init must not move the caller's RNG
        model = SegmentationModel(copy.deepcopy(yaml), ch=channels, nc=num_classes, verbose=False)
        if head_nc is not None and head_nc != num_classes:
            donor = SegmentationModel({**copy.deepcopy(yaml), "nc": int(head_nc)}, ch=channels, nc=int(head_nc),
                                      verbose=False)
            model.load(donor, verbose=False)
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"the stored YOLO weights do not fit its architecture: {str(exc).splitlines()[0]}") from exc
    stride = [float(s) for s in model.stride.tolist()]
    if stride != list(architecture.get("stride", stride)):
        raise ValueError(f"the rebuilt YOLO has strides {stride}, the stored model {architecture['stride']}")
    return model
