"""Output folders: scrapbench replaces only what it wrote, never its own input, and never half-way.

The rule every ``--out`` follows (``synth``, ``prepare``, ``predict``, ``report``, ``evaluate``):

- An existing, non-empty output folder is replaced only when it holds the marker file
  :data:`MARKER`, which scrapbench writes into every folder it creates, and the marker names the same
  command (``predict`` does not replace the dataset ``prepare`` wrote) unless the user passes
  ``--force``. Anything else is refused: a user's folder is never emptied, not even with ``--force``.
  (Delete the marker to protect a folder from being replaced.)
- A name longer than the file system allows is refused before any work; a write that fails (a
  read-only folder, a full disk) is one :class:`OutputError` naming the folder, and leaves it as it was.
- An output equal to, inside, or containing an input of the command is refused (paths are compared
  after resolving symbolic links).
- A new folder is written into a hidden staging folder beside it and swapped in at the end, so the
  old result stays whole until the new one is complete, and an interrupted command leaves the old
  result as it was (:func:`scrapbench.storage.atomic.swap_in`). Staging folders left by a killed
  process are removed later, but only when the process that made them (recorded inside, see
  :mod:`scrapbench.storage.writers`) is gone.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from scrapbench.storage.atomic import swap_in
from scrapbench.storage.writers import make_owned_folder, release, remove_abandoned

MARKER = ".scrapbench-output"
STAGING_TAG = ".scrapbench-staging-"
_NAME_MAX = 255  # bytes in one file name, where the file system does not say
_NAME_KEPT = 40  # characters of the output's name that its staging folder's name repeats


class OutputError(ValueError):
    """An output path scrapbench refuses to write; the message says why and what to do instead."""


def _resolve(path: str | Path) -> Path:
    return Path(path).expanduser().resolve()


def check_no_overlap(out: str | Path, inputs: Iterable[str | Path | None], allow_inside: bool = False,
                     option: str = "--out") -> None:
    """Refuse ``out`` when it equals, lies inside (unless ``allow_inside``) or contains one of ``inputs``."""
    target = _resolve(out)
    for given in inputs:
        if given is None:
            continue
        source = _resolve(given)
        if target == source:
            raise OutputError(f"{option} {out} is the input {given} itself; choose a new folder")
        if source.is_relative_to(target):
            raise OutputError(f"{option} {out} contains the input {given}; replacing it would delete the input; "
                              f"choose a folder outside it")
        if not allow_inside and target.is_relative_to(source):
            raise OutputError(f"{option} {out} lies inside the input {given}; choose a folder outside it")


def is_scrapbench_output(folder: str | Path) -> bool:
    """Whether ``folder`` carries the marker scrapbench writes into every output folder."""
    return (Path(folder) / MARKER).is_file()


def _written_by(record: Any) -> str | None:
    """The ``written_by`` of a marker or output file's JSON content (``"scrapbench predict"``), if any."""
    return record.get("written_by") if isinstance(record, dict) and isinstance(record.get("written_by"), str) else None


def _read_written_by(path: Path) -> str | None:
    try:
        return _written_by(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return None


def check_replaceable(out: str | Path, command: str | None = None, force: bool = False, option: str = "--out") -> None:
    """Refuse an existing file, or an existing non-empty folder without scrapbench's marker; with ``command``,
    also one whose marker names another command, unless ``force``."""
    path = Path(out)
    if path.is_dir():
        if not any(path.iterdir()):
            return
        if not is_scrapbench_output(path):
            raise OutputError(f"{option} {out}: folder exists and was not written by scrapbench (no {MARKER} "
                              f"file); choose a new folder, or empty this one yourself")
        _check_same_command(out, _read_written_by(path / MARKER), command, force, option)
        return
    if path.exists() or path.is_symlink():
        raise OutputError(f"{option} {out}: exists and is not a folder; choose a new folder")


def _check_same_command(out: str | Path, writer: str | None, command: str | None, force: bool, option: str) -> None:
    if command is None or force or writer == f"scrapbench {command}":
        return
    raise OutputError(f"{option} {out}: written by `{writer or 'an unknown scrapbench command'}`, not by "
                      f"`scrapbench {command}`; choose a new name, or pass --force to replace it")


def check_path(out: str | Path, option: str = "--out") -> None:
    """Refuse, before any work is done for it, a path below a file or with a name the file system refuses."""
    path = Path(os.path.abspath(out))
    existing = next(p for p in path.parents if p.exists())  # the root at least
    if not existing.is_dir():
        raise OutputError(f"{option} {out}: {existing} is a file, not a folder; choose another place")
    try:
        limit = os.pathconf(existing, "PC_NAME_MAX")
    except (OSError, ValueError):
        limit = _NAME_MAX
    for part in path.relative_to(existing).parts:
        size = len(os.fsencode(part))
        if size > limit:
            raise OutputError(f"{option} {out}: a name of {size} bytes, longer than this file system allows "
                              f"({limit}); choose a shorter name")


def guard_output(out: str | Path, inputs: Iterable[str | Path | None] = (), allow_inside: bool = False,
                 option: str = "--out", command: str | None = None, force: bool = False) -> Path:
    """The checks above; returns ``out`` with symbolic links resolved (the folder actually written)."""
    check_no_overlap(out, inputs, allow_inside=allow_inside, option=option)
    check_path(out, option=option)
    check_replaceable(out, command, force, option=option)
    return _resolve(out)


def write_marker(folder: str | Path, command: str) -> None:
    """Mark ``folder`` as written by scrapbench (so a later run of ``command`` may replace it)."""
    doc = {"written_by": f"scrapbench {command}",
           "note": "scrapbench may replace this folder; delete this file to protect the folder from that"}
    (Path(folder) / MARKER).write_text(json.dumps(doc, indent=2) + "\n")


def make_staging(target: Path) -> Path:
    """A new hidden folder beside ``target`` that records which process writes it (named after the start of
    ``target``'s name, so that a name near the file system's limit still has room for it)."""
    return make_owned_folder(target.parent, f".{target.name[:_NAME_KEPT]}{STAGING_TAG}")


def clean_stale_staging(parent: str | Path) -> list[Path]:
    """Remove staging folders in ``parent`` left by scrapbench processes that are gone; returns them."""
    return remove_abandoned(Path(parent), f".*{STAGING_TAG}*")


@contextmanager
def staged_output(out: str | Path, command: str, inputs: Iterable[str | Path | None] = (),
                  allow_inside: bool = False, keep_existing: bool = False, option: str = "--out",
                  force: bool = False) -> Iterator[Path]:
    """Write an output folder atomically: yields an empty staging folder, swaps it in for ``out`` on success.

    ``out`` is checked first (:func:`guard_output`, for ``command``; ``force``: replace what another
    command wrote); on error the staging folder is removed and ``out`` stays as it was, and an OSError
    (a read-only folder, a full disk) becomes one :class:`OutputError` naming ``out``. ``keep_existing``:
    if ``out`` exists when the staging folder is done, keep it and drop ours (a cache filled by two
    processes at once). Returns nothing; the final folder is ``out`` with symbolic links resolved.
    """
    inputs = list(inputs)
    target = guard_output(out, inputs, allow_inside=allow_inside, option=option, command=command, force=force)
    try:
        clean_stale_staging(target.parent)
        staging = make_staging(target)
    except OSError as exc:
        raise _not_written(out, exc) from exc
    try:
        yield staging
        write_marker(staging, command)
        release(staging)
        swap_in(staging, target, make_staging, keep_existing=keep_existing,
                check_replaceable=lambda existing: check_replaceable(existing, command, force, option=option))
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise _not_written(out, exc) from exc
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _not_written(out: str | Path, exc: OSError) -> OutputError:
    where = f" ({exc.filename})" if exc.filename else ""
    return OutputError(f"{out}: could not be written: {exc.strerror or exc}{where}; nothing there was changed")


def guard_output_file(out: str | Path, inputs: Iterable[str | Path | None], command: str,
                      option: str = "--out", force: bool = False) -> Path:
    """The rule for a single output file (``evaluate --out metrics.json``).

    Refused: a folder; a path equal to or inside an input; a name too long; an existing file that is not
    a JSON object scrapbench wrote (key ``written_by``), or one another scrapbench command wrote unless
    ``force``. Returns the resolved path.
    """
    path = Path(out)
    check_no_overlap(path, inputs, option=option)
    check_path(path, option=option)
    if path.is_dir():
        raise OutputError(f"{option} {out}: is a folder; give a file name such as metrics.json")
    if path.exists():
        writer = _read_written_by(path)
        if writer is None or not writer.startswith("scrapbench "):
            raise OutputError(f"{option} {out}: file exists and was not written by `scrapbench {command}`; "
                              f"choose a new file name")
        _check_same_command(out, writer, command, force, option)
    return _resolve(path)
