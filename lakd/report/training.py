"""``lakd train plot RUN``: a run's curves as ``RUN/training.html`` (self-contained plotly, the
page conventions of :mod:`lakd.report.html`) and ``RUN/plots/<figure>.png`` (matplotlib, those of
:mod:`lakd.report.figures`).

The views of :func:`lakd.report.curves.curve_views` are built once; :func:`draw_curves` (matplotlib)
and :func:`build_curves` (plotly) only draw them: a line with markers per curve (gaps where a value
is null), the teacher's value as a dotted line in the curve's colour, guides grey and dashed, marked
steps as red dotted vertical lines.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator
from plotly.subplots import make_subplots

from lakd import __version__
from lakd.errors import LakdError
from lakd.io import write_text
from lakd.report.curves import COLUMNS, FAMILIES, CurvePanel, CurvesView, curve_views
from lakd.report.figures import _panels, save_figure
from lakd.report.html import esc, figure_section, page, ptext
from lakd.report.table import format_value
from lakd.report.views import FigureInfo
from lakd.runs import RunFolder

HTML_NAME = "training.html"
PLOTS_DIR = "plots"
MARK_COLOUR = "#d62728"
GUIDE_COLOUR = "#7f7f7f"
ROW_HEIGHT = 270  # pixels per row of panels in the page


def plain(text: str) -> str:
    """Text for matplotlib, whose ``$...$`` would be mathtext."""
    return text.replace("$", r"\$")


def teacher_label(name: str, value: float) -> str:
    return f"teacher {name}: {format_value(value)}"


def legend_wanted(panel: CurvePanel) -> bool:
    """Whether a panel needs its lines named (more than one curve, or guides); a single curve is
    named by the panel's title."""
    return len(panel.curves) > 1 or bool(panel.guides)


def draw_curves(fig: Figure, view: CurvesView) -> None:
    """The matplotlib adapter: one axes per panel."""
    for ax, panel in zip(_panels(fig, len(view.panels), COLUMNS), view.panels, strict=True):
        for curve in panel.curves:
            values = np.array([np.nan if v is None else v for v in curve.values], dtype=float)
            ax.plot(curve.steps, values, color=curve.colour, marker="o", markersize=2.5, linewidth=1.2, label=plain(curve.name))
            if curve.teacher is not None:
                ax.axhline(curve.teacher, color=curve.colour, linestyle=":", linewidth=1.0)
        for guide in panel.guides:
            ax.axhline(guide.value, color=GUIDE_COLOUR, linestyle="--", linewidth=0.8, label=plain(guide.label))
        for k, step in enumerate(panel.marks):
            label = panel.mark_label if k == 0 else None
            ax.axvline(step, color=MARK_COLOUR, linestyle=":", linewidth=1.0, label=label)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(plain(panel.title))
        ax.set_xlabel(view.x_title)
        if legend_wanted(panel) or panel.marks:
            handles, labels = ax.get_legend_handles_labels()
            if any(curve.teacher is not None for curve in panel.curves):
                handles.append(Line2D([], [], color="black", linestyle=":", linewidth=1.0))
                labels.append("teacher (dotted)")
            ax.legend(handles, labels, loc="best", fontsize=5.5, ncols=2 if len(labels) > 5 else 1)


def build_curves(view: CurvesView) -> go.Figure:
    """The plotly adapter: one subplot per panel; legend entries grouped under the panel's title."""
    columns = min(len(view.panels), COLUMNS)
    rows = math.ceil(len(view.panels) / columns)
    titles = [ptext(panel.title) for panel in view.panels]
    fig = make_subplots(rows, columns, subplot_titles=titles, vertical_spacing=0.5 / rows if rows > 1 else 0.1)
    for k, panel in enumerate(view.panels):
        row, col = k // columns + 1, k % columns + 1
        low, high = panel.step_range
        group = {"legendgroup": f"panel-{k}", "legendgrouptitle_text": ptext(panel.title), "showlegend": legend_wanted(panel)}
        for curve in panel.curves:
            name = ptext(curve.name)
            line = go.Scatter(
                x=curve.steps,
                y=curve.values,
                mode="lines+markers",
                name=name,
                line={"color": curve.colour},
                marker={"size": 5},
                connectgaps=False,
                hovertemplate=f"step %{{x}}: %{{y:.4g}}<extra>{name}</extra>",
                **group,
            )
            fig.add_trace(line, row, col)
            if curve.teacher is not None:
                label = ptext(teacher_label(curve.name, curve.teacher))
                reference = go.Scatter(
                    x=[low, high],
                    y=[curve.teacher, curve.teacher],
                    mode="lines",
                    name=label,
                    line={"color": curve.colour, "dash": "dot", "width": 1.5},
                    hovertemplate=f"{label}<extra></extra>",
                    **group,
                )
                fig.add_trace(reference, row, col)
        for guide in panel.guides:
            label = ptext(guide.label)
            trace = go.Scatter(
                x=[low, high],
                y=[guide.value, guide.value],
                mode="lines",
                name=label,
                line={"color": GUIDE_COLOUR, "dash": "dash", "width": 1},
                hovertemplate=f"{label}<extra></extra>",
                **group,
            )
            fig.add_trace(trace, row, col)
        for step in panel.marks:
            fig.add_vline(step, line_dash="dot", line_color=MARK_COLOUR, row=row, col=col)
        ticks = {"tick0": low, "dtick": 1} if high - low <= 10 else {}  # whole steps only
        fig.update_xaxes(title_text=view.x_title, row=row, col=col, **ticks)
    fig.update_layout(height=ROW_HEIGHT * rows + 120, legend={"groupclick": "toggleitem"})
    return fig


def describe_run(run: RunFolder, records: list[dict]) -> str:
    """The run in one paragraph (escaped HTML): student, teacher, recipe, steps, what was logged."""
    config = run.settings()
    section = {key: config.get(key) if isinstance(config.get(key), dict) else {} for key in ("student", "teacher", "schedule", "eval")}
    teacher = section["teacher"]
    who = teacher.get("model") or teacher.get("store")
    counts = {kind: sum(r["kind"] == kind for r in records) for kind in ("train", "eval", "nan")}
    reference = "the teacher's values as reference" if any(r["kind"] == "teacher" for r in records) else "no teacher reference"
    parts = [
        f"run {esc(run.path)}",
        f"student {esc(section['student'].get('model'))}",
        f"teacher {esc(teacher.get('kind', 'none'))}" + (f" ({esc(who)})" if who else ""),
        f"recipe {esc(json.dumps(config.get('recipe')))}",
        f"{esc(section['schedule'].get('steps'))} steps planned, last logged step {max(r['step'] for r in records)}",
        f"{counts['train']} training logs, {counts['eval']} evaluations on {esc(section['eval'].get('data'))}, {reference}",
        f"{counts['nan']} non-finite steps",
        f"lakd {esc(__version__)}",
    ]
    return f"<p class='meta'>{' &middot; '.join(parts)}</p>"


def training_page(run: RunFolder, records: list[dict], views: dict[FigureInfo, CurvesView]) -> str:
    """The whole training page of ``run`` with the figures of ``views``."""
    sections = [
        figure_section(info, build_curves(view), first=number == 0) for number, (info, view) in enumerate(views.items())
    ]
    return page(
        f"lakd training run: {run.path.name}",
        f"<h1>Training run {esc(run.path.name)}</h1>{describe_run(run, records)}{''.join(sections)}"
        f"<p class='meta'>Source of truth: metrics.jsonl; the same figures as PNGs in {PLOTS_DIR}/.</p>",
    )


def plot_run(run: str | Path) -> list[Path]:
    """Write ``RUN/training.html`` and ``RUN/plots/*.png`` of the run folder ``run``; returns their
    paths (the page first). PNGs of figures that no longer have data are removed."""
    folder = RunFolder(Path(run)).check()
    records = folder.records()
    if not any(r["kind"] in ("train", "eval") for r in records):
        raise LakdError(f"{folder.metrics_file}: no training or evaluation records; nothing to plot yet")
    views = curve_views(records)
    plots = folder.path / PLOTS_DIR
    pngs = [save_figure(info, view, plots, draw=draw_curves) for info, view in views.items()]
    for stale in sorted(plots.glob("*.png")):
        if stale not in pngs and (stale.stem in FAMILIES or stale.stem.startswith("geometry_")):
            stale.unlink()
    html = folder.path / HTML_NAME
    write_text(html, training_page(folder, records, views))
    return [html, *pngs]
