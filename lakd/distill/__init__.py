"""Distillation objectives for CLIP students: losses (one module per family), registry, recipes.

Every loss takes one :class:`DistillBatch` and returns a scalar; a :class:`Recipe` is a weighted
sum of losses named in config, e.g. ``Recipe.from_config({"clip": 1, "fd": 1})`` or
``Recipe.named("clip_kd")``. Definitions, options and the fixes to [KD]'s reference code:
docs/losses.md; the geometry statistics shared with :mod:`lakd.analysis`: docs/metrics.md.

A trainer calls ``recipe.clamp_logit_scales_()`` after each optimizer step, and under
torch.distributed builds the recipe with ``gather=None`` (the default: gathers features across
ranks when ``recipe.wants_gather``) or an explicit ``gather``.

Families: :mod:`~lakd.distill.contrastive` (clip, icl, afd), :mod:`~lakd.distill.logits` (crd,
gd), :mod:`~lakd.distill.feature` (fd, fd_clipkd, mfd, whitened_fd), :mod:`~lakd.distill.geometry`
(conformity, shell, gap), :mod:`~lakd.distill.relational` (relational, rise_relative),
:mod:`~lakd.distill.dense` (dense: token-by-patch maps, needs an online teacher);
learned logit scales: :mod:`~lakd.distill.scale`.
"""

from lakd.distill import contrastive, dense, feature, geometry, logits, relational  # noqa: F401  (register losses)
from lakd.distill.batch import MODALITIES, DistillBatch
from lakd.distill.contrastive import infonce, infonce_gradients
from lakd.distill.dense import DenseFeatures, encode_dense
from lakd.distill.heads import ProjectionHeads, StudentWithHeads, load_student_with_heads
from lakd.distill.recipe import NAMED_RECIPES, Recipe, RecipeOutput, available_recipes
from lakd.distill.registry import DistillLoss, FeatureDims, available_losses, build_loss, register_loss

__all__ = [
    "MODALITIES",
    "NAMED_RECIPES",
    "DenseFeatures",
    "DistillBatch",
    "DistillLoss",
    "FeatureDims",
    "ProjectionHeads",
    "Recipe",
    "RecipeOutput",
    "StudentWithHeads",
    "available_losses",
    "available_recipes",
    "build_loss",
    "encode_dense",
    "infonce",
    "infonce_gradients",
    "load_student_with_heads",
    "register_loss",
]
