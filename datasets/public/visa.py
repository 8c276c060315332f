"""VisA read in place through its own split file, one :class:`Dataset` per object (``visa-pcb1``, ...).

The layout as downloaded (Zou et al., ECCV 2022, github.com/amazon-science/spot-diff)::

    ROOT/split_csv/1cls.csv                              # object,split,label,image,mask
    ROOT/<object>/Data/Images/Normal/<stem>.JPG
    ROOT/<object>/Data/Images/Anomaly/<stem>.JPG
    ROOT/<object>/Data/Masks/Anomaly/<stem>.png          # 0 = normal, small non-zero values = defect

``1cls.csv`` fixes the one-class protocol every paper uses: ``split`` is train / test, ``label``
normal / anomaly, ``image`` and ``mask`` are paths relative to ROOT (``mask`` empty for normal
images). The masks are not 0/255: the official preparation script (and anomalib) binarise them with
``!= 0``, and so do we. The split file names no defect types, so VisA has the one class ``anomaly``.
"""

from __future__ import annotations

import codecs
import csv
import functools
import io
import reprlib
from pathlib import Path

from scrapbench.datasets.fingerprint import records_fingerprint
from scrapbench.datasets.io.cache import default_cache_dir
from scrapbench.datasets.split import ImageRecord, check_records, checked_split
from scrapbench.datasets.types import Dataset, DatasetError

SPLIT_FILE = Path("split_csv") / "1cls.csv"
COLUMNS = ("object", "split", "label", "image", "mask")
LABELS = {"normal": 0, "anomaly": 1}
_MAX_FIELD = 4096  # PATH_MAX on Linux: no path (and no object name) the split file may name is longer


def _resolve_inside(root: Path, relative: str, where: str) -> Path:
    """``root / relative`` for a path that the split file names; it must stay inside ``root``."""
    path = Path(relative)
    if path.is_absolute() or ".." in path.parts:
        raise DatasetError(f"{where}: path {relative!r} must be relative to the VisA root, without '..'")
    return root / path


def read_split_file(root: str | Path) -> dict[str, dict[str, list[ImageRecord]]]:
    """Records per object and split from ``ROOT/split_csv/1cls.csv``; every named file must exist.

    Errors name the split file and line (bad header, unknown split or label, missing file, an
    anomalous image without a mask, a duplicate image). Parsed once per version of the file: listing
    the objects and opening twelve of them would otherwise check 10,821 paths thirteen times.
    """
    path = Path(root) / SPLIT_FILE
    if not path.is_file():
        raise DatasetError(f"{path}: VisA split file missing; it ships with VisA (split_csv/1cls.csv)")
    stat = path.stat()
    return _parse_split_file(Path(root), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=4)
def _parse_split_file(root: Path, _mtime_ns: int, _size: int) -> dict[str, dict[str, list[ImageRecord]]]:
    path = root / SPLIT_FILE
    reader = csv.reader(io.StringIO(_split_file_text(path), newline=""))
    line, header = _next_row(reader, path)
    header = tuple(column.strip() for column in header or ())
    if header != COLUMNS:
        raise DatasetError(f"{path}: header is {','.join(header)!r}; expected {','.join(COLUMNS)!r}")
    objects: dict[str, dict[str, list[ImageRecord]]] = {}
    seen: dict[Path, int] = {}
    while True:
        line, row = _next_row(reader, path)
        if row is None:
            break
        where = f"{path}:{line}"
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(COLUMNS):
            raise DatasetError(f"{where}: {len(row)} fields; expected {len(COLUMNS)} ({','.join(COLUMNS)})")
        name, split, label, image_rel, mask_rel = (cell.strip() for cell in row)
        if split not in ("train", "test"):
            raise DatasetError(f"{where}: split {split!r}; expected train or test")
        if label not in LABELS:
            raise DatasetError(f"{where}: label {label!r}; expected normal or anomaly")
        image = _resolve_inside(root, image_rel, where)
        if not _is_file(image, where):
            raise DatasetError(f"{where}: image {image} does not exist")
        if image in seen:
            raise DatasetError(f"{where}: image {image_rel} is listed twice (also line {seen[image]})")
        seen[image] = line
        mask = None
        if mask_rel:
            mask = _resolve_inside(root, mask_rel, where)
            if not _is_file(mask, where):
                raise DatasetError(f"{where}: mask {mask} does not exist")
        elif LABELS[label]:
            raise DatasetError(f"{where}: anomalous image {image_rel} has no mask")
        record = ImageRecord(f"{label}_{image.stem}", image, mask, LABELS[label], label)
        objects.setdefault(name, {"train": [], "test": []})[split].append(record)
    if not objects:
        raise DatasetError(f"{path}: no rows")
    return objects


def _split_file_text(path: Path) -> str:
    """The split file as text (UTF-8, a leading BOM dropped); bytes that are not UTF-8 are named by line."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read the split file ({exc.strerror or exc})") from exc
    data = data.removeprefix(codecs.BOM_UTF8)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].replace(b"\r\n", b"\n").replace(b"\r", b"\n").count(b"\n") + 1
        raise DatasetError(f"{path}:{line}: not UTF-8 text "
                           f"(byte 0x{data[exc.start]:02x}: {exc.reason})") from exc


def _next_row(reader, path: Path) -> tuple[int, list[str] | None]:
    """The next row and the line it starts on; ``None`` at the end. Malformed CSV (a field over the csv
    module's limit), a control character (a NUL byte) or a field longer than a path: one line naming the line."""
    line = reader.line_num + 1
    try:
        row = next(reader, None)
    except csv.Error as exc:
        raise DatasetError(f"{path}:{reader.line_num}: not a valid CSV row ({exc})") from exc
    for number, cell in enumerate(row or (), start=1):
        control = next((char for char in cell if ord(char) < 0x20 or ord(char) == 0x7F), None)
        if control is not None:  # a NUL byte, a line break inside quotes, ...: no path or name holds one
            raise DatasetError(f"{path}:{line}: field {number} holds the control character U+{ord(control):04X}")
        if len(cell) > _MAX_FIELD:
            raise DatasetError(f"{path}:{line}: field {number} is {len(cell):,} characters long; "
                               f"the split file's fields are paths and names, at most {_MAX_FIELD:,}")
    return line, row


def _is_file(path: Path, where: str) -> bool:
    """``path.is_file()``; a path the system cannot check (a name too long) is one line naming ``where``."""
    try:
        return path.is_file()
    except OSError as exc:
        raise DatasetError(f"{where}: cannot check {reprlib.repr(str(path))} ({exc.strerror or exc})") from exc


def visa_categories(root: str | Path) -> list[str]:
    """The objects that the split file lists, sorted."""
    return sorted(read_split_file(root))


def object_name(category: str) -> str:
    """The object in words, as prompts name it: ``pipe_fryum`` → ``pipe fryum``."""
    return category.replace("_", " ")


def read_visa_category(root: str | Path, category: str, per_defect_type: bool = False,
                       show_progress: bool | None = None, cache_dir: str | Path | None = None,
                       use_cache: bool = True, workers: int | None = None) -> Dataset:
    """Open one VisA object in place, every image and mask read, hashed and decoded first.

    ``cache_dir``, ``use_cache``, ``show_progress``: as for
    :func:`scrapbench.datasets.public.mvtec.read_mvtec_category`.
    """
    split_file = Path(root) / SPLIT_FILE
    if per_defect_type:
        raise DatasetError(f"{split_file}: VisA's split file names no defect types; use the single class 'anomaly'")
    objects = read_split_file(root)
    if category not in objects:
        raise DatasetError(f"{split_file}: no object {category!r}; objects: {', '.join(sorted(objects))}")
    records = objects[category]
    if not records["train"]:
        raise DatasetError(f"{split_file}: object {category!r} has no train row")
    if not any(r.is_anomalous for r in records["test"]):
        raise DatasetError(f"{split_file}: object {category!r} has no anomalous test image; pixel metrics need some")
    folder = Path(root) / category
    cache = (Path(cache_dir) if cache_dir is not None else default_cache_dir()) if use_cache else None
    facts = check_records(records["train"] + records["test"], folder, cache, show_progress, workers)
    train = checked_split("train", records["train"], facts, f"{split_file} object {category!r} train")
    test = checked_split("test", records["test"], facts, f"{split_file} object {category!r} test")
    name = object_name(category)
    header = {"benchmark": "visa", "category": category, "object_name": name, "classes": ["anomaly"]}
    notes = {"benchmark": "visa", "category": category, "spec": f"visa:{root}#{category}",
             "test_groups": tuple(r.group for r in records["test"])}
    return Dataset(f"visa-{category}", ("anomaly",), train, test, root=folder, notes=notes, object_name=name,
                   fingerprint=records_fingerprint(header, records, facts, Path(root)))
