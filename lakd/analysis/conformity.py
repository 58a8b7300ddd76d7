"""Conformity of embeddings within and across modalities [DE].

[DE] Levi & Gilboa, "The Double-Ellipsoid Geometry of CLIP", ICML 2025. Conformity of x_j in a
set of N raw (uncentred) vectors is C(x_j) = mean over k != j of cos(x_j, x_k). With
s = sum_k x_hat_k it equals (x_hat_j . s - 1) / (N - 1): exact, O(N d), no N x N matrix.
[DE] relates it to the modality mean, C ~ a cos(x, mu) + b (they report r = 0.9998); the
coefficients here are always fitted, never taken from the paper (published slopes near 1.46
come from the inverse regression).
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from lakd.analysis.inputs import ArrayLike, as_float64, normalise_rows, require_rows, require_same_dim


def conformity(x: ArrayLike, *, name: str = "embeddings") -> np.ndarray:
    """Exact per-item conformity [N] of raw embeddings x [N, d] (N >= 2), in O(N d)."""
    x_hat = normalise_rows(as_float64(x, name), name)
    require_rows(len(x_hat), 2, name, "conformity")
    return conformity_given_sum(x_hat, x_hat.sum(axis=0), len(x_hat))


def conformity_given_sum(x_hat: np.ndarray, normalised_sum: np.ndarray, n: int) -> np.ndarray:
    """(x_hat_j . s - 1) / (n - 1) for unit rows ``x_hat`` [m, d] of a set of ``n`` rows whose
    normalised sum is ``s`` [d]: conformity of a chunk or a sample against the whole set."""
    return (x_hat @ normalised_sum - 1.0) / (n - 1)


def cross_conformity(
    x: ArrayLike, other: ArrayLike, *, name: str = "x", other_name: str = "other"
) -> np.ndarray:
    """Mean cosine [N] of each raw x_j to every row of the other modality's set [M, d]:
    x_hat_j . mean_k(y_hat_k)."""
    x_hat = normalise_rows(as_float64(x, name), name)
    y_hat = normalise_rows(as_float64(other, other_name), other_name)
    require_same_dim(x_hat, y_hat, name, other_name)
    return x_hat @ y_hat.mean(axis=0)


def conformity_fit(conformity_values: np.ndarray, cosine_to_mean: np.ndarray) -> dict:
    """Least-squares fit C ~ slope * cos(x, mu) + intercept (scipy.stats.linregress) with Pearson r.

    Both inputs are per-item [N]. When either is constant the fit is undefined and every
    coefficient is None (with a ``reason``) rather than NaN.
    """
    c = np.asarray(conformity_values, dtype=np.float64)
    cos = np.asarray(cosine_to_mean, dtype=np.float64)
    require_rows(len(c), 3, "conformity fit", "a regression")
    if np.ptp(cos) == 0 or np.ptp(c) == 0:
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
