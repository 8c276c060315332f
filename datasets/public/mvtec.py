"""MVTec AD read in place, one :class:`Dataset` per category (``mvtec-bottle``, ...).

The official layout (Bergmann et al., CVPR 2019; also what anomalib's ``MVTecAD`` reads)::

    ROOT/<category>/train/good/<stem>.png
    ROOT/<category>/test/good/<stem>.png                         # no masks: normal
    ROOT/<category>/test/<defect>/<stem>.png
    ROOT/<category>/ground_truth/<defect>/<stem>_mask.png        # 0 / 255

``ROOT`` may also be one category folder itself. Masks are binarised (> 0 is anomalous) into the
single class ``anomaly``, or, with ``per_defect_type``, into one class per defect type of the
category (class names = the defect folders, sorted). Nothing is copied; every file is read, hashed and
decoded once when the category is opened, as for dataset folders (see :mod:`scrapbench.datasets.split`),
which also gives the category its fingerprint.
"""

from __future__ import annotations

from pathlib import Path

from scrapbench.datasets.fingerprint import records_fingerprint
from scrapbench.datasets.folder import IMAGE_SUFFIXES
from scrapbench.datasets.io.cache import default_cache_dir
from scrapbench.datasets.split import ImageRecord, check_records, checked_split
from scrapbench.datasets.types import Dataset, DatasetError

NORMAL = "good"
MASK_SUFFIX = "_mask.png"


def _is_category(folder: Path) -> bool:
    return (folder / "train").is_dir() and (folder / "test").is_dir()


def mvtec_categories(root: str | Path) -> list[str]:
    """Category folders under ``root`` (those with ``train/`` and ``test/``), sorted; ``root`` itself if it is one."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: MVTec AD root folder does not exist")
    if _is_category(root):
        return [root.name]
    found = sorted(p.name for p in root.iterdir() if p.is_dir() and _is_category(p))
    if not found:
        raise DatasetError(f"{root}: no MVTec AD category folder (CATEGORY/train/good, CATEGORY/test/...) in it")
    return found


def category_dir(root: str | Path, category: str) -> Path:
    """The folder of ``category``: ``root/category``, or ``root`` when it is that category's folder."""
    root = Path(root)
    if root.name == category and _is_category(root):
        return root
    folder = root / category
    if not _is_category(folder):
        raise DatasetError(f"{folder}: not an MVTec AD category folder (needs train/ and test/); "
                           f"categories in {root}: {', '.join(mvtec_categories(root))}")
    return folder


def _images(folder: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        if path.stem in found:
            raise DatasetError(f"{path}: duplicate image stem {path.stem!r} (also {found[path.stem].name})")
        found[path.stem] = path
    return found


def _subfolders(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def mvtec_records(folder: Path, per_defect_type: bool = False) -> tuple[dict[str, list[ImageRecord]], tuple[str, ...]]:
    """The train/test records of one category folder and its class names; checks the layout, not pixels."""
    extra = [name for name in _subfolders(folder / "train") if name != NORMAL]
    if extra or not (folder / "train" / NORMAL).is_dir():
        raise DatasetError(f"{folder / 'train'}: the MVTec AD layout has exactly one folder, good/, here "
                           f"(found {_subfolders(folder / 'train')})")
    defects = [name for name in _subfolders(folder / "test") if name != NORMAL]
    if not defects:
        raise DatasetError(f"{folder / 'test'}: no defect-type folder, only good/; pixel metrics need anomalous "
                           f"images, so leave this category out (mvtec:ROOT#cat1,cat2)")
    truth = folder / "ground_truth"
    if not truth.is_dir():
        raise DatasetError(f"{truth}: missing; MVTec AD keeps the masks in ground_truth/<defect>/<stem>_mask.png")
    stray = [name for name in _subfolders(truth) if name not in defects]
    if stray:
        raise DatasetError(f"{truth}: mask folders {stray} have no test/<defect> folder of images")
    class_names = tuple(defects) if per_defect_type else ("anomaly",)

    train = [ImageRecord(f"{NORMAL}_{stem}", path, None, 0, NORMAL)
             for stem, path in _images(folder / "train" / NORMAL).items()]
    if not train:
        raise DatasetError(f"{folder / 'train' / NORMAL}: no images")
    test: list[ImageRecord] = []
    if (folder / "test" / NORMAL).is_dir():
        test += [ImageRecord(f"{NORMAL}_{stem}", path, None, 0, NORMAL)
                 for stem, path in _images(folder / "test" / NORMAL).items()]
    for index, defect in enumerate(defects, start=1):
        images = _images(folder / "test" / defect)
        masks_dir = truth / defect
        masks = {p.name[: -len(MASK_SUFFIX)]: p for p in masks_dir.glob(f"*{MASK_SUFFIX}")} \
            if masks_dir.is_dir() else {}
        orphans = sorted(p.name for stem, p in masks.items() if stem not in images)
        if orphans:
            raise DatasetError(f"{masks_dir}: masks without an image in {folder / 'test' / defect}: {orphans[:5]}")
        for stem, path in images.items():
            mask = masks.get(stem)
            if mask is None:
                raise DatasetError(f"{masks_dir / (stem + MASK_SUFFIX)}: missing ground-truth mask of {path}")
            test.append(ImageRecord(f"{defect}_{stem}", path, mask, index if per_defect_type else 1, defect))
    return {"train": train, "test": test}, class_names


def object_name(category: str) -> str:
    """The category in words, as prompts name it: ``metal_nut`` → ``metal nut``."""
    return category.replace("_", " ")


def read_mvtec_category(root: str | Path, category: str, per_defect_type: bool = False,
                        show_progress: bool | None = None, cache_dir: str | Path | None = None,
                        use_cache: bool = True, workers: int | None = None) -> Dataset:
    """Open one MVTec AD category in place, every image and mask read, hashed and decoded first.

    ``cache_dir`` (default: the scrapbench cache) remembers the files already checked, ``use_cache=False``
    checks everything again; ``show_progress``: None shows a bar on a terminal when checking is slow.
    """
    folder = category_dir(root, category)
    records, class_names = mvtec_records(folder, per_defect_type)
    cache = (Path(cache_dir) if cache_dir is not None else default_cache_dir()) if use_cache else None
    facts = check_records(records["train"] + records["test"], folder, cache, show_progress, workers)
    train = checked_split("train", records["train"], facts, str(folder / "train"))
    test = checked_split("test", records["test"], facts, str(folder / "test"))
    name = object_name(category)
    header = {"benchmark": "mvtec", "category": category, "object_name": name, "classes": list(class_names)}
    notes = {"benchmark": "mvtec", "category": category, "spec": f"mvtec:{root}#{category}",
             "test_groups": tuple(r.group for r in records["test"])}
    return Dataset(f"mvtec-{category}", class_names, train, test, root=folder, notes=notes, object_name=name,
                   fingerprint=records_fingerprint(header, records, facts, folder))
