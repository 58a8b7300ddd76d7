"""Building blocks of the figure views (:mod:`lakd.report.views`): titles, the series of one model
and modality (sampled points, histogram steps), and the numbers that fill them (ellipse outlines,
histogram densities, eigen-spectra), taken from a :class:`~lakd.report.points.ReportData`."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lakd.report.points import ModelData, ReportData


@dataclass(frozen=True)
class Label:
    """An axis title: plain ``text``, and its matplotlib mathtext form ``tex`` where it has one."""

    text: str
    tex: str | None = None


@dataclass
class Series:
    """Whose data a series is: model name, modality (image: solid, filled; text: dashed, hollow) and
    the model's colour."""

    model: str
    modality: str
    colour: str


@dataclass
class Points(Series):
    """Sampled points ``xy`` [m, 2] and each point's ``(id, caption)``."""

    xy: np.ndarray
    labels: list[tuple[str, str]]


@dataclass
class Steps(Series):
    """A histogram as a density [bins] over ``edges`` [bins + 1], with its distribution's ``cv`` or
    ``mean`` where the figure names it."""

    density: np.ndarray
    edges: np.ndarray
    cv: float | None = None
    mean: float | None = None


def model_title(model: ModelData) -> str:
    return f"{model.name} ({model.entry.role}, d={model.dim})"


def point_set(data: ReportData, model: ModelData, modality: str, xy: np.ndarray, rows: np.ndarray) -> Points:
    return Points(model.name, modality, model.colour, xy, data.label(modality, rows))


def metric_group(model: ModelData, modality: str, group: str) -> dict:
    """One metric group of a model's modality from its GeometryResult dict (empty when absent)."""
    return model.result["modalities"][modality].get(group, {})


def ellipse_outline(mean: np.ndarray, covariance: np.ndarray, sigmas: float, points: int = 120) -> np.ndarray:
    """Points [points, 2] on the ``sigmas``-sigma ellipse of a 2-D Gaussian (mean [2], covariance [2, 2])."""
    values, vectors = np.linalg.eigh(covariance)
    angle = np.linspace(0.0, 2.0 * np.pi, points)
    circle = np.stack([np.cos(angle), np.sin(angle)], axis=1)
    return mean + sigmas * (circle * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def histogram_density(histogram: dict, scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """``(density [bins], edges [bins + 1])`` of a ``{"counts", "edges"}`` histogram from a
    GeometryResult, with the values divided by ``scale`` (so the density is multiplied by it)."""
    counts, edges = np.asarray(histogram["counts"], float), np.asarray(histogram["edges"], float)
    widths = np.diff(edges)
    total = counts.sum()
    density = counts / (total * np.where(widths > 0, widths, 1.0)) if total else counts
    return density * scale, edges / scale


def spectrum_values(spectrum: dict, floor: float = 1e-12) -> tuple[np.ndarray, int]:
    """Descending eigenvalues of a GeometryResult spectrum as fractions of the total variance, only
    up to its ``numerical_rank`` and above ``floor`` (the rest is float noise that would fill a log
    axis) [r], and the dimension d."""
    values = np.asarray(spectrum["eigenvalues"], dtype=float) / spectrum["total_variance"]
    count = int(np.count_nonzero(values > floor))
    rank = spectrum.get("numerical_rank")
    if isinstance(rank, int):
        count = min(count, rank)
    return values[:count], len(values)
