"""The method registry: names → method classes, loaded lazily.

Built-in methods live in a table of ``"module:Class"`` targets (``scrapbench.methods.BUILTIN``) so
that heavy libraries (ultralytics, segment-anything, open_clip) load only when their method is
chosen. Third-party packages add methods through the ``scrapbench.methods`` entry-point group;
code can also call :func:`register_method` directly.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, get_origin

from scrapbench.core.method import AnomalyMethod

ENTRY_POINT_GROUP = "scrapbench.methods"
TABLE2 = "table2"
ABLATION = "ablation"
#: The suite of sweep variants (``method[field=value]``): reported in the sweep tables, not in Table 2 / 3.
SWEEP = "sweep"
ZOO = "zoo"  # anomalib's image models that run offline (opt-in, never part of `all`)


@dataclass(frozen=True)
class MethodSpec:
    """One registered name: where the class lives, what it is, which suites list it.

    ``overrides`` are config fields fixed for this name (ablation variants share a class).
    """

    name: str
    target: str | type[AnomalyMethod]
    description: str
    suites: tuple[str, ...] = ()
    overrides: dict[str, Any] = field(default_factory=dict)

    @property
    def target_path(self) -> str:
        """``"module:Class"`` of the target (what a model folder's ``method.json`` must name)."""
        return _target_path(self.target)

    def load_class(self) -> type[AnomalyMethod]:
        if isinstance(self.target, type):
            return self.target
        module_name, _, attr = self.target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ImportError(
                f"method {self.name!r} needs module {module_name!r}, which failed to import: {exc}"
            ) from exc
        return getattr(module, attr)


_REGISTRY: dict[str, MethodSpec] = {}
_VARIANTS: dict[str, MethodSpec] = {}  # resolved sweep variants (scrapbench.core.variants), by the name asked for
_loaded_builtins = False


def register_method(
    name: str, description: str = "", suites: Iterable[str] = (), **overrides: Any
) -> Callable[[type[AnomalyMethod]], type[AnomalyMethod]]:
    """Class decorator: ``@register_method("my_method", "what it does")``."""

    def decorator(cls: type[AnomalyMethod]) -> type[AnomalyMethod]:
        add_spec(MethodSpec(name, cls, description or (cls.__doc__ or "").strip().split("\n")[0],
                            tuple(suites), dict(overrides)))
        return cls

    return decorator


def add_spec(spec: MethodSpec) -> None:
    """Register a spec; a name may be registered once (fails loudly on duplicates)."""
    _ensure_builtins()
    existing = _REGISTRY.get(spec.name)
    if existing is not None and _target_path(existing.target) != _target_path(spec.target):
        raise ValueError(f"method name {spec.name!r} is already registered ({existing.target})")
    _REGISTRY[spec.name] = spec  # a decorator met after its entry point refines the entry


def adopt_specs(specs: Iterable[MethodSpec]) -> None:
    """Register another process's specs here (a worker adopting its driver's methods: plugins, tests).

    A name already known here with the same class is kept; one with another class fails as in :func:`add_spec`.
    """
    for spec in specs:
        try:
            known = get_spec(spec.name)
        except KeyError:
            add_spec(spec)
        else:
            if known.target_path != spec.target_path:
                add_spec(spec)  # raises: one name, two classes


def _target_path(target: str | type) -> str:
    return target if isinstance(target, str) else f"{target.__module__}:{target.__qualname__}"


def _ensure_builtins() -> None:
    global _loaded_builtins
    if _loaded_builtins:
        return
    _loaded_builtins = True
    from scrapbench.methods import BUILTIN

    for spec in BUILTIN:
        _REGISTRY[spec.name] = spec
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in _REGISTRY:
            continue
        _REGISTRY[ep.name] = MethodSpec(ep.name, ep.value, f"plugin from {ep.value}", (TABLE2,))


def list_methods(suite: str | None = None) -> list[MethodSpec]:
    """Registered specs in registration order, optionally only those of one suite."""
    _ensure_builtins()
    return [s for s in _REGISTRY.values() if suite is None or suite in s.suites]


def get_spec(name: str) -> MethodSpec:
    """The spec of a registered name, or of a sweep variant ``method[field=value,...]`` (its method's class with
    those fields fixed, under the variant's canonical name). KeyError: an unknown method; ValueError (one line
    with the field list): a variant's unknown field or a value of the wrong type."""
    _ensure_builtins()
    if name in _REGISTRY:
        return _REGISTRY[name]
    if name in _VARIANTS:
        return _VARIANTS[name]
    from scrapbench.core.variants import parse_name

    parsed = parse_name(name)
    if parsed is not None:
        spec = _variant_spec(name, *parsed)
        _VARIANTS[name] = spec
        return spec
    close = difflib.get_close_matches(name, list(_REGISTRY), n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise KeyError(f"unknown method {name!r}{hint} (`scrapbench list` shows all)")


def _variant_spec(name: str, base_name: str, fields: dict[str, Any]) -> MethodSpec:
    """``base_name``'s spec with ``fields`` fixed (each checked against its config field), named canonically."""
    from scrapbench.core.method import config_value
    from scrapbench.core.variants import is_variant, variant_name

    if is_variant(base_name):
        raise ValueError(f"method {name!r}: a variant of a variant; write all fields in one pair of brackets")
    base = get_spec(base_name)
    config_cls = base.load_class().Config
    known = [f.name for f in dataclasses.fields(config_cls)]
    unknown = [field_name for field_name in fields if field_name not in known]
    if unknown:
        raise ValueError(f"method {name!r}: {base_name} has no config field {unknown[0]!r}; its fields: "
                         f"{', '.join(known)}")
    checked = {key: config_value(config_cls, key, value, f"method {name!r}: {key}") for key, value in fields.items()}
    ordered = [(key, checked[key]) for key in known if key in checked]
    canonical = variant_name(base.name, ordered)
    if canonical != name and canonical in _VARIANTS:
        return _VARIANTS[canonical]
    spec = MethodSpec(canonical, base.target, f"{base.description} ({canonical[len(base.name):]})", (SWEEP,),
                      {**base.overrides, **dict(ordered)})
    _VARIANTS[canonical] = spec
    return spec


def variant_base(name: str) -> str:
    """The registered method a name belongs to: ``winclip_plus`` for ``winclip_plus[k_shot=2]``, else ``name``."""
    from scrapbench.core.variants import parse_name

    parsed = parse_name(name)
    return name if parsed is None else parsed[0]


def resolve_method_names(names: Iterable[str]) -> list[str]:
    """Expand ``all`` (the paper's Table 2 set), ``ablation`` (Table 3) and ``zoo`` (anomalib's models that run
    offline); keep order, no repeats. Sweep variants (``method[field=value]``) are resolved to their canonical
    names."""
    from scrapbench.core.variants import split_top_level

    out: list[str] = []
    for raw in names:
        for name in (n.strip() for n in split_top_level(raw)):
            if not name:
                continue
            expanded = [s.name for s in list_methods(TABLE2 if name == "all" else name)] \
                if name in ("all", ABLATION, ZOO) else [get_spec(name).name]
            out.extend(n for n in expanded if n not in out)
    return out


def build_config(name: str, preset: str = "cpu", overrides: dict[str, Any] | None = None) -> Any:
    """The config of method ``name`` under ``preset`` and ``overrides`` (layered by ``scrapbench.core.presets``)."""
    from scrapbench.core.presets import layered_config  # loads the synthetic generator: only when needed

    spec = get_spec(name)
    return layered_config(spec.load_class(), name, preset, spec.overrides, overrides)


def instantiate(name: str, cls: type[AnomalyMethod], config: Any, class_names: Sequence[str]) -> AnomalyMethod:
    """Build ``cls`` as the registered method ``name``: the one place a method gets its ``registry_name``."""
    method = cls(config, class_names)
    method.registry_name = name
    return method


def create_method(
    name: str, class_names: Iterable[str], preset: str = "cpu", overrides: dict[str, Any] | None = None
) -> AnomalyMethod:
    """Build a method by registered name, e.g. ``create_method("winclip", classes, preset="smoke")``."""
    return instantiate(name, get_spec(name).load_class(), build_config(name, preset, overrides), tuple(class_names))


def config_fields(name: str) -> list[str]:
    return [f.name for f in dataclasses.fields(get_spec(name).load_class().Config)]


def sweep_names(settings: Sequence[str]) -> list[str]:
    """The canonical variant names of ``--sweep METHOD.FIELD=V1,V2`` settings (the cartesian product of one
    method's swept fields), in the order given. Before anything runs, an unknown method raises KeyError, an
    unknown field or a value of the wrong type ValueError: one line naming the ``--sweep`` (and the field list)."""
    from scrapbench.core.config_check import field_types, type_name
    from scrapbench.core.method import config_value
    from scrapbench.core.variants import expand_sweeps, is_variant, parse_sweep, variant_name

    for setting in settings:
        method, field_name, values = parse_sweep(setting)
        where = f"--sweep {method}.{field_name}"
        if is_variant(method):
            raise ValueError(f"{where}: sweep a registered method, not a variant")
        config_cls = get_spec(method).load_class().Config
        types = field_types(config_cls)
        fields = "; ".join(f"{f.name} ({type_name(types[f.name])})" if f.name in types else f.name
                           for f in dataclasses.fields(config_cls))
        if field_name not in {f.name for f in dataclasses.fields(config_cls)}:
            raise ValueError(f"{where}: {method} has no config field {field_name!r}; its fields: {fields}")
        for value in values:
            try:
                config_value(config_cls, field_name, value, where)
            except ValueError as exc:
                hint = "; a list value is written in brackets, one per value: [3,9],[3,9,15]" \
                    if get_origin(types.get(field_name)) in (tuple, list) and not isinstance(value, list) else ""
                raise ValueError(f"{exc}{hint}; {method}'s fields: {fields}") from None
    out: list[str] = []
    for method, combos in expand_sweeps(settings).items():
        for fields in combos:
            name = get_spec(variant_name(method, fields.items())).name
            if name not in out:
                out.append(name)
    return out
