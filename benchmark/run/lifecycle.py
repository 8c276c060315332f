"""The life of one run, :func:`run_one`: every executor computes a run through it.

1. reuse a finished run whose recorded identity is the plan's (another identity was refused when the grid was
   planned, ``scrapbench.run.plan``);
2. take the run's lease (``scrapbench.run.lease``), or report the run as busy when another process holds it;
3. compute it into a hidden staging folder, or copy a seed twin's run (``scrapbench.run.seed_reuse``), and
   move the folder into place whole (``scrapbench.storage.run_folder``): ``run.json`` when it finished,
   ``error.json`` when the method failed.

A full disk (or quota) fails that run alone: its partial files are removed, ``error.json`` names the file that could
not be written when there is room for it, and the grid goes on with the next run.

So an interrupted grid loses at most the runs in progress, two processes never compute the same run nor delete
each other's work, and a crashed process's runs are picked up by the next one. Where the files are computed is
the ``compute`` argument (``scrapbench.run.compute.Compute``): here by default, on Ray workers for the Ray executor.
"""

from __future__ import annotations

import dataclasses
import errno
import shutil
import traceback
from datetime import datetime, timezone
from pathlib import Path

from scrapbench.datasets.types import Dataset
from scrapbench.run.compute import Compute, one_line_error
from scrapbench.run.lease import try_lease, wait_for_lease
from scrapbench.run.plan import RunOptions, RunPlan, RunResult, reusable_result
from scrapbench.run.seed_reuse import copy_seed_twin, find_seed_twin
from scrapbench.storage.atomic import atomic_write_json
from scrapbench.storage.run_folder import (
    RunFolderError,
    attempt_token,
    check_run_folder,
    is_finished,
    new_staging_dir,
    place_run_folder,
    read_json_record,
    remove_stale_attempts,
)

#: ``run_one(retry=RETRY_ANY)``: recompute whatever failed run is found (the default).
RETRY_ANY = "*"

_HERE = Compute()


def run_one(dataset: Dataset, plan: RunPlan, options: RunOptions, *, wait: bool = False,
            retry: str | None = RETRY_ANY, compute: Compute = _HERE) -> RunResult:
    """The whole life of one planned run (see the module docstring); never computes a run another process holds.

    ``wait=False`` returns a ``busy`` result at once when another process holds the lease;
    ``wait=True`` waits for the lease, then returns what the holder left (``elsewhere=True``) or
    computes the run if the holder died without finishing it. ``retry`` says which failed attempt
    found in the run's folder is recomputed: any (``RETRY_ANY``), or only the one with this attempt
    token (``None``: none) — a grid passes the failure it found at its start, so a failure that
    another process records meanwhile is reported rather than computed a second time.
    """
    try:
        found = reusable_result(plan, options)
        if found is not None:  # after waiting: the holder finished it meanwhile
            return dataclasses.replace(found, elsewhere=wait)
        lease = wait_for_lease(plan.directory) if wait else try_lease(plan.directory)
        if lease is None:
            return RunResult(plan.method, plan.seed, plan.directory, "busy")
        with lease:
            found = reusable_result(plan, options)
            if found is not None:
                return dataclasses.replace(found, elsewhere=wait)
            failed = failed_attempt(plan.directory)
            if failed is not None and retry not in (RETRY_ANY, failed):
                record = read_json_record(plan.directory / "error.json")
                return RunResult(plan.method, plan.seed, plan.directory, "failed", error=record.get("message"),
                                 elsewhere=True, attempt=failed)
            return _compute_and_place(dataset, plan, options, compute)
    except RunFolderError as exc:
        return RunResult(plan.method, plan.seed, plan.directory, "failed", error=str(exc))
    except OSError as exc:  # the lease, staging or placing the folder: this run fails, the grid goes on
        return RunResult(plan.method, plan.seed, plan.directory, "failed", error=_write_error(exc, plan.directory))


def failed_attempt(directory: Path) -> str | None:
    """The attempt token of the failed run recorded at ``directory`` (an error.json, no run.json)."""
    if is_finished(directory) or not (directory / "error.json").is_file():
        return None
    try:
        return str(read_json_record(directory / "error.json").get("attempt"))
    except RunFolderError:
        return None


def _compute_and_place(dataset: Dataset, plan: RunPlan, options: RunOptions, compute: Compute) -> RunResult:
    """Under the lease: clear dead attempts, compute (or copy a seed twin) in a staging folder, move it into place."""
    remove_stale_attempts(plan.directory)
    if plan.directory.exists() or plan.directory.is_symlink():
        check_run_folder(plan.directory)  # it will be replaced: it must be one of ours
    staging = new_staging_dir(plan.directory)
    attempt = attempt_token()
    try:
        twin = find_seed_twin(plan.directory, plan.identity) if plan.seed_independent else None
        if twin is None:
            result = _attempt(dataset, plan, options, staging, attempt, compute)
        else:
            metrics = copy_seed_twin(*twin, plan.identity, staging, attempt)
            result = RunResult(plan.method, plan.seed, staging, "done", metrics, attempt=attempt,
                               reused_from=int(twin[1]["seed"]))
        if _recorded(staging):  # else the failure could not be recorded: the earlier attempt stays as it was
            place_run_folder(staging, plan.directory)
    finally:
        if staging.exists():  # interrupted, or the move failed: the attempt leaves nothing behind
            shutil.rmtree(staging, ignore_errors=True)
    return dataclasses.replace(result, directory=plan.directory)


def _attempt(dataset: Dataset, plan: RunPlan, options: RunOptions, folder: Path, attempt: str,
             compute: Compute) -> RunResult:
    """Compute the run's files into ``folder``; a failure of the method is recorded in ``error.json`` instead.

    A failure of the method (building it included: e.g. a bad weights file) is returned as a ``failed`` result;
    only KeyboardInterrupt propagates. On a full disk the partial files are removed first, so that the record
    fits; when even the record cannot be written, ``folder`` is left empty and the result alone says why.
    """
    try:
        metrics = compute.files(dataset, plan, options, folder, attempt)
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # one broken method must not stop the others; the record says why
        full = _disk_full(exc)
        if full is not None:
            _empty(folder)
        message = one_line_error(exc) if full is None else _write_error(full, plan.directory, folder)
        try:
            atomic_write_json(folder / "error.json", {
                "method": plan.method, "seed": plan.seed, "message": message, "error": repr(exc),
                "traceback": traceback.format_exc(), "identity": plan.identity, "attempt": attempt,
                "date": datetime.now(timezone.utc).isoformat(timespec="seconds")})
        except OSError as record_error:
            _empty(folder)
            message = f"{message} (and no error.json: {_write_error(record_error, plan.directory, folder)})"
        return RunResult(plan.method, plan.seed, folder, "failed", error=message, attempt=attempt)
    return RunResult(plan.method, plan.seed, folder, "done", metrics, attempt=attempt)


#: errno values of a full disk or an exhausted quota.
_DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})


def _disk_full(exc: BaseException) -> OSError | None:
    """The disk-full OSError that caused ``exc`` (``exc`` itself, or one in its chain of causes), if any."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in _DISK_FULL:
            return current
        current = current.__cause__ or current.__context__
    return None


def _write_error(exc: OSError, directory: Path, staging: Path | None = None) -> str:
    """One line naming the file that could not be written (under its final name in ``directory``: a path inside
    the staging folder is shown where it would have been) and what to do."""
    where = str(exc.filename) if exc.filename is not None else None
    if where is not None and staging is not None and Path(where).is_relative_to(staging):
        where = str(directory / Path(where).relative_to(staging))
    reason = exc.strerror or one_line_error(exc)
    if exc.errno in _DISK_FULL:
        place = where or f"the run folder {directory}"
        return f"disk full: could not write {place} ({reason}); this attempt's partial files were removed; " \
               f"free space and run the same command again"
    return f"could not write {where or directory} ({reason})"


def _empty(folder: Path) -> None:
    """Remove everything inside ``folder`` (a staging folder: the attempt's partial files)."""
    for entry in list(folder.iterdir()) if folder.is_dir() else []:
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def _recorded(staging: Path) -> bool:
    """Whether the staging folder holds a record (``run.json`` or ``error.json``) and can be put in place."""
    return (staging / "run.json").is_file() or (staging / "error.json").is_file()
