"""Geometry of CLIP embedding spaces: pure functions on tensors/arrays, and :func:`analyze`.

One module per metric family; each function states whether it uses raw, normalised or centred
vectors, its shapes and its source:

- [DE] Levi & Gilboa, "The Double-Ellipsoid Geometry of CLIP", ICML 2025: ``ellipsoid``
  (offset ratio, spectrum, tilt), ``shell``, ``conformity``, ``separability``.
- [MG] Liang et al., "Mind the Gap", NeurIPS 2022: ``gap`` (modality gap, cone effect).
- [WC] Betser, Levi & Gilboa, "Whitened CLIP as a Likelihood Surrogate", ICML 2025: ``whitening``,
  ``normality``.
- Kornblith et al., ICML 2019 (CKA) and standard neighbourhood measures: ``alignment``.

``moments`` streams float64 mean/covariance over chunks (mergeable across shards and ranks) and
keeps a seeded reservoir sample; ``analyze`` runs every group over one or two passes.

Quantities that are also distillation losses (linear CKA, conformity, offset ratio and thin-shell
statistics, modality gap) are defined once in torch, differentiable, as ``*_torch`` functions in
their family's module; the metrics here run them on float64 input and return floats, arrays or
dicts, and :mod:`lakd.distill` calls them on batch tensors (docs/metrics.md).
"""

from lakd.analysis.alignment import (
    knn_overlap,
    linear_cka,
    linear_cka_torch,
    procrustes_residual,
    retrieval_agreement,
    similarity_spearman,
)
from lakd.analysis.analyze import GROUPS, AnalysisConfig, analyze
from lakd.analysis.conformity import (
    conformity,
    conformity_fit,
    conformity_torch,
    cross_conformity,
    cross_conformity_torch,
    histogram_kl,
)
from lakd.analysis.ellipsoid import mean_cosine, offset_ratio, offset_ratio_torch, spectrum, tilt
from lakd.analysis.gap import cone_effect, gap_shift, gap_vector, gap_vector_torch, modality_gap
from lakd.analysis.moments import Moments, ReservoirSample
from lakd.analysis.normality import normality
from lakd.analysis.result import GeometryResult
from lakd.analysis.separability import linear_separability
from lakd.analysis.shell import shell_statistics_torch, thin_shell
from lakd.analysis.whitening import WhiteningStats, fit_whitening, log_likelihood, whiten

__all__ = [
    "GROUPS",
    "AnalysisConfig",
    "GeometryResult",
    "Moments",
    "ReservoirSample",
    "WhiteningStats",
    "analyze",
    "cone_effect",
    "conformity",
    "conformity_fit",
    "conformity_torch",
    "cross_conformity",
    "cross_conformity_torch",
    "fit_whitening",
    "gap_shift",
    "gap_vector",
    "gap_vector_torch",
    "histogram_kl",
    "knn_overlap",
    "linear_cka",
    "linear_cka_torch",
    "linear_separability",
    "log_likelihood",
    "mean_cosine",
    "modality_gap",
    "normality",
    "offset_ratio",
    "offset_ratio_torch",
    "procrustes_residual",
    "retrieval_agreement",
    "shell_statistics_torch",
    "similarity_spearman",
    "spectrum",
    "thin_shell",
    "tilt",
    "whiten",
]
