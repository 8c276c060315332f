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
