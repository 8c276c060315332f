"""A fitted method on disk, written and read without pickles.

    model/
        method.json         format version, registered method name, its class path, config, class
                            names, and the size and SHA-256 of the two state files; written last
        state.safetensors   every tensor of ``method.state_dict()`` under its dotted path
        state.json          the rest of the state (ints, strings, lists, None) with tensor references

Loading never runs code from the folder: the method is looked up by name in the registry (built-ins,
entry points, ``@register_method``) and the stored class path is only compared with the registry's,
never imported; the state files are data formats (see :mod:`scrapbench.storage.state_io`). A folder
of format 1 (an older scrapbench's ``state.pt``, a pickle that may nest further pickles) is refused,
not read. Every refusal is a :class:`~scrapbench.core.method.ModelFolderError` with one line naming
the file and the fix.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from scrapbench import __version__
from scrapbench.core.method import AnomalyMethod, ModelFolderError, config_from_dict, config_to_dict
from scrapbench.storage.atomic import atomic_write_json
from scrapbench.storage.state_io import (
    StateFormatError,
    join_state,
    read_tensors,
    split_state,
    write_tensors,
)

FORMAT = "scrapbench-model"
FORMAT_VERSION = 2  # 1: method.json + state.pt (a pickle), written before model folders became pickle-free
METHOD_FILE = "method.json"
TENSORS_FILE = "state.safetensors"
STATE_FILE = "state.json"
_RERUN = "re-run the method with `scrapbench run` (into a new --out folder) to write a current model folder"


def save_method(method: AnomalyMethod, directory: str | Path) -> Path:
    """Write ``method`` (config, class names, fitted state) to ``directory``; see the module docstring."""
    directory = Path(directory)
    name, spec = _registered_spec(method)
    try:
        tensors, tree = split_state(method.state_dict())
    except TypeError as exc:
        raise TypeError(f"{name}: state_dict() cannot be saved: {exc}") from exc
    directory.mkdir(parents=True, exist_ok=True)
    write_tensors(directory / TENSORS_FILE, tensors)
    atomic_write_json(directory / STATE_FILE, {"format": FORMAT, "format_version": FORMAT_VERSION, "state": tree})
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "method": name,
        "class": spec.target_path,
        "config": config_to_dict(method.config),
        "class_names": list(method.class_names),
        "scrapbench_version": __version__,
        # Checked on load: a half-written or edited state file is reported, not half-loaded.
        "files": {file: _file_record(directory / file) for file in (TENSORS_FILE, STATE_FILE)},
    }
    atomic_write_json(directory / METHOD_FILE, meta)  # last: the folder is complete once this exists
    return directory


def load_method(directory: str | Path, device: str = "cpu", expected: type | None = None) -> AnomalyMethod:
    """Rebuild the method saved in ``directory`` (a subclass of ``expected`` when given)."""
    from scrapbench.core.registry import instantiate

    directory = Path(directory)
    meta_path = directory / METHOD_FILE
    if not meta_path.is_file():
        raise FileNotFoundError(f"{meta_path}: no saved method here (write one with `scrapbench run`)")
    meta = _read_json(meta_path)
    _check_format(meta_path, meta)
    method_cls = _method_class(meta_path, meta, expected)
    try:  # every value checked against its field's type (scrapbench.core.config_check), as --set values are
        config = config_from_dict(method_cls.Config, _field(meta_path, meta, "config", dict))
    except (TypeError, ValueError) as exc:
        raise ModelFolderError(f"{meta_path}: config does not fit {meta['method']!r}: {exc}") from exc
    class_names = _class_names(meta_path, meta)
    state, tensors = _read_state(directory, meta_path, _field(meta_path, meta, "files", dict))
    name = meta["method"]
    try:
        method = instantiate(name, method_cls, config, class_names)
        method.to_device(device)
        method.load_state_dict(state)
        _check_tensors(method, tensors)
    except _LOAD_ERRORS as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelFolderError(f"{directory}: the saved state does not fit {name!r} "
                               f"({type(exc).__name__}: {detail}); {_RERUN}") from exc
    return method


# What building a method from a folder's values, or loading its state, raises when they do not fit the method.
_LOAD_ERRORS = (KeyError, TypeError, ValueError, RuntimeError, AttributeError, IndexError, OverflowError)


def _class_names(meta_path: Path, meta: dict[str, Any]) -> list[str]:
    """The folder's class names, under the rules a dataset's class names follow."""
    from scrapbench.datasets.folder import check_class_names
    from scrapbench.datasets.types import DatasetError

    class_names = _field(meta_path, meta, "class_names", list)
    if not class_names or not all(isinstance(c, str) for c in class_names):
        raise ModelFolderError(f"{meta_path}: class_names must be a non-empty list of strings")
    try:
        return list(check_class_names(class_names, f"{meta_path}: class_names"))
    except DatasetError as exc:
        raise ModelFolderError(str(exc)) from exc


def _check_tensors(method: AnomalyMethod, saved: dict[str, Any]) -> None:
    """Every saved tensor has the dtype and shape of the one the loaded method holds under its key (a
    method's ``load_state_dict`` may cast or skip what it is given: an edited file would pass unnoticed)."""
    held, _ = split_state(method.state_dict())
    missing, extra = sorted(set(held) - set(saved)), sorted(set(saved) - set(held))
    if missing or extra:
        raise ValueError(f"the method holds tensors {missing[:3]} the file lacks, or the file holds {extra[:3]} "
                         f"the method does not")
    for key, tensor in saved.items():
        mine = held[key]
        if tensor.dtype != mine.dtype or tensor.shape != mine.shape:
            raise ValueError(f"tensor {key!r} is {tensor.dtype} {tuple(tensor.shape)} in the file, "
                             f"{mine.dtype} {tuple(mine.shape)} in the method")


# -- saving --------------------------------------------------------------------------------------
def _registered_spec(method: AnomalyMethod):
    """The registry entry a method is saved under: its ``registry_name``, else the one spec of its class."""
    from scrapbench.core.registry import get_spec, list_methods

    cls = type(method)
    name = method.registry_name
    if name is None:
        # Compare classes, not paths: a registry entry may name a re-export ("pkg:Class" for "pkg.mod:Class").
        matches = [s for s in list_methods()
                   if s.target_path.endswith(f":{cls.__qualname__}") and s.load_class() is cls]
        if len(matches) != 1:
            found = ", ".join(s.name for s in matches) or "none"
            raise ValueError(f"{cls.__module__}:{cls.__qualname__}: a model folder names a registered method, and "
                             f"this class has {len(matches)} registered names ({found}); build it with "
                             f"create_method(name, ...) or register it with @register_method")
        return matches[0].name, matches[0]
    spec = get_spec(name)
    if spec.load_class() is not cls:
        raise ValueError(f"method {name!r} is registered as {spec.target_path}, "
                         f"not {cls.__module__}:{cls.__qualname__}")
    return name, spec


def _file_record(path: Path) -> dict[str, Any]:
    return {"bytes": path.stat().st_size, "sha256": _sha256(path)}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# -- loading -------------------------------------------------------------------------------------
def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except RecursionError as exc:
        raise ModelFolderError(f"{path}: nested too deeply to read; the model folder is corrupt, {_RERUN}") from exc
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, an integer of thousands of digits
        reason = str(exc).split(";")[0]  # not Python's advice to raise its digit limit
        raise ModelFolderError(f"{path}: not valid JSON ({reason}); the model folder is corrupt, {_RERUN}") from exc
    if not isinstance(value, dict):
        raise ModelFolderError(f"{path}: expected a JSON object, found {type(value).__name__}")
    return value


def _check_format(meta_path: Path, meta: dict[str, Any]) -> None:
    if "format_version" not in meta:
        raise ModelFolderError(
            f"{meta_path.parent}: model folder of an older scrapbench (its state.pt is a Python pickle, and "
            f"unpickling a file can run any code in it, so it is not read); {_RERUN}")
    version = meta["format_version"]
    if meta.get("format") != FORMAT or not isinstance(version, int):
        raise ModelFolderError(f"{meta_path}: not a scrapbench model folder (format {meta.get('format')!r}, "
                               f"version {version!r})")
    if version != FORMAT_VERSION:
        fix = "upgrade scrapbench to read it" if version > FORMAT_VERSION else _RERUN
        raise ModelFolderError(f"{meta_path}: model folder format {version}; this scrapbench reads format "
                               f"{FORMAT_VERSION}: {fix}")


def _method_class(meta_path: Path, meta: dict[str, Any], expected: type | None) -> type[AnomalyMethod]:
    """The registered class of the folder's method name; the stored class path is compared, never imported."""
    from scrapbench.core.registry import get_spec

    name = _field(meta_path, meta, "method", str)
    stored = _field(meta_path, meta, "class", str)
    try:
        spec = get_spec(name)
    except KeyError as exc:
        raise ModelFolderError(f"{meta_path}: method {name!r} is not registered here ({exc.args[0]}); "
                               f"install the package that provides it") from exc
    if stored != spec.target_path:
        raise ModelFolderError(f"{meta_path}: class {stored!r} does not match the registered {name!r} "
                               f"({spec.target_path}); refusing to load it")
    try:
        method_cls = spec.load_class()
    except (ImportError, AttributeError) as exc:
        raise ModelFolderError(f"{meta_path}: {exc}") from exc
    if not (isinstance(method_cls, type) and issubclass(method_cls, AnomalyMethod)):
        raise ModelFolderError(f"{meta_path}: registered {name!r} ({spec.target_path}) is not an AnomalyMethod")
    if expected is not None and not issubclass(method_cls, expected):
        raise ModelFolderError(f"{meta_path}: holds {name!r} ({spec.target_path}), not a {expected.__name__}")
    return method_cls


def _read_state(directory: Path, meta_path: Path, files: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    for file in (TENSORS_FILE, STATE_FILE):
        path = directory / file
        record = files.get(file)
        if not isinstance(record, dict):
            raise ModelFolderError(f"{meta_path}: no record of {file}; the model folder is corrupt, {_RERUN}")
        if not path.is_file():
            raise ModelFolderError(f"{path}: missing; the model folder is incomplete, {_RERUN}")
        if path.stat().st_size != record.get("bytes") or _sha256(path) != record.get("sha256"):
            raise ModelFolderError(f"{path}: size or SHA-256 differs from {METHOD_FILE} (a half-written or edited "
                                   f"file); {_RERUN}")
    tree_path = directory / STATE_FILE
    doc = _read_json(tree_path)
    if doc.get("format") != FORMAT or doc.get("format_version") != FORMAT_VERSION or "state" not in doc:
        raise ModelFolderError(f"{tree_path}: not a scrapbench state of format {FORMAT_VERSION}")
    try:
        tensors = read_tensors(directory / TENSORS_FILE)
    except StateFormatError as exc:
        raise ModelFolderError(f"{exc}; {_RERUN}") from exc
    try:
        return join_state(doc["state"], tensors), tensors
    except StateFormatError as exc:
        raise ModelFolderError(f"{tree_path}: {exc}; {_RERUN}") from exc


def _field(meta_path: Path, meta: dict[str, Any], key: str, kind: type) -> Any:
    value = meta.get(key)
    if not isinstance(value, kind):
        raise ModelFolderError(f"{meta_path}: field {key!r} must be a {kind.__name__}, found {type(value).__name__}")
    return value
