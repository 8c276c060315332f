"""Output folders: scrapbench replaces only what it wrote, never its own input, and never half-way.

The rule every ``--out`` follows (``synth``, ``prepare``, ``predict``, ``report``, ``evaluate``):

- An existing, non-empty output folder is replaced only when it holds the marker file
  :data:`MARKER`, which scrapbench writes into every folder it creates. Anything else is refused:
  a user's folder is never emptied. (Delete the marker to protect a folder from being replaced.)
- An output equal to, inside, or containing an input of the command is refused (paths are compared
  after resolving symbolic links).
- A new folder is written into a hidden staging folder beside it and swapped in at the end, so the
  old result stays whole until the new one is complete, and an interrupted command leaves the old
  result as it was. Staging folders left by a killed process are removed later, but only when the
  process that made them (recorded inside) is gone.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

MARKER = ".scrapbench-output"
_STAGING_TAG = ".scrapbench-staging-"
_WRITER_FILE = ".scrapbench-writer"
# A staging folder made on another machine (shared disk; a container's host name changes on restart)
# cannot be checked by pid: it counts as abandoned only when nothing was written into it for this long.
_FOREIGN_STALE_S = 7 * 24 * 3600


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


def check_replaceable(out: str | Path, option: str = "--out") -> None:
    """Refuse an existing file, or an existing non-empty folder without scrapbench's marker."""
    path = Path(out)
    if path.is_dir():
        if is_scrapbench_output(path) or not any(path.iterdir()):
            return
        raise OutputError(f"{option} {out}: folder exists and was not written by scrapbench (no {MARKER} file); "
                          f"choose a new folder, or empty this one yourself")
    if path.exists() or path.is_symlink():
        raise OutputError(f"{option} {out}: exists and is not a folder; choose a new folder")


def guard_output(out: str | Path, inputs: Iterable[str | Path | None] = (), allow_inside: bool = False,
                 option: str = "--out") -> Path:
    """Both checks above; returns ``out`` with symbolic links resolved (the folder actually written)."""
    check_no_overlap(out, inputs, allow_inside=allow_inside, option=option)
    check_replaceable(out, option=option)
    return _resolve(out)


def write_marker(folder: str | Path, command: str) -> None:
    """Mark ``folder`` as written by scrapbench (so a later run of ``command`` may replace it)."""
    doc = {"written_by": f"scrapbench {command}",
           "note": "scrapbench may replace this folder; delete this file to protect the folder from that"}
    (Path(folder) / MARKER).write_text(json.dumps(doc, indent=2) + "\n")


def _process_start(pid: int) -> float | None:
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None


def _make_staging(target: Path) -> Path:
    """A hidden folder beside ``target`` that records which process writes it."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}{_STAGING_TAG}{os.getpid()}-", dir=target.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; the final folder should read like any other
    writer = {"pid": os.getpid(), "host": socket.gethostname(), "process_start": _process_start(os.getpid()),
              "created": time.time()}
    (staging / _WRITER_FILE).write_text(json.dumps(writer))
    return staging


def _writer_is_gone(staging: Path) -> bool:
    """Whether the process that made ``staging`` is gone: on this host, no such pid any more (or the pid
    now belongs to a process started later); on another host, nothing written for a week."""
    try:
        writer = json.loads((staging / _WRITER_FILE).read_text())
        pid, host = int(writer["pid"]), str(writer["host"])
        started = writer.get("process_start")
    except (OSError, ValueError, KeyError, TypeError):
        return False  # not one of ours, or unreadable: leave it alone
    if host != socket.gethostname():
        return time.time() - _last_write(staging) > _FOREIGN_STALE_S
    now_start = _process_start(pid)
    if now_start is None:
        import psutil

        return not psutil.pid_exists(pid)
    return started is not None and now_start > float(started) + 1.0


def _last_write(folder: Path) -> float:
    """The newest modification time of ``folder`` and the folders below it (a live writer adds files)."""
    newest = 0.0
    for current, _, _ in os.walk(folder):
        try:
            newest = max(newest, os.stat(current).st_mtime)
        except OSError:
            continue
    return newest


def clean_stale_staging(parent: str | Path) -> list[Path]:
    """Remove staging folders in ``parent`` left by scrapbench processes that are gone; returns them."""
    parent = Path(parent)
    removed = []
    try:
        entries = list(parent.iterdir())
    except OSError:
        return removed
    for entry in entries:
        if not (entry.name.startswith(".") and _STAGING_TAG in entry.name) or entry.is_symlink() \
                or not entry.is_dir():
            continue
        if _writer_is_gone(entry):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


def _publish(staging: Path, target: Path, keep_existing: bool, option: str) -> None:
    (staging / _WRITER_FILE).unlink()
    if keep_existing and target.exists():
        shutil.rmtree(staging)  # someone else finished the same output first: theirs stays
        return
    if not target.exists():
        try:
            os.rename(staging, target)
            return
        except OSError:
            if keep_existing and target.exists():
                shutil.rmtree(staging)
                return
            raise
    # Check again right before replacing: the folder may have changed while we were writing.
    check_replaceable(target, option=option)
    trash = _make_staging(target)
    os.rename(target, trash / "replaced")
    try:
        os.rename(staging, target)
    except OSError:
        os.rename(trash / "replaced", target)  # put the old result back
        shutil.rmtree(trash, ignore_errors=True)
        raise
    shutil.rmtree(trash, ignore_errors=True)


@contextmanager
def staged_output(out: str | Path, command: str, inputs: Iterable[str | Path | None] = (),
                  allow_inside: bool = False, keep_existing: bool = False, option: str = "--out") -> Iterator[Path]:
    """Write an output folder atomically: yields an empty staging folder, swaps it in for ``out`` on success.

    ``out`` is checked first (:func:`guard_output`); on error the staging folder is removed and
    ``out`` stays as it was. ``keep_existing``: if ``out`` exists when the staging folder is done,
    keep it and drop ours (a cache filled by two processes at once). Returns nothing; the final folder
    is ``out`` with symbolic links resolved.
    """
    inputs = list(inputs)
    target = guard_output(out, inputs, allow_inside=allow_inside, option=option)
    clean_stale_staging(target.parent)
    staging = _make_staging(target)
    try:
        yield staging
        write_marker(staging, command)
        _publish(staging, target, keep_existing, option)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def guard_output_file(out: str | Path, inputs: Iterable[str | Path | None], command: str,
                      option: str = "--out") -> Path:
    """The rule for a single output file (``evaluate --out metrics.json``).

    Refused: a folder; a path equal to or inside an input; an existing file that is not a JSON object
    scrapbench ``command`` wrote (key ``written_by``). Returns the resolved path.
    """
    path = Path(out)
    check_no_overlap(path, inputs, option=option)
    if path.is_dir():
        raise OutputError(f"{option} {out}: is a folder; give a file name such as metrics.json")
    if path.exists():
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError):
            doc = None
        if not (isinstance(doc, dict) and doc.get("written_by") == f"scrapbench {command}"):
            raise OutputError(f"{option} {out}: file exists and was not written by `scrapbench {command}`; "
                              f"choose a new file name")
    return _resolve(path)
