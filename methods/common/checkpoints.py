"""Reading third-party checkpoint files without executing anything in them.

Formats (:func:`checkpoint_format` tells them apart by their bytes, not their names):

- ``safetensors``: read with safetensors.
- ``torch-zip`` (``torch.save`` since torch 1.6) and ``torch-legacy`` (older ``torch.save``, e.g.
  torchvision's 2019 COCO checkpoints): read with torch's weights-only unpickler, which refuses any
  class or function outside torch's small allow-list.
- ``torchscript`` (``torch.jit.save``, e.g. OpenAI's ``ViT-L-14-336px.pt``): ``torch.load`` would hand
  it to ``torch.jit.load``, which runs the archive's TorchScript code. Its ``data.pkl`` is an ordinary
  torch pickle whose only foreign globals are the ``__torch__.*`` classes of its modules, so
  :func:`read_torchscript_state_dict` runs torch's weights-only unpickler on it with exactly those
  names mapped to a plain attribute holder, and reads the tensors out of the holders. The module tree
  is walked once per module and capped, so a crafted ``data.pkl`` (a cycle, shared submodules, an
  endless chain) is refused in one line instead of hanging the reader.

ultralytics checkpoints are pickled modules and cannot be read this way; see ``methods/yolo_sam/weights.py``.
"""

from __future__ import annotations

import io
import pickle
import pickletools
import re
import struct
import zipfile
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from scrapbench.core.method import WeightsError

SAFETENSORS = "safetensors"
TORCH_ZIP = "torch-zip"
TORCH_LEGACY = "torch-legacy"
TORCHSCRIPT = "torchscript"
UNKNOWN = "unknown"

_LEGACY_MAGIC = pickle.dumps(torch.serialization.MAGIC_NUMBER, protocol=2)  # how a legacy torch.save begins

# Bounds on a TorchScript archive's data.pkl, far above any released model's module tree.
MAX_SCRIPT_DEPTH = 100  # module nesting (OpenAI's CLIPs nest a handful of levels)
MAX_SCRIPT_ATTRIBUTES = 200_000  # attributes over all modules
MAX_SCRIPT_KEY = 1_000  # characters of a dotted state-dict key
# torch's unpickler scans its whole allow-list (its own entries and each module class) for every object opcode.
MAX_OBJECT_OPS = 50_000  # GLOBAL, NEWOBJ, REDUCE and BUILD opcodes
MAX_CLASS_LOOKUPS = 20_000_000  # object opcodes × module classes
# What a malformed file raises while torch's unpickler reads it (its opcodes pop, index and call).
_MALFORMED = (pickle.UnpicklingError, RuntimeError, OSError, ValueError, EOFError, KeyError, IndexError, TypeError,
              AttributeError, struct.error, zipfile.BadZipFile, zlib.error)


def checkpoint_format(path: str | Path) -> str:
    """``safetensors``, ``torch-zip``, ``torch-legacy``, ``torchscript`` or ``unknown``, from the file's bytes."""
    path = Path(path)
    with open(path, "rb") as handle:
        head = handle.read(16)
    if head.startswith(_LEGACY_MAGIC):
        return TORCH_LEGACY
    if len(head) >= 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < path.stat().st_size:
        return SAFETENSORS
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
        if any(_archive_record(n) == "constants.pkl" for n in names):  # torch's own TorchScript test
            return TORCHSCRIPT
        if any(_archive_record(n) == "data.pkl" for n in names):
            return TORCH_ZIP
    return UNKNOWN


def _archive_record(name: str) -> str:
    """A torch archive's record name without its top-level folder (``archive/data.pkl`` → ``data.pkl``)."""
    return name.split("/", 1)[1] if "/" in name else name


def read_checkpoint(path: str | Path, label: str, map_location: str | torch.device = "cpu") -> Any:
    """The object in a checkpoint file, read without executing code; errors name the file.

    ``map_location="meta"`` reads names, shapes and dtypes only (no tensor data), for quick checks.
    """
    path = Path(path)
    try:
        fmt = checkpoint_format(path)
        if fmt == SAFETENSORS:
            return _read_safetensors(path, map_location)
        if fmt == TORCHSCRIPT:
            return read_torchscript_state_dict(path, map_location)
        if fmt in (TORCH_ZIP, TORCH_LEGACY):
            mmap = fmt == TORCH_ZIP and str(map_location) != "meta"  # large files load lazily
            return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except _MALFORMED as exc:
        raise WeightsError(f"{label} {path} could not be read safely: {type(exc).__name__}: {_reason(exc)}") from exc
    raise WeightsError(f"{label} {path} could not be read: not a torch, TorchScript or safetensors file")


_BLOCKED_GLOBAL = re.compile(r"GLOBAL (\S+?)(?: whose | was not |\.?$)", re.MULTILINE)
# Torch's own paragraphs around the reason: how to turn the check off, or how to allow-list the global.
_TORCH_ADVICE = ("Weights only load failed", "weights_only", "safe_globals", "Check the documentation")


def _reason(exc: BaseException) -> str:
    """What was wrong, in one line: the Python global a crafted pickle names, never torch's advice to load it
    anyway (``weights_only=False``, allow-listing), which would run the file's code."""
    text = str(exc)
    blocked = _BLOCKED_GLOBAL.search(text)
    if blocked:
        return (f"Unsupported global {blocked.group(1)}: the file names this Python function or class, which "
                f"loading could run; a weights file holds only tensors")
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    reasons = [line for line in lines if not any(advice in line for advice in _TORCH_ADVICE)]
    return reasons[0] if reasons else lines[0] if lines else ""


def _read_safetensors(path: Path, map_location: str | torch.device) -> dict[str, torch.Tensor]:
    from safetensors import safe_open
    from safetensors.torch import load_file

    if str(map_location) != "meta":
        return load_file(path, device=str(map_location))
    with safe_open(path, framework="pt") as handle:  # header only
        out, names = {}, handle.keys()
        for key in names:
            view = handle.get_slice(key)
            out[key] = torch.empty(view.get_shape(), dtype=_SAFETENSORS_DTYPES[view.get_dtype()], device="meta")
        return out


_SAFETENSORS_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
                       "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
                       "U8": torch.uint8, "BOOL": torch.bool}


class _ScriptObject:
    """The attributes of one object of a TorchScript archive (a module), as plain data.

    Each ``__torch__.*`` class name of an archive maps to its own subclass (see :func:`_script_class`).
    """

    script_class = "__torch__"
    attributes: dict | None = None  # set by the pickle's BUILD

    def __new__(cls, *args: Any, **kwargs: Any) -> _ScriptObject:
        if args or kwargs:
            raise pickle.UnpicklingError(f"{cls.script_class} is called with arguments; "
                                         "torch.jit.save creates modules without any")
        return super().__new__(cls)

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, dict):
            raise pickle.UnpicklingError(f"{self.script_class} is built from state of type "
                                         f"{type(state).__name__}, not a dict of attributes")
        self.attributes = state


def _script_class(name: str) -> type[_ScriptObject]:
    return type("ScriptObject", (_ScriptObject,), {"script_class": name})


def read_torchscript_state_dict(path: str | Path, map_location: str | torch.device = "cpu", *,
                                max_depth: int = MAX_SCRIPT_DEPTH, max_attributes: int = MAX_SCRIPT_ATTRIBUTES
                                ) -> dict[str, torch.Tensor]:
    """Every tensor attribute of a TorchScript archive's modules (its ``state_dict()``), without running it.

    Hand-written because torch refuses ``weights_only=True`` for TorchScript archives before reading
    them; what it would do instead (``torch.jit.load``) executes the archive's code. The reading
    itself is torch's: its weights-only unpickler over the archive's ``data.pkl``. A module tree that
    torch.jit.save cannot have written (a module reached twice, deeper than ``max_depth``, more than
    ``max_attributes`` attributes) raises an UnpicklingError.
    """
    path = Path(path)
    with zipfile.ZipFile(path) as archive:
        record = next((n for n in archive.namelist() if _archive_record(n) == "data.pkl"), None)
        if record is None:
            raise pickle.UnpicklingError("the TorchScript archive has no data.pkl")
        script_classes = _script_classes(archive.read(record))
    from torch import _weights_only_unpickler

    with torch.serialization.safe_globals([(_script_class(name), name) for name in script_classes]), \
            open(path, "rb") as handle, torch.serialization._open_zipfile_reader(handle) as reader:
        root = torch.serialization._load(reader, map_location, _weights_only_unpickler, weights_only=True)
    if not isinstance(root, _ScriptObject):
        raise ValueError("the archive's data.pkl does not hold a TorchScript module")
    return _module_tensors(root, max_depth, max_attributes)


def _module_tensors(root: _ScriptObject, max_depth: int, max_attributes: int) -> dict[str, torch.Tensor]:
    """The tensors under ``root`` by dotted name, each module walked once (torch.jit.save never shares one)."""
    flat: dict[str, torch.Tensor] = {}
    seen = {id(root): ""}  # module → its dotted name ("" is the root)
    stack, walked = [("", root, 0)], 0
    while stack:
        where, node, depth = stack.pop()
        if node.attributes is None:
            raise pickle.UnpicklingError(f"module {_module_name(where)} ({node.script_class}) is never built")
        walked += len(node.attributes)
        if walked > max_attributes:
            raise pickle.UnpicklingError(f"the modules hold more than {max_attributes:,} attributes")
        for name, value in node.attributes.items():
            if not isinstance(value, (_ScriptObject, torch.Tensor)):
                continue
            key = _attribute_key(where, name)
            if isinstance(value, torch.Tensor):
                flat[key] = value
            elif id(value) in seen:
                raise pickle.UnpicklingError(
                    f"module {_module_name(key)} is module {_module_name(seen[id(value)])} again "
                    "(a cycle or a shared submodule, which torch.jit.save never writes)")
            elif depth >= max_depth:
                raise pickle.UnpicklingError(f"modules nest more than {max_depth} levels deep")
            else:
                seen[id(value)] = key
                stack.append((key, value, depth + 1))
    return flat


def _attribute_key(where: str, name: Any) -> str:
    """``where.name``, the state-dict key of a module's attribute; a name must be a string, the key short."""
    if not isinstance(name, str):
        raise pickle.UnpicklingError(f"module {_module_name(where)} has an attribute whose name is of type "
                                     f"{type(name).__name__}, not a string")
    if len(where) + len(name) >= MAX_SCRIPT_KEY:
        raise pickle.UnpicklingError(f"module {_module_name(where)} has an attribute whose dotted name is "
                                     f"longer than {MAX_SCRIPT_KEY:,} characters")
    return f"{where}.{name}" if where else name


def _module_name(name: str) -> str:
    """A module's dotted name for a message, shortened (``""`` is the root)."""
    if not name:
        return "<root>"
    return repr(name if len(name) <= 80 else name[:40] + "…" + name[-37:])


def _script_classes(pickled: bytes) -> list[str]:
    """Names of the ``__torch__.*`` classes a TorchScript ``data.pkl`` refers to (read, not executed).

    Refuses a pickle with more object opcodes than ``MAX_OBJECT_OPS``, or more opcodes × names than
    ``MAX_CLASS_LOOKUPS``: torch's unpickler looks each such opcode up in its whole allow-list.
    """
    names, object_ops = set(), 0
    for opcode, arg, _ in pickletools.genops(io.BytesIO(pickled)):
        if opcode.name in ("GLOBAL", "NEWOBJ", "REDUCE", "BUILD"):
            object_ops += 1
        if opcode.name == "GLOBAL":
            module, _, qualname = str(arg).partition(" ")
            if module == "__torch__" or module.startswith("__torch__."):
                names.add(f"{module}.{qualname}")
    if object_ops > MAX_OBJECT_OPS:
        raise pickle.UnpicklingError(f"data.pkl has {object_ops:,} object opcodes, more than {MAX_OBJECT_OPS:,}")
    if object_ops * len(names) > MAX_CLASS_LOOKUPS:
        raise pickle.UnpicklingError(f"data.pkl has {object_ops:,} object opcodes over {len(names):,} module "
                                     f"classes, more than {MAX_CLASS_LOOKUPS:,} lookups")
    return sorted(names)


def read_state_dict(path: str | Path, label: str, map_location: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """A state dict from ``path`` (also unwrapping ``{"model": state_dict}`` training checkpoints)."""
    state = read_checkpoint(path, label, map_location)
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{label} {path} holds a {type(state).__name__}, not a state dict of tensors")
    return state


def state_dict_problems(expected: Mapping[str, torch.Tensor | torch.Size], found: Mapping[str, torch.Tensor],
                        ignore: Iterable[str] = ()) -> list[str]:
    """Missing keys, unexpected keys and shape mismatches between a file and an architecture."""
    ignored = set(ignore)
    shape = {k: tuple(v.shape) if isinstance(v, torch.Tensor) else tuple(v) for k, v in expected.items()}
    missing = sorted(set(shape) - set(found) - ignored)
    unexpected = sorted(set(found) - set(shape) - ignored)
    wrong = [f"{k}: file {tuple(found[k].shape)}, model {shape[k]}" for k in sorted(set(shape) & set(found))
             if k not in ignored and tuple(found[k].shape) != shape[k]]
    problems = []
    for title, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", wrong)):
        if items:
            more = f" … (+{len(items) - 4} more)" if len(items) > 4 else ""
            problems.append(f"{len(items)} {title}: {', '.join(items[:4])}{more}")
    return problems


def require_state_dict_fits(expected: Mapping[str, torch.Tensor | torch.Size], found: Mapping[str, torch.Tensor],
                            what: str, ignore: Iterable[str] = ()) -> None:
    """Raise a WeightsError naming ``what`` (file and architecture) unless the keys and shapes match exactly."""
    problems = state_dict_problems(expected, found, ignore)
    if problems:
        raise WeightsError(f"{what}: {'; '.join(problems)}")


def inside_scrapbench_folder(path: str | Path) -> Path | None:
    """The scrapbench model folder (``method.json``) or dataset (``dataset.yaml``) that holds ``path``, if any."""
    for folder in Path(path).resolve().parents:
        if (folder / "method.json").is_file() or (folder / "dataset.yaml").is_file():
            return folder
    return None


@dataclass
class WeightCheck:
    """One configured weight: where it is (or should be), and what checking it found."""

    weight: str  # e.g. "CLIP ViT-L-14-336-quickgelu / openai"
    setting: str  # the config field naming it, e.g. "clip_pretrained=openai"
    status: str  # "ok", "random" (random init configured), "download" (fetched at run time), "missing", "invalid"
    path: str | None = None  # the file, or where it is expected
    where: str = ""  # how to get it, when it is not there
    format: str = ""
    architecture: str = ""
    sha256: str | None = None
    checksum: str = ""  # against the published checksum
    detail: str = ""  # what is wrong, when status is "missing" or "invalid"

    @property
    def ok(self) -> bool:
        return self.status in ("ok", "random", "download")
