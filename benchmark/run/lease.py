"""Per-run leases: at most one process computes a run, wherever the processes run.

A lease is an OS file lock (``flock`` through the ``filelock`` package) on a hidden file beside the
run folder, ``OUT/<dataset>/<preset>/<method>/.seed<k>.lease``, held for the run's whole life. The
kernel drops it when its holder exits, crashes included, so a dead holder's lease is free again at
once and nothing has to guess whether a holder is still alive. The lease file stays in place on
release (deleting it would let a waiter lock the old inode while a newcomer locks a new one).

Processes on several machines share leases through a shared filesystem that supports ``flock``
(NFSv4, Lustre, CephFS, local disks); where it does not, ``filelock`` falls back to a soft lock file.
"""

from __future__ import annotations

from pathlib import Path

from filelock import FileLock, Timeout


class RunLease:
    """A held lease on one run folder; release it with :meth:`release` or a ``with`` block."""

    def __init__(self, lock: FileLock, run_directory: Path) -> None:
        self._lock = lock
        self.run_directory = run_directory

    @property
    def path(self) -> Path:
        return Path(self._lock.lock_file)

    def release(self) -> None:
        self._lock.release()

    def __enter__(self) -> RunLease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def lease_path(run_directory: Path) -> Path:
    """The lock file of a run folder: a hidden sibling, so the folder itself can be replaced whole."""
    return run_directory.with_name(f".{run_directory.name}.lease")


def try_lease(run_directory: Path) -> RunLease | None:
    """The lease of ``run_directory`` if nobody holds it, else ``None`` (never waits)."""
    return _acquire(run_directory, timeout=0)


def wait_for_lease(run_directory: Path, poll_s: float = 0.5) -> RunLease:
    """The lease of ``run_directory``, waiting for as long as another process holds it."""
    lease = _acquire(run_directory, timeout=-1, poll_s=poll_s)
    assert lease is not None  # a blocking acquire returns or raises
    return lease


def _acquire(run_directory: Path, timeout: float, poll_s: float = 0.05) -> RunLease | None:
    path = lease_path(run_directory)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(path, timeout=timeout)
    try:
        lock.acquire(poll_interval=poll_s)
    except Timeout:
        return None
    return RunLease(lock, run_directory)
