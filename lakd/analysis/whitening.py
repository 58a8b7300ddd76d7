"""Whitening of one modality and the Gaussian likelihood it implies [WC].

[WC] Betser, Levi & Gilboa, "Whitened CLIP as a Likelihood Surrogate of Images and Captions",
ICML 2025 (arXiv 2505.06934). Fit on raw embeddings: mu and Sigma in float64, Sigma = V Lambda V^T
by ``numpy.linalg.eigh`` (Sigma is symmetric), then PCA W = V Lambda^(-1/2) or ZCA
W = V Lambda^(-1/2) V^T, and y = (x - mu) W. ||y||^2 ~ chi-square(k), so
log p(x) = -1/2 (k log 2 pi + ||y||^2) + log|det W|.

Differences from [WC]'s released code, on purpose: it uses ``eig`` (general, not symmetric) and no
regularisation, which yields complex round-off, non-orthonormal eigenvectors and condition numbers
~1e9 on nearly singular covariances. Here: ``eigh`` always; a ridge ``eps * mean(lambda)`` (relative,
so it is scale-free) added to every kept eigenvalue; optional Ledoit-Wolf / OAS shrinkage
(scikit-learn) and truncation to the top ``rank`` axes. A covariance that is singular after all
of that (eps = 0 with N <= d, constant or duplicated coordinates) is refused with a LakdError.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import sklearn.covariance
import torch
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from lakd import __version__
from lakd.analysis.inputs import ArrayLike, ChunkSource, as_float64
from lakd.analysis.moments import Moments, ReservoirSample, numerical_rank, sorted_eigh
from lakd.errors import LakdError
from lakd.io import atomic_paths, file_sha256, writing

FORMAT = "lakd-whitening/1"


def _pca(vectors: np.ndarray, inverse_sqrt: np.ndarray) -> np.ndarray:
    return vectors * inverse_sqrt  # [d, k]: y coordinates along the principal axes


def _zca(vectors: np.ndarray, inverse_sqrt: np.ndarray) -> np.ndarray:
    return (vectors * inverse_sqrt) @ vectors.T  # [d, d], symmetric: y stays closest to x - mu


WHITENING_METHODS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {"pca": _pca, "zca": _zca}

# shrinkage intensity in [0, 1] estimated from rows (scikit-learn); applied as
# (1 - a) Sigma + a tr(Sigma)/d I by sklearn.covariance.shrunk_covariance
SHRINKAGE_ESTIMATORS: dict[str, Callable[[np.ndarray], float]] = {
    "ledoit_wolf": lambda rows: float(sklearn.covariance.ledoit_wolf_shrinkage(rows)),
    "oas": lambda rows: float(sklearn.covariance.oas(rows)[1]),
}


def _choice(value: str | None, choices: dict, field: str) -> None:
    if value is not None and value not in choices:
        raise LakdError(f"{field}: unknown value {value!r} (choose from {', '.join(sorted(choices))})")


@dataclass
class WhiteningStats:
    """A fitted whitening: y = (x - mu) @ W.

    mu [d] raw mean; W [d, k] (PCA, k = rank) or [d, d] (ZCA); eigenvalues [d] of the covariance
    (after shrinkage, before the ridge), descending; n rows it was fitted on; ``eps`` the relative
    ridge and ``ridge`` = eps * mean(eigenvalues) the absolute value added to each kept eigenvalue;
    ``shrinkage`` the estimator name and ``shrinkage_coefficient`` its intensity; ``rank`` = k the
    number of kept axes; ``source`` a free description of the data (e.g. an embedding store path).
    """

    mu: np.ndarray
    W: np.ndarray
    eigenvalues: np.ndarray
    n: int
    method: str
    eps: float
    ridge: float
    shrinkage: str | None
    shrinkage_coefficient: float | None
    rank: int
    source: str | None = None

    @property
    def dim(self) -> int:
        return len(self.mu)

    @property
    def kept_eigenvalues(self) -> np.ndarray:
        """The k eigenvalues W whitens by, ridge included [k]."""
        return self.eigenvalues[: self.rank] + self.ridge

    @property
    def log_det(self) -> float:
        """log of the pseudo-determinant of W on its k kept axes = -1/2 sum log(lambda_i + ridge)."""
        return float(-0.5 * np.log(self.kept_eigenvalues).sum())

    def metadata(self) -> dict[str, Any]:
        """The JSON sidecar contents (everything but the arrays)."""
        return {
            "format": FORMAT,
            "lakd_version": __version__,
            "dim": self.dim,
            "method": self.method,
            "n": self.n,
            "eps": self.eps,
            "ridge": self.ridge,
            "shrinkage": self.shrinkage,
            "shrinkage_coefficient": self.shrinkage_coefficient,
            "rank": self.rank,
            "source": self.source,
        }

    def save(self, path: str | Path) -> Path:
        """Write ``path`` (.safetensors: mu, W, eigenvalues as float64) and the JSON sidecar beside it
        (same name, .json) holding the settings and the SHA-256 of the tensor file; both atomic."""
        path = Path(path)
        if path.suffix != ".safetensors":
            raise LakdError(f"{path}: whitening statistics are saved as a .safetensors file")
        with atomic_paths(path, sidecar_path(path)) as (tmp, sidecar_tmp):
            self._write(tmp, sidecar_tmp)
        return path

    def _write(self, tensor_file: Path, sidecar_file: Path) -> None:
        """The tensor file and its sidecar, at the (temporary) names given."""
        tensors = {"mu": self.mu, "W": self.W, "eigenvalues": self.eigenvalues}
        with writing(tensor_file):
            save_file({k: np.ascontiguousarray(v, dtype=np.float64) for k, v in tensors.items()}, tensor_file)
        sidecar = {**self.metadata(), "tensors_sha256": file_sha256(tensor_file)}
        with writing(sidecar_file):
            sidecar_file.write_text(json.dumps(sidecar, indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> WhiteningStats:
        """Read statistics written by :meth:`save`; any problem is a one-line LakdError naming the file."""
        path, sidecar = Path(path), sidecar_path(Path(path))
        if not path.is_file():
            raise LakdError(
                f"{path}: whitening file not found" + (" (it is a directory)" if path.is_dir() else "")
            )
        if not sidecar.is_file():
            raise LakdError(f"{sidecar}: missing JSON sidecar of {path.name}")
        try:
            meta = json.loads(sidecar.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise LakdError(f"{sidecar}: not valid JSON ({err})") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise LakdError(f"{sidecar}: not a lakd whitening sidecar (expected format {FORMAT!r})")
        try:
            tensors = load_file(path)
        except (SafetensorError, OSError, ValueError) as err:
            raise LakdError(f"{path}: not a readable safetensors file ({err})") from None
        if file_sha256(path) != meta.get("tensors_sha256"):
            raise LakdError(f"{path}: contents do not match {sidecar.name} (file replaced or half-written)")
        return cls._from_parts(path, tensors, meta)

    @classmethod
    def _from_parts(cls, path: Path, tensors: dict[str, np.ndarray], meta: dict) -> WhiteningStats:
        missing = sorted({"mu", "W", "eigenvalues"} - set(tensors))
        if missing:
            raise LakdError(f"{path}: missing tensor(s) {', '.join(missing)}")
        fields = (
            "dim",
            "method",
            "n",
            "eps",
            "ridge",
            "shrinkage",
            "shrinkage_coefficient",
            "rank",
            "source",
        )
        absent = [f for f in fields if f not in meta]
        if absent:
            raise LakdError(f"{sidecar_path(path)}: missing field(s) {', '.join(absent)}")
        _choice(meta["method"], WHITENING_METHODS, f"{sidecar_path(path)}: method")
        _choice(meta["shrinkage"], SHRINKAGE_ESTIMATORS, f"{sidecar_path(path)}: shrinkage")
        mu, w, eigenvalues = (np.asarray(tensors[k], dtype=np.float64) for k in ("mu", "W", "eigenvalues"))
        d, k = meta["dim"], meta["rank"]
        expected_w = (d, d) if meta["method"] == "zca" else (d, k)
        if mu.shape != (d,) or eigenvalues.shape != (d,) or w.shape != expected_w:
            raise LakdError(
                f"{path}: tensor shapes mu {mu.shape}, W {w.shape}, eigenvalues {eigenvalues.shape} "
                f"do not match dim {d}, rank {k}, method {meta['method']}"
            )
        if not all(np.isfinite(a).all() for a in (mu, w, eigenvalues)):
            raise LakdError(f"{path}: tensors contain NaN or Inf")
        return cls(
            mu=mu,
            W=w,
            eigenvalues=eigenvalues,
            n=int(meta["n"]),
            method=meta["method"],
            eps=float(meta["eps"]),
            ridge=float(meta["ridge"]),
            shrinkage=meta["shrinkage"],
            shrinkage_coefficient=meta["shrinkage_coefficient"],
            rank=int(k),
            source=meta["source"],
        )


MODALITIES = ("image", "text")


def stats_path(out: str | Path, modality: str) -> Path:
    """``whiten.safetensors`` -> ``whiten.<modality>.safetensors``: the file of one modality of the
    set named ``out`` (one :class:`WhiteningStats` per modality)."""
    out = Path(out)
    if out.suffix != ".safetensors":
        raise LakdError(f"{out}: whitening statistics are named NAME.safetensors")
    return out.with_name(f"{out.stem}.{modality}.safetensors")


def save_stats_set(out: str | Path, stats: dict[str, WhiteningStats]) -> dict[str, Path]:
    """Save one file per modality under the set name ``out``; returns ``{modality: file}``. Every
    file and sidecar is written under a temporary name before any is renamed, so a full disk leaves
    the previous set whole (never a new image file beside an old text file)."""
    paths = {modality: stats_path(out, modality) for modality in stats}
    with atomic_paths(*(f for path in paths.values() for f in (path, sidecar_path(path)))) as tmps:
        for i, fitted in enumerate(stats.values()):
            fitted._write(tmps[2 * i], tmps[2 * i + 1])
    return paths


def load_stats_set(out: str | Path, modalities: tuple[str, ...] = MODALITIES) -> dict[str, WhiteningStats]:
    """The statistics saved under the set name ``out`` (by :func:`save_stats_set`, ``lakd whiten fit``)."""
    return {modality: WhiteningStats.load(stats_path(out, modality)) for modality in modalities}


def sidecar_path(path: Path) -> Path:
    """``whiten.safetensors`` -> ``whiten.json``."""
    return path.with_suffix(".json")


def _check_settings(method: str, eps: float, shrinkage: str | None) -> None:
    _choice(method, WHITENING_METHODS, "whitening method")
    _choice(shrinkage, SHRINKAGE_ESTIMATORS, "whitening shrinkage")
    if not isinstance(eps, (int, float)) or not math.isfinite(eps) or eps < 0:
        raise LakdError(f"whitening eps must be a finite number >= 0, got {eps!r}")


def fit_whitening(
    data: Any,
    *,
    method: str = "zca",
    eps: float = 1e-6,
    shrinkage: str | None = None,
    rank: int | None = None,
    source: str | None = None,
    sample: ArrayLike | None = None,
    sample_size: int = 10_000,
    seed: int = 0,
    chunk_size: int = 8192,
) -> WhiteningStats:
    """Fit a whitening of raw embeddings [WC].

    ``data``: a tensor/array [N, d], a :class:`Moments`, or chunks in any form
    :class:`~lakd.analysis.inputs.ChunkSource` accepts (streamed once, float64). ``method``: "zca"
    or "pca". ``eps``: relative ridge (ridge = eps * mean eigenvalue). ``shrinkage``: None,
    "ledoit_wolf" or "oas"; scikit-learn estimates the intensity from rows: the matrix itself, or
    for streamed data a seeded reservoir sample of ``sample_size`` rows (or ``sample``). The
    intensity is then applied to the full covariance; a sample smaller than N over-estimates it
    slightly (shrinkage decays like 1/N), which errs on the side of stability. ``rank``: keep the
    top ``rank`` axes (None: all d).
    """
    _check_settings(method, eps, shrinkage)
    if isinstance(data, Moments):
        moments = data
    elif isinstance(data, (np.ndarray, torch.Tensor)):
        rows = as_float64(data, "whitening data")
        moments = Moments.from_array(rows, name="whitening data")
        sample = rows if sample is None else sample
    else:
        moments = Moments(name="whitening data")
        reservoir = ReservoirSample(sample_size, seed) if shrinkage and sample is None else None
        for _, chunk in ChunkSource(data, "whitening data", chunk_size):
            moments.update(chunk)
            if reservoir is not None:
                reservoir.update(chunk)
        sample = reservoir.rows if reservoir is not None else sample
    return whitening_from_moments(
        moments, method=method, eps=eps, shrinkage=shrinkage, rank=rank, source=source, sample=sample
    )


def whitening_from_moments(
    moments: Moments,
    *,
    method: str = "zca",
    eps: float = 1e-6,
    shrinkage: str | None = None,
    rank: int | None = None,
    source: str | None = None,
    sample: ArrayLike | None = None,
) -> WhiteningStats:
    """:func:`fit_whitening` for accumulated moments; ``sample`` rows are needed only for shrinkage."""
    _check_settings(method, eps, shrinkage)
    covariance = moments.covariance
    d = covariance.shape[0]
    coefficient = None
    if shrinkage is not None:
        if sample is None:
            raise LakdError(f"whitening shrinkage {shrinkage!r} needs sample rows to estimate its intensity")
        sample = as_float64(sample, "whitening shrinkage sample")
        if len(sample) < 2:
            raise LakdError(
                f"whitening shrinkage {shrinkage!r} needs at least 2 sample rows, got {len(sample)}"
            )
        coefficient = SHRINKAGE_ESTIMATORS[shrinkage](sample)
        covariance = sklearn.covariance.shrunk_covariance(covariance, shrinkage=coefficient)
    eigenvalues, vectors = sorted_eigh(covariance) if shrinkage is not None else moments.eigh()
    if eigenvalues[0] <= 0:
        raise LakdError(
            f"{moments.name}: all {moments.n} rows are identical (covariance 0); nothing to whiten"
        )
    k = d if rank is None else rank
    if not 1 <= k <= d:
        raise LakdError(f"whitening rank must be between 1 and {d}, got {rank}")
    ridge = eps * float(eigenvalues.mean())
    if ridge == 0 and numerical_rank(eigenvalues) < k:
        raise LakdError(
            f"{moments.name}: covariance is singular (numerical rank {numerical_rank(eigenvalues)} < {k} axes, "
            f"N = {moments.n}, d = {d}); use `eps` > 0, `shrinkage`, or `rank` <= {numerical_rank(eigenvalues)}"
        )
    w = WHITENING_METHODS[method](vectors[:, :k], 1.0 / np.sqrt(eigenvalues[:k] + ridge))
    return WhiteningStats(
        mu=moments.mean.copy(),
        W=w,
        eigenvalues=eigenvalues,
        n=moments.n,
        method=method,
        eps=float(eps),
        ridge=ridge,
        shrinkage=shrinkage,
        shrinkage_coefficient=coefficient,
        rank=k,
        source=source,
    )


def whiten(x: ArrayLike, stats: WhiteningStats) -> ArrayLike:
    """y = (x - mu) @ W for raw embeddings x [N, d] -> [N, k] (PCA) or [N, d] (ZCA) [WC].

    A torch tensor stays a torch tensor (its dtype and device; differentiable), computed in at least
    float32: a float16 or bfloat16 input is whitened in float32 and the result cast back (in half
    precision, y = (x - mu) W loses up to whole units on coordinates of unit scale). Anything else
    becomes a float64 numpy array.
    """
    if isinstance(x, torch.Tensor):
        if x.shape[-1] != stats.dim:
            raise LakdError(f"whitening expects dimension {stats.dim}, got {x.shape[-1]}")
        work = _working_dtype(x.dtype)
        mu = torch.as_tensor(stats.mu, dtype=work, device=x.device)
        y = (x.to(work) - mu) @ torch.as_tensor(stats.W, dtype=work, device=x.device)
        return y.to(x.dtype) if x.dtype.is_floating_point else y  # integer input: float64 out
    x = as_float64(x, "embeddings to whiten")
    if x.shape[1] != stats.dim:
        raise LakdError(f"whitening expects dimension {stats.dim}, got {x.shape[1]}")
    return (x - stats.mu) @ stats.W


def log_likelihood(x: ArrayLike, stats: WhiteningStats, *, include_log_det: bool = True) -> ArrayLike:
    """Gaussian log-density per row [N] of raw embeddings x [N, d] under ``stats`` [WC]:
    -1/2 (k log 2 pi + ||y||^2) + log|det W| with y = whiten(x), k the kept axes.

    ``include_log_det=False`` drops the constant log|det W| as [WC] does; keep it to compare
    likelihoods across different whitenings (e.g. teacher vs student). A float16 / bfloat16 tensor is
    computed in float32 and returned in its own dtype (:func:`whiten`).
    """
    if isinstance(x, torch.Tensor) and _working_dtype(x.dtype) != x.dtype:
        # whitened in float32, and ||y||^2 summed in float32 too: only the result goes back to half
        return log_likelihood(x.to(_working_dtype(x.dtype)), stats, include_log_det=include_log_det).to(x.dtype)
    y = whiten(x, stats)
    constant = -0.5 * stats.rank * math.log(2 * math.pi) + (stats.log_det if include_log_det else 0.0)
    return constant - 0.5 * (y**2).sum(-1)


def _working_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype whitening computes in for a tensor of ``dtype``: at least float32."""
    return torch.promote_types(dtype, torch.float32) if dtype.is_floating_point else torch.float64
