"""Dense distillation: ``dense``, the student's token-by-patch similarity maps matched to the teacher's.

For each image-caption pair of the batch, the map S[p, t] is the cosine of image patch p with text
token t (unit token features in each model's own joint space, :mod:`lakd.models.tokens`; the maps
of :func:`lakd.models.tokens.similarity_maps`, the DCSM of Kang et al., arXiv 2503.08723). The loss
is the mean, over the pairs' real tokens (the mask of the token ids) and the student's patches, of
(S_student - S_teacher)^2. Maps are [P, L] in both models whatever their embedding dims, so no
projection heads are involved.

- Patch grids: when the teacher's grid (gh_t x gw_t) differs from the student's, each teacher
  token's map is resampled onto the student's grid (:func:`lakd.models.tokens.resample_maps`:
  bilinear, antialiased when shrinking); the student's maps are never resampled, so the
  gradient reaches every student patch as it is.
- Tokens: position t of the student's map and of the teacher's is the same token only when both
  read the same token ids, so the loss needs the shared tokenizer; different ids are a
  LakdError (the trainer refuses a teacher with another tokenizer before the first step).
- Inputs: ``batch.student_dense`` / ``batch.teacher_dense`` (:class:`DenseFeatures`), which only
  a forward of both models on this step's own images and captions gives: the loss declares
  ``needs_online_teacher``, so a cached teacher is a config error.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lakd.distill.registry import DistillLoss, register_loss
from lakd.errors import LakdError
from lakd.models.tokens import image_tokens, resample_maps, similarity_maps, text_tokens


@dataclass
class DenseFeatures:
    """One model's token features of a batch of pairs: ``patches`` [N, P, d] unit, in raster order
    over ``grid`` (gh, gw); ``text`` [N, L, d] unit (zero where masked), ``mask`` [N, L] bool and
    ``ids`` [N, L] the token ids they come from."""

    patches: torch.Tensor
    grid: tuple[int, int]
    text: torch.Tensor
    mask: torch.Tensor
    ids: torch.Tensor

    def __post_init__(self) -> None:
        n, p = self.patches.shape[:2]
        if p != self.grid[0] * self.grid[1]:
            raise LakdError(
                f"dense features: {p} patch tokens do not fill the {self.grid[0]} x {self.grid[1]} grid "
                "(patch dropout during training?)"
            )
        if self.text.shape[:2] != self.mask.shape or self.ids.shape != self.mask.shape or len(self.text) != n:
            raise LakdError(
                f"dense features: text {tuple(self.text.shape)}, mask {tuple(self.mask.shape)} and ids "
                f"{tuple(self.ids.shape)} do not pair with {n} images"
            )

    def maps(self) -> torch.Tensor:
        """[N, P, L]: the token-by-patch cosine map of each pair (row i: image i with caption i)."""
        return similarity_maps(self.patches, self.text, self.mask)

    def detached(self) -> DenseFeatures:
        return DenseFeatures(self.patches.detach(), self.grid, self.text.detach(), self.mask, self.ids)

    def float(self) -> DenseFeatures:
        return DenseFeatures(self.patches.float(), self.grid, self.text.float(), self.mask, self.ids)


def encode_dense(model, images: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, DenseFeatures]:
    """One forward of both towers of an open_clip model: (raw pooled image features [N, d], raw pooled
    text features [N, d], :class:`DenseFeatures`). The pooled features are those ``encode_image`` /
    ``encode_text`` return, from the same pass as the tokens (:mod:`lakd.models.tokens`); a tower
    without token features is a LakdError naming the model."""
    image = image_tokens(model, images)
    text = text_tokens(model, ids)
    return image.pooled, text.pooled, DenseFeatures(image.patches, image.grid, text.tokens, text.mask, ids)


def dense_map_loss(student: DenseFeatures, teacher: DenseFeatures, loss: str = "dense") -> torch.Tensor:
    """Mean over real tokens and student patches of (S_student - S_teacher)^2 (module docstring)."""
    if student.ids.shape != teacher.ids.shape or not torch.equal(student.ids, teacher.ids.to(student.ids.device)):
        raise LakdError(
            f"loss {loss!r}: the student's and the teacher's token ids differ (ids {tuple(student.ids.shape)} vs "
            f"{tuple(teacher.ids.shape)}); token maps are aligned through a shared tokenizer, so use a teacher "
            "with the student's tokenizer"
        )
    with torch.autocast(student.patches.device.type, enabled=False):  # cosines in float32
        mask = student.mask & teacher.mask
        mine = similarity_maps(student.patches.float(), student.text.float(), mask)
        target = similarity_maps(teacher.patches.detach().float(), teacher.text.detach().float(), mask)
        target = resample_maps(target, teacher.grid, student.grid)
        squared = (mine - target).pow(2) * mask[:, None, :].to(mine.dtype)
        count = mask.sum() * mine.shape[1]
        return squared.sum() / count.clamp(min=1)


@register_loss("dense")
class DenseMapDistillation(DistillLoss):
    """``dense``: the student's token-by-patch cosine maps matched to the teacher's (module docstring)."""

    batch_dependent = False
    batch_fields = ("student_dense", "teacher_dense")
    needs_online_teacher = True

    def forward(self, batch) -> torch.Tensor:
        student = batch.require("student_dense", self.name)
        teacher = batch.require("teacher_dense", self.name)
        if len(student.patches) != len(teacher.patches):
            raise LakdError(
                f"loss {self.name!r}: {len(student.patches)} student pairs but {len(teacher.patches)} teacher pairs"
            )
        return dense_map_loss(student, teacher, self.name)
