"""Geometry-aware distillation terms: ``conformity``, ``shell``, ``gap`` (docs/losses.md; the
statistics themselves: docs/metrics.md).

Each matches a geometric statistic of the student's embeddings to the teacher's, using the same
torch definition that :mod:`lakd.analysis` reports. Statistics that are comparable across dims
(conformity, offset ratio, coefficients of variation, gap norm) are computed in the student's own
space, so the projection heads cannot satisfy them on the student's behalf; only the gap *vector*
is compared in the teacher's dim.

- conformity [DE]: C(x_j) = mean over k != j of cos(x_j, x_k) on raw vectors, computed exactly in
  O(N d) by :func:`lakd.analysis.conformity.conformity_torch`. Loss: mean over items of
  (C_s - C_t)^2, per modality. ``reference="running"`` replaces the batch by a running mean m of
  normalised vectors (momentum ``momentum``; updated in training mode), i.e. conformity against
  the whole data seen so far: C(x) ~ x_hat . m
  (:func:`~lakd.analysis.conformity.cross_conformity_torch`).
- shell [DE]: offset ratio ||mu|| / sqrt(tr Sigma), CV of ||x - mu|| (thin shell) and CV of ||x||,
  batch estimates on raw features (:func:`lakd.analysis.shell.shell_statistics_torch`) with a
  scale-relative ``eps`` (:data:`SHELL_EPS`); the offset ratio is compared through arctan, which
  maps [0, inf) onto [0, pi/2), so a collapsed batch costs a bounded amount with a bounded
  gradient. Loss: sum of squared differences, per modality.
- gap [MG]: Delta = mean(x_hat_img) - mean(x_hat_txt) (:func:`lakd.analysis.gap.gap_vector_torch`).
  Loss: ||Delta_s - Delta_t||^2 (student projected into the teacher's dim) +
  (||Delta_s|| - ||Delta_t||)^2 (student's own space).
"""

from __future__ import annotations

import torch
from torch import nn

from lakd.analysis.conformity import conformity_torch, cross_conformity_torch
from lakd.analysis.gap import gap_vector_torch
from lakd.analysis.shell import shell_statistics_torch
from lakd.distill.batch import MODALITIES, DistillBatch
from lakd.distill.registry import DistillLoss, FeatureDims, register_loss
from lakd.errors import LakdError


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
    return conformity_torch(x_hat)


def conformity_against_running_mean(
    x_hat: torch.Tensor, running: RunningMean, training: bool
) -> torch.Tensor:
    """x_hat . m with m the running mean of normalised rows (updated in training mode, and on first use).

    The graph holds a copy of m: the buffer itself changes in place at the next update, which
    would invalidate a graph not yet backpropagated (losses summed over micro-batches before one
    ``backward()``).
    """
    if training or not bool(running.initialised):
        running.update(x_hat.mean(dim=0))
    return cross_conformity_torch(x_hat, running.value.to(dtype=x_hat.dtype, copy=True))


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


SHELL_EPS = 1e-3


def shell_features(x: torch.Tensor, eps: float = SHELL_EPS) -> torch.Tensor:
    """[arctan(offset ratio), CV of ||x - mu||, CV of ||x||] of raw features [N, d]: what ``shell``
    compares (:func:`~lakd.analysis.shell.shell_statistics_torch` with ``eps``, the offset ratio
    mapped into [0, pi/2))."""
    statistics = shell_statistics_torch(x, eps)
    return torch.cat([statistics[:1].atan(), statistics[1:]])


@register_loss("shell")
class ShellMatching(DistillLoss):
    """Match offset ratio and norm CVs of raw student features to the teacher's, per modality.

    ``eps``: the scale-relative regulariser of :func:`~lakd.analysis.shell.shell_statistics_torch`
    (default :data:`SHELL_EPS`). Near a collapsed batch (rows nearly identical) the offset-ratio
    term is at most (pi/2)^2 with a gradient of at most about pi sqrt(2 / (N - 1)) / s, s the
    rows' RMS norm, pointing towards spreading the rows; the CV terms' gradients are at most of
    order 1 / (sqrt(eps (N - 1)) s).
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
            student = shell_features(batch.student(m), self.eps)
            teacher = shell_features(batch.teacher(m, self.name), self.eps)
            total = total + (student - teacher).pow(2).sum()
        return total


@register_loss("gap")
class GapMatching(DistillLoss):
    """Match the modality-gap vector (teacher's dim) and its norm (own space) to the teacher's."""

    def forward(self, batch: DistillBatch) -> torch.Tensor:
        teacher = gap_vector_torch(
            batch.teacher_hat("image", self.name), batch.teacher_hat("text", self.name)
        )
        projected = gap_vector_torch(
            batch.projected_hat("image", self.name), batch.projected_hat("text", self.name)
        )
        own = gap_vector_torch(batch.student_hat("image"), batch.student_hat("text"))
        return (projected - teacher).pow(2).sum() + (own.norm() - teacher.norm()).pow(2)
