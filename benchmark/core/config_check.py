"""A config value checked against its dataclass field's type, before anything runs.

Every value that reaches a method's ``Config`` (preset files, ``--set``, a model folder's ``method.json``)
passes :func:`checked_value`: ``int``, ``float``, ``bool``, ``str``, ``None``, unions (``int | None``),
``Literal`` choices, tuples and lists of those (YAML and JSON lists become tuples where the field is a
tuple), paths (from strings) and ``dict``. A bool is not an int; a float must be finite; an int must fit
64 bits. A type this module does not know (a plugin's own class, ``Any``) is the method's to check.
"""

from __future__ import annotations

import functools
import math
import reprlib
import types
import typing
from pathlib import PurePath
from typing import Any, Literal, Union, get_args, get_origin

_INT64 = 2**63


class ConfigValueError(ValueError):
    """A config value that does not fit its field; the message is one line naming the field, value and type."""


class _Mismatch(Exception):
    pass


@functools.lru_cache(maxsize=64)
def field_types(config_cls: type) -> dict[str, Any]:
    """The resolved annotations of ``config_cls``'s fields; ``{}`` when they cannot be resolved."""
    try:
        return typing.get_type_hints(config_cls)
    except (NameError, TypeError):  # a plugin's forward reference: its values stay unchecked
        return {}


def checked_value(value: Any, expected: Any, where: str) -> Any:
    """``value`` as field type ``expected`` wants it (lists → tuples for tuple fields), else
    :class:`ConfigValueError` with ``where`` (e.g. ``method 'ours': image_size``) at the start of its line."""
    try:
        return _coerce(value, expected)
    except _Mismatch:
        raise ConfigValueError(f"{where} = {shown(value)}: expected {type_name(expected)}") from None


def shown(value: Any) -> str:
    """A short repr of a value (depth, length and digits capped)."""
    try:
        return reprlib.repr(value)
    except (ValueError, RecursionError):  # an int too long for repr
        return f"<an int of {value.bit_length()} bits>" if isinstance(value, int) else f"<{type(value).__name__}>"


def type_name(expected: Any) -> str:
    """The type as a user reads it: ``int``, ``str | None``, ``list of int``, ``one of 'a', 'b'``."""
    origin, args = get_origin(expected), get_args(expected)
    if origin in (Union, types.UnionType):
        return " | ".join(type_name(arm) for arm in args)
    if origin is Literal:
        return "one of " + ", ".join(repr(choice) for choice in args)
    if origin in (tuple, list):
        if origin is tuple and args and args[-1] is not Ellipsis:
            return f"a list of {len(args)} ({', '.join(type_name(arm) for arm in args)})"
        return f"a list of {type_name(args[0]) if args else 'values'}"
    if expected is type(None):
        return "null"
    if expected is float:
        return "float (finite)"
    if expected is int:
        return "int (64-bit)"
    return getattr(expected, "__name__", str(expected))


def legacy_value(value: Any) -> Any:
    """What an unchecked field gets: lists (and lists in them) become tuples, as configs are frozen."""
    if isinstance(value, list):
        return tuple(tuple(v) if isinstance(v, list) else v for v in value)
    return value


def _coerce(value: Any, expected: Any) -> Any:
    origin, args = get_origin(expected), get_args(expected)
    if origin in (Union, types.UnionType):
        return _first_fit(value, args)
    if origin is Literal:
        if any(type(value) is type(choice) and value == choice for choice in args):
            return value
        raise _Mismatch
    if origin in (tuple, list):
        return _sequence(value, origin, args)
    if origin is dict:
        return _mapping(value, args)
    if origin is not None or expected is Any or not isinstance(expected, type):
        return legacy_value(value)  # Any, or a generic this module does not know: the method checks it
    return _scalar(value, expected)


def _first_fit(value: Any, arms: tuple) -> Any:
    for arm in arms:
        try:
            return _coerce(value, arm)
        except _Mismatch:
            continue
    raise _Mismatch


def _sequence(value: Any, origin: type, args: tuple) -> Any:
    if not isinstance(value, (list, tuple)):
        raise _Mismatch
    if origin is tuple and args and args[-1] is not Ellipsis:
        if len(value) != len(args):
            raise _Mismatch
        items = [_coerce(item, arm) for item, arm in zip(value, args, strict=True)]
    else:
        items = [_coerce(item, args[0] if args else Any) for item in value]
    return tuple(items) if origin is tuple else items


def _mapping(value: Any, args: tuple) -> dict:
    if not isinstance(value, dict):
        raise _Mismatch
    key_type, value_type = args if len(args) == 2 else (Any, Any)
    return {_coerce(k, key_type): _coerce(v, value_type) for k, v in value.items()}


def _scalar(value: Any, expected: type) -> Any:
    if expected is type(None):
        ok = value is None
    elif expected is bool:
        ok = isinstance(value, bool)
    elif expected is int:
        ok = isinstance(value, int) and not isinstance(value, bool) and -_INT64 <= value < _INT64
    elif expected is float:  # an int stays an int: the value is what the run's identity records
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and _finite(value)
    elif issubclass(expected, PurePath) and isinstance(value, str):
        return expected(value)
    else:
        ok = isinstance(value, expected)
    if not ok:
        raise _Mismatch
    return value


def _finite(value: int | float) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an int beyond any float
        return False
