"""One entry point: all geometry metrics of a model's embeddings, streamed, in one result.

:func:`analyze` streams each modality once (twice when the source can be re-read; see
:mod:`lakd.analysis.passes`), then runs the metric groups chosen in :class:`AnalysisConfig`
(registries in :mod:`lakd.analysis.groups`) and returns a plain :class:`GeometryResult` that
records which metrics used the seeded sample.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from lakd.analysis.groups import (
    GROUPS,
    MODALITY_GROUPS,
    PAIR_GROUPS,
    PER_ITEM_GROUPS,
    Group,
    alignment_group,
)
from lakd.analysis.passes import Embeddings, ModalityData, first_pass, reference_sample, second_pass
from lakd.analysis.result import GeometryResult
from lakd.analysis.whitening import SHRINKAGE_ESTIMATORS, WHITENING_METHODS
from lakd.errors import LakdError


@dataclass
class AnalysisConfig:
    """Settings of :func:`analyze`.

    ``groups``: metric groups to compute (default: all of ``GROUPS``: ellipsoid, shell,
    conformity, whitening, normality, gap, separability, alignment). ``sample_size`` rows per modality are
    kept by a reservoir sampler seeded with ``seed`` for the metrics that need rows (normality,
    separability, alignment, whitened log-likelihood). ``cross_modal``: modality pairs for gap,
    cross conformity, mean cosine and separability (pairs with a missing modality are skipped).
    """

    groups: tuple[str, ...] = GROUPS
    sample_size: int = 5000
    seed: int = 0
    chunk_size: int = 8192
    whitening_method: str = "zca"
    whitening_eps: float = 1e-6
    whitening_shrinkage: str | None = None
    whitening_rank: int | None = None
    knn_k: int = 10
    spearman_sample_size: int = 1000
    separability_folds: int = 5
    separability_max_coordinates: int = 8
    histogram_bins: int = 50
    qq_coordinates: int = 4
    cross_modal: tuple[tuple[str, str], ...] = (("image", "text"),)

    def validate(self) -> AnalysisConfig:
        unknown = sorted(set(self.groups) - set(GROUPS))
        if unknown:
            raise LakdError(
                f"analysis config groups: unknown {', '.join(unknown)} (choose from {', '.join(GROUPS)})"
            )
        minimum = {
            "sample_size": 1,
            "chunk_size": 1,
            "knn_k": 1,
            "spearman_sample_size": 3,
            "histogram_bins": 1,
            "separability_folds": 2,
            "separability_max_coordinates": 1,
            "qq_coordinates": 0,
            "seed": 0,
        }
        for name, least in minimum.items():
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                raise LakdError(f"analysis config {name}: must be an integer >= {least}, got {value!r}")
        if self.whitening_method not in WHITENING_METHODS:
            raise LakdError(f"analysis config whitening_method: unknown {self.whitening_method!r}")
        if self.whitening_shrinkage is not None and self.whitening_shrinkage not in SHRINKAGE_ESTIMATORS:
            raise LakdError(f"analysis config whitening_shrinkage: unknown {self.whitening_shrinkage!r}")
        for pair in self.cross_modal:
            if len(pair) != 2 or pair[0] == pair[1]:
                raise LakdError(f"analysis config cross_modal: {pair!r} is not a pair of two modalities")
        return self

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["groups"] = list(self.groups)
        data["cross_modal"] = [list(p) for p in self.cross_modal]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AnalysisConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise LakdError(f"analysis config: unknown field(s) {', '.join(unknown)}")
        values = dict(data)
        if "groups" in values:
            values["groups"] = tuple(values["groups"])
        if "cross_modal" in values:
            values["cross_modal"] = tuple(tuple(p) for p in values["cross_modal"])
        return cls(**values).validate()


def analyze(
    embeddings_by_modality: Mapping[str, Embeddings],
    *,
    reference: Mapping[str, Embeddings] | None = None,
    config: AnalysisConfig | None = None,
) -> GeometryResult:
    """Geometry metrics of raw embeddings, per modality, across modalities, and against a reference.

    ``embeddings_by_modality``: modality name ("image", "text", ...) -> raw embeddings [N, d] as a
    tensor/array, a list of chunks, a zero-argument callable returning chunks (read twice: exact
    per-item distributions), or a one-shot iterator of chunks (read once: per-item distributions
    from the sample). ``reference``: the teacher's raw embeddings of the same items under the same
    keys (dimension may differ), for the alignment metrics (computed when "alignment" is among
    ``config.groups``). The result holds no NaN or Inf; bad input raises LakdError.
    """
    config = (config or AnalysisConfig()).validate()
    if not embeddings_by_modality:
        raise LakdError("analysis: no modalities given")
    groups = set(config.groups)
    modalities = {name: first_pass(name, data, config) for name, data in embeddings_by_modality.items()}
    pairs = [(a, b) for a, b in config.cross_modal if a in modalities and b in modalities]
    for a, b in pairs:
        if modalities[a].moments.dim != modalities[b].moments.dim:
            raise LakdError(
                f"{a} has dimension {modalities[a].moments.dim} but {b} has {modalities[b].moments.dim}; "
                "cross-modal metrics need one shared embedding space"
            )
    if groups & PER_ITEM_GROUPS:
        for name, modality in modalities.items():
            partners = [modalities[b if a == name else a] for a, b in pairs if name in (a, b)]
            second_pass(modality, partners)

    sampled: set[str] = set()
    result = GeometryResult(config=config.to_dict())
    for name, modality in modalities.items():
        entry: dict[str, Any] = {"rows": modality.n, "dim": modality.moments.dim}
        for group_name, group in MODALITY_GROUPS.items():
            if group_name in groups:
                entry[group_name] = _run(group, config, modality)
                _note_sampling(sampled, group_name, group, modality)
        result.modalities[name] = entry
    for a, b in pairs:
        entry = {}
        for group_name, group in PAIR_GROUPS.items():
            if group_name in groups:
                entry[group_name] = _run(group, config, modalities[a], modalities[b])
                _note_sampling(sampled, f"cross_modal.{group_name}", group, modalities[a], modalities[b])
        result.cross_modal[f"{a}_vs_{b}"] = entry
    if reference and "alignment" in groups:
        missing = sorted(set(reference) - set(modalities))
        if missing:
            raise LakdError(f"reference has modalities {', '.join(missing)} that were not given for analysis")
        refs = {name: reference_sample(f"reference {name}", data, config) for name, data in reference.items()}
        result.alignment = alignment_group(modalities, refs, config)
        sampled.add("alignment")
    result.sampling = {
        "seed": config.seed,
        "sample_size": config.sample_size,
        "rows": {name: m.n for name, m in modalities.items()},
        "sampled_rows": {name: len(m.sample.indices) for name, m in modalities.items()},
        "per_item_rows": {name: m.per_item_rows for name, m in modalities.items()},
        "sampled_metrics": sorted(sampled),
        "spearman_sample_size": config.spearman_sample_size,
    }
    result.check_finite("analysis result")
    return result


def _run(group: Group, config: AnalysisConfig, *modalities: ModalityData) -> dict:
    """The group's metrics, or ``{"skipped": reason}`` when the sample is too small for it."""
    rows = min(len(m.sample.indices) for m in modalities)
    need = group.min_sample_rows(config)
    if rows < need:
        return {"skipped": f"needs at least {need} sampled rows, have {rows}"}
    return group.compute(*modalities, config)


def _note_sampling(sampled: set[str], key: str, group: Group, *modalities: ModalityData) -> None:
    """Record which metrics were computed on the sample instead of all rows."""
    per_item_from_sample = key.split(".")[-1] in PER_ITEM_GROUPS and any(
        m.per_item_rows == "sample" for m in modalities
    )
    if per_item_from_sample or "*" in group.sampled_fields:
        sampled.add(key)
    else:
        sampled.update(f"{key}.{name}" for name in group.sampled_fields)
