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
from typing import Any

from scrapbench.core.method import AnomalyMethod

ENTRY_POINT_GROUP = "scrapbench.methods"
TABLE2 = "table2"
ABLATION = "ablation"
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
    _ensure_builtins()
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise KeyError(f"unknown method {name!r}{hint} (`scrapbench list` shows all)")
    return _REGISTRY[name]


def resolve_method_names(names: Iterable[str]) -> list[str]:
    """Expand ``all`` (the paper's Table 2 set), ``ablation`` (Table 3) and ``zoo`` (anomalib's models that run
    offline); keep order, no repeats."""
    out: list[str] = []
    for raw in names:
        for name in (n.strip() for n in raw.split(",")):
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
