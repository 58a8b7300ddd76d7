"""Projection heads from the student's embedding dim to the teacher's, and the student wrapper
that owns them.

When student and teacher dims differ, feature-matching losses compare ``head(student raw
feature)`` with the teacher feature ([KD] uses a learned linear map per modality the same way).
The heads are trained with the student, saved in its training checkpoints (they are submodules
of :class:`StudentWithHeads`, so they appear in its ``state_dict`` as ``heads.*``) and dropped on
export: ``wrapper.student`` is the bare open_clip model to pass to
:func:`lakd.models.save_checkpoint` or :func:`lakd.models.export_local_dir`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from lakd.distill.batch import MODALITIES, DistillBatch
from lakd.errors import LakdError


class ProjectionHeads(nn.Module):
    """One linear map per modality, student dim -> teacher dim, applied to raw features [N, d_s]."""

    def __init__(self, student_dim: int, teacher_dim: int, *, bias: bool = True):
        super().__init__()
        if student_dim < 1 or teacher_dim < 1:
            raise LakdError(f"projection heads: dims must be positive, got {student_dim} -> {teacher_dim}")
        self.student_dim, self.teacher_dim = student_dim, teacher_dim
        self.maps = nn.ModuleDict({m: nn.Linear(student_dim, teacher_dim, bias=bias) for m in MODALITIES})

    @classmethod
    def between(cls, student_dim: int, teacher_dim: int, *, bias: bool = True) -> ProjectionHeads | None:
        """Heads when the dims differ, ``None`` when they are equal (features are compared as they are)."""
        return None if student_dim == teacher_dim else cls(student_dim, teacher_dim, bias=bias)

    def forward(self, modality: str, x: torch.Tensor) -> torch.Tensor:
        """Project raw student features of ``modality`` ("image" or "text") [N, d_s] -> [N, d_t]."""
        return self.maps[modality](x)


def embed_dim_of(model: nn.Module) -> int:
    """The joint embedding dim of an open_clip model built by :func:`lakd.models.load_model`."""
    cfg = getattr(model, "lakd_model_cfg", None) or {}
    if isinstance(cfg.get("embed_dim"), int):
        return cfg["embed_dim"]
    projection = getattr(model, "text_projection", None)
    if isinstance(projection, torch.Tensor) and projection.ndim == 2:
        return projection.shape[1]
    raise LakdError(
        f"student {type(model).__name__}: cannot tell its embedding dim (no lakd_model_cfg); pass student_dim"
    )


class StudentWithHeads(nn.Module):
    """A student CLIP model plus optional :class:`ProjectionHeads` (trained and checkpointed together).

    ``forward(images, texts)`` returns open_clip's output dict with *raw* (un-normalised) features:
    ``image_features`` [N, d_s], ``text_features`` [N, d_s], ``logit_scale`` (exp'd scalar).
    """

    def __init__(self, model: nn.Module, heads: ProjectionHeads | None = None):
        super().__init__()
        self.student = model
        self.heads = heads

    @classmethod
    def for_teacher(
        cls, model: nn.Module, teacher_dim: int, *, student_dim: int | None = None, bias: bool = True
    ) -> StudentWithHeads:
        """Wrap ``model`` with heads to ``teacher_dim`` when its embedding dim differs."""
        dim = student_dim if student_dim is not None else embed_dim_of(model)
        return cls(model, ProjectionHeads.between(dim, teacher_dim, bias=bias))

    def forward(self, images: torch.Tensor, texts: torch.Tensor) -> dict[str, torch.Tensor]:
        return {
            "image_features": self.student.encode_image(images, normalize=False),
            "text_features": self.student.encode_text(texts, normalize=False),
            "logit_scale": self.student.logit_scale.exp(),
        }

    def distill_batch(
        self, outputs: dict[str, torch.Tensor], images: torch.Tensor | None = None, **fields: Any
    ) -> DistillBatch:
        """A :class:`~lakd.distill.batch.DistillBatch` from ``outputs`` of this wrapper's forward
        (called directly or through DDP), with the heads, the bare student and ``images`` filled in
        for losses that need them; ``fields`` are the teacher's features and the other batch fields."""
        return DistillBatch(
            student_image=outputs["image_features"],
            student_text=outputs["text_features"],
            student_logit_scale=outputs["logit_scale"],
            heads=self.heads,
            student_model=self.student,
            images=images,
            **fields,
        )
