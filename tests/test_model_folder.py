"""Model folders: loading never runs code, refusals are one clear error, YOLO comes back exactly.

The registry-wide save/load round trip of every method is ``test_methods.py``; this file attacks the
format: crafted pickles (top-level and nested), crafted ``method.json``, legacy and corrupt folders.
"""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from saved_folder import assert_holds_no_pickle
from toy_method import ColourDistance

from scrapbench.core import registry
from scrapbench.core.method import AnomalyMethod, FitContext, ModelFolderError, config_to_dict
from scrapbench.storage.model_folder import METHOD_FILE, STATE_FILE, TENSORS_FILE, _file_record
from scrapbench.storage.state_io import join_state, split_state


class _Marker:
    """Unpickling this creates the file ``path``: the stand-in for an attacker's code."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.fixture
def toy_registered(monkeypatch):
    registry.list_methods()  # built-ins first, so that they are not loaded over the test entry
    monkeypatch.setitem(registry._REGISTRY, "toy", registry.MethodSpec("toy", ColourDistance, "toy"))


def _fitted_toy(smoke_dataset, tmp_path) -> ColourDistance:
    method = registry.create_method("toy", smoke_dataset.class_names, preset="smoke")
    method.fit(smoke_dataset.train, FitContext(seed=3, device="cpu", workdir=tmp_path / "work",
                                               class_names=smoke_dataset.class_names, show_progress=False))
    return method


def _legacy_folder(folder: Path, method: str, class_path: str, config: dict, state_payload) -> Path:
    """A model folder as scrapbench wrote it before this format: method.json without version + state.pt."""
    folder.mkdir(parents=True)
    (folder / METHOD_FILE).write_text(json.dumps({"method": method, "class": class_path, "config": config,
                                                  "class_names": ["motor", "cable", "spray_can"]}))
    torch.save(state_payload, folder / "state.pt")
    return folder


# -- the plain state format ----------------------------------------------------------------------
def test_a_plain_state_round_trips_with_its_types():
    state = {"model": {"conv.weight": torch.randn(2, 3), "bn.num_batches_tracked": torch.tensor(4)},
             "memory": [torch.arange(6).view(2, 3)[:, 1], torch.zeros(0)], "mean": np.float32([1.5, 2.0]),
             "ids": (3, 1), "size": 64, "scale": np.float64(0.5), "name": "x", "none": None, "flag": True}
    tensors, tree = split_state(state)
    assert sorted(tensors) == ["mean", "memory.0", "memory.1", "model.bn.num_batches_tracked", "model.conv.weight"]
    json.dumps(tree)  # the rest is JSON
    back = join_state(json.loads(json.dumps(tree)), tensors)
    torch.testing.assert_close(back["model"]["conv.weight"], state["model"]["conv.weight"])
    assert torch.equal(back["memory"][0], torch.tensor([1, 4])) and back["memory"][0].is_contiguous()
    assert isinstance(back["mean"], np.ndarray) and back["mean"].tolist() == [1.5, 2.0]
    assert back["ids"] == [3, 1] and back["size"] == 64 and back["scale"] == 0.5 and back["none"] is None


@pytest.mark.parametrize(("state", "message"), [
    ({"yolo_model": pickle.dumps(1)}, r"state\['yolo_model'\] is a bytes"),
    ({"a": {"b": object()}}, r"state\['a'\]\['b'\] is a object"),
    ({"path": Path("x")}, r"is a PosixPath|is a WindowsPath"),
    ({1: torch.zeros(1)}, "keys are strings"),
    ({"a.b": torch.zeros(1), "a": {"b": torch.ones(1)}}, "two tensors of the state map to the key 'a.b'"),
])
def test_states_that_are_not_plain_data_are_refused(state, message):
    with pytest.raises(TypeError, match=message):
        split_state(state)


def test_saving_a_state_with_a_nested_pickle_writes_nothing(smoke_dataset, tmp_path, toy_registered, monkeypatch):
    method = _fitted_toy(smoke_dataset, tmp_path)
    monkeypatch.setattr(method, "state_dict", lambda: {"blob": pickle.dumps(_Marker(tmp_path / "m"))})
    with pytest.raises(TypeError, match=r"toy: state_dict\(\) cannot be saved: state\['blob'\] is a bytes"):
        method.save(tmp_path / "model")
    assert not (tmp_path / "model").exists()


def test_a_saved_folder_loads_back_and_ignores_a_planted_state_pt(smoke_dataset, tmp_path, toy_registered):
    method = _fitted_toy(smoke_dataset, tmp_path)
    method.save(tmp_path / "model")
    assert_holds_no_pickle(tmp_path / "model")
    meta = json.loads((tmp_path / "model" / METHOD_FILE).read_text())
    assert (meta["format"], meta["format_version"], meta["method"]) == ("scrapbench-model", 2, "toy")
    assert meta["class"] == "toy_method:ColourDistance" and set(meta["files"]) == {TENSORS_FILE, STATE_FILE}

    torch.save(_Marker(tmp_path / "marker"), tmp_path / "model" / "state.pt")
    loaded = AnomalyMethod.load(tmp_path / "model")
    assert not (tmp_path / "marker").exists()
    assert isinstance(loaded, ColourDistance) and loaded.registry_name == "toy" and loaded.rng_seed == 3
    np.testing.assert_array_equal(loaded.mean, method.mean)
    image = smoke_dataset.test[0].image
    np.testing.assert_array_equal(loaded.predict([image])[0], method.predict([image])[0])


# -- refusals ------------------------------------------------------------------------------------
def test_a_legacy_folder_with_a_nested_pickle_is_refused_unread(tmp_path):
    """What main wrote for YOLO+SAM: state.pt holding the YOLO module as pickled bytes."""
    config = config_to_dict(registry.build_config("yolov8_sam", "smoke"))
    nested = {"yolo_model": pickle.dumps(_Marker(tmp_path / "marker")), "image_size": 64, "sam_state": None}
    folder = _legacy_folder(tmp_path / "model", "yolov8_sam", "scrapbench.methods.yolo_sam:YoloSam", config, nested)
    with pytest.raises(ModelFolderError, match=r"older scrapbench.*state\.pt is a Python pickle.*re-run the method"):
        AnomalyMethod.load(folder)
    assert not (tmp_path / "marker").exists()


def test_a_crafted_state_pt_is_refused_unread(tmp_path):
    folder = _legacy_folder(tmp_path / "model", "toy", "toy_method:ColourDistance", {}, _Marker(tmp_path / "marker"))
    with pytest.raises(ModelFolderError, match="older scrapbench"):
        AnomalyMethod.load(folder)
    assert not (tmp_path / "marker").exists()


def _plugin_on_path(tmp_path: Path, monkeypatch, module: str) -> Path:
    """A module that creates a marker file when imported."""
    marker = tmp_path / "imported"
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / f"{module}.py").write_text(f"open({str(marker)!r}, 'w').close()\nclass Evil: pass\n")
    monkeypatch.syspath_prepend(str(tmp_path / "plugins"))
    return marker


@pytest.mark.parametrize(("method", "message"), [
    ("not_a_method", r"method 'not_a_method' is not registered here"),
    ("toy", r"class '\w+:Evil' does not match the registered 'toy' \(toy_method:ColourDistance\)"),
])
def test_method_json_may_name_only_a_registered_method(method, message, smoke_dataset, tmp_path, toy_registered,
                                                       monkeypatch):
    _fitted_toy(smoke_dataset, tmp_path).save(tmp_path / "model")
    module = f"sb_crafted_{method}"
    marker = _plugin_on_path(tmp_path, monkeypatch, module)
    meta_path = tmp_path / "model" / METHOD_FILE
    meta = json.loads(meta_path.read_text())
    meta.update(method=method, **{"class": f"{module}:Evil"})
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ModelFolderError, match=message):
        AnomalyMethod.load(tmp_path / "model")
    assert not marker.exists(), "the class named in method.json was imported"


def _rewrite(folder: Path, file: str, data: bytes) -> None:
    """Replace a state file and fix its record in method.json (an attacker who edits both)."""
    (folder / file).write_bytes(data)
    meta = json.loads((folder / METHOD_FILE).read_text())
    meta["files"][file] = _file_record(folder / file)
    (folder / METHOD_FILE).write_text(json.dumps(meta))


def _pickle_as_safetensors(folder: Path) -> None:
    torch.save(_Marker(folder.parent / "marker"), folder / "evil.pt")
    _rewrite(folder, TENSORS_FILE, (folder / "evil.pt").read_bytes())
    (folder / "evil.pt").unlink()


def _state_json_with_a_dangling_reference(folder: Path) -> None:
    doc = json.loads((folder / STATE_FILE).read_text())
    doc["state"]["mean"] = {"__ndarray__": "elsewhere"}
    _rewrite(folder, STATE_FILE, json.dumps(doc).encode())


def _edit_meta(**changes):
    def edit(folder: Path) -> None:
        meta = json.loads((folder / METHOD_FILE).read_text())
        meta.update(changes)
        (folder / METHOD_FILE).write_text(json.dumps(meta))
    return edit


def _raw_meta_value(text: str):
    """method.json with one more field, written as raw JSON text (numbers and nesting json.dumps would refuse)."""
    def edit(folder: Path) -> None:
        meta = (folder / METHOD_FILE).read_text().rstrip()
        (folder / METHOD_FILE).write_text(meta[:-1].rstrip() + ", " + text + "}")
    return edit


def _raw_state(text: str):
    def edit(folder: Path) -> None:
        _rewrite(folder, STATE_FILE, ('{"format": "scrapbench-model", "format_version": 2, "state": ' + text +
                                      "}").encode())
    return edit


def _state(change):
    def edit(folder: Path) -> None:
        doc = json.loads((folder / STATE_FILE).read_text())
        change(doc["state"])
        _rewrite(folder, STATE_FILE, json.dumps(doc).encode())
    return edit


def _tensors(change):
    def edit(folder: Path) -> None:
        from safetensors.torch import load_file, save_file

        tensors = {key: change(value) for key, value in load_file(folder / TENSORS_FILE).items()}
        save_file(tensors, folder / "edited")
        _rewrite(folder, TENSORS_FILE, (folder / "edited").read_bytes())
        (folder / "edited").unlink()
    return edit


def _string_for_a_tensor(folder: Path) -> None:
    """A string in the tree where the array was, and the array gone from state.safetensors."""
    from safetensors.torch import save_file

    _state(lambda s: s.update(mean="abc"))(folder)
    save_file({}, folder / "edited")
    _rewrite(folder, TENSORS_FILE, (folder / "edited").read_bytes())
    (folder / "edited").unlink()


@pytest.mark.parametrize(("corrupt", "message"), [
    (lambda f: (f / TENSORS_FILE).write_bytes((f / TENSORS_FILE).read_bytes()[:-7]),
     r"state\.safetensors: size or SHA-256 differs from method\.json"),
    (_pickle_as_safetensors, r"state\.safetensors: not a readable safetensors file"),
    (_state_json_with_a_dangling_reference, r"state\.json: the tensor 'elsewhere' is missing"),
    (lambda f: (f / STATE_FILE).unlink(), r"state\.json: missing; the model folder is incomplete"),
    (lambda f: (f / METHOD_FILE).write_text("{"), r"method\.json: not valid JSON"),
    (_edit_meta(format_version=3), r"format 3; this scrapbench reads format 2: upgrade scrapbench"),
    (_edit_meta(config={"max_images": 4, "colour": 1}), r"config does not fit 'toy'.*unknown config fields"),
    (_edit_meta(class_names=[]), "class_names must be a non-empty list of strings"),
    # malformed values: each one line naming the file and the field
    (_edit_meta(class_names=["motor", "motor"]), r"method\.json: class_names: duplicate class names \['motor'\]"),
    (_edit_meta(class_names=["motor", " "]), r"method\.json: class_names: class names must be non-empty text"),
    (_edit_meta(config={"max_images": float("nan")}),
     r"config does not fit 'toy': .*max_images = nan: expected int \(64-bit\)"),
    (_edit_meta(config={"noise": float("inf")}), r"noise = inf: expected float \(finite\)"),
    (_edit_meta(config={"max_images": 10**300}), r"max_images = 1000.*0000: expected int \(64-bit\)"),
    (_raw_meta_value('"max_images": ' + "9" * 100_000), r"method\.json: not valid JSON \(Exceeds the limit"),
    (_raw_meta_value('"deep": ' + "[" * 100_000 + "]" * 100_000), r"method\.json: nested too deeply to read"),
    (_state(lambda s: s.update(rng_seed=float("nan"))), r"state\.json: state\['rng_seed'\] is nan"),
    (_state(lambda s: s.update(rng_seed=10**1000)), r"state\.json: state\['rng_seed'\] is an integer of"),
    (_state(lambda s: s.update(deep=json.loads("[" * 900 + "]" * 900))), r"state\.json: .* deeper than 64 levels"),
    (_raw_state("[" * 100_000 + "]" * 100_000), r"state\.json: nested too deeply to read"),
    (_state(lambda s: s.update(mean="abc")), r"state\.json: 1 tensors are not referenced"),
    (_string_for_a_tensor, r"the saved state does not fit 'toy' \(TypeError: state\['mean'\] is a numpy array"),
    (_tensors(lambda t: t.to(torch.float8_e4m3fn)), r"state\.safetensors: tensor 'mean' has dtype .*float8_e4m3fn"),
    (_tensors(lambda t: t.to(torch.bfloat16)), r"state\.json: state\['mean'\]: the array 'mean' has dtype .*bfloat16"),
    (_tensors(lambda t: t.to(torch.complex64)), r"tensor 'mean' has dtype torch\.complex64, which scrapbench never"),
])
def test_a_corrupt_folder_is_one_clear_error(corrupt, message, smoke_dataset, tmp_path, toy_registered):
    folder = _fitted_toy(smoke_dataset, tmp_path).save(tmp_path / "model")
    corrupt(folder)
    with pytest.raises(ModelFolderError, match=message) as info:
        AnomalyMethod.load(folder)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "marker").exists()


@pytest.fixture(scope="module")
def ours_folder(tmp_path_factory, smoke_dataset) -> Path:
    """A fitted torch method's folder (its load_state_dict casts what it is given into its own parameters)."""
    tmp = tmp_path_factory.mktemp("ours")
    method = registry.create_method("ours", smoke_dataset.class_names, preset="smoke")
    method.fit(smoke_dataset.train, FitContext(seed=0, device="cpu", workdir=tmp / "work",
                                               class_names=smoke_dataset.class_names, show_progress=False))
    return method.save(tmp / "model")


@pytest.mark.parametrize(("dtype", "shrink"), [(torch.int64, False), (torch.uint8, False), (torch.float16, False),
                                               (None, True)])
def test_tensors_are_checked_against_the_method_on_load(dtype, shrink, ours_folder, tmp_path):
    import shutil

    folder = tmp_path / "model"
    shutil.copytree(ours_folder, folder)
    first = {}

    def change(tensor: torch.Tensor) -> torch.Tensor:
        if first or not tensor.is_floating_point() or tensor.dim() == 0:
            return tensor
        first["done"] = True
        return tensor[:1].clone() if shrink else tensor.to(dtype)

    _tensors(change)(folder)
    with pytest.raises(ModelFolderError, match=r"the saved state does not fit 'ours'") as info:
        AnomalyMethod.load(folder)
    assert "\n" not in str(info.value)
    if not shrink:
        assert f"is {dtype} " in str(info.value) and "torch.float32" in str(info.value)


def test_load_on_a_subclass_checks_the_kind(smoke_dataset, tmp_path, toy_registered):
    from red_channel_method import RedChannel

    folder = _fitted_toy(smoke_dataset, tmp_path).save(tmp_path / "model")
    with pytest.raises(ModelFolderError, match=r"holds 'toy' .*not a RedChannel"):
        RedChannel.load(folder)
    assert isinstance(ColourDistance.load(folder), ColourDistance)


def test_cli_predict_refuses_a_crafted_folder_in_one_line(tmp_path):
    from typer.testing import CliRunner

    from scrapbench.cli.main import app

    config = config_to_dict(registry.build_config("yolov8_sam", "smoke"))
    nested = {"yolo_model": pickle.dumps(_Marker(tmp_path / "marker")), "image_size": 64, "sam_state": None}
    folder = _legacy_folder(tmp_path / "model", "yolov8_sam", "scrapbench.methods.yolo_sam:YoloSam", config, nested)
    (tmp_path / "images").mkdir()
    result = CliRunner().invoke(app, ["predict", str(folder), str(tmp_path / "images"), "--out", str(tmp_path / "out"),
                                      "--threshold", "0.5", "--patch-size", "32", "--no-progress"])
    assert result.exit_code == 2, result.output
    flat = "".join(result.output.split())
    assert flat.startswith("error:") and "olderscrapbench" in flat and "re-runthemethod" in flat
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)
    assert not (tmp_path / "marker").exists()


# -- YOLO: tensors + architecture rebuild the exact model ----------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("family", ["yolov8", "yolo11"])
def test_yolo_fine_tuned_from_a_checkpoint_reloads_exactly(family, smoke_dataset, tmp_path):
    """Fine-tuning from an 80-class checkpoint widens the head's class branch beyond what the YAML at
    nc=3 builds; the reloaded model must still be the same network, without the checkpoint file."""
    from scrapbench.methods.yolo_sam.offline import import_ultralytics

    import_ultralytics(tmp_path / "ultralytics_config")
    from ultralytics import YOLO
    from ultralytics.nn.tasks import SegmentationModel

    checkpoint = tmp_path / f"{family}n-seg.pt"
    YOLO(f"{family}n-seg.yaml").save(str(checkpoint))  # random init, 80 classes: a pretrained-format file
    classes = smoke_dataset.class_names
    pin = hashlib.sha256(checkpoint.read_bytes()).hexdigest()  # a .pt is loaded only with its SHA-256
    method = registry.create_method(f"{family}_sam", classes, preset="smoke",
                                    overrides={"yolo_weights": str(checkpoint), "yolo_weights_sha256": pin})
    method.fit(smoke_dataset.train, FitContext(seed=0, device="cpu", workdir=tmp_path / "work", class_names=classes,
                                               show_progress=False))
    trained = method._yolo.state_dict()
    from_yaml = SegmentationModel(dict(method._yolo.yaml), nc=len(classes), verbose=False).state_dict()
    assert any(trained[k].shape != from_yaml[k].shape for k in trained), "the head was not rebuilt: case not covered"

    method.save(tmp_path / "model")
    assert_holds_no_pickle(tmp_path / "model")
    checkpoint.unlink()  # the folder alone must describe the model
    loaded = AnomalyMethod.load(tmp_path / "model")
    for key, value in trained.items():
        assert torch.equal(loaded._yolo.state_dict()[key], value), key
    pixels = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        first, second = (torch.utils._pytree.tree_leaves(m._yolo(pixels)) for m in (method, loaded))
    assert len(first) == len(second) and all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    images = [s.image for s in smoke_dataset.test[:4]]
    for (b1, c1, l1), (b2, c2, l2) in zip(method._detect(images), loaded._detect(images), strict=True):
        assert np.array_equal(b1, b2) and np.array_equal(c1, c2) and np.array_equal(l1, l2)
    for a, b in zip(method.predict(images), loaded.predict(images), strict=True):
        np.testing.assert_array_equal(a, b)


# -- YOLO: a model folder's architecture is data, never built ------------------------------------
@pytest.fixture(scope="module")
def yolo_folder(tmp_path_factory, smoke_dataset) -> Path:
    """A valid yolov8_sam model folder (random YOLO-n and tiny SAM; no training needed to attack it)."""
    from scrapbench.methods.yolo_sam.offline import import_ultralytics

    root = tmp_path_factory.mktemp("yolo_folder")
    import_ultralytics(root / "ultralytics_config")
    from ultralytics.nn.tasks import SegmentationModel

    method = registry.create_method("yolov8_sam", smoke_dataset.class_names, preset="smoke")
    method._set_yolo(SegmentationModel("yolov8n-seg.yaml", nc=len(smoke_dataset.class_names), verbose=False))
    method._image_size = 64
    method._set_sam(seed=0)
    method._sam_state = {k: v.clone() for k, v in method._refiner.predictor.model.state_dict().items()}
    return method.save(root / "model")


def _copy_with_architecture(folder: Path, target: Path, edit) -> Path:
    """``folder`` copied to ``target`` with its stored YOLO architecture edited, the hashes recomputed."""
    import shutil

    shutil.copytree(folder, target)
    doc = json.loads((target / STATE_FILE).read_text())
    edit(doc["state"]["yolo_architecture"], target)
    _rewrite(target, STATE_FILE, json.dumps(doc).encode())
    return target


def _marker_code(marker: Path) -> str:
    return f"__import__('pathlib').Path({str(marker)!r}).touch()"


def _set_yaml(field: str, value):
    def edit(architecture: dict, folder: Path) -> None:
        architecture["yaml"][field] = value(folder) if callable(value) else value
    return edit


def _replace_layer(architecture: dict, folder: Path) -> None:
    # A layer name that ultralytics would look up in its module globals, with attacker-chosen arguments.
    architecture["yaml"]["head"][0] = [-1, 1, "torch", [_marker_code(folder.parent / "marker")]]


def _set_arch(field: str, value):
    def edit(architecture: dict, folder: Path) -> None:
        architecture[field] = value
    return edit


@pytest.mark.parametrize(("edit", "message"), [
    (_set_yaml("activation", lambda f: _marker_code(f.parent / "marker")), r"field 'activation' differs"),
    (_set_yaml("activation", "nn.ReLU()"), r"field 'activation' differs"),
    (_replace_layer, r"field 'head' differs"),
    (_set_yaml("scales", {"n": [1.0, 2.0, 4096]}), r"multiples of scale 'n' differ"),
    (_set_yaml("scale", "x"), r"not ultralytics' yolov8n-seg \(scale 'x'\)"),
    (_set_yaml("depth_multiple", 3.0), r"field 'depth_multiple' differs"),
    (_set_arch("head_source_nc", 10**9), r"head_source_nc must be a class count in 1\.\.1000"),
    (_set_arch("stride", ["8"]), r"stride must be a list of numbers"),
    (lambda a, f: a.clear(), r"yolo_architecture must be a mapping"),
])
def test_a_crafted_yolo_architecture_is_refused_and_runs_nothing(edit, message, yolo_folder, tmp_path):
    folder = _copy_with_architecture(yolo_folder, tmp_path / "model", edit)
    with pytest.raises(ModelFolderError, match=message) as info:
        AnomalyMethod.load(folder)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "marker").exists(), "a string from the model folder ran as code"


def test_cli_predict_refuses_a_yolo_folder_that_would_run_code(yolo_folder, tmp_path, smoke_dataset):
    from typer.testing import CliRunner

    from scrapbench.cli.main import app

    folder = _copy_with_architecture(yolo_folder, tmp_path / "model",
                                     _set_yaml("activation", lambda f: _marker_code(f.parent / "marker")))
    (tmp_path / "images").mkdir()
    Image.fromarray(smoke_dataset.test[0].image).save(tmp_path / "images" / "a.png")
    result = CliRunner().invoke(app, ["predict", str(folder), str(tmp_path / "images"), "--out", str(tmp_path / "out"),
                                      "--threshold", "0.5", "--patch-size", "32", "--no-progress"])
    assert result.exit_code == 2, result.output
    assert "not ultralytics' yolov8n-seg" in "".join(result.output.split("\n"))
    assert not (tmp_path / "marker").exists(), "a string from the model folder ran as code"


def test_a_yolo_folder_rebuilds_from_the_shipped_yaml_not_the_working_directory(yolo_folder, tmp_path, monkeypatch):
    """A ``yolov8-seg.yaml`` in the working directory is what ultralytics' name lookup would prefer."""
    (tmp_path / "yolov8-seg.yaml").write_text("nc: 3\nactivation: " + _marker_code(tmp_path / "marker") + "\n")
    monkeypatch.chdir(tmp_path)
    loaded = AnomalyMethod.load(yolo_folder)
    assert isinstance(loaded._yolo, torch.nn.Module)
    assert not (tmp_path / "marker").exists()
