"""One data view per figure: what each figure shows, chosen once and drawn by both renderers.

:func:`figure_views` turns a :class:`~lakd.report.points.ReportData` into one view per applicable
entry of :data:`FIGURES`: small dataclasses of panels, series (points, histogram steps, lines, bars;
see :mod:`lakd.report.series`), labels and axis titles, with every number already selected (which
rows, which bins, which metric, which fit line). The alignment figure's view is in
:mod:`lakd.report.pairwise`. :mod:`lakd.report.figures` (matplotlib PNGs) and :mod:`lakd.report.html`
(plotly) only map a view to drawing calls and styling. Strings are raw; the HTML side escapes them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from lakd.report.inputs import MODALITIES
from lakd.report.pairwise import alignment_view
from lakd.report.points import ReportData
from lakd.report.series import (
    Label,
    Points,
    Series,
    Steps,
    ellipse_outline,
    histogram_density,
    metric_group,
    model_title,
    point_set,
    spectrum_values,
)


@dataclass(frozen=True)
class FigureInfo:
    """One figure of the report, drawn as ``figures/<name>.png`` and as an interactive plotly figure.
    ``size`` is the PNG size in inches; ``pairwise`` figures need a reference and at least one other
    model; ``dense`` figures need the teacher and student models themselves, with ViT towers
    (:mod:`lakd.report.dense`), and are skipped with the reason in ``metrics.json`` otherwise."""

    name: str
    title: str
    caption: str
    size: tuple[float, float] = (7.0, 4.2)
    pairwise: bool = False
    dense: bool = False


FIGURES: tuple[FigureInfo, ...] = (
    FigureInfo(
        "ellipsoids",
        "Double ellipsoid",
        "Raw embeddings projected on the gap direction and the top orthogonal principal axis of the pooled "
        "data, with each modality's 1- and 2-sigma ellipses (full-data covariance) and the origin [DE].",
    ),
    FigureInfo(
        "shell",
        "Thin shell",
        "Histograms of ||x|| and ||x - mu||, each divided by its mean so models of any scale share an "
        "axis; a narrow peak is a thin shell [DE].",
    ),
    FigureInfo(
        "spectra",
        "Eigen-spectra",
        "Covariance eigenvalues as a fraction of the total variance (log scale), up to the numerical rank "
        "(smaller ones are float noise); dotted vertical lines mark each model's effective rank "
        "exp(entropy of the normalised eigenvalues).",
    ),
    FigureInfo(
        "conformity_vs_cosine",
        "Conformity vs cos(x, mu)",
        "Per-item conformity (mean cosine to the rest of the set) against the cosine to the modality mean, "
        "with the least-squares line fitted on all items and its Pearson r [DE].",
    ),
    FigureInfo(
        "conformity_distributions",
        "Conformity distributions",
        "Conformity of images and texts per model, with the histogram KL(image || text) [DE].",
    ),
    FigureInfo(
        "normality",
        "Normality after whitening",
        "Share of whitened coordinates passing Anderson-Darling (statistic < 0.752) and D'Agostino-Pearson "
        "(p > 0.05); Gaussian data passes about 95%. Right: normal QQ plots of sampled coordinates [WC].",
    ),
    FigureInfo(
        "alignment",
        "Alignment with the reference",
        "Linear CKA, mutual k-NN overlap, Spearman correlation of the similarity matrices, top-1 retrieval "
        "agreement and 1 - Procrustes residual (all: higher = closer; n/a: not computed), cosine-similarity "
        "matrices of the same images in each model on one shared colour scale, and each model's cosines "
        "against the reference's for the same image pairs (on the diagonal: the same similarity).",
        size=(7.0, 5.6),
        pairwise=True,
    ),
    FigureInfo(
        "tsne",
        "t-SNE",
        "t-SNE (scikit-learn) of the same sampled items in every model: images filled, texts hollow.",
    ),
    FigureInfo(
        "dense_maps",
        "Token-by-patch similarity maps",
        "For one shapes-world probe image and its true caption per condition, the cosine of every text "
        "token (rows) with every image patch (columns, raster order over each model's own patch grid), "
        "teacher left, student right, on one shared colour scale [DCSM]. Drawn only when both are ViT "
        "models.",
        size=(7.0, 7.0),
        pairwise=True,
        dense=True,
    ),
)


# ---- double ellipsoid and t-SNE: one panel per model ---------------------------------------------


@dataclass
class ScatterPanel:
    """One model's t-SNE ``points`` (one set per modality) under ``title``."""

    title: str
    points: list[Points]


@dataclass
class EllipsoidPanel:
    """The gap plane of one model: sampled ``points`` per modality, ``axis_titles``, and per
    modality the projected full-data ``means`` [2] and ``outlines`` {sigmas: [k, 2]} of the 1- and
    2-sigma ellipses."""

    title: str
    points: list[Points]
    axis_titles: tuple[str, str]
    means: dict[str, np.ndarray]
    outlines: dict[str, dict[int, np.ndarray]]


@dataclass
class EllipsoidsView:
    panels: list[EllipsoidPanel]


@dataclass
class TsneView:
    panels: list[ScatterPanel]


def ellipsoids_view(data: ReportData) -> EllipsoidsView:
    panels = []
    for model in data.models:
        projection = model.projection
        panels.append(
            EllipsoidPanel(
                model_title(model),
                [point_set(data, model, m, projection.points[m], model.views[m].indices) for m in MODALITIES],
                axis_titles=projection.axis_names,
                means={m: projection.means[m] for m in MODALITIES},
                outlines={
                    m: {
                        sigmas: ellipse_outline(projection.means[m], projection.covariances[m], sigmas)
                        for sigmas in (1, 2)
                    }
                    for m in MODALITIES
                },
            )
        )
    return EllipsoidsView(panels)


def tsne_view(data: ReportData) -> TsneView:
    return TsneView(
        [
            ScatterPanel(
                model_title(model),
                [
                    point_set(data, model, m, model.tsne[m]["points"], model.tsne[m]["rows"])
                    for m in MODALITIES
                ],
            )
            for model in data.models
        ]
    )


# ---- thin shell and conformity distributions: histograms ------------------------------------------


@dataclass
class ShellPanel:
    """Histograms of one norm (``x_title``), each divided by its mean, per model and modality."""

    x_title: Label
    steps: list[Steps]


@dataclass
class ShellView:
    panels: list[ShellPanel]
    y_title: str = "density"


SHELL_PANELS = (
    ("raw", Label("||x|| / E||x||", r"$\|x\| \,/\, E\|x\|$")),
    ("centred", Label("||x - mu|| / E||x - mu||", r"$\|x - \mu\| \,/\, E\|x - \mu\|$")),
)


def shell_view(data: ReportData) -> ShellView:
    panels = []
    for key, title in SHELL_PANELS:
        steps = []
        for model in data.models:
            for modality in MODALITIES:
                stats = metric_group(model, modality, "shell").get(key)
                if not stats or not stats.get("mean"):
                    continue
                density, edges = histogram_density(stats["histogram"], stats["mean"])
                steps.append(Steps(model.name, modality, model.colour, density, edges, cv=stats.get("cv")))
        panels.append(ShellPanel(title, steps))
    return ShellView(panels)


@dataclass
class DistributionPanel:
    """One model's conformity histograms per modality, and its histogram KL(image || text)."""

    model: str
    title: str
    steps: list[Steps]
    kl: float | None

    @property
    def kl_note(self) -> str:
        """``, KL(img||txt) = 0.0123`` to follow a panel title, or "" without a KL."""
        return "" if self.kl is None else f", KL(img||txt) = {self.kl:.3g}"


@dataclass
class DistributionsView:
    panels: list[DistributionPanel]
    x_title: str = "conformity"
    y_title: str = "density"


def distributions_view(data: ReportData) -> DistributionsView:
    panels = []
    for model in data.models:
        steps = []
        for modality in MODALITIES:
            stats = metric_group(model, modality, "conformity").get("distribution")
            if stats:
                density, edges = histogram_density(stats["histogram"])
                steps.append(Steps(model.name, modality, model.colour, density, edges, mean=stats["mean"]))
        pair = model.result["cross_modal"].get("image_vs_text", {})
        kl = pair.get("conformity", {}).get("kl_within_conformity")
        panels.append(DistributionPanel(model.name, model_title(model), steps, kl["kl"] if kl else None))
    return DistributionsView(panels)


# ---- spectra and conformity vs cosine: one panel per modality -------------------------------------


@dataclass
class Spectrum(Series):
    """Eigenvalue fractions [r] (plotted at indices 1..r), the effective rank and the dimension."""

    values: np.ndarray
    rank: float
    dim: int


@dataclass
class SpectraPanel:
    title: str
    spectra: list[Spectrum]


@dataclass
class SpectraView:
    panels: list[SpectraPanel]
    x_title: str = "eigenvalue index"
    y_title: Label = Label("lambda_i / sum lambda", r"$\lambda_i \,/\, \sum_j \lambda_j$")


def spectra_view(data: ReportData) -> SpectraView:
    panels = []
    for modality in MODALITIES:
        spectra = []
        for model in data.models:
            spectrum = metric_group(model, modality, "ellipsoid").get("spectrum")
            if not spectrum:
                continue
            values, dim = spectrum_values(spectrum)
            if len(values):
                spectra.append(
                    Spectrum(model.name, modality, model.colour, values, spectrum["effective_rank"], dim)
                )
        panels.append(SpectraPanel(f"{modality} (dotted: effective rank)", spectra))
    return SpectraView(panels)


@dataclass
class Fit:
    """A least-squares line through ``x`` [2] (the points' cosine range) and ``y`` [2], Pearson ``r``."""

    x: np.ndarray
    y: np.ndarray
    r: float


@dataclass
class ConformityPanel:
    """One modality: per model, points (cos(x, mu), conformity) and the fit over all items (or None)."""

    title: str
    points: list[Points]
    fits: list[Fit | None]


@dataclass
class ConformityView:
    panels: list[ConformityPanel]
    x_title: Label = Label("cos(x, mu)", r"$\cos(x, \mu)$")
    y_title: str = "conformity"


def conformity_view(data: ReportData) -> ConformityView:
    panels = []
    for modality in MODALITIES:
        points, fits = [], []
        for model in data.models:
            values = model.conformity[modality]
            xy = np.stack([values["cosine_to_mean"], values["conformity"]], axis=1)
            points.append(point_set(data, model, modality, xy, model.views[modality].indices))
            fit = metric_group(model, modality, "conformity").get("fit_vs_cosine_to_mean", {})
            if fit.get("slope") is None:
                fits.append(None)
                continue
            x = np.array([xy[:, 0].min(), xy[:, 0].max()])
            fits.append(Fit(x, fit["slope"] * x + fit["intercept"], fit["pearson_r"]))
        panels.append(ConformityPanel(modality, points, fits))
    return ConformityView(panels)


# ---- normality ---------------------------------------------------------------------------------------


@dataclass
class QQLine(Series):
    """Sorted whitened values of one coordinate against N(0, 1) quantiles; ``first`` of its model and
    modality (the one a legend names)."""

    coordinate: int
    theoretical: list[float]
    sample: list[float]
    first: bool


@dataclass
class NormalityModel:
    """One model's pass rates in % per group of :attr:`NormalityView.groups` (None: not computed)
    and its QQ lines."""

    model: str
    colour: str
    rates: list[float | None]
    qq: list[QQLine]


@dataclass
class NormalityView:
    """Bar groups as ``(tick label, modality)``, the models, and what to say when nothing was computed."""

    groups: list[tuple[str, str]]
    models: list[NormalityModel]
    note: str


NORMALITY_TESTS = (("anderson_darling", "AD"), ("dagostino_pearson", "DP"))
QQ_LINES = 2  # QQ lines per model and modality


def skip_reason(data: ReportData, group: str) -> str:
    """Why a metric group is missing (from the first model whose image group says), for empty panels."""
    for model in data.models:
        reason = metric_group(model, "image", group).get("skipped")
        if reason:
            return f"{group} skipped: {reason}"
    return f"{group}: not computed"


def normality_view(data: ReportData) -> NormalityView:
    groups = [(test, short, modality) for test, short in NORMALITY_TESTS for modality in MODALITIES]
    models = []
    for model in data.models:
        rates = []
        for test, _, modality in groups:
            normality = metric_group(model, modality, "normality")
            rates.append(100 * normality[test]["pass_rate"] if test in normality else None)
        qq = [
            QQLine(
                model.name,
                modality,
                model.colour,
                line["coordinate"],
                line["theoretical"],
                line["sample"],
                k == 0,
            )
            for modality in MODALITIES
            for k, line in enumerate(metric_group(model, modality, "normality").get("qq", [])[:QQ_LINES])
        ]
        models.append(NormalityModel(model.name, model.colour, rates, qq))
    ticks = [(f"{short} {modality}", modality) for _, short, modality in groups]
    return NormalityView(ticks, models, skip_reason(data, "normality"))


# ---- dense maps: teacher and student per probe condition ------------------------------------------


@dataclass
class DenseMapPanel:
    """One model's map of one probe pair: ``values`` [tokens, patches], ``tokens`` the row labels."""

    title: str
    caption: str
    tokens: list[str]
    grid: tuple[int, int]
    values: np.ndarray


@dataclass
class DenseMapsView:
    """Panels row by row (``columns`` models per condition), colours on [-``limit``, ``limit``]."""

    panels: list[DenseMapPanel]
    columns: int
    limit: float


def dense_maps_view(data: ReportData) -> DenseMapsView:
    maps = data.dense.maps if data.dense is not None else []
    panels = [
        DenseMapPanel(f"{m.condition}: {m.model} ({m.grid[0]}x{m.grid[1]})", m.caption, m.tokens, m.grid, m.values)
        for m in maps
    ]
    limit = max((float(np.abs(m.values).max()) for m in maps), default=1.0) or 1.0
    return DenseMapsView(panels, columns=2, limit=limit)


# ---- all figures -----------------------------------------------------------------------------------

VIEWS: dict[str, Callable[[ReportData], object]] = {
    "ellipsoids": ellipsoids_view,
    "shell": shell_view,
    "spectra": spectra_view,
    "conformity_vs_cosine": conformity_view,
    "conformity_distributions": distributions_view,
    "normality": normality_view,
    "alignment": alignment_view,
    "tsne": tsne_view,
    "dense_maps": dense_maps_view,
}


def figure_views(data: ReportData) -> dict[FigureInfo, object]:
    """The view of every figure this report draws (pairwise ones only with two or more models, dense
    ones only with maps), in :data:`FIGURES` order."""
    return {
        info: VIEWS[info.name](data)
        for info in FIGURES
        if (not info.pairwise or data.others) and (not info.dense or (data.dense is not None and data.dense.maps))
    }
