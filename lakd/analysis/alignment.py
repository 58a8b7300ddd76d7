"""Teacher-student alignment on the same items: CKA, k-NN overlap, Procrustes, similarity
rank correlation, retrieval agreement.

All functions take two raw embedding matrices of the same N items, x [N, d_x] (e.g. student) and
y [N, d_y] (e.g. teacher); the dimensions may differ. Linear CKA [CKA]: Kornblith et al.,
"Similarity of Neural Network Representations Revisited", ICML 2019; :func:`linear_cka_torch` is
its differentiable form, shared with the ``relational`` distillation loss.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import stats
from scipy.spatial import procrustes

from lakd.analysis.inputs import (
    ArrayLike,
    as_float64,
    as_tensor,
    nearly_constant,
    normalise_rows,
    require_rows,
)
from lakd.analysis.ties import agreement, unique_top1
from lakd.errors import LakdError


def _paired(x: ArrayLike, y: ArrayLike, minimum: int, purpose: str) -> tuple[np.ndarray, np.ndarray]:
    x, y = as_float64(x, "student embeddings"), as_float64(y, "reference embeddings")
    if len(x) != len(y):
        raise LakdError(
            f"{purpose}: student has {len(x)} rows but reference has {len(y)}; they must be the same items"
        )
    require_rows(len(x), minimum, "paired embeddings", purpose)
    return x, y


def linear_cka_torch(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Linear CKA of raw x [N, d_x] and y [N, d_y] (tensors), centred inside: the differentiable
    core of :func:`linear_cka`, in the dtype and on the device of the inputs [CKA].

    ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F); a set with zero variance gives 0 (the
    denominator is kept above the dtype's smallest normal number), so a loss never sees 0 / 0.
    """
    xc, yc = x - x.mean(dim=0), y - y.mean(dim=0)
    cross = torch.linalg.matrix_norm(yc.T @ xc).pow(2)
    scale = torch.linalg.matrix_norm(xc.T @ xc) * torch.linalg.matrix_norm(yc.T @ yc)
    return cross / scale.clamp_min(torch.finfo(scale.dtype).tiny)


def linear_cka(x: ArrayLike, y: ArrayLike) -> float:
    """Linear CKA of raw x [N, d_x] and y [N, d_y] (tensors or arrays), centred inside:
    ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F), in [0, 1]; 1 for a rotated or scaled copy.
    Invariant to orthogonal maps and isotropic scaling, not to general linear maps.

    Computed in float64 by :func:`linear_cka_torch`; a set whose rows are all identical (zero
    variance) is a LakdError.
    """
    x, y = _paired(x, y, 2, "linear CKA")
    if np.ptp(x, axis=0).max() == 0 or np.ptp(y, axis=0).max() == 0:
        raise LakdError("linear CKA: one of the two sets has zero variance")
    return float(linear_cka_torch(as_tensor(x), as_tensor(y)))


CHUNK_CELLS = 1 << 22  # scores held at once by the neighbour and top-1 searches (32 MiB of float64)


def _rows_per_chunk(n: int) -> int:
    return max(1, CHUNK_CELLS // max(n, 1))


def nearest_neighbours(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The cosine k-NN of each row among the other rows of raw x [N, d] (N > k): indices [N, k] and
    ``tied`` [N, k], True for a neighbour whose cosine equals that of the best row left out of the
    set (which of the tied rows made the set is arbitrary, so such a neighbour is not known to be
    one: :mod:`lakd.analysis.ties`)."""
    unit = normalise_rows(x)
    n = len(unit)
    indices, tied = np.empty((n, k), dtype=np.int64), np.empty((n, k), dtype=bool)
    step = _rows_per_chunk(n)
    for start in range(0, n, step):
        scores = unit[start : start + step] @ unit.T
        rows = np.arange(scores.shape[0])
        scores[rows, start + rows] = -np.inf  # a row is not its own neighbour
        # positions 0..k-1: the k best (any order); position k: the best of the rest (self when N = k + 1)
        part = np.argpartition(-scores, k, axis=1)[:, : k + 1]
        best_left_out = scores[rows, part[:, k]]
        members = part[:, :k]
        indices[start : start + len(rows)] = members
        tied[start : start + len(rows)] = scores[rows[:, None], members] <= best_left_out[:, None]
    return indices, tied


def knn_overlap(x: ArrayLike, y: ArrayLike, k: int = 10) -> float:
    """Mean Jaccard overlap |A_j & B_j| / |A_j | B_j| of the cosine k-NN sets of item j in x and
    in y (raw inputs, normalised inside; self excluded), averaged over items; 1 = same neighbours.

    Ties count against agreement, as everywhere in lakd (:mod:`lakd.analysis.ties`): a neighbour
    tied with a row left out of the set (equal cosine) is not shared, so two collapsed models, whose
    sets are all ties, overlap 0, not 1."""
    x, y = _paired(x, y, k + 1, f"{k}-NN overlap")
    if k < 1:
        raise LakdError(f"k-NN overlap: k must be positive, got {k}")
    (x_nn, x_tied), (y_nn, y_tied) = nearest_neighbours(x, k), nearest_neighbours(y, k)
    # a tied neighbour becomes a negative number of its own, which matches nothing
    x_nn = np.where(x_tied, -1 - np.arange(k), x_nn)
    y_nn = np.where(y_tied, -1 - k - np.arange(k), y_nn)
    both = np.sort(np.hstack([x_nn, y_nn]), axis=1)
    shared = np.count_nonzero(both[:, 1:] == both[:, :-1], axis=1)
    return float(np.mean(shared / (2 * k - shared)))


def procrustes_residual(x: ArrayLike, y: ArrayLike) -> float:
    """Orthogonal Procrustes disparity of raw x and y after centring and scaling each to unit
    Frobenius norm (scipy.spatial.procrustes): min over rotations R and scale s of ||y - s x R||^2,
    in [0, 1]; 0 for a rotated, scaled and shifted copy.

    When d_x != d_y the smaller is zero-padded to the larger dimension, so R restricted to the
    smaller space is a semi-orthogonal map (an isometric embedding of the smaller space into the
    larger); no learned projection is involved.
    """
    x, y = _paired(x, y, 2, "Procrustes residual")
    dim = max(x.shape[1], y.shape[1])
    x = np.pad(x, ((0, 0), (0, dim - x.shape[1])))
    y = np.pad(y, ((0, 0), (0, dim - y.shape[1])))
    if np.ptp(x, axis=0).max() == 0 or np.ptp(y, axis=0).max() == 0:
        raise LakdError("Procrustes residual: one of the two sets has all rows identical")
    return float(procrustes(y, x)[2])


def _cosine_matrix(x: np.ndarray) -> np.ndarray:
    unit = normalise_rows(x)
    return unit @ unit.T


def similarity_spearman(x: ArrayLike, y: ArrayLike, *, sample_size: int = 1000, seed: int = 0) -> dict:
    """Spearman correlation between the pairwise cosine similarities of the same items in x and y
    (upper triangles), on a seeded random subset of ``sample_size`` items (scipy.stats.spearmanr).
    ``rho`` is None, with a ``reason``, when either set of similarities is constant up to rounding
    (:func:`~lakd.analysis.inputs.nearly_constant`: a spread of at most 1e-9, cosines being of scale 1),
    where a rank correlation would rank rounding noise."""
    x, y = _paired(x, y, 3, "similarity Spearman")
    rows = np.sort(np.random.default_rng(seed).choice(len(x), min(len(x), sample_size), replace=False))
    upper = np.triu_indices(len(rows), k=1)
    a, b = _cosine_matrix(x[rows])[upper], _cosine_matrix(y[rows])[upper]
    result = {"rho": None, "items": len(rows), "pairs": len(a), "seed": seed}
    if nearly_constant(a) or nearly_constant(b):
        return {**result, "reason": "constant input"}
    return {**result, "rho": float(stats.spearmanr(a, b).statistic)}


def top1(query: np.ndarray, gallery: np.ndarray | None = None) -> np.ndarray:
    """Index [N] of the highest-cosine gallery row for each raw query row, or
    :data:`~lakd.analysis.ties.NO_PICK` (-1) when another row ties for it (:mod:`lakd.analysis.ties`);
    with no gallery the query set itself is searched, excluding each row itself."""
    q = normalise_rows(query)
    g = q if gallery is None else normalise_rows(gallery)
    best = np.empty(len(q), dtype=np.int64)
    step = _rows_per_chunk(len(g))
    for start in range(0, len(q), step):
        scores = q[start : start + step] @ g.T
        if gallery is None:
            rows = np.arange(scores.shape[0])
            scores[rows, start + rows] = -np.inf
        best[start : start + step] = unique_top1(torch.from_numpy(scores)).numpy()
    return best


def retrieval_agreement(
    x: ArrayLike, y: ArrayLike, x_gallery: ArrayLike | None = None, y_gallery: ArrayLike | None = None
) -> float:
    """Fraction of queries whose top-1 cosine match is the same item for x (student) and y
    (reference). Without galleries each set retrieves within itself (self excluded); with
    galleries (e.g. the texts of the same items) queries retrieve from them (cross-modal).

    Ties count against agreement (:mod:`lakd.analysis.ties`, the rule of :mod:`lakd.eval`): a query
    whose best match is shared by two or more rows has no pick, and no pick agrees with anything, so
    two collapsed models agree 0, not 1."""
    x, y = _paired(x, y, 2, "retrieval agreement")
    if (x_gallery is None) != (y_gallery is None):
        raise LakdError("retrieval agreement: give galleries for both student and reference, or for neither")
    if x_gallery is not None:
        x_gallery, y_gallery = _paired(x_gallery, y_gallery, 1, "retrieval agreement galleries")
        if x_gallery.shape[1] != x.shape[1] or y_gallery.shape[1] != y.shape[1]:
            raise LakdError("retrieval agreement: galleries must have the dimension of their queries")
    return agreement(torch.from_numpy(top1(x, x_gallery)), torch.from_numpy(top1(y, y_gallery)))
