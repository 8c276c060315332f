"""Folders owned by the process writing them, and the one sweep that removes those of dead processes.

A folder that is written for a while and then published or deleted (an ``--out`` being staged, a
Ray worker's scratch folder) carries a writer record, :data:`WRITER_FILE`: host, pid and the
process's start time. A killed process leaves its folder behind; a later process removes it
(:func:`remove_abandoned`) only when its writer is gone: on this host, no such pid any more, or the
pid now belongs to a process started later; on another host (a shared disk, or a container whose
host name changed on restart), when nothing was written in it for a week. A folder without a
record is never touched: its name alone does not make it scrapbench's. The record is written whole (a
full disk leaves no folder behind); an empty or cut record, left by a process that died or hit a full
disk while writing it (older versions), counts as abandoned when the process whose pid the folder's name
carries is gone from this host.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from scrapbench.storage.atomic import atomic_write_text

WRITER_FILE = ".scrapbench-writer"
# A folder made on another host cannot be checked by pid: it counts as abandoned only when nothing
# was written into it for this long.
FOREIGN_STALE_S = 7 * 24 * 3600
# An owned folder's name: the caller's prefix, the writer's pid, mkdtemp's random letters.
_NAMED_PID = re.compile(r"(\d+)-[a-z0-9_]+$")


def _process_start(pid: int) -> float | None:
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None


def make_owned_folder(parent: Path, prefix: str) -> Path:
    """A new folder ``parent/<prefix><pid>-<random>`` (readable like any other) holding this process's writer
    record; where the record cannot be written (a full disk), no folder is left and the OSError names it."""
    parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=parent))
    writer = {"pid": os.getpid(), "host": socket.gethostname(), "process_start": _process_start(os.getpid()),
              "created": time.time()}
    try:
        folder.chmod(0o755)  # mkdtemp makes it private; a published folder should read like any other
        atomic_write_text(folder / WRITER_FILE, json.dumps(writer))
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return folder


def release(folder: Path) -> None:
    """Remove the writer record from ``folder`` (before it is published under its final name)."""
    (folder / WRITER_FILE).unlink()


def writer_is_gone(folder: Path) -> bool:
    """Whether the process recorded in ``folder`` is gone (see the module docstring); False without a record."""
    record = folder / WRITER_FILE
    try:
        text = record.read_bytes()
    except OSError:
        return False  # not one of ours, or unreadable: leave it alone
    try:
        writer = json.loads(text)
        pid, host = int(writer["pid"]), str(writer["host"])
        started = writer.get("process_start")
    except (ValueError, KeyError, TypeError):
        return _named_writer_is_gone(folder, record)  # empty or cut: its writer died or ran out of disk writing it
    if host != socket.gethostname():
        return time.time() - _last_write(folder) > FOREIGN_STALE_S
    return _pid_is_gone(pid, None if started is None else float(started))


def _pid_is_gone(pid: int, started: float | None) -> bool:
    """No process ``pid`` on this host, or one started after ``started`` (the pid was reused)."""
    now_start = _process_start(pid)
    if now_start is None:
        import psutil

        return not psutil.pid_exists(pid)
    return started is not None and now_start > started + 1.0


def _named_writer_is_gone(folder: Path, record: Path) -> bool:
    """For a record that cannot be read: whether the process whose pid ``folder``'s name carries is gone (no such
    pid, or one started after the record was made); False for a name without a pid."""
    match = _NAMED_PID.search(folder.name)
    if match is None:
        return False
    try:
        made = record.stat().st_mtime
    except OSError:
        return False
    return _pid_is_gone(int(match.group(1)), made)


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
