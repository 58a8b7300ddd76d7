"""What a training loop relies on: gradient accumulation over micro-batches, learned logit scales
kept in CLIP's range by clamping the parameter, and which recipes want features gathered across ranks."""

from __future__ import annotations

import math

import pytest
import torch

from lakd.distill import NAMED_RECIPES, DistillBatch, FeatureDims, Recipe, available_losses, build_loss
from lakd.distill.registry import LOSSES
from lakd.distill.scale import MAX_LOG_LOGIT_SCALE

STUDENT_DIM, TEACHER_DIM, N = 6, 10, 12


def batch(seed: int, student_dim: int = STUDENT_DIM) -> DistillBatch:
    generator = torch.Generator().manual_seed(seed)
    return DistillBatch(
        student_image=torch.randn(N, student_dim, generator=generator).requires_grad_(),
        student_text=torch.randn(N, student_dim, generator=generator).requires_grad_(),
        student_logit_scale=torch.tensor(20.0),
        teacher_image=2.0 + torch.randn(N, TEACHER_DIM, generator=generator),
        teacher_text=-1.0 + torch.randn(N, TEACHER_DIM, generator=generator),
    )


def test_running_conformity_accumulates_micro_batches_before_one_backward():
    """Two micro-batch losses summed, one backward: the running means change in place between
    the two evaluations, and each evaluation's gradient is the one it had on its own."""
    dims = FeatureDims(STUDENT_DIM, TEACHER_DIM)
    accumulated = build_loss("conformity", {"reference": "running", "momentum": 0.5}, dims).train()
    one_by_one = build_loss("conformity", {"reference": "running", "momentum": 0.5}, dims).train()
    first, second = batch(0), batch(1)
    (accumulated(first) + accumulated(second)).backward()

    again = [batch(0), batch(1)]
    for micro in again:
        one_by_one(micro).backward()
    for summed, alone in zip((first, second), again, strict=True):
        assert summed.student_image.grad.abs().sum() > 0
        torch.testing.assert_close(summed.student_image.grad, alone.student_image.grad)
        torch.testing.assert_close(summed.student_text.grad, alone.student_text.grad)
    torch.testing.assert_close(accumulated.state_dict(), one_by_one.state_dict())


@pytest.mark.parametrize("name", ["icl", "afd"])
def test_a_logit_scale_above_the_cap_keeps_its_gradient_and_the_clamp_brings_it_back(name):
    loss = build_loss(name, {}, FeatureDims(TEACHER_DIM, TEACHER_DIM))
    features = batch(0, student_dim=TEACHER_DIM)  # equal dims: no heads needed
    with torch.no_grad():  # as an optimizer step past the cap would leave it
        loss.logit_scale.log_scale.fill_(MAX_LOG_LOGIT_SCALE + 0.01)
    value = loss(features)
    value.backward()
    gradient = loss.logit_scale.log_scale.grad
    assert gradient is not None and gradient.abs().item() > 1e-6
    # the forward uses exp(p) as it is, unclamped
    assert loss.logit_scale().item() == pytest.approx(100.0 * math.exp(0.01))

    loss.clamp_logit_scales_()
    assert loss.logit_scale().item() == pytest.approx(100.0)
    with torch.no_grad():
        loss.logit_scale.log_scale.fill_(-0.5)
    loss.clamp_logit_scales_()
    assert loss.logit_scale().item() == pytest.approx(1.0)  # CLIP's range is [1, 100]


def test_recipe_clamps_the_logit_scales_of_all_its_terms():
    recipe = Recipe.from_config(
        {"clip": 1, "icl": 1, "afd": 1, "fd": 1}, student_dim=STUDENT_DIM, teacher_dim=TEACHER_DIM
    )
    with torch.no_grad():
        for loss in (recipe.losses["icl"], recipe.losses["afd"]):
            loss.logit_scale.log_scale.fill_(7.0)
    recipe.clamp_logit_scales_()
    assert recipe.losses["icl"].logit_scale().item() == pytest.approx(100.0)
    assert recipe.losses["afd"].logit_scale().item() == pytest.approx(100.0)
    # an initial scale outside the range starts clamped
    assert build_loss("icl", {"init_logit_scale": 10.0}).logit_scale().item() == pytest.approx(100.0)


BATCH_DEPENDENT = {"clip", "crd", "gd", "icl", "afd", "conformity", "shell", "gap", "relational"}
PER_ITEM = {"fd", "fd_clipkd", "mfd", "whitened_fd", "rise_relative", "dense"}


def test_every_loss_says_whether_it_compares_items_across_the_batch():
    assert BATCH_DEPENDENT | PER_ITEM == set(available_losses())
    assert {name for name, cls in LOSSES.items() if cls.batch_dependent} == BATCH_DEPENDENT


def test_per_item_losses_are_the_same_on_a_batch_and_on_its_halves_and_batch_losses_are_not():
    """The meaning of batch_dependent: a per-item term of the whole batch is the mean of the terms
    of its halves (so gathering cannot change it); a batch-dependent term's is not."""
    dims = FeatureDims(TEACHER_DIM, TEACHER_DIM)
    whole = batch(3, student_dim=TEACHER_DIM)
    halves = [
        DistillBatch(
            whole.student_image[rows],
            whole.student_text[rows],
            whole.student_logit_scale,
            whole.teacher_image[rows],
            whole.teacher_text[rows],
        )
        for rows in (slice(0, N // 2), slice(N // 2, N))
    ]
    for name in ("fd", "fd_clipkd", "clip", "gap", "shell", "conformity"):
        loss = build_loss(name, {}, dims)
        split = sum(loss(half) for half in halves).item() / 2
        if name in PER_ITEM:
            assert loss(whole).item() == pytest.approx(split, rel=1e-5), name
        else:
            assert loss(whole).item() != pytest.approx(split, rel=1e-3), name


def test_recipes_want_gathering_when_a_term_compares_items_across_the_batch():
    for name in NAMED_RECIPES:  # every shipped recipe holds the contrastive task loss
        recipe = Recipe.named(name, student_dim=STUDENT_DIM, teacher_dim=TEACHER_DIM)
        assert recipe.wants_gather and recipe.gather, name
    assert not Recipe.from_config({"fd": 1, "whitened_fd": 1}).wants_gather
    assert not Recipe.from_config({"fd": 1}).gather
    assert Recipe.from_config({"fd": 1, "gap": 0.5}).wants_gather
    # an explicit choice wins over the default
    assert not Recipe.named("clip_kd", student_dim=STUDENT_DIM, teacher_dim=TEACHER_DIM, gather=False).gather
    assert Recipe.from_config({"fd": 1}, gather=True).gather
