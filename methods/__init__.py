"""Built-in method plugins, registered lazily: a module is imported only when its method is used.

To add a method, write one module with an :class:`~scrapbench.core.method.AnomalyMethod` subclass and
either list it here, decorate it with ``@register_method`` or expose it through the
``scrapbench.methods`` entry-point group of your own package.
"""

from scrapbench.core.registry import ABLATION, TABLE2, ZOO, MethodSpec
from scrapbench.methods.anomalib_zoo.models import ZOO as ANOMALIB_MODELS

BUILTIN: tuple[MethodSpec, ...] = (
    MethodSpec("winclip", "scrapbench.methods.winclip:WinCLIP",
               "WinCLIP: zero-shot window-based CLIP scores with a compositional prompt ensemble",
               (TABLE2,), {"k_shot": 0}),
    MethodSpec("winclip_plus", "scrapbench.methods.winclip:WinCLIP",
               "WinCLIP+: WinCLIP plus a visual memory of k normal reference images (k=10)",
               (TABLE2,), {"k_shot": 10}),
    MethodSpec("anomalyclip", "scrapbench.methods.anomalyclip:AnomalyCLIP",
               "AnomalyCLIP: object-agnostic learnable prompts on a frozen CLIP with the V-V path",
               (TABLE2,)),
    MethodSpec("yolov8_sam", "scrapbench.methods.yolo_sam:YoloSam",
               "YOLOv8-seg fine-tuned on the anomaly classes, boxes refined by SAM",
               (TABLE2,), {"yolo_family": "yolov8"}),
    MethodSpec("yolo11_sam", "scrapbench.methods.yolo_sam:YoloSam",
               "YOLO11-seg fine-tuned on the anomaly classes, boxes refined by SAM",
               (TABLE2,), {"yolo_family": "yolo11"}),
    MethodSpec("mask_rcnn", "scrapbench.methods.mask_rcnn:MaskRCNN",
               "Mask R-CNN (ResNet-50 FPN, torchvision) fine-tuned on the anomaly classes",
               (TABLE2,)),
    MethodSpec("ours", "scrapbench.methods.ours:FineTunedCLIP",
               "The paper's method: fine-tuned CLIP, multiclass prompts, MSM scales 3x3 & 9x9",
               (TABLE2, ABLATION), {"msm_scales": (3, 9), "use_msm": True}),
    MethodSpec("ours_msm_5_11", "scrapbench.methods.ours:FineTunedCLIP",
               "Ablation of ours: MSM scales 5x5 & 11x11", (ABLATION,),
               {"msm_scales": (5, 11), "use_msm": True}),
    MethodSpec("ours_msm_7_13", "scrapbench.methods.ours:FineTunedCLIP",
               "Ablation of ours: MSM scales 7x7 & 13x13", (ABLATION,),
               {"msm_scales": (7, 13), "use_msm": True}),
    MethodSpec("ours_no_msm", "scrapbench.methods.ours:FineTunedCLIP",
               "Ablation of ours: without the multi-scale mechanism", (ABLATION,),
               {"use_msm": False}),
    # anomalib's image models (methods/anomalib_zoo): suite `zoo` for those that run offline with pixel maps.
    *(MethodSpec(row.method_name, f"scrapbench.methods.anomalib_zoo.adapter:{row.class_name}",
                 row.description if row.runs_offline else f"{row.description} [not runnable here: {row.unavailable}]",
                 (ZOO,) if row.runs_offline else ()) for row in ANOMALIB_MODELS),
)
