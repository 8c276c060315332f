"""The table of anomalib 2.7 image models scrapbench exposes as ``anomalib.<name>``.

Each row names the anomalib class, its learning type, and the constructor arguments scrapbench passes
through as config fields (with anomalib's own defaults), plus what the adapter itself needs: input
size, epochs, batch size, whether backbones start from pretrained weights, the ``smoke`` / ``cpu``
presets, and, for a model that cannot run here, why (``unavailable``). Plain data: importing this
module loads neither torch nor anomalib.

``paper`` (the Config defaults) is anomalib's configuration: the constructor defaults, the input size of
its default pre-processor, and the epochs of anomalib's ``examples/configs/model/<name>.yaml`` (without
early stopping, which needs validation data; see docs/fidelity.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ONE_CLASS = "one_class"
SUPERVISED = "supervised"
ZERO_SHOT = "zero_shot"

#: smoke: tiny random-initialised networks at 64 px, one epoch; cpu: 128 px, a few epochs, random init.
_SMOKE = {"image_size": 64, "epochs": 1, "batch_size": 8, "pretrained": False}
_CPU = {"image_size": 128, "epochs": 3, "batch_size": 16, "pretrained": False}
_LAYERS = tuple[str, ...]


@dataclass(frozen=True)
class ZooModel:
    """One anomalib image model behind the adapter."""

    name: str  # registered as ``anomalib.<name>``
    anomalib_class: str  # attribute of ``anomalib.models``
    description: str
    learning_type: str = ONE_CLASS
    #: Constructor arguments exposed as config fields: (name, type, anomalib's default).
    params: tuple[tuple[str, Any, Any], ...] = ()
    image_size: int = 256  # the side of anomalib's default pre-processor resize (its crop, if it crops)
    #: Lightning's max_epochs; models whose ``trainer_arguments`` fix it (memory banks: 1, MH-PatchCore: 3)
    #: keep anomalib's value, as anomalib's Engine does.
    epochs: int = 1
    max_steps: int = -1  # anomalib's configs bound some models by steps (-1: none)
    batch_size: int = 32  # anomalib's datamodules' train_batch_size
    #: The constructor takes ``pre_trained``; otherwise the adapter makes its timm / torchvision
    #: backbones random while building it when ``pretrained`` is false.
    pre_trained_arg: bool = True
    #: Config fields naming timm backbones / torchvision backbones the model loads pretrained.
    timm_backbones: tuple[str, ...] = ("backbone",)
    torchvision_backbones: tuple[str, ...] = ()
    smoke: dict[str, Any] = field(default_factory=dict)
    cpu: dict[str, Any] = field(default_factory=dict)
    #: Why the model cannot run here (downloads at run time, no pixel maps, ...); ``None``: it runs.
    unavailable: str | None = None
    #: A boolean config field that makes the model supervised (trained with masks), if any.
    supervised_field: str | None = None

    @property
    def method_name(self) -> str:
        return f"anomalib.{self.name}"

    @property
    def class_name(self) -> str:
        return "Anomalib" + "".join(part.capitalize() for part in self.name.split("_"))

    @property
    def runs_offline(self) -> bool:
        return self.unavailable is None


def _r18(**more: Any) -> dict[str, Any]:
    return {"backbone": "resnet18", **more}


ZOO: tuple[ZooModel, ...] = (
    ZooModel("patchcore", "Patchcore", "PatchCore (anomalib): memory bank of locally aware patch features, "
             "coreset-subsampled; k-NN distance map",
             params=(("backbone", str, "wide_resnet50_2"), ("layers", _LAYERS, ("layer2", "layer3")),
                     ("coreset_sampling_ratio", float, 0.1), ("num_neighbors", int, 9)),
             # cpu: greedy coreset selection is quadratic-ish in the patches (61k at 128 px): 1 % keeps it to a minute
             smoke={**_SMOKE, **_r18()}, cpu={**_CPU, **_r18(), "coreset_sampling_ratio": 0.01}),
    ZooModel("padim", "Padim", "PaDiM (anomalib): a Gaussian per patch position over multi-layer CNN features",
             params=(("backbone", str, "resnet18"), ("layers", _LAYERS, ("layer1", "layer2", "layer3")),
                     ("n_features", int | None, None)),
             smoke={**_SMOKE, "n_features": 50}, cpu=dict(_CPU)),
    ZooModel("cflow", "Cflow", "CFLOW-AD (anomalib): conditional normalising flows on multi-scale features",
             params=(("backbone", str, "wide_resnet50_2"), ("layers", _LAYERS, ("layer2", "layer3", "layer4")),
                     ("fiber_batch_size", int, 64), ("decoder", str, "freia-cflow"), ("condition_vector", int, 128),
                     ("coupling_blocks", int, 8), ("clamp_alpha", float, 1.9), ("permute_soft", bool, False),
                     ("lr", float, 1e-4)),
             epochs=50, batch_size=32,
             smoke={**_SMOKE, **_r18(layers=("layer2", "layer3")), "coupling_blocks": 2, "condition_vector": 16,
                    "fiber_batch_size": 64},
             cpu={**_CPU, **_r18(layers=("layer2", "layer3")), "coupling_blocks": 4, "fiber_batch_size": 256}),
    ZooModel("fastflow", "Fastflow", "FastFlow (anomalib): 2-D normalising flow on CNN features",
             params=(("backbone", str, "resnet18"), ("flow_steps", int, 8), ("conv3x3_only", bool, False),
                     ("hidden_ratio", float, 1.0)),
             epochs=500, smoke={**_SMOKE, "flow_steps": 2}, cpu={**_CPU, "flow_steps": 4}),
    ZooModel("stfpm", "Stfpm", "STFPM (anomalib): student-teacher feature pyramid matching",
             params=(("backbone", str, "resnet18"), ("layers", _LAYERS, ("layer1", "layer2", "layer3"))),
             epochs=100, pre_trained_arg=False, smoke=dict(_SMOKE), cpu=dict(_CPU)),
    ZooModel("reverse_distillation", "ReverseDistillation",
             "Reverse Distillation (anomalib): a one-class bottleneck and a student decoder",
             params=(("backbone", str, "wide_resnet50_2"), ("layers", _LAYERS, ("layer1", "layer2", "layer3")),
                     ("anomaly_map_mode", str, "add")),
             epochs=200, smoke={**_SMOKE, **_r18()}, cpu={**_CPU, **_r18()}),
    ZooModel("dfm", "Dfm", "DFM (anomalib): PCA feature reconstruction error (score_type fre gives maps)",
             params=(("backbone", str, "resnet50"), ("layer", str, "layer3"), ("pooling_kernel_size", int, 4),
                     ("pca_level", float, 0.97), ("score_type", str, "fre")),
             smoke={**_SMOKE, **_r18()}, cpu={**_CPU, **_r18()}),
    ZooModel("fre", "Fre", "FRE (anomalib): feature reconstruction error of a shallow autoencoder",
             params=(("backbone", str, "resnet50"), ("layer", str, "layer3"), ("pooling_kernel_size", int, 2),
                     ("input_dim", int, 65536), ("latent_dim", int, 220)),
             epochs=220,
             # input_dim = channels × (side / 16 / pooling)²: resnet18 layer3 has 256 channels
             smoke={**_SMOKE, **_r18(), "input_dim": 256 * 2 * 2, "latent_dim": 32},
             cpu={**_CPU, **_r18(), "input_dim": 256 * 4 * 4, "latent_dim": 64}),
    ZooModel("cfa", "Cfa", "CFA (anomalib): coupled-hypersphere feature adaptation",
             params=(("backbone", str, "wide_resnet50_2"), ("gamma_c", int, 1), ("gamma_d", int, 1),
                     ("num_nearest_neighbors", int, 3), ("num_hard_negative_features", int, 3),
                     ("radius", float, 1e-5)),
             epochs=30, pre_trained_arg=False, timm_backbones=(), torchvision_backbones=("backbone",),
             smoke={**_SMOKE, **_r18()}, cpu={**_CPU, **_r18()}),
    ZooModel("supersimplenet", "Supersimplenet",
             "SuperSimpleNet (anomalib): synthetic feature-space anomalies and a segmentation head; "
             "supervised=true trains on the masks",
             params=(("perlin_threshold", float, 0.2), ("backbone", str, "wide_resnet50_2.tv_in1k"),
                     ("layers", _LAYERS, ("layer2", "layer3")), ("supervised", bool, False),
                     ("adapt_cls_features", bool, False)),
             epochs=300, pre_trained_arg=False, supervised_field="supervised",
             # its Perlin masks need a feature map of >= 32 px (after its 2x upscaling): layer1 (stride 4) at 64 px
             smoke={**_SMOKE, **_r18(layers=("layer1", "layer2"))},
             cpu={**_CPU, **_r18(layers=("layer1", "layer2"))}),
    ZooModel("uninet", "UniNet", "UniNet (anomalib): contrastive student-teacher distillation",
             params=(("student_backbone", str, "wide_resnet50_2"), ("teacher_backbone", str, "wide_resnet50_2"),
                     ("temperature", float, 0.1)),
             epochs=100, pre_trained_arg=False, timm_backbones=(),
             torchvision_backbones=("student_backbone", "teacher_backbone"),
             # its decoder expects the channels of wide_resnet50_2's layers: resnet50 has the same
             smoke={**_SMOKE, "image_size": 32, "student_backbone": "resnet50", "teacher_backbone": "resnet50"},
             cpu={**_CPU, "student_backbone": "resnet50", "teacher_backbone": "resnet50"}),
    ZooModel("dinomaly", "Dinomaly", "Dinomaly (anomalib): a DINOv2 encoder and a noisy-bottleneck decoder",
             params=(("encoder_name", str, "vit_base_patch14_reg4_dinov2"), ("bottleneck_dropout", float, 0.2),
                     ("decoder_depth", int, 8), ("remove_class_token", bool, False),
                     ("use_context_recentering", bool, False)),
             image_size=392, epochs=-1, max_steps=5000, batch_size=16, pre_trained_arg=False,
             timm_backbones=("encoder_name",),
             smoke={**_SMOKE, "image_size": 56, "encoder_name": "vit_small_patch14_dinov2",
                    "max_steps": -1},
             cpu={**_CPU, "image_size": 126, "encoder_name": "vit_small_patch14_dinov2", "max_steps": -1}),
    ZooModel("inp_former", "InpFormer", "INP-Former (anomalib): intrinsic normal prototypes from a DINOv2 encoder",
             params=(("encoder_name", str, "vit_base_patch14_reg4_dinov2"), ("remove_class_token", bool, True),
                     ("inp_num", int, 6)),
             image_size=392, epochs=200, batch_size=16, pre_trained_arg=False, timm_backbones=("encoder_name",),
             smoke={**_SMOKE, "image_size": 56, "encoder_name": "vit_small_patch14_dinov2"},
             cpu={**_CPU, "image_size": 126, "encoder_name": "vit_small_patch14_dinov2"}),
    ZooModel("anomaly_dino", "AnomalyDINO", "AnomalyDINO (anomalib): k-NN on DINOv2 patch features",
             params=(("num_neighbours", int, 1), ("encoder_name", str, "vit_small_patch14_dinov2"),
                     ("masking", bool, False), ("coreset_subsampling", bool, False), ("sampling_ratio", float, 0.1)),
             image_size=252, pre_trained_arg=False, timm_backbones=("encoder_name",),
             smoke={**_SMOKE, "image_size": 56}, cpu={**_CPU, "image_size": 126}),
    ZooModel("mh_patchcore", "MHPatchcore", "MH-PatchCore (anomalib): PatchCore with Mahalanobis-whitened features",
             params=(("backbone", str, "wide_resnet50_2.tv2_in1k"), ("layers", _LAYERS, ("layer2", "layer3")),
                     ("pca_variance_ratio", float, 0.99), ("covariance_shrinkage", float, 0.07),
                     ("memory_bank_size", int, 1000), ("local_coreset_size", int, 256), ("num_neighbors", int, 9)),
             image_size=224, smoke={**_SMOKE, **_r18(), "memory_bank_size": 100, "local_coreset_size": 32},
             cpu={**_CPU, **_r18()}),
    ZooModel("uflow", "Uflow", "U-Flow (anomalib): a U-shaped normalising flow on multi-scale features",
             params=(("backbone", str, "mcait"), ("flow_steps", int, 4), ("affine_clamp", float, 2.0),
                     ("affine_subnet_channels_ratio", float, 1.0), ("permute_soft", bool, False)),
             image_size=448, epochs=200, pre_trained_arg=False,
             smoke={**_SMOKE, **_r18(), "image_size": 32, "flow_steps": 2}, cpu={**_CPU, **_r18()}),
    ZooModel("efficient_ad", "EfficientAd", "EfficientAD (anomalib): student-teacher and autoencoder",
             unavailable="needs the ImageNet/Imagenette penalty set and anomalib's pretrained teacher, "
                         "both downloaded at run time", timm_backbones=(),
             smoke=dict(_SMOKE), cpu=dict(_CPU)),
    ZooModel("dsr", "Dsr", "DSR (anomalib): dual subspace re-projection",
             unavailable="needs anomalib's pretrained VQ model, downloaded at run time", timm_backbones=(),
             smoke=dict(_SMOKE), cpu=dict(_CPU)),
    ZooModel("draem", "Draem", "DRAEM (anomalib): reconstruction and discrimination of synthetic anomalies",
             unavailable="needs the DTD texture set for its synthetic anomalies, downloaded at run time",
             timm_backbones=(), smoke=dict(_SMOKE), cpu=dict(_CPU)),
    ZooModel("csflow", "Csflow", "CS-Flow (anomalib): cross-scale normalising flows",
             unavailable="anomalib hard-wires torchvision's ImageNet EfficientNet-B5 (no random-init path)",
             timm_backbones=(), smoke=dict(_SMOKE), cpu=dict(_CPU)),
    ZooModel("winclip", "WinClip", "WinCLIP (anomalib)", ZERO_SHOT,
             unavailable="needs open_clip's LAION ViT-B-16-plus-240 weights, downloaded at run time "
                         "(scrapbench's own `winclip` runs without them)", timm_backbones=(),
             smoke=dict(_SMOKE), cpu=dict(_CPU)),
    ZooModel("vlm_ad", "VlmAd", "VLM-AD (anomalib): a vision-language model asked about each image", ZERO_SHOT,
             unavailable="needs a vision-language model service or its downloaded weights; gives no pixel maps",
             timm_backbones=(), smoke=dict(_SMOKE), cpu=dict(_CPU)),
    ZooModel("anomalyvfm", "AnomalyVFM", "AnomalyVFM (anomalib): a vision foundation model for anomalies", ZERO_SHOT,
             unavailable="needs its weights from the Hugging Face Hub, downloaded at run time", timm_backbones=(),
             smoke=dict(_SMOKE), cpu=dict(_CPU)),
    ZooModel("cfm", "CFM", "CFM (anomalib): crossmodal feature mapping for RGB + point clouds",
             unavailable="needs 3-D point clouds (RGB-D data) and Point-MAE weights", timm_backbones=(),
             smoke=dict(_SMOKE), cpu=dict(_CPU)),
    ZooModel("ganomaly", "Ganomaly", "GANomaly (anomalib): adversarial autoencoder",
             unavailable="gives image scores only, no pixel maps", timm_backbones=(),
             smoke=dict(_SMOKE), cpu=dict(_CPU)),
    ZooModel("dfkde", "Dfkde", "DFKDE (anomalib): kernel density on deep features",
             unavailable="gives image scores only, no pixel maps", timm_backbones=(),
             smoke=dict(_SMOKE), cpu=dict(_CPU)),
)

ZOO_BY_NAME: dict[str, ZooModel] = {row.method_name: row for row in ZOO}
