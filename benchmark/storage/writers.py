"""Folders owned by the process writing them, and the one sweep that removes those of dead processes.

A folder that is written for a while and then published or deleted (an ``--out`` being staged, a
Ray worker's scratch folder) carries a writer record, :data:`WRITER_FILE`: host, pid and the
process's start time. A killed process leaves its folder behind; a later process removes it
(:func:`remove_abandoned`) only when its writer is gone: on this host, no such pid any more, or the
pid now belongs to a process started later; on another host (a shared disk, or a container whose
host name changed on restart), when nothing was written in it for a week. A folder without a
readable record is never touched: its name alone does not make it scrapbench's.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

WRITER_FILE = ".scrapbench-writer"
# A folder made on another host cannot be checked by pid: it counts as abandoned only when nothing
# was written into it for this long.
FOREIGN_STALE_S = 7 * 24 * 3600


def _process_start(pid: int) -> float | None:
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None


def make_owned_folder(parent: Path, prefix: str) -> Path:
    """A new folder ``parent/<prefix><random>`` (readable like any other) holding this process's writer record."""
    parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    folder.chmod(0o755)  # mkdtemp makes it private; a published folder should read like any other
    writer = {"pid": os.getpid(), "host": socket.gethostname(), "process_start": _process_start(os.getpid()),
              "created": time.time()}
    (folder / WRITER_FILE).write_text(json.dumps(writer))
    return folder


def release(folder: Path) -> None:
    """Remove the writer record from ``folder`` (before it is published under its final name)."""
    (folder / WRITER_FILE).unlink()


def writer_is_gone(folder: Path) -> bool:
    """Whether the process recorded in ``folder`` is gone (see the module docstring); False without a record."""
    try:
        writer = json.loads((folder / WRITER_FILE).read_text())
        pid, host = int(writer["pid"]), str(writer["host"])
        started = writer.get("process_start")
    except (OSError, ValueError, KeyError, TypeError):
        return False  # not one of ours, or unreadable: leave it alone
    if host != socket.gethostname():
        return time.time() - _last_write(folder) > FOREIGN_STALE_S
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


def remove_abandoned(parent: Path, pattern: str) -> list[Path]:
    """Remove the folders in ``parent`` whose names match the glob ``pattern`` and whose writer is gone."""
    removed: list[Path] = []
    try:
        entries = sorted(parent.glob(pattern))
    except OSError:
        return removed
    for entry in entries:
        if entry.is_symlink() or not entry.is_dir():
            continue
        if writer_is_gone(entry):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


@contextmanager
def scratch_folder(parent: Path, prefix: str) -> Iterator[Path]:
    """An empty folder to work in, removed afterwards; scratch folders of dead processes are removed first.

    The yielded folder lies inside an owned folder (:func:`make_owned_folder`), so it holds no writer
    record of its own and can be archived as it is.
    """
    remove_abandoned(parent, f"{prefix}*")
    owned = make_owned_folder(parent, prefix)
    try:
        work = owned / "scratch"
        work.mkdir()
        yield work
    finally:
        shutil.rmtree(owned, ignore_errors=True)
