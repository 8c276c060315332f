"""CLIP weights in every official container, loaded into exactly the architecture their publisher built.

Reference implementation: open_clip's ``load_openai_model`` / ``build_model_from_openai_state_dict``
(OpenAI's own builder, ported). Files are tiny fabrications in the official layouts (see
``official_formats.py``); the paper's ViT-L/14@336 itself is compared on the meta device.
"""

from __future__ import annotations

import io
import pickle
import re
import shutil
from types import SimpleNamespace

import huggingface_hub.constants
import open_clip
import pytest
import torch
from crafted_torchscript import (
    NEW_MODULE,
    finishes_within,
    get,
    module_graph,
    put,
    script_pickle,
    text,
    write_script_archive,
)
from official_formats import (
    TINY_OPENAI_CLIP,
    module_signature,
    open_clip_state,
    register_tiny_openai_config,
    tiny_openai_clip,
    write_hf_cache_entry,
    write_open_clip_release,
    write_openai_torchscript,
)
from open_clip.model import build_model_from_openai_state_dict
from open_clip.openai import load_openai_model
from open_clip.pretrained import _pcfg
from open_clip.transformer import QuickGELU

from scrapbench.core.method import WeightsError
from scrapbench.core.registry import build_config, create_method
from scrapbench.methods.common.checksums import checksum_verdict, file_digest
from scrapbench.methods.common.clip_weights import (
    ClipWeights,
    clip_architecture,
    load_clip,
    native_state_shapes,
    resolve_clip_weights,
)


@pytest.fixture(scope="module")
def openai(tmp_path_factory):
    """A tiny OpenAI TorchScript archive and open_clip's own build of it (the reference)."""
    folder = tmp_path_factory.mktemp("openai")
    name = register_tiny_openai_config(folder / "configs")
    archive = folder / "tiny-openai.pt"
    jit_state = write_openai_torchscript(archive, tiny_openai_clip(seed=3))
    reference = load_openai_model(str(archive), device="cpu", precision="fp32")
    return SimpleNamespace(name=name, archive=archive, jit_state=jit_state, reference=reference)


def _outputs(model: torch.nn.Module, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    text = open_clip.get_tokenizer(name)(["a photo of scrap steel", "a motor"])
    with torch.no_grad():
        return model.encode_image(images), model.encode_text(text)


def _assert_same_as_reference(loaded, openai) -> None:
    assert [type(m) for m in loaded.model.modules()] == [type(m) for m in openai.reference.modules()]
    assert module_signature(loaded.model) == module_signature(openai.reference)
    for ours, theirs in zip(_outputs(loaded.model, openai.name), _outputs(openai.reference, openai.name), strict=True):
        assert torch.equal(ours, theirs)
    for tower in (loaded.model.visual.transformer, loaded.model.transformer):
        assert all(isinstance(block.mlp.gelu, QuickGELU) for block in tower.resblocks)


# -- OpenAI formats --------------------------------------------------------------------------------
def test_openai_torchscript_archive_loads_as_load_openai_model_builds_it(openai, monkeypatch):
    def no_jit(*args, **kwargs):
        raise AssertionError("torch.jit.load runs the archive's code; the weights must be read as data")

    monkeypatch.setattr(torch.jit, "load", no_jit)
    loaded = load_clip(openai.name, str(openai.archive), 32)  # the name says GELU, like ViT-L-14-336
    _assert_same_as_reference(loaded, openai)
    info = loaded.weights_info
    assert (info["clip_architecture"], info["quick_gelu"], info["weights_format"]) == \
        (f"{openai.name}-quickgelu", True, "torchscript")
    assert info["quick_gelu_source"] == "OpenAI TorchScript archive"
    assert info["sha256"] == file_digest(openai.archive)


def test_openai_state_dict_saved_with_torch_save_is_quickgelu_too(openai, tmp_path):
    path = tmp_path / "openai_state.pt"
    torch.save(openai.jit_state, path)  # fp16, with input_resolution / context_length / vocab_size
    loaded = load_clip(openai.name, str(path), 32)
    assert loaded.weights_info["quick_gelu_source"] == "OpenAI state dict layout"
    _assert_same_as_reference(loaded, openai)


def test_openai_tag_from_either_cache_is_quickgelu_and_checked_against_its_published_sha256(
        openai, tmp_path, monkeypatch):
    sha = file_digest(openai.archive)
    url = f"https://openaipublic.azureedge.net/clip/models/{sha}/tiny-openai.pt"
    hub = "scrapbench-test/tiny-openai"
    monkeypatch.setitem(open_clip.pretrained._PRETRAINED, openai.name,
                        {"openai": _pcfg(url=url, hf_hub=f"{hub}/", quick_gelu=True)})
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))

    url_cache = tmp_path / "home" / ".cache" / "clip" / "tiny-openai.pt"  # where open_clip downloads URLs to
    url_cache.parent.mkdir(parents=True)
    shutil.copy(openai.archive, url_cache)
    loaded = load_clip(openai.name, "openai", 32)
    assert loaded.weights_info["checkpoint"] == str(url_cache)
    assert loaded.weights_info["checksum"] == f"= SHA256 {sha} (the OpenAI download URL)"
    assert loaded.weights_info["quick_gelu_source"] == "pretrained tag 'openai'"
    _assert_same_as_reference(loaded, openai)

    # The Hugging Face copy: a plain open_clip state dict, nothing in it says QuickGELU; the tag does.
    plain = {k: v for k, v in openai.jit_state.items() if k not in ("input_resolution", "context_length", "vocab_size")}
    buffer = io.BytesIO()
    torch.save(plain, buffer)
    cached = write_hf_cache_entry(tmp_path / "hf", hub, "open_clip_pytorch_model.bin", buffer.getvalue())
    loaded = load_clip(openai.name, "openai", 32)
    assert loaded.weights_info["checkpoint"] == str(cached)
    assert loaded.weights_info["checksum"].endswith("(the Hugging Face etag)")
    _assert_same_as_reference(loaded, openai)

    shutil.rmtree(tmp_path / "hf")
    write_openai_torchscript(url_cache, tiny_openai_clip(seed=4))  # another file under the URL's name
    with pytest.raises(WeightsError, match=rf"tiny-openai\.pt.*≠ SHA256 {sha}.*re-download"):
        load_clip(openai.name, "openai", 32)


def test_hugging_face_snapshot_config_states_the_activation(openai, tmp_path):
    plain = {k: v for k, v in openai.jit_state.items() if k not in ("input_resolution", "context_length", "vocab_size")}
    buffer = io.BytesIO()
    torch.save(plain, buffer)
    config = {"model_cfg": {**TINY_OPENAI_CLIP, "quick_gelu": True}}
    path = write_hf_cache_entry(tmp_path, "timm/tiny.openai", "open_clip_pytorch_model.bin", buffer.getvalue(), config)
    loaded = load_clip(openai.name, str(path), 32)
    assert loaded.weights_info["quick_gelu_source"] == str(path.parent / "open_clip_config.json")
    assert loaded.weights_info["checksum"].endswith("(the Hugging Face etag)")
    _assert_same_as_reference(loaded, openai)

    gelu = write_hf_cache_entry(tmp_path / "gelu", "x/gelu", "open_clip_pytorch_model.bin", buffer.getvalue(),
                                {"model_cfg": dict(TINY_OPENAI_CLIP)})
    with pytest.raises(WeightsError, match=r"open_clip_config\.json says GELU, but .*-quickgelu is a QuickGELU"):
        load_clip(f"{openai.name}-quickgelu", str(gelu), 32)


def test_plain_state_dict_takes_the_activation_the_name_gives(openai, tmp_path):
    path = tmp_path / "plain.pt"
    torch.save({k: v for k, v in openai.jit_state.items() if k not in ("input_resolution", "context_length",
                                                                        "vocab_size")}, path)
    quick = load_clip(f"{openai.name}-quickgelu", str(path), 32)
    _assert_same_as_reference(quick, openai)
    gelu = load_clip(openai.name, str(path), 32)
    assert gelu.weights_info["quick_gelu"] is False and gelu.weights_info["quick_gelu_source"].endswith("config")
    assert all(isinstance(b.mlp.gelu, torch.nn.GELU) for b in gelu.model.visual.transformer.resblocks)


def test_open_clip_release_and_safetensors_containers_load_exactly(tmp_path):
    from safetensors.torch import save_file

    source = load_clip("scrapbench-vit-tiny", None, 64, init_seed=7).model  # a LAION-style (GELU) CLIP
    release = tmp_path / "release.pt"
    write_open_clip_release(release, source)
    safetensors = tmp_path / "open_clip_model.safetensors"
    save_file(open_clip_state(source), safetensors)
    for path in (release, safetensors):
        loaded = load_clip("scrapbench-vit-tiny", str(path), 64)
        assert module_signature(loaded.model) == module_signature(source)
        for key, value in source.state_dict().items():
            assert torch.equal(loaded.model.state_dict()[key], value), key
        assert loaded.weights_info["quick_gelu"] is False


def test_a_file_under_an_official_name_must_carry_its_published_checksum(tmp_path):
    path = tmp_path / "vit_b_16_plus_240-laion400m_e31-8fb26589.pt"  # open_clip's GitHub release name
    torch.save({"state_dict": {"module.logit_scale": torch.zeros(())}}, path)
    weights = resolve_clip_weights("ViT-B-16-plus-240", str(path))
    assert weights.binding and weights.published.value == "8fb26589"
    accepted, verdict = checksum_verdict(path, weights.published, weights.binding)
    assert not accepted and "≠ SHA256 prefix 8fb26589 (the GitHub release file name)" in verdict
    renamed = tmp_path / "my_clip.pt"
    shutil.copy(path, renamed)
    assert not resolve_clip_weights("ViT-B-16-plus-240", str(renamed)).binding


def test_mismatched_keys_and_shapes_are_named(openai, tmp_path):
    state = dict(openai.jit_state)
    state["visual.extra.weight"] = torch.zeros(1)
    del state["ln_final.bias"]
    state["text_projection"] = torch.zeros(3, 3)
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(WeightsError, match=r"bad\.pt does not fit .*1 missing keys: ln_final\.bias; "
                                           r"1 unexpected keys: visual\.extra\.weight; 1 shape mismatches: "
                                           r"text_projection: file \(3, 3\), model \(64, 32\)"):
        load_clip(openai.name, str(tmp_path / "bad.pt"), 32)


# -- the paper's architecture ------------------------------------------------------------------------
def test_vit_l_14_336_quickgelu_is_openais_architecture():
    """Meta device: the model we build for OpenAI's ViT-L/14@336 is the one OpenAI's builder infers from it."""
    architecture = clip_architecture(ClipWeights("ViT-L-14-336", "openai", quick_gelu=True, quick_gelu_source="tag"))
    assert architecture.name == "ViT-L-14-336-quickgelu" and not architecture.force_quick_gelu
    with torch.device("meta"):
        ours = open_clip.create_model(architecture.name, device="meta")
        layout = {k: torch.empty(s) for k, s in native_state_shapes(architecture).items()}
        layout.update(input_resolution=torch.empty(()), context_length=torch.empty(()), vocab_size=torch.empty(()))
        official = build_model_from_openai_state_dict(layout, cast_dtype=None)  # as load_openai_model in fp32
    assert module_signature(ours) == module_signature(official)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in official.state_dict().items()}
    assert sum(isinstance(m, QuickGELU) for m in ours.modules()) == 24 + 12


def test_paper_preset_runs_quickgelu_on_every_route(openai, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    cache = tmp_path / "home" / ".cache" / "clip" / "ViT-L-14-336px.pt"
    cache.parent.mkdir(parents=True)
    shutil.copy(openai.archive, cache)
    plain = tmp_path / "state_dict.pt"
    torch.save({k: v for k, v in openai.jit_state.items() if k not in ("input_resolution", "context_length",
                                                                        "vocab_size")}, plain)
    routes = {  # how each route reaches the config (`--weights` sets the method's weights_field)
        "tag, from the cache": {},
        "--weights TorchScript archive": {"clip_pretrained": str(openai.archive)},
        "--set clip_pretrained=state dict": {"clip_pretrained": str(plain)},
        "--set clip_model=ViT-L-14-336 (tag)": {"clip_model": "ViT-L-14-336"},
        "--set clip_model=ViT-L-14-336 --weights TorchScript": {"clip_model": "ViT-L-14-336",
                                                                "clip_pretrained": str(openai.archive)},
    }
    for method in ("anomalyclip", "ours"):
        for route, overrides in routes.items():
            config = build_config(method, "paper", overrides)
            weights = resolve_clip_weights(config.clip_model, config.clip_pretrained)
            architecture = clip_architecture(weights)
            assert (architecture.name, architecture.quick_gelu) == ("ViT-L-14-336-quickgelu", True), (method, route)
    assert resolve_clip_weights("ViT-L-14-336-quickgelu", "openai").path == cache


# -- nothing in a file is executed ---------------------------------------------------------------------
class _RunsCodeOnLoad:
    """Unpickling this runs ``code``: what a crafted checkpoint can do to a trusting loader."""

    def __init__(self, code: str) -> None:
        self.code = code

    def __reduce__(self):
        return exec, (self.code,)


def test_a_crafted_clip_checkpoint_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "marker"
    crafted = tmp_path / "clip.pt"
    torch.save({"state_dict": {"visual.proj": _RunsCodeOnLoad(f"open({str(marker)!r}, 'w').close()")}}, crafted)
    torch.load(crafted, weights_only=False)  # the file is live: a trusting loader runs it
    assert marker.exists()
    marker.unlink()

    for load in (lambda: load_clip("scrapbench-vit-tiny", str(crafted), 64),
                 lambda: create_method("anomalyclip", ("motor",), preset="smoke",
                                       overrides={"clip_pretrained": str(crafted)})):
        with pytest.raises(WeightsError, match=r"clip\.pt could not be read safely: .*Unsupported global.*exec"):
            load()
    assert not marker.exists()

    # The same payload as the data.pkl of a TorchScript archive: read with the weights-only unpickler too.
    payload = pickle.dumps(_RunsCodeOnLoad(f"open({str(marker)!r}, 'w').close()"), protocol=2)
    archive = write_script_archive(tmp_path / "crafted_archive.pt", payload)
    pickle.loads(payload)  # live
    marker.unlink()
    with pytest.raises(WeightsError, match=r"crafted_archive\.pt could not be read safely"):
        load_clip("scrapbench-vit-tiny", str(archive), 64)
    assert not marker.exists()


def _shared_attribute_dict(modules: int, entries: int) -> bytes:
    """A root with ``modules`` children that are all built from one dict of ``entries`` attributes."""
    shared = pickle.EMPTY_DICT + pickle.MARK + b"".join(text(f"a{i}") + pickle.NONE for i in range(entries))
    children = b"".join(text(f"m{i}") + NEW_MODULE + get(1) + pickle.BUILD for i in range(modules))
    return script_pickle(NEW_MODULE + put(0), shared + pickle.SETITEMS + put(1), get(0) + pickle.EMPTY_DICT
                         + pickle.MARK + children + pickle.SETITEMS + pickle.BUILD, get(0))


_CRAFTED_TREES = {  # name: (data.pkl, what the refusal says)
    "module containing itself": (module_graph([{"me": 0}]), r"module 'me' is module <root> again \(a cycle"),
    "cycle through three modules": (module_graph([{"a": 1}, {"b": 2}, {"c": 0}]), r"'a\.b\.c' is module <root> again"),
    "cycle below the root": (module_graph([{"x": 1}, {"y": 2}, {"z": 1}]), r"'x\.y\.z' is module 'x' again"),
    "DAG of shared children, 64 deep": (module_graph([{"l": i + 1, "r": i + 1} for i in range(63)] + [{}]),
                                        r"'(l\.)*r' is module '(l\.)*l' again \(a cycle or a shared submodule"),
    "chain 1,000 deep": (module_graph([{"c": i + 1} for i in range(999)] + [{}]), "nest more than 100 levels deep"),
    "one attribute dict shared by 500 modules": (_shared_attribute_dict(500, 500),
                                                   "more than 200,000 attributes"),
    "20,000 modules in a row": (script_pickle((NEW_MODULE + pickle.EMPTY_DICT + pickle.BUILD) * 20_000),
                                "60,000 object opcodes, more than 50,000"),
    "5,000 module classes": (script_pickle(*(pickle.GLOBAL + f"__torch__\nM{i}\n".encode() + pickle.EMPTY_TUPLE
                                             + pickle.NEWOBJ for i in range(5_000))),
                             "10,000 object opcodes over 5,000 module classes, more than 20,000,000 lookups"),
}


@pytest.mark.parametrize("variant", list(_CRAFTED_TREES))
def test_a_crafted_torchscript_module_tree_is_refused_quickly_in_one_line(variant, tmp_path):
    """torch.jit.save writes each module once: a module reached twice, or a tree beyond the caps, is refused
    (walking it would never end, or take 2^depth steps)."""
    data_pkl, reason = _CRAFTED_TREES[variant]
    archive = write_script_archive(tmp_path / "crafted.pt", data_pkl)
    with finishes_within(20), pytest.raises(WeightsError) as refused:
        load_clip("scrapbench-vit-tiny", str(archive), 64)
    message = str(refused.value)
    assert message.startswith(f"CLIP checkpoint {archive} could not be read safely: UnpicklingError: ")
    assert "\n" not in message
    assert re.search(reason, message), message


_MALFORMED_ARCHIVES = {  # name: (data.pkl or None, what the refusal says)
    "no data.pkl": (None, "UnpicklingError: the TorchScript archive has no data.pkl"),
    "class called with arguments (NEWOBJ)": (
        script_pickle(pickle.GLOBAL + b"__torch__\nM\n" + pickle.BININT1 + b"\x01" + pickle.TUPLE1 + pickle.NEWOBJ),
        "UnpicklingError: __torch__.M is called with arguments"),
    "class called with arguments (REDUCE)": (
        script_pickle(pickle.GLOBAL + b"__torch__\nM\n" + text("x") + pickle.TUPLE1 + pickle.REDUCE),
        "UnpicklingError: __torch__.M is called with arguments"),
    "BUILD with a list": (script_pickle(NEW_MODULE + pickle.EMPTY_LIST + pickle.BUILD),
                          "UnpicklingError: __torch__.M is built from state of type list, not a dict"),
    "BUILD with an int": (script_pickle(NEW_MODULE + pickle.BININT1 + b"\x07" + pickle.BUILD),
                          "UnpicklingError: __torch__.M is built from state of type int"),
    "module never built": (script_pickle(NEW_MODULE), r"module <root> \(__torch__\.M\) is never built"),
    "attribute named by an int": (
        script_pickle(NEW_MODULE + put(0), NEW_MODULE + pickle.EMPTY_DICT + pickle.BUILD + put(1),
                      get(0) + pickle.EMPTY_DICT + pickle.BININT1 + b"\x01" + get(1) + pickle.SETITEM + pickle.BUILD,
                      get(0)),
        "module <root> has an attribute whose name is of type int"),
    "attribute name longer than a key": (
        module_graph([{"x" * 2_000: 1}, {}]), "dotted name is longer than 1,000 characters"),
    "nothing on the stack": (script_pickle(), "IndexError: pop from empty list"),
    "a list, not a module": (script_pickle(pickle.EMPTY_LIST), "does not hold a TorchScript module"),
}


@pytest.mark.parametrize("variant", list(_MALFORMED_ARCHIVES))
def test_a_malformed_torchscript_archive_is_refused_in_one_line(variant, tmp_path):
    data_pkl, reason = _MALFORMED_ARCHIVES[variant]
    archive = write_script_archive(tmp_path / "malformed.pt", data_pkl)
    with finishes_within(20), pytest.raises(WeightsError) as refused:
        load_clip("scrapbench-vit-tiny", str(archive), 64)
    message = str(refused.value)
    assert message.startswith(f"CLIP checkpoint {archive} could not be read safely: ") and "\n" not in message
    assert re.search(reason, message), message


@pytest.mark.parametrize("name", ["hf-hub:attacker/model", "local-dir:/tmp/attacker"])
def test_a_clip_name_with_a_schema_is_refused_before_open_clip_resolves_it(name, monkeypatch):
    """open_clip would fetch (hf-hub) or read (local-dir) a config named by the string; a model folder's
    config must not steer that."""
    import open_clip.factory

    def fetch(*args, **kwargs):
        raise AssertionError("open_clip was asked to resolve the name")

    monkeypatch.setattr(open_clip.factory, "_get_hf_config", fetch)
    with pytest.raises(ValueError, match="unknown CLIP architecture"):
        load_clip(name, None, 64)
