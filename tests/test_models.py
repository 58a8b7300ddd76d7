"""Model specs, tiny configs, checkpoint round trips and exports (everything offline)."""

from __future__ import annotations

import json
import pickle
import random

import huggingface_hub
import open_clip
import pytest
import torch
from PIL import Image

from lakd.errors import LakdError
from lakd.models import (
    ModelSpec,
    export_local_dir,
    list_lakd_configs,
    load_checkpoint,
    load_model,
    register_lakd_configs,
    save_checkpoint,
)
from lakd.models.safe_load import sidecar_path

CAPTIONS = ["a red circle", "a blue square left of a green triangle", "two yellow stars and no circle"]


def _images(preprocess) -> torch.Tensor:
    colours = [(200, 30, 30), (30, 30, 200), (30, 180, 30)]
    return torch.stack([preprocess(Image.new("RGB", (80, 64), colour)) for colour in colours])


def _embed(model, images, tokens) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        return model.encode_image(images, normalize=False), model.encode_text(tokens, normalize=False)


def _loaded(spec):
    model, preprocess, tokenizer = load_model(spec)
    images, tokens = _images(preprocess), tokenizer(CAPTIONS)
    return spec, model, preprocess, tokenizer, images, tokens, _embed(model, images, tokens)


@pytest.fixture(scope="module")
def vit():
    """(spec, model, preprocess, tokenizer, images, tokens, (image_emb, text_emb)) for lakd:tiny-vit."""
    return _loaded("lakd:tiny-vit")


@pytest.fixture(scope="module")
def resnet():
    return _loaded("lakd:tiny-resnet")


@pytest.fixture(scope="module", params=["vit", "resnet"])
def tiny(request):
    """Each shipped config in turn (same tuple as ``vit``)."""
    return request.getfixturevalue(request.param)


@pytest.fixture(scope="module")
def vit_pt(tmp_path_factory, vit):
    return save_checkpoint(vit[1], tmp_path_factory.mktemp("ckpt") / "tiny-vit.pt", epoch=3)


def _same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# ---------------------------------------------------------------- shipped configs


def test_lakd_configs_are_listed_and_registered_with_open_clip():
    assert {"tiny-vit", "tiny-resnet"} <= set(list_lakd_configs())
    register_lakd_configs()
    register_lakd_configs()  # idempotent
    for name in list_lakd_configs():
        assert f"lakd-{name}" in open_clip.list_models()


def test_tiny_configs_build_small_clip_models(tiny):
    spec, model, preprocess, tokenizer, images, tokens, (img, txt) = tiny
    name = ModelSpec.parse(spec).target
    assert isinstance(model, open_clip.CLIP) and not model.training
    assert model.lakd_spec == spec and model.lakd_model_name == f"lakd-{name}"
    assert model.lakd_model_cfg == open_clip.get_model_config(f"lakd-{name}")
    assert tokenizer.context_length == 32 and tokens.shape == (3, 32) and tokens.dtype == torch.long
    assert images.shape == (3, 3, 64, 64)
    embed_dim = model.lakd_model_cfg["embed_dim"]
    assert 128 <= embed_dim <= 256
    assert img.shape == txt.shape == (3, embed_dim)
    assert torch.isfinite(img).all() and torch.isfinite(txt).all()
    assert not torch.allclose(img[0], img[1])  # different images embed differently
    assert sum(p.numel() for p in model.parameters()) < 20_000_000


def test_tiny_resnet_uses_a_timm_resnet_without_pretrained_weights(resnet):
    model = resnet[1]
    vision_cfg = model.lakd_model_cfg["vision_cfg"]
    assert vision_cfg["timm_model_name"].startswith("resnet") and vision_cfg["timm_model_pretrained"] is False
    assert type(model.visual).__name__ == "TimmModel"


def test_unknown_lakd_config_lists_the_available_ones():
    with pytest.raises(LakdError, match="unknown lakd config.*tiny-resnet, tiny-vit"):
        load_model("lakd:huge")


def test_unknown_spec_lists_the_accepted_forms(tmp_path):
    with pytest.raises(LakdError) as err:
        load_model(str(tmp_path / "model.onnx"))
    for form in ("lakd:", "open_clip:", "local-dir:", "hf-hub:", ".pt", ".safetensors"):
        assert form in str(err.value)


def test_arch_only_applies_to_checkpoint_files():
    with pytest.raises(LakdError, match="lakd:tiny-vit: `arch` applies only to checkpoint files"):
        load_model("lakd:tiny-vit", arch="ViT-B-32")


def test_unknown_precision_is_rejected():
    with pytest.raises(LakdError, match="precision 'fp8'"):
        load_model("lakd:tiny-vit", precision="fp8")


# ---------------------------------------------------------------- open_clip specs


def test_open_clip_arch_random_init():
    model, preprocess, tokenizer = load_model("open_clip:ViT-S/32")  # '/' spelling as open_clip accepts it
    assert model.lakd_model_name == "ViT-S-32" and model.lakd_model_cfg["embed_dim"] == 384
    assert tokenizer.context_length == 77 and not model.training
    with torch.no_grad():
        assert model.encode_text(tokenizer(["a cat"])).shape == (1, 384)


def test_unknown_open_clip_arch_and_tag():
    with pytest.raises(LakdError, match="unknown open_clip architecture 'ViT-Z-99'.*lakd:tiny-vit"):
        load_model("open_clip:ViT-Z-99")
    with pytest.raises(LakdError, match="unknown pretrained tag 'nope' for ViT-B-32 .*openai"):
        load_model("open_clip:ViT-B-32@nope")


@pytest.fixture()
def offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-hf-cache"))


def test_pretrained_tag_offline_is_a_clear_error(offline):
    with pytest.raises(
        LakdError, match=r"open_clip:ViT-B-32@openai: pretrained tag 'openai' could not be fetched offline"
    ):
        load_model("open_clip:ViT-B-32@openai")


def test_hf_hub_offline_is_a_clear_error(offline):
    with pytest.raises(LakdError, match="hf-hub:laion/some-clip: could not be fetched offline"):
        load_model("hf-hub:laion/some-clip")


# ---------------------------------------------------------------- checkpoints


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_checkpoint_round_trip_is_exact(tiny, tmp_path, suffix):
    spec, model, _, _, images, tokens, (img, txt) = tiny
    path = save_checkpoint(model, tmp_path / f"student{suffix}", epoch=7, extra={"run": "r1", "step": 70})
    assert path == tmp_path / f"student{suffix}"
    loaded, preprocess, tokenizer = load_model(str(path))
    assert _same_weights(model, loaded)
    img2, txt2 = _embed(loaded, _images(preprocess), tokenizer(CAPTIONS))
    assert torch.equal(img, img2) and torch.equal(txt, txt2)
    assert loaded.lakd_spec == str(path) and loaded.lakd_model_name == model.lakd_model_name
    assert loaded.lakd_model_cfg == model.lakd_model_cfg and not loaded.training
    meta = loaded.lakd_checkpoint_meta
    assert meta["epoch"] == 7 and meta["lakd"]["run"] == "r1" and meta["lakd"]["spec"] == spec
    # only the final files: no temp files left behind
    expected = {path.name} | ({sidecar_path(path).name} if suffix == ".safetensors" else set())
    assert {p.name for p in tmp_path.iterdir()} == expected


def test_pt_checkpoint_keeps_open_clip_layout_and_plain_types(vit_pt):
    raw = torch.load(vit_pt, map_location="cpu", weights_only=True)
    assert {"state_dict", "epoch", "name", "model_cfg", "lakd"} <= set(raw)
    assert raw["epoch"] == 3 and raw["lakd"]["version"] and raw["lakd"]["model_name"] == raw["name"]
    assert json.loads(json.dumps({k: v for k, v in raw.items() if k != "state_dict"}))  # JSON-plain metadata


def test_safetensors_sidecar_holds_the_config(tiny, tmp_path):
    _, model, *_ = tiny
    path = save_checkpoint(model, tmp_path / "s.safetensors")
    side = json.loads(sidecar_path(path).read_text())
    assert side["model_cfg"] == model.lakd_model_cfg and side["lakd"]["model_name"] == model.lakd_model_name


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_open_clip_loads_our_checkpoints_directly(tiny, tmp_path, suffix):
    _, model, _, _, images, tokens, (img, txt) = tiny
    path = save_checkpoint(model, tmp_path / f"m{suffix}")
    oc_model, _, _ = open_clip.create_model_and_transforms(model.lakd_model_name, pretrained=str(path))
    oc_img, oc_txt = _embed(oc_model.eval(), images, tokens)
    assert torch.equal(oc_img, img) and torch.equal(oc_txt, txt)


def test_local_dir_export_loads_in_open_clip_and_lakd(tiny, tmp_path):
    _, model, _, _, images, tokens, (img, txt) = tiny
    out = export_local_dir(model, tmp_path / "export")
    assert {p.name for p in out.iterdir()} == {"open_clip_config.json", "open_clip_model.safetensors"}
    oc_model, _, oc_preprocess = open_clip.create_model_and_transforms(f"local-dir:{out}")
    oc_tokens = open_clip.get_tokenizer(f"local-dir:{out}")(CAPTIONS)
    assert torch.equal(oc_tokens, tokens)
    oc_img, oc_txt = _embed(oc_model.eval(), _images(oc_preprocess), oc_tokens)
    assert torch.equal(oc_img, img) and torch.equal(oc_txt, txt)
    loaded, preprocess, tokenizer = load_model(f"local-dir:{out}")
    assert loaded.lakd_model_cfg == model.lakd_model_cfg and loaded.lakd_model_name is None
    assert torch.equal(_embed(loaded, _images(preprocess), tokenizer(CAPTIONS))[1], txt)
    with pytest.raises(LakdError, match="already exists"):
        export_local_dir(model, out)
    assert export_local_dir(model, out, overwrite=True) == out


def test_local_dir_errors(tmp_path):
    with pytest.raises(LakdError, match="no such folder"):
        load_model(f"local-dir:{tmp_path / 'missing'}")
    with pytest.raises(LakdError, match="no open_clip_config.json"):
        load_model(f"local-dir:{tmp_path}")


def _open_clip_style(model, path, *, prefix=""):
    state = {prefix + k: v for k, v in model.state_dict().items()}
    torch.save({"state_dict": state, "epoch": 1, "name": "my-run"}, path)
    return path


@pytest.mark.parametrize("prefix", ["", "module."])
def test_open_clip_checkpoint_needs_arch(vit, tmp_path, prefix):
    spec, model, _, _, images, tokens, (img, txt) = vit
    path = _open_clip_style(model, tmp_path / "oc.pt", prefix=prefix)
    with pytest.raises(LakdError, match=f"{path}: no model_cfg .*give `arch`"):
        load_model(str(path))
    loaded, _, _ = load_model(str(path), arch=spec)
    assert loaded.lakd_model_name == model.lakd_model_name
    assert torch.equal(_embed(loaded, images, tokens)[1], txt)


def test_bare_state_dict_with_open_clip_arch_name(vit, tmp_path):
    _, model, _, _, images, tokens, (img, _) = vit
    path = tmp_path / "bare.pt"
    torch.save(model.state_dict(), path)
    loaded, _, _ = load_model(path, arch=model.lakd_model_name)
    assert torch.equal(_embed(loaded, images, tokens)[0], img)


# ---------------------------------------------------------------- bad files


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(LakdError, match=f"{tmp_path / 'nope.pt'}: no such checkpoint file"):
        load_model(str(tmp_path / "nope.pt"))
    folder = tmp_path / "folder.pt"
    folder.mkdir()
    with pytest.raises(LakdError, match=f"{folder}: is a directory"):
        load_model(str(folder))


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_random_bytes(tmp_path, suffix):
    path = tmp_path / f"noise{suffix}"
    path.write_bytes(random.Random(0).randbytes(4096))
    with pytest.raises(LakdError) as err:
        load_model(str(path))
    assert str(err.value).startswith(f"{path}: ") and "corrupt" in str(err.value)
    assert "unsafe" not in str(err.value)


def test_empty_pt(tmp_path):
    path = tmp_path / "empty.pt"
    path.write_bytes(b"")
    with pytest.raises(LakdError, match=f"{path}: empty or truncated"):
        load_model(str(path))


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_truncated_checkpoint(vit, tmp_path, suffix):
    _, model, *_ = vit
    full = save_checkpoint(model, tmp_path / f"full{suffix}")
    cut = tmp_path / f"cut{suffix}"
    data = full.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    if suffix == ".safetensors":
        sidecar_path(full).rename(sidecar_path(cut))
    with pytest.raises(LakdError, match=f"{cut}: truncated or corrupt"):
        load_model(str(cut))


def test_wrong_architecture_names_a_key_and_both_shapes(resnet, tmp_path):
    path = save_checkpoint(resnet[1], tmp_path / "resnet.pt")
    with pytest.raises(LakdError) as err:
        load_model(str(path), arch="lakd:tiny-vit")
    message = str(err.value)
    assert message.startswith(f"{path}: wrong architecture: ")
    assert "text_projection has shape (128, 128) in the file but (128, 256) in lakd-tiny-vit" in message


def test_missing_keys_are_counted_and_named(vit_pt, tmp_path):
    raw = torch.load(vit_pt, map_location="cpu", weights_only=True)
    dropped = sorted(raw["state_dict"])[:5]
    for key in dropped:
        del raw["state_dict"][key]
    path = tmp_path / "partial.pt"
    torch.save(raw, path)
    total = len(raw["state_dict"]) + 5
    with pytest.raises(
        LakdError, match=rf"{path}: 5 of {total} keys of lakd-tiny-vit missing from the file"
    ) as err:
        load_model(str(path))
    named = str(err.value).split("(first: ")[1].rstrip(")").split(", ")
    assert len(named) == 3 and set(named) <= set(dropped)


def test_unexpected_keys_are_named(vit_pt, tmp_path):
    raw = torch.load(vit_pt, map_location="cpu", weights_only=True)
    raw["state_dict"]["extra_head.weight"] = torch.zeros(2)
    path = tmp_path / "extra.pt"
    torch.save(raw, path)
    with pytest.raises(
        LakdError, match=f"{path}: 1 keys in the file that .* does not have \\(first: extra_head.weight\\)"
    ):
        load_model(str(path))


def test_unknown_arch(vit_pt):
    with pytest.raises(LakdError, match="architecture 'ViT-Q-1': unknown .*lakd:tiny-vit"):
        load_model(str(vit_pt), arch="ViT-Q-1")


def test_file_without_a_state_dict(tmp_path):
    path = tmp_path / "list.pt"
    torch.save([1, 2, 3], path)
    with pytest.raises(LakdError, match=f"{path}: holds a list, not a state_dict"):
        load_model(str(path))
    path = tmp_path / "mixed.pt"
    torch.save({"state_dict": {"w": torch.zeros(1), "n": 3}}, path)
    with pytest.raises(LakdError, match="state_dict entry 'n' is a int, not a tensor"):
        load_model(str(path))


def test_broken_sidecar(vit, tmp_path):
    _, model, *_ = vit
    path = save_checkpoint(model, tmp_path / "m.safetensors")
    sidecar_path(path).write_text("{not json")
    with pytest.raises(LakdError, match=f"{sidecar_path(path)}: not valid JSON"):
        load_model(str(path))
    sidecar_path(path).write_text(json.dumps({"model_cfg": {"embed_dim": 8}}))
    with pytest.raises(LakdError, match="model_cfg must be a dict with vision_cfg and text_cfg"):
        load_model(str(path))


def test_safetensors_without_sidecar_needs_arch(vit, tmp_path):
    _, model, _, _, images, tokens, (img, _) = vit
    path = save_checkpoint(model, tmp_path / "m.safetensors")
    sidecar_path(path).unlink()
    with pytest.raises(LakdError, match="give `arch`"):
        load_model(str(path))
    loaded, _, _ = load_model(str(path), arch=model.lakd_model_name)
    assert torch.equal(_embed(loaded, images, tokens)[0], img)


class _Payload:
    """Unpickling this would create the marker file: proof that code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("kind", ["torch-zip", "pickle-protocol-2", "pickle-protocol-4"])
def test_pickle_with_code_payload_is_refused_and_never_runs(tmp_path, kind):
    marker = tmp_path / "payload-ran"
    path = tmp_path / "evil.pt"
    if kind == "torch-zip":
        torch.save({"state_dict": {"w": torch.zeros(2)}, "evil": _Payload(marker)}, path)
    else:
        path.write_bytes(pickle.dumps(_Payload(marker), protocol=int(kind[-1])))
    assert not marker.exists()
    with pytest.raises(LakdError) as err:
        load_model(str(path))
    message = str(err.value)
    assert message.startswith(f"{path}: refused: unsafe pickled code (")
    assert "open)" in message
    assert not marker.exists()


# ---------------------------------------------------------------- saving


def test_save_rejects_bad_suffix_reserved_and_non_json_extra(vit, tmp_path):
    _, model, *_ = vit
    with pytest.raises(LakdError, match="must end in one of .pt, .safetensors"):
        save_checkpoint(model, tmp_path / "m.ckpt")
    with pytest.raises(LakdError, match="extra: key 'spec' is reserved"):
        save_checkpoint(model, tmp_path / "m.pt", extra={"spec": "x"})
    with pytest.raises(LakdError, match="extra: checkpoint metadata must be JSON-serialisable"):
        save_checkpoint(model, tmp_path / "m.pt", extra={"tensor": torch.zeros(1)})
    with pytest.raises(LakdError, match="epoch: must be an int"):
        save_checkpoint(model, tmp_path / "m.pt", epoch=1.5)
    assert list(tmp_path.iterdir()) == []


def test_save_needs_a_lakd_model(tmp_path):
    plain = open_clip.create_model("lakd-tiny-vit")
    with pytest.raises(LakdError, match="no lakd_model_cfg"):
        save_checkpoint(plain, tmp_path / "m.pt")
    assert not (tmp_path / "m.pt").exists()


def test_save_overwrites_atomically(vit, tmp_path):
    _, model, *_ = vit
    path = save_checkpoint(model, tmp_path / "m.pt", epoch=1)
    save_checkpoint(model, path, epoch=2)
    assert load_checkpoint(path)[0].lakd_checkpoint_meta["epoch"] == 2
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]


def test_precision_is_applied_to_named_specs_and_checkpoints(tmp_path):
    model, _, tokenizer = load_model("lakd:tiny-vit", precision="bf16")
    assert model.visual.conv1.weight.dtype == torch.bfloat16
    path = save_checkpoint(model, tmp_path / "bf16.pt")
    as_fp32, _, _ = load_checkpoint(path)
    assert as_fp32.visual.conv1.weight.dtype == torch.float32
    assert torch.equal(as_fp32.visual.conv1.weight, model.visual.conv1.weight.float())
    as_bf16, _, _ = load_checkpoint(path, precision="bf16")
    assert as_bf16.visual.conv1.weight.dtype == torch.bfloat16


def test_local_dir_with_broken_config_is_a_one_line_error(tmp_path):
    (tmp_path / "open_clip_config.json").write_text("{broken")
    with pytest.raises(LakdError, match=f"local-dir:{tmp_path}: open_clip could not load it"):
        load_model(f"local-dir:{tmp_path}")


def test_random_init_specs_are_seeded_and_leave_the_global_rng_alone():
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    a, _, _ = load_model("lakd:tiny-vit")
    b, _, _ = load_model("lakd:tiny-vit")
    c, _, _ = load_model("lakd:tiny-vit", seed=1)
    assert torch.equal(torch.rand(3), expected_next)  # the caller's random stream is untouched
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa)


def test_safetensors_weights_replaced_after_saving_are_detected(tmp_path):
    model, _, _ = load_model("lakd:tiny-vit")
    first = save_checkpoint(model, tmp_path / "a.safetensors")
    sidecar = json.loads((tmp_path / "a.safetensors.json").read_text())
    assert len(sidecar["lakd"]["weights_sha256"]) == 64
    other, _, _ = load_model("lakd:tiny-vit", seed=1)
    save_checkpoint(other, tmp_path / "b.safetensors")
    (tmp_path / "b.safetensors").replace(first)  # new weights under the old sidecar
    with pytest.raises(LakdError, match=r"a.safetensors: weights do not match a.safetensors.json"):
        load_model(str(first))


def test_unavailable_hugging_face_tokenizer_is_one_line_error(monkeypatch):
    from lakd.models.build import tokenizer_for

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = {"text_cfg": {"hf_tokenizer_name": "no-such-org/no-such-tokenizer", "context_length": 16}}
    with pytest.raises(LakdError, match=r"^ckpt\.pt: tokenizer 'no-such-org/no-such-tokenizer': ") as err:
        tokenizer_for(cfg, None, source="ckpt.pt")
    assert "\n" not in str(err.value)


def test_checkpoint_of_wrapped_model_is_the_bare_model(tmp_path):
    """DDP / DataParallel (``.module``) and torch.compile (``._orig_mod``) wrappers are unwrapped."""
    from lakd.models.checkpoint import unwrap

    model, _, _ = load_model("lakd:tiny-vit")
    compiled = torch.compile(model)  # wrapping only: nothing is compiled until it runs
    assert unwrap(compiled) is model
    wrapped = torch.nn.DataParallel(compiled)
    assert unwrap(wrapped) is model
    path = save_checkpoint(wrapped, tmp_path / "c.pt")
    loaded, _, _ = load_checkpoint(path)
    assert loaded.state_dict().keys() == model.state_dict().keys()
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values(), strict=True))
