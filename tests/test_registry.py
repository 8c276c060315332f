from __future__ import annotations

from typing import Any, ClassVar

import pytest

from scrapbench.core import registry
from scrapbench.core.presets import resolve_preset


def test_all_is_table2_and_ablation_is_table3():
    assert registry.resolve_method_names(["all"]) == [
        "winclip", "winclip_plus", "anomalyclip", "yolov8_sam", "yolo11_sam", "mask_rcnn", "ours"]
    assert registry.resolve_method_names(["ablation"]) == ["ours", "ours_msm_5_11", "ours_msm_7_13", "ours_no_msm"]
    assert registry.resolve_method_names(["winclip,ours", "winclip"]) == ["winclip", "ours"]


def test_unknown_name_suggests_close_match():
    with pytest.raises(KeyError, match="did you mean winclip"):
        registry.get_spec("winclp")


def test_registering_twice_fails_loudly():
    from toy_method import ColourDistance

    registry.register_method("toy_unique_name")(ColourDistance)
    try:
        with pytest.raises(ValueError, match="already registered"):
            registry.add_spec(registry.MethodSpec("toy_unique_name", object, "other"))
    finally:
        registry._REGISTRY.pop("toy_unique_name")


def test_entry_point_plugins_are_listed(monkeypatch):
    class FakeEntryPoint:
        name, value = "outside_method", "toy_method:ColourDistance"

    monkeypatch.setattr(registry, "_loaded_builtins", False)
    monkeypatch.setattr(registry, "_REGISTRY", {})
    monkeypatch.setattr(registry, "entry_points",
                        lambda group: [FakeEntryPoint()] if group == "scrapbench.methods" else [])
    spec = registry.get_spec("outside_method")
    assert spec.load_class().__name__ == "ColourDistance"
    assert "outside_method" in registry.resolve_method_names(["all"])


def test_config_precedence(tmp_path):
    from toy_method import ColourDistance

    monkey_spec = registry.MethodSpec("toy_prec", ColourDistance, "toy", (), {"noise": 0.5})
    registry._REGISTRY["toy_prec"] = monkey_spec
    try:
        assert registry.build_config("toy_prec", "smoke").max_images == 4  # preset over default
        assert registry.build_config("toy_prec", "smoke").noise == 0.5  # the name's own field
        preset_file = tmp_path / "p.yaml"
        preset_file.write_text("base: smoke\nmethods:\n  toy_prec: {max_images: 2, noise: 0.1}\n")
        resolved = resolve_preset(str(preset_file), ["toy_prec.max_images=3"])
        assert resolved.name == "smoke"
        config = registry.build_config("toy_prec", resolved.name, resolved.overrides["toy_prec"])
        assert (config.max_images, config.noise) == (3, 0.1)  # CLI > file
        with pytest.raises(ValueError, match="unknown config fields"):
            registry.build_config("toy_prec", "smoke", {"nope": 1})
    finally:
        registry._REGISTRY.pop("toy_prec")


def test_bad_settings_are_explained(tmp_path):
    with pytest.raises(ValueError, match=r"METHOD\.FIELD=VALUE"):
        resolve_preset("cpu", ["epochs=3"])
    with pytest.raises(ValueError, match="neither"):
        resolve_preset(str(tmp_path / "missing.yaml"))


def test_decorated_plugin_refines_its_entry_point(monkeypatch):
    monkeypatch.setitem(registry._REGISTRY, "colour_plugin",
                        registry.MethodSpec("colour_plugin", "toy_method:ColourDistance", "from entry point"))
    from toy_method import ColourDistance

    registry.register_method("colour_plugin", "decorated", suites=("table2",))(ColourDistance)
    assert registry.get_spec("colour_plugin").description == "decorated"


def test_what_a_method_declares_is_read_without_building_it(monkeypatch):
    """Learning type and weights come from classmethods; a `paper` entry in `presets` is refused (paper is
    the Config defaults); the registry name is set by the registry's factory."""
    from toy_method import ColourDistance

    from scrapbench.core.method import LearningType
    from scrapbench.core.weights import method_weight_checks

    registry.get_spec("winclip")  # the built-ins first, so that setitem below adds to them
    monkeypatch.setitem(registry._REGISTRY, "toy", registry.MethodSpec("toy", ColourDistance, "toy"))
    winclip = registry.get_spec("winclip").load_class()
    assert winclip.learning_type_for(registry.build_config("winclip_plus", "smoke")) is LearningType.FEW_SHOT
    assert winclip.learning_type_for(registry.build_config("winclip", "smoke")) is LearningType.ZERO_SHOT
    assert [c.setting for c in method_weight_checks("yolov8_sam", "smoke")] == [
        "yolov8_sam.yolo_weights=None", "yolov8_sam.sam_checkpoint=None"]
    assert method_weight_checks("toy", "smoke") == []

    class DeclaresPaper(ColourDistance):
        presets: ClassVar[dict[str, dict[str, Any]]] = {"smoke": {}, "cpu": {}, "paper": {"max_images": 2}}

    monkeypatch.setitem(registry._REGISTRY, "declares_paper", registry.MethodSpec("declares_paper", DeclaresPaper, ""))
    with pytest.raises(ValueError, match="Config defaults"):
        registry.build_config("declares_paper", "paper")
    assert ColourDistance(registry.build_config("toy", "smoke"), ("a",)).registry_name is None
    assert registry.create_method("toy", ("a",), "smoke").registry_name == "toy"


# -- config values checked against their field's type (issue #22.7) ----------------------------------
@pytest.mark.parametrize("setting, message", [
    ("ours.image_size=abc", "--set ours.image_size = 'abc': expected int"),
    ("ours.image_size=true", "--set ours.image_size = True: expected int"),  # a bool is not an int
    ("ours.epochs=.nan", "--set ours.epochs = nan: expected int"),
    ("ours.epochs=.inf", "--set ours.epochs = inf: expected int"),
    ("ours.epochs=3.5", "--set ours.epochs = 3.5: expected int"),
    ("ours.epochs=1" + "0" * 30, "expected int (64-bit)"),
    ("ours.lr=.nan", "--set ours.lr = nan: expected float (finite)"),
    ("ours.lr=-.inf", "--set ours.lr = -inf: expected float"),
    ("ours.lr=1e999", "--set ours.lr = inf: expected float"),
    ("ours.lr=yes", "--set ours.lr = True: expected float"),
    ("ours.use_msm=1", "--set ours.use_msm = 1: expected bool"),
    ("ours.clip_model=5", "--set ours.clip_model = 5: expected str"),
    ("ours.clip_pretrained=[a]", "--set ours.clip_pretrained = ['a']: expected str | null"),
    ("ours.normals_per_epoch=false", "--set ours.normals_per_epoch = False: expected int (64-bit) | null"),
    ("ours.feature_layers=7", "--set ours.feature_layers = 7: expected a list of int"),
    ("ours.feature_layers=[1, x]", "--set ours.feature_layers = [1, 'x']: expected a list of int"),
    ("ours.msm_stage_weights=[0.1, .nan]", "expected a list of float (finite)"),
    ("ours.binary_scoring=mean", "--set ours.binary_scoring = 'mean': expected one of 'averaged_prompt', 'class_mean'"),
    ("mask_rcnn.optimizer=adam", "expected one of 'sgd', 'adamw'"),
    ("yolov8_sam.yolo_scale=xl", "expected one of 'n', 's', 'm', 'l', 'x'"),
    ("winclip.image_score=1", "expected one of 'class_token', 'map_max'"),
    ("ours.epochs=[1", "--set ours.epochs: invalid YAML: expected ',' or ']'"),
    ("ours.epochs=: :", "--set ours.epochs: invalid YAML"),
    ("ours.epochs=!!python/object:os.system x", "--set ours.epochs: invalid YAML"),
    ("ours.msm_stride=" + "9" * 5000, "--set ours.msm_stride: invalid YAML"),
])
def test_set_values_are_checked_against_the_field_type(setting, message):
    with pytest.raises(ValueError) as info:
        resolve_preset("smoke", [setting])
    text = str(info.value)
    assert message in text
    assert "\n" not in text and len(text) < 300


def test_values_valid_before_the_check_still_work(tmp_path):
    """Lists for tuples (also nested in a preset file), null for optional fields, an int for a float, 1e-3."""
    preset_file = tmp_path / "p.yaml"
    preset_file.write_text("base: smoke\nmethods:\n  ours: {feature_layers: [1, 2, 3, 4], lr: 0,"
                           " msm_stage_weights: [0.1, 0.1, 0.1, 1], msm_scales: [5, 11]}\n")
    resolved = resolve_preset(str(preset_file), ["ours.weight_decay=1e-3", "ours.clip_pretrained=null",
                                                 "winclip.memory_layers=[-1, 2]", "ours.init_seed=-3"])
    config = registry.build_config("ours", resolved.name, resolved.overrides["ours"])
    assert (config.feature_layers, config.msm_scales, config.lr) == ((1, 2, 3, 4), (5, 11), 0)
    assert (config.weight_decay, config.clip_pretrained, config.init_seed) == (1e-3, None, -3)
    assert registry.build_config("winclip", "smoke", resolved.overrides["winclip"]).memory_layers == (-1, 2)


@pytest.mark.parametrize("text, message", [
    ("base: smoke\nmethods:\n  ours: {image_size: abc}\n", "p.yaml: methods.ours.image_size = 'abc': expected int"),
    ("base: smoke\nmethods:\n  ours: {augment: 'yes'}\n", "p.yaml: methods.ours.augment = 'yes': expected bool"),
    ("base: smoke\nmethods:\n  ours: {epochs: .nan}\n", "p.yaml: methods.ours.epochs = nan: expected int"),
    ("base: smoke\nmethods:\n  ours: {image_size: [1\n", "p.yaml: invalid YAML"),
    ("- base\n- smoke\n", "p.yaml: expected a mapping with `base` and `methods`"),
    ("base: smoke\nmethod:\n  ours: {epochs: 2}\n", "p.yaml: unknown keys ['method']"),
    ("base: [smoke]\n", "p.yaml: `base` must be one of"),
    ("base: smoke\nmethods: [ours]\n", "p.yaml: `methods` must map method names"),
    ("base: smoke\nmethods:\n  ours: {epochs: " + "9" * 5000 + "}\n", "p.yaml: invalid YAML"),
    ("[" * 100_000, "p.yaml: invalid YAML"),
])
def test_preset_file_values_are_checked(tmp_path, text, message):
    preset_file = tmp_path / "p.yaml"
    preset_file.write_text(text)
    with pytest.raises(ValueError) as info:
        resolve_preset(str(preset_file))
    assert message in str(info.value) and "\n" not in str(info.value)


def test_preset_file_not_utf8_is_one_line(tmp_path):
    preset_file = tmp_path / "p.yaml"
    preset_file.write_bytes(b"base: smoke\n\xff\xfe\n")
    with pytest.raises(ValueError, match=r"p\.yaml: cannot read the preset file"):
        resolve_preset(str(preset_file))


@pytest.mark.parametrize("value", [float("nan"), True, "8", [8], 2**64])
def test_model_folder_config_is_checked_against_the_field_type(tmp_path, monkeypatch, value):
    """A model folder's method.json config passes the same check (a NaN count, a bool, a string, a list)."""
    import json

    import numpy as np
    from toy_method import ColourDistance

    from scrapbench.core.method import AnomalyMethod, ModelFolderError

    monkeypatch.setitem(registry._REGISTRY, "toy", registry.MethodSpec("toy", ColourDistance, "toy"))
    method = registry.create_method("toy", ("a",), "smoke")
    method.mean, method.rng_seed = np.zeros(3, np.float32), 0
    folder = method.save(tmp_path / "model")
    meta = json.loads((folder / "method.json").read_text())
    meta["config"]["max_images"] = value
    (folder / "method.json").write_text(json.dumps(meta))
    with pytest.raises(ModelFolderError, match=r"method\.json: .*max_images = .*: expected int \(64-bit\)$"):
        AnomalyMethod.load(folder)
