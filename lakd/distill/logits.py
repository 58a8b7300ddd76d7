"""Losses on the image-text similarity logits: ``crd`` and ``gd`` [KD].

[KD] Yang et al., "CLIP-KD: An Empirical Study of CLIP Model Distillation", CVPR 2024.

- CRD: KL(teacher || student) between the row-softmax of the teacher's logits
  ``t_scale * t_img_hat t_txt_hat^T`` and the student's ``s_scale * s_img_hat s_txt_hat^T``
  (each in its own space, so any dims), for image->text rows and text->image rows, averaged.
  Zero when the student's logits equal the teacher's.
- GD: match the gradients of InfoNCE with respect to anchors and keys, for image anchors / text
  keys and text anchors / image keys, computed analytically with the *true* temperature:
  P = softmax(scale * A K^T). [KD]'s released ``get_grad`` divides the similarities by the logit
  scale (as if it were tau) instead of multiplying, so its "gradients" use the wrong temperature.
  The student's features are projected into the teacher's dim (gradients are vectors there).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lakd.distill.batch import DistillBatch
from lakd.distill.contrastive import infonce_gradients
from lakd.distill.registry import DistillLoss, register_loss


def softmax_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Mean over rows of KL(softmax(teacher) || softmax(student)) (row-wise distributions)."""
    return F.kl_div(
        F.log_softmax(student_logits, dim=1),
        F.log_softmax(teacher_logits, dim=1),
        reduction="batchmean",
        log_target=True,
    )


@register_loss("crd")
class ContrastiveRelationalDistillation(DistillLoss):
    """CRD [KD]: KL between teacher and student image-text logit distributions, both directions."""

    batch_fields = ("teacher_logit_scale",)

    def forward(self, batch: DistillBatch) -> torch.Tensor:
        student = batch.student_logit_scale * batch.student_hat("image") @ batch.student_hat("text").T
        teacher = (
            batch.teacher_scale(self.name)
            * batch.teacher_hat("image", self.name)
            @ batch.teacher_hat("text", self.name).T
        )
        return (softmax_kl(student, teacher) + softmax_kl(student.T, teacher.T)) / 2


@register_loss("gd")
class GradientDistillation(DistillLoss):
    """GD [KD] with the true temperature.

    For each of the four InfoNCE gradients (image anchors, text keys, text anchors, image keys)
    the per-item vector compared is N / scale times the gradient of the mean-reduced loss, i.e.
    (P - Y) K: the temperature enters through P, and the loss does not grow with scale^2 or
    shrink with N^2. Loss = sum over the four of mean over items of the squared L2 difference.
    """

    batch_fields = ("teacher_logit_scale",)

    def forward(self, batch: DistillBatch) -> torch.Tensor:
        n = batch.size
        student_scale = batch.student_logit_scale
        teacher_scale = batch.teacher_scale(self.name)
        s_img, s_txt = batch.projected_hat("image", self.name), batch.projected_hat("text", self.name)
        t_img, t_txt = batch.teacher_hat("image", self.name), batch.teacher_hat("text", self.name)
        total = s_img.new_zeros(())
        for s_anchor, s_key, t_anchor, t_key in ((s_img, s_txt, t_img, t_txt), (s_txt, s_img, t_txt, t_img)):
            student_grads = infonce_gradients(s_anchor, s_key, student_scale)
            teacher_grads = infonce_gradients(t_anchor, t_key, teacher_scale)
            for s_grad, t_grad in zip(student_grads, teacher_grads, strict=True):
                difference = s_grad * (n / student_scale) - t_grad * (n / teacher_scale)
                total = total + difference.pow(2).sum(dim=1).mean()
        return total
