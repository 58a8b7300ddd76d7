"""The per-point data behind the report's figures, computed once per model (views of each figure:
:mod:`lakd.report.views`).

For each model and modality one streamed pass (:func:`lakd.analysis.passes.first_pass`) gives the
full-data mean, covariance and mean of the normalised rows plus a seeded reservoir sample of rows.
Two stores of the same items sampled with the same seed keep the same rows, so teacher and student
points, t-SNE panels and similarity matrices show the same items. From these:

- :func:`gap_projection`: the 2-D view of the double ellipsoid [DE]: raw rows projected on the
  raw gap direction mu_img - mu_txt and on the top principal axis of the pooled data orthogonal to
  it; each modality's 1- and 2-sigma ellipses come from its full-data covariance projected on the
  same plane, and the origin stays at (0, 0) because the projection is linear.
- :func:`conformity_points`: exact conformity and cos(x, mu) [DE] of the sampled rows against the
  full-data statistics.
- :func:`tsne_points`: scikit-learn t-SNE of L2-normalised sampled rows of both modalities.
- :func:`similarity_matrix`: cosine similarities among the first sampled images.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from sklearn.manifold import TSNE
from threadpoolctl import threadpool_limits

from lakd.analysis.analyze import AnalysisConfig
from lakd.analysis.conformity import conformity_given_sum, cosine_to_vector
from lakd.analysis.inputs import normalise_rows
from lakd.analysis.moments import Moments, sorted_eigh
from lakd.analysis.passes import Embeddings, first_pass
from lakd.report.dense import DenseExamples
from lakd.report.inputs import ModelInput, RowLabels

# one colour per model (matplotlib's tab10, in order)
MODEL_COLOURS = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)


def model_colour(index: int) -> str:
    return MODEL_COLOURS[index % len(MODEL_COLOURS)]


@dataclass
class ModalityView:
    """Full-data moments of one modality's raw rows [N, d] and a seeded sample of them.

    ``moments``: mean [d] and covariance [d, d]; ``normalised``: mean of the L2-normalised rows;
    ``indices`` [m] the sampled row numbers (ascending) and ``rows`` [m, d] those raw rows.
    """

    moments: Moments
    normalised: Moments
    indices: np.ndarray
    rows: np.ndarray

    @property
    def n(self) -> int:
        return self.moments.n

    @property
    def dim(self) -> int:
        return int(self.moments.dim)


def modality_view(
    data: Embeddings, name: str, *, sample_size: int, seed: int, chunk_size: int
) -> ModalityView:
    """Stream ``data`` (any form :func:`lakd.analysis.analyze` accepts) once into a :class:`ModalityView`."""
    config = AnalysisConfig(sample_size=sample_size, seed=seed, chunk_size=chunk_size)
    streamed = first_pass(name, data, config)
    return ModalityView(streamed.moments, streamed.normalised, streamed.sample.indices, streamed.sample.rows)


@dataclass
class Projection:
    """Rows of both modalities on a plane: ``axes`` [d, 2] (orthonormal columns), ``axis_names``,
    and per modality the sampled ``points`` [m, 2], the projected full-data ``means`` [2] and
    ``covariances`` [2, 2]."""

    axes: np.ndarray
    axis_names: tuple[str, str]
    points: dict[str, np.ndarray] = field(default_factory=dict)
    means: dict[str, np.ndarray] = field(default_factory=dict)
    covariances: dict[str, np.ndarray] = field(default_factory=dict)


def gap_projection(views: dict[str, ModalityView]) -> Projection:
    """Project on (raw gap direction, top pooled principal axis orthogonal to it); when the two
    means coincide, on the top two pooled principal axes."""
    pooled = Moments(name="pooled")
    for view in views.values():
        pooled.merge(view.moments)
    covariance = pooled.covariance
    gap = views["image"].moments.mean - views["text"].moments.mean
    gap_norm = np.linalg.norm(gap)
    if gap_norm > 1e-12 * max(np.sqrt(np.trace(covariance)), 1e-300):
        first = gap / gap_norm
        complement = np.eye(len(first)) - np.outer(first, first)
        _, vectors = sorted_eigh(complement @ covariance @ complement)
        second = vectors[:, 0] - first * (first @ vectors[:, 0])
        axes = np.stack([first, second / np.linalg.norm(second)], axis=1)
        names = ("gap direction (mu_image - mu_text)", "top orthogonal principal axis")
    else:
        axes = sorted_eigh(covariance)[1][:, :2]
        names = ("principal axis 1", "principal axis 2")
    projection = Projection(axes, names)
    for modality, view in views.items():
        projection.points[modality] = view.rows @ axes
        projection.means[modality] = view.moments.mean @ axes
        projection.covariances[modality] = axes.T @ view.moments.covariance @ axes
    return projection


def conformity_points(view: ModalityView) -> dict[str, np.ndarray]:
    """``conformity`` [m] and ``cosine_to_mean`` [m] of the sampled rows, exact against all N rows."""
    unit = normalise_rows(view.rows)
    total = view.normalised.mean * view.normalised.n
    return {
        "conformity": conformity_given_sum(unit, total, view.n),
        "cosine_to_mean": cosine_to_vector(unit, view.moments.mean),
    }


def tsne_rows(view: ModalityView, items: int, seed: int) -> np.ndarray:
    """Positions (into the sample) of ``items`` rows chosen with ``seed``, ascending."""
    count = min(items, len(view.indices))
    return np.sort(np.random.default_rng(seed).choice(len(view.indices), count, replace=False))


def tsne_points(views: dict[str, ModalityView], items: int, seed: int) -> dict[str, dict[str, np.ndarray]]:
    """Joint 2-D t-SNE (scikit-learn, PCA init, seeded) of L2-normalised sampled rows of every
    modality; per modality ``points`` [k, 2] and ``rows`` [k] (original row numbers)."""
    chosen = {modality: tsne_rows(view, items, seed) for modality, view in views.items()}
    stacked = np.vstack([normalise_rows(views[m].rows[chosen[m]]) for m in views])
    perplexity = float(min(30.0, max(2.0, (len(stacked) - 1) / 3.0)))
    # OpenMP busy-waits badly on shared cores; one thread is quick for a few thousand points
    with threadpool_limits(1, user_api="openmp"):
        embedded = TSNE(2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(stacked)
    result, start = {}, 0
    for modality, positions in chosen.items():
        stop = start + len(positions)
        result[modality] = {"points": embedded[start:stop], "rows": views[modality].indices[positions]}
        start = stop
    return result


def similarity_matrix(view: ModalityView, items: int) -> dict[str, np.ndarray]:
    """Cosine similarities [q, q] among the first ``items`` sampled rows, and their row numbers [q]."""
    unit = normalise_rows(view.rows[:items])
    return {"matrix": unit @ unit.T, "rows": view.indices[:items]}


@dataclass
class ModelData:
    """Everything the figures show about one model: its entry, its GeometryResult as a dict, its
    modality views and the derived point sets."""

    entry: ModelInput
    colour: str
    result: dict
    views: dict[str, ModalityView]
    projection: Projection
    conformity: dict[str, dict[str, np.ndarray]]
    tsne: dict[str, dict[str, np.ndarray]]
    similarity: dict[str, np.ndarray]

    @property
    def name(self) -> str:
        return self.entry.name

    @property
    def dim(self) -> int:
        return self.views["image"].dim


def model_data(
    entry: ModelInput,
    index: int,
    result: dict,
    views: dict[str, ModalityView],
    *,
    tsne_items: int,
    similarity_items: int,
    seed: int,
) -> ModelData:
    return ModelData(
        entry=entry,
        colour=model_colour(index),
        result=result,
        views=views,
        projection=gap_projection(views),
        conformity={modality: conformity_points(view) for modality, view in views.items()},
        tsne=tsne_points(views, tsne_items, seed),
        similarity=similarity_matrix(views["image"], similarity_items),
    )


@dataclass
class ReportData:
    """Everything a report shows: the models (reference first), row labels (ids and captions), and
    the run's description (``meta``: data, N, text view, samples, seeds, alignment note), and the
    example dense maps of the teacher and the first student (:mod:`lakd.report.dense`), when any."""

    models: list[ModelData]
    labels: dict[str, RowLabels]
    meta: dict
    dense: DenseExamples | None = None  # example token-by-patch maps (teacher and student ViTs only)

    @property
    def reference(self) -> ModelData:
        return self.models[0]

    @property
    def others(self) -> list[ModelData]:
        return self.models[1:]

    def label(self, modality: str, rows: np.ndarray) -> list[tuple[str, str]]:
        """``(id, caption)`` of each row number of one modality."""
        labels = self.labels[modality]
        return [(labels.ids[i], labels.captions[i]) for i in rows.tolist()]
