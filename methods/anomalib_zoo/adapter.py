"""The adapter: any row of ``models.ZOO`` as an :class:`AnomalyMethod`, trained and run by anomalib itself.

anomalib does the work: its model class (``anomalib.models.<Class>``) with its default pre-processor
(at the configured input size), trained with ``Engine.fit`` and run with ``Engine.predict``. What the
adapter adds is the data and the output: the train split becomes a Lightning datamodule of anomalib
``ImageBatch``es (one-class models get the normal images only), anomalib's post-processor is left off so
that the RAW anomaly maps come back (no normalisation or threshold), and each map is resized to its
image. Lightning's and anomalib's output (progress bars, logs, checkpoints) stays in the run's work
folder and out of the console. docs/fidelity.md lists where this departs from anomalib.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import numpy as np
import torch

from scrapbench.core.method import AnomalyMethod, FitContext, LearningType
from scrapbench.datasets.types import Split
from scrapbench.methods.anomalib_zoo.models import ZOO, ZooModel
from scrapbench.methods.common.checkpoints import WeightCheck

_QUIET_LOGGERS = ("anomalib", "lightning", "lightning.pytorch", "lightning.fabric", "lightning_fabric",
                  "pytorch_lightning")


class AnomalibAdapter(AnomalyMethod):
    """An anomalib image model; subclasses (one per table row) are made by :func:`_method_class`."""

    zoo: ClassVar[ZooModel]

    def __init__(self, config: Any, class_names: Sequence[str]) -> None:
        super().__init__(config, class_names)
        self._module: Any = None  # the anomalib AnomalibModule, once fitted or loaded
        self._device = "cpu"

    # -- class data ----------------------------------------------------------------------------
    @classmethod
    def learning_type_for(cls, config: Any) -> LearningType:
        field_name = cls.zoo.supervised_field
        if field_name is not None and getattr(config, field_name):
            return LearningType.SUPERVISED
        return LearningType(cls.zoo.learning_type)

    @classmethod
    def weight_checks(cls, config: Any, name: str) -> list[WeightCheck]:
        """Each pretrained backbone the config loads (timm: Hugging Face / torch hub cache; torchvision:
        torch hub cache), or one unmet row when the model cannot run here at all."""
        from scrapbench.methods.anomalib_zoo.weights import backbone_checks

        if cls.zoo.unavailable is not None:
            return [WeightCheck(f"anomalib {cls.zoo.anomalib_class}", f"{name}", "missing",
                                where="not runnable offline", detail=cls.zoo.unavailable)]
        checks, seen = [], set()
        for source, fields in (("timm", cls.zoo.timm_backbones), ("torchvision", cls.zoo.torchvision_backbones)):
            for field_name in fields:
                backbone = getattr(config, field_name)
                if (source, backbone) not in seen:  # UniNet's student and teacher: one file
                    seen.add((source, backbone))
                    setting = f"{name}.{field_name}={backbone}, pretrained={config.pretrained}"
                    checks += backbone_checks(source, backbone, setting, config.pretrained)
        return checks

    def weights_info(self) -> dict[str, Any]:
        backbones = {f: getattr(self.config, f) for f in (*self.zoo.timm_backbones, *self.zoo.torchvision_backbones)}
        return {"random_init": not self.config.pretrained, "anomalib_model": self.zoo.anomalib_class, **backbones}

    # -- building ------------------------------------------------------------------------------
    def _require_runnable(self) -> None:
        if self.zoo.unavailable is not None:
            raise RuntimeError(f"{self.zoo.method_name} cannot run here: {self.zoo.unavailable}")

    def _build(self, pretrained: bool) -> Any:
        """anomalib's model with its default pre-processor at ``image_size`` (centre crop removed) and no
        post-processor, evaluator or visualiser; backbones random unless ``pretrained``. Call it in ``_quiet``."""
        import anomalib.models

        cls = getattr(anomalib.models, self.zoo.anomalib_class)
        kwargs = {name: _plain(getattr(self.config, name)) for name, _, _ in self.zoo.params}
        if self.zoo.pre_trained_arg:
            kwargs["pre_trained"] = pretrained
        size = (self.config.image_size, self.config.image_size)
        with contextlib.nullcontext() if pretrained else _random_backbones():
            pre_processor = _pre_processor(cls, size)
            return cls(**kwargs, pre_processor=pre_processor, post_processor=False, evaluator=False,
                       visualizer=False)

    def to_device(self, device: str) -> None:
        self._device = device
        if self._module is not None:
            self._module.to(device)

    # -- fit / predict -------------------------------------------------------------------------
    def fit(self, train: Split, ctx: FitContext) -> None:
        self._require_runnable()
        from lightning.pytorch import seed_everything

        supervised = self.learning_type_for(self.config) is LearningType.SUPERVISED
        indices = list(range(len(train))) if supervised else train.normal_indices()
        if not indices:
            raise ValueError(f"{self.zoo.method_name}: the train split has no normal images to learn from")
        self._device = ctx.device
        with _quiet(ctx.verbose, ctx.workdir / "anomalib.log"):
            seed_everything(ctx.seed, verbose=False)
            self._module = self._build(self.config.pretrained)
            data = _SplitData(train.subset(indices), _resize_of(self._module), self.config.batch_size, ctx.seed)
            engine = self._engine(ctx.workdir / "anomalib", ctx.device, max_epochs=self.config.epochs,
                                  max_steps=self.config.max_steps)
            engine.fit(self._module, datamodule=data)
        self._module.eval()

    def predict(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        self._require_runnable()
        if self._module is None:
            raise RuntimeError(f"{self.zoo.method_name}: predict before fit or load")
        if not images:
            return []
        data = _SplitData(None, _resize_of(self._module), self.config.batch_size, 0, images=images)
        with _quiet(False), tempfile.TemporaryDirectory(prefix="scrapbench-anomalib-") as scratch:
            engine = self._engine(Path(scratch), self._device)
            batches = engine.predict(self._module, datamodule=data, return_predictions=True)
        raw = torch.cat([_map_tensor(batch.anomaly_map) for batch in batches]).float().cpu()
        return [_resize_map(amap, image.shape[:2]) for amap, image in zip(raw, images, strict=True)]

    def _engine(self, root: Path, device: str, **trainer: Any) -> Any:
        """anomalib's ``Engine`` writing only under ``root``, in Lightning's barebones mode: no logger, no
        checkpoint files, no progress bar or model summary (the fitted state is saved by scrapbench)."""
        from anomalib.engine import Engine

        accelerator = "gpu" if str(device).startswith("cuda") else "cpu"
        return Engine(default_root_dir=root, logger=False, accelerator=accelerator, devices=1, barebones=True,
                      **trainer)

    # -- state ---------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        if self._module is None:
            raise RuntimeError(f"{self.zoo.method_name}: nothing fitted to save")
        return {"module": {k: v.detach().cpu().contiguous() for k, v in self._module.state_dict().items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._require_runnable()
        tensors = state["module"]
        with _quiet(False):
            module = self._build(False)  # every weight comes from ``state``: nothing pretrained is read
        _fit_buffers(module, tensors)
        module.load_state_dict(tensors, strict=True)
        self._module = module.to(self._device).eval()


class _SplitData:
    """A Lightning datamodule of anomalib ``ImageBatch``es: the train split, or images to predict.

    Images (and masks) are resized to the input size here with the pre-processor's own ``Resize``, so that
    images of different sizes share a batch; the pre-processor's resize is then the identity.
    """

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        from lightning.pytorch import LightningDataModule

        class SplitData(LightningDataModule):
            name = "scrapbench"
            category = ""

            def __init__(self, split: Split | None, resize: Any, batch_size: int, seed: int,
                         images: Sequence[np.ndarray] | None = None) -> None:
                super().__init__()
                self.split, self.resize, self.images = split, resize, images
                self.batch_size, self.seed = batch_size, seed

            def train_dataloader(self) -> Any:
                return self._loader(_Items(self.split, self.resize), shuffle=True)

            def predict_dataloader(self) -> Any:
                return self._loader(_Items(self.images, self.resize), shuffle=False)

            def _loader(self, items: Any, shuffle: bool) -> Any:
                from anomalib.data import ImageBatch

                generator = torch.Generator().manual_seed(self.seed)
                return torch.utils.data.DataLoader(items, batch_size=self.batch_size, shuffle=shuffle,
                                                   generator=generator, collate_fn=ImageBatch.collate)

        return SplitData(*args, **kwargs)


class _Items(torch.utils.data.Dataset):
    """anomalib ``ImageItem``s from samples (image, mask) or bare images (empty masks)."""

    def __init__(self, source: Split | Sequence[np.ndarray], resize: Any) -> None:
        self.source, self.resize = source, resize

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> Any:
        from anomalib.data import ImageItem
        from torchvision.transforms.v2.functional import to_dtype, to_image
        from torchvision.tv_tensors import Image, Mask

        entry = self.source[index]
        image = entry if isinstance(entry, np.ndarray) else entry.image
        mask = np.zeros(image.shape[:2], bool) if isinstance(entry, np.ndarray) else entry.mask > 0
        tensor = to_dtype(to_image(np.ascontiguousarray(image)), torch.float32, scale=True)  # as anomalib's read_image
        tensor, gt_mask = self.resize(Image(tensor), Mask(torch.from_numpy(mask)))  # masks: nearest
        return ImageItem(image=tensor, gt_mask=gt_mask, gt_label=torch.tensor(bool(gt_mask.any())),
                         image_path=f"{index}.png")


def _map_tensor(amap: torch.Tensor) -> torch.Tensor:
    """A batch of maps as B×H×W (anomalib gives B×1×H×W or B×H×W)."""
    return amap.reshape(amap.shape[0], *amap.shape[-2:])


def _resize_map(amap: torch.Tensor, shape: tuple[int, int]) -> np.ndarray:
    """One raw map bilinearly resized to its image (unchanged when the sizes agree)."""
    if tuple(amap.shape) != tuple(shape):
        amap = torch.nn.functional.interpolate(amap[None, None], size=shape, mode="bilinear", align_corners=False)[0, 0]
    return amap.numpy().astype(np.float32)


def _pre_processor(cls: type, size: tuple[int, int]) -> Any:
    """anomalib's default pre-processor of ``cls`` resizing to ``size`` (its own interpolation), without a centre
    crop: the evaluator scores every pixel of the image (for models that crop, the table's input size is
    anomalib's crop size, so the network sees anomalib's resolution)."""
    from anomalib.pre_processing import PreProcessor
    from torchvision.transforms.v2 import CenterCrop, Compose, Resize

    try:
        transform = cls.configure_pre_processor(image_size=size).transform
    except ValueError:  # a crop size fixed in the model (MH-PatchCore: 224) larger than ``size``
        transform = cls.configure_pre_processor().transform
    steps = transform.transforms if isinstance(transform, Compose) else [transform]
    kept = [Resize(size, interpolation=t.interpolation, antialias=t.antialias) if isinstance(t, Resize) else t
            for t in steps if not isinstance(t, CenterCrop)]
    return PreProcessor(transform=Compose(kept))


def _resize_of(module: Any) -> Any:
    """The ``Resize`` of a model's pre-processor (what the adapter resizes training and test images with)."""
    from torchvision.transforms.v2 import Compose, Resize

    transform = module.pre_processor.transform
    for step in transform.transforms if isinstance(transform, Compose) else [transform]:
        if isinstance(step, Resize):
            return step
    raise RuntimeError(f"{type(module).__name__}'s pre-processor has no Resize: {transform}")


def _fit_buffers(module: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Give buffers whose size is learned (PatchCore's memory bank, PaDiM's Gaussians) the saved shape,
    so that a strict ``load_state_dict`` fills them."""
    for key, tensor in state.items():
        owner_name, _, buffer = key.rpartition(".")
        owner = module.get_submodule(owner_name) if owner_name else module
        current = owner._buffers.get(buffer) if hasattr(owner, "_buffers") else None
        if buffer in getattr(owner, "_buffers", {}) and (current is None or current.shape != tensor.shape):
            owner._buffers[buffer] = torch.empty_like(tensor)


def _plain(value: Any) -> Any:
    """Config tuples as the lists anomalib's signatures name."""
    return list(value) if isinstance(value, tuple) else value


@contextlib.contextmanager
def _random_backbones() -> Iterator[None]:
    """While anomalib builds a model: timm and torchvision backbones random-initialised, nothing read.

    anomalib calls ``timm.create_model(..., pretrained=...)`` and ``torchvision.models.<arch>(weights=
    get_model_weights(arch).DEFAULT)``; several models hard-wire pretrained weights with no switch, so
    this is the one way to build them without the downloaded files (marked random_init in the results).
    """
    import timm
    import torchvision.models

    create_model, get_model_weights = timm.create_model, torchvision.models.get_model_weights

    def random_create_model(*args: Any, **kwargs: Any) -> Any:
        kwargs["pretrained"] = False
        return create_model(*args, **kwargs)

    timm.create_model = random_create_model
    torchvision.models.get_model_weights = lambda name: SimpleNamespace(DEFAULT=None)
    try:
        yield
    finally:
        timm.create_model, torchvision.models.get_model_weights = create_model, get_model_weights


@contextlib.contextmanager
def _quiet(verbose: bool, log: Path | None = None) -> Iterator[None]:
    """Lightning's and anomalib's logs, prints and warnings off the console (unless ``verbose``); what they
    print goes to ``log`` when given (the run's work folder), else nowhere."""
    if verbose:
        yield
        return
    with warnings.catch_warnings(), contextlib.ExitStack() as stack:
        warnings.simplefilter("ignore")
        import anomalib.engine  # noqa: F401  (importing lightning sets its loggers' levels: import first)

        sink = stack.enter_context(open(log, "a", encoding="utf-8")) if log is not None else io.StringIO()
        stack.enter_context(contextlib.redirect_stdout(sink))
        stack.enter_context(contextlib.redirect_stderr(sink))
        loggers = [logging.getLogger(name) for name in _QUIET_LOGGERS]
        levels = [logger.level for logger in loggers]
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels, strict=True):
                logger.setLevel(level)


# -- one class per table row ---------------------------------------------------------------------
_ADAPTER_FIELDS: tuple[tuple[str, Any], ...] = (
    ("image_size", int), ("epochs", int), ("max_steps", int), ("batch_size", int), ("pretrained", bool))


def _method_class(row: ZooModel) -> type[AnomalibAdapter]:
    """The method class of ``row``: its Config (the model's hyperparameters + the adapter's), presets, type."""
    defaults = {"image_size": row.image_size, "epochs": row.epochs, "max_steps": row.max_steps,
                "batch_size": row.batch_size, "pretrained": True}
    fields = [(name, kind, dataclasses.field(default=defaults[name])) for name, kind in _ADAPTER_FIELDS]
    fields += [(name, kind, dataclasses.field(default=default)) for name, kind, default in row.params]
    config = dataclasses.make_dataclass(f"{row.class_name}Config", fields, frozen=True)
    config.__module__ = __name__  # importable by name: configs travel to worker processes
    config.__doc__ = f"{row.anomalib_class}'s constructor arguments (anomalib's defaults) and the adapter's fields."
    cls = type(row.class_name, (AnomalibAdapter,), {
        "__module__": __name__, "__doc__": row.description, "Config": config, "zoo": row,
        "presets": {"smoke": dict(row.smoke), "cpu": dict(row.cpu)},
        "learning_type": LearningType(row.learning_type),
        "display_name": row.description.split(":")[0],  # the report's row label, e.g. "PaDiM (anomalib)"
    })
    return cls


for _row in ZOO:
    _cls = _method_class(_row)
    globals()[_row.class_name] = _cls
    globals()[_cls.Config.__name__] = _cls.Config
