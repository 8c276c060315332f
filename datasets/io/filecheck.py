"""Check every image and mask file once, completely, before any method runs.

Each file is read once: its bytes are hashed (for the dataset fingerprint) and fully decoded from
memory (a truncated JPEG or a corrupt PNG fails here, naming the file). Masks also report their
distinct values. Files are checked on a few threads (decoding and hashing release the GIL), with a
progress bar when it takes a while.

What a check found is cached under the scrapbench cache folder, one JSON file per dataset folder,
keyed by each file's (size, mtime_ns, ctime_ns, inode): a second run on unchanged files skips the
decoding. ctime cannot be set by hand (``touch`` sets only mtime), so a rewritten file always
misses the cache. A cache that cannot be read or written is ignored.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import PIL
from tqdm.auto import tqdm

from scrapbench.datasets.io.images import (
    check_pixel_limit,
    decode_fully,
    decode_mask,
    mask_values,
    open_image,
    pixel_limit,
)
from scrapbench.datasets.types import DatasetError

# Bump when what a check records, or how it decides, changes.
_CACHE_FORMAT = 1
# Remembered checks of a folder not opened for this long are forgotten (folders get moved and deleted).
_CACHE_KEEP_S = 90 * 24 * 3600
_KINDS = ("image", "mask")


@dataclass(frozen=True)
class FileFacts:
    """What a full check of one file found."""

    size: int  # bytes
    sha256: str  # of the bytes
    height: int
    width: int
    values: tuple[int, ...] | None = None  # distinct values of a mask (None for images)


def _stat_key(stat: os.stat_result) -> list[int]:
    return [stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino]


def check_file(path: Path, kind: str) -> FileFacts:
    """Read, hash and fully decode one image or mask; DatasetError naming the file if it is bad."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read the file ({exc.strerror or exc})") from exc
    digest = hashlib.sha256(data).hexdigest()
    if kind == "image":
        with open_image(path, data) as img:
            decode_fully(img, path)
            width, height = img.size
        return FileFacts(len(data), digest, height, width)
    mask = decode_mask(path, data)
    return FileFacts(len(data), digest, mask.shape[0], mask.shape[1], tuple(mask_values(mask)))


class _Cache:
    """The facts of earlier checks of the files below one folder (see the module docstring)."""

    def __init__(self, cache_dir: Path | None, root: Path) -> None:
        root = Path(os.path.abspath(root))  # lexical: files may be links to elsewhere
        self.root = root
        self._prefix = str(root).rstrip(os.sep) + os.sep
        self.path = None
        if cache_dir is not None:
            name = hashlib.sha256(str(root).encode()).hexdigest()[:24]
            self.path = Path(cache_dir) / "validated" / f"{name}.json"
        self.entries: dict[str, list] = {}
        self.changed = False
        if self.path is not None and self.path.is_file():
            with contextlib.suppress(OSError):
                os.utime(self.path)  # marks it as in use (see _forget_unused)
            try:
                doc = json.loads(self.path.read_text())
                if doc.get("format") == _CACHE_FORMAT and doc.get("root") == str(root) \
                        and doc.get("pillow") == PIL.__version__:
                    self.entries = dict(doc["files"])
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                self.entries = {}

    def key(self, path: Path) -> str:
        """The file's name relative to the folder (the usual case is a plain prefix: no path parsing)."""
        full = os.path.abspath(path)
        if full.startswith(self._prefix):
            return full[len(self._prefix):].replace(os.sep, "/")
        return Path(os.path.relpath(full, self.root)).as_posix()

    def get(self, key: str, kind: str, stat: os.stat_result) -> FileFacts | None:
        entry = self.entries.get(key)
        try:
            if entry is None or entry[0] != kind or entry[1] != _stat_key(stat):
                return None
            size, digest, height, width, values = entry[2:]
            return FileFacts(int(size), str(digest), int(height), int(width),
                             tuple(int(v) for v in values) if values is not None else None)
        except (ValueError, TypeError, IndexError):
            return None

    def put(self, key: str, kind: str, stat: os.stat_result, facts: FileFacts) -> None:
        self.entries[key] = [kind, _stat_key(stat), facts.size, facts.sha256, facts.height, facts.width,
                                         list(facts.values) if facts.values is not None else None]
        self.changed = True

    def save(self, keep: set[str]) -> None:
        if self.path is None:
            return
        dropped = set(self.entries) - keep
        if not (self.changed or dropped):
            return
        from scrapbench.storage.atomic import atomic_write_text

        files = {k: v for k, v in self.entries.items() if k in keep}
        doc = {"format": _CACHE_FORMAT, "root": str(self.root), "pillow": PIL.__version__, "files": files}
        with contextlib.suppress(OSError):  # a read-only cache only costs time on the next run
            atomic_write_text(self.path, json.dumps(doc, separators=(",", ":")))
            self._forget_unused()

    def _forget_unused(self) -> None:
        cutoff = time.time() - _CACHE_KEEP_S
        for other in self.path.parent.glob("*.json"):
            with contextlib.suppress(OSError):
                if other.stat().st_mtime < cutoff:
                    other.unlink()


def check_files(
    files: Sequence[tuple[Path, str]],
    root: Path,
    cache_dir: Path | None = None,
    show_progress: bool | None = None,
    workers: int | None = None,
) -> dict[Path, FileFacts]:
    """Check every ``(path, "image" | "mask")`` below ``root``; return the facts per path.

    All files are checked before anything is raised: the error names the first bad file (in the
    order given) and how many others are bad. ``cache_dir``: where earlier checks are remembered
    (None: no cache). ``show_progress``: None shows a bar on a terminal once checking takes >1 s.
    """
    for _, kind in files:
        if kind not in _KINDS:
            raise ValueError(f"unknown file kind {kind!r}; expected one of {_KINDS}")
    limit = pixel_limit()  # a bad setting is one error, not one per file
    cache = _Cache(cache_dir, root)
    keys = {path: cache.key(path) for path, _ in files} if cache.path is not None else {}
    facts: dict[Path, FileFacts] = {}
    todo: list[tuple[Path, str, os.stat_result]] = []
    errors: dict[Path, DatasetError] = {}
    for path, kind in files:
        try:
            stat = path.stat()
        except OSError as exc:
            errors[path] = DatasetError(f"{path}: cannot read the file ({exc.strerror or exc})")
            continue
        known = cache.get(keys[path], kind, stat) if cache.path is not None else None
        if known is None:
            todo.append((path, kind, stat))
            continue
        try:
            check_pixel_limit(path, known.width, known.height, limit)  # the limit may have been lowered since
        except DatasetError as exc:
            errors[path] = exc
            continue
        facts[path] = known

    def check(item: tuple[Path, str, os.stat_result]) -> tuple[Path, FileFacts | DatasetError]:
        path, kind, _ = item
        try:
            return path, check_file(path, kind)
        except DatasetError as exc:
            return path, exc

    if todo:
        workers = workers or min(8, os.cpu_count() or 1)
        disable = None if show_progress is None else not show_progress
        with ThreadPoolExecutor(workers) as pool, tqdm(total=len(todo), desc="checking files", unit="file",
                                                       delay=1.0, disable=disable, leave=False) as bar:
            for (path, kind, stat), (_, result) in zip(todo, pool.map(check, todo), strict=True):
                bar.update()
                if isinstance(result, DatasetError):
                    errors[path] = result
                else:
                    facts[path] = result
                    if cache.path is not None:
                        cache.put(keys[path], kind, stat, result)
    if cache.path is not None:
        cache.save({keys[p] for p in facts})
    if errors:
        first = next(p for p, _ in files if p in errors)
        more = len(errors) - 1
        message = str(errors[first])
        if more:
            message += f" (and {more} more bad file{'s' if more > 1 else ''})"
        raise DatasetError(message) from errors[first]
    return facts


def check_one_size(images: Sequence[Path], facts: Mapping[Path, FileFacts], where: str, fix: str) -> None:
    """Refuse a split whose images differ in size (the runner and evaluator take batches of one size).

    ``where`` names the split in the message (a folder, a category's split); ``fix`` says what to do.
    """
    sizes: dict[tuple[int, int], list[Path]] = {}
    for path in images:
        sizes.setdefault((facts[path].width, facts[path].height), []).append(path)
    if len(sizes) > 1:
        common = max(sizes, key=lambda s: len(sizes[s]))
        other = next(s for s in sizes if s != common)
        raise DatasetError(
            f"{sizes[other][0]}: image is {other[0]}x{other[1]} but {len(sizes[common])} of {len(images)} images of "
            f"{where} are {common[0]}x{common[1]} (e.g. {sizes[common][0].name}); the images of a split must share "
            f"one size{fix}"
        )

