"""Modality gap and cone effect [MG].

[MG] Liang et al., "Mind the Gap: Understanding the Modality Gap in Multi-modal Contrastive
Representation Learning", NeurIPS 2022. The gap vector is Delta = mean(x_hat_img) - mean(x_hat_txt)
on L2-normalised embeddings (||Delta|| about 0.82 for CLIP on COCO); the raw-space gap is
||mu_img - mu_txt|| on raw embeddings. The cone effect is the mean pairwise cosine within one
modality, computed exactly in O(N d) from the mean of the normalised vectors.
:func:`gap_vector_torch` is the differentiable gap, shared with the ``gap`` distillation loss.
"""

from __future__ import annotations

import numpy as np
import torch

from lakd.analysis.ellipsoid import mean_cosine
from lakd.analysis.inputs import (
    ArrayLike,
    as_float64,
    as_tensor,
    normalise_rows,
    require_rows,
    require_same_dim,
)
from lakd.errors import LakdError


def cone_effect_from_mean(normalised_mean: np.ndarray, n: int) -> float:
    """Mean over pairs j != k of cos(x_j, x_k) = (N ||m||^2 - 1) / (N - 1), m = mean of unit rows."""
    require_rows(n, 2, "cone effect", "a pairwise mean")
    return float((n * normalised_mean @ normalised_mean - 1.0) / (n - 1))


def cone_effect(x: ArrayLike, *, name: str = "embeddings") -> float:
    """Mean pairwise cosine (j != k) within one modality of raw embeddings [N, d], in O(N d) [MG]."""
    x_hat = normalise_rows(as_float64(x, name), name)
    return cone_effect_from_mean(x_hat.mean(axis=0), len(x_hat))


def gap_vector_torch(image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """mean(image) - mean(text) [d] of the rows given ([N, d] and [M, d]), differentiable [MG].

    On L2-normalised rows this is the gap vector Delta; on raw rows it is the raw-space gap
    mu_img - mu_txt. The definition behind :func:`gap_vector`, :func:`modality_gap` and the
    ``gap`` distillation loss.
    """
    return image.mean(dim=0) - text.mean(dim=0)


def gap_from_means(
    image_normalised_mean: np.ndarray,
    text_normalised_mean: np.ndarray,
    image_mean: np.ndarray,
    text_mean: np.ndarray,
) -> dict:
    """Gap metrics from per-modality means of normalised rows and of raw rows (all [d]): the
    streaming form of :func:`modality_gap`'s ``gap_norm`` and ``raw_gap_norm``."""
    return {
        "gap_norm": float(np.linalg.norm(image_normalised_mean - text_normalised_mean)),
        "raw_gap_norm": float(np.linalg.norm(image_mean - text_mean)),
    }


def modality_gap(image: ArrayLike, text: ArrayLike) -> dict:
    """Modality gap between raw image [N, d] and text [M, d] embeddings [MG].

    ``gap_norm`` = ||mean(x_hat_img) - mean(x_hat_txt)|| (normalised vectors), ``raw_gap_norm`` =
    ||mu_img - mu_txt|| (raw vectors), both by :func:`gap_vector_torch` in float64,
    ``mean_cosine`` = cos(mu_img, mu_txt), and the cone effect (mean pairwise cosine) of each
    modality.
    """
    image, text = as_float64(image, "image"), as_float64(text, "text")
    require_same_dim(image, text, "image", "text")
    image_hat, text_hat = normalise_rows(image, "image"), normalise_rows(text, "text")
    return {
        "gap_norm": float(gap_vector_torch(as_tensor(image_hat), as_tensor(text_hat)).norm()),
        "raw_gap_norm": float(gap_vector_torch(as_tensor(image), as_tensor(text)).norm()),
        "mean_cosine": mean_cosine(image, text),
        "cone_effect_image": cone_effect_from_mean(image_hat.mean(axis=0), len(image_hat)),
        "cone_effect_text": cone_effect_from_mean(text_hat.mean(axis=0), len(text_hat)),
    }


def gap_vector(image: ArrayLike, text: ArrayLike) -> np.ndarray:
    """Delta = mean(x_hat_img) - mean(x_hat_txt) [d] from raw embeddings [MG], float64
    (:func:`gap_vector_torch` on the normalised rows)."""
    image, text = as_float64(image, "image"), as_float64(text, "text")
    require_same_dim(image, text, "image", "text")
    image_hat, text_hat = normalise_rows(image, "image"), normalise_rows(text, "text")
    return gap_vector_torch(as_tensor(image_hat), as_tensor(text_hat)).numpy()


def gap_shift(image: ArrayLike, text: ArrayLike, delta: ArrayLike, amount: float):
    """Close (amount > 0) or widen the gap [MG]: x' = normalise(x_hat - amount Delta),
    y' = normalise(y_hat + amount Delta), on L2-normalised rows (raw inputs are normalised first,
    since Delta lives among normalised vectors). ``amount = 0.5`` moves both means to their
    midpoint before re-normalisation. Torch inputs give torch outputs (differentiable, same dtype
    and device); arrays give float64 arrays (the same computation, on float64 tensors)."""
    if not isinstance(image, torch.Tensor):
        image = normalise_rows(as_float64(image, "image"), "image")
        text = normalise_rows(as_float64(text, "text"), "text")
        delta = as_tensor(np.asarray(delta, dtype=np.float64))
        shifted = [y.numpy() for y in gap_shift(as_tensor(image), as_tensor(text), delta, amount)]
        for y, name in zip(shifted, ("shifted image", "shifted text"), strict=True):
            normalise_rows(y, name)  # a row moved onto the origin has no direction: LakdError
        return tuple(shifted)
    delta = torch.as_tensor(delta, dtype=image.dtype, device=image.device)
    if image.shape[-1] != delta.shape[-1] or text.shape[-1] != delta.shape[-1]:
        raise LakdError(f"gap shift: Delta has dimension {delta.shape[-1]}, embeddings {image.shape[-1]}")
    normalize = torch.nn.functional.normalize
    return (
        normalize(normalize(image, dim=-1) - amount * delta, dim=-1),
        normalize(normalize(text, dim=-1) + amount * delta, dim=-1),
    )
