"""The report's figures as PNGs (matplotlib's object API on the Agg canvas; no pyplot state).

One drawing function per figure, registered in :data:`DRAW`, maps that figure's view
(:mod:`lakd.report.views`) to matplotlib calls. Sizes are fixed in inches (7 in wide: a two-column
paper figure) at 150 dpi with 8-point text; one colour per model, solid lines (filled markers) for
image, dashed (hollow) for text.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from lakd.io import atomic_path, writing
from lakd.report.pairwise import AlignmentView
from lakd.report.series import Label, Points
from lakd.report.views import (
    ConformityView,
    DenseMapsView,
    DistributionsView,
    EllipsoidsView,
    FigureInfo,
    NormalityView,
    ShellView,
    SpectraView,
    TsneView,
)

DPI = 150
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
LINESTYLES = {"image": "-", "text": "--"}
ELLIPSE_WIDTHS = {1: 1.2, 2: 0.7}  # line width per sigma


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


def _tex(label: Label) -> str:
    return label.tex or label.text


def _scatter(ax: Axes, points: Points, label: str | None = None) -> None:
    """Filled markers for images, hollow for texts."""
    filled = points.modality == "image"
    ax.scatter(
        points.xy[:, 0],
        points.xy[:, 1],
        s=MARKER_SIZE,
        c=points.colour if filled else "none",
        edgecolors=points.colour,
        linewidths=0.5,
        alpha=0.45 if filled else 0.6,
        label=label,
        rasterized=True,
    )


def _bar_style(colour: str, modality: str) -> dict:
    """Filled bars for images, hatched white ones for texts."""
    filled = modality == "image"
    return {
        "color": colour if filled else "white",
        "edgecolor": colour,
        "hatch": None if filled else "////",
    }


def draw_ellipsoids(fig: Figure, view: EllipsoidsView) -> None:
    for ax, panel in zip(_panels(fig, len(view.panels)), view.panels, strict=True):
        for points in panel.points:
            modality = points.modality
            _scatter(ax, points, label=modality)
            for sigmas, outline in panel.outlines[modality].items():
                ax.plot(
                    *outline.T,
                    color=points.colour,
                    linestyle=LINESTYLES[modality],
                    linewidth=ELLIPSE_WIDTHS[sigmas],
                )
            ax.plot(*panel.means[modality], marker="x", color="black", markersize=4)
        ax.plot(0, 0, marker="+", color="black", markersize=9, markeredgewidth=1.2, zorder=0.5)
        ax.annotate("origin", (0, 0), xytext=(4, 4), textcoords="offset points", fontsize=7)
        ax.set_aspect("equal", adjustable="datalim")
        ax.set_xlabel(panel.axis_titles[0])
        ax.set_ylabel(panel.axis_titles[1])
        ax.set_title(panel.title)
        ax.legend(loc="best", markerscale=2)


def draw_shell(fig: Figure, view: ShellView) -> None:
    for ax, panel in zip(_panels(fig, len(view.panels)), view.panels, strict=True):
        for steps in panel.steps:
            cv = "" if steps.cv is None else f" (CV {steps.cv:.3g})"
            ax.stairs(
                steps.density,
                steps.edges,
                color=steps.colour,
                linestyle=LINESTYLES[steps.modality],
                label=f"{steps.model} {steps.modality}{cv}",
            )
        ax.set_xlabel(_tex(panel.x_title))
        ax.set_ylabel(view.y_title)
        ax.legend(loc="upper left")


def draw_spectra(fig: Figure, view: SpectraView) -> None:
    for ax, panel in zip(_panels(fig, len(view.panels)), view.panels, strict=True):
        for spectrum in panel.spectra:
            ax.plot(
                np.arange(1, len(spectrum.values) + 1),
                spectrum.values,
                color=spectrum.colour,
                linestyle=LINESTYLES[spectrum.modality],
                linewidth=1.2,
                label=f"{spectrum.model}: effective rank {spectrum.rank:.1f} (dim {spectrum.dim})",
            )
            ax.axvline(spectrum.rank, color=spectrum.colour, linestyle=":", linewidth=0.9)
        ax.set_yscale("log")
        ax.set_xscale("log")
        ax.set_xlabel(view.x_title)
        ax.set_ylabel(_tex(view.y_title))
        ax.set_title(panel.title)
        ax.legend(loc="lower left")


def draw_conformity_vs_cosine(fig: Figure, view: ConformityView) -> None:
    for ax, panel in zip(_panels(fig, len(view.panels)), view.panels, strict=True):
        for points, fit in zip(panel.points, panel.fits, strict=True):
            _scatter(ax, points)
            if fit is not None:
                ax.plot(
                    fit.x,
                    fit.y,
                    color=points.colour,
                    linestyle=LINESTYLES[points.modality],
                    linewidth=1.2,
                    label=f"{points.model}: r = {fit.r:.4f}",
                )
        ax.set_xlabel(_tex(view.x_title))
        ax.set_ylabel(view.y_title)
        ax.set_title(panel.title)
        ax.legend(loc="upper left")


def draw_conformity_distributions(fig: Figure, view: DistributionsView) -> None:
    for ax, panel in zip(_panels(fig, len(view.panels)), view.panels, strict=True):
        for steps in panel.steps:
            ax.stairs(
                steps.density,
                steps.edges,
                color=steps.colour,
                linestyle=LINESTYLES[steps.modality],
                label=f"{steps.modality} (mean {steps.mean:.3g})",
            )
        ax.set_title(f"{panel.model}{panel.kl_note}")
        ax.set_xlabel(view.x_title)
        ax.set_ylabel(view.y_title)
        ax.legend(loc="upper left")


def draw_normality(fig: Figure, view: NormalityView) -> None:
    bars, qq = _panels(fig, 2)
    count = len(view.models)
    width = 0.8 / count
    drawn = False
    for m, model in enumerate(view.models):
        for g, ((_, modality), rate) in enumerate(zip(view.groups, model.rates, strict=True)):
            if rate is None:
                continue
            drawn = True
            bars.bar(
                g + (m - (count - 1) / 2) * width,
                rate,
                width,
                **_bar_style(model.colour, modality),
                label=model.model if g == 0 else None,
            )
    if drawn:
        bars.axhline(95, color="grey", linestyle=":", linewidth=0.8)
        bars.set_xticks(range(len(view.groups)), [tick for tick, _ in view.groups])
        bars.set_ylabel("coordinates passing (%)")
        bars.set_ylim(0, 105)
        bars.legend(loc="lower left")
    else:
        _note(bars, view.note)
    lines = [line for model in view.models for line in model.qq]
    for line in lines:
        qq.plot(
            line.theoretical,
            line.sample,
            color=line.colour,
            linestyle=LINESTYLES[line.modality],
            linewidth=0.9,
            label=f"{line.model} {line.modality}" if line.first else None,
        )
    if lines:
        limits = np.array(qq.get_xlim())
        qq.plot(limits, limits, color="black", linewidth=0.6)
        qq.set_xlabel("N(0, 1) quantile")
        qq.set_ylabel("whitened coordinate quantile")
        qq.legend(loc="upper left")
    else:
        _note(qq, view.note)


def draw_alignment(fig: Figure, view: AlignmentView) -> None:
    grid = fig.add_gridspec(2, len(view.similarity) + 1, height_ratios=(1.1, 1))
    bars = fig.add_subplot(grid[0, :])
    slots = len(view.bars)
    width = 0.8 / slots
    for slot, series in enumerate(view.bars):
        positions = np.arange(len(view.metrics)) + (slot - (slots - 1) / 2) * width
        bars.bar(
            positions,
            [np.nan if v is None else v for v in series.values],
            width,
            **_bar_style(series.colour, series.modality),
            label=f"{series.model} {series.modality}",
        )
        for position, value in zip(positions, series.values, strict=True):
            if value is None:
                bars.text(position, 0.01, "n/a", rotation=90, ha="center", va="bottom", fontsize=6)
    bars.axhline(0, color="black", linewidth=0.6)
    bars.set_xticks(range(len(view.metrics)), view.metrics)
    bars.set_ylim(*view.limits)
    bars.set_ylabel(f"vs {view.reference} (1 = same)")
    bars.legend(loc="upper right", ncols=min(slots, 4))
    low, high = view.scale
    maps = []
    for column, panel in enumerate(view.similarity):
        ax = fig.add_subplot(grid[1, column])
        image = ax.imshow(panel.matrix, cmap="viridis", vmin=low, vmax=high, interpolation="nearest")
        maps.append(ax)
        ax.set_title(f"{panel.model}: image cosines", color=panel.colour)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(image, ax=maps, fraction=0.046, pad=0.02, label="cosine (shared scale)")
    scatter = fig.add_subplot(grid[1, len(view.similarity)])
    for pairs in view.pairs:
        scatter.scatter(
            pairs.x, pairs.y, s=3, color=pairs.colour, alpha=0.5, label=pairs.model, rasterized=True
        )
    scatter.plot([low, high], [low, high], color="black", linewidth=0.6)
    scatter.set_xlabel(f"{view.reference} cosine")
    scatter.set_ylabel("model cosine")
    scatter.set_title("same image pairs")
    if view.note:
        fig.supxlabel(view.note, fontsize=7)


def draw_tsne(fig: Figure, view: TsneView) -> None:
    for ax, panel in zip(_panels(fig, len(view.panels)), view.panels, strict=True):
        for points in panel.points:
            _scatter(ax, points, label=points.modality)
        ax.set_title(panel.title)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.legend(loc="best", markerscale=2)


def draw_dense_maps(fig: Figure, view: DenseMapsView) -> None:
    axes = _panels(fig, len(view.panels), max_columns=view.columns)
    image = None
    for ax, panel in zip(axes, view.panels, strict=True):
        image = ax.imshow(
            panel.values, aspect="auto", interpolation="nearest", cmap="RdBu_r", vmin=-view.limit, vmax=view.limit
        )
        ax.set_title(f"{panel.title}\n{panel.caption}", fontsize=7)
        ax.set_yticks(range(len(panel.tokens)), panel.tokens, fontsize=5)
        ax.set_xticks([])
        ax.set_xlabel(f"patches ({panel.grid[0]} x {panel.grid[1]}, raster order)", fontsize=6)
    if image is not None:
        fig.colorbar(image, ax=axes, shrink=0.6, label="cosine")


DRAW: dict[str, Callable[[Figure, object], None]] = {
    "ellipsoids": draw_ellipsoids,
    "shell": draw_shell,
    "spectra": draw_spectra,
    "conformity_vs_cosine": draw_conformity_vs_cosine,
    "conformity_distributions": draw_conformity_distributions,
    "normality": draw_normality,
    "alignment": draw_alignment,
    "tsne": draw_tsne,
    "dense_maps": draw_dense_maps,
}


def pixel_size(info: FigureInfo) -> tuple[int, int]:
    """Width and height in pixels of the PNG of ``info``."""
    return round(info.size[0] * DPI), round(info.size[1] * DPI)


def save_figure(
    info: FigureInfo, view: object, folder: Path, draw: Callable[[Figure, object], None] | None = None
) -> Path:
    """Draw one figure from its view (with ``draw``, default the :data:`DRAW` entry of its name) and
    write ``folder/<name>.png`` atomically."""
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=info.size, dpi=DPI, layout="constrained")
        (draw or DRAW[info.name])(fig, view)
        fig.suptitle(info.title, fontsize=9)
        path = folder / f"{info.name}.png"
        with atomic_path(path) as tmp, writing(tmp):
            fig.savefig(tmp, format="png", dpi=DPI)
    return path


def save_figures(views: dict[FigureInfo, object], folder: Path) -> list[Path]:
    """Every figure of ``views`` (from :func:`lakd.report.views.figure_views`) as a PNG under ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    return [save_figure(info, view, folder) for info, view in views.items()]
