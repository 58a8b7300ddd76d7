"""Relational terms: ``relational`` (batch similarity structure) and ``rise_relative`` [RISE].

- relational, ``method="kl"``: per modality, the row-softmax of the within-batch cosine
  similarities divided by ``temperature`` (self-similarity excluded), KL(teacher || student),
  mean over rows. ``method="cka"``: 1 - linear CKA of the raw (centred) student and teacher
  features (Kornblith et al., ICML 2019), :func:`lakd.analysis.alignment.linear_cka_torch` (the
  definition behind the ``linear_cka`` metric).
  Both compare N x N structures, so student and teacher dims may differ (no heads involved).
- rise_relative [RISE] (Huang et al., ICCV 2023): relative distances to text anchors. For each
  item, p = softmax(cos(x, a_k) / temperature) over K text anchors a_k in the teacher's space
  (e.g. class prompts written in K styles); loss = mean over items and anchors of
  (p_student - p_teacher)^2, i.e. RISE's ``F.mse_loss(p_student, p_teacher)``, so RISE's extra
  factor 10 is a recipe weight of 10. ``batch.text_anchors`` is [K, d_t] (shared) or [C, K, d_t]
  (per class, picked by ``batch.labels``, as RISE does). The student's image is projected into
  the teacher's dim. RISE's reference point is the class's prompt-ensemble text embedding; here
  it is the teacher's image feature of the same item (available with cached teacher features and
  per-item rather than per-class).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lakd.analysis.alignment import linear_cka_torch
from lakd.distill.batch import MODALITIES, DistillBatch
from lakd.distill.logits import softmax_kl
from lakd.distill.registry import DistillLoss, FeatureDims, register_loss
from lakd.errors import LakdError


def similarity_logits(x_hat: torch.Tensor, temperature: float) -> torch.Tensor:
    """Cosine similarities / temperature [N, N] of unit rows, with the diagonal set to -inf."""
    logits = x_hat @ x_hat.T / temperature
    eye = torch.eye(len(x_hat), dtype=torch.bool, device=x_hat.device)
    return logits.masked_fill(eye, float("-inf"))


def similarity_kl(student_hat: torch.Tensor, teacher_hat: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teacher || student) of row-softmax similarity distributions, self excluded."""
    student = similarity_logits(student_hat, temperature)
    teacher = similarity_logits(teacher_hat, temperature)
    off_diagonal = ~torch.eye(len(student), dtype=torch.bool, device=student.device)
    # drop the diagonal (-inf in both) before the KL so no 0 * inf terms appear
    rows = len(student)
    return softmax_kl(student[off_diagonal].view(rows, rows - 1), teacher[off_diagonal].view(rows, rows - 1))


def relational_kl(batch: DistillBatch, modality: str, temperature: float) -> torch.Tensor:
    return similarity_kl(batch.student_hat(modality), batch.teacher_hat(modality, "relational"), temperature)


def relational_cka(batch: DistillBatch, modality: str, temperature: float) -> torch.Tensor:
    return 1 - linear_cka_torch(batch.student(modality), batch.teacher(modality, "relational"))


RELATIONAL_METHODS = {"kl": relational_kl, "cka": relational_cka}


@register_loss("relational")
class RelationalMatching(DistillLoss):
    """Match the batch similarity structure per modality. ``method``: "kl" (row-softmax of
    cosine similarities at ``temperature``) or "cka" (1 - linear CKA)."""

    def __init__(self, dims: FeatureDims, *, method: str = "kl", temperature: float = 0.1):
        super().__init__(dims)
        if method not in RELATIONAL_METHODS:
            raise LakdError(
                f"loss 'relational': method must be one of {', '.join(RELATIONAL_METHODS)}, got {method!r}"
            )
        if not temperature > 0:
            raise LakdError(f"loss 'relational': temperature must be > 0, got {temperature}")
        self.method, self.temperature = method, temperature

    def forward(self, batch: DistillBatch) -> torch.Tensor:
        if batch.size < 3:
            raise LakdError(f"loss {self.name!r}: needs at least 3 items per batch, got {batch.size}")
        term = RELATIONAL_METHODS[self.method]
        return sum(term(batch, m, self.temperature) for m in MODALITIES)


def anchors_per_item(batch: DistillBatch, loss: str) -> torch.Tensor:
    """Unit text anchors per item [N, K, d_t] from ``batch.text_anchors`` ([K, d_t] or [C, K, d_t])."""
    anchors = F.normalize(batch.require("text_anchors", loss).detach(), dim=-1)
    if anchors.ndim == 2:
        return anchors.expand(batch.size, *anchors.shape)
    if anchors.ndim == 3:
        labels = batch.require("labels", loss)
        if labels.min() < 0 or labels.max() >= len(anchors):
            raise LakdError(f"loss {loss!r}: labels must be in [0, {len(anchors)}) to pick per-class anchors")
        return anchors[labels]
    raise LakdError(f"loss {loss!r}: text_anchors must be [K, d] or [C, K, d], got {tuple(anchors.shape)}")


@register_loss("rise_relative")
class RiseRelativeDistance(DistillLoss):
    """RISE relative-distance loss on images: softmax over text anchors of cosine / ``temperature``,
    student (projected) vs teacher, squared difference averaged over items and anchors (RISE's
    ``F.mse_loss``; RISE weights it by 10)."""

    batch_fields = ("text_anchors", "labels")

    batch_dependent = False

    def __init__(self, dims: FeatureDims, *, temperature: float = 1.0):
        super().__init__(dims)
        if not temperature > 0:
            raise LakdError(f"loss 'rise_relative': temperature must be > 0, got {temperature}")
        self.temperature = temperature

    def distribution(self, x_hat: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
        """softmax_k(cos(x_i, a_ik) / temperature) [N, K] for unit x [N, d] and anchors [N, K, d]."""
        return torch.softmax(torch.einsum("nd,nkd->nk", x_hat, anchors) / self.temperature, dim=1)

    def forward(self, batch: DistillBatch) -> torch.Tensor:
        teacher_hat = batch.teacher_hat("image", self.name)
        anchors = anchors_per_item(batch, self.name)
        if anchors.shape[-1] != teacher_hat.shape[1]:
            raise LakdError(
                f"loss {self.name!r}: text anchors have dim {anchors.shape[-1]}, "
                f"teacher features {teacher_hat.shape[1]}"
            )
        student = self.distribution(batch.projected_hat("image", self.name), anchors)
        teacher = self.distribution(teacher_hat, anchors)
        return (student - teacher).pow(2).mean()
