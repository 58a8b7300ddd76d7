"""The metric groups of ``analyze``, as registries: name -> function of the streamed modalities.

Per modality (:data:`MODALITY_GROUPS`): ellipsoid, shell, conformity, whitening, normality.
Per modality pair (:data:`PAIR_GROUPS`): ellipsoid (mean cosine), gap, conformity (cross), separability.
Against a reference model (:data:`ALIGNMENT_METRICS`, :func:`alignment_group`). Each :class:`Group`
says which of its fields come from the seeded sample and how many sampled rows it needs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from lakd.analysis import alignment
from lakd.analysis.conformity import conformity_fit, histogram_kl
from lakd.analysis.ellipsoid import mean_cosine, offset_ratio, spectrum, tilt
from lakd.analysis.gap import cone_effect_from_mean, gap_from_means
from lakd.analysis.moments import numerical_rank
from lakd.analysis.normality import MIN_ROWS as NORMALITY_MIN_ROWS
from lakd.analysis.normality import normality
from lakd.analysis.passes import ModalityData, ReferenceSample
from lakd.analysis.separability import linear_separability
from lakd.analysis.shell import norm_summaries
from lakd.analysis.summary import distribution_stats
from lakd.analysis.whitening import log_likelihood, whiten
from lakd.errors import LakdError

if TYPE_CHECKING:
    from lakd.analysis.analyze import AnalysisConfig


# ---- per-modality groups ---------------------------------------------------------------------


def ellipsoid_group(m: ModalityData, config: AnalysisConfig) -> dict:
    return {
        "mean_norm": float(np.linalg.norm(m.moments.mean)),
        "offset_ratio": offset_ratio(m.moments),
        "spectrum": spectrum(m.moments),
        "tilt": tilt(m.moments),
    }


def shell_group(m: ModalityData, config: AnalysisConfig) -> dict:
    return norm_summaries(
        m.per_item["centred_norm"], m.per_item["norm"], name=m.name, bins=config.histogram_bins
    )


FIT_MIN_ROWS = 3  # a line through two points has no residual: no correlation to report


def conformity_group(m: ModalityData, config: AnalysisConfig) -> dict:
    values = m.per_item["conformity"]
    if len(values) < FIT_MIN_ROWS:
        fit = {"skipped": f"needs at least {FIT_MIN_ROWS} rows, have {len(values)}"}
    else:
        fit = conformity_fit(values, m.per_item["cosine_to_mean"])
    return {
        "distribution": distribution_stats(values, f"{m.name} conformity", bins=config.histogram_bins),
        "fit_vs_cosine_to_mean": fit,
    }


def whitening_group(m: ModalityData, config: AnalysisConfig) -> dict:
    stats = m.whitening(config)
    kept = stats.kept_eigenvalues
    likelihood = log_likelihood(m.sample.rows, stats)
    return {
        "method": stats.method,
        "rank": stats.rank,
        "eps": stats.eps,
        "ridge": stats.ridge,
        "shrinkage": stats.shrinkage,
        "shrinkage_coefficient": stats.shrinkage_coefficient,
        "covariance_numerical_rank": numerical_rank(stats.eigenvalues),
        "regularised_axes": int(np.count_nonzero(stats.eigenvalues[: stats.rank] < stats.ridge)),
        "condition_number": float(kept[0] / kept[-1]),
        "log_det": stats.log_det,
        "log_likelihood_sample_mean": float(likelihood.mean()),
        "log_likelihood_sample_std": float(likelihood.std(ddof=1)) if len(likelihood) > 1 else 0.0,
    }


def normality_group(m: ModalityData, config: AnalysisConfig) -> dict:
    stats = m.whitening(config)
    y = whiten(m.sample.rows, stats)
    return normality(y, dof=stats.rank, qq_coordinates=config.qq_coordinates, seed=config.seed)


# ---- cross-modal groups -----------------------------------------------------------------------


def pair_ellipsoid_group(a: ModalityData, b: ModalityData, config: AnalysisConfig) -> dict:
    cosine = mean_cosine(a.moments, b.moments)
    angle = None if cosine is None else float(np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0))))
    return {"mean_cosine": cosine, "mean_angle_deg": angle}


def pair_gap_group(a: ModalityData, b: ModalityData, config: AnalysisConfig) -> dict:
    result = gap_from_means(a.normalised.mean, b.normalised.mean, a.moments.mean, b.moments.mean)
    result["cone_effect"] = {m.name: cone_effect_from_mean(m.normalised.mean, m.n) for m in (a, b)}
    return result


def pair_conformity_group(a: ModalityData, b: ModalityData, config: AnalysisConfig) -> dict:
    bins = config.histogram_bins
    return {
        f"{a.name}_to_{b.name}": distribution_stats(
            a.per_item[f"cross:{b.name}"], f"{a.name}->{b.name}", bins=bins
        ),
        f"{b.name}_to_{a.name}": distribution_stats(
            b.per_item[f"cross:{a.name}"], f"{b.name}->{a.name}", bins=bins
        ),
        "kl_within_conformity": histogram_kl(a.per_item["conformity"], b.per_item["conformity"], bins=bins),
    }


def pair_separability_group(a: ModalityData, b: ModalityData, config: AnalysisConfig) -> dict:
    return linear_separability(
        a.sample.rows,
        b.sample.rows,
        folds=config.separability_folds,
        seed=config.seed,
        max_coordinates=config.separability_max_coordinates,
        names=(a.name, b.name),
    )


class Group(NamedTuple):
    """A metric group: its function, which of its fields come from the sampled rows ("*": all),
    and how many sampled rows it needs."""

    compute: Callable[..., dict]
    sampled_fields: tuple[str, ...] = ()
    min_sample_rows: Callable[[AnalysisConfig], int] = lambda config: 0


MODALITY_GROUPS: dict[str, Group] = {
    "ellipsoid": Group(ellipsoid_group),
    "shell": Group(shell_group),
    "conformity": Group(conformity_group),
    "whitening": Group(
        whitening_group, ("log_likelihood_sample_mean", "log_likelihood_sample_std"), lambda c: 2
    ),
    "normality": Group(normality_group, ("*",), lambda config: NORMALITY_MIN_ROWS),
}
PAIR_GROUPS: dict[str, Group] = {
    "ellipsoid": Group(pair_ellipsoid_group),
    "gap": Group(pair_gap_group),
    "conformity": Group(pair_conformity_group),
    "separability": Group(pair_separability_group, ("*",), lambda config: config.separability_folds),
}
ALIGNMENT_METRICS: dict[str, Callable[[np.ndarray, np.ndarray, AnalysisConfig], Any]] = {
    "linear_cka": lambda x, y, c: alignment.linear_cka(x, y),
    "knn_overlap": lambda x, y, c: alignment.knn_overlap(x, y, k=c.knn_k),
    "procrustes_residual": lambda x, y, c: alignment.procrustes_residual(x, y),
    "similarity_spearman": lambda x, y, c: alignment.similarity_spearman(
        x, y, sample_size=c.spearman_sample_size, seed=c.seed
    ),
    "retrieval_agreement": lambda x, y, c: alignment.retrieval_agreement(x, y),
}
GROUPS = tuple(dict.fromkeys([*MODALITY_GROUPS, *PAIR_GROUPS, "alignment"]))
PER_ITEM_GROUPS = {"shell", "conformity"}


def alignment_group(
    student: dict[str, ModalityData], reference: dict[str, ReferenceSample], config: AnalysisConfig
) -> dict[str, dict]:
    """Alignment of each modality's sample with the reference's sample of the same items, plus
    cross-modal retrieval agreement for paired modalities."""
    result: dict[str, dict] = {}
    for name, ref in reference.items():
        own = student[name]
        if own.n != ref.n:
            raise LakdError(
                f"reference {name}: {ref.n} rows but the analysed {name} has {own.n}; they must be the same items"
            )
        rows = len(own.sample.indices)
        if rows < config.knn_k + 2:
            result[name] = {"skipped": f"needs at least {config.knn_k + 2} sampled rows, have {rows}"}
            continue
        x, y = own.sample.rows, ref.sample.rows
        result[name] = {metric: fn(x, y, config) for metric, fn in ALIGNMENT_METRICS.items()}
        result[name]["rows"] = rows
    for a, b in config.cross_modal:
        if not all(m in reference for m in (a, b)):
            continue
        key = f"{a}_vs_{b}"
        ref_dims = (reference[a].sample.rows.shape[1], reference[b].sample.rows.shape[1])
        if ref_dims[0] != ref_dims[1]:
            raise LakdError(f"reference {a} has dimension {ref_dims[0]} but reference {b} has {ref_dims[1]}")
        if student[a].n != student[b].n:
            result[key] = {"skipped": f"{a} and {b} have different row counts, so rows are not paired items"}
            continue
        agreement = alignment.retrieval_agreement(
            student[a].sample.rows, reference[a].sample.rows, student[b].sample.rows, reference[b].sample.rows
        )
        result[key] = {"retrieval_agreement": agreement, "rows": len(student[a].sample.indices)}
    return result
