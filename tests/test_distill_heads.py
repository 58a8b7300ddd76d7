"""Projection heads: owned by the student wrapper, in its state_dict, dropped on bare-student export."""

from __future__ import annotations

import pytest
import torch

from lakd.distill import ProjectionHeads, Recipe, StudentWithHeads
from lakd.distill.heads import embed_dim_of
from lakd.errors import LakdError
from lakd.models import load_checkpoint, load_model, save_checkpoint

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
