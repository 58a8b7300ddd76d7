"""A recipe: a weighted sum of registered losses, named in config.

Config form (a mapping, e.g. from YAML), term name -> weight or options::

    {"clip": 1, "fd": 1}
    {"clip": 1, "mfd": {"weight": 1, "mask_ratio": 0.5}}
    {"clip": 1, "rel_kl": {"loss": "relational", "method": "kl"},
     "rel_cka": {"loss": "relational", "method": "cka"}}

A term's loss is its name unless ``loss`` says otherwise; ``weight`` defaults to 1 and terms of
weight 0 are left out. A string names a shipped recipe (:data:`NAMED_RECIPES`). The recipe is an
``nn.Module``: losses with learnable parts or buffers are submodules, so optimise and checkpoint
``recipe.parameters()`` / ``recipe.state_dict()`` with the student.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from lakd.distill.batch import DistillBatch
from lakd.distill.registry import DistillLoss, FeatureDims, build_loss
from lakd.errors import LakdError

# [KD]'s final recipe: task 1 + CRD 1 + ICL 1 + FD at weight 2000 in its MSE-over-d scale.
NAMED_RECIPES: dict[str, dict[str, Any]] = {
    "none": {"clip": 1.0},
    "clip_kd": {"clip": 1.0, "crd": 1.0, "icl": 1.0, "fd_clipkd": 2000.0},
    "fd": {"clip": 1.0, "fd": 1.0},
    "whitened_fd": {"clip": 1.0, "whitened_fd": 1.0},
    "geometry": {"clip": 1.0, "whitened_fd": 1.0, "conformity": 1.0, "gap": 1.0},
    # fd plus the teacher's token-by-patch maps (needs an online ViT teacher with the student's tokenizer)
    "dense": {"clip": 1.0, "fd": 1.0, "dense": 1.0},
}


def available_recipes() -> list[str]:
    """Names of the shipped recipes."""
    return sorted(NAMED_RECIPES)


@dataclass
class RecipeOutput:
    """``total`` = sum of weight * term; ``terms`` the unweighted value of every term (tensors)."""

    total: torch.Tensor
    terms: dict[str, torch.Tensor]
    weights: dict[str, float]

    def scalars(self, prefix: str = "loss/") -> dict[str, float]:
        """Floats for logging: the total and every unweighted term."""
        values = {f"{prefix}total": float(self.total.detach())}
        values.update({f"{prefix}{name}": float(value.detach()) for name, value in self.terms.items()})
        return values


def _weight(term: str, value: Any) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value < 0
    ):
        raise LakdError(f"recipe term {term!r}: weight must be a finite number >= 0, got {value!r}")
    return float(value)


def _term(term: str, spec: Any) -> tuple[str, float, dict[str, Any]]:
    """(loss name, weight, options) of one config entry."""
    if not isinstance(term, str) or not term or "." in term:
        raise LakdError(f"recipe term {term!r}: names must be non-empty strings without '.'")
    if isinstance(spec, Mapping):
        options = dict(spec)
        loss = options.pop("loss", term)
        if not isinstance(loss, str):
            raise LakdError(f"recipe term {term!r}: 'loss' must be a loss name, got {loss!r}")
        return loss, _weight(term, options.pop("weight", 1.0)), options
    return term, _weight(term, spec), {}


class Recipe(nn.Module):
    """Weighted sum of losses; ``forward(batch) -> RecipeOutput``.

    With ``gather=True`` the batch is gathered across ranks first (no-op on one process), so every
    term is the loss of the global batch (:mod:`lakd.distributed`), as [KD] and open_clip compute
    contrastive losses. ``gather=None`` (the default) gathers exactly when :attr:`wants_gather`:
    when some term compares items across the batch. ``gather=False`` keeps every rank's terms
    local (per-rank batches, less communication).

    A trainer calls :meth:`clamp_logit_scales_` after each optimizer step (learned logit scales of
    ``icl`` / ``afd``, kept in CLIP's range as CLIP keeps its own).
    """

    def __init__(
        self,
        losses: Mapping[str, DistillLoss],
        weights: Mapping[str, float],
        *,
        gather: bool | None = None,
    ):
        super().__init__()
        if not losses:
            raise LakdError("recipe: no terms with a weight > 0")
        self.losses = nn.ModuleDict(dict(losses))
        self.weights = dict(weights)
        self.gather = self.wants_gather if gather is None else bool(gather)

    @classmethod
    def from_config(
        cls,
        config: Mapping[str, Any] | str,
        *,
        student_dim: int | None = None,
        teacher_dim: int | None = None,
        gather: bool | None = None,
    ) -> Recipe:
        """Build from a mapping (see the module docstring) or the name of a shipped recipe.

        ``student_dim`` / ``teacher_dim`` are needed by losses that build layers or buffers
        (``afd``, ``conformity`` with ``reference="running"``). ``gather``: see :class:`Recipe`.
        """
        if isinstance(config, str):
            if config not in NAMED_RECIPES:
                raise LakdError(
                    f"recipe {config!r}: unknown (shipped recipes: {', '.join(available_recipes())})"
                )
            config = NAMED_RECIPES[config]
        if not isinstance(config, Mapping):
            raise LakdError(f"recipe: expected a mapping of term -> weight, got {type(config).__name__}")
        dims = FeatureDims(student_dim, teacher_dim)
        losses, weights = {}, {}
        for term, spec in config.items():
            loss, weight, options = _term(term, spec)
            built = build_loss(loss, options, dims)  # validates names and options even at weight 0
            if weight > 0:
                losses[term], weights[term] = built, weight
        return cls(losses, weights, gather=gather)

    @classmethod
    def named(cls, name: str, **kwargs: Any) -> Recipe:
        """A shipped recipe by name: ``none``, ``clip_kd``, ``fd``, ``whitened_fd``, ``geometry``, ``dense``."""
        return cls.from_config(name, **kwargs)

    @property
    def needs_teacher(self) -> bool:
        return any(loss.needs_teacher for loss in self.losses.values())

    @property
    def required_fields(self) -> set[str]:
        """Batch fields beyond the features that some term reads (:meth:`DistillLoss.required_fields`)."""
        return {name for loss in self.losses.values() for name in loss.required_fields()}

    @property
    def needs_online_teacher(self) -> bool:
        """Whether some term needs the teacher's forward on the step's own inputs."""
        return any(loss.needs_online_teacher for loss in self.losses.values())

    @property
    def wants_gather(self) -> bool:
        """Whether some term compares items across the batch (``DistillLoss.batch_dependent``:
        contrastive, relational, batch statistics), so that under torch.distributed its value on
        each rank's local batch differs from its value on the global batch."""
        return any(loss.batch_dependent for loss in self.losses.values())

    def clamp_logit_scales_(self) -> None:
        """Clamp the learned logit scales of every term into CLIP's range [1, 100], in place;
        call after each optimizer step (:mod:`lakd.distill.scale`)."""
        for loss in self.losses.values():
            loss.clamp_logit_scales_()

    def forward(self, batch: DistillBatch) -> RecipeOutput:
        if self.needs_teacher and not batch.has_teacher:
            needing = [term for term, loss in self.losses.items() if loss.needs_teacher]
            raise LakdError(
                f"recipe: terms {', '.join(needing)} need teacher features, which the batch lacks"
            )
        if self.gather:
            batch = batch.gathered()
        terms = {term: loss(batch) for term, loss in self.losses.items()}
        total = sum(self.weights[term] * value for term, value in terms.items())
        return RecipeOutput(total=total, terms=terms, weights=dict(self.weights))

    def extra_repr(self) -> str:
        return " + ".join(f"{weight:g} * {term}" for term, weight in self.weights.items())
