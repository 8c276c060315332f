"""YOLOv8-seg / YOLO11-seg + SAM: the paper's detector baselines (Sec. 4.2).

A YOLO segmentation model (ultralytics) is fine-tuned on the anomaly classes: every anomalous
training patch with its instances (connected components per class, see ``instances.py``) plus a
seeded subsample of normal patches as background images. At test time each detected box prompts
SAM for the object's mask, and the anomaly map is, per pixel, the highest
``confidence × SAM mask`` over detections (``instances.detections_to_anomaly_map``); SAM's soft
mask (sigmoid of its logits) keeps the map graded at object borders.

Weights: ``paper`` fine-tunes ``yolov8x-seg.pt`` / ``yolo11x-seg.pt`` and prompts SAM ViT-H, all
from files the user provides (nothing is downloaded). A YOLO checkpoint is a pickled module and is
loaded only when its SHA-256 is the one configured in ``yolo_weights_sha256`` (``methods/yolo_sam/weights.py``).
``cpu`` / ``smoke`` train the ``n`` model from its YAML (random init) and use a tiny
random-initialised SAM; ``weights_info`` says so.
Everything ultralytics writes goes to ``ctx.workdir`` (see ``methods/yolo_sam/offline.py``), its console output
too (``ultralytics.log``) unless ``ctx.verbose``; our own progress bar shows the training.
"""

from __future__ import annotations

import functools
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TextIO

import numpy as np
import torch

from scrapbench.core.method import AnomalyMethod, FitContext, LearningType, WeightsError
from scrapbench.core.precision import autocast, check_precision
from scrapbench.datasets.types import Split
from scrapbench.methods.common.checkpoints import WeightCheck
from scrapbench.methods.common.instances import (
    detections_to_anomaly_map,
    detections_to_class_maps,
    training_indices,
)
from scrapbench.methods.common.sam_refiner import SamBoxRefiner, build_sam, inspect_sam
from scrapbench.methods.yolo_sam.dataset import write_yolo_dataset
from scrapbench.methods.yolo_sam.offline import (
    LOG_FILE_NAME,
    import_ultralytics,
    restored_torch_state,
    sandboxed_training,
    third_party_output,
)
from scrapbench.methods.yolo_sam.state import (
    YOLO_FAMILIES,
    YOLO_SCALES,
    YoloFamily,
    YoloScale,
    rebuild_yolo,
    yolo_architecture,
)
from scrapbench.methods.yolo_sam.weights import (
    RELEASES,
    check_loaded_yolo,
    inspect_yolo,
    trusted_copy,
    verify_yolo_checkpoint,
)

_YOLO_STRIDE = 32


@dataclass(frozen=True)
class YoloSamConfig:
    """Defaults are the paper's setting; ultralytics defaults where the paper says nothing."""

    yolo_family: YoloFamily = "yolov8"  # "yolov8" or "yolo11" (fixed by the registered name)
    yolo_scale: YoloScale = "x"  # paper: extra large
    # Pretrained checkpoint; "{yolo_family}"/"{yolo_scale}" are filled in, relative paths are
    # resolved against the working directory. None: build from the model YAML (random init).
    yolo_weights: str | None = "{yolo_family}{yolo_scale}-seg.pt"
    # The SHA-256 you vouch for: a .pt is a pickled module and is loaded only if it has this digest
    # (see methods/yolo_sam/weights.py). None: refused, and the error prints the file's digest.
    yolo_weights_sha256: str | None = None
    image_size: int | None = None  # YOLO input side; None: the training patch size (rounded up to 32)
    epochs: int = 100
    batch_size: int = 16
    nominal_batch_size: int = 64  # ultralytics `nbs`: gradients accumulate over this many images
    optimizer: str = "auto"
    lr0: float = 0.01  # ignored by ultralytics when optimizer="auto"
    warmup_epochs: float = 3.0
    mosaic: float = 1.0
    close_mosaic: int = 10
    val_images: int = 16  # anomalous training images ultralytics validates on (it requires a val set)
    max_background_fraction: float = 0.1  # normal patches as ≤ this share of the training images
    min_instance_area: int = 9  # pixels; smaller components are not training targets
    conf_threshold: float = 0.001  # as ultralytics validates: weak detections still rank pixels
    iou_threshold: float = 0.7  # NMS
    max_detections: int = 100
    sam_model: str = "vit_h"  # vit_h / vit_l / vit_b (published) or tiny (CPU runs, tests)
    sam_checkpoint: str | None = "sam_vit_h_4b8939.pth"  # None: random init
    sam_soft_masks: bool = True  # sigmoid(logits) instead of logits > 0
    sam_clip_to_box: bool = True  # zero SAM mask pixels outside the prompt box
    predict_batch_size: int = 8  # images per YOLO forward at test time (SAM embeds one image at a time)


_SMALL = {"yolo_scale": "n", "yolo_weights": None, "batch_size": 8, "nominal_batch_size": 8,
          "optimizer": "AdamW", "lr0": 0.002, "warmup_epochs": 1.0, "mosaic": 0.0, "close_mosaic": 0,
          "sam_model": "tiny", "sam_checkpoint": None}


class YoloSam(AnomalyMethod):
    """YOLO-seg fine-tuned on the anomaly classes; detected boxes prompt SAM for masks."""

    Config = YoloSamConfig
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "smoke": {**_SMALL, "epochs": 2, "val_images": 2},
        "cpu": {**_SMALL, "epochs": 20, "val_images": 4},
    }
    learning_type = LearningType.SUPERVISED
    weights_field = "yolo_weights"  # what `scrapbench run --weights FILE` sets

    def __init__(self, config: YoloSamConfig, class_names: Sequence[str]) -> None:
        super().__init__(config, class_names)
        if config.yolo_family not in YOLO_FAMILIES:
            raise ValueError(f"yolo_family must be one of {YOLO_FAMILIES}, got {config.yolo_family!r}")
        if config.yolo_scale not in YOLO_SCALES:
            raise ValueError(f"yolo_scale must be one of {YOLO_SCALES}, got {config.yolo_scale!r}")
        self._device = "cpu"
        self._yolo: torch.nn.Module | None = None
        self._image_size: int | None = None
        self._predictor: Any = None
        self._refiner: SamBoxRefiner | None = None
        self._sam_info: dict[str, Any] = {}
        self._sam_state: dict[str, torch.Tensor] | None = None
        self._config_dir: Path | None = None
        self._log_path: Path | None = None  # where ultralytics' output goes (the fit's work folder)
        self._verbose = False  # ultralytics may print to the console
        self._head_source_nc: int | None = None  # class count of the checkpoint fine-tuned from

    # -- weights -----------------------------------------------------------------------------
    def yolo_weights_path(self) -> Path | None:
        """The configured YOLO checkpoint, verified (see ``weights.py`` here), or ``None`` for a YAML-built model."""
        path = self._configured_yolo_path(self.config)
        if path is None:
            return None
        if not path.is_file():
            raise WeightsError(
                f"YOLO checkpoint {path.resolve()} not found. Download {path.name} from the ultralytics "
                f"assets ({RELEASES}) and put it there or set `yolo_weights` to its path; "
                f"yolo_weights=null trains from the model YAML (random init)."
            )
        verify_yolo_checkpoint(path, self.config.yolo_family, self.config.yolo_weights_sha256,
                               self._pin_setting(self.registry_name))
        return path

    @staticmethod
    def _configured_yolo_path(config: YoloSamConfig) -> Path | None:
        if config.yolo_weights is None:
            return None
        return Path(config.yolo_weights.format(yolo_family=config.yolo_family,
                                               yolo_scale=config.yolo_scale)).expanduser()

    @staticmethod
    def _pin_setting(name: str | None) -> str:
        """The setting that pins the checkpoint's SHA-256 (``METHOD.…`` for a method built by hand)."""
        return f"{name or 'METHOD'}.yolo_weights_sha256"

    @classmethod
    def _yolo_check(cls, config: YoloSamConfig, setting: str, pin_setting: str) -> WeightCheck:
        """A :class:`WeightCheck` of the configured YOLO checkpoint (static checks; nothing unpickled)."""
        return inspect_yolo(cls._configured_yolo_path(config), config.yolo_family, config.yolo_scale,
                            config.yolo_weights_sha256, setting, pin_setting)

    @classmethod
    def weight_checks(cls, config: YoloSamConfig, name: str) -> list[WeightCheck]:
        """The YOLO checkpoint, then SAM's."""
        return [cls._yolo_check(config, f"{name}.yolo_weights={config.yolo_weights}", cls._pin_setting(name)),
                inspect_sam(config.sam_model, config.sam_checkpoint, f"{name}.sam_checkpoint={config.sam_checkpoint}")]

    def inspect_weights(self, setting: str) -> WeightCheck:
        """A :class:`WeightCheck` of this method's YOLO checkpoint (static checks; nothing unpickled)."""
        return self._yolo_check(self.config, setting, self._pin_setting(self.registry_name))

    def _new_yolo(self, weights: Path | None, workdir: Path) -> Any:
        """A YOLO from the verified checkpoint (ultralytics reads a hashed copy in ``workdir``) or from the YAML."""
        from ultralytics import YOLO

        if weights is None:
            return YOLO(self._yaml_name(), task="segment")
        copy = trusted_copy(weights, self.config.yolo_weights_sha256, workdir)
        model = YOLO(str(copy), task="segment")
        check_loaded_yolo(model.model, weights, self.config.yolo_family, self.config.yolo_scale)
        return model

    def _yaml_name(self) -> str:
        return f"{self.config.yolo_family}{self.config.yolo_scale}-seg.yaml"

    def weights_info(self) -> dict[str, Any]:
        weights = self.config.yolo_weights
        if weights is not None:
            weights = weights.format(yolo_family=self.config.yolo_family, yolo_scale=self.config.yolo_scale)
        yolo_random = weights is None
        sam_random = self._sam_info.get("sam_random_init", self.config.sam_checkpoint is None)
        return {"random_init": yolo_random and sam_random, "yolo_random_init": yolo_random,
                "yolo_weights": weights, "yolo_weights_sha256": self.config.yolo_weights_sha256,
                "yolo_model": self._yaml_name(),
                "sam_model": self.config.sam_model, "sam_checkpoint": self.config.sam_checkpoint,
                "sam_random_init": sam_random}

    # -- fit -----------------------------------------------------------------------------------
    def fit(self, train: Split, ctx: FitContext) -> None:
        cfg = self.config
        weights = self.yolo_weights_path()  # fail before any work if a checkpoint is missing
        self._device = ctx.device
        self.precision = check_precision(ctx.precision)  # prediction only: training stays float32 (amp=False)
        self._set_sam(seed=ctx.seed)
        random.seed(ctx.seed)
        np.random.seed(ctx.seed % 2**32)
        torch.manual_seed(ctx.seed)

        anomalous, background = training_indices(train, cfg.max_background_fraction, ctx.seed,
                                                 cfg.min_instance_area)
        val = anomalous[:: max(1, math.ceil(len(anomalous) / max(cfg.val_images, 1)))][: cfg.val_images]
        workdir = Path(ctx.workdir)
        data_yaml = write_yolo_dataset(workdir / "yolo_data", train, anomalous + background, val,
                                       self.class_names, cfg.min_instance_area)
        self._image_size = cfg.image_size or _round_up(max(train[anomalous[0]].image.shape[:2]), _YOLO_STRIDE)

        self._config_dir = workdir / "ultralytics_config"
        self._log_path, self._verbose = workdir / LOG_FILE_NAME, ctx.verbose
        with third_party_output(self._log_path, ctx.verbose) as console:
            import_ultralytics(self._config_dir)
            model = self._new_yolo(weights, workdir)
            # Fine-tuning rebuilds the head's class branch at the checkpoint's width (see methods/yolo_sam/state.py).
            self._head_source_nc = int(model.model.model[-1].nc) if weights else None
            if ctx.show_progress and not ctx.verbose:  # ultralytics' own bars are part of its output
                _add_progress_bar(model, console, f"{cfg.yolo_family}_sam fit")
            with sandboxed_training(model, show_bars=ctx.show_progress and ctx.verbose):
                model.train(
                    data=str(data_yaml), epochs=cfg.epochs, imgsz=self._image_size, batch=cfg.batch_size,
                    nbs=cfg.nominal_batch_size, optimizer=cfg.optimizer, lr0=cfg.lr0,
                    warmup_epochs=cfg.warmup_epochs, mosaic=cfg.mosaic, close_mosaic=cfg.close_mosaic,
                    device=_ultralytics_device(ctx.device), workers=0, seed=ctx.seed, deterministic=True,
                    amp=False, plots=False, val=False, project=str(workdir / "ultralytics_runs"),
                    name="train", exist_ok=True, verbose=True,
                )
        # ultralytics reloads the final checkpoint (best.pt) after training; state_dict() stores it as
        # tensors + architecture (methods/yolo_sam/state.py), never as the pickled module ultralytics writes.
        self._set_yolo(model.model)

    def _set_yolo(self, model: torch.nn.Module) -> None:
        model = model.float().cpu().eval()
        model.names = dict(enumerate(self.class_names))
        self._yolo, self._predictor = model, None

    def _set_sam(self, seed: int, state: dict[str, torch.Tensor] | None = None) -> None:
        cfg = self.config
        checkpoint = None if state is not None else cfg.sam_checkpoint
        loaded = build_sam(cfg.sam_model, checkpoint, seed=seed)
        if state is not None:
            loaded.model.load_state_dict(state)
            loaded.weights_info["sam_random_init"] = True
        self._sam_info = loaded.weights_info
        # A random-initialised SAM is part of the fitted state (tiny); a checkpoint is reloaded instead.
        self._sam_state = loaded.model.state_dict() if self._sam_info["sam_random_init"] else None
        self._refiner = SamBoxRefiner(loaded.model.to(self._device), cfg.sam_soft_masks, cfg.sam_clip_to_box)

    # -- predict -------------------------------------------------------------------------------
    def _detect(self, images: Sequence[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Per image: boxes (N×4 xyxy pixels), confidences (N), class indices 1..K (N)."""
        if self._yolo is None or self._refiner is None:
            raise RuntimeError(f"{type(self).__name__}: call fit() (or load a fitted method) before predict()")
        with third_party_output(self._log_path or _fallback_config_dir() / LOG_FILE_NAME, self._verbose):
            return self._run_detector(images)

    def _run_detector(self, images: Sequence[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        if self._predictor is None:
            from ultralytics.models.yolo.segment import SegmentationPredictor

            self._predictor = SegmentationPredictor(overrides={
                "conf": self.config.conf_threshold, "iou": self.config.iou_threshold,
                "max_det": self.config.max_detections, "imgsz": self._image_size, "retina_masks": False,
                "device": _ultralytics_device(self._device), "save": False, "verbose": False,
                "mode": "predict", "rect": True,
            })
            with restored_torch_state():  # select_device() would pin torch to cpu_count - 1 threads
                self._predictor.setup_model(self._yolo, verbose=False)
        out = []
        step = self.config.predict_batch_size
        for start in range(0, len(images), step):
            # ultralytics takes numpy images as BGR (OpenCV order); ours are RGB.
            with autocast(self.precision, self._device):
                results = self._predictor(source=[np.ascontiguousarray(img[..., ::-1])
                                                  for img in images[start:start + step]])
            for result in results:
                boxes = result.boxes
                out.append((boxes.xyxy.float().cpu().numpy().astype(np.float32),
                            boxes.conf.float().cpu().numpy().astype(np.float32),
                            boxes.cls.cpu().numpy().astype(np.int64) + 1))
        return out

    def _detections_and_masks(self, images: Sequence[np.ndarray]):
        for image, (boxes, scores, labels) in zip(images, self._detect(images), strict=True):
            yield image, scores, labels, self._refiner.masks(image, boxes, self.precision)

    def predict(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        return [detections_to_anomaly_map(scores, masks, image.shape[:2])
                for image, scores, _, masks in self._detections_and_masks(images)]

    def predict_classes(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        return self.predict_with_classes(images)[1]

    def predict_with_classes(self, images: Sequence[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
        maps, class_maps = [], []
        for image, scores, labels, masks in self._detections_and_masks(images):
            maps.append(detections_to_anomaly_map(scores, masks, image.shape[:2]))
            class_maps.append(detections_to_class_maps(scores, masks, labels, len(self.class_names), image.shape[:2]))
        return maps, class_maps

    # -- state ---------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        if self._yolo is None:
            raise RuntimeError(f"{type(self).__name__}: nothing to save before fit()")
        return {"yolo_architecture": yolo_architecture(self._yolo, self._head_source_nc),
                "yolo_weights": self._yolo.state_dict(), "image_size": self._image_size,
                "sam_state": self._sam_state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["sam_state"] is None and self.config.sam_checkpoint is None:
            raise ValueError("the saved state has no SAM weights and the config names no SAM checkpoint")
        config_dir = self._config_dir or _fallback_config_dir()
        self._image_size = int(state["image_size"])
        architecture = state["yolo_architecture"]
        with third_party_output(self._log_path or config_dir / LOG_FILE_NAME, self._verbose):
            import_ultralytics(config_dir)
            self._set_yolo(rebuild_yolo(architecture, state["yolo_weights"], len(self.class_names),
                                        self.config.yolo_family, self.config.yolo_scale))
        self._head_source_nc = architecture.get("head_source_nc")  # checked by rebuild_yolo
        # A random-initialised SAM comes back from its tensors; a checkpoint SAM from its file
        # (read with torch.load(weights_only=True), see sam_refiner.build_sam).
        self._set_sam(seed=0, state=state["sam_state"])

    def parameter_counts(self) -> tuple[int, int] | None:
        """YOLO and SAM together; trained: YOLO's parameters but its DFL layer, which ultralytics' trainer
        always freezes (``BaseTrainer``'s ``always_freeze_names``). The flags cannot say it: ultralytics reloads
        the trained model with ``requires_grad`` off, and SAM (never trained here) keeps it on."""
        from scrapbench.core.parameters import count_parameters

        if self._yolo is None or self._refiner is None:
            return None
        trained = {id(p) for name, p in self._yolo.named_parameters() if ".dfl" not in name}
        return count_parameters([self._yolo, self._refiner.predictor.model], lambda p: id(p) in trained)

    def to_device(self, device: str) -> None:
        self._device = device
        self._predictor = None
        if self._refiner is not None:
            self._refiner.predictor.model.to(device)


def _add_progress_bar(model: Any, console: TextIO, description: str) -> None:
    """Our progress bar over ``model``'s training batches (ultralytics' own bars go with its other output)."""
    from tqdm.auto import tqdm

    bars: list[Any] = []

    def start(trainer: Any) -> None:
        bars.append(tqdm(total=trainer.epochs * len(trainer.train_loader), desc=description, unit="batch",
                         leave=False, file=console))

    def batch_end(trainer: Any) -> None:
        if bars:
            bars[0].update(1)
            if trainer.tloss:
                loss = sum(float(v) for v in trainer.tloss.values())
                bars[0].set_postfix(epoch=trainer.epoch + 1, loss=f"{loss:.3f}")

    def teardown(trainer: Any) -> None:  # runs after training, also when it failed
        while bars:
            bars.pop().close()

    model.add_callback("on_train_start", start)
    model.add_callback("on_train_batch_end", batch_end)
    model.add_callback("teardown", teardown)


def _round_up(value: int, multiple: int) -> int:
    return max(multiple, math.ceil(value / multiple) * multiple)


def _ultralytics_device(device: str) -> str:
    """ultralytics spells CUDA devices as indices ("0"), not "cuda:0"."""
    return device.split(":", 1)[1] if device.startswith("cuda:") else ("0" if device == "cuda" else device)


FALLBACK_CONFIG_PREFIX = "scrapbench-ultralytics-"


@functools.cache
def _fallback_config_dir() -> Path:
    """Config dir (and log) for ultralytics when a fitted method is loaded without a run folder: one per process,
    in the system temp folder, removed when the process exits; one a killed process left is removed by the next
    (``scrapbench.storage.writers.scratch_folder``)."""
    import atexit
    import contextlib
    import tempfile

    from scrapbench.storage.writers import scratch_folder

    stack = contextlib.ExitStack()
    folder = stack.enter_context(scratch_folder(Path(tempfile.gettempdir()), FALLBACK_CONFIG_PREFIX))
    atexit.register(stack.close)
    return folder
