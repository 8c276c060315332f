"""Seed-independent runs are computed once: later seeds copy the finished run of an earlier one.

A method whose result cannot depend on the seed for a given config (``AnomalyMethod.seed_independent``:
e.g. zero-shot WinCLIP with pretrained weights: nothing drawn, nothing initialised at random) gives the
same maps for every seed, so computing it again per seed only costs time. ``run_one`` looks, under the
run's lease, for a finished run of the same method whose identity differs from the one asked for in the
seed alone (its "twin"), and copies it into the new run's staging folder. The copy's ``run.json``
carries its own seed and identity (so resuming treats it as any finished run) and ``reused_from``
(the seed, attempt and folder that were computed); the report marks such rows (°), and their ± is
then an honest 0 from one distinct run.
"""

from __future__ import annotations

import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from scrapbench.run.provenance import without_seed
from scrapbench.storage.atomic import atomic_write_json
from scrapbench.storage.run_folder import RunFolderError, is_finished, read_finished_run, read_json_record


def find_seed_twin(directory: Path, identity: dict[str, Any]) -> tuple[Path, dict[str, Any]] | None:
    """A finished run beside ``directory`` (``…/<method>/seed<k>``) whose identity equals ``identity``
    except for the seed, and its run record; the lowest seed when there are several, ``None`` if none."""
    wanted = without_seed(identity)
    candidates = []
    for folder in directory.parent.glob("seed*"):
        seed = folder.name[len("seed"):]
        if folder == directory or not seed.isdigit() or folder.is_symlink() or not is_finished(folder):
            continue
        try:
            record, _ = read_finished_run(folder)
        except RunFolderError:
            continue  # unusable: never copied; that run's own resume reports it
        recorded = record.get("identity")
        if isinstance(recorded, dict) and without_seed(recorded) == wanted:
            candidates.append((int(seed), folder, record))
    if not candidates:
        return None
    _, folder, record = min(candidates, key=lambda item: item[0])
    return folder, record


def copy_seed_twin(twin: Path, twin_record: dict[str, Any], identity: dict[str, Any], staging: Path,
                   attempt: str) -> dict[str, Any]:
    """Copy the finished run ``twin`` into the empty ``staging`` folder as the run ``identity`` names;
    ``run.json`` last. Returns the (copied) metrics."""
    for entry in twin.iterdir():
        if entry.name == "run.json" or entry.is_symlink():
            continue
        if entry.is_dir():  # a link inside is copied as a link, never followed out of the run folder
            shutil.copytree(entry, staging / entry.name, symlinks=True)
        else:
            shutil.copy2(entry, staging / entry.name)
    computed = twin_record.get("reused_from") or {"seed": twin_record.get("seed"),
                                                  "attempt": twin_record.get("attempt"), "run": twin.name}
    record = {**twin_record, "seed": identity["seed"], "identity": identity, "attempt": attempt,
              "reused_from": computed, "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    metrics = read_json_record(staging / "metrics.json")
    atomic_write_json(staging / "run.json", record)
    return metrics
