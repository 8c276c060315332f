"""A trained ultralytics segmentation model as tensors, rebuilt from ultralytics' own shipped YAML.

ultralytics saves models as pickled modules (``.pt``); loading one runs whatever the file names. A
fitted YOLO is stored instead as its ``state_dict`` plus a description of its architecture: the
model's YAML dict (as ultralytics keeps it in ``model.yaml``), the class count of the checkpoint it
was fine-tuned from, and the strides.

The stored YAML is never built. ultralytics' ``parse_model`` ``eval()``s some YAML fields (the
activation) and resolves layer names in its module globals, so a model folder whose YAML reached it
could run any code. :func:`rebuild_yolo` builds the architecture from the YAML file that the installed
ultralytics ships for the family (``yolov8-seg.yaml``, ``yolo11-seg.yaml``), at the scale and class
count of the folder, both checked; the stored YAML is only compared with it, as data.

Why the checkpoint's class count: in ultralytics 8.4 the width of the head's class branch (``cv3``)
depends on ``nc`` (``max(ch[0], min(nc, 100))``), and ``BaseModel.load`` rebuilds that branch at the
*checkpoint's* width when fine-tuning (yolov8n from an 80-class checkpoint trains cv3 at width 80;
the YAML with nc=3 builds 64). So the YAML alone does not describe such a model. Rebuilding replays
what the trainer did, with ultralytics' own code: build for our classes, let ``load`` graft a branch
from a model built at the checkpoint's class count (random weights, nothing read from disk), then
load the trained tensors strictly.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any, Literal, get_args

import torch
import yaml as pyyaml

YoloFamily = Literal["yolov8", "yolo11"]
YoloScale = Literal["n", "s", "m", "l", "x"]
YOLO_FAMILIES = get_args(YoloFamily)
YOLO_SCALES = get_args(YoloScale)
_FAMILY_FOLDERS = {"yolov8": "v8", "yolo11": "11"}  # ultralytics/cfg/models/<folder>/<family>-seg.yaml
MAX_CLASSES = 1000  # a class count beyond this is not a segmentation head anyone trained
# The YAML fields that ultralytics' parse_model reads to build layers: the stored YAML must agree on them.
_ARCHITECTURE_FIELDS = ("backbone", "head", "activation", "depth_multiple", "width_multiple", "kpt_shape",
                        "end2end", "reg_max")


def yolo_architecture(model: torch.nn.Module, head_source_nc: int | None) -> dict[str, Any]:
    """What :func:`rebuild_yolo` needs besides the tensors (plain JSON values)."""
    return {"yaml": copy.deepcopy(model.yaml), "head_source_nc": head_source_nc,
            "stride": [float(s) for s in model.stride.tolist()]}


def shipped_yolo_yaml(family: str, scale: str, num_classes: int) -> dict[str, Any]:
    """The model dict ultralytics builds for ``<family><scale>-seg.yaml``, read from the file it ships.

    Read by absolute path inside the installed package: the name route (``YOLO("yolov8n-seg.yaml")``)
    would prefer a file of that name in the working directory.
    """
    import ultralytics

    if family not in YOLO_FAMILIES:
        raise ValueError(f"yolo_family must be one of {YOLO_FAMILIES}, got {family!r}")
    if scale not in YOLO_SCALES:
        raise ValueError(f"yolo_scale must be one of {YOLO_SCALES}, got {scale!r}")
    path = Path(ultralytics.__file__).parent / "cfg" / "models" / _FAMILY_FOLDERS[family] / f"{family}-seg.yaml"
    config = pyyaml.safe_load(path.read_text(encoding="utf-8"))
    # As ultralytics' yaml_model_load and DetectionModel record them for a model built by name.
    config.update(scale=scale, yaml_file=f"{family}{scale}-seg.yaml", nc=num_classes, channels=3)
    return config


def rebuild_yolo(architecture: Any, weights: dict[str, torch.Tensor], num_classes: int, family: str,
                 scale: str) -> torch.nn.Module:
    """A ``SegmentationModel`` of ultralytics' shipped ``family``/``scale`` architecture holding ``weights``.

    ``architecture`` (from a model folder) is checked, never built: ValueError when it describes
    another model or when the weights do not fit.
    """
    from ultralytics.nn.tasks import SegmentationModel

    if not isinstance(architecture, dict) or not isinstance(architecture.get("yaml"), dict):
        raise ValueError("yolo_architecture must be a mapping with the model's 'yaml'")
    stored = architecture["yaml"]
    if stored.get("nc") != num_classes:
        raise ValueError(f"the stored YOLO architecture has nc={_short(stored.get('nc'))}, "
                         f"not the model's {num_classes} classes")
    shipped = shipped_yolo_yaml(family, scale, num_classes)
    difference = _architecture_difference(stored, shipped, scale)
    if difference:
        raise ValueError(f"the stored YOLO architecture is not ultralytics' {family}{scale}-seg ({difference}); "
                         f"scrapbench rebuilds only the architectures ultralytics ships")
    head_nc = _head_source_nc(architecture.get("head_source_nc"))
    stride = architecture.get("stride")
    if not (isinstance(stride, list) and all(_is_number(s) for s in stride)):
        raise ValueError("yolo_architecture.stride must be a list of numbers")
    with torch.random.fork_rng(devices=[]):  # the throw-away random init must not move the caller's RNG
        model = SegmentationModel(copy.deepcopy(shipped), ch=3, nc=num_classes, verbose=False)
        if head_nc is not None and head_nc != num_classes:
            donor = SegmentationModel({**copy.deepcopy(shipped), "nc": head_nc}, ch=3, nc=head_nc, verbose=False)
            model.load(donor, verbose=False)
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"the stored YOLO weights do not fit its architecture: {str(exc).splitlines()[0]}") from exc
    rebuilt = [float(s) for s in model.stride.tolist()]
    if rebuilt != [float(s) for s in stride]:
        raise ValueError(f"the rebuilt YOLO has strides {rebuilt}, the stored model {_short(stride)}")
    return model


def _architecture_difference(stored: dict[str, Any], shipped: dict[str, Any], scale: str) -> str:
    """The first field in which the two YAML dicts build different layers ('' when none), compared as JSON."""
    if stored.get("scale") != scale:
        return f"scale {_short(stored.get('scale'))}"
    if stored.get("channels", 3) != 3:
        return f"channels {_short(stored.get('channels'))}"
    for field in _ARCHITECTURE_FIELDS:
        if _as_json(stored.get(field)) != _as_json(shipped.get(field)):
            return f"field {field!r} differs"
    if _as_json((stored.get("scales") or {}).get(scale)) != _as_json(shipped["scales"][scale]):
        return f"the multiples of scale {scale!r} differ"
    return ""


def _head_source_nc(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_CLASSES:
        raise ValueError(f"yolo_architecture.head_source_nc must be a class count in 1..{MAX_CLASSES}, "
                         f"got {_short(value)}")
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _as_json(value: Any) -> str | None:
    try:
        return json.dumps(value, sort_keys=True)
    except (TypeError, ValueError, RecursionError):
        return None  # cannot equal the shipped YAML, which is plain data


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
