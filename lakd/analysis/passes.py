"""Streaming passes over one modality's embeddings, shared by the metric groups of ``analyze``.

Pass 1 (:func:`first_pass`) reads the chunks once into float64 moments of the raw rows, the mean
of the normalised rows, and a seeded reservoir sample. Pass 2 (:func:`second_pass`) computes
exact per-item scalars against the pass-1 statistics (norms, ||x - mu||, conformity, cosine to
the mean, cross-modal conformity): over every row when the source can be read again, else over
the sampled rows (each value still exact against the full-data statistics; only their
distribution is sampled). Memory is O(d^2 + sample_size d + N) whatever the data size.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from lakd.analysis.conformity import conformity_given_sum, cosine_to_vector
from lakd.analysis.inputs import ChunkSource, normalise_rows, require_rows
from lakd.analysis.moments import Moments, ReservoirSample
from lakd.analysis.whitening import WhiteningStats, whitening_from_moments

if TYPE_CHECKING:
    from lakd.analysis.analyze import AnalysisConfig

Embeddings = Any  # tensor/array [N, d], a list of chunks, a callable returning chunks, or an iterator


@dataclass
class ModalityData:
    """Everything the metric groups read about one modality after streaming it."""

    name: str
    source: ChunkSource
    moments: Moments
    normalised: Moments
    sample: ReservoirSample
    per_item: dict[str, np.ndarray] = field(default_factory=dict)
    per_item_rows: str = "none"
    _whitening: WhiteningStats | None = None

    @property
    def n(self) -> int:
        return self.moments.n

    @property
    def normalised_sum(self) -> np.ndarray:
        return self.normalised.mean * self.normalised.n

    def whitening(self, config: AnalysisConfig) -> WhiteningStats:
        if self._whitening is None:
            self._whitening = whitening_from_moments(
                self.moments,
                method=config.whitening_method,
                eps=config.whitening_eps,
                shrinkage=config.whitening_shrinkage,
                rank=config.whitening_rank,
                source=self.name,
                sample=self.sample.rows,
            )
        return self._whitening


def first_pass(name: str, data: Embeddings, config: AnalysisConfig) -> ModalityData:
    """Stream ``data`` once: raw moments, mean of normalised rows, reservoir sample."""
    source = ChunkSource(data, name, config.chunk_size)
    modality = ModalityData(
        name=name,
        source=source,
        moments=Moments(name=name),
        normalised=Moments(covariance=False, name=name),
        sample=ReservoirSample(config.sample_size, config.seed),
    )
    for offset, chunk in source:
        modality.moments.update(chunk)
        modality.normalised.update(normalise_rows(chunk, name, row_offset=offset))
        modality.sample.update(chunk)
    require_rows(modality.n, 2, name, "geometry analysis")
    return modality


def second_pass(modality: ModalityData, partners: list[ModalityData]) -> None:
    """Per-item scalars against the pass-1 statistics, over all rows when the source can be read
    again, else over the sample rows."""
    if modality.source.reiterable:
        chunks, modality.per_item_rows = (chunk for _, chunk in modality.source), "all"
    else:
        chunks, modality.per_item_rows = [modality.sample.rows], "sample"
    parts: dict[str, list[np.ndarray]] = {}
    mean, total, n = modality.moments.mean, modality.normalised_sum, modality.n
    for chunk in chunks:
        unit = normalise_rows(chunk, modality.name)
        values = {
            "norm": np.linalg.norm(chunk, axis=1),
            "centred_norm": np.linalg.norm(chunk - mean, axis=1),
            "conformity": conformity_given_sum(unit, total, n),
            "cosine_to_mean": cosine_to_vector(unit, mean),
        }
        for partner in partners:
            values[f"cross:{partner.name}"] = unit @ partner.normalised.mean
        for key, value in values.items():
            parts.setdefault(key, []).append(value)
    modality.per_item = {key: np.concatenate(value) for key, value in parts.items()}


@dataclass
class ReferenceSample:
    """Row count and reservoir sample of one reference modality (all alignment needs)."""

    n: int
    sample: ReservoirSample


def reference_sample(name: str, data: Embeddings, config: AnalysisConfig) -> ReferenceSample:
    """Stream a reference modality once, keeping the same seeded sample as the analysed one."""
    sample, n = ReservoirSample(config.sample_size, config.seed), 0
    for _, chunk in ChunkSource(data, name, config.chunk_size):
        sample.update(chunk)
        n += len(chunk)
    return ReferenceSample(n, sample)
