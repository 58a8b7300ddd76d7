"""Projection heads from the student's embedding dim to the teacher's, and the student wrapper
that owns them.

When student and teacher dims differ, feature-matching losses compare ``head(student raw
feature)`` with the teacher feature ([KD] uses a learned linear map per modality the same way).
The heads are trained with the student (they are submodules of :class:`StudentWithHeads`, so
they appear in its ``state_dict`` as ``heads.*``) and saved in its checkpoints:
``lakd.models.save_checkpoint(wrapper, "ckpt.pt")`` writes the bare student's open_clip state
dict as ``state_dict`` (open_clip and :func:`lakd.models.load_checkpoint` load it as the bare
student, heads ignored) and the heads as an extra part (:mod:`lakd.models.checkpoint`): metadata
``lakd.heads = {student_dim, teacher_dim, bias}`` and tensors ``heads_state_dict`` in a ``.pt``
file, or the file ``ckpt.heads.safetensors`` beside ``ckpt.safetensors`` (its sidecar names it).
:func:`load_student_with_heads` restores the wrapper with its heads. Export drops them:
:func:`lakd.models.export_local_dir` of the wrapper (or of ``wrapper.student``) writes the bare
student only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import open_clip
import torch
from torch import nn

from lakd.distill.batch import MODALITIES, DistillBatch
from lakd.distill.dense import encode_dense
from lakd.distill.masking import check_masking, encode_masked_images
from lakd.errors import LakdError
from lakd.models.checkpoint import load_checkpoint_with_parts


class ProjectionHeads(nn.Module):
    """One linear map per modality, student dim -> teacher dim, applied to raw features [N, d_s]."""

    def __init__(self, student_dim: int, teacher_dim: int, *, bias: bool = True):
        super().__init__()
        if student_dim < 1 or teacher_dim < 1:
            raise LakdError(f"projection heads: dims must be positive, got {student_dim} -> {teacher_dim}")
        self.student_dim, self.teacher_dim, self.bias = student_dim, teacher_dim, bias
        self.maps = nn.ModuleDict({m: nn.Linear(student_dim, teacher_dim, bias=bias) for m in MODALITIES})

    @classmethod
    def between(cls, student_dim: int, teacher_dim: int, *, bias: bool = True) -> ProjectionHeads | None:
        """Heads when the dims differ, ``None`` when they are equal (features are compared as they are)."""
        return None if student_dim == teacher_dim else cls(student_dim, teacher_dim, bias=bias)

    def config(self) -> dict[str, Any]:
        """The constructor's arguments, as saved in checkpoints (``lakd.heads``)."""
        return {"student_dim": self.student_dim, "teacher_dim": self.teacher_dim, "bias": self.bias}

    @classmethod
    def from_saved(cls, config: Any, state_dict: dict[str, torch.Tensor], *, source: str) -> ProjectionHeads:
        """Heads rebuilt from :meth:`config` and their ``state_dict``; problems are LakdErrors naming ``source``."""
        fields = ("student_dim", "teacher_dim", "bias")
        if not isinstance(config, dict) or any(field not in config for field in fields):
            raise LakdError(f"{source}: projection heads need metadata {', '.join(fields)}, got {config!r}")
        dims_ok = all(
            isinstance(config[k], int) and not isinstance(config[k], bool)
            for k in ("student_dim", "teacher_dim")
        )
        if not dims_ok or not isinstance(config["bias"], bool):
            raise LakdError(f"{source}: bad projection-head metadata {config!r}")
        heads = cls(config["student_dim"], config["teacher_dim"], bias=config["bias"])
        expected = {key: tuple(value.shape) for key, value in heads.state_dict().items()}
        found = {key: tuple(value.shape) for key, value in state_dict.items()}
        if found != expected:
            raise LakdError(f"{source}: projection-head tensors {found} do not match lakd.heads {config}")
        heads.load_state_dict(state_dict, strict=True)
        return heads

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

    def forward(
        self,
        images: torch.Tensor,
        texts: torch.Tensor,
        *,
        mask_ratio: float | None = None,
        mask_seed: int | None = None,
        fallback: str = "pixel",
        dense: bool = False,
    ) -> dict[str, Any]:
        """Raw features of ``images`` and ``texts`` and the exp'd logit scale.

        With ``dense=True`` the same single pass also gives the token features (ViT towers only,
        :func:`~lakd.distill.dense.encode_dense`) as ``outputs["dense"]``, a
        :class:`~lakd.distill.dense.DenseFeatures` for the ``dense`` loss; the pooled features are
        those of the plain forward.

        With ``mask_ratio`` in (0, 1) the image features are of a masked view of the images
        (:func:`~lakd.distill.masking.encode_masked_images`: patch dropout for ViT towers, pixel
        cells otherwise, or a LakdError with ``fallback="error"``; ``mask_seed`` fixes the masks):
        [KD]'s masked feature distillation in a single pass, where these features feed every
        term of the recipe (docs/losses.md).
        """
        if dense:
            if mask_ratio is not None:
                raise LakdError("student forward: dense token features of a masked view are not supported")
            image_features, text_features, features = encode_dense(self.student, images, texts)
            return {
                "image_features": image_features,
                "text_features": text_features,
                "logit_scale": self.student.logit_scale.exp(),
                "dense": features,
            }
        if mask_ratio is None:
            image_features = self.student.encode_image(images, normalize=False)
        else:
            check_masking(mask_ratio, fallback, "student forward")
            image_features = encode_masked_images(
                self.student, images, mask_ratio, fallback=fallback, seed=mask_seed
            )
        return {
            "image_features": image_features,
            "text_features": self.student.encode_text(texts, normalize=False),
            "logit_scale": self.student.logit_scale.exp(),
        }

    def checkpoint_parts(self) -> tuple[nn.Module, dict[str, tuple[dict[str, Any], dict[str, torch.Tensor]]]]:
        """(bare student, extra parts) for :func:`lakd.models.save_checkpoint`: the heads, when there are any."""
        if self.heads is None:
            return self.student, {}
        return self.student, {"heads": (self.heads.config(), self.heads.state_dict())}

    def distill_batch(
        self, outputs: dict[str, torch.Tensor], images: torch.Tensor | None = None, **fields: Any
    ) -> DistillBatch:
        """A :class:`~lakd.distill.batch.DistillBatch` from ``outputs`` of this wrapper's forward
        (called directly or through DDP), with the heads, the bare student, ``images`` and the
        student's token features (``outputs["dense"]``, when the forward gave them) filled in for
        losses that need them; ``fields`` are the teacher's features and the other batch fields."""
        if outputs.get("dense") is not None:
            fields = {"student_dense": outputs["dense"], **fields}
        return DistillBatch(
            student_image=outputs["image_features"],
            student_text=outputs["text_features"],
            student_logit_scale=outputs["logit_scale"],
            heads=self.heads,
            student_model=self.student,
            images=images,
            **fields,
        )


def load_student_with_heads(path: str | Path, *, device: str = "cpu", precision: str = "fp32"):
    """Load a checkpoint saved from a :class:`StudentWithHeads` -> (wrapper, preprocess, tokenizer).

    The heads go to ``device`` in the dtype of the student's features under ``precision``
    (open_clip's cast dtype, fp32 by default); a checkpoint without heads (a bare student, or a
    wrapper whose dims were equal) gives a wrapper with ``heads=None``.
    """
    model, preprocess, tokenizer, parts = load_checkpoint_with_parts(path, device=device, precision=precision)
    heads = None
    if "heads" in parts:
        config, state_dict = parts["heads"]
        heads = ProjectionHeads.from_saved(config, state_dict, source=str(path))
        heads.to(device=device, dtype=open_clip.get_cast_dtype(precision) or torch.float32).eval()
    return StudentWithHeads(model, heads).eval(), preprocess, tokenizer
