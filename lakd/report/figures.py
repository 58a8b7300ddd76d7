"""The report's figures as PNGs (matplotlib's object API on the Agg canvas; no pyplot state).

One drawing function per entry of :data:`lakd.report.points.FIGURES`, registered in
:data:`DRAW`. Sizes are fixed in inches (7 in wide: a two-column paper figure) at 150 dpi with
8-point text; one colour per model, solid lines (filled markers) for image, dashed (hollow) for text.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from lakd.io import atomic_path
from lakd.report.inputs import MODALITIES
from lakd.report.points import (
    DPI,
    MPL_LINESTYLES,
    FigureInfo,
    ModelData,
    ReportData,
    ellipse_outline,
    histogram_density,
    spectrum_values,
)

STYLE = {
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "legend.fontsize": 6.5,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "axes.spines.top": False,
    "axes.spines.right": False,
}
MARKER_SIZE = 6


def _panels(fig: Figure, count: int, max_columns: int = 3) -> list[Axes]:
    columns = min(count, max_columns)
    rows = math.ceil(count / columns)
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    for extra in axes[count:]:
        extra.set_visible(False)
    return list(axes[:count])


def _note(ax: Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=7, wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])


def _title(model: ModelData) -> str:
    return f"{model.name} ({model.entry.role}, d={model.dim})"


def _scatter(ax: Axes, points: np.ndarray, colour: str, modality: str, label: str | None = None) -> None:
    """Filled markers for images, hollow for texts."""
    filled = modality == "image"
    ax.scatter(
        points[:, 0],
        points[:, 1],
        s=MARKER_SIZE,
        c=colour if filled else "none",
        edgecolors=colour,
        linewidths=0.5,
        alpha=0.45 if filled else 0.6,
        label=label,
        rasterized=True,
    )


def draw_ellipsoids(fig: Figure, data: ReportData) -> None:
    for ax, model in zip(_panels(fig, len(data.models)), data.models, strict=True):
        projection = model.projection
        for modality in MODALITIES:
            _scatter(ax, projection.points[modality], model.colour, modality, label=modality)
            for sigmas, width in ((1, 1.2), (2, 0.7)):
                outline = ellipse_outline(
                    projection.means[modality], projection.covariances[modality], sigmas
                )
                ax.plot(*outline.T, color=model.colour, linestyle=MPL_LINESTYLES[modality], linewidth=width)
            ax.plot(*projection.means[modality], marker="x", color="black", markersize=4)
        ax.plot(0, 0, marker="+", color="black", markersize=9, markeredgewidth=1.2, zorder=0.5)
        ax.annotate("origin", (0, 0), xytext=(4, 4), textcoords="offset points", fontsize=7)
        ax.set_aspect("equal", adjustable="datalim")
        ax.set_xlabel(projection.axis_names[0])
        ax.set_ylabel(projection.axis_names[1])
        ax.set_title(_title(model))
        ax.legend(loc="best", markerscale=2)


SHELL_PANELS = (("raw", r"$\|x\| \,/\, E\|x\|$"), ("centred", r"$\|x - \mu\| \,/\, E\|x - \mu\|$"))


def draw_shell(fig: Figure, data: ReportData) -> None:
    for ax, (key, label) in zip(_panels(fig, 2), SHELL_PANELS, strict=True):
        for model in data.models:
            for modality in MODALITIES:
                stats = model.result["modalities"][modality].get("shell", {}).get(key)
                if not stats or not stats.get("mean"):
                    continue
                cv = "" if stats.get("cv") is None else f" (CV {stats['cv']:.3g})"
                ax.stairs(
                    *histogram_density(stats["histogram"], stats["mean"]),
                    color=model.colour,
                    linestyle=MPL_LINESTYLES[modality],
                    label=f"{model.name} {modality}{cv}",
                )
        ax.set_xlabel(label)
        ax.set_ylabel("density")
        ax.legend(loc="upper left")


def draw_spectra(fig: Figure, data: ReportData) -> None:
    for ax, modality in zip(_panels(fig, 2), MODALITIES, strict=True):
        for model in data.models:
            spectrum = model.result["modalities"][modality].get("ellipsoid", {}).get("spectrum")
            if not spectrum:
                continue
            values, dim = spectrum_values(spectrum)
            rank = spectrum["effective_rank"]
            ax.plot(
                np.arange(1, len(values) + 1),
                values,
                color=model.colour,
                linestyle=MPL_LINESTYLES[modality],
                linewidth=1.2,
                label=f"{model.name}: effective rank {rank:.1f} (dim {dim})",
            )
            ax.axvline(rank, color=model.colour, linestyle=":", linewidth=0.9)
        ax.set_yscale("log")
        ax.set_xscale("log")
        ax.set_xlabel("eigenvalue index")
        ax.set_ylabel(r"$\lambda_i \,/\, \sum_j \lambda_j$")
        ax.set_title(f"{modality} (dotted: effective rank)")
        ax.legend(loc="lower left")


def draw_conformity_vs_cosine(fig: Figure, data: ReportData) -> None:
    for ax, modality in zip(_panels(fig, 2), MODALITIES, strict=True):
        for model in data.models:
            points = model.conformity[modality]
            cosine = points["cosine_to_mean"]
            _scatter(ax, np.stack([cosine, points["conformity"]], axis=1), model.colour, modality)
            fit = model.result["modalities"][modality].get("conformity", {}).get("fit_vs_cosine_to_mean", {})
            if fit.get("slope") is not None:
                line = np.linspace(cosine.min(), cosine.max(), 2)
                ax.plot(
                    line,
                    fit["slope"] * line + fit["intercept"],
                    color=model.colour,
                    linestyle=MPL_LINESTYLES[modality],
                    linewidth=1.2,
                    label=f"{model.name}: r = {fit['pearson_r']:.4f}",
                )
        ax.set_xlabel(r"$\cos(x, \mu)$")
        ax.set_ylabel("conformity")
        ax.set_title(modality)
        ax.legend(loc="upper left")


def draw_conformity_distributions(fig: Figure, data: ReportData) -> None:
    for ax, model in zip(_panels(fig, len(data.models)), data.models, strict=True):
        for modality in MODALITIES:
            stats = model.result["modalities"][modality].get("conformity", {}).get("distribution")
            if not stats:
                continue
            density, edges = histogram_density(stats["histogram"])
            ax.stairs(
                density,
                edges,
                color=model.colour,
                linestyle=MPL_LINESTYLES[modality],
                label=f"{modality} (mean {stats['mean']:.3g})",
            )
        kl = (
            model.result["cross_modal"]
            .get("image_vs_text", {})
            .get("conformity", {})
            .get("kl_within_conformity")
        )
        suffix = f", KL(img||txt) = {kl['kl']:.3g}" if kl else ""
        ax.set_title(f"{model.name}{suffix}")
        ax.set_xlabel("conformity")
        ax.set_ylabel("density")
        ax.legend(loc="upper left")


NORMALITY_TESTS = (("anderson_darling", "AD"), ("dagostino_pearson", "DP"))


def draw_normality(fig: Figure, data: ReportData) -> None:
    bars, qq = _panels(fig, 2)
    groups = [(test, short, modality) for test, short in NORMALITY_TESTS for modality in MODALITIES]
    width = 0.8 / len(data.models)
    drawn = False
    for m, model in enumerate(data.models):
        for g, (test, _, modality) in enumerate(groups):
            normality = model.result["modalities"][modality].get("normality", {})
            if test not in normality:
                continue
            drawn = True
            bars.bar(
                g + (m - (len(data.models) - 1) / 2) * width,
                100 * normality[test]["pass_rate"],
                width,
                color=model.colour if modality == "image" else "white",
                edgecolor=model.colour,
                hatch=None if modality == "image" else "////",
                label=model.name if g == 0 else None,
            )
    if drawn:
        bars.axhline(95, color="grey", linestyle=":", linewidth=0.8)
        bars.set_xticks(range(len(groups)), [f"{short} {modality}" for _, short, modality in groups])
        bars.set_ylabel("coordinates passing (%)")
        bars.set_ylim(0, 105)
        bars.legend(loc="lower left")
    else:
        _note(bars, _skip_reason(data, "normality"))
    drawn = False
    for model in data.models:
        for modality in MODALITIES:
            points = model.result["modalities"][modality].get("normality", {}).get("qq", [])
            for k, coordinate in enumerate(points[:2]):
                drawn = True
                qq.plot(
                    coordinate["theoretical"],
                    coordinate["sample"],
                    color=model.colour,
                    linestyle=MPL_LINESTYLES[modality],
                    linewidth=0.9,
                    label=f"{model.name} {modality}" if k == 0 else None,
                )
    if drawn:
        limits = np.array(qq.get_xlim())
        qq.plot(limits, limits, color="black", linewidth=0.6)
        qq.set_xlabel("N(0, 1) quantile")
        qq.set_ylabel("whitened coordinate quantile")
        qq.legend(loc="upper left")
    else:
        _note(qq, _skip_reason(data, "normality"))


def _skip_reason(data: ReportData, group: str) -> str:
    for model in data.models:
        reason = model.result["modalities"]["image"].get(group, {}).get("skipped")
        if reason:
            return f"{group} skipped: {reason}"
    return f"{group}: not computed"


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


def draw_alignment(fig: Figure, data: ReportData) -> None:
    shown = data.models[:SIMILARITY_PANELS]
    grid = fig.add_gridspec(2, len(shown) + 1, height_ratios=(1.1, 1))
    bars = fig.add_subplot(grid[0, :])
    slots = len(data.others) * len(MODALITIES)
    width = 0.8 / slots
    drawn: list[float | None] = []
    for m, model in enumerate(data.others):
        for k, modality in enumerate(MODALITIES):
            slot = m * len(MODALITIES) + k
            values = alignment_values(model, modality)
            drawn += values
            positions = np.arange(len(ALIGNMENT_BARS)) + (slot - (slots - 1) / 2) * width
            bars.bar(
                positions,
                [np.nan if v is None else v for v in values],
                width,
                color=model.colour if modality == "image" else "white",
                edgecolor=model.colour,
                hatch=None if modality == "image" else "////",
                label=f"{model.name} {modality}",
            )
            for position, value in zip(positions, values, strict=True):
                if value is None:
                    bars.text(position, 0.01, "n/a", rotation=90, ha="center", va="bottom", fontsize=6)
    bars.axhline(0, color="black", linewidth=0.6)
    bars.set_xticks(range(len(ALIGNMENT_BARS)), [name for name, _ in ALIGNMENT_BARS])
    bars.set_ylim(*bar_limits(drawn))
    bars.set_ylabel(f"vs {data.reference.name} (1 = same)")
    bars.legend(loc="upper right", ncols=min(slots, 4))
    low, high = similarity_range(shown)
    maps = []
    for column, model in enumerate(shown):
        ax = fig.add_subplot(grid[1, column])
        image = ax.imshow(
            model.similarity["matrix"], cmap="viridis", vmin=low, vmax=high, interpolation="nearest"
        )
        maps.append(ax)
        ax.set_title(f"{model.name}: image cosines", color=model.colour)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(image, ax=maps, fraction=0.046, pad=0.02, label="cosine (shared scale)")
    scatter = fig.add_subplot(grid[1, len(shown)])
    for model in shown[1:]:
        pairs = similarity_pairs(data.reference, model)
        if pairs is not None:
            scatter.scatter(*pairs, s=3, color=model.colour, alpha=0.5, label=model.name, rasterized=True)
    scatter.plot([low, high], [low, high], color="black", linewidth=0.6)
    scatter.set_xlabel(f"{data.reference.name} cosine")
    scatter.set_ylabel("model cosine")
    scatter.set_title("same image pairs")
    note = left_out_note(data)
    if note:
        fig.supxlabel(note, fontsize=7)


def draw_tsne(fig: Figure, data: ReportData) -> None:
    for ax, model in zip(_panels(fig, len(data.models)), data.models, strict=True):
        for modality in MODALITIES:
            _scatter(ax, model.tsne[modality]["points"], model.colour, modality, label=modality)
        ax.set_title(_title(model))
        ax.set_xticks([])
        ax.set_yticks([])
        ax.legend(loc="best", markerscale=2)


DRAW: dict[str, Callable[[Figure, ReportData], None]] = {
    "ellipsoids": draw_ellipsoids,
    "shell": draw_shell,
    "spectra": draw_spectra,
    "conformity_vs_cosine": draw_conformity_vs_cosine,
    "conformity_distributions": draw_conformity_distributions,
    "normality": draw_normality,
    "alignment": draw_alignment,
    "tsne": draw_tsne,
}


def pixel_size(info: FigureInfo) -> tuple[int, int]:
    """Width and height in pixels of the PNG of ``info``."""
    return round(info.size[0] * DPI), round(info.size[1] * DPI)


def save_figure(info: FigureInfo, data: ReportData, folder: Path) -> Path:
    """Draw one figure and write ``folder/<name>.png`` atomically."""
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=info.size, dpi=DPI, layout="constrained")
        DRAW[info.name](fig, data)
        fig.suptitle(info.title, fontsize=9)
        path = folder / f"{info.name}.png"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=DPI)
    return path


def save_figures(data: ReportData, folder: Path) -> list[Path]:
    """Every applicable figure as a PNG under ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    return [save_figure(info, data, folder) for info in data.figures()]
