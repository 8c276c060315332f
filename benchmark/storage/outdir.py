"""Output folders: scrapbench replaces only what it wrote, never its own input, and never half-way.

The rule every ``--out`` follows (``synth``, ``prepare``, ``predict``, ``report``, ``evaluate``):

- An existing, non-empty output folder is replaced only when it holds the marker file
  :data:`MARKER`, which scrapbench writes into every folder it creates. Anything else is refused:
  a user's folder is never emptied. (Delete the marker to protect a folder from being replaced.)
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
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from scrapbench.storage.atomic import swap_in
from scrapbench.storage.writers import make_owned_folder, release, remove_abandoned

MARKER = ".scrapbench-output"
STAGING_TAG = ".scrapbench-staging-"


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


def make_staging(target: Path) -> Path:
    """A new hidden folder beside ``target`` that records which process writes it."""
    return make_owned_folder(target.parent, f".{target.name}{STAGING_TAG}")


def clean_stale_staging(parent: str | Path) -> list[Path]:
    """Remove staging folders in ``parent`` left by scrapbench processes that are gone; returns them."""
    return remove_abandoned(Path(parent), f".*{STAGING_TAG}*")


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
    staging = make_staging(target)
    try:
        yield staging
        write_marker(staging, command)
        release(staging)
        swap_in(staging, target, make_staging, keep_existing=keep_existing,
                check_replaceable=lambda existing: check_replaceable(existing, option=option))
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
