"""Double-ellipsoid geometry of one modality [DE]: offset ratio, covariance spectrum, tilt.

[DE] Levi & Gilboa, "The Double-Ellipsoid Geometry of CLIP", ICML 2025 (arXiv 2411.14517).
Every function takes raw (un-normalised) embeddings [N, d] as a tensor or array, or a
:class:`~lakd.analysis.moments.Moments` already accumulated from a stream.
:func:`offset_ratio_torch` is the differentiable offset ratio that the ``shell`` loss uses.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import stats

from lakd.analysis.inputs import ArrayLike, as_float64, as_tensor, require_rows
from lakd.analysis.moments import Moments, numerical_rank
from lakd.errors import LakdError


def as_moments(x: ArrayLike | Moments, name: str = "embeddings", *, covariance: bool = True) -> Moments:
    """``x`` itself when it is a :class:`Moments`, else the moments of the matrix ``x`` [N, d]."""
    if isinstance(x, Moments):
        return x
    return Moments.from_array(as_float64(x, name), covariance=covariance, name=name)


def _a_point(name: str, n: int) -> LakdError:
    return LakdError(f"{name}: all {n} rows are identical (total variance 0); the ellipsoid is a point")


def _nonzero_total_variance(m: Moments) -> float:
    total = m.total_variance
    if total <= 0:
        raise _a_point(m.name, m.n)
    return total


def offset_ratio_torch(x: torch.Tensor, floor: float | torch.Tensor = 0.0) -> torch.Tensor:
    """sqrt(||mu||^2 + floor) / sqrt(tr Sigma + floor) of raw x [N, d] (N >= 2; unbiased Sigma) [DE].

    The differentiable definition of :func:`offset_ratio`, in the dtype and on the device of
    ``x``; ``floor`` = 0 gives the plain ||mu|| / sqrt(tr Sigma), a positive floor keeps it finite
    on a batch of identical rows (the ``shell`` loss).
    """
    mu = x.mean(dim=0)
    total_variance = (x - mu).pow(2).sum() / (len(x) - 1)
    return (mu.pow(2).sum() + floor).sqrt() / (total_variance + floor).sqrt()


def offset_ratio(x: ArrayLike | Moments, name: str = "embeddings") -> float:
    """||mu|| / sqrt(tr Sigma) of raw embeddings [DE]; near or above 1: the shell misses the origin.

    A matrix [N, d] goes through :func:`offset_ratio_torch` in float64; a :class:`Moments`
    (streamed chunks) gives the same quantity from its mean and scatter matrix.
    """
    if isinstance(x, Moments):
        return float(np.linalg.norm(x.mean) / np.sqrt(_nonzero_total_variance(x)))
    x = as_float64(x, name)
    require_rows(len(x), 2, name, "a covariance")
    if np.ptp(x, axis=0).max() == 0:
        raise _a_point(name, len(x))
    return float(offset_ratio_torch(as_tensor(x)))


def spectrum(x: ArrayLike | Moments, name: str = "embeddings", top: int = 5) -> dict:
    """Eigen-spectrum of the covariance of raw embeddings [DE].

    Returns the descending ``eigenvalues`` [d], ``total_variance`` (trace), ``effective_rank``
    exp(H(lambda / sum lambda)) (scipy entropy, natural log), ``participation_ratio``
    (sum lambda)^2 / sum lambda^2, ``anisotropy`` lambda_1 / mean lambda, ``numerical_rank``,
    ``condition_number`` lambda_1 / lambda_d (None when the covariance is singular, i.e. rank < d,
    as with N <= d, duplicated or constant coordinates) and the ``top`` eigenvalues.
    """
    m = as_moments(x, name)
    _nonzero_total_variance(m)
    eigenvalues, _ = m.eigh()
    total = float(eigenvalues.sum())
    rank = numerical_rank(eigenvalues)
    return {
        "eigenvalues": eigenvalues.tolist(),
        "top": eigenvalues[:top].tolist(),
        "total_variance": total,
        "effective_rank": float(np.exp(stats.entropy(eigenvalues / total))),
        "participation_ratio": float(total**2 / np.sum(eigenvalues**2)),
        "anisotropy": float(eigenvalues[0] / eigenvalues.mean()),
        "numerical_rank": rank,
        "condition_number": float(eigenvalues[0] / eigenvalues[-1]) if rank == len(eigenvalues) else None,
    }


def tilt(x: ArrayLike | Moments, name: str = "embeddings") -> dict:
    """How far the ellipsoid is from axis-aligned, and how its top axis sits relative to mu [DE].

    ``off_diagonal_mass`` = ||Sigma - diag(Sigma)||_F / ||Sigma||_F (0 for axis-aligned);
    ``top_axis_mean_angle_deg`` = angle between the top principal axis and mu, folded into
    [0, 90] because an eigenvector's sign is arbitrary (None when mu = 0). Raw embeddings.
    """
    m = as_moments(x, name)
    _nonzero_total_variance(m)
    covariance = m.covariance
    off_diagonal = covariance - np.diag(np.diag(covariance))
    _, vectors = m.eigh()
    mean_norm = np.linalg.norm(m.mean)
    angle = None
    if mean_norm > 0:
        cosine = min(abs(float(vectors[:, 0] @ m.mean) / mean_norm), 1.0)
        angle = float(np.degrees(np.arccos(cosine)))
    return {
        "off_diagonal_mass": float(np.linalg.norm(off_diagonal) / np.linalg.norm(covariance)),
        "top_axis_mean_angle_deg": angle,
    }


def mean_cosine(a: ArrayLike | Moments, b: ArrayLike | Moments) -> float | None:
    """cos(mu_a, mu_b) between the raw means of two modalities [DE] (None when a mean is 0)."""
    mean_a = as_moments(a, "first modality", covariance=False).mean
    mean_b = as_moments(b, "second modality", covariance=False).mean
    if len(mean_a) != len(mean_b):
        raise LakdError(f"modality means have dimensions {len(mean_a)} and {len(mean_b)}; they must match")
    norms = np.linalg.norm(mean_a) * np.linalg.norm(mean_b)
    return float(mean_a @ mean_b / norms) if norms > 0 else None
