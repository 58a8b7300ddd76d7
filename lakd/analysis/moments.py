"""Streaming first and second moments, and a seeded reservoir sample of rows.

:class:`Moments` accumulates the mean and the centred scatter matrix of a stream of chunks in
float64 with Chan et al.'s pairwise update (each chunk is centred on its own mean before the
outer product, so large offsets such as CLIP's ||mu|| ~ sqrt(tr Sigma) lose no precision). Two
accumulators merge exactly, so shards and torch.distributed ranks combine into the statistics of
the union. :class:`ReservoirSample` keeps a uniform random subset of rows for metrics that need
rows (normality tests, CKA, k-NN, separability).
"""

from __future__ import annotations

import numpy as np
import torch

from lakd.analysis.inputs import ArrayLike, as_float64, require_rows
from lakd.errors import LakdError


def sorted_eigh(covariance: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (descending, rounding negatives clipped to 0) and eigenvectors (columns) of a
    symmetric matrix, via ``numpy.linalg.eigh`` (never ``eig``)."""
    values, vectors = np.linalg.eigh(covariance)
    return np.clip(values[::-1], 0.0, None), vectors[:, ::-1]


def numerical_rank(eigenvalues: np.ndarray) -> int:
    """Number of eigenvalues above max * d * float64 epsilon (numpy's matrix_rank tolerance)."""
    tol = eigenvalues.max(initial=0.0) * len(eigenvalues) * np.finfo(np.float64).eps
    return int(np.count_nonzero(eigenvalues > tol))


class Moments:
    """Count, mean [d] and centred scatter M2 = sum (x - mean)(x - mean)^T [d, d] of raw rows.

    ``covariance=False`` tracks the mean only (used for means of normalised vectors).
    Feed chunks with :meth:`update`; combine accumulators with :meth:`merge` or, across
    torch.distributed ranks, :meth:`all_reduce`.
    """

    def __init__(self, dim: int | None = None, *, covariance: bool = True, name: str = "embeddings"):
        self.name = name
        self.track_covariance = covariance
        self.n = 0
        self.dim = dim
        self.mean = None if dim is None else np.zeros(dim)
        self.m2 = None if dim is None or not covariance else np.zeros((dim, dim))
        self._eigh: tuple[np.ndarray, np.ndarray] | None = None

    @classmethod
    def from_array(cls, x: ArrayLike, *, covariance: bool = True, name: str = "embeddings") -> Moments:
        """Moments of a whole matrix [N, d] (raw rows)."""
        return cls(covariance=covariance, name=name).update(x)

    def _init_dim(self, dim: int) -> None:
        if self.dim is None:
            self.dim = dim
            self.mean = np.zeros(dim)
            self.m2 = np.zeros((dim, dim)) if self.track_covariance else None
        elif dim != self.dim:
            raise LakdError(
                f"{self.name}: rows of dimension {dim} cannot join moments of dimension {self.dim}"
            )

    def update(self, chunk: ArrayLike) -> Moments:
        """Add the rows of ``chunk`` [n, d]; returns ``self``."""
        x = as_float64(chunk, self.name, row_offset=self.n)
        if len(x) == 0:
            return self
        chunk_mean = x.mean(axis=0)
        centred = x - chunk_mean
        chunk_m2 = centred.T @ centred if self.track_covariance else None
        self._combine(len(x), chunk_mean, chunk_m2)
        return self

    def _combine(self, n_b: int, mean_b: np.ndarray, m2_b: np.ndarray | None) -> None:
        self._init_dim(len(mean_b))
        self._eigh = None
        n_a = self.n
        n = n_a + n_b
        if n_b == 0:
            return
        delta = mean_b - self.mean
        self.mean = self.mean + delta * (n_b / n)
        if self.track_covariance:
            self.m2 = self.m2 + m2_b + np.outer(delta, delta) * (n_a * n_b / n)
        self.n = n

    def merge(self, other: Moments) -> Moments:
        """Fold ``other`` into ``self`` (Chan's parallel update); returns ``self``."""
        if self.track_covariance and not other.track_covariance:
            raise LakdError(f"{self.name}: cannot merge mean-only moments into moments with covariance")
        if other.n:
            self._combine(other.n, other.mean, other.m2 if self.track_covariance else None)
        return self

    def all_reduce(self, group=None, device: torch.device | str | None = None) -> Moments:
        """Replace ``self`` by the moments of the union over all torch.distributed ranks.

        Two all-reduce sums: first (n, n * mean) gives the global mean g; then each rank adds
        M2_r + n_r (mean_r - g)(mean_r - g)^T, whose sum over ranks is exactly the global M2.
        Every rank must call this with the same dimension; a rank with no rows contributes zeros.
        ``device``: where the float64 buffers are reduced (default: the current CUDA device under
        NCCL, else CPU, as gloo wants).
        """
        import torch.distributed as dist

        if self.dim is None:
            raise LakdError(
                f"{self.name}: all_reduce needs the dimension; create Moments(dim=...) on empty ranks"
            )
        if device is None:
            nccl = dist.get_backend(group) == "nccl"
            device = torch.device("cuda", torch.cuda.current_device()) if nccl else torch.device("cpu")

        def summed(values: np.ndarray) -> np.ndarray:
            buffer = torch.from_numpy(values).to(device)
            dist.all_reduce(buffer, op=dist.ReduceOp.SUM, group=group)
            return buffer.cpu().numpy()

        head = summed(np.concatenate([[float(self.n)], self.mean * self.n]))
        total = int(round(head[0]))
        if total == 0:
            return self
        global_mean = head[1:] / total
        if self.track_covariance:
            shift = self.mean - global_mean
            self.m2 = summed(self.m2 + np.outer(shift, shift) * self.n)
        self.n, self.mean, self._eigh = total, global_mean, None
        return self

    @property
    def covariance(self) -> np.ndarray:
        """Unbiased covariance M2 / (N - 1) [d, d]; needs N >= 2."""
        if not self.track_covariance:
            raise LakdError(f"{self.name}: these moments track the mean only")
        require_rows(self.n, 2, self.name, "a covariance")
        return self.m2 / (self.n - 1)

    def eigh(self) -> tuple[np.ndarray, np.ndarray]:
        """:func:`sorted_eigh` of the covariance, cached until the moments change (spectrum, tilt
        and whitening all need it)."""
        if self._eigh is None:
            self._eigh = sorted_eigh(self.covariance)
        return self._eigh

    @property
    def total_variance(self) -> float:
        """tr Sigma, without forming Sigma."""
        require_rows(self.n, 2, self.name, "a covariance")
        return float(np.trace(self.m2) / (self.n - 1))


class ReservoirSample:
    """Uniform random sample of at most ``size`` rows from a stream (Vitter's algorithm R), seeded.

    Row i (0-based, i >= size) replaces slot floor(u_i * (i + 1)) when that is < size, with
    u_i the i-th double drawn from ``numpy.random.default_rng(seed)``; exactly one draw per row,
    so the chosen indices depend only on (seed, N, size) and not on how the stream is chunked.
    Two streams of the same length sampled with the same seed therefore keep the same items,
    which pairs teacher and student rows. ``indices`` are the original row numbers.
    """

    def __init__(self, size: int, seed: int = 0):
        if size < 1:
            raise LakdError(f"sample size must be positive, got {size}")
        self.size = size
        self.seed = seed
        self.n_seen = 0
        self._rng = np.random.default_rng(seed)
        self._rows: np.ndarray | None = None
        self._indices = np.zeros(0, dtype=np.int64)

    def update(self, chunk: ArrayLike) -> ReservoirSample:
        """Offer the rows of ``chunk`` [n, d]; returns ``self``."""
        x = as_float64(chunk, "sampled rows", row_offset=self.n_seen)
        if self._rows is None:
            self._rows = np.empty((self.size, x.shape[1]))
        start = self.n_seen
        fill = min(max(self.size - start, 0), len(x))
        if fill:
            self._rows[start : start + fill] = x[:fill]
            self._indices = np.concatenate([self._indices, np.arange(start, start + fill)])
        if fill < len(x):
            row_numbers = np.arange(start + fill, start + len(x))
            slots = np.floor(self._rng.random(len(row_numbers)) * (row_numbers + 1)).astype(np.int64)
            keep = slots < self.size
            slots, rows = slots[keep], np.flatnonzero(keep) + fill
            # several rows of one chunk may draw the same slot: the last one wins, as in a row loop
            last_slots, last_pos = np.unique(slots[::-1], return_index=True)
            winners = rows[::-1][last_pos]
            self._rows[last_slots] = x[winners]
            self._indices[last_slots] = start + winners
        self.n_seen += len(x)
        return self

    @property
    def indices(self) -> np.ndarray:
        """Original row numbers of the sampled rows, ascending [m]."""
        return np.sort(self._indices)

    @property
    def rows(self) -> np.ndarray:
        """Sampled rows in ascending order of their original row number [m, d]."""
        if self._rows is None:
            raise LakdError("sample is empty: no rows were offered")
        order = np.argsort(self._indices)
        return self._rows[: len(self._indices)][order]
