"""A method's fitted state as data that cannot carry code: tensors in safetensors, the rest in JSON.

A *plain* state is a tree of dicts (string keys), lists, tuples, torch tensors, numpy arrays and JSON
scalars (None, bool, int, float, str). :func:`split_state` takes every tensor and array out of the
tree under its dotted path (``model.backbone.conv1.weight``, ``memory_windows.0``) and leaves a
reference in its place (``{"__tensor__": path}``; ``"__ndarray__"`` for numpy arrays);
:func:`join_state` puts them back. The tensors go to ``state.safetensors`` and the tree to
``state.json``: both formats are data only, so reading them never runs code, unlike a pickle
(``torch.save``), which runs whatever its ``__reduce__`` names when loaded.

Why not ``torch.load(weights_only=True)``: it would refuse code too, but it is still a pickle parser
with an allow-list that moves between torch releases (numpy arrays need allow-listing), and a file
someone reads outside scrapbench with ``weights_only=False`` would run. safetensors is readable by
any tool, and the JSON half can be read by a person. Anything else in a state (bytes, objects,
paths) is refused when saving, so a nested pickle can never be written in the first place.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from scrapbench.storage.atomic import atomic_path

TENSOR_REF = "__tensor__"
ARRAY_REF = "__ndarray__"
_REFS = (TENSOR_REF, ARRAY_REF)
_SCALARS = (type(None), bool, int, float, str)
#: What a saved state may hold: numbers and flags; the float8 and complex types are never written.
TENSOR_DTYPES = frozenset({torch.float64, torch.float32, torch.float16, torch.bfloat16, torch.int64, torch.int32,
                           torch.int16, torch.int8, torch.uint8, torch.bool})
_ARRAY_DTYPES = TENSOR_DTYPES - {torch.bfloat16}  # a numpy array's: numpy has no bfloat16
MAX_DEPTH = 64  # levels of nesting in a state tree (methods nest a few)
_INT_LIMIT = 2**63


class StateFormatError(ValueError):
    """A state cannot be written as plain data, or the files read back do not form one."""


def split_state(state: Any) -> tuple[dict[str, torch.Tensor], Any]:
    """``(tensors by dotted key, JSON tree with references)`` of a plain state; TypeError otherwise."""
    tensors: dict[str, torch.Tensor] = {}
    storages: set[tuple[str, int]] = set()

    def walk(value: Any, path: tuple[str, ...]) -> Any:
        if isinstance(value, _SCALARS):
            return value
        if isinstance(value, np.generic) and value.dtype.kind in "biuf":
            return value.item()
        if isinstance(value, dict):
            out = {}
            for key, item in value.items():
                if not isinstance(key, str):
                    raise TypeError(f"{_where(path)} has a key {key!r} of type {type(key).__name__}; keys are strings")
                if key in _REFS:
                    raise TypeError(f"{_where(path)} uses the reserved key {key!r}")
                out[key] = walk(item, (*path, key))
            return out
        if isinstance(value, (list, tuple)):
            return [walk(item, (*path, str(i))) for i, item in enumerate(value)]
        if isinstance(value, np.ndarray):
            if value.dtype.kind not in "biuf":
                raise TypeError(f"{_where(path)} is a numpy array of dtype {value.dtype}; only numbers and bools")
            return {ARRAY_REF: store(torch.from_numpy(np.ascontiguousarray(value)), path)}
        if isinstance(value, torch.Tensor):
            return {TENSOR_REF: store(value, path)}
        raise TypeError(f"{_where(path)} is a {type(value).__name__}; a saved state holds only tensors, numpy "
                        f"arrays, dicts, lists and JSON values (None, bool, int, float, str)")

    def store(tensor: torch.Tensor, path: tuple[str, ...]) -> str:
        key = ".".join(path)
        if key in tensors:
            raise TypeError(f"two tensors of the state map to the key {key!r}; rename one")
        if tensor.layout != torch.strided or tensor.is_quantized:
            raise TypeError(f"{_where(path)} is a {tensor.layout} tensor; only dense tensors are saved")
        tensor = tensor.detach().cpu()
        # safetensors writes each tensor's own bytes: views into a bigger or shared storage are copied.
        storage = (str(tensor.untyped_storage().device), tensor.untyped_storage().data_ptr())
        whole = tensor.is_contiguous() and tensor.untyped_storage().nbytes() == tensor.nbytes
        if storage in storages or not whole:
            tensor = tensor.clone(memory_format=torch.contiguous_format)
        storages.add(storage)
        tensors[key] = tensor
        return key

    return tensors, walk(state, ())


def join_state(tree: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """The state :func:`split_state` took apart; StateFormatError when the two halves do not match, or when
    the tree nests deeper than :data:`MAX_DEPTH` or holds a number no state holds (:func:`_check_number`)."""
    used: set[str] = set()

    def walk(value: Any, path: tuple[str, ...]) -> Any:
        if len(path) > MAX_DEPTH:
            raise StateFormatError(f"{_where(path[:3])}… nests deeper than {MAX_DEPTH} levels")
        if isinstance(value, dict):
            refs = [k for k in _REFS if k in value]
            if refs:
                return reference(value, refs[0], path)
            return {k: walk(v, (*path, k)) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v, (*path, str(i))) for i, v in enumerate(value)]
        if isinstance(value, _SCALARS):
            _check_number(value, _where(path))
            return value
        raise StateFormatError(f"unexpected {type(value).__name__} in the state tree")

    def reference(value: dict, kind: str, path: tuple[str, ...]) -> Any:
        key = value[kind]
        if len(value) != 1 or not isinstance(key, str):
            raise StateFormatError(f"malformed tensor reference {value!r}")
        if key not in tensors:
            raise StateFormatError(f"the tensor {key!r} is missing")
        used.add(key)
        if kind == ARRAY_REF:
            if tensors[key].dtype not in _ARRAY_DTYPES:
                raise StateFormatError(f"{_where(path)}: the array {key!r} has dtype {tensors[key].dtype}, "
                                       f"which no numpy array of a saved state has")
            return tensors[key].numpy()
        return tensors[key]

    state = walk(tree, ())
    unused = sorted(set(tensors) - used)
    if unused:
        raise StateFormatError(f"{len(unused)} tensors are not referenced by the state (first: {unused[0]!r})")
    return state


def _check_number(value: Any, where: str) -> None:
    """Refuse NaN, an infinity or an integer beyond 64 bits: no config or saved state holds one."""
    if isinstance(value, float) and not math.isfinite(value):
        raise StateFormatError(f"{where} is {value}; a saved value is a finite number")
    if isinstance(value, int) and not isinstance(value, bool) and not -_INT_LIMIT <= value < _INT_LIMIT:
        raise StateFormatError(f"{where} is an integer of {value.bit_length()} bits; a saved integer fits in 64")


def write_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    """Write ``tensors`` as safetensors, atomically (readers see the old file or the new one)."""
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file(tensors, tmp, metadata={"format": "pt"})


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file (on the CPU); StateFormatError names the file when it is not one."""
    from safetensors.torch import load_file

    try:
        tensors = load_file(path, device="cpu")
    except Exception as exc:  # safetensors raises its own error types for a truncated or foreign file
        raise StateFormatError(f"{path}: not a readable safetensors file ({type(exc).__name__}: {exc})") from exc
    for key, tensor in tensors.items():
        if tensor.dtype not in TENSOR_DTYPES:
            raise StateFormatError(f"{path}: tensor {key!r} has dtype {tensor.dtype}, which scrapbench never saves")
    return tensors


def _where(path: tuple[str, ...]) -> str:
    return "the state" if not path else "state[" + "][".join(repr(p) for p in path) + "]"
