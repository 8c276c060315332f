"""Write a split as an ultralytics segmentation dataset: PNG images, polygon label files, data.yaml.

Layout under ``root``::

    images/train/<id>.png   labels/train/<id>.txt   (one line per instance: class x1 y1 x2 y2 ...)
    images/val/...          labels/val/...
    data.yaml               (absolute paths: nothing is resolved against ultralytics' datasets dir)

Class ``k`` of the class-index mask (1..K) is YOLO class ``k - 1``. Background images get an
empty label file. Polygon coordinates are normalised by image width and height.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from scrapbench.datasets.types import Split
from scrapbench.methods.common.instances import instance_polygon, mask_to_instances

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def write_yolo_dataset(
    root: Path,
    split: Split,
    train_indices: Sequence[int],
    val_indices: Sequence[int],
    class_names: Sequence[str],
    min_area: int,
) -> Path:
    """Write the images and labels; returns the path of ``data.yaml``."""
    root = Path(root)
    for subset, indices in (("train", train_indices), ("val", val_indices)):
        image_dir, label_dir = root / "images" / subset, root / "labels" / subset
        image_dir.mkdir(parents=True, exist_ok=True)
        label_dir.mkdir(parents=True, exist_ok=True)
        for position, index in enumerate(indices):
            sample = split[index]
            # Position prefix: ids are unique but may contain characters unfit for file names.
            stem = f"{position:06d}_{_UNSAFE.sub('_', sample.id)[:80]}"
            Image.fromarray(np.ascontiguousarray(sample.image)).save(image_dir / f"{stem}.png")
            (label_dir / f"{stem}.txt").write_text(yolo_label_lines(sample.mask, min_area))
    data = {
        "path": str(root.resolve()),
        "train": str((root / "images" / "train").resolve()),
        "val": str((root / "images" / "val").resolve()),
        "names": dict(enumerate(class_names)),
    }
    data_yaml = root / "data.yaml"
    data_yaml.write_text(yaml.safe_dump(data, sort_keys=False))
    return data_yaml


def yolo_label_lines(class_index_mask: np.ndarray, min_area: int) -> str:
    """The YOLO-seg label file text of one mask ("" for a background image)."""
    height, width = class_index_mask.shape
    scale = np.array([width, height], dtype=np.float32)
    lines = []
    for instance in mask_to_instances(class_index_mask, min_area):
        polygon = np.clip(instance_polygon(instance.mask) / scale, 0.0, 1.0)
        coords = " ".join(f"{v:.6f}" for v in polygon.reshape(-1))
        lines.append(f"{instance.class_index - 1} {coords}")
    return "".join(line + "\n" for line in lines)
