"""What a training loop relies on: gradient accumulation over micro-batches."""

from __future__ import annotations

import torch

from lakd.distill import DistillBatch, FeatureDims, build_loss

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
