"""MFD really masks the student's input: token patch dropout for ViT towers, pixel cells otherwise."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from open_clip.transformer import PatchDropout

from lakd.distill import DistillBatch, FeatureDims, Recipe, StudentWithHeads, build_loss
from lakd.distill.masking import encode_masked_images, mask_pixel_cells, mask_seed, seeded_masks
from lakd.errors import LakdError
from lakd.models import load_model

TEACHER_DIM = 32


@pytest.fixture(scope="module")
def tiny_vit():
    torch.manual_seed(0)
    return load_model("lakd:tiny-vit")[0]


@pytest.fixture(scope="module")
def tiny_resnet():
    torch.manual_seed(0)
    return load_model("lakd:tiny-resnet")[0]


def capture_inputs(module: torch.nn.Module) -> tuple[list[torch.Tensor], torch.utils.hooks.RemovableHandle]:
    seen: list[torch.Tensor] = []
    handle = module.register_forward_pre_hook(lambda _module, args: seen.append(args[0].detach().clone()))
    return seen, handle


def mfd_batch(model: torch.nn.Module, images: torch.Tensor) -> DistillBatch:
    wrapper = StudentWithHeads.for_teacher(model, TEACHER_DIM)
    texts = torch.randint(1, 1000, (len(images), 32))
    outputs = wrapper(images, texts)
    return wrapper.distill_batch(
        outputs,
        images,
        teacher_image=torch.randn(len(images), TEACHER_DIM),
        teacher_text=torch.randn(len(images), TEACHER_DIM),
    )


def test_vit_student_sees_fewer_patch_tokens_when_masked(tiny_vit):
    images = torch.randn(4, 3, 64, 64)
    seen, handle = capture_inputs(tiny_vit.visual.transformer)
    try:
        full = tiny_vit.encode_image(images)
        masked = encode_masked_images(tiny_vit, images, 0.75)
    finally:
        handle.remove()
    patches = tiny_vit.visual.grid_size[0] * tiny_vit.visual.grid_size[1]  # 8 x 8 for 64 px / patch 8
    assert seen[0].shape[1] == 1 + patches
    assert seen[1].shape[1] == 1 + int(patches * 0.25)  # class token + kept patches
    assert not torch.allclose(full, masked)
    assert not isinstance(tiny_vit.visual.patch_dropout, PatchDropout), "original (no) patch dropout restored"


def fd_term(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """mean_i ||s_hat_i - t_hat_i||^2, written out."""
    return (F.normalize(student, dim=-1) - F.normalize(teacher, dim=-1)).pow(2).sum(dim=1).mean()


def test_mfd_loss_trains_the_vit_student_through_the_masked_view(tiny_vit):
    images = torch.randn(4, 3, 64, 64)
    batch = mfd_batch(tiny_vit, images)
    tiny_vit.zero_grad()
    loss = build_loss("mfd", {"mask_ratio": 0.5, "seed": 3}, FeatureDims())(batch)
    # by hand: the student's features of the same masked view (first call: seed mask_seed(3, 0, 0)),
    # through the image head, against the teacher's; plus fd on text
    masked = encode_masked_images(tiny_vit, images, 0.5, seed=mask_seed(3, 0, 0))
    heads = batch.heads.maps
    expected = fd_term(heads["image"](masked), batch.teacher_image) + fd_term(
        heads["text"](batch.student_text), batch.teacher_text
    )
    torch.testing.assert_close(loss, expected)
    conv = tiny_vit.visual.conv1.weight
    (expected_grad,) = torch.autograd.grad(expected, conv, retain_graph=True)
    loss.backward()
    assert conv.grad.abs().sum() > 0
    torch.testing.assert_close(conv.grad, expected_grad)
    assert batch.heads.maps["image"].weight.grad is not None


def test_resnet_student_gets_pixel_masked_images(tiny_resnet):
    images = torch.randn(3, 3, 64, 64)
    seen, handle = capture_inputs(tiny_resnet.visual)
    try:
        encode_masked_images(tiny_resnet, images, 0.75)
    finally:
        handle.remove()
    (masked_input,) = seen
    assert not torch.equal(masked_input, images)
    zeroed = masked_input == 0
    assert zeroed.float().mean().item() == pytest.approx(0.75)  # int(0.75 * 64) of 64 cells of 8 x 8 px
    torch.testing.assert_close(masked_input[~zeroed], images[~zeroed])


def test_resnet_student_can_refuse_instead_of_falling_back(tiny_resnet):
    images = torch.randn(2, 3, 64, 64)
    batch = mfd_batch(tiny_resnet, images)
    with pytest.raises(LakdError, match="TimmModel cannot drop patch tokens"):
        build_loss("mfd", {"fallback": "error"}, FeatureDims())(batch)
    value = build_loss("mfd", {"fallback": "pixel", "seed": 5}, FeatureDims())(batch)
    with seeded_masks(mask_seed(5, 0, 0)):  # the loss's first call masks from this seed
        masked_images = mask_pixel_cells(images, 0.75)
    heads = batch.heads.maps
    expected = fd_term(heads["image"](tiny_resnet.encode_image(masked_images)), batch.teacher_image)
    expected = expected + fd_term(heads["text"](batch.student_text), batch.teacher_text)
    torch.testing.assert_close(value, expected)


def test_mask_pixel_cells_covers_edges_and_masks_the_requested_share():
    images = torch.ones(2, 3, 10, 7)
    masked = mask_pixel_cells(images, 0.5, cell=3)  # 4 x 3 grid, 6 of 12 cells masked, edge cells smaller
    assert masked.shape == images.shape
    assert torch.equal(images, torch.ones_like(images)), "input left untouched"
    for image in masked:
        assert int((image[0, ::3, ::3] == 0).sum()) == 6  # one top-left pixel per cell
        for top in range(0, 10, 3):
            for left in range(0, 7, 3):
                cell = image[:, top : top + 3, left : left + 3]
                assert cell.min() == cell.max(), "cells are masked whole"


@pytest.mark.parametrize("tower", ["tiny_vit", "tiny_resnet"])
def test_a_seed_fixes_the_masks_and_leaves_the_global_generator_alone(tower, request):
    model = request.getfixturevalue(tower)
    images = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        state = torch.get_rng_state()
        first = encode_masked_images(model, images, 0.5, seed=11)
        assert torch.equal(torch.get_rng_state(), state), "global generator state restored"
        again = encode_masked_images(model, images, 0.5, seed=11)
        other = encode_masked_images(model, images, 0.5, seed=12)
    torch.testing.assert_close(first, again, rtol=0, atol=0)
    assert not torch.allclose(first, other)


def test_mask_seeds_differ_by_rank_and_step():
    seeds = {mask_seed(7, rank, step) for rank in range(2) for step in range(3)}
    assert len(seeds) == 6 and mask_seed(7, 1, 2) == mask_seed(7, 1, 2)
    assert mask_seed(7, 0, 0) != mask_seed(8, 0, 0)


def test_seeded_mfd_is_reproducible_advances_per_call_and_resumes_from_its_state(tiny_resnet):
    images = torch.randn(4, 3, 64, 64)
    batch = mfd_batch(tiny_resnet, images)
    first, second = build_loss("mfd", {"seed": 3}), build_loss("mfd", {"seed": 3})
    with torch.no_grad():
        values = [first(batch).item() for _ in range(3)]
        assert second(batch).item() == values[0], "same seed, same first call"
        assert len(set(values)) == 3, "each call draws new masks"
        assert int(first.state_dict()["step"]) == 3
        resumed = build_loss("mfd", {"seed": 3})
        resumed.load_state_dict(first.state_dict())
        assert resumed(batch).item() == first(batch).item()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"mask_ratio": 0.0}, "mask_ratio"),
        ({"fallback": "blur"}, "fallback"),
        ({"cell": 0}, "cell"),
        ({"seed": -1}, "seed"),
        ({"seed": 1.5}, "seed"),
        ({"seed": True}, "seed"),
    ],
)
def test_bad_mfd_options(options, message):
    with pytest.raises(LakdError, match=message):
        build_loss("mfd", options, FeatureDims())


def test_mfd_needs_the_student_model_and_images():
    batch = DistillBatch(
        torch.randn(2, 4), torch.randn(2, 4), torch.tensor(1.0), torch.randn(2, 4), torch.randn(2, 4)
    )
    with pytest.raises(LakdError, match="student_model"):
        build_loss("mfd", {}, FeatureDims())(batch)


@pytest.mark.parametrize("tower", ["tiny_vit", "tiny_resnet"])
def test_single_pass_masked_forward_feeds_every_term(tower, request):
    """[KD]'s masked distillation in one pass: the wrapper's forward with mask_ratio gives the
    masked image features (the same as encode_masked_images with that seed), texts as usual, and
    the recipe's terms all see them."""
    model = request.getfixturevalue(tower)
    wrapper = StudentWithHeads.for_teacher(model, TEACHER_DIM)
    images, texts = torch.randn(4, 3, 64, 64), torch.randint(1, 1000, (4, 32))
    with torch.no_grad():
        full = wrapper(images, texts)
        masked = wrapper(images, texts, mask_ratio=0.5, mask_seed=5)
        expected = encode_masked_images(model, images, 0.5, seed=5)
    torch.testing.assert_close(masked["image_features"], expected, rtol=0, atol=0)
    assert not torch.allclose(masked["image_features"], full["image_features"])
    torch.testing.assert_close(masked["text_features"], full["text_features"])

    model.zero_grad()
    outputs = wrapper(images, texts, mask_ratio=0.5, mask_seed=5)
    batch = wrapper.distill_batch(
        outputs,
        teacher_image=torch.randn(4, TEACHER_DIM),
        teacher_text=torch.randn(4, TEACHER_DIM),
        teacher_logit_scale=100.0,
    )
    recipe = Recipe.named("clip_kd", student_dim=256, teacher_dim=TEACHER_DIM)
    output = recipe(batch)
    output.total.backward()
    first_layer = model.visual.conv1.weight if tower == "tiny_vit" else next(model.visual.parameters())
    assert first_layer.grad is not None and first_layer.grad.abs().sum() > 0
    with pytest.raises(LakdError, match="student forward: mask_ratio must be in"):
        wrapper(images, texts, mask_ratio=1.0)
