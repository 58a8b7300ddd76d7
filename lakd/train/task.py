"""The training task: student (with its projection heads), frozen teacher and recipe in one module.

As in open_clip's ``DistillCLIPTask``, one ``nn.Module`` holds everything a step runs, so DDP wraps
the whole task: recipe terms own parameters (ICL's logit scale, AFD's fusion layers) and buffers
(running conformity means, MFD's call counter), and they must be synchronised like the student's.
``train()`` keeps the teacher in eval mode; its parameters never require gradients.

Token features (``dense``) are computed only when a term of the recipe reads them
(``student_dense`` among :attr:`Recipe.required_fields`): then the student's single forward and the
online teacher's give them beside the pooled features; other recipes run the plain forwards.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from lakd.analysis.whitening import WhiteningStats
from lakd.distill import Recipe, RecipeOutput, StudentWithHeads, encode_dense
from lakd.train.data import CachedTeacher, TrainBatch


class DistillTask(nn.Module):
    """``forward(batch) -> RecipeOutput``: the student's raw features of the batch, the teacher's
    (an online model's forward under no_grad, or a cached store's rows), and the recipe on both.

    ``whitening``: the teacher's statistics per modality (for ``whitened_fd``); ``text_anchors``:
    per-class teacher prompt embeddings [C, K, d_t] (for ``rise_relative``); ``teacher_logit_scale``
    for a cached teacher (an online one gives its own). ``mask_ratio``: in training mode the
    student encodes a masked view of the images (seeded by ``forward``'s ``mask_seed``),
    single-pass masked distillation (CLIP-KD); the teacher's features stay those of the full images.
    """

    def __init__(
        self,
        student: StudentWithHeads,
        recipe: Recipe,
        *,
        teacher: nn.Module | None = None,
        cached: CachedTeacher | None = None,
        teacher_logit_scale: float | None = None,
        whitening: Mapping[str, WhiteningStats] | None = None,
        text_anchors: torch.Tensor | None = None,
        mask_ratio: float | None = None,
    ):
        super().__init__()
        self.student = student
        self.recipe = recipe
        self.teacher = teacher
        if teacher is not None:
            teacher.requires_grad_(False).eval()
        self.cached = cached
        self.teacher_logit_scale = teacher_logit_scale
        self.whitening = whitening
        self.dense = "student_dense" in recipe.required_fields
        self.mask_ratio = mask_ratio
        self.register_buffer("text_anchors", text_anchors, persistent=False)

    def train(self, mode: bool = True) -> DistillTask:
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()
        return self

    def teacher_fields(self, batch: TrainBatch) -> dict[str, Any]:
        """The teacher's raw features and logit scale for ``batch`` (empty without a teacher)."""
        if self.teacher is not None:
            images = batch.teacher_images if batch.teacher_images is not None else batch.images
            tokens = batch.teacher_tokens if batch.teacher_tokens is not None else batch.tokens
            with torch.no_grad():
                if self.dense:
                    image, text, dense = encode_dense(self.teacher, images, tokens)
                    return {
                        "teacher_image": image.float(),
                        "teacher_text": text.float(),
                        "teacher_logit_scale": self.teacher.logit_scale.exp().float(),
                        "teacher_dense": dense.float(),
                    }
                return {
                    "teacher_image": self.teacher.encode_image(images, normalize=False).float(),
                    "teacher_text": self.teacher.encode_text(tokens, normalize=False).float(),
                    "teacher_logit_scale": self.teacher.logit_scale.exp().float(),
                }
        if self.cached is not None:
            image, text = self.cached.features(batch)
            device = batch.images.device
            return {
                "teacher_image": image.to(device, non_blocking=True),
                "teacher_text": text.to(device, non_blocking=True),
                "teacher_logit_scale": self.teacher_logit_scale,
            }
        return {}

    def forward(self, batch: TrainBatch, mask_seed: int | None = None) -> RecipeOutput:
        if self.dense:
            outputs = self.student(batch.images, batch.tokens, dense=True)
        elif self.mask_ratio is not None and self.training:
            outputs = self.student(batch.images, batch.tokens, mask_ratio=self.mask_ratio, mask_seed=mask_seed)
        else:
            outputs = self.student(batch.images, batch.tokens)
        fields = self.teacher_fields(batch)
        if self.whitening is not None:
            fields["whitening"] = self.whitening
        if self.text_anchors is not None:
            fields["text_anchors"] = self.text_anchors
            fields["labels"] = batch.labels
        features = {key: outputs[key].float() for key in ("image_features", "text_features")}
        return self.recipe(self.student.distill_batch({**outputs, **features}, images=batch.images, **fields))
