"""Sweep variants: a registered method with some config fields fixed, named ``method[field=value,...]``.

``--sweep winclip_plus.k_shot=1,2,4`` expands (:func:`expand_sweeps`) into ``winclip_plus[k_shot=1]``,
``winclip_plus[k_shot=2]`` and ``winclip_plus[k_shot=4]``; several fields of one method give their cartesian
product (``ours[epochs=2,msm_scales=[3,9]]``). A variant is a method of its own: the registry resolves its
name anywhere (``scrapbench.core.registry.get_spec``), so runs, resumes, leases, workers and model folders need
nothing else.

Values are YAML flow scalars and sequences: ``1,2,4`` are three ints; a tuple field takes bracketed lists
(``ours.msm_scales=[3,9],[3,9,15]`` are two values); strings with ``,[]=`` or spaces are quoted (``"a,b"``).
The name of a variant is canonical: its fields in the ``Config``'s declaration order, each value written by
:func:`format_value` after it was checked against the field's type. This module only parses and writes names;
checking values against a method's config is the registry's (``scrapbench.core.registry``).
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Iterable, Sequence
from typing import Any

import yaml

#: ``1e-3``: a float in YAML 1.2, a string in PyYAML's YAML 1.1; a sweep value means the float (as ``--set``).
_EXPONENT_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")
_NAME = re.compile(r"^(?P<base>[^\[\]]+)\[(?P<fields>.*)\]$", re.DOTALL)
_FIELD = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_PLAIN_STRING = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-/]*$")


class SweepError(ValueError):
    """A ``--sweep`` setting or a variant name that cannot be read; one line naming it."""


def is_variant(name: str) -> bool:
    """Whether ``name`` is written as a variant (``method[...]``); says nothing about its fields being valid."""
    return _NAME.match(name) is not None


def split_top_level(text: str, sep: str = ",") -> list[str]:
    """``text`` split at ``sep`` outside brackets and quotes: ``a[x=1,y=2],b`` → ``a[x=1,y=2]``, ``b``."""
    parts, depth, quote, start = [], 0, "", 0
    for i, char in enumerate(text):
        if quote:
            quote = "" if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
        elif char == sep and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


def parse_values(raw: str, where: str) -> list[Any]:
    """The comma-separated values of a sweep (YAML flow items; brackets make one tuple value)."""
    try:
        values = yaml.safe_load(f"[{raw}]")
    except (yaml.YAMLError, ValueError, RecursionError) as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SweepError(f"{where}: cannot read the values {raw!r} ({detail}); write them as 1,2,4 or, for a list "
                         f"field, [3,9],[3,9,15]") from exc
    if not isinstance(values, list) or not values:
        raise SweepError(f"{where}: no value (or an empty one) in {raw!r}; write them as 1,2,4")
    return [_exponent_floats(value) for value in values]


def _exponent_floats(value: Any) -> Any:
    if isinstance(value, str) and _EXPONENT_FLOAT.fullmatch(value.strip()):
        return float(value)
    if isinstance(value, list):
        return [_exponent_floats(item) for item in value]
    return value


def parse_name(name: str) -> tuple[str, dict[str, Any]] | None:
    """``winclip_plus[k_shot=2]`` → (``winclip_plus``, ``{"k_shot": 2}``) with values read as YAML (lists stay
    lists); ``None`` for a plain name. SweepError when the brackets hold no ``field=value`` list."""
    match = _NAME.match(name)
    if match is None:
        return None
    base, inner = match["base"].strip(), match["fields"]
    fields: dict[str, Any] = {}
    for item in split_top_level(inner):
        field, sep, raw = item.partition("=")
        field = field.strip()
        if not sep or not _FIELD.match(field) or not raw.strip():
            raise SweepError(f"method {name!r}: expected METHOD[FIELD=VALUE,...], e.g. winclip_plus[k_shot=2]")
        if field in fields:
            raise SweepError(f"method {name!r}: field {field!r} given twice")
        values = parse_values(raw, f"method {name!r}: {field}")
        if len(values) != 1:
            raise SweepError(f"method {name!r}: {field} has {len(values)} values; a variant has one (a list is "
                             f"written in brackets: [3,9])")
        fields[field] = values[0]
    return base, fields


def split_name(name: str) -> tuple[str, dict[str, Any]]:
    """(method, fixed fields) of a name: ``(name, {})`` for a plain name, or one that does not read as a variant
    (a report names what a run recorded, never refuses it)."""
    try:
        parsed = parse_name(name)
    except SweepError:
        return name, {}
    return parsed if parsed is not None else (name, {})


def format_value(value: Any) -> str:
    """A value as a variant name writes it: ``2``, ``0.5``, ``true``, ``null``, ``[3,9]``, ``name``, ``"a,b"``;
    :func:`parse_values` reads it back as the same value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(format_value(item) for item in value) + "]"
    text = str(value)
    if _PLAIN_STRING.match(text) and yaml.safe_load(text) == text:
        return text
    return json.dumps(text, ensure_ascii=False)


def variant_name(base: str, fields: Iterable[tuple[str, Any]]) -> str:
    """``base[f1=v1,f2=v2]`` in the order given (the caller passes the Config's field order)."""
    return f"{base}[" + ",".join(f"{field}={format_value(value)}" for field, value in fields) + "]"


def parse_sweep(setting: str) -> tuple[str, str, list[Any]]:
    """``winclip_plus.k_shot=1,2,4`` → (``winclip_plus``, ``k_shot``, ``[1, 2, 4]``)."""
    key, sep, raw = setting.partition("=")
    method, dot, field = key.strip().rpartition(".")
    if not sep or not dot or not method or not _FIELD.match(field) or not raw.strip():
        raise SweepError(f"--sweep {setting!r}: expected METHOD.FIELD=V1,V2,..., e.g. winclip_plus.k_shot=1,2,4")
    return method, field, parse_values(raw, f"--sweep {method}.{field}")


def expand_sweeps(settings: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
    """Each swept method → its variants' fields (the cartesian product of its swept fields, in the order given).

    A field swept twice for one method is refused; values are not checked here (the registry checks them
    when it resolves each variant's name).
    """
    per_method: dict[str, dict[str, list[Any]]] = {}
    for setting in settings:
        method, field, values = parse_sweep(setting)
        fields = per_method.setdefault(method, {})
        if field in fields:
            raise SweepError(f"--sweep {method}.{field} is given twice; list all its values in one --sweep")
        unique: list[Any] = []
        for value in values:
            if value not in unique:
                unique.append(value)
        fields[field] = unique
    return {method: [dict(zip(fields, combo, strict=True)) for combo in itertools.product(*fields.values())]
            for method, fields in per_method.items()}
