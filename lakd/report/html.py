"""``report.html``: one self-contained page (plotly.js inlined by plotly itself, no network request).

Order: run description, the summary table (reference vs others, delta, green where a model sits
towards the reference and red where away, see :mod:`lakd.report.table`), the alignment
note, then one interactive plotly figure per entry of :data:`~lakd.report.points.FIGURES`
(builders in :data:`BUILD`), whose points show the item's id and caption on hover, and the
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

from lakd.report.figures import (
    ALIGNMENT_BARS,
    NORMALITY_TESTS,
    SIMILARITY_PANELS,
    alignment_values,
    bar_limits,
    left_out_note,
    similarity_pairs,
    similarity_range,
)
from lakd.report.inputs import MODALITIES
from lakd.report.points import (
    PLOTLY_DASHES,
    ModelData,
    ReportData,
    ellipse_outline,
    histogram_density,
    spectrum_values,
)
from lakd.report.table import format_value

FIGURE_HEIGHT = 460
HOVER = "<b>%{customdata[0]}</b><br>%{customdata[1]}<extra>%{fullData.name}</extra>"
PLOTLY_CONFIG = {"displaylogo": False, "responsive": True}


def esc(text: object) -> str:
    """Escape for the page's own HTML (text and quoted attributes)."""
    return html.escape(str(text), quote=True)


def ptext(text: object) -> str:
    """Escape for text that plotly renders (hover, names, titles): ``<``, ``>`` and ``&`` only, since
    plotly's own HTML subset decodes just a few entities and would show ``&quot;`` literally."""
    return html.escape(str(text), quote=False)


def _hover_data(data: ReportData, modality: str, rows: np.ndarray) -> list[list[str]]:
    """``[escaped id, escaped caption]`` per row: plotly renders hover text as its own HTML subset."""
    return [[ptext(item_id), ptext(caption)] for item_id, caption in data.label(modality, rows)]


def _points(
    data: ReportData, model: ModelData, modality: str, points: np.ndarray, rows: np.ndarray, legend: bool
) -> go.Scatter:
    filled = modality == "image"
    return go.Scatter(
        x=points[:, 0],
        y=points[:, 1],
        mode="markers",
        name=f"{ptext(model.name)} {modality}",
        legendgroup=f"{model.name} {modality}",
        showlegend=legend,
        marker={
            "size": 5,
            "color": model.colour,
            "symbol": "circle" if filled else "circle-open",
            "opacity": 0.55 if filled else 0.75,
        },
        customdata=_hover_data(data, modality, rows),
        hovertemplate=HOVER,
    )


def _line(x, y, model: ModelData, modality: str, name: str, legend: bool = True, **line) -> go.Scatter:
    return go.Scatter(
        x=list(x),
        y=list(y),
        mode="lines",
        name=name,
        showlegend=legend,
        line={"color": model.colour, "dash": PLOTLY_DASHES[modality], **line},
    )


def _model_titles(data: ReportData) -> list[str]:
    return [f"{ptext(m.name)} ({m.entry.role}, d={m.dim})" for m in data.models]


def build_ellipsoids(data: ReportData) -> go.Figure:
    fig = make_subplots(1, len(data.models), subplot_titles=_model_titles(data))
    for column, model in enumerate(data.models, start=1):
        projection = model.projection
        for modality in MODALITIES:
            rows = model.views[modality].indices
            fig.add_trace(_points(data, model, modality, projection.points[modality], rows, True), 1, column)
            for sigmas in (1, 2):
                outline = ellipse_outline(
                    projection.means[modality], projection.covariances[modality], sigmas
                )
                name = f"{ptext(model.name)} {modality} {sigmas}-sigma"
                fig.add_trace(
                    _line(*outline.T, model, modality, name, legend=False, width=2.0 / sigmas), 1, column
                )
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
        fig.update_xaxes(title_text=ptext(projection.axis_names[0]), row=1, col=column)
        fig.update_yaxes(
            title_text=ptext(projection.axis_names[1]),
            scaleanchor=f"x{'' if column == 1 else column}",
            row=1,
            col=column,
        )
    return fig


def _stairs(histogram: dict, scale: float = 1.0) -> tuple[list[float], list[float]]:
    """Step-line coordinates (``shape="hv"``) of a histogram density (see ``histogram_density``)."""
    density, edges = histogram_density(histogram, scale)
    return edges.tolist(), [*density.tolist(), float(density[-1])]


def build_shell(data: ReportData) -> go.Figure:
    keys = (("raw", "||x|| / E||x||"), ("centred", "||x - mu|| / E||x - mu||"))
    fig = make_subplots(1, 2, subplot_titles=[label for _, label in keys])
    for column, (key, label) in enumerate(keys, start=1):
        for model in data.models:
            for modality in MODALITIES:
                stats = model.result["modalities"][modality].get("shell", {}).get(key)
                if not stats or not stats.get("mean"):
                    continue
                x, y = _stairs(stats["histogram"], stats["mean"])
                name = f"{ptext(model.name)} {modality}"
                trace = _line(x, y, model, modality, name, legend=column == 1, shape="hv")
                trace.legendgroup = name
                trace.hovertemplate = f"{name}: CV {format_value(stats.get('cv'))}<extra></extra>"
                fig.add_trace(trace, 1, column)
        fig.update_xaxes(title_text=label, row=1, col=column)
        fig.update_yaxes(title_text="density", row=1, col=column)
    return fig


def build_spectra(data: ReportData) -> go.Figure:
    fig = make_subplots(1, 2, subplot_titles=[f"{m} (dotted: effective rank)" for m in MODALITIES])
    for column, modality in enumerate(MODALITIES, start=1):
        for model in data.models:
            spectrum = model.result["modalities"][modality].get("ellipsoid", {}).get("spectrum")
            if not spectrum:
                continue
            values, dim = spectrum_values(spectrum)
            if not len(values):
                continue
            rank = spectrum["effective_rank"]
            name = f"{ptext(model.name)} {modality}: effective rank {rank:.1f} (dim {dim})"
            fig.add_trace(_line(np.arange(1, len(values) + 1), values, model, modality, name), 1, column)
            marker = _line(
                [rank, rank],
                [values.min(), values.max()],
                model,
                modality,
                f"{ptext(model.name)} {modality} effective rank {rank:.1f}",
                legend=False,
            )
            marker.line.dash = "dot"
            fig.add_trace(marker, 1, column)
        fig.update_xaxes(type="log", title_text="eigenvalue index", row=1, col=column)
        fig.update_yaxes(type="log", title_text="lambda_i / sum lambda", row=1, col=column)
    return fig


def build_conformity_vs_cosine(data: ReportData) -> go.Figure:
    fig = make_subplots(1, 2, subplot_titles=list(MODALITIES))
    for column, modality in enumerate(MODALITIES, start=1):
        for model in data.models:
            points = model.conformity[modality]
            xy = np.stack([points["cosine_to_mean"], points["conformity"]], axis=1)
            fig.add_trace(_points(data, model, modality, xy, model.views[modality].indices, True), 1, column)
            fit = model.result["modalities"][modality].get("conformity", {}).get("fit_vs_cosine_to_mean", {})
            if fit.get("slope") is not None:
                x = np.array([xy[:, 0].min(), xy[:, 0].max()])
                name = f"{ptext(model.name)} {modality} fit: r = {fit['pearson_r']:.4f}"
                fig.add_trace(_line(x, fit["slope"] * x + fit["intercept"], model, modality, name), 1, column)
        fig.update_xaxes(title_text="cos(x, mu)", row=1, col=column)
        fig.update_yaxes(title_text="conformity", row=1, col=column)
    return fig


def build_conformity_distributions(data: ReportData) -> go.Figure:
    fig = make_subplots(1, len(data.models), subplot_titles=_model_titles(data))
    for column, model in enumerate(data.models, start=1):
        for modality in MODALITIES:
            stats = model.result["modalities"][modality].get("conformity", {}).get("distribution")
            if stats:
                x, y = _stairs(stats["histogram"])
                name = f"{ptext(model.name)} {modality} (mean {format_value(stats['mean'])})"
                fig.add_trace(_line(x, y, model, modality, name, shape="hv"), 1, column)
        fig.update_xaxes(title_text="conformity", row=1, col=column)
    return fig


def build_normality(data: ReportData) -> go.Figure:
    fig = make_subplots(1, 2, subplot_titles=["coordinates passing (%)", "QQ plots of whitened coordinates"])
    groups = [(test, short, modality) for test, short in NORMALITY_TESTS for modality in MODALITIES]
    for model in data.models:
        x, y, patterns = [], [], []
        for test, short, modality in groups:
            normality = model.result["modalities"][modality].get("normality", {})
            if test in normality:
                x.append(f"{short} {modality}")
                y.append(100 * normality[test]["pass_rate"])
                patterns.append("" if modality == "image" else "/")
        if x:
            bar = go.Bar(
                x=x,
                y=y,
                name=ptext(model.name),
                marker={"color": model.colour, "pattern": {"shape": patterns}},
            )
            fig.add_trace(bar, 1, 1)
        for modality in MODALITIES:
            for k, qq in enumerate(
                model.result["modalities"][modality].get("normality", {}).get("qq", [])[:2]
            ):
                name = f"{ptext(model.name)} {modality} coordinate {qq['coordinate']}"
                fig.add_trace(
                    _line(qq["theoretical"], qq["sample"], model, modality, name, legend=k == 0), 1, 2
                )
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


def build_alignment(data: ReportData) -> go.Figure:
    shown = data.models[:SIMILARITY_PANELS]
    columns = len(shown) + 1
    titles = ["alignment with the reference (1 = same)"]
    titles += [f"{ptext(m.name)}: image cosines" for m in shown] + ["same image pairs"]
    specs = [[{"colspan": columns}] + [None] * (columns - 1), [{} for _ in range(columns)]]
    fig = make_subplots(2, columns, specs=specs, subplot_titles=titles, vertical_spacing=0.15)
    labels = [name for name, _ in ALIGNMENT_BARS]
    drawn: list[float | None] = []
    for model in data.others:
        for modality in MODALITIES:
            values = alignment_values(model, modality)
            drawn += values
            bar = go.Bar(
                x=labels,
                y=[0.0 if v is None else v for v in values],
                text=["n/a" if v is None else "" for v in values],
                textposition="outside",
                hovertext=["not computed" if v is None else format_value(v) for v in values],
                hovertemplate="%{x}: %{hovertext}<extra>%{fullData.name}</extra>",
                name=f"{ptext(model.name)} {modality}",
                marker={"color": model.colour, "pattern": {"shape": "" if modality == "image" else "/"}},
            )
            fig.add_trace(bar, 1, 1)
    low, high = similarity_range(shown)
    for column, model in enumerate(shown, start=1):
        ids = [ptext(item_id) for item_id, _ in data.label("image", model.similarity["rows"])]
        heatmap = go.Heatmap(
            z=model.similarity["matrix"],
            x=ids,
            y=ids,
            zmin=low,
            zmax=high,
            colorscale="Viridis",
            showscale=column == 1,
            colorbar={"title": {"text": "cosine"}, "len": 0.42, "y": 0.0, "yanchor": "bottom", "x": 1.02},
            name=ptext(model.name),
            hovertemplate="%{x} vs %{y}: %{z:.3f}<extra>%{fullData.name}</extra>",
        )
        fig.add_trace(heatmap, 2, column)
        fig.update_xaxes(showticklabels=False, row=2, col=column)
        fig.update_yaxes(showticklabels=False, autorange="reversed", row=2, col=column)
    for model in shown[1:]:
        pairs = similarity_pairs(data.reference, model)
        if pairs is not None:
            scatter = go.Scatter(
                x=pairs[0],
                y=pairs[1],
                mode="markers",
                name=f"{ptext(model.name)} vs {ptext(data.reference.name)} cosines",
                marker={"size": 4, "color": model.colour, "opacity": 0.5},
                hovertemplate="reference %{x:.3f}, model %{y:.3f}<extra>%{fullData.name}</extra>",
            )
            fig.add_trace(scatter, 2, columns)
    diagonal = go.Scatter(
        x=[low, high], y=[low, high], mode="lines", line={"color": "black", "width": 1}, showlegend=False
    )
    fig.add_trace(diagonal, 2, columns)
    fig.update_xaxes(title_text=f"{ptext(data.reference.name)} cosine", row=2, col=columns)
    fig.update_yaxes(title_text="model cosine", row=2, col=columns)
    fig.update_yaxes(range=list(bar_limits(drawn)), row=1, col=1)
    note = left_out_note(data)
    if note:
        fig.add_annotation(
            text=ptext(note), xref="paper", yref="paper", x=0, y=-0.08, showarrow=False, xanchor="left"
        )
    fig.update_layout(barmode="group", height=int(FIGURE_HEIGHT * 1.4))
    return fig


def build_tsne(data: ReportData) -> go.Figure:
    fig = make_subplots(1, len(data.models), subplot_titles=_model_titles(data))
    for column, model in enumerate(data.models, start=1):
        for modality in MODALITIES:
            tsne = model.tsne[modality]
            fig.add_trace(_points(data, model, modality, tsne["points"], tsne["rows"], True), 1, column)
        fig.update_xaxes(showticklabels=False, row=1, col=column)
        fig.update_yaxes(showticklabels=False, row=1, col=column)
    return fig


BUILD: dict[str, Callable[[ReportData], go.Figure]] = {
    "ellipsoids": build_ellipsoids,
    "shell": build_shell,
    "spectra": build_spectra,
    "conformity_vs_cosine": build_conformity_vs_cosine,
    "conformity_distributions": build_conformity_distributions,
    "normality": build_normality,
    "alignment": build_alignment,
    "tsne": build_tsne,
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


def description(metrics: dict) -> str:
    """Data, items, models (role, spec, dims, store) and sampling, as escaped HTML."""
    models = "".join(
        f"<li><b>{esc(m['name'])}</b> ({esc(m['role'])}): {esc(m['spec'])}, image dim {m['dims']['image']}, "
        f"text dim {m['dims']['text']}; embeddings {esc(m['embeddings'])}</li>"
        for m in metrics["models"]
    )
    sampling = metrics["sampling"]
    return (
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


def render_page(data: ReportData) -> str:
    """The whole report page; plotly.js is inlined once, by the first figure."""
    metrics, sections = data.meta, []
    for number, info in enumerate(data.figures()):
        fig = BUILD[info.name](data)
        fig.update_layout(
            height=fig.layout.height or FIGURE_HEIGHT,
            template="plotly_white",
            margin={"t": 60, "b": 40},
            legend={"font": {"size": 10}},
        )
        div = fig.to_html(
            full_html=False, include_plotlyjs=number == 0, config=PLOTLY_CONFIG, div_id=f"figure-{info.name}"
        )
        sections.append(
            f"<section class='figure' id='{info.name}'><h3>{esc(info.title)}</h3>"
            f"<p class='caption'>{esc(info.caption)}</p>{div}</section>"
        )
    legend = esc(metrics["verdict_rule"])
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>lakd geometry report: {esc(', '.join(m['name'] for m in metrics['models']))}</title>"
        f"<style>{STYLE}</style></head><body>"
        f"<h1>Geometry report</h1>{description(metrics)}"
        f"<h2>Summary</h2><p class='legend'><span class='towards' style='background:#d9f2d9'>towards</span>"
        f"<span style='background:#f8d7d7'>away</span>{legend}</p>{summary_table(metrics)}"
        f"<p class='meta'>{esc(metrics['alignment']['note'])}</p>"
        f"<h2>Figures</h2>{''.join(sections)}{least_conforming(data)}"
        "<p class='meta'>Source of truth: metrics.json (every metric), metrics.csv (one row per model and "
        "modality), figures/*.png.</p></body></html>\n"
    )
