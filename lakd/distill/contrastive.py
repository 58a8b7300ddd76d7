"""Contrastive losses: ``clip`` (task), ``icl`` and ``afd`` [KD].

[KD] Yang et al., "CLIP-KD: An Empirical Study of CLIP Model Distillation", CVPR 2024. All use
the symmetric InfoNCE of CLIP on L2-normalised features, with item i's image and text as the
positive pair. Differences from [KD]'s released code, on purpose:

- ICL and AFD learn their own logit scale as a log-parameter p (init log(1/0.07)) and use exp(p);
  [KD] multiplies by the raw parameter (about 2.66) without ``exp``. As in CLIP, p is kept in
  [0, log 100] by clamping the parameter after each optimizer step
  (:meth:`~lakd.distill.registry.DistillLoss.clamp_logit_scales_`), not the forward value.
- AFD concatenates the student's own normalised feature (d_s) with the teacher's (d_t) and fuses
  them with Linear(d_s + d_t -> d_s) per modality; [KD] concatenates the *projected* student
  feature (d_t) but sizes the layer for d_s + d_t, which fails whenever the dims differ.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lakd.distill.batch import MODALITIES, DistillBatch
from lakd.distill.registry import DistillLoss, FeatureDims, register_loss
from lakd.distill.scale import CLIP_INIT_LOGIT_SCALE, LearnedLogitScale


def infonce(
    a_hat: torch.Tensor, b_hat: torch.Tensor, scale: torch.Tensor, *, symmetric: bool = True
) -> torch.Tensor:
    """InfoNCE of unit rows a, b [N, d] with row i of each the positive pair.

    One-directional (``symmetric=False``): CE(s a b^T, i), a as anchors and b as keys.
    Symmetric (CLIP's loss): the mean of that and CE(s b a^T, i).
    """
    logits = scale * a_hat @ b_hat.T
    targets = torch.arange(len(logits), device=logits.device)
    if not symmetric:
        return F.cross_entropy(logits, targets)
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2


def infonce_gradients(
    anchors: torch.Tensor, keys: torch.Tensor, scale: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Analytic gradients of one-directional InfoNCE L = CE(s A K^T, i) (mean over N rows), i.e.
    ``infonce(anchors, keys, scale, symmetric=False)``.

    With P = softmax(s A K^T) row-wise and Y = I: dL/dA = s (P - Y) K / N and
    dL/dK = s (P - Y)^T A / N. Returns both [N, d], differentiable in A, K and s.
    """
    probabilities = torch.softmax(scale * anchors @ keys.T, dim=1)
    residual = probabilities - torch.eye(len(anchors), dtype=anchors.dtype, device=anchors.device)
    n = len(anchors)
    return scale * residual @ keys / n, scale * residual.T @ anchors / n


@register_loss("clip")
class ClipTaskLoss(DistillLoss):
    """Task loss: symmetric InfoNCE between the student's own normalised image and text features,
    with the student's logit scale (plain CLIP training; needs no teacher)."""

    needs_teacher = False

    def forward(self, batch: DistillBatch) -> torch.Tensor:
        return infonce(batch.student_hat("image"), batch.student_hat("text"), batch.student_logit_scale)


@register_loss("icl")
class InteractiveContrastiveLoss(DistillLoss):
    """ICL [KD]: InfoNCE with the student's (projected, normalised) image as anchor against the
    teacher's texts, plus the student's text against the teacher's images (each one-directional
    :func:`infonce`), averaged. The logit
    scale is learned (:class:`LearnedLogitScale`)."""

    def __init__(self, dims: FeatureDims, *, init_logit_scale: float = CLIP_INIT_LOGIT_SCALE):
        super().__init__(dims)
        self.logit_scale = LearnedLogitScale(init_logit_scale)

    def forward(self, batch: DistillBatch) -> torch.Tensor:
        scale = self.logit_scale()
        image_to_text = infonce(
            batch.projected_hat("image", self.name),
            batch.teacher_hat("text", self.name),
            scale,
            symmetric=False,
        )
        text_to_image = infonce(
            batch.projected_hat("text", self.name),
            batch.teacher_hat("image", self.name),
            scale,
            symmetric=False,
        )
        return (image_to_text + text_to_image) / 2


@register_loss("afd")
class AugmentedFeatureDistillation(DistillLoss):
    """AFD [KD]: per modality, fuse [student_hat (d_s), teacher_hat (d_t)] with a learned
    Linear(d_s + d_t -> d_s), normalise, then symmetric InfoNCE between fused images and fused
    texts with a learned logit scale. Works for any d_s, d_t (needs both dims at build time)."""

    def __init__(self, dims: FeatureDims, *, init_logit_scale: float = CLIP_INIT_LOGIT_SCALE):
        super().__init__(dims)
        student_dim, teacher_dim = dims.require("afd")
        self.fusion = nn.ModuleDict(
            {m: nn.Linear(student_dim + teacher_dim, student_dim) for m in MODALITIES}
        )
        self.logit_scale = LearnedLogitScale(init_logit_scale)

    def fused(self, batch: DistillBatch, modality: str) -> torch.Tensor:
        """Normalised fused features [N, d_s] of ``modality``."""
        both = torch.cat([batch.student_hat(modality), batch.teacher_hat(modality, self.name)], dim=1)
        return F.normalize(self.fusion[modality](both), dim=-1)

    def forward(self, batch: DistillBatch) -> torch.Tensor:
        return infonce(self.fused(batch, "image"), self.fused(batch, "text"), self.logit_scale())
