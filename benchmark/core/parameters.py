"""Counting a method's parameters: the torch modules an object holds, and their parameters counted once.

:meth:`scrapbench.core.method.AnomalyMethod.parameter_counts` uses this by default. A method's networks
hang off its attributes directly (``self.model``), inside a helper object (WinCLIP's loaded CLIP,
YOLO+SAM's refiner) or in a container; one network may be held twice (the CLIP of ``ours`` is held as
``self._clip`` and inside ``self.model``), and modules may share parameters (tied embeddings). Every
parameter is counted once, by identity.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Iterable
from typing import Any

#: How deep below the object the search looks into plain objects and containers (``self._clip.model`` is 1).
MAX_DEPTH = 3
_LEAVES = (str, bytes, int, float, bool, type(None), type, types.ModuleType, types.FunctionType, types.MethodType,
           types.BuiltinFunctionType)


def held_modules(obj: Any, max_depth: int = MAX_DEPTH) -> list[Any]:
    """The ``torch.nn.Module`` objects reachable from ``obj``'s attributes, containers (list, tuple, set, dict
    values) and the attributes of plain objects it holds, ``max_depth`` levels down; a module is not searched
    further (its parameters include its submodules'). Without torch imported no object can hold a module."""
    torch = sys.modules.get("torch")
    if torch is None:
        return []
    module_type, tensor_type = torch.nn.Module, torch.Tensor
    found: dict[int, Any] = {}
    seen: set[int] = {id(obj)}
    stack: list[tuple[Any, int]] = [(value, 0) for value in _children(obj)]
    while stack:
        value, depth = stack.pop()
        if id(value) in seen or isinstance(value, (*_LEAVES, tensor_type)):
            continue
        seen.add(id(value))
        if isinstance(value, module_type):
            found.setdefault(id(value), value)
        elif depth < max_depth:
            stack.extend((child, depth + 1) for child in _children(value))
    return list(found.values())


def _children(value: Any) -> Iterable[Any]:
    if isinstance(value, dict):
        return list(value.values())
    if isinstance(value, (list, tuple, set, frozenset)):
        return list(value)
    if type(value).__module__ == "numpy" or not hasattr(value, "__dict__"):
        return []
    return list(vars(value).values())


def count_parameters(modules: Iterable[Any], trained: Any = None) -> tuple[int, int]:
    """(total, trained) element counts of the modules' parameters, each parameter once.

    ``trained``: a predicate on a parameter (default: ``requires_grad``, what an optimiser over
    ``p for p in model.parameters() if p.requires_grad`` trains)."""
    chosen = trained or (lambda parameter: parameter.requires_grad)
    parameters = {id(p): p for module in modules for p in module.parameters()}
    total = sum(p.numel() for p in parameters.values())
    return total, sum(p.numel() for p in parameters.values() if chosen(p))
