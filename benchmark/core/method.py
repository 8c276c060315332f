"""The one contract between methods and the rest of scrapbench.

A method is configured from a frozen dataclass, fitted on the train split (a no-op for zero-shot
methods), and turns RGB images into anomaly maps: float32, one per image, at the image's
resolution, higher = more anomalous. The evaluator never imports a method; it only sees maps.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Sequence
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from scrapbench.core.config_check import checked_value, field_types, legacy_value
from scrapbench.datasets.types import Split

if TYPE_CHECKING:
    from scrapbench.methods.common.checkpoints import WeightCheck


class LearningType(str, Enum):
    ZERO_SHOT = "zero_shot"
    FEW_SHOT = "few_shot"
    SUPERVISED = "supervised"
    #: Trained on normal images only (anomalib's one-class models; docs/protocols.md).
    ONE_CLASS = "one_class"


class WeightsError(FileNotFoundError):
    """A configured pretrained weight is not available; the message says which file and where."""


class ModelFolderError(ValueError):
    """A saved model folder is refused (old pickle format, unregistered method, corrupt or edited file)."""


@dataclasses.dataclass(frozen=True)
class FitContext:
    """What a method's ``fit`` gets besides data: seed, device, a private work folder, the classes."""

    seed: int
    device: str
    workdir: Path
    class_names: tuple[str, ...]
    show_progress: bool = True
    verbose: bool = False  # third-party libraries may print their own output to the console
    #: The object the images show, in words ("metal nut"), for prompts that name it (WinCLIP); ``None``
    #: when the data has no single object (the steel scrap). Filled from ``Dataset.object_name``.
    object_name: str | None = None
    #: Resolved numeric precision of the networks, "fp32" / "bf16" / "fp16" (``scrapbench.core.precision``).
    precision: str = "fp32"


class AnomalyMethod(ABC):
    """Base class for every method plugin.

    What the rest of scrapbench knows about a method without building it is class data and
    classmethods here: ``Config`` (a frozen dataclass whose defaults are the paper's configuration),
    ``presets`` (the method's own smoke/cpu values; the rule that applies them is
    ``scrapbench.core.presets``), ``learning_type`` (or :meth:`learning_type_for` when the config
    decides it), ``weights_field`` and :meth:`weight_checks`. Building a method may load weights, so
    the planner and ``scrapbench weights check`` never build one to ask.
    """

    Config: ClassVar[type]
    presets: ClassVar[dict[str, dict[str, Any]]] = {}
    learning_type: ClassVar[LearningType]
    #: The config field that ``--weights`` sets (e.g. ``"clip_pretrained"``); ``None``: no weights.
    weights_field: ClassVar[str | None] = None
    #: How reports name this method's rows (any text: reports escape it); ``None``: the paper's name of a
    #: built-in method, else the registered name. Recorded in run.json, so the report needs no import.
    display_name: ClassVar[str | None] = None
    #: The name it is registered under; set only by ``scrapbench.core.registry.instantiate`` (which
    #: ``create_method`` and the model-folder loader use); ``None`` for a method built by hand.
    registry_name: str | None = None
    #: Precision the networks run in ("fp32" / "bf16" / "fp16", see ``scrapbench.core.precision``): ``fit``
    #: takes it from ``FitContext.precision``; ``scrapbench predict`` sets it on a loaded method.
    precision: str = "fp32"

    def __init__(self, config: Any, class_names: Sequence[str]) -> None:
        self.config = config
        self.class_names = tuple(class_names)

    # -- the protocol -------------------------------------------------------------------------
    @abstractmethod
    def fit(self, train: Split, ctx: FitContext) -> None:
        """Learn from the train split (k normal references, prompts, a whole network...)."""

    @abstractmethod
    def predict(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Anomaly maps (float32, H×W of each input image, higher = more anomalous)."""

    def predict_with_scores(self, images: Sequence[np.ndarray]) -> tuple[list[np.ndarray], list[float]]:
        """Anomaly maps and one image-level anomaly score per image.

        Default: each map's maximum. Methods whose reference implementation scores images another
        way (AnomalyCLIP's and WinCLIP's class-token scores) override this.
        """
        maps = self.predict(images)
        return maps, [float(np.max(amap)) for amap in maps]

    def predict_classes(self, images: Sequence[np.ndarray]) -> list[np.ndarray] | None:
        """Optional per-class maps (K×H×W) for methods that know classes; ``None`` otherwise."""
        return None

    def predict_with_classes(self, images: Sequence[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray] | None]:
        """:meth:`predict` and :meth:`predict_classes` together. The default calls both; methods that
        get both from one forward pass override it, so ``scrapbench predict`` runs the network once."""
        return self.predict(images), self.predict_classes(images)

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Everything ``fit`` learned, as plain data: nested dicts (string keys) and lists of tensors,
        numpy arrays and JSON values. Saved as safetensors + JSON (``scrapbench.storage.state_io``); anything
        else (bytes, objects, a pickled module) is refused on save, so loading never runs code."""

    @abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned (tuples come back as lists), on a method built with the same config."""

    @classmethod
    def seed_independent(cls, config: Any) -> bool:
        """Whether ``fit`` and ``predict`` give the same result for every seed with ``config`` (nothing
        drawn from the run's seed: no sampling, no initialisation from it). The runner then computes one
        seed and copies it for the others (``scrapbench.run.seed_reuse``). Default ``False``; say ``True``
        only when it provably holds."""
        return False

    @classmethod
    def learning_type_for(cls, config: Any) -> LearningType:
        """The learning type of this method with ``config``: ``learning_type``, unless the config decides
        it (WinCLIP: ``k_shot``), in which case the method overrides this."""
        return cls.learning_type

    @classmethod
    def weight_checks(cls, config: Any, name: str) -> list[WeightCheck]:
        """One :class:`~scrapbench.methods.common.checkpoints.WeightCheck` per pretrained weight ``config``
        names, in the order the method loads them, read without building the method or loading a model
        (``scrapbench.core.weights``). ``name``: the registered name, for the settings the rows show.
        Default: no weights."""
        return []

    # -- provenance ----------------------------------------------------------------------------
    def weights_info(self) -> dict[str, Any]:
        """Where the pretrained weights came from; ``{"random_init": True}`` marks untrained rows."""
        return {"random_init": False}

    def parameter_counts(self) -> tuple[int, int] | None:
        """``(total, trained)``: the parameters of the networks the fitted method holds, and those its fit
        optimises; ``None`` for a method without torch networks. Default: every ``torch.nn.Module`` reachable
        from the instance's attributes (:func:`scrapbench.core.parameters.held_modules`), each parameter
        counted once, trained = ``requires_grad``. Override when the flags do not say what the fit trains
        (a network trained by a third-party trainer, a tower that is frozen but not flagged)."""
        from scrapbench.core.parameters import count_parameters, held_modules

        modules = held_modules(self)
        return count_parameters(modules) if modules else None

    def to_device(self, device: str) -> None:  # noqa: B027 (an optional hook: most methods override it)
        """Move the networks to ``device`` (a loaded method, before its state is restored). Default: nothing to move."""

    # -- save / load ---------------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        """Write config, class names and fitted state to ``directory`` (see ``scrapbench.storage.model_folder``)."""
        from scrapbench.storage.model_folder import save_method

        return save_method(self, directory)

    @classmethod
    def load(cls, directory: str | Path, device: str = "cpu") -> AnomalyMethod:
        """Rebuild a fitted method saved by :meth:`save` (``cls`` may be the base class).

        Raises :class:`ModelFolderError` (one line: the file and the fix) for a folder it refuses.
        """
        from scrapbench.storage.model_folder import load_method

        return load_method(directory, device=device, expected=None if cls is AnomalyMethod else cls)


def config_to_dict(config: Any) -> dict[str, Any]:
    """A JSON-friendly dict of a config dataclass (tuples become lists, paths strings)."""

    def plain(value: Any) -> Any:
        if isinstance(value, (tuple, list)):
            return [plain(v) for v in value]
        if isinstance(value, Path):
            return str(value)
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return {f.name: plain(getattr(config, f.name)) for f in dataclasses.fields(config)}


def config_from_dict(config_cls: type, values: dict[str, Any], where: str | None = None) -> Any:
    """Build ``config_cls`` from plain values: unknown fields refused, each value checked against its field's
    type (:mod:`scrapbench.core.config_check`; lists become tuples). ``where`` starts an error's line
    (default: the class name)."""
    where = where or config_cls.__name__
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    unknown = sorted((key for key in values if key not in fields), key=str)
    if unknown:
        raise ValueError(f"{where}: unknown config fields {unknown}; known: {sorted(fields)}")
    return config_cls(**{key: config_value(config_cls, key, value, f"{where}: {key}") for key, value in values.items()})


def config_value(config_cls: type, key: str, value: Any, where: str) -> Any:
    """``value`` for field ``key`` of ``config_cls``, checked against the field's type (``where`` starts the
    error's line); a field without a resolvable type keeps the value (lists become tuples)."""
    types = field_types(config_cls)
    return checked_value(value, types[key], where) if key in types else legacy_value(value)


def check_scores(scores: Sequence[float], images: Sequence[np.ndarray], method: str) -> list[float]:
    """Validate a method's image scores: one finite number per image."""
    if len(scores) != len(images):
        raise RuntimeError(f"{method}: returned {len(scores)} image scores for {len(images)} images")
    out = [float(score) for score in scores]
    bad = [i for i, score in enumerate(out) if not np.isfinite(score)]
    if bad:
        raise RuntimeError(f"{method}: image score {bad[0]} is NaN or inf")
    return out


def check_maps(maps: Sequence[np.ndarray], images: Sequence[np.ndarray], method: str) -> list[np.ndarray]:
    """Validate a method's output: one finite float32 H×W map per image."""
    if len(maps) != len(images):
        raise RuntimeError(f"{method}: returned {len(maps)} maps for {len(images)} images")
    out = []
    for i, (amap, image) in enumerate(zip(maps, images, strict=True)):
        amap = np.asarray(amap, dtype=np.float32)
        if amap.shape != image.shape[:2]:
            raise RuntimeError(f"{method}: map {i} has shape {amap.shape}, image is {image.shape[:2]}")
        if not np.isfinite(amap).all():
            raise RuntimeError(f"{method}: map {i} contains NaN or inf")
        out.append(amap)
    return out
