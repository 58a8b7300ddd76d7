"""Feature distillation: ``fd``, ``fd_clipkd``, ``mfd`` [KD] and ``whitened_fd`` [WC].

All compare L2-normalised student features (projected into the teacher's dim by the heads when
the dims differ) with the teacher's, per modality, summed over image and text.

Scale: ``fd`` is the scale-free per-item form, mean over items of ||s_hat - t_hat||^2 (summed
over dims; equals 2 - 2 cos), so weight 1 is meaningful for any d. ``fd_clipkd`` is [KD]'s
``F.mse_loss``, which also averages over the d dims (fd_clipkd = fd / d); that is why [KD]'s
recipes weight it by 2000. Use it to reproduce published recipes.

Whitened FD maps both into the teacher's whitened space first: y = (x - mu_t) W_t with the
teacher's statistics of that modality (ZCA or PCA, :mod:`lakd.analysis.whitening`; saved by
``lakd whiten fit`` and named by the loss's ``stats`` option, or given in the batch), then
normalises and applies ``fd``. It removes the teacher's offset and anisotropy (the "double
ellipsoid" [DE]) from the target, so the student matches the directions that carry content.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from lakd import distributed
from lakd.analysis.whitening import WhiteningStats, load_stats_set, stats_path, whiten
from lakd.distill.batch import MODALITIES, DistillBatch
from lakd.distill.masking import check_masking, encode_masked_images, mask_seed
from lakd.distill.registry import DistillLoss, FeatureDims, register_loss
from lakd.errors import LakdError


def per_item_squared_distance(a_hat: torch.Tensor, b_hat: torch.Tensor) -> torch.Tensor:
    """Mean over rows of the squared L2 distance, summed over dims [N, d] -> scalar."""
    return (a_hat - b_hat).pow(2).sum(dim=1).mean()


@register_loss("fd")
class FeatureDistillation(DistillLoss):
    """FD, scale-free: sum over modalities of mean_i ||s_hat_i - t_hat_i||^2."""

    batch_dependent = False

    def forward(self, batch: DistillBatch) -> torch.Tensor:
        return sum(
            per_item_squared_distance(batch.projected_hat(m, self.name), batch.teacher_hat(m, self.name))
            for m in MODALITIES
        )


@register_loss("fd_clipkd")
class ClipKDFeatureDistillation(DistillLoss):
    """FD in [KD]'s scale: sum over modalities of MSE(s_hat, t_hat) averaged over N and d."""

    batch_dependent = False

    def forward(self, batch: DistillBatch) -> torch.Tensor:
        return sum(
            F.mse_loss(batch.projected_hat(m, self.name), batch.teacher_hat(m, self.name)) for m in MODALITIES
        )


@register_loss("whitened_fd")
class WhitenedFeatureDistillation(DistillLoss):
    """FD after whitening both student (projected) and teacher raw features with the teacher's
    statistics of each modality, then normalising.

    ``stats``: the name of a saved set, as given to ``lakd whiten fit --out`` (e.g.
    ``emb/whiten.safetensors`` for ``emb/whiten.image.safetensors`` and
    ``emb/whiten.text.safetensors``), read once here by :func:`lakd.analysis.whitening.load_stats_set`.
    Without it the statistics come from ``batch.whitening["image"]`` / ``["text"]``; with it,
    the loss's own statistics are used and ``batch.whitening`` is ignored.
    """

    batch_dependent = False

    def __init__(self, dims: FeatureDims, *, stats: str | Path | None = None):
        super().__init__(dims)
        self.statistics: dict[str, WhiteningStats] | None = None
        if stats is not None:
            self.statistics = load_saved_whitening(stats, dims.teacher)

    def required_fields(self) -> tuple[str, ...]:
        return () if self.statistics else ("whitening",)

    def forward(self, batch: DistillBatch) -> torch.Tensor:
        statistics = self.statistics or batch.require("whitening", self.name)
        total = batch.student_image.new_zeros(())
        for modality in MODALITIES:
            if modality not in statistics:
                raise LakdError(f"loss {self.name!r}: no teacher whitening statistics for {modality!r}")
            stats = statistics[modality]
            student = F.normalize(whiten(batch.projected(modality, self.name), stats), dim=-1)
            teacher = F.normalize(whiten(batch.teacher(modality, self.name), stats), dim=-1)
            total = total + per_item_squared_distance(student, teacher)
        return total


def load_saved_whitening(stats: str | Path, teacher_dim: int | None) -> dict[str, WhiteningStats]:
    """The image and text statistics of the set named ``stats``, checked against ``teacher_dim`` when known."""
    if not isinstance(stats, (str, Path)):
        raise LakdError(f"loss 'whitened_fd': stats must name a saved set (NAME.safetensors), got {stats!r}")
    try:
        statistics = load_stats_set(stats, MODALITIES)
    except LakdError as err:
        raise LakdError(f"loss 'whitened_fd': {err}") from None
    for modality, fitted in statistics.items():
        if teacher_dim is not None and fitted.dim != teacher_dim:
            raise LakdError(
                f"loss 'whitened_fd': {stats_path(stats, modality)} was fitted on dimension {fitted.dim}, "
                f"but the teacher's features have {teacher_dim}"
            )
    return statistics


@register_loss("mfd")
class MaskedFeatureDistillation(DistillLoss):
    """MFD [KD], as an extra term: ``fd`` where the student's image features come from a masked
    view of its images (:mod:`lakd.distill.masking`; the teacher's features are of the full
    image), plus ``fd`` on text. Re-encodes ``batch.images`` with ``batch.student_model`` (one
    extra image-tower pass) and feeds this term only; the other terms of the recipe see the
    student's features of the full images.

    This differs from [KD]'s MFD in two ways. [KD] runs the student once, on masked images, and
    those features feed every term (task, CRD, ICL, FD): that single pass is the trainer's forward,
    ``StudentWithHeads.forward(images, texts, mask_ratio=...)`` (docs/losses.md, "mfd vs
    [KD]'s masked distillation"). And the scale is ``fd``'s (summed over the d_t dims): [KD]'s
    weight 2000 on its per-dim mean corresponds to a weight of 2000 / d_t here.

    ``mask_ratio``: fraction of patches masked, in (0, 1) ([KD] uses 0.75). ``fallback``:
    "pixel" (mask pixel cells for towers without patch tokens) or "error". ``cell``: pixel cell
    size of the fallback (default: an 8 x 8 grid). ``seed``: None draws the masks from torch's
    global generator; an int >= 0 makes them reproducible: call k of this loss on rank r
    (torch.distributed, 0 on one process) masks with ``mask_seed(seed, r, k)``, so ranks and steps
    get different masks and a rerun the same ones. The call counter ``step`` is a buffer: it is
    saved with the recipe's ``state_dict`` and a resumed run continues the sequence.
    """

    batch_fields = ("student_model", "images")

    batch_dependent = False

    def __init__(
        self,
        dims: FeatureDims,
        *,
        mask_ratio: float = 0.75,
        fallback: str = "pixel",
        cell: int | None = None,
        seed: int | None = None,
    ):
        super().__init__(dims)
        check_masking(mask_ratio, fallback, "loss 'mfd'")
        if cell is not None and cell < 1:
            raise LakdError(f"loss 'mfd': cell must be a positive number of pixels, got {cell}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
            raise LakdError(f"loss 'mfd': seed must be an integer >= 0 or None, got {seed!r}")
        self.mask_ratio, self.fallback, self.cell, self.seed = mask_ratio, fallback, cell, seed
        self.register_buffer("step", torch.tensor(0, dtype=torch.int64))

    def next_mask_seed(self) -> int | None:
        """The masks' seed for this call (None without a base ``seed``); advances the call counter."""
        if self.seed is None:
            return None
        seed = mask_seed(self.seed, distributed.rank(), int(self.step))
        self.step += 1
        return seed

    def forward(self, batch: DistillBatch) -> torch.Tensor:
        model = batch.require("student_model", self.name)
        images = batch.require("images", self.name)
        masked = encode_masked_images(
            model, images, self.mask_ratio, fallback=self.fallback, cell=self.cell, seed=self.next_mask_seed()
        )
        masked = batch.gather(batch.project("image", masked, self.name))
        if len(masked) != batch.size:
            raise LakdError(
                f"loss {self.name!r}: {len(masked)} masked images encoded but the batch has "
                f"{batch.size} items"
            )
        image_term = per_item_squared_distance(
            F.normalize(masked, dim=-1), batch.teacher_hat("image", self.name)
        )
        text_term = per_item_squared_distance(
            batch.projected_hat("text", self.name), batch.teacher_hat("text", self.name)
        )
        return image_term + text_term
