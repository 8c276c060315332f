"""Tiny fabricated folders in exactly the MVTec AD and VisA layouts (tests and scripts/bench_public_data.py).

Images are seeded noise; each anomalous image gets a rectangle mask. The writers return what they
wrote (per category: image arrays and binary masks by sample id) so tests can check readers by value.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

# Width ≠ height so that a transposed mask or image cannot pass.
SIZE = (20, 14)  # (width, height)


def _image(rng: np.random.Generator, size: tuple[int, int] = SIZE) -> np.ndarray:
    return rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)


def _rectangle(rng: np.random.Generator, size: tuple[int, int] = SIZE) -> np.ndarray:
    mask = np.zeros((size[1], size[0]), bool)
    y, x = int(rng.integers(0, size[1] - 4)), int(rng.integers(0, size[0] - 4))
    mask[y:y + 4, x:x + 5] = True
    return mask


def write_mvtec(root: Path, layout: dict[str, dict[str, int]], seed: int = 0,
                size: tuple[int, int] = SIZE) -> dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """``layout``: category → {"train": n, "good": n, "<defect>": n, ...}; masks are saved as 0/255.

    Returns category → sample id (as the reader names it: ``<defect>_<stem>``) → (image, bool mask).
    """
    rng = np.random.default_rng(seed)
    written: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
    for category, counts in layout.items():
        folder = root / category
        written[category] = {}
        for group, count in counts.items():
            image_dir = folder / "train" / "good" if group == "train" else folder / "test" / group
            image_dir.mkdir(parents=True, exist_ok=True)
            for k in range(count):
                stem = f"{k:03d}"
                image = _image(rng, size)
                Image.fromarray(image).save(image_dir / f"{stem}.png")
                mask = np.zeros(image.shape[:2], bool)
                if group not in ("train", "good"):
                    mask = _rectangle(rng, size)
                    (folder / "ground_truth" / group).mkdir(parents=True, exist_ok=True)
                    Image.fromarray(mask.astype(np.uint8) * 255).save(folder / "ground_truth" / group /
                                                                       f"{stem}_mask.png")
                key = f"good_{stem}" if group == "train" else f"{group}_{stem}"
                written[category][("train/" if group == "train" else "") + key] = (image, mask)
    (root / "license.txt").write_text("not a category\n")
    return written


def write_visa(root: Path, layout: dict[str, dict[str, int]], seed: int = 0, mask_value: int = 1,
               size: tuple[int, int] = SIZE) -> dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """``layout``: object → {"train": n normal, "test_normal": n, "test_anomaly": n}; images ``.JPG``.

    Writes ``split_csv/1cls.csv``; masks hold ``mask_value`` (VisA's are small non-zero values, not
    255). Returns object → "train/<id>" or "<id>" → (decoded image as the reader sees it, bool mask).
    """
    rng = np.random.default_rng(seed)
    rows = ["object,split,label,image,mask"]
    written: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
    for name, counts in layout.items():
        images_dir, masks_dir = root / name / "Data" / "Images", root / name / "Data" / "Masks" / "Anomaly"
        for sub in ("Normal", "Anomaly"):
            (images_dir / sub).mkdir(parents=True, exist_ok=True)
        masks_dir.mkdir(parents=True, exist_ok=True)
        written[name] = {}
        normal_index = 0
        for split, label, count in (("train", "normal", counts.get("train", 0)),
                                    ("test", "normal", counts.get("test_normal", 0)),
                                    ("test", "anomaly", counts.get("test_anomaly", 0))):
            for _ in range(count):
                if label == "normal":
                    stem, normal_index = f"{normal_index:04d}", normal_index + 1
                    path = images_dir / "Normal" / f"{stem}.JPG"
                else:
                    stem = f"{len([k for k in written[name] if k.startswith('anomaly_')]):03d}"
                    path = images_dir / "Anomaly" / f"{stem}.JPG"
                Image.fromarray(_image(rng, size)).save(path, format="JPEG", quality=95)
                with Image.open(path) as img:  # JPEG is lossy: keep what a reader decodes
                    image = np.asarray(img.convert("RGB")).copy()
                mask = np.zeros(image.shape[:2], bool)
                mask_rel = ""
                if label == "anomaly":
                    mask = _rectangle(rng, size)
                    Image.fromarray(mask.astype(np.uint8) * mask_value).save(masks_dir / f"{stem}.png")
                    mask_rel = f"{name}/Data/Masks/Anomaly/{stem}.png"
                rows.append(f"{name},{split},{label},{path.relative_to(root).as_posix()},{mask_rel}")
                written[name][("train/" if split == "train" else "") + f"{label}_{stem}"] = (image, mask)
    (root / "split_csv").mkdir(parents=True, exist_ok=True)
    (root / "split_csv" / "1cls.csv").write_text("\n".join(rows) + "\n")
    return written
