"""Atomic writes: a reader sees the old file or folder or the new one, never half of either.

A file is written to a hidden temporary file beside it and renamed over it (:func:`atomic_path`).
A folder is written whole into a hidden staging folder beside its place and swapped in by renames
(:func:`swap_in`). Every writer in scrapbench goes through these two: the ``--out`` rule
(:mod:`scrapbench.storage.outdir`), run folders (:mod:`scrapbench.storage.run_folder`), model
state files (:mod:`scrapbench.storage.state_io`). The callers differ only in who may replace what,
and in how a staging folder left by a killed process is found again.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; once the caller has written it, it replaces ``path``.

    The file is flushed to disk before the rename; on error it is removed and ``path`` stays as it was. An
    OSError (a full disk: ENOSPC) names ``path``, not the temporary file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name[:40]}.", dir=path.parent)  # room for a name near the limit
    except OSError as exc:
        raise _naming(exc, path) from exc
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.filename in (None, tmp):
            raise _naming(exc, path) from exc
        raise


def _naming(exc: OSError, path: Path) -> OSError:
    """``exc`` naming ``path`` instead of a temporary file (the same OSError subclass: it is chosen by errno)."""
    if exc.errno is None:
        return exc
    return OSError(exc.errno, exc.strerror or str(exc), str(path))


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never half."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, payload: Any) -> None:
    atomic_write_text(path, json.dumps(payload, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(value: Any) -> Any:
    import numpy as np

    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def swap_in(staging: Path, target: Path, make_aside: Callable[[Path], Path], keep_existing: bool = False,
            check_replaceable: Callable[[Path], None] | None = None) -> bool:
    """Put the complete folder ``staging`` (beside ``target``, same filesystem) at ``target`` by renames.

    An existing ``target`` is first checked (``check_replaceable`` raises to refuse it), then renamed
    into ``make_aside(target)`` (a new, empty hidden folder beside it that the caller's sweep of
    abandoned staging folders recognises), the staging folder renamed in, and the old one removed; if
    the second rename fails the old folder is put back. ``keep_existing``: an existing ``target`` stays
    and ``staging`` is removed (two processes filling one cache entry at once: the first one wins).
    Returns whether ``staging`` was placed.
    """
    if not (target.exists() or target.is_symlink()):
        try:
            os.rename(staging, target)
            return True
        except OSError:
            if not (keep_existing and target.exists()):
                raise
    if keep_existing:
        shutil.rmtree(staging)
        return False
    if check_replaceable is not None:
        check_replaceable(target)  # right before replacing: it may have changed while we were writing
    aside = make_aside(target)
    os.rename(target, aside / "replaced")
    try:
        os.rename(staging, target)
    except OSError:
        os.rename(aside / "replaced", target)  # put the old folder back
        shutil.rmtree(aside, ignore_errors=True)
        raise
    shutil.rmtree(aside, ignore_errors=True)
    return True
