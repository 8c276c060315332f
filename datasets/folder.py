"""The on-disk dataset format that people can write by hand.

    ROOT/dataset.yaml                 # classes: [motor, cable, spray_can]  (index 1..K)
    ROOT/{train,test}/images/<stem>.<png|jpg|jpeg|bmp|tif|tiff>   (any case: .PNG, .JPG ...)
    ROOT/{train,test}/masks/<stem>.png  # uint8 class indices; missing = all normal

Everything is checked when the dataset is opened, so that a run never dies half-way on a bad file:
every image and mask is decoded completely once (see :mod:`scrapbench.datasets.io.filecheck`), mask
sizes and values are checked, and the images of a split must share one size
(:mod:`scrapbench.datasets.split`). The same pass hashes every file into :attr:`Dataset.fingerprint`
(:func:`scrapbench.datasets.fingerprint.manifest_fingerprint`). Pixels are decoded again lazily when
a method asks.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import yaml
from PIL import Image

from scrapbench.datasets.fingerprint import manifest_fingerprint
from scrapbench.datasets.io.cache import default_cache_dir
from scrapbench.datasets.io.filecheck import check_files
from scrapbench.datasets.split import ImageRecord, checked_split
from scrapbench.datasets.types import Dataset, DatasetError, Sample

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
SPLITS = ("train", "test")

def read_json_file(path: Path, what: str) -> object:
    """Parse a JSON file, or raise DatasetError naming it (missing file, bad JSON)."""
    if not path.is_file():
        raise DatasetError(f"{path}: {what} does not exist")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: not valid JSON ({exc})") from exc


def check_class_names(names: Sequence[object], where: str) -> tuple[str, ...]:
    """Class names as the reader accepts them: a non-empty list of distinct, non-empty strings."""
    names = list(names)
    if not names:
        raise DatasetError(f"{where}: no anomaly class names; give at least one, e.g. [motor, cable, spray_can]")
    bad = [n for n in names if not isinstance(n, str) or not n.strip()]
    if bad:
        raise DatasetError(f"{where}: class names must be non-empty text, got {bad[:5]!r} "
                           f"(quote numbers in YAML: '5')")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise DatasetError(f"{where}: duplicate class names {duplicates[:5]} in {names}")
    return tuple(names)


def read_class_names(root: Path) -> tuple[tuple[str, ...], dict]:
    meta_path = root / "dataset.yaml"
    if not meta_path.is_file():
        raise DatasetError(f"{meta_path}: missing; write e.g. `classes: [motor, cable, spray_can]`")
    try:
        meta = yaml.safe_load(meta_path.read_text()) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{meta_path}: invalid YAML ({exc})") from exc
    if not isinstance(meta, dict):
        raise DatasetError(f"{meta_path}: expected a mapping like `classes: [motor, cable, spray_can]`")
    classes = meta.get("classes")
    if not isinstance(classes, list):
        raise DatasetError(f"{meta_path}: `classes` must be a non-empty list of anomaly class names")
    return check_class_names(classes, f"{meta_path}: `classes`"), meta


def files_by_stem(folder: Path, suffixes: tuple[str, ...], duplicate: str) -> dict[str, Path]:
    """The files of ``folder`` whose suffix (in any letter case) is one of ``suffixes``, by stem; hidden files
    are skipped. Two files with one stem are refused: ``duplicate`` begins what the message says of them."""
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in suffixes or path.name.startswith("."):
            continue
        if path.stem in found:
            raise DatasetError(f"{path}: {duplicate} {path.stem!r} (also {found[path.stem].name})")
        found[path.stem] = path
    return found


def _index_split(root: Path, split: str) -> tuple[dict[str, Path], dict[str, Path]]:
    """Images and masks of a split by stem; suffixes match in any case (``a.PNG`` is a PNG)."""
    image_dir, mask_dir = root / split / "images", root / split / "masks"
    if not image_dir.is_dir():
        raise DatasetError(f"{image_dir}: missing folder (expected ROOT/{split}/images/*.png)")
    images = files_by_stem(image_dir, IMAGE_SUFFIXES, "duplicate stem")
    if not images:
        raise DatasetError(f"{image_dir}: empty split, no images with suffix {IMAGE_SUFFIXES}")
    masks: dict[str, Path] = {}
    if mask_dir.is_dir():
        entries = sorted(p for p in mask_dir.iterdir() if not p.name.startswith("."))
        # A mask in another format would be skipped silently and its image counted as normal.
        foreign = [p.name for p in entries if p.suffix.lower() != ".png"]
        if foreign:
            raise DatasetError(f"{mask_dir}: masks must be PNG files of class indices, found {foreign[:5]}")
        masks = files_by_stem(mask_dir, (".png",), "two masks for image")
        orphans = sorted(p.name for stem, p in masks.items() if stem not in images)
        if orphans:
            raise DatasetError(f"{mask_dir}: masks without an image (names must match an image's, letter case "
                               f"included): {orphans[:5]}")
    return images, masks


def read_folder_dataset(root: str | Path, cache_dir: str | Path | None = None, use_cache: bool = True,
                        show_progress: bool | None = None, workers: int | None = None) -> Dataset:
    """Open ``root`` in the on-disk format after checking every file completely (see the module docstring).

    ``cache_dir`` (default: the scrapbench cache) remembers files already checked; ``use_cache=False``
    checks everything again. ``show_progress``: None shows a bar on a terminal when checking is slow.
    ``workers``: threads decoding files (default: one per CPU, at most 8).
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset folder does not exist")
    class_names, meta = read_class_names(root)
    indexed = {split: _index_split(root, split) for split in SPLITS}
    files = [(path, kind) for split in SPLITS for kind, group in zip(("image", "mask"), indexed[split], strict=True)
             for path in group.values()]
    cache = (Path(cache_dir) if cache_dir is not None else default_cache_dir()) if use_cache else None
    facts = check_files(files, root, cache_dir=cache, show_progress=show_progress, workers=workers)
    train, test = (checked_split(split, [ImageRecord(stem, path, indexed[split][1].get(stem), None)
                                         for stem, path in indexed[split][0].items()],
                                 facts, str(root / split / "images"), num_classes=len(class_names),
                                 size_fix=": cut them into patches with `scrapbench prepare`")
                   for split in SPLITS)
    if not any(test.has_anomaly):
        raise DatasetError(f"{root / 'test'}: no anomalous pixel in the test split; pixel metrics need some")
    manifest = {path.relative_to(root).as_posix(): facts[path] for path, _ in files}
    name = str(meta.get("name", root.name))
    return Dataset(name, class_names, train, test, root=root, notes=dict(meta.get("notes") or {}),
                   fingerprint=manifest_fingerprint(class_names, manifest))


def write_folder_dataset(
    out: str | Path,
    class_names: Iterable[str],
    splits: dict[str, Iterable[Sample]],
    meta: dict | None = None,
    inputs: Iterable[str | Path | None] = (),
    command: str = "write",
    keep_existing: bool = False,
    finish: Callable[[Path], None] | None = None,
    force: bool = False,
) -> Path:
    """Write samples in the on-disk format, atomically: a half-written folder never appears at ``out``.

    ``out`` follows the output rule of :mod:`scrapbench.storage.outdir`: an existing non-empty folder is
    replaced only if scrapbench ``command`` wrote it (``force``: any scrapbench command), and never when it
    overlaps ``inputs``. ``keep_existing``:
    if ``out`` appears while we write (another process filling a cache), keep it. ``finish(folder)``
    may add files to the folder before it is published.
    """
    from scrapbench.storage.outdir import staged_output

    out = Path(out)
    class_names = check_class_names(list(class_names), f"writing {out}")
    seen: set[tuple[str, str]] = set()
    with staged_output(out, command, inputs=inputs, keep_existing=keep_existing, force=force) as tmp:
        doc = {"classes": list(class_names), **(meta or {})}
        (tmp / "dataset.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
        for split, samples in splits.items():
            (tmp / split / "images").mkdir(parents=True)
            (tmp / split / "masks").mkdir(parents=True)
            for sample in samples:
                if (split, sample.id) in seen:
                    raise ValueError(f"duplicate sample id {sample.id!r} in split {split!r}")
                seen.add((split, sample.id))
                Image.fromarray(sample.image).save(tmp / split / "images" / f"{sample.id}.png")
                if sample.mask.any():
                    Image.fromarray(sample.mask).save(tmp / split / "masks" / f"{sample.id}.png")
        if finish is not None:
            finish(tmp)
    return out
