"""``report.html``: one self-contained page (plotly.js inlined by plotly itself, no network request).

Order: run description, the summary table (reference vs others, delta, green where a model sits
towards the reference and red where away, see :mod:`lakd.report.table`), the alignment
note, then one interactive plotly figure per figure view (:mod:`lakd.report.views`; builders in
:data:`BUILD` map a view to plotly traces), whose points show the item's id and caption on hover, and the
least-conforming items. Every user-supplied string (captions, ids, model names, specs) is escaped:
with :func:`esc` in the page's HTML, with :func:`ptext` (no quote entities, which plotly would show
literally) in what plotly renders; plotly's JSON escapes ``<`` and ``>`` inside its script tags.
"""

from __future__ import annotations

import html
from collections.abc import Callable

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from lakd.report.diagnosis import describe
from lakd.report.pairwise import AlignmentView
from lakd.report.points import ReportData
from lakd.report.series import Points, Series, Steps
from lakd.report.table import format_value
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

FIGURE_HEIGHT = 460
HOVER = "<b>%{customdata[0]}</b><br>%{customdata[1]}<extra>%{fullData.name}</extra>"
PLOTLY_CONFIG = {"displaylogo": False, "responsive": True}
DASHES = {"image": "solid", "text": "dash"}


def esc(text: object) -> str:
    """Escape for the page's own HTML (text and quoted attributes)."""
    return html.escape(str(text), quote=True)


def ptext(text: object) -> str:
    """Escape for text that plotly renders (hover, names, titles): ``<``, ``>`` and ``&`` only, since
    plotly's own HTML subset decodes just a few entities and would show ``&quot;`` literally."""
    return html.escape(str(text), quote=False)


def _hover_data(labels: list[tuple[str, str]]) -> list[list[str]]:
    """``[escaped id, escaped caption]`` per point: plotly renders hover text as its own HTML subset."""
    return [[ptext(item_id), ptext(caption)] for item_id, caption in labels]


def _points(points: Points) -> go.Scatter:
    filled = points.modality == "image"
    return go.Scatter(
        x=points.xy[:, 0],
        y=points.xy[:, 1],
        mode="markers",
        name=f"{ptext(points.model)} {points.modality}",
        legendgroup=f"{points.model} {points.modality}",
        showlegend=True,
        marker={
            "size": 5,
            "color": points.colour,
            "symbol": "circle" if filled else "circle-open",
            "opacity": 0.55 if filled else 0.75,
        },
        customdata=_hover_data(points.labels),
        hovertemplate=HOVER,
    )


def _line(x, y, series: Series, name: str, legend: bool = True, **line) -> go.Scatter:
    return go.Scatter(
        x=list(x),
        y=list(y),
        mode="lines",
        name=name,
        showlegend=legend,
        line={"color": series.colour, "dash": DASHES[series.modality], **line},
    )


def _stairs(steps: Steps) -> tuple[list[float], list[float]]:
    """Step-line coordinates (``shape="hv"``) of a histogram density: the last value repeated."""
    return steps.edges.tolist(), [*steps.density.tolist(), float(steps.density[-1])]


def build_ellipsoids(view: EllipsoidsView) -> go.Figure:
    fig = make_subplots(1, len(view.panels), subplot_titles=[ptext(panel.title) for panel in view.panels])
    for column, panel in enumerate(view.panels, start=1):
        for points in panel.points:
            fig.add_trace(_points(points), 1, column)
            for sigmas, outline in panel.outlines[points.modality].items():
                name = f"{ptext(points.model)} {points.modality} {sigmas}-sigma"
                fig.add_trace(_line(*outline.T, points, name, legend=False, width=2.0 / sigmas), 1, column)
        origin = go.Scatter(
            x=[0],
            y=[0],
            mode="markers+text",
            text=["origin"],
            textposition="top right",
            name="origin",
            marker={
                "symbol": "cross-thin",
                "size": 12,
                "color": "black",
                "line": {"width": 2, "color": "black"},
            },
            showlegend=False,
            hoverinfo="name",
        )
        fig.add_trace(origin, 1, column)
        fig.update_xaxes(title_text=ptext(panel.axis_titles[0]), row=1, col=column)
        fig.update_yaxes(
            title_text=ptext(panel.axis_titles[1]),
            scaleanchor=f"x{'' if column == 1 else column}",
            row=1,
            col=column,
        )
    return fig


def build_shell(view: ShellView) -> go.Figure:
    fig = make_subplots(1, len(view.panels), subplot_titles=[panel.x_title.text for panel in view.panels])
    for column, panel in enumerate(view.panels, start=1):
        for steps in panel.steps:
            name = f"{ptext(steps.model)} {steps.modality}"
            trace = _line(*_stairs(steps), steps, name, legend=column == 1, shape="hv")
            trace.legendgroup = name
            trace.hovertemplate = f"{name}: CV {format_value(steps.cv)}<extra></extra>"
            fig.add_trace(trace, 1, column)
        fig.update_xaxes(title_text=panel.x_title.text, row=1, col=column)
        fig.update_yaxes(title_text=view.y_title, row=1, col=column)
    return fig


def build_spectra(view: SpectraView) -> go.Figure:
    fig = make_subplots(1, len(view.panels), subplot_titles=[panel.title for panel in view.panels])
    for column, panel in enumerate(view.panels, start=1):
        for spectrum in panel.spectra:
            values, rank, who = spectrum.values, spectrum.rank, f"{ptext(spectrum.model)} {spectrum.modality}"
            name = f"{who}: effective rank {rank:.1f} (dim {spectrum.dim})"
            fig.add_trace(_line(np.arange(1, len(values) + 1), values, spectrum, name), 1, column)
            name = f"{who} effective rank {rank:.1f}"
            marker = _line([rank, rank], [values.min(), values.max()], spectrum, name, legend=False)
            marker.line.dash = "dot"
            fig.add_trace(marker, 1, column)
        fig.update_xaxes(type="log", title_text=view.x_title, row=1, col=column)
        fig.update_yaxes(type="log", title_text=view.y_title.text, row=1, col=column)
    return fig


def build_conformity_vs_cosine(view: ConformityView) -> go.Figure:
    fig = make_subplots(1, len(view.panels), subplot_titles=[panel.title for panel in view.panels])
    for column, panel in enumerate(view.panels, start=1):
        for points, fit in zip(panel.points, panel.fits, strict=True):
            fig.add_trace(_points(points), 1, column)
            if fit is not None:
                name = f"{ptext(points.model)} {points.modality} fit: r = {fit.r:.4f}"
                fig.add_trace(_line(fit.x, fit.y, points, name), 1, column)
        fig.update_xaxes(title_text=view.x_title.text, row=1, col=column)
        fig.update_yaxes(title_text=view.y_title, row=1, col=column)
    return fig


def build_conformity_distributions(view: DistributionsView) -> go.Figure:
    titles = [f"{ptext(panel.title)}{panel.kl_note}" for panel in view.panels]
    fig = make_subplots(1, len(view.panels), subplot_titles=titles)
    for column, panel in enumerate(view.panels, start=1):
        for steps in panel.steps:
            name = f"{ptext(steps.model)} {steps.modality} (mean {format_value(steps.mean)})"
            fig.add_trace(_line(*_stairs(steps), steps, name, shape="hv"), 1, column)
        fig.update_xaxes(title_text=view.x_title, row=1, col=column)
    return fig


def build_normality(view: NormalityView) -> go.Figure:
    fig = make_subplots(1, 2, subplot_titles=["coordinates passing (%)", "QQ plots of whitened coordinates"])
    for model in view.models:
        bars = [
            (tick, m, rate)
            for (tick, m), rate in zip(view.groups, model.rates, strict=True)
            if rate is not None
        ]
        if bars:
            bar = go.Bar(
                x=[tick for tick, _, _ in bars],
                y=[rate for _, _, rate in bars],
                name=ptext(model.model),
                marker={
                    "color": model.colour,
                    "pattern": {"shape": ["" if m == "image" else "/" for _, m, _ in bars]},
                },
            )
            fig.add_trace(bar, 1, 1)
        for line in model.qq:
            name = f"{ptext(line.model)} {line.modality} coordinate {line.coordinate}"
            fig.add_trace(_line(line.theoretical, line.sample, line, name, legend=line.first), 1, 2)
    fig.add_hline(95, line_dash="dot", line_color="grey", row=1, col=1)
    diagonal = go.Scatter(
        x=[-3, 3],
        y=[-3, 3],
        mode="lines",
        name="N(0, 1)",
        line={"color": "black", "width": 1},
        showlegend=False,
    )
    fig.add_trace(diagonal, 1, 2)
    fig.update_yaxes(range=[0, 105], row=1, col=1)
    fig.update_xaxes(title_text="N(0, 1) quantile", row=1, col=2)
    fig.update_layout(barmode="group")
    return fig


def build_alignment(view: AlignmentView) -> go.Figure:
    columns = len(view.similarity) + 1
    titles = ["alignment with the reference (1 = same)"]
    titles += [f"{ptext(panel.model)}: image cosines" for panel in view.similarity] + ["same image pairs"]
    specs = [[{"colspan": columns}] + [None] * (columns - 1), [{} for _ in range(columns)]]
    fig = make_subplots(2, columns, specs=specs, subplot_titles=titles, vertical_spacing=0.15)
    for series in view.bars:
        values = series.values
        bar = go.Bar(
            x=view.metrics,
            y=[0.0 if v is None else v for v in values],
            text=["n/a" if v is None else "" for v in values],
            textposition="outside",
            hovertext=["not computed" if v is None else format_value(v) for v in values],
            hovertemplate="%{x}: %{hovertext}<extra>%{fullData.name}</extra>",
            name=f"{ptext(series.model)} {series.modality}",
            marker={"color": series.colour, "pattern": {"shape": "" if series.modality == "image" else "/"}},
        )
        fig.add_trace(bar, 1, 1)
    low, high = view.scale
    for column, panel in enumerate(view.similarity, start=1):
        ids = [ptext(item_id) for item_id in panel.ids]
        heatmap = go.Heatmap(
            z=panel.matrix,
            x=ids,
            y=ids,
            zmin=low,
            zmax=high,
            colorscale="Viridis",
            showscale=column == 1,
            colorbar={"title": {"text": "cosine"}, "len": 0.42, "y": 0.0, "yanchor": "bottom", "x": 1.02},
            name=ptext(panel.model),
            hovertemplate="%{x} vs %{y}: %{z:.3f}<extra>%{fullData.name}</extra>",
        )
        fig.add_trace(heatmap, 2, column)
        fig.update_xaxes(showticklabels=False, row=2, col=column)
        fig.update_yaxes(showticklabels=False, autorange="reversed", row=2, col=column)
    for pairs in view.pairs:
        scatter = go.Scatter(
            x=pairs.x,
            y=pairs.y,
            mode="markers",
            name=f"{ptext(pairs.model)} vs {ptext(view.reference)} cosines",
            marker={"size": 4, "color": pairs.colour, "opacity": 0.5},
            hovertemplate="reference %{x:.3f}, model %{y:.3f}<extra>%{fullData.name}</extra>",
        )
        fig.add_trace(scatter, 2, columns)
    diagonal = go.Scatter(
        x=[low, high], y=[low, high], mode="lines", line={"color": "black", "width": 1}, showlegend=False
    )
    fig.add_trace(diagonal, 2, columns)
    fig.update_xaxes(title_text=f"{ptext(view.reference)} cosine", row=2, col=columns)
    fig.update_yaxes(title_text="model cosine", row=2, col=columns)
    fig.update_yaxes(range=list(view.limits), row=1, col=1)
    if view.note:
        fig.add_annotation(
            text=ptext(view.note), xref="paper", yref="paper", x=0, y=-0.08, showarrow=False, xanchor="left"
        )
    fig.update_layout(barmode="group", height=int(FIGURE_HEIGHT * 1.4))
    return fig


def build_tsne(view: TsneView) -> go.Figure:
    fig = make_subplots(1, len(view.panels), subplot_titles=[ptext(panel.title) for panel in view.panels])
    for column, panel in enumerate(view.panels, start=1):
        for points in panel.points:
            fig.add_trace(_points(points), 1, column)
        fig.update_xaxes(showticklabels=False, row=1, col=column)
        fig.update_yaxes(showticklabels=False, row=1, col=column)
    return fig


def build_dense_maps(view: DenseMapsView) -> go.Figure:
    rows = max(1, -(-len(view.panels) // view.columns))
    titles = [ptext(f"{panel.title}: {panel.caption}") for panel in view.panels]
    fig = make_subplots(rows, view.columns, subplot_titles=titles, vertical_spacing=0.08)
    for k, panel in enumerate(view.panels):
        row, column = divmod(k, view.columns)
        fig.add_trace(
            go.Heatmap(
                z=panel.values,
                y=[f"{t} ({i})" for i, t in enumerate(panel.tokens)],
                zmin=-view.limit,
                zmax=view.limit,
                colorscale="RdBu",
                reversescale=True,
                showscale=k == 0,
                colorbar={"title": "cosine"},
                hovertemplate="token %{y}<br>patch %{x}<br>cosine %{z:.3f}<extra></extra>",
            ),
            row + 1,
            column + 1,
        )
        fig.update_yaxes(autorange="reversed", row=row + 1, col=column + 1)
    fig.update_layout(height=260 * rows)
    return fig


BUILD: dict[str, Callable[[object], go.Figure]] = {
    "ellipsoids": build_ellipsoids,
    "shell": build_shell,
    "spectra": build_spectra,
    "conformity_vs_cosine": build_conformity_vs_cosine,
    "conformity_distributions": build_conformity_distributions,
    "normality": build_normality,
    "alignment": build_alignment,
    "tsne": build_tsne,
    "dense_maps": build_dense_maps,
}

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1200px;
       padding: 0 1em; color: #222; }
h1 { margin-bottom: 0.2em; } .meta { color: #555; font-size: 0.9em; }
table { border-collapse: collapse; font-size: 0.9em; margin: 0.5em 0 1em; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th { background: #f3f3f3; } td.label, th.label { text-align: left; }
td.towards { background: #d9f2d9; } td.away { background: #f8d7d7; }
.legend span { padding: 1px 6px; margin-right: 6px; }
section.figure { margin: 2em 0; } p.caption { color: #444; font-size: 0.9em; max-width: 60em; }
"""


def summary_table(metrics: dict) -> str:
    """The summary as an HTML table (values escaped; verdicts as td classes)."""
    names = [model["name"] for model in metrics["models"]]
    reference, others = names[0], names[1:]
    head = "<th class='label'>metric</th><th class='label'>modality</th>"
    head += f"<th>{esc(reference)}<br><small>reference</small></th>"
    for name in others:
        head += f"<th>{esc(name)}</th><th>delta<br><small>{esc(name)}</small></th>"
    body = []
    for row in metrics["summary"]:
        cells = [f"<td class='label'>{esc(row['label'])}</td><td class='label'>{esc(row['modality'])}</td>"]
        cells.append(f"<td>{esc(format_value(row['values'][reference], row['percent']))}</td>")
        for name in others:
            verdict = row["verdicts"].get(name) if row["deltas"].get(name) is not None else None
            css = f" class='{verdict}'" if verdict else ""
            title = f" title='{esc(row['note'])}'" if row.get("note") else ""
            value = format_value(row["values"][name], row["percent"])
            delta = format_value(row["deltas"].get(name), row["percent"], signed=True)
            cells.append(f"<td{css}{title}>{esc(value)}</td><td{css}{title}>{esc(delta)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table class='summary'><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def data_description(metrics: dict) -> str:
    """The data spec the models ran on, else the sources named by the embedding stores."""
    if metrics.get("data"):
        return str(metrics["data"])
    sources = sorted({str(m.get("source")) for m in metrics["models"]})
    return f"embedding stores of {', '.join(sources)}"


def run_description(run: dict | None) -> str:
    """The training run a report's entries come from (escaped HTML; "" for none)."""
    if not run:
        return ""
    teacher = f"{run['teacher']} ({run['teacher_from']})" if run["teacher"] else "none (the first checkpoint is the reference)"
    return (
        f"<p class='meta'>training run {esc(run['path'])} (student {esc(run['student'])}): checkpoints of steps "
        f"{esc(', '.join(map(str, run['steps'])))}; teacher {esc(teacher)}</p>"
    )


def description(metrics: dict) -> str:
    """Data, items, models (role, spec, dims, store) and sampling, as escaped HTML."""
    models = "".join(
        f"<li><b>{esc(m['name'])}</b> ({esc(m['role'])}): {esc(m['spec'])}, image dim {m['dims']['image']}, "
        f"text dim {m['dims']['text']}; embeddings {esc(m['embeddings'])}</li>"
        for m in metrics["models"]
    )
    sampling = metrics["sampling"]
    return (
        f"{run_description(metrics.get('run'))}"
        f"<p class='meta'>data: {esc(data_description(metrics))} &middot; {metrics['n_items']} items &middot; "
        f"text: {esc(metrics['text_view_description'])} &middot; analysis sample {sampling['analysis_sample_size']}, "
        f"plotted {sampling['plot_points']}, t-SNE {sampling['tsne_items']} items per modality, seed {sampling['seed']}"
        f" &middot; lakd {esc(metrics['lakd_version'])}</p><ul class='meta'>{models}</ul>"
    )


def least_conforming(data: ReportData, count: int = 5) -> str:
    """The reference's sampled images with the lowest conformity: id, caption, value (escaped)."""
    model = data.reference
    values = model.conformity["image"]["conformity"]
    order = np.argsort(values)[:count]
    rows = model.views["image"].indices[order]
    cells = "".join(
        f"<tr><td class='label'>{esc(item_id)}</td><td class='label'>{esc(caption)}</td><td>{values[k]:.4f}</td></tr>"
        for (item_id, caption), k in zip(data.label("image", rows), order, strict=True)
    )
    return (
        f"<h2>Least conforming images ({esc(model.name)}, sampled items)</h2>"
        f"<table><thead><tr><th class='label'>id</th><th class='label'>caption</th><th>conformity</th></tr></thead>"
        f"<tbody>{cells}</tbody></table>"
    )


def render_page(data: ReportData, views: dict[FigureInfo, object]) -> str:
    """The whole report page of ``data`` with the figures of ``views`` (from
    :func:`lakd.report.views.figure_views`); plotly.js is inlined once, by the first figure."""
    metrics = data.meta
    sections = [
        figure_section(info, BUILD[info.name](view), first=number == 0)
        for number, (info, view) in enumerate(views.items())
    ]
    legend = esc(metrics["verdict_rule"])
    return page(
        f"lakd geometry report: {', '.join(m['name'] for m in metrics['models'])}",
        f"<h1>Geometry report</h1>{description(metrics)}{diagnosis_section(metrics)}"
        f"<h2>Summary</h2><p class='legend'><span class='towards' style='background:#d9f2d9'>towards</span>"
        f"<span style='background:#f8d7d7'>away</span>{legend}</p>{summary_table(metrics)}"
        f"<p class='meta'>{esc(metrics['alignment']['note'])}</p>"
        f"<h2>Figures</h2>{''.join(sections)}{least_conforming(data)}"
        "<p class='meta'>Source of truth: metrics.json (every metric), metrics.csv (one row per model and "
        "modality), figures/*.png.</p>",
    )


def diagnosis_section(metrics: dict) -> str:
    """What each student did not inherit (:mod:`lakd.report.diagnosis`), at the top of the page."""
    diagnosis = metrics.get("diagnosis")
    if not diagnosis:
        return ""
    parts = []
    for line in describe(diagnosis):  # a student's line, then its properties (indented)
        parts.append(f"<li>{esc(line.strip())}</li>" if line.startswith("  ") else f"</ul><p>{esc(line)}</p><ul>")
    items = "".join(parts)
    return (
        "<h2 id='diagnosis'>What the students did not inherit</h2>"
        "<p class='legend'>For each student, the geometry properties farthest from the reference's, in units "
        "of each property's tolerance, the recipe term that targets each (docs/losses.md), and how far every "
        "student moved it against the baseline student.</p>"
        f"<div class='diagnosis'><ul>{items}</ul></div>"
    )


def figure_section(info: FigureInfo, fig: go.Figure, *, first: bool) -> str:
    """One figure of a page: its title, caption and interactive plotly figure (``first``: the page's
    first figure, which inlines plotly.js)."""
    fig.update_layout(
        height=fig.layout.height or FIGURE_HEIGHT,
        template="plotly_white",
        margin={"t": 60, "b": 40},
        legend={"font": {"size": 10}},
    )
    div = fig.to_html(full_html=False, include_plotlyjs=first, config=PLOTLY_CONFIG, div_id=f"figure-{info.name}")
    return (
        f"<section class='figure' id='{esc(info.name)}'><h3>{esc(info.title)}</h3>"
        f"<p class='caption'>{esc(info.caption)}</p>{div}</section>"
    )


def page(title: str, body: str) -> str:
    """A whole self-contained page: ``title`` (raw text, escaped here) and ``body`` (HTML)."""
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{esc(title)}</title><style>{STYLE}</style></head><body>{body}</body></html>\n"
    )
