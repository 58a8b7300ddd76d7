"""The one structure every distillation loss receives: :class:`DistillBatch`.

It holds raw (pre-L2-normalisation) pooled features of the student [N, d_s] and the teacher
[N, d_t] for both modalities, the logit scales, and what individual losses need besides
(projection heads, teacher whitening statistics, the student model and its images for MFD,
labels and text anchors for RISE-style terms, token features of both models for ``dense``). Derived views are computed once per batch and
cached: normalised features (``*_hat``), student features projected into the teacher's dim
(``projected``), and both. Teacher tensors are always detached: the teacher is never trained.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from lakd import distributed
from lakd.errors import LakdError

if TYPE_CHECKING:
    from lakd.analysis.whitening import WhiteningStats
    from lakd.distill.dense import DenseFeatures
    from lakd.distill.heads import ProjectionHeads

MODALITIES = ("image", "text")


@dataclass
class DistillBatch:
    """Features of one batch of N image-caption pairs (rows i of every tensor are the same item).

    ``student_logit_scale`` is the multiplicative scale (``model.logit_scale.exp()``);
    ``teacher_logit_scale`` likewise (tensor or float). ``whitening`` maps "image" / "text" to
    the teacher's :class:`~lakd.analysis.whitening.WhiteningStats`. ``images`` [n, 3, H, W] are
    the student's preprocessed images (this rank's rows only). ``labels`` [N] (int) and
    ``text_anchors`` ([K, d_t] shared or [C, K, d_t] per class) serve ``rise_relative``.
    ``student_dense`` / ``teacher_dense`` (:class:`~lakd.distill.dense.DenseFeatures`, this rank's
    rows only) serve ``dense``.
    ``gather`` maps this rank's rows of a tensor to the global batch; :meth:`gathered` sets it.
    """

    student_image: torch.Tensor
    student_text: torch.Tensor
    student_logit_scale: torch.Tensor
    teacher_image: torch.Tensor | None = None
    teacher_text: torch.Tensor | None = None
    teacher_logit_scale: torch.Tensor | float | None = None
    heads: ProjectionHeads | None = None
    whitening: Mapping[str, WhiteningStats] | None = None
    student_model: nn.Module | None = None
    images: torch.Tensor | None = None
    labels: torch.Tensor | None = None
    text_anchors: torch.Tensor | None = None
    student_dense: DenseFeatures | None = None
    teacher_dense: DenseFeatures | None = None
    gather: Callable[[torch.Tensor], torch.Tensor] = distributed.keep_rows
    _cache: dict[tuple[str, str], torch.Tensor] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        self._check_pair("student", self.student_image, self.student_text)
        if (self.teacher_image is None) != (self.teacher_text is None):
            raise LakdError("distill batch: give teacher features for both image and text, or for neither")
        if self.teacher_image is not None:
            self._check_pair("teacher", self.teacher_image, self.teacher_text)
            if len(self.teacher_image) != self.size:
                raise LakdError(
                    f"distill batch: teacher has {len(self.teacher_image)} rows but student has {self.size}; "
                    "they must be the same items"
                )
        if self.labels is not None and self.labels.shape != (self.size,):
            raise LakdError(
                f"distill batch: labels must have shape ({self.size},), got {tuple(self.labels.shape)}"
            )

    @staticmethod
    def _check_pair(who: str, image: torch.Tensor, text: torch.Tensor) -> None:
        if image.ndim != 2 or text.ndim != 2:
            raise LakdError(
                f"distill batch: {who} features must be [N, d], got image {tuple(image.shape)}, "
                f"text {tuple(text.shape)}"
            )
        if image.shape != text.shape:
            raise LakdError(
                f"distill batch: {who} image features {tuple(image.shape)} and text features "
                f"{tuple(text.shape)} differ in shape"
            )

    @property
    def size(self) -> int:
        """N, the number of items (global when gathered)."""
        return len(self.student_image)

    @property
    def has_teacher(self) -> bool:
        return self.teacher_image is not None

    def require(self, name: str, loss: str) -> Any:
        """The field ``name``, or a LakdError saying that ``loss`` needs it."""
        value = getattr(self, name)
        if value is None:
            raise LakdError(f"loss {loss!r}: needs batch field {name!r}, which this batch does not have")
        return value

    def _cached(self, kind: str, modality: str, make: Callable[[], torch.Tensor]) -> torch.Tensor:
        key = (kind, modality)
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def student(self, modality: str) -> torch.Tensor:
        """Raw student features of ``modality`` [N, d_s]."""
        return {"image": self.student_image, "text": self.student_text}[modality]

    def student_hat(self, modality: str) -> torch.Tensor:
        """L2-normalised student features [N, d_s] (the student's own space)."""
        return self._cached("student_hat", modality, lambda: F.normalize(self.student(modality), dim=-1))

    def teacher(self, modality: str, loss: str = "this loss") -> torch.Tensor:
        """Raw teacher features [N, d_t], detached."""
        if not self.has_teacher:
            raise LakdError(f"loss {loss!r}: needs teacher features, which this batch does not have")
        return {"image": self.teacher_image, "text": self.teacher_text}[modality].detach()

    def teacher_hat(self, modality: str, loss: str = "this loss") -> torch.Tensor:
        """L2-normalised teacher features [N, d_t], detached."""
        return self._cached(
            "teacher_hat", modality, lambda: F.normalize(self.teacher(modality, loss), dim=-1)
        )

    def projected(self, modality: str, loss: str = "this loss") -> torch.Tensor:
        """Raw student features in the teacher's dim [N, d_t]: through the heads when there are any."""

        def make() -> torch.Tensor:
            return self.project(modality, self.student(modality), loss)

        return self._cached("projected", modality, make)

    def projected_hat(self, modality: str, loss: str = "this loss") -> torch.Tensor:
        """L2-normalised :meth:`projected` features [N, d_t]."""
        return self._cached(
            "projected_hat", modality, lambda: F.normalize(self.projected(modality, loss), dim=-1)
        )

    def project(self, modality: str, x: torch.Tensor, loss: str = "this loss") -> torch.Tensor:
        """Map raw student features ``x`` [n, d_s] into the teacher's dim (heads, or as they are)."""
        teacher_dim = self.teacher(modality, loss).shape[1]
        y = self.heads(modality, x) if self.heads is not None else x
        if y.shape[1] != teacher_dim:
            raise LakdError(
                f"loss {loss!r}: student features have dim {y.shape[1]} but the teacher's have "
                f"{teacher_dim}; "
                "wrap the student with projection heads (StudentWithHeads.for_teacher)"
            )
        return y

    def teacher_scale(self, loss: str) -> torch.Tensor:
        """The teacher's logit scale as a tensor on the features' device."""
        scale = self.require("teacher_logit_scale", loss)
        return torch.as_tensor(
            scale, dtype=self.student_image.dtype, device=self.student_image.device
        ).detach()

    def gathered(self) -> DistillBatch:
        """The global batch under torch.distributed (rows of all ranks in rank order), or ``self``.

        Features and labels are gathered with gradients for the local slice
        (:func:`~lakd.distributed.gather_rows`); ``images`` stay local and losses that
        encode them (MFD) gather their outputs with ``batch.gather``. The token features
        (``student_dense``, ``teacher_dense``) stay local too: ``dense`` is a per-item term.
        """
        if distributed.world_size() == 1:
            return self

        def maybe(x: torch.Tensor | None) -> torch.Tensor | None:
            return None if x is None else distributed.gather_rows(x)

        return dataclasses.replace(
            self,
            student_image=distributed.gather_rows(self.student_image),
            student_text=distributed.gather_rows(self.student_text),
            teacher_image=maybe(self.teacher_image),
            teacher_text=maybe(self.teacher_text),
            labels=maybe(self.labels),
            gather=distributed.gather_rows,
        )
