"""Registry of distillation losses, named in recipes by their key.

A loss is an ``nn.Module`` subclass of :class:`DistillLoss` registered with
``@register_loss("name")``. Its constructor takes the :class:`FeatureDims` and keyword options
(given in a recipe config); its ``forward(batch: DistillBatch)`` returns a scalar tensor. Losses
with learnable parts (AFD's fusion layers, ICL's logit scale) or running statistics own them, so
they are optimised and checkpointed with the recipe.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from torch import nn

from lakd.distill.scale import LearnedLogitScale
from lakd.errors import LakdError


@dataclass(frozen=True)
class FeatureDims:
    """Embedding dims of student and teacher, for losses that build layers or buffers (may be None)."""

    student: int | None = None
    teacher: int | None = None

    def require(self, loss: str) -> tuple[int, int]:
        if self.student is None or self.teacher is None:
            raise LakdError(
                f"loss {loss!r}: needs the student and teacher embedding dims "
                "(Recipe.from_config(..., student_dim=, teacher_dim=))"
            )
        return self.student, self.teacher


class DistillLoss(nn.Module):
    """Base class: ``forward(batch) -> scalar``.

    Class attributes: ``needs_teacher`` is False only for the task loss. ``batch_dependent`` says
    whether the term for one item depends on the other items of the batch (contrastive,
    relational and batch-statistic terms): under torch.distributed such a term computed on each
    rank's local batch is not the term of the global batch, so a recipe holding one wants its
    features gathered across ranks (:attr:`lakd.distill.Recipe.wants_gather`). Per-item terms
    (mean over items of a per-item distance) set it to False. A new loss that does not say is
    treated as batch-dependent, the safe choice.

    ``batch_fields``: the :class:`~lakd.distill.batch.DistillBatch` fields beyond the features that
    the loss reads (e.g. ``teacher_logit_scale``), so a trainer can check its inputs before the
    first step (:meth:`required_fields`). ``needs_online_teacher``: the loss needs the teacher's
    forward on this step's own inputs (augmented views, token maps), which cached teacher
    features cannot give.
    """

    name: ClassVar[str] = ""
    needs_teacher: ClassVar[bool] = True
    batch_dependent: ClassVar[bool] = True
    batch_fields: ClassVar[tuple[str, ...]] = ()
    needs_online_teacher: ClassVar[bool] = False

    def __init__(self, dims: FeatureDims):
        super().__init__()
        self.dims = dims

    def required_fields(self) -> tuple[str, ...]:
        """The batch fields this instance reads besides the features (:attr:`batch_fields`)."""
        return self.batch_fields

    def clamp_logit_scales_(self) -> None:
        """Clamp every learned logit scale of this loss into CLIP's range, in place (no-op when it
        has none); call after each optimizer step (:mod:`lakd.distill.scale`)."""
        for module in self.modules():
            if isinstance(module, LearnedLogitScale):
                module.clamp_()


LOSSES: dict[str, type[DistillLoss]] = {}


def register_loss(name: str) -> Callable[[type[DistillLoss]], type[DistillLoss]]:
    """Class decorator: make a :class:`DistillLoss` subclass available in recipes as ``name``."""

    def deco(cls: type[DistillLoss]) -> type[DistillLoss]:
        if name in LOSSES:
            raise ValueError(f"loss {name!r} is already registered by {LOSSES[name].__qualname__}")
        cls.name = name
        LOSSES[name] = cls
        return cls

    return deco


def available_losses() -> list[str]:
    """Names of every registered loss, sorted."""
    return sorted(LOSSES)


def loss_options(name: str) -> dict[str, Any]:
    """Keyword options of loss ``name`` and their defaults."""
    parameters = list(inspect.signature(LOSSES[name].__init__).parameters.values())[2:]  # self, dims
    return {p.name: p.default for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY}


def build_loss(
    name: str, options: Mapping[str, Any] | None = None, dims: FeatureDims | None = None
) -> DistillLoss:
    """Instantiate loss ``name`` with ``options``; unknown names or options are one-line LakdErrors."""
    if name not in LOSSES:
        raise LakdError(f"loss {name!r}: unknown (available: {', '.join(available_losses())})")
    options = dict(options or {})
    accepted = loss_options(name)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        hint = ", ".join(f"{key}={value!r}" for key, value in accepted.items()) or "none"
        raise LakdError(f"loss {name!r}: unknown option(s) {', '.join(unknown)} (options: {hint})")
    return LOSSES[name](dims or FeatureDims(), **options)
