"""Encode a *masked* view of the student's images, for masked feature distillation (MFD).

[KD]'s MFD gives the student a masked image and the teacher the full one; its released code
passes a mask ratio that the vision tower silently ignores. Here the masking is real, chosen by
the type of the student's image tower (``MASKERS``, a registry keyed by tower class):

- open_clip ``VisionTransformer``: patch dropout on the patch tokens (open_clip's own
  ``PatchDropout``, the class token kept), swapped in for the duration of the call: the
  transformer sees 1 + max(1, int(P * (1 - ratio))) tokens instead of 1 + P.
- any other tower (timm CNNs, ``ModifiedResNet``): the documented fallback masks image patches in
  pixel space: the image is cut into a grid of ``cell`` x ``cell`` pixel cells (default: an 8 x 8
  grid) and ``int(ratio * cells)`` random cells per image are set to 0, i.e. to the data mean
  after the usual normalisation. ``fallback="error"`` refuses such towers instead.

Both maskers draw their random numbers from torch's CPU generator (open_clip's ``PatchDropout``
does; the pixel masks are drawn on the CPU too), so a ``seed`` makes the masks reproducible
(:func:`seeded_masks`; the global generator's state outside the call is left untouched).
:func:`mask_seed` derives the seed of one call from a base seed, the rank and a step counter.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import numpy as np
import torch
from open_clip.transformer import PatchDropout, VisionTransformer
from torch import nn

from lakd.errors import LakdError

DEFAULT_GRID = 8


@contextlib.contextmanager
def patch_dropout(visual: VisionTransformer, ratio: float) -> Iterator[None]:
    """Within the block, ``visual`` drops a fraction ``ratio`` of its patch tokens (class token kept)."""
    original = visual.patch_dropout
    visual.patch_dropout = PatchDropout(ratio, exclude_first_token=True).train()
    try:
        yield
    finally:
        visual.patch_dropout = original


def encode_with_patch_dropout(
    model: nn.Module, images: torch.Tensor, ratio: float, cell: int | None
) -> torch.Tensor:
    with patch_dropout(model.visual, ratio):
        return model.encode_image(images, normalize=False)


MASKERS: dict[type, Callable[[nn.Module, torch.Tensor, float, int | None], torch.Tensor]] = {
    VisionTransformer: encode_with_patch_dropout,
}


def mask_pixel_cells(images: torch.Tensor, ratio: float, cell: int | None = None) -> torch.Tensor:
    """Copy of ``images`` [N, C, H, W] with ``int(ratio * cells)`` random cell x cell patches per
    image set to 0 (the grid covers the image; edge cells may be smaller)."""
    height, width = images.shape[-2:]
    cell = cell or max(1, min(height, width) // DEFAULT_GRID)
    rows, cols = -(-height // cell), -(-width // cell)
    cells = rows * cols
    masked_count = int(ratio * cells)
    order = torch.rand(len(images), cells).argsort(dim=1).to(images.device)  # CPU generator: see module doc
    masked = (order < masked_count).view(len(images), 1, rows, cols)
    masked = masked.repeat_interleave(cell, dim=2).repeat_interleave(cell, dim=3)[..., :height, :width]
    return images.masked_fill(masked, 0.0)


def encode_with_pixel_masking(
    model: nn.Module, images: torch.Tensor, ratio: float, cell: int | None
) -> torch.Tensor:
    return model.encode_image(mask_pixel_cells(images, ratio, cell), normalize=False)


def refuse_masking(model: nn.Module, images: torch.Tensor, ratio: float, cell: int | None) -> torch.Tensor:
    raise LakdError(
        f"loss 'mfd': the student's image tower {type(model.visual).__name__} cannot drop patch tokens "
        f"(supported: {', '.join(cls.__name__ for cls in MASKERS)}); "
        "use fallback='pixel' to mask image patches"
    )


FALLBACKS = {"pixel": encode_with_pixel_masking, "error": refuse_masking}


def check_masking(ratio: float, fallback: str, who: str) -> None:
    """LakdError (naming ``who``) unless ``ratio`` is in (0, 1) and ``fallback`` is known."""
    if not 0.0 < ratio < 1.0:
        raise LakdError(f"{who}: mask_ratio must be in (0, 1), got {ratio}")
    if fallback not in FALLBACKS:
        raise LakdError(f"{who}: fallback must be one of {', '.join(FALLBACKS)}, got {fallback!r}")


def mask_seed(base_seed: int, rank: int, step: int) -> int:
    """The seed of the masks of call ``step`` on ``rank``: numpy's ``SeedSequence([base_seed, rank, step])``
    mixed into one 64-bit integer, so nearby bases, ranks and steps give unrelated masks."""
    return int(np.random.SeedSequence([base_seed, rank, step]).generate_state(1, np.uint64)[0])


@contextlib.contextmanager
def seeded_masks(seed: int | None) -> Iterator[None]:
    """Within the block, torch's CPU generator (which draws every mask) starts from ``seed``; its
    state is restored afterwards. ``None``: no-op (masks from the generator as it is)."""
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(seed)
        yield


def encode_masked_images(
    model: nn.Module,
    images: torch.Tensor,
    ratio: float,
    *,
    fallback: str = "pixel",
    cell: int | None = None,
    seed: int | None = None,
) -> torch.Tensor:
    """Raw image features [N, d_s] of ``model`` (an open_clip CLIP) for masked ``images``;
    ``seed`` (optional) fixes the masks (:func:`seeded_masks`)."""
    visual = getattr(model, "visual", None)
    masker = next((MASKERS[cls] for cls in type(visual).__mro__ if cls in MASKERS), FALLBACKS[fallback])
    with seeded_masks(seed):
        return masker(model, images, ratio, cell)
