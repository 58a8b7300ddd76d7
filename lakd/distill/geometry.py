"""Geometry-aware distillation terms: ``conformity``, ``shell``, ``gap`` (definitions: METRICS.md).

Each matches a geometric statistic of the student's embeddings to the teacher's. Statistics
that are comparable across dims (conformity, offset ratio, coefficients of variation, gap norm)
are computed in the student's own space, so the projection heads cannot satisfy them on the
student's behalf; only the gap *vector* is compared in the teacher's dim.

- conformity [DE]: C(x_j) = mean over k != j of cos(x_j, x_k) on raw vectors, computed exactly in
  O(N d) by :func:`lakd.analysis.conformity.conformity_given_sum`. Loss: mean over items of
  (C_s - C_t)^2, per modality. ``reference="running"`` replaces the batch by a running mean of
  normalised vectors (momentum ``momentum``; updated in training mode), i.e. conformity against
  the whole data seen so far: C(x) ~ x_hat . m.
- shell [DE]: offset ratio ||mu|| / sqrt(tr Sigma), CV of ||x - mu|| (thin shell) and CV of ||x||,
  batch estimates on raw features (unbiased variances, as in :mod:`lakd.analysis`), with a small
  scale-relative epsilon (:data:`SHELL_EPS`) so a collapsed batch stays finite. Loss: sum of
  squared differences, per modality.
- gap [MG]: Delta = mean(x_hat_img) - mean(x_hat_txt). Loss: ||Delta_s - Delta_t||^2 (student
  projected into the teacher's dim) + (||Delta_s|| - ||Delta_t||)^2 (student's own space).
"""

from __future__ import annotations

import torch
from torch import nn

from lakd.analysis.conformity import conformity_given_sum
from lakd.distill.batch import MODALITIES, DistillBatch
from lakd.distill.registry import DistillLoss, FeatureDims, register_loss
from lakd.errors import LakdError


def batch_conformity(x_hat: torch.Tensor) -> torch.Tensor:
    """Exact within-batch conformity [N] of unit rows [N, d] (N >= 2)."""
    return conformity_given_sum(x_hat, x_hat.sum(dim=0), len(x_hat))


class RunningMean(nn.Module):
    """Exponential moving average of a [d] vector, initialised by the first update (a buffer)."""

    def __init__(self, dim: int, momentum: float):
        super().__init__()
        self.momentum = momentum
        self.register_buffer("value", torch.zeros(dim))
        self.register_buffer("initialised", torch.tensor(False))

    @torch.no_grad()
    def update(self, batch_mean: torch.Tensor) -> None:
        batch_mean = batch_mean.detach().to(self.value.dtype)
        if not bool(self.initialised):
            self.value.copy_(batch_mean)
            self.initialised.fill_(True)
        else:
            self.value.mul_(self.momentum).add_(batch_mean, alpha=1 - self.momentum)


def conformity_against_batch(
    x_hat: torch.Tensor, running: RunningMean | None, training: bool
) -> torch.Tensor:
    return batch_conformity(x_hat)


def conformity_against_running_mean(
    x_hat: torch.Tensor, running: RunningMean, training: bool
) -> torch.Tensor:
    """x_hat . m with m the running mean of normalised rows (updated in training mode, and on first use)."""
    if training or not bool(running.initialised):
        running.update(x_hat.mean(dim=0))
    return x_hat @ running.value.to(x_hat.dtype)


CONFORMITY_REFERENCES = {"batch": conformity_against_batch, "running": conformity_against_running_mean}


@register_loss("conformity")
class ConformityMatching(DistillLoss):
    """Match per-item conformity of the student to the teacher's, per modality.

    ``reference``: "batch" (exact within the batch) or "running" (against running means of the
    normalised vectors; needs the dims). ``momentum``: of the running means.
    """

    def __init__(self, dims: FeatureDims, *, reference: str = "batch", momentum: float = 0.99):
        super().__init__(dims)
        if reference not in CONFORMITY_REFERENCES:
            raise LakdError(
                f"loss 'conformity': reference must be one of {', '.join(CONFORMITY_REFERENCES)}, "
                f"got {reference!r}"
            )
        if not 0.0 <= momentum < 1.0:
            raise LakdError(f"loss 'conformity': momentum must be in [0, 1), got {momentum}")
        self.reference = reference
        self.running = nn.ModuleDict()
        if reference == "running":
            student_dim, teacher_dim = dims.require("conformity")
            for modality in MODALITIES:
                self.running[f"student_{modality}"] = RunningMean(student_dim, momentum)
                self.running[f"teacher_{modality}"] = RunningMean(teacher_dim, momentum)

    def forward(self, batch: DistillBatch) -> torch.Tensor:
        if batch.size < 2:
            raise LakdError(f"loss {self.name!r}: needs at least 2 items per batch, got {batch.size}")
        conformity_of = CONFORMITY_REFERENCES[self.reference]
        total = batch.student_image.new_zeros(())
        for m in MODALITIES:
            student = conformity_of(batch.student_hat(m), self.running_mean(f"student_{m}"), self.training)
            teacher = conformity_of(
                batch.teacher_hat(m, self.name), self.running_mean(f"teacher_{m}"), self.training
            )
            total = total + (student - teacher).pow(2).mean()
        return total

    def running_mean(self, key: str) -> RunningMean | None:
        return self.running[key] if key in self.running else None


SHELL_EPS = 1e-6


def coefficient_of_variation(values: torch.Tensor, eps: float) -> torch.Tensor:
    """sqrt(var + eps * mean^2) / mean of positive values [N] (unbiased variance)."""
    mean = values.mean()
    return (values.var() + eps * mean.pow(2) + torch.finfo(values.dtype).tiny).sqrt() / mean


def shell_statistics(x: torch.Tensor, eps: float = SHELL_EPS) -> torch.Tensor:
    """[offset ratio, CV of ||x - mu||, CV of ||x||] of raw features [N, d] (N >= 2), differentiable.

    ``eps`` regularises, relative to the batch's own scale s^2 = mean ||x||^2 so every statistic
    stays scale-free: norms are sqrt(||v||^2 + eps s^2), the offset ratio is
    ||mu|| / sqrt(tr Sigma + eps s^2) and a CV is sqrt(var + eps mean^2) / mean. On a collapsed
    batch (identical rows, even all zero) the statistics are then finite (offset ratio at most
    1 / sqrt(eps), CVs about sqrt(eps)) with finite gradients instead of 0 / 0; on real features
    the change is O(eps) (about 1e-6 relative for the offset ratio, somewhat more for a CV near 0).
    ``eps=0`` gives the plain estimates of :mod:`lakd.analysis` (NaN on a collapsed batch).
    """
    floor = eps * x.pow(2).sum(dim=1).mean() + torch.finfo(x.dtype).tiny

    def norms(v: torch.Tensor) -> torch.Tensor:
        return (v.pow(2).sum(dim=-1) + floor).sqrt()

    mu = x.mean(dim=0)
    centred = x - mu
    total_variance = centred.pow(2).sum() / (len(x) - 1)
    offset_ratio = norms(mu) / (total_variance + floor).sqrt()
    return torch.stack(
        [
            offset_ratio,
            coefficient_of_variation(norms(centred), eps),
            coefficient_of_variation(norms(x), eps),
        ]
    )


@register_loss("shell")
class ShellMatching(DistillLoss):
    """Match offset ratio and norm CVs of raw student features to the teacher's, per modality.

    ``eps``: the scale-relative regulariser of :func:`shell_statistics` that keeps a collapsed
    batch (identical rows) finite.
    """

    def __init__(self, dims: FeatureDims, *, eps: float = SHELL_EPS):
        super().__init__(dims)
        if not 0.0 < eps < 1.0:
            raise LakdError(f"loss 'shell': eps must be in (0, 1), got {eps}")
        self.eps = eps

    def forward(self, batch: DistillBatch) -> torch.Tensor:
        if batch.size < 2:
            raise LakdError(f"loss {self.name!r}: needs at least 2 items per batch, got {batch.size}")
        total = batch.student_image.new_zeros(())
        for m in MODALITIES:
            student = shell_statistics(batch.student(m), self.eps)
            teacher = shell_statistics(batch.teacher(m, self.name), self.eps)
            total = total + (student - teacher).pow(2).sum()
        return total


def gap_vector(image_hat: torch.Tensor, text_hat: torch.Tensor) -> torch.Tensor:
    """Delta = mean(image_hat) - mean(text_hat) [d] for unit rows [N, d] [MG]."""
    return image_hat.mean(dim=0) - text_hat.mean(dim=0)


@register_loss("gap")
class GapMatching(DistillLoss):
    """Match the modality-gap vector (teacher's dim) and its norm (own space) to the teacher's."""

    def forward(self, batch: DistillBatch) -> torch.Tensor:
        teacher = gap_vector(batch.teacher_hat("image", self.name), batch.teacher_hat("text", self.name))
        projected = gap_vector(
            batch.projected_hat("image", self.name), batch.projected_hat("text", self.name)
        )
        own = gap_vector(batch.student_hat("image"), batch.student_hat("text"))
        return (projected - teacher).pow(2).sum() + (own.norm() - teacher.norm()).pow(2)
