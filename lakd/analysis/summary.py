"""Summaries of per-item scalars (norms, conformity values): moments, quantiles, histograms.

:func:`coefficient_of_variation_torch` is the one definition of the CV, shared with the ``shell``
distillation loss (thin-shell CVs of ||x - mu|| and ||x|| [DE]).
"""

from __future__ import annotations

import numpy as np
import torch

from lakd.analysis.inputs import as_tensor, require_rows

QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)


def histogram(values: np.ndarray, bins: int = 50, value_range: tuple[float, float] | None = None) -> dict:
    """``{"edges": [bins + 1], "counts": [bins]}`` from ``numpy.histogram``.

    Values that are (nearly) all equal, whose span is too small to cut into ``bins`` float bins,
    are binned on a small range centred on them (+-1e-6 of their magnitude) instead of failing.
    """
    if value_range is None and len(values):
        low, high = float(np.min(values)), float(np.max(values))
        scale = max(abs(low), abs(high), 1.0)
        if high - low <= 1e-9 * scale:
            middle = 0.5 * (low + high)
            value_range = (middle - 1e-6 * scale, middle + 1e-6 * scale)
    counts, edges = np.histogram(values, bins=bins, range=value_range)
    return {"edges": edges.tolist(), "counts": counts.tolist()}


def coefficient_of_variation_torch(values: torch.Tensor, floor: float = 0.0) -> torch.Tensor:
    """sqrt(var + floor * mean^2) / mean of values [N] (N >= 2, unbiased variance), differentiable.

    ``floor`` = 0 is the plain CV = std / mean reported by :func:`distribution_stats`; a positive
    floor (plus the dtype's smallest normal number, for values that are all 0) keeps the gradient
    finite where all values are equal (the ``shell`` loss).
    """
    mean = values.mean()
    spread = values.var() + floor * mean.pow(2)
    if floor > 0:
        spread = spread + torch.finfo(values.dtype).tiny
    return spread.sqrt() / mean


def distribution_stats(values: np.ndarray, name: str, *, bins: int = 50, quantiles=QUANTILES) -> dict:
    """Mean, unbiased variance, E^2/Var, CV = std/mean, min, max, quantiles and a histogram of
    1-D ``values`` (N >= 2). Ratios whose denominator is 0 are None, never NaN or Inf."""
    values = np.asarray(values, dtype=np.float64)
    require_rows(len(values), 2, name, "a variance")
    mean, var = float(values.mean()), float(values.var(ddof=1))
    return {
        "n": len(values),
        "mean": mean,
        "var": var,
        "mean_sq_over_var": mean**2 / var if var > 0 else None,
        "cv": float(coefficient_of_variation_torch(as_tensor(values))) if mean != 0 else None,
        "min": float(values.min()),
        "max": float(values.max()),
        "quantiles": {
            f"q{round(q * 100):02d}": float(v)
            for q, v in zip(quantiles, np.quantile(values, quantiles), strict=True)
        },
        "histogram": histogram(values, bins),
    }
