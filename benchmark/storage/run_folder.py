"""The layout of a results folder, and how a run folder is staged and put in place.

    OUT/<dataset>/<preset>/<method>/seed<k>/
        run.json        # written last: its presence marks a finished run
        metrics.json    # pooled pixel metrics (+ image-level, breakdowns)
        per_image.csv   # one row per test image
        maps.npz        # optional: anomaly maps as float16
        model/          # fitted state (method.json + state.safetensors + state.json), for `scrapbench predict`
        work/           # the method's scratch space (training artefacts)
        error.json      # instead of run.json when the run failed: the error and its traceback
    OUT/<dataset>/<preset>/<method>/.seed<k>.lease   # the run's lease (see scrapbench.run.lease)
"""

from __future__ import annotations

import glob
import hashlib
import json
import math
import os
import re
import secrets
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from scrapbench.metrics.summary import HEADLINE_METRICS
from scrapbench.storage.atomic import swap_in


class RunFolderError(ValueError):
    """A run folder or record that scrapbench cannot use as it is; the message names the path and the fix."""


# What the runner writes at the top of a run folder; anything else means someone else's folder.
RUN_FOLDER_ENTRIES = frozenset({"run.json", "error.json", "metrics.json", "metrics_state.npz", "per_image.csv",
                                "maps.npz", "model", "work"})
_UNSAFE = re.compile(r"[^A-Za-z0-9._+=@-]+")
#: Records nesting deeper than this are refused as corrupt: the runner writes a few levels.
MAX_RECORD_DEPTH = 100
#: The headline values of ``metrics.json``: each a fraction in [0, 1], or null where undefined on the test set.


def path_component(text: str, fallback: str = "dataset") -> str:
    """``text`` as one safe folder name: no separators, no ``..``, no leading dot, no control characters.

    ``../../x`` becomes ``x`` and ``/abs/path`` becomes ``abs-path``: a name from a user's file
    (``dataset.yaml``) must never place results outside the results folder.
    """
    parts = [p for p in re.split(r"[/\\]+", str(text)) if p not in ("", ".", "..")]
    name = _UNSAFE.sub("_", "-".join(parts)).lstrip(".")[:100]
    return name or fallback


_SAFE_TOKEN = re.compile(r"^[A-Za-z0-9._-]+$")
_NUMBER_TOKEN = re.compile(r"^-?[0-9][0-9.]*$")
_MAX_FOLDER = 100


def method_folder(name: str) -> str:
    """The folder of method ``name`` in a results folder: the name itself for a plain name; for a variant,
    ``base@field=value@...`` where every value is a plain token (``winclip_plus@k_shot=2``, lists as
    ``3+9``), otherwise (or when too long) ``base@`` and a digest of the name: one safe path component, and
    distinct variants never share a folder."""
    from scrapbench.core.variants import parse_name

    parsed = parse_name(name)
    if parsed is None:
        return name
    base, fields = parsed
    tokens = [f"{field}={_token(value)}" for field, value in fields.items()]
    folder = "@".join([base, *tokens])
    if all(_token(v) is not None for v in fields.values()) and len(folder) <= _MAX_FOLDER \
            and path_component(folder, fallback="") == folder:
        return folder
    digest = hashlib.sha256(name.encode("utf-8")).hexdigest()[:12]
    return f"{path_component(base, 'method')[:_MAX_FOLDER - 14]}@h{digest}"


def _token(value: Any) -> str | None:
    """A value as a folder-name token, or ``None`` when it has none that cannot be confused with another value."""
    if isinstance(value, (bool, int, float)) or value is None:
        from scrapbench.core.variants import format_value

        text = format_value(value)
        return text if _SAFE_TOKEN.match(text) else None
    if isinstance(value, (list, tuple)):
        items = [_token(item) for item in value]
        if any(item is None or not _NUMBER_TOKEN.match(item) for item in items):
            return None  # only lists of plain numbers: "3+9"
        return "+".join(items)  # type: ignore[arg-type]
    from scrapbench.core.variants import format_value

    text = str(value)
    # A string that reads as a number, a bool or null would look like one: a digest instead.
    return text if _SAFE_TOKEN.match(text) and format_value(text) == text else None


def run_dir(out: str | Path, dataset: str, preset: str, method: str, seed: int) -> Path:
    """``OUT/<dataset>/<preset>/<method folder>/seed<k>`` (:func:`method_folder`: a sweep variant's name becomes one
    safe folder name); every part must already be one safe folder name, and none may be a symbolic link: a link
    would send the run's files (and their replacement) outside ``OUT``."""
    method = method_folder(method)
    for part in (dataset, preset, method):
        if path_component(part, fallback="") != part:
            raise RunFolderError(f"{part!r} cannot be a folder name in a results folder; use {path_component(part)!r}")
    directory = Path(out) / dataset / preset / method / f"seed{seed}"
    check_no_links(directory)
    return directory


def check_no_links(directory: Path) -> None:
    """Refuse a run folder whose ``<dataset>``, ``<preset>``, ``<method>`` or ``seed<k>`` part is a symbolic link."""
    for part in reversed((directory, *directory.parents[:3])):
        if part.is_symlink():
            raise RunFolderError(f"{part}: a symbolic link (to {part.resolve()}); results are written only inside "
                                 f"the results folder: replace the link with a folder, or choose another --out")


def is_finished(directory: Path) -> bool:
    return (directory / "run.json").is_file()


def read_json_record(path: Path) -> dict[str, Any]:
    """A JSON object written by the runner, or :class:`RunFolderError` naming the file."""
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise RunFolderError(f"{path}: missing") from exc
    except RecursionError as exc:
        raise RunFolderError(f"{path}: corrupt (nested too deeply)") from exc
    except (OSError, UnicodeDecodeError, ValueError) as exc:  # ValueError: bad JSON, an integer of too many digits
        raise RunFolderError(f"{path}: corrupt ({exc})") from exc
    if not isinstance(record, dict):
        raise RunFolderError(f"{path}: corrupt (expected a JSON object)")
    if _deeper_than(record, MAX_RECORD_DEPTH):
        raise RunFolderError(f"{path}: corrupt (nested more than {MAX_RECORD_DEPTH} levels deep)")
    return record


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether objects and lists in ``value`` nest more than ``limit`` levels (walked without recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def read_finished_run(directory: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """``run.json`` and ``metrics.json`` of a finished run, checked before it is resumed, copied or pooled.

    :class:`RunFolderError` names the file and the field when a value is not what the runner writes:
    the run's seed is its folder's (``seed<k>``), every headline metric (:data:`HEADLINE_METRICS`) is null
    or a finite number in [0, 1] (at least one is set), and no number in ``metrics.json`` is NaN or
    infinite. The run's identity is checked where it is compared.
    """
    record = read_json_record(directory / "run.json")
    metrics = read_json_record(directory / "metrics.json")
    for path, problem in ((directory / "run.json", _record_problem(directory, record)),
                          (directory / "metrics.json", _metrics_problem(metrics))):
        if problem:
            raise RunFolderError(f"{path}: {problem}")
    return record, metrics


def _record_problem(directory: Path, record: dict[str, Any]) -> str | None:
    """What in ``run.json`` the runner would not have written (the first thing found), or None."""
    seed = record.get("seed")
    if not _is_int(seed) or directory.name != f"seed{seed}":
        return f"seed is {_shown(seed)}, but the run's folder is {directory.name}"
    if not isinstance(record.get("method"), str) or not record["method"]:
        return f"method is {_shown(record.get('method'))}, not a method name"
    for key, kind, what in (("preset", str, "a string"), ("dataset", dict, "an object"), ("config", dict, "an object"),
                            ("timings", dict, "an object"), ("cost", dict, "an object"), ("weights", dict, "an object"),
                            ("versions", dict, "an object"), ("determinism", (dict, type(None)), "an object")):
        if key in record and not isinstance(record[key], kind):
            return f"{key} is {_shown(record[key])}, not {what}"
    dataset, config, timings = record.get("dataset", {}), record.get("config", {}), record.get("timings", {})
    cost = {key: value for key, value in record.get("cost", {}).items() if key != "flops_error"}
    checks = [("suites", record.get("suites", []), _is_string_list),
              ("dataset.name", dataset.get("name", ""), lambda v: isinstance(v, str)),
              ("dataset.class_names", dataset.get("class_names", []), _is_string_list),
              ("config.k_shot", config.get("k_shot"), lambda v: v is None or (_is_int(v) and v >= 0)),
              *((f"timings.{key}", value, lambda v: v is None or (_is_number(v) and v >= 0))
                for key, value in timings.items()),
              # run.json's cost (scrapbench.run.cost): counts and megabytes, or null where not measured
              *((f"cost.{key}", value, lambda v: v is None or (_is_number(v) and v >= 0))
                for key, value in cost.items()),
              ("cost.flops_error", record.get("cost", {}).get("flops_error"),
               lambda v: v is None or isinstance(v, str))]
    for name, value, valid in checks:
        if not valid(value):
            return f"{name} is {_shown(value)}, not what scrapbench writes there"
    return None


def _metrics_problem(metrics: dict[str, Any]) -> str | None:
    """What in ``metrics.json`` cannot be pooled (the first thing found), or None."""
    for name in HEADLINE_METRICS:
        value = metrics.get(name)
        if value is not None and not (_is_number(value) and 0 <= value <= 1):
            return f"{name} is {_shown(value)}, not a number in [0, 1]"
    if all(metrics.get(name) is None for name in HEADLINE_METRICS):
        return f"holds no metric value ({', '.join(HEADLINE_METRICS)})"
    stack: list[tuple[str, Any]] = list(metrics.items())
    while stack:
        name, value = stack.pop()
        if isinstance(value, float) and not math.isfinite(value):
            return f"{name} is {_shown(value)}"
        children = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
        stack.extend((f"{name}.{key}", child) for key, child in children)
    return None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    """A finite JSON number (true and false are not numbers)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_string_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def _shown(value: Any) -> str:
    """``value`` as JSON, cut short (a message names it, it does not reproduce it)."""
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


#: Folders of an MLflow store (``scrapbench.track``: its artifacts hold copies of run records) are not results.
TRACKER_FOLDERS = frozenset({"mlartifacts", "mlruns"})


def _visible(path: Path, out: Path) -> bool:
    """False below hidden folders (staging folders and replaced attempts) and an MLflow store's folders."""
    return not any(part.startswith(".") or part in TRACKER_FOLDERS for part in path.relative_to(out).parent.parts)


def iter_finished_runs(out: str | Path) -> Iterator[Path]:
    """Every finished run folder (one with a ``run.json``) below ``out``, in path order; read them with
    :func:`read_finished_run`."""
    out = Path(out)
    for path in sorted(out.glob("**/run.json")):
        if _visible(path, out):
            yield path.parent


def iter_failed_runs(out: str | Path) -> Iterator[tuple[Path, dict[str, Any]]]:
    """Yield (run folder, error.json content) for every failed run below ``out`` (no run.json beside)."""
    out = Path(out)
    for path in sorted(out.glob("**/error.json")):
        if _visible(path, out) and not is_finished(path.parent):
            try:
                record = read_json_record(path)
            except RunFolderError as exc:
                record = {"message": str(exc)}
            yield path.parent, record


def ensure_writable_dir(path: Path) -> None:
    """Create ``path`` and check that files can be written in it, or raise OSError naming it."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise OSError(exc.errno, f"cannot write results here ({exc.strerror or exc}); choose another --out",
                      str(path)) from exc


# -- the life of a run folder on disk ----------------------------------------------------------
#
# A run is computed in a hidden staging folder beside its final place and moved there whole when it
# is complete (finished or failed), by whoever holds the run's lease (``scrapbench.run.lease``). Readers
# never see half a run, and an earlier attempt stays in place until its replacement is complete.


def attempt_token() -> str:
    """Unique per attempt and readable in a folder listing: host, process, random suffix."""
    return f"{path_component(socket.gethostname(), 'host')}-{os.getpid()}-{secrets.token_hex(3)}"


def new_staging_dir(directory: Path) -> Path:
    """A fresh, empty, hidden folder beside ``directory`` to compute its run in."""
    staging = directory.with_name(f".{directory.name}.tmp-{attempt_token()}")
    staging.mkdir(parents=True)
    return staging


def remove_stale_attempts(directory: Path) -> None:
    """Delete staging folders and replaced runs left beside ``directory`` by crashed attempts.

    Only the lease holder may call this: with the lease held, no other attempt is alive here.
    """
    for prefix in (f".{directory.name}.tmp-", f".{directory.name}.old-"):
        for stale in directory.parent.glob(f"{glob.escape(prefix)}*"):
            if stale.is_dir() and not stale.is_symlink():
                shutil.rmtree(stale)


def check_run_folder(directory: Path) -> None:
    """Raise RunFolderError unless ``directory`` holds only what the runner writes in a run folder."""
    if directory.is_symlink() or not directory.is_dir():
        raise RunFolderError(f"{directory}: not a run folder scrapbench wrote; move it away from the results folder")
    foreign = sorted(p.name for p in directory.iterdir()
                     if p.name not in RUN_FOLDER_ENTRIES and not p.name.startswith("."))
    if foreign:
        raise RunFolderError(f"{directory}: holds {foreign[:5]}, which scrapbench did not write; move them away "
                             f"before this run is recomputed")


def _old_attempt_dir(directory: Path) -> Path:
    """Where the attempt being replaced goes for the moment of the swap (removed by :func:`remove_stale_attempts`)."""
    aside = directory.with_name(f".{directory.name}.old-{attempt_token()}")
    aside.mkdir()
    return aside


def place_run_folder(staging: Path, directory: Path) -> None:
    """Move a complete run folder to ``directory`` (:func:`scrapbench.storage.atomic.swap_in`), replacing an
    earlier attempt there.

    ``staging`` may lie anywhere (e.g. a worker's local temp folder): it is first moved beside
    ``directory``, so the final step is always a rename on one filesystem. The caller holds the lease.
    """
    check_no_links(directory)  # again: a link may have been put in place while the run was computed
    directory.parent.mkdir(parents=True, exist_ok=True)
    if staging.parent.resolve() != directory.parent.resolve():
        beside = directory.with_name(f".{directory.name}.tmp-{attempt_token()}")
        shutil.move(str(staging), str(beside))
        staging = beside
    swap_in(staging, directory, _old_attempt_dir, check_replaceable=check_run_folder)
