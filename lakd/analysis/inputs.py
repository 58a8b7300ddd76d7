"""Input handling shared by the metrics: one matrix or a stream of chunks, validated once.

Every metric accepts a torch tensor or a numpy array of shape [N, d]; :class:`ChunkSource`
adds the streaming forms used by :func:`lakd.analysis.analyze` for embedding stores that do not
fit in memory. Arithmetic is float64 throughout; bad input raises :class:`LakdError`. Metrics
that are also distillation losses are defined once in torch (``*_torch`` functions) and run on
the validated float64 input through :func:`as_tensor`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
import torch

from lakd.errors import LakdError

ArrayLike = np.ndarray | torch.Tensor


def as_float64(x: Any, name: str = "embeddings", *, row_offset: int = 0) -> np.ndarray:
    """Return ``x`` as a finite float64 numpy matrix [N, d]; ``name`` is used in error messages."""
    if isinstance(x, torch.Tensor):
        x = x.detach().to(device="cpu", dtype=torch.float64).numpy()
    else:
        try:
            x = np.asarray(x, dtype=np.float64)
        except (TypeError, ValueError) as err:
            raise LakdError(f"{name}: not a numeric matrix ({err})") from None
    if x.ndim != 2:
        raise LakdError(f"{name}: expected a 2-D matrix [N, d], got shape {tuple(x.shape)}")
    if x.shape[1] == 0:
        raise LakdError(f"{name}: embeddings have dimension 0")
    check_finite(x, name, row_offset=row_offset)
    return x


def as_tensor(x: np.ndarray) -> torch.Tensor:
    """A CPU tensor on the memory of the array ``x`` (copied first when ``x`` is read-only), to run
    the torch definitions of the metrics on validated float64 input."""
    return torch.from_numpy(x if x.flags.writeable else x.copy())


def check_finite(x: np.ndarray, name: str, *, row_offset: int = 0) -> None:
    """Raise :class:`LakdError` naming the first row (counted from ``row_offset``) with NaN or Inf."""
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        first = row_offset + int(np.flatnonzero(bad)[0])
        raise LakdError(
            f"{name}: {int(bad.sum())} row(s) contain NaN or Inf (first at row {first}); "
            "drop them before analysis (an embedding store read with `allow_nonfinite` drops them with a count)"
        )


# values whose spread is within this fraction of their magnitude differ only by rounding
CONSTANT_RTOL = 1e-9


def nearly_constant(values: np.ndarray, scale: float = 1.0) -> bool:
    """Whether ``values`` are one value up to rounding: their spread (max - min) is at most
    :data:`CONSTANT_RTOL` times their magnitude, max(|v|), and never less than ``scale`` (the
    natural size of the quantity: 1 for cosines, so cosines that all round to 0 count as constant).
    A fit or rank correlation on such values measures rounding noise."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return True
    magnitude = max(float(np.max(np.abs(values))), scale)
    return float(np.ptp(values)) <= CONSTANT_RTOL * magnitude


def require_rows(n: int, minimum: int, name: str, purpose: str) -> None:
    """Raise :class:`LakdError` unless there are at least ``minimum`` rows."""
    if n < minimum:
        raise LakdError(f"{name}: {purpose} needs at least {minimum} rows, got {n}")


def require_same_dim(a: np.ndarray, b: np.ndarray, name_a: str, name_b: str) -> None:
    """Raise :class:`LakdError` when two matrices live in spaces of different dimension."""
    if a.shape[-1] != b.shape[-1]:
        raise LakdError(
            f"{name_a} has dimension {a.shape[-1]} but {name_b} has {b.shape[-1]}; "
            "cross-modal metrics need one shared embedding space"
        )


def normalise_rows(x: np.ndarray, name: str = "embeddings", *, row_offset: int = 0) -> np.ndarray:
    """Rows divided by their L2 norm; a zero row has no direction and raises :class:`LakdError`."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    zero = norms[:, 0] == 0
    if zero.any():
        first = row_offset + int(np.flatnonzero(zero)[0])
        raise LakdError(
            f"{name}: {int(zero.sum())} row(s) are all zeros (first at row {first}); cosine is undefined"
        )
    return x / norms


class ChunkSource:
    """Embeddings of one modality as a sequence of float64 chunks [n_i, d].

    ``data`` may be a tensor or array [N, d] (cut into ``chunk_size`` rows), a zero-argument
    callable returning an iterable of chunks (e.g. ``lambda: store.iter_chunks("image", 8192)``),
    a re-iterable collection of chunks (e.g. a list), or a one-shot iterator/generator of chunks.
    Only the last can be read once: ``reiterable`` says whether a second pass is possible.
    Chunks are checked for shape, a constant dimension and finite values, and rows are counted
    globally so errors name the offending row.
    """

    def __init__(self, data: Any, name: str, chunk_size: int = 8192):
        if chunk_size < 1:
            raise LakdError(f"chunk_size must be positive, got {chunk_size}")
        self.name = name
        self.chunk_size = chunk_size
        self._matrix: np.ndarray | torch.Tensor | None = None
        self._factory: Callable[[], Iterable[Any]] | None = None
        self._iterator: Iterator[Any] | None = None
        if isinstance(data, (np.ndarray, torch.Tensor)):
            self._matrix = data
        elif callable(data):
            self._factory = data
        elif isinstance(data, Iterable):
            if iter(data) is data:
                self._iterator = data
            else:
                self._factory = lambda: data
        else:
            raise LakdError(
                f"{name}: expected a tensor, an array or an iterable of chunks, got {type(data).__name__}"
            )
        self._consumed = False
        self.dim: int | None = None  # known after the first complete pass
        self.rows: int | None = None

    @property
    def reiterable(self) -> bool:
        return self._iterator is None

    def _raw_chunks(self) -> Iterable[Any]:
        if self._matrix is not None:
            if self._matrix.ndim != 2:
                raise LakdError(
                    f"{self.name}: expected a 2-D matrix [N, d], got shape {tuple(self._matrix.shape)}"
                )
            return (
                self._matrix[i : i + self.chunk_size] for i in range(0, len(self._matrix), self.chunk_size)
            )
        if self._factory is not None:
            return self._factory()
        if self._consumed:
            raise LakdError(f"{self.name}: a one-shot iterator of chunks can only be read once")
        self._consumed = True
        return self._iterator

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(row_offset, chunk)`` pairs with float64, finite chunks of one dimension; a later
        pass must see the same dimension and row count as the first."""
        offset, dim = 0, self.dim
        for raw in self._raw_chunks():
            chunk = as_float64(raw, self.name, row_offset=offset)
            if dim is None:
                dim = chunk.shape[1]
            elif chunk.shape[1] != dim:
                raise LakdError(
                    f"{self.name}: chunk at row {offset} has dimension {chunk.shape[1]}, expected {dim}"
                )
            if len(chunk):
                yield offset, chunk
            offset += len(chunk)
        if offset == 0:
            raise LakdError(f"{self.name}: no embeddings (0 rows)")
        if self.rows is not None and offset != self.rows:
            raise LakdError(
                f"{self.name}: {offset} rows on this pass but {self.rows} on the first; the data changed"
            )
        self.dim, self.rows = dim, offset
