"""SAM, Mask R-CNN and YOLO weights in their official containers, loaded exactly (or refused).

References: segment-anything's ``sam_model_registry`` / ``_build_sam`` and torchvision's
``maskrcnn_resnet50_fpn(weights="COCO_V1")``, each loading the same fabricated file as we do.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import torch
from official_formats import module_signature, shrunk
from segment_anything.build_sam import _build_sam, sam_model_registry
from torchvision.models.detection import maskrcnn_resnet50_fpn
from torchvision.models.detection._utils import overwrite_eps
from torchvision.ops.misc import FrozenBatchNorm2d

import scrapbench.methods.mask_rcnn as mask_rcnn_module
from scrapbench.core.method import WeightsError
from scrapbench.core.registry import create_method
from scrapbench.methods.common.checksums import PublishedChecksum, file_digest
from scrapbench.methods.common.sam_refiner import SAM_ARCHITECTURES, SamArchitecture, _assemble, build_sam, inspect_sam
from scrapbench.methods.yolo_sam.weights import pickled_classes, verify_yolo_checkpoint


# -- Segment Anything ----------------------------------------------------------------------------------
@pytest.mark.parametrize("size", ["vit_h", "vit_l", "vit_b"])
def test_published_sam_sizes_are_the_official_architecture(size):
    with torch.device("meta"):
        ours, official = _assemble(SAM_ARCHITECTURES[size]), sam_model_registry[size]()
    assert module_signature(ours) == module_signature(official)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in official.state_dict().items()}
    assert torch.equal(ours.pixel_mean, official.pixel_mean) and torch.equal(ours.pixel_std, official.pixel_std)


@pytest.fixture(scope="module")
def sam_h_layout(tmp_path_factory):
    """``sam_vit_h_4b8939.pth``'s container and key layout (torch.save of the state dict; 32 encoder
    blocks, global attention in 7/15/23/31), with a narrow encoder, written by segment-anything's builder."""
    torch.manual_seed(0)
    official = _build_sam(encoder_embed_dim=16, encoder_depth=32, encoder_num_heads=1,
                          encoder_global_attn_indexes=[7, 15, 23, 31])
    path = tmp_path_factory.mktemp("sam") / "sam_h_narrow.pth"
    torch.save(official.state_dict(), path)
    return path, _build_sam(16, 32, 1, [7, 15, 23, 31], checkpoint=str(path))


def test_sam_checkpoint_in_the_official_layout_loads_exactly(sam_h_layout, monkeypatch):
    path, official = sam_h_layout
    monkeypatch.setitem(SAM_ARCHITECTURES, "narrow_h", SamArchitecture(16, 32, 1, (7, 15, 23, 31)))
    ours = build_sam("narrow_h", path, seed=1).model
    assert module_signature(ours) == module_signature(official)
    for key, value in official.state_dict().items():
        assert torch.equal(ours.state_dict()[key], value), key
    # Outputs: a windowed block, a global block, the neck (the full 1024-px encoder takes ~20 s on a CPU),
    # then prompts → masks from a given image embedding.
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randn(1, 64, 64, 16, generator=generator)
    with torch.no_grad():
        for index in (0, 7):
            assert torch.equal(ours.image_encoder.blocks[index](tokens), official.image_encoder.blocks[index](tokens))
        grid = tokens.permute(0, 3, 1, 2)
        assert torch.equal(ours.image_encoder.neck(grid), official.image_encoder.neck(grid))
        embedding = torch.randn(1, 256, 64, 64, generator=generator)
        box = torch.tensor([[[100.0, 200.0, 500.0, 700.0]]])
        outs = [model.mask_decoder(embedding, model.prompt_encoder.get_dense_pe(),
                                   *model.prompt_encoder(points=None, boxes=box[0], masks=None), False)
                for model in (ours, official)]
    for mine, theirs in zip(*outs, strict=True):
        assert torch.equal(mine, theirs)


def test_sam_checkpoint_problems_are_named(sam_h_layout, monkeypatch, tmp_path):
    path, official = sam_h_layout
    monkeypatch.setitem(SAM_ARCHITECTURES, "narrow_h", SamArchitecture(16, 32, 1, (7, 15, 23, 31)))
    state = official.state_dict()
    state["image_encoder.extra"] = torch.zeros(1)
    state.pop("mask_decoder.iou_token.weight")
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(WeightsError, match=r"bad\.pth does not fit sam_model='narrow_h'.*1 missing keys: "
                                           r"mask_decoder\.iou_token\.weight; 1 unexpected keys: image_encoder\.extra"):
        build_sam("narrow_h", tmp_path / "bad.pth")
    with pytest.raises(WeightsError, match=r"does not fit sam_model='narrow_h'.*shape mismatches"):
        build_sam("narrow_h", _narrow_b_file(tmp_path))
    official_name = tmp_path / "sam_vit_h_4b8939.pth"  # the official name promises MD5 prefix 4b8939
    official_name.write_bytes(path.read_bytes())
    monkeypatch.setitem(SAM_ARCHITECTURES, "vit_h", SamArchitecture(16, 32, 1, (7, 15, 23, 31)))
    with pytest.raises(WeightsError, match=r"sam_vit_h_4b8939\.pth: ≠ MD5 prefix 4b8939 \(the Segment Anything "
                                           r"file name\): the file's MD5 is [0-9a-f]{32}; re-download"):
        build_sam("vit_h", official_name)
    check = inspect_sam("vit_h", official_name, "yolov8_sam.sam_checkpoint")
    assert check.status == "invalid" and "keys and shapes match" in check.architecture
    assert inspect_sam("narrow_h", path, "s").status == "ok"


class _Calls:
    """Unpickling this calls ``function(*args)``."""

    def __init__(self, function, *args) -> None:
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


@pytest.mark.parametrize(("payload", "legacy", "blocked"), [
    (_Calls(os.system, "true"), False, f"{os.name}.system"),  # a module torch blocks outright
    (_Calls(exec, "1"), True, "exec"),  # not on its allow-list
    ({"image_encoder.x": _Calls(Path, "/")}, False, "pathlib.Path"),  # inside a state dict
])
def test_a_crafted_sam_checkpoint_is_refused_naming_the_global_not_torchs_advice(payload, legacy, blocked, tmp_path):
    path = tmp_path / "sam.pth"
    torch.save(payload, path, _use_new_zipfile_serialization=not legacy)
    with pytest.raises(WeightsError) as info:
        build_sam("vit_b", path)
    message = str(info.value)
    assert f"sam.pth could not be read safely: UnpicklingError: Unsupported global {blocked}" in message, message
    assert "weights_only" not in message and "safe_globals" not in message and "\n" not in message


def _narrow_b_file(folder: Path) -> Path:
    path = folder / "narrow_b.pth"
    torch.save(_build_sam(16, 12, 1, [2, 5, 8, 11]).state_dict(), path)  # another size's layout
    return path


# -- Mask R-CNN -----------------------------------------------------------------------------------------
def test_mask_rcnn_coco_checkpoint_loads_as_torchvision_loads_it(tmp_path, monkeypatch):
    """torchvision's 2019 COCO file: a legacy (pre-zip) torch pickle of the state dict, frozen batch norm."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    method = create_method("mask_rcnn", ("motor", "cable", "spray_can"), preset="paper")  # weights="coco"
    path = method.weights_path()
    with torch.device("meta"):
        layout = create_method("mask_rcnn", ("x",) * 90, preset="paper")._build(64, None).state_dict()
    path.parent.mkdir(parents=True)
    state = shrunk({k: torch.empty(v.shape, dtype=v.dtype) for k, v in layout.items()})
    torch.save(state, path, _use_new_zipfile_serialization=False)
    with pytest.raises(WeightsError, match=r"maskrcnn_resnet50_fpn_coco-bf2d0c1e\.pth: ≠ SHA256 prefix bf2d0c1e"):
        method._read_weights()  # torchvision's name promises a checksum this fabricated file lacks
    monkeypatch.setattr(mask_rcnn_module, "COCO_CHECKSUM",
                        PublishedChecksum("sha256", file_digest(path)[:8], "this test", path.name))
    assert method.inspect_weights("mask_rcnn.weights=coco").status == "ok"

    official = maskrcnn_resnet50_fpn(weights="COCO_V1", min_size=64, max_size=64).eval()  # reads the same file
    ours = method._build(64, method._read_weights()).eval()
    assert method.weights_info()["frozen_bn_eps"] == 0.0
    kept = [k for k in official.state_dict() if "predictor" not in k]  # ours gets heads for 3 classes
    for key in kept:
        assert torch.equal(ours.state_dict()[key], official.state_dict()[key]), key
    assert module_signature(ours.backbone) == module_signature(official.backbone)
    image = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        theirs = official.backbone(image)
        assert all(torch.equal(ours.backbone(image)[k], theirs[k]) for k in theirs)
        overwrite_eps(ours, 1e-5)  # FrozenBatchNorm2d's default eps: the normalisation this test guards
        assert not any(torch.equal(ours.backbone(image)[k], theirs[k]) for k in theirs)
    assert {m.eps for m in official.modules() if isinstance(m, FrozenBatchNorm2d)} == {0.0}


def test_mask_rcnn_checkpoint_problems_are_named(tmp_path):
    method = create_method("mask_rcnn", ("motor",), preset="smoke", overrides={"weights": str(tmp_path / "w.pth")})
    state = method._build(64, None).state_dict()
    state["backbone.body.extra"] = torch.zeros(1)
    torch.save(state, tmp_path / "w.pth")
    with pytest.raises(WeightsError, match=r"w\.pth do not fit maskrcnn_resnet50_fpn.*1 unexpected keys: "
                                           r"backbone\.body\.extra"):
        method._build(64, method._read_weights())


# -- YOLO -------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def yolo_files(tmp_path_factory):
    """``yolov8x-seg.pt`` / ``yolo11x-seg.pt`` containers, written by ultralytics itself (n scale: small)."""
    from scrapbench.methods.yolo_sam.offline import import_ultralytics

    folder = tmp_path_factory.mktemp("yolo")
    import_ultralytics(folder / "config")
    from ultralytics import YOLO

    for family in ("yolov8", "yolo11"):
        YOLO(f"{family}n-seg.yaml").save(str(folder / f"{family}n-seg.pt"))
    return folder


def test_yolo_checkpoint_is_unpickled_only_with_the_users_sha256(yolo_files, tmp_path):
    path = yolo_files / "yolov8n-seg.pt"
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(WeightsError, match=rf"pickled module.*its SHA-256 is {sha}.*set yolov8_sam\."
                                           rf"yolo_weights_sha256={sha}"):
        verify_yolo_checkpoint(path, "yolov8", None, "yolov8_sam.yolo_weights_sha256")
    with pytest.raises(WeightsError, match=rf"has SHA-256 {sha}, not the {'0' * 64}"):
        verify_yolo_checkpoint(path, "yolov8", "0" * 64, "s")
    with pytest.raises(WeightsError, match=r"yolo11n-seg\.pt is a yolo11 segmentation model, not a yolov8"):
        verify_yolo_checkpoint(yolo_files / "yolo11n-seg.pt", "yolov8", sha, "s")
    assert verify_yolo_checkpoint(path, "yolov8", sha.upper(), "s") == sha
    dataset = tmp_path / "data"
    dataset.mkdir()
    (dataset / "dataset.yaml").write_text("classes: [motor]\n")
    (dataset / "yolov8n-seg.pt").write_bytes(path.read_bytes())
    with pytest.raises(WeightsError, match=r"lies inside .*data, a scrapbench model folder or dataset"):
        verify_yolo_checkpoint(dataset / "yolov8n-seg.pt", "yolov8", sha, "s")


def test_yolo_checkpoint_of_another_scale_is_refused_after_loading(yolo_files, tmp_path):
    path = yolo_files / "yolov8n-seg.pt"
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    method = create_method("yolov8_sam", ("motor",), preset="paper",
                           overrides={"yolo_weights": str(path), "yolo_weights_sha256": sha})  # scale x
    assert method.inspect_weights("s").status == "ok"
    with pytest.raises(WeightsError, match=r"yolov8n-seg\.pt holds yolov8n-seg\.yaml \(scale 'n'\), not yolov8x-seg"):
        method._new_yolo(method.yolo_weights_path(), tmp_path / "work")
    assert (tmp_path / "work" / "pretrained" / "yolov8n-seg.pt").read_bytes() == path.read_bytes()


class _RunsCodeOnLoad:
    def __init__(self, code: str) -> None:
        self.code = code

    def __reduce__(self):
        return exec, (self.code,)


def test_a_crafted_yolo_checkpoint_is_never_unpickled(tmp_path, smoke_dataset):
    marker = tmp_path / "marker"
    crafted = tmp_path / "yolov8x-seg.pt"
    torch.save({"model": _RunsCodeOnLoad(f"open({str(marker)!r}, 'w').close()"), "version": "8.3.0"}, crafted)
    torch.load(crafted, weights_only=False)  # live
    marker.unlink()
    assert "builtins.exec" in pickled_classes(crafted)  # read from the opcodes: nothing ran
    method = create_method("yolov8_sam", smoke_dataset.class_names, preset="paper",
                           overrides={"yolo_weights": str(crafted), "sam_checkpoint": None})
    with pytest.raises(WeightsError, match=r"yolov8x-seg\.pt is not an ultralytics checkpoint"):
        method.fit(smoke_dataset.train, _context(tmp_path / "work", smoke_dataset.class_names))
    assert method.inspect_weights("s").status == "invalid"
    assert not marker.exists()


def _context(workdir: Path, classes):
    from scrapbench.core.method import FitContext

    return FitContext(seed=0, device="cpu", workdir=workdir, class_names=tuple(classes), show_progress=False)
