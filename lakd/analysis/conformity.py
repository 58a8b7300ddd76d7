"""Conformity of embeddings within and across modalities [DE].

[DE] Levi & Gilboa, "The Double-Ellipsoid Geometry of CLIP", ICML 2025. Conformity of x_j in a
set of N raw (uncentred) vectors is C(x_j) = mean over k != j of cos(x_j, x_k). With
s = sum_k x_hat_k it equals (x_hat_j . s - 1) / (N - 1): exact, O(N d), no N x N matrix.
:func:`conformity_torch` and :func:`cross_conformity_torch` are the differentiable definitions;
the array functions here wrap them in float64, and the ``conformity`` distillation loss calls them
directly.
[DE] relates it to the modality mean, C ~ a cos(x, mu) + b (they report r = 0.9998); the
coefficients here are always fitted, never taken from the paper (published slopes near 1.46
come from the inverse regression).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import stats

from lakd.analysis.inputs import (
    ArrayLike,
    as_float64,
    as_tensor,
    nearly_constant,
    normalise_rows,
    require_rows,
    require_same_dim,
)


def conformity_torch(
    x_hat: torch.Tensor, normalised_sum: torch.Tensor | None = None, n: int | None = None
) -> torch.Tensor:
    """Conformity [m] of unit rows ``x_hat`` [m, d] within a set of ``n`` unit rows whose sum is
    ``normalised_sum`` [d]: (x_hat_j . s - 1) / (n - 1) [DE]. Without ``normalised_sum`` the set
    is ``x_hat`` itself (exact within-set conformity, n = m >= 2). Differentiable, in the dtype
    and on the device of ``x_hat``; the core of :func:`conformity` and of the ``conformity`` loss.
    """
    if normalised_sum is None:
        normalised_sum, n = x_hat.sum(dim=0), len(x_hat)
    return (x_hat @ normalised_sum - 1.0) / (n - 1)


def cross_conformity_torch(x_hat: torch.Tensor, normalised_mean: torch.Tensor) -> torch.Tensor:
    """Mean cosine [m] of each unit row of ``x_hat`` [m, d] to every row of a set whose unit rows
    have mean ``normalised_mean`` [d]: x_hat_j . mean_k(y_hat_k). Differentiable; the core of
    :func:`cross_conformity` and of the ``conformity`` loss against running means."""
    return x_hat @ normalised_mean


def conformity(x: ArrayLike, *, name: str = "embeddings") -> np.ndarray:
    """Exact per-item conformity [N] of raw embeddings x [N, d] (N >= 2), in O(N d), float64
    (:func:`conformity_torch`)."""
    x_hat = normalise_rows(as_float64(x, name), name)
    require_rows(len(x_hat), 2, name, "conformity")
    return conformity_torch(as_tensor(x_hat)).numpy()


def conformity_given_sum(x_hat: np.ndarray, normalised_sum: np.ndarray, n: int) -> np.ndarray:
    """Conformity [m] of unit rows ``x_hat`` [m, d] (float64 arrays) against a set of ``n`` rows
    whose normalised sum is ``s`` [d]: a chunk or a sample scored against the whole streamed set
    (:func:`conformity_torch`)."""
    return conformity_torch(as_tensor(x_hat), as_tensor(normalised_sum), n).numpy()


def cross_conformity(
    x: ArrayLike, other: ArrayLike, *, name: str = "x", other_name: str = "other"
) -> np.ndarray:
    """Mean cosine [N] of each raw x_j to every row of the other modality's set [M, d]:
    x_hat_j . mean_k(y_hat_k), float64 (:func:`cross_conformity_torch`)."""
    x_hat = normalise_rows(as_float64(x, name), name)
    y_hat = normalise_rows(as_float64(other, other_name), other_name)
    require_same_dim(x_hat, y_hat, name, other_name)
    return cross_conformity_torch(as_tensor(x_hat), as_tensor(y_hat.mean(axis=0))).numpy()


def conformity_fit(conformity_values: np.ndarray, cosine_to_mean: np.ndarray) -> dict:
    """Least-squares fit C ~ slope * cos(x, mu) + intercept (scipy.stats.linregress) with Pearson r.

    Both inputs are per-item [N] cosines. When either is constant up to rounding
    (:func:`~lakd.analysis.inputs.nearly_constant`: a spread of at most 1e-9 of their magnitude, at
    least 1) the fit is undefined and every coefficient is None (with a ``reason``) rather than NaN
    or a correlation of rounding noise.
    """
    c = np.asarray(conformity_values, dtype=np.float64)
    cos = np.asarray(cosine_to_mean, dtype=np.float64)
    require_rows(len(c), 3, "conformity fit", "a regression")
    if nearly_constant(cos) or nearly_constant(c):
        return {"slope": None, "intercept": None, "pearson_r": None, "n": len(c), "reason": "constant input"}
    fit = stats.linregress(cos, c)
    return {
        "slope": float(fit.slope),
        "intercept": float(fit.intercept),
        "pearson_r": float(fit.rvalue),
        "n": len(c),
    }


def cosine_to_vector(x_hat: np.ndarray, vector: np.ndarray) -> np.ndarray:
    """cos(x_j, v) [m] for unit rows ``x_hat`` [m, d] and a vector v [d] (0 when v = 0)."""
    norm = np.linalg.norm(vector)
    return x_hat @ (vector / norm) if norm > 0 else np.zeros(len(x_hat))


def histogram_kl(
    p_values: np.ndarray, q_values: np.ndarray, *, bins: int = 50, pseudo_count: float = 0.5
) -> dict:
    """KL(P || Q) in nats between two 1-D samples through histograms on shared edges [DE].

    Each bin gets ``pseudo_count`` extra counts (Krichevsky-Trofimov) so the divergence stays
    finite when the supports do not overlap; scipy.stats.entropy normalises the counts.
    Returns the divergence, both histograms and the shared edges.
    """
    p_values, q_values = np.asarray(p_values, np.float64), np.asarray(q_values, np.float64)
    edges = np.histogram_bin_edges(np.concatenate([p_values, q_values]), bins=bins)
    p_counts, _ = np.histogram(p_values, bins=edges)
    q_counts, _ = np.histogram(q_values, bins=edges)
    kl = stats.entropy(p_counts + pseudo_count, q_counts + pseudo_count)
    return {
        "kl": float(kl),
        "edges": edges.tolist(),
        "p_counts": p_counts.tolist(),
        "q_counts": q_counts.tolist(),
        "pseudo_count": pseudo_count,
    }
