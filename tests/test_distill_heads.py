"""Projection heads: owned by the student wrapper, in its state_dict and its checkpoints, dropped on
bare-student export."""

from __future__ import annotations

import json

import open_clip
import pytest
import torch

from lakd.distill import ProjectionHeads, Recipe, StudentWithHeads, load_student_with_heads
from lakd.distill.heads import embed_dim_of
from lakd.errors import LakdError
from lakd.models import export_local_dir, load_checkpoint, load_model, save_checkpoint
from lakd.models.safe_load import sidecar_path

TEACHER_DIM = 512


@pytest.fixture(scope="module")
def tiny_vit():
    torch.manual_seed(0)
    return load_model("lakd:tiny-vit")[0]


def test_heads_only_when_dims_differ(tiny_vit):
    assert embed_dim_of(tiny_vit) == 256
    assert StudentWithHeads.for_teacher(tiny_vit, 256).heads is None
    wrapper = StudentWithHeads.for_teacher(tiny_vit, TEACHER_DIM)
    assert {name: (m.in_features, m.out_features) for name, m in wrapper.heads.maps.items()} == {
        "image": (256, TEACHER_DIM),
        "text": (256, TEACHER_DIM),
    }
    with pytest.raises(LakdError, match="dims must be positive"):
        ProjectionHeads(0, 4)


def test_wrapper_state_dict_holds_heads_and_round_trips(tiny_vit):
    wrapper = StudentWithHeads.for_teacher(tiny_vit, TEACHER_DIM)
    state = wrapper.state_dict()
    assert {"heads.maps.image.weight", "heads.maps.text.bias"} <= set(state)
    assert any(key.startswith("student.visual.") for key in state)
    assert not any(key.startswith("heads.") for key in wrapper.student.state_dict())

    torch.manual_seed(1)
    fresh = StudentWithHeads.for_teacher(load_model("lakd:tiny-vit")[0], TEACHER_DIM)
    assert not torch.equal(fresh.heads.maps["image"].weight, wrapper.heads.maps["image"].weight)
    fresh.load_state_dict(state)
    torch.testing.assert_close(fresh.heads.maps["image"].weight, wrapper.heads.maps["image"].weight)


def test_export_of_the_bare_student_drops_the_heads(tiny_vit, tmp_path):
    wrapper = StudentWithHeads.for_teacher(tiny_vit, TEACHER_DIM)
    path = save_checkpoint(wrapper.student, tmp_path / "student.pt")
    loaded = load_checkpoint(path)[0]
    assert set(loaded.state_dict()) == set(tiny_vit.state_dict())
    torch.testing.assert_close(loaded.visual.conv1.weight, tiny_vit.visual.conv1.weight)


def test_wrapper_forward_gives_raw_features_and_a_batch_the_recipe_trains(tiny_vit):
    wrapper = StudentWithHeads.for_teacher(tiny_vit, TEACHER_DIM)
    images, texts = torch.randn(6, 3, 64, 64), torch.randint(1, 1000, (6, 32))
    outputs = wrapper(images, texts)
    assert outputs["image_features"].shape == (6, 256)
    assert not torch.allclose(outputs["image_features"].norm(dim=1), torch.ones(6)), "raw, not normalised"
    batch = wrapper.distill_batch(
        outputs, images, teacher_image=torch.randn(6, TEACHER_DIM), teacher_text=torch.randn(6, TEACHER_DIM)
    )
    assert batch.projected("image").shape == (6, TEACHER_DIM)
    Recipe.named("fd")(batch).total.backward()
    assert wrapper.heads.maps["text"].weight.grad.abs().sum() > 0
    assert tiny_vit.logit_scale.grad is not None


def trained_wrapper(model: torch.nn.Module) -> StudentWithHeads:
    """A wrapper whose heads differ from a fresh initialisation (so a reload is distinguishable)."""
    torch.manual_seed(3)
    wrapper = StudentWithHeads.for_teacher(model, TEACHER_DIM, bias=False)
    with torch.no_grad():
        for head in wrapper.heads.maps.values():
            head.weight.mul_(3.0).add_(0.5)
    return wrapper


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[key], sb[key]) for key in sa)


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_checkpoint_of_the_wrapper_keeps_its_heads_and_a_bare_open_clip_state_dict(
    tiny_vit, tmp_path, suffix
):
    wrapper = trained_wrapper(tiny_vit)
    path = save_checkpoint(wrapper, tmp_path / f"ckpt{suffix}", epoch=4)

    restored, preprocess, tokenizer = load_student_with_heads(path)
    assert same_weights(restored.heads, wrapper.heads) and restored.heads.config() == wrapper.heads.config()
    assert same_weights(restored.student, tiny_vit) and preprocess is not None and tokenizer is not None
    images, texts = torch.randn(2, 3, 64, 64), tokenizer(["a red square", "a blue circle"])
    with torch.no_grad():
        batch = restored.distill_batch(
            restored(images, texts),
            teacher_image=torch.randn(2, TEACHER_DIM),
            teacher_text=torch.randn(2, TEACHER_DIM),
        )
        torch.testing.assert_close(batch.projected("image"), wrapper.heads("image", batch.student_image))

    bare = load_checkpoint(path)[0]  # the bare student: heads ignored
    assert same_weights(bare, tiny_vit) and bare.lakd_checkpoint_meta["epoch"] == 4
    assert "heads_state_dict" not in bare.lakd_checkpoint_meta
    assert bare.lakd_checkpoint_meta["lakd"]["heads"]["teacher_dim"] == TEACHER_DIM
    # open_clip loads the checkpoint strictly as the bare model
    oc_model = open_clip.create_model_and_transforms("lakd-tiny-vit", pretrained=str(path))[0]
    assert same_weights(oc_model, tiny_vit)


def test_pt_layout_and_safetensors_files_of_a_wrapper_checkpoint(tiny_vit, tmp_path):
    wrapper = trained_wrapper(tiny_vit)
    raw = torch.load(save_checkpoint(wrapper, tmp_path / "ckpt.pt"), weights_only=True)
    assert set(raw["state_dict"]) == set(tiny_vit.state_dict())
    assert set(raw["heads_state_dict"]) == {"maps.image.weight", "maps.text.weight"}
    assert raw["lakd"]["heads"] == {"student_dim": 256, "teacher_dim": TEACHER_DIM, "bias": False}
    assert raw["lakd"]["parts"] == ["heads"]

    path = save_checkpoint(wrapper, tmp_path / "st" / "ckpt.safetensors")
    assert {p.name for p in path.parent.iterdir()} == {
        "ckpt.safetensors",
        "ckpt.safetensors.json",
        "ckpt.heads.safetensors",
    }
    assert json.loads(sidecar_path(path).read_text())["lakd"]["heads"]["file"] == "ckpt.heads.safetensors"


def test_wrapper_without_heads_saves_the_bare_student(tiny_vit, tmp_path):
    wrapper = StudentWithHeads.for_teacher(tiny_vit, 256)
    path = save_checkpoint(wrapper, tmp_path / "same_dims.safetensors")
    assert {p.name for p in tmp_path.iterdir()} == {path.name, sidecar_path(path).name}
    restored = load_student_with_heads(path)[0]
    assert restored.heads is None and same_weights(restored.student, tiny_vit)


def test_export_of_the_wrapper_writes_the_bare_student(tiny_vit, tmp_path):
    out = export_local_dir(trained_wrapper(tiny_vit), tmp_path / "export")
    oc_model = open_clip.create_model_and_transforms(f"local-dir:{out}")[0]
    assert same_weights(oc_model, tiny_vit)


def test_broken_heads_in_a_checkpoint_are_one_line_errors(tiny_vit, tmp_path):
    wrapper = trained_wrapper(tiny_vit)
    path = save_checkpoint(wrapper, tmp_path / "ckpt.safetensors")
    sidecar = json.loads(sidecar_path(path).read_text())
    sidecar["lakd"]["heads"]["teacher_dim"] = 7
    sidecar_path(path).write_text(json.dumps(sidecar))
    with pytest.raises(LakdError, match="projection-head tensors .* do not match lakd.heads"):
        load_student_with_heads(path)
    sidecar["lakd"]["heads"]["file"] = "../elsewhere.safetensors"
    sidecar_path(path).write_text(json.dumps(sidecar))
    with pytest.raises(LakdError, match="names no file beside ckpt.safetensors"):
        load_student_with_heads(path)

    path = save_checkpoint(wrapper, tmp_path / "other.safetensors")
    (tmp_path / "other.heads.safetensors").unlink()
    with pytest.raises(LakdError, match="other.heads.safetensors: no such checkpoint file"):
        load_student_with_heads(path)
    assert same_weights(load_checkpoint(path)[0], tiny_vit), "the bare student loads without the heads file"
    with pytest.raises(LakdError, match="'heads' is reserved"):
        save_checkpoint(wrapper, tmp_path / "x.pt", extra={"heads": 1})
