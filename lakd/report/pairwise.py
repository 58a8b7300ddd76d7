"""The view of the alignment figure (pairwise: every other model against the reference): metric
bars, similarity matrices of the same images on one colour scale, and the same-pair cosines."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lakd.report.inputs import MODALITIES
from lakd.report.points import ModelData, ReportData
from lakd.report.series import Series

ALIGNMENT_BARS = (
    ("CKA", lambda a: a.get("linear_cka")),
    ("k-NN overlap", lambda a: a.get("knn_overlap")),
    ("similarity rho", lambda a: (a.get("similarity_spearman") or {}).get("rho")),
    ("top-1 agreement", lambda a: a.get("retrieval_agreement")),
    (
        "1 - Procrustes",
        lambda a: None if a.get("procrustes_residual") is None else 1 - a["procrustes_residual"],
    ),
)
SIMILARITY_PANELS = 4


@dataclass
class Bars(Series):
    """One model and modality's value per :data:`ALIGNMENT_BARS` entry (None: not computed)."""

    values: list[float | None]


@dataclass
class SimilarityPanel:
    """Cosine similarities [q, q] among the same sampled images in one model, and their ids [q]."""

    model: str
    colour: str
    matrix: np.ndarray
    ids: list[str]


@dataclass
class PairPoints:
    """Cosines of the same image pairs in the reference (``x`` [p]) and in ``model`` (``y`` [p])."""

    model: str
    colour: str
    x: np.ndarray
    y: np.ndarray


@dataclass
class AlignmentView:
    """Bars of every other model against ``reference`` with their y ``limits``; the similarity
    matrices of the first :data:`SIMILARITY_PANELS` models on one colour ``scale`` (min, max cosine);
    the same-pair scatter; and ``note``: which models the matrices leave out (or None)."""

    reference: str
    metrics: list[str]
    bars: list[Bars]
    limits: tuple[float, float]
    similarity: list[SimilarityPanel]
    scale: tuple[float, float]
    pairs: list[PairPoints]
    note: str | None


def alignment_values(model: ModelData, modality: str) -> list[float | None]:
    """The bars of :data:`ALIGNMENT_BARS` for one model and modality (None where not computed)."""
    entry = model.result.get("alignment", {}).get(modality) or {}
    return [get(entry) if "skipped" not in entry else None for _, get in ALIGNMENT_BARS]


def bar_limits(values: list[float | None]) -> tuple[float, float]:
    """y-range of the alignment bars: 0 to 1.05, widened below 0 for negative values (Spearman's rho
    or 1 - Procrustes residual can be negative)."""
    lowest = min([v for v in values if v is not None and np.isfinite(v)], default=0.0)
    return (min(0.0, lowest - 0.05), 1.05)


def similarity_range(models: list[ModelData]) -> tuple[float, float]:
    """One colour range (min, max cosine) shared by the similarity matrices of ``models``."""
    matrices = [model.similarity["matrix"] for model in models]
    return float(min(m.min() for m in matrices)), float(max(m.max() for m in matrices))


def similarity_pairs(reference: ModelData, model: ModelData) -> tuple[np.ndarray, np.ndarray] | None:
    """Cosines of the same image pairs (upper triangle) in the reference [p] and in ``model`` [p];
    None when their similarity matrices are not of the same items."""
    rows = reference.similarity["rows"]
    if not np.array_equal(rows, model.similarity["rows"]):
        return None
    upper = np.triu_indices(len(rows), k=1)
    return reference.similarity["matrix"][upper], model.similarity["matrix"][upper]


def left_out_note(data: ReportData) -> str | None:
    """Which models the similarity panels leave out (only the first :data:`SIMILARITY_PANELS` are drawn)."""
    left = [model.name for model in data.models[SIMILARITY_PANELS:]]
    return (
        f"similarity panels show the first {SIMILARITY_PANELS} models; left out: {', '.join(left)}"
        if left
        else None
    )


def alignment_view(data: ReportData) -> AlignmentView:
    shown = data.models[:SIMILARITY_PANELS]
    bars = [
        Bars(model.name, modality, model.colour, alignment_values(model, modality))
        for model in data.others
        for modality in MODALITIES
    ]
    similarity = [
        SimilarityPanel(
            model.name,
            model.colour,
            model.similarity["matrix"],
            [item_id for item_id, _ in data.label("image", model.similarity["rows"])],
        )
        for model in shown
    ]
    pairs = []
    for model in shown[1:]:
        found = similarity_pairs(data.reference, model)
        if found is not None:
            pairs.append(PairPoints(model.name, model.colour, *found))
    return AlignmentView(
        reference=data.reference.name,
        metrics=[name for name, _ in ALIGNMENT_BARS],
        bars=bars,
        limits=bar_limits([v for b in bars for v in b.values]),
        similarity=similarity,
        scale=similarity_range(shown),
        pairs=pairs,
        note=left_out_note(data),
    )
