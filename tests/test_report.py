"""``lakd geometry report`` from embedding stores: files, metrics.json / metrics.csv content, figures,
escaping, summary verdicts, bad input before any work, overwrite protection, atomic output."""

from __future__ import annotations

import copy
import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import lakd.models.embed
import lakd.report.build as build
from lakd.analysis import AnalysisConfig, GeometryResult, analyze
from lakd.cli import main
from lakd.data.store import EmbeddingStore, write_store
from lakd.errors import LakdError
from lakd.report import ReportConfig, geometry_report, report_summary
from lakd.report.figures import DRAW, pixel_size, save_figure
from lakd.report.html import (
    BUILD,
    _hover_data,
    build_alignment,
    build_conformity_distributions,
    render_page,
    summary_table,
)
from lakd.report.inputs import REPORT_FORMAT, ModelInput
from lakd.report.pairwise import SIMILARITY_PANELS, alignment_view, bar_limits
from lakd.report.points import ReportData
from lakd.report.series import spectrum_values
from lakd.report.table import legend_text, summary_rows, verdict
from lakd.report.views import FIGURES, VIEWS, distributions_view, figure_views

N = 80
EVIL = '<script>window.__pwned = 1</script> & <b>"bold"</b>'


def synthetic_store(path: Path, dim: int, seed: int, n: int = N, prefix: str = "item") -> EmbeddingStore:
    """Two captions per item (text rows 2n); image and text share an 8-d latent, offset means."""
    rng = np.random.default_rng(seed)
    latent = np.random.default_rng(0).normal(size=(n, 8))
    mix = rng.normal(size=(8, dim))
    image = latent @ mix + 2.0 + 0.1 * rng.normal(size=(n, dim))
    text = np.repeat(latent @ mix, 2, axis=0) - 1.0 + 0.3 * rng.normal(size=(2 * n, dim))
    captions = [
        c for i in range(n) for c in ((EVIL if i == 0 else f"first caption {i}"), f"second caption {i}")
    ]
    return write_store(
        path,
        torch.tensor(image, dtype=torch.float32),
        model=f"synthetic-{dim}",
        source="synthetic",
        text=torch.tensor(text, dtype=torch.float32),
        text_item=torch.arange(n).repeat_interleave(2),
        captions=captions,
        ids=[f"{prefix}-{i:03d}" for i in range(n)],
    )


@pytest.fixture(scope="module")
def stores(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("stores")
    paths = {
        "teacher": (48, 1, N, "item"),
        "student": (24, 2, N, "item"),
        "short": (24, 3, 50, "item"),
        "other_ids": (24, 4, N, "other"),
    }
    for name, (dim, seed, n, prefix) in paths.items():
        synthetic_store(root / name, dim, seed, n, prefix)
    return {name: root / name for name in paths}


def small(out: Path, **fields) -> ReportConfig:
    return ReportConfig(out=str(out), tsne_items=30, plot_points=N, similarity_items=20, **fields)


CAPTURED: dict[str, ReportData] = {}


@pytest.fixture(scope="module")
def pair(stores, tmp_path_factory) -> Path:
    """The teacher-vs-student report; its ReportData is kept in CAPTURED["pair"]."""
    out = tmp_path_factory.mktemp("pair") / "report"

    def capture(data, views):
        CAPTURED["pair"] = data
        return render_page(data, views)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(build, "render_page", capture)
        return geometry_report(small(out, teacher=str(stores["teacher"]), students=(str(stores["student"]),)))


@pytest.fixture(scope="module")
def single(stores, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("single") / "report"
    return geometry_report(small(out, embeddings=(str(stores["teacher"]),), text_view="all"))


def metrics_of(report: Path) -> dict:
    return json.loads((report / "metrics.json").read_text())


def test_both_renderers_draw_every_figure():
    assert set(DRAW) == set(BUILD) == set(VIEWS) == {info.name for info in FIGURES}
    assert len(FIGURES) == 9


def test_both_renderers_draw_each_figure_from_one_view(pair, tmp_path, monkeypatch):
    """The views are built once per report; the PNG and the HTML of a figure get the same object."""
    data = CAPTURED["pair"]
    received: dict[str, dict] = {"png": {}, "html": {}}
    for kind, registry in (("png", DRAW), ("html", BUILD)):
        for name, render in list(registry.items()):

            def record(*args, kind=kind, name=name, render=render):
                received[kind][name] = args[-1]
                return render(*args)

            monkeypatch.setitem(registry, name, record)
    built = []

    def build_once(report):
        built.append(figure_views(report))
        return built[-1]

    monkeypatch.setattr(build, "figure_views", build_once)
    build.write_report(ReportData(data.models, data.labels, dict(data.meta)), tmp_path)
    assert len(built) == 1
    assert list(built[0]) == [info for info in FIGURES if not info.dense]  # stores: no dense maps
    for info, view in built[0].items():
        assert received["png"][info.name] is view and received["html"][info.name] is view, info.name


def test_two_model_report_writes_every_file(pair):
    assert sorted(p.name for p in pair.iterdir()) == ["figures", "metrics.csv", "metrics.json", "report.html"]
    pngs = {p.stem: p for p in (pair / "figures").glob("*.png")}
    assert set(pngs) == {info.name for info in FIGURES if not info.dense}
    for info in (info for info in FIGURES if not info.dense):
        assert pngs[info.name].stat().st_size > 10_000
        with Image.open(pngs[info.name]) as image:
            assert image.format == "PNG"
            assert image.size == pixel_size(info)
            # not blank: the figure has ink in many colours
            assert len(image.convert("RGB").getcolors(1 << 20)) > 20
    assert pixel_size(FIGURES[0]) == (1050, 630)  # 7 x 4.2 in at 150 dpi: a two-column paper figure
    assert metrics_of(pair)["figures"] == [f"figures/{info.name}.png" for info in FIGURES if not info.dense]
    assert "given as embeddings" in metrics_of(pair)["dense_maps"]["skipped"]


def test_metrics_json_is_the_source_of_truth(pair, stores):
    metrics = metrics_of(pair)
    assert metrics["format"] == "lakd-geometry-report/1" and metrics["lakd_version"]
    assert metrics["n_items"] == N and metrics["text_view"] == "paired" and metrics["text_rows"] == N
    assert [(m["name"], m["role"], m["dims"]["image"]) for m in metrics["models"]] == [
        ("teacher", "teacher", 48),
        ("student", "student", 24),
    ]
    assert metrics["models"][0]["embeddings"] == str(stores["teacher"])
    assert metrics["reference"] == "teacher"
    assert metrics["sampling"] == {
        "seed": 0,
        "analysis_sample_size": 2000,
        "plot_points": N,
        "tsne_items": 30,
        "similarity_items": 20,
    }
    results = {name: GeometryResult.from_dict(r) for name, r in metrics["results"].items()}
    assert results["teacher"].alignment == {}
    assert results["student"].modalities["image"]["dim"] == 24
    # the stored alignment is what analyze() gives on the same stores
    teacher, student = EmbeddingStore(stores["teacher"]), EmbeddingStore(stores["student"])
    views = lambda s: {"image": s.load("image"), "text": s.load("text_paired")}  # noqa: E731
    direct = analyze(views(student), reference=views(teacher), config=AnalysisConfig(sample_size=2000))
    assert results["student"].alignment["image"]["linear_cka"] == pytest.approx(
        direct.alignment["image"]["linear_cka"]
    )
    assert metrics["alignment"]["dims_differ"] is True
    note = metrics["alignment"]["note"]
    assert "CKA" in note and "Procrustes" in note and "zero padding" in note and "teacher: 48" in note


def test_summary_compares_dim_free_metrics_only_when_dims_differ(pair):
    rows = {(r["label"], r["modality"]): r for r in metrics_of(pair)["summary"]}
    offset = rows[("offset ratio", "image")]
    assert offset["deltas"]["student"] == pytest.approx(
        offset["values"]["student"] - offset["values"]["teacher"]
    )
    assert offset["verdicts"]["student"] in {"towards", "away"}
    rank = rows[("eff. rank", "image")]
    assert rank["values"]["student"] is not None and rank["deltas"]["student"] is None
    assert rank["verdicts"]["student"] is None and "dimension" in rank["note"]
    cka = rows[("CKA to reference", "image")]
    assert cka["values"]["teacher"] is None and 0 <= cka["values"]["student"] <= 1


def test_metrics_csv_has_one_row_per_model_and_modality(pair):
    frame = pd.read_csv(pair / "metrics.csv")
    assert list(zip(frame["model"], frame["modality"], strict=True)) == [
        (model, modality)
        for model in ("teacher", "student")
        for modality in ("image", "text", "image_vs_text")
    ]
    metrics = metrics_of(pair)
    student_image = frame[(frame["model"] == "student") & (frame["modality"] == "image")].iloc[0]
    result = metrics["results"]["student"]
    assert student_image["ellipsoid.offset_ratio"] == pytest.approx(
        result["modalities"]["image"]["ellipsoid"]["offset_ratio"]
    )
    assert student_image["alignment.linear_cka"] == pytest.approx(result["alignment"]["image"]["linear_cka"])
    assert student_image["dim"] == 24 and student_image["role"] == "student"
    pair_row = frame[(frame["model"] == "teacher") & (frame["modality"] == "image_vs_text")].iloc[0]
    assert pair_row["gap.gap_norm"] == pytest.approx(
        metrics["results"]["teacher"]["cross_modal"]["image_vs_text"]["gap"]["gap_norm"]
    )
    assert not any(isinstance(v, str) and v.startswith("[") for v in frame.to_numpy().ravel())


def test_html_is_self_contained_and_escapes_captions(pair):
    page = (pair / "report.html").read_text()
    assert page.count("<script") >= 8 and "<script src" not in page and "<link" not in page
    assert "Plotly.newPlot" in page and len(page) > 1_000_000  # plotly.js is inlined
    assert page.index("<table class='summary'>") < page.index("figure-ellipsoids")  # summary first
    assert "<script>window.__pwned" not in page and '<b>"bold"' not in page
    assert "&lt;script&gt;window.__pwned = 1&lt;" in page and r"&amp; &lt;b&gt;\"bold\"&lt;" in page
    assert "item-000" in page  # hover data carries ids
    assert "class='towards'" in page or "class='away'" in page


def test_one_model_report(single):
    metrics = metrics_of(single)
    assert [m["role"] for m in metrics["models"]] == ["model"]
    assert metrics["text_view"] == "all" and metrics["text_rows"] == 2 * N
    assert sorted(p.stem for p in (single / "figures").glob("*.png")) == sorted(
        info.name for info in FIGURES if not info.pairwise
    )
    assert metrics["alignment"]["note"].startswith("One model")
    assert all(row["deltas"] == {} for row in metrics["summary"])
    text = metrics["results"]["teacher"]["modalities"]["text"]
    assert text["rows"] == 2 * N
    summary = report_summary(single)
    assert "offset ratio" in summary and f"report: {single / 'report.html'}" in summary
    assert "(figures/: 7 PNG, metrics.json, metrics.csv)" in summary


def test_cli_report_from_stores(stores, tmp_path, capsys):
    out = tmp_path / "cli"
    args = [
        "geometry",
        "report",
        "--embeddings",
        str(stores["teacher"]),
        "--embeddings",
        str(stores["student"]),
    ]
    assert main([*args, "--out", str(out), "--tsne-items", "20", "--seed", "3"]) == 0
    printed = capsys.readouterr().out
    assert "teacher" in printed and "student" in printed and "delta" in printed
    assert "offset ratio" in printed and f"report: {out / 'report.html'}" in printed
    metrics = metrics_of(out)
    assert metrics["sampling"]["seed"] == 3 and metrics["sampling"]["tsne_items"] == 20
    assert [m["role"] for m in metrics["models"]] == ["model", "model"]
    assert metrics["data"] is None and metrics["results"]["student"]["alignment"]
    # an existing report is kept without --overwrite: one line, exit 1
    assert main([*args, "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "--overwrite" in err and len(err.strip().splitlines()) == 1


def test_verdict_rules_per_metric():
    assert verdict(0.95, 1.0) == "towards" and verdict(0.5, 1.0) == "away"  # relative: within 10%
    # no absolute floor: a shell CV of 0.015 is three times the reference's 0.005
    assert verdict(0.015, 0.005) == "away" and verdict(0.0052, 0.005) == "towards"
    assert verdict(0.0, 0.0) == "towards" and verdict(0.01, 0.0) == "away"
    # conformity r: 1 - r on a log scale (0.995 is 25 times farther from 1 than 0.9998)
    assert verdict(0.995, 0.9998, rule="pearson_r") == "away"
    assert verdict(0.9997, 0.9998, rule="pearson_r") == "towards"
    assert (
        verdict(0.9, 0.95, rule="pearson_r") == "towards" and verdict(0.5, 0.95, rule="pearson_r") == "away"
    )
    # pass rates: percentage points
    assert verdict(0.93, 0.96, rule="points") == "towards" and verdict(0.85, 0.96, rule="points") == "away"
    # with a baseline: within tolerance, or closer than the baseline
    assert verdict(0.8, 1.0, baseline=0.5) == "towards" and verdict(0.4, 1.0, baseline=0.5) == "away"
    assert verdict(0.98, 1.0, baseline=0.99) == "towards"  # farther than the baseline but matching
    assert verdict(1.5, 1.0, baseline=0.5) is None  # as far as the baseline
    assert verdict(None, 1.0) is None


def test_legend_states_the_rules():
    one, two, three = legend_text(["t"]), legend_text(["t", "s"]), legend_text(["t", "b", "d"])
    assert "no colours" in one
    assert "within 10%" in two and "percentage points" in two and "1 - r" in two
    assert "conformity r" in two and "uncoloured" in two and "'-'" in two
    assert "b is the baseline" in three and "better aligned" in three and "lower for the Procrustes" in three


def _result(
    offset: float | None,
    rank: float,
    dim: int,
    cka: float | None = None,
    procrustes: float | None = None,
    conformity_r: float | None = None,
) -> dict:
    spectrum = {"effective_rank": rank}
    modality = {"dim": dim, "ellipsoid": {"offset_ratio": offset, "spectrum": spectrum}}
    if conformity_r is not None:
        modality["conformity"] = {"fit_vs_cosine_to_mean": {"pearson_r": conformity_r}}
    result = {"modalities": {"image": modality}, "cross_modal": {}, "alignment": {}}
    if cka is not None:
        result["alignment"] = {"image": {"linear_cka": cka, "procrustes_residual": procrustes}}
    return result


def test_summary_rows_with_a_baseline_student():
    results = {
        "teacher": _result(1.0, 40.0, 64, conformity_r=0.9998),
        "baseline": _result(0.4, 20.0, 64, cka=0.5, procrustes=0.6, conformity_r=0.99),
        "distilled": _result(0.8, 50.0, 64, cka=0.9, procrustes=0.7, conformity_r=0.9997),
    }
    rows = {(r["label"], r["modality"]): r for r in summary_rows(results, {n: 64 for n in results})}
    offset = rows[("offset ratio", "image")]
    assert offset["verdicts"] == {"baseline": "away", "distilled": "towards"}
    assert offset["deltas"]["distilled"] == pytest.approx(-0.2)
    rank = rows[("eff. rank", "image")]  # same dims, so compared: |50 - 40| < |20 - 40|
    assert rank["verdicts"]["distilled"] == "towards" and rank["deltas"]["baseline"] == pytest.approx(-20)
    r = rows[("conformity r", "image")]
    assert r["verdicts"] == {"baseline": "away", "distilled": "towards"}
    # alignment rows: no reference value; the later model against the baseline, the baseline uncoloured
    cka = rows[("CKA to reference", "image")]
    assert cka["values"]["teacher"] is None
    assert cka["verdicts"] == {"baseline": None, "distilled": "towards"}
    assert cka["deltas"]["baseline"] is None and cka["deltas"]["distilled"] == pytest.approx(0.4)
    procrustes = rows[("Procrustes residual", "image")]  # lower is better: 0.7 > 0.6 is worse
    assert procrustes["verdicts"] == {"baseline": None, "distilled": "away"}
    assert "delta against baseline" in cka["note"]
    assert ("k-NN overlap", "image") not in rows  # absent everywhere: no row


def test_alignment_rows_are_uncoloured_with_one_student():
    results = {"teacher": _result(1.0, 40.0, 64), "student": _result(1.02, 41.0, 64, cka=0.97)}
    rows = {(r["label"], r["modality"]): r for r in summary_rows(results, {"teacher": 64, "student": 64})}
    cka = rows[("CKA to reference", "image")]
    assert cka["values"]["student"] == 0.97
    assert cka["deltas"] == {"student": None} and cka["verdicts"] == {"student": None}
    assert rows[("offset ratio", "image")]["verdicts"] == {"student": "towards"}


def test_cells_without_a_delta_are_never_coloured():
    results = {
        "teacher": _result(1.0, 40.0, 64),
        "baseline": _result(None, 20.0, 32, cka=0.5),  # offset ratio missing; dims differ
        "distilled": _result(0.8, 10.0, 16, cka=0.9),
    }
    summary = summary_rows(results, {"teacher": 64, "baseline": 32, "distilled": 16})
    for row in summary:
        for name, delta in row["deltas"].items():
            assert delta is not None or row["verdicts"][name] is None, row
    rows = {(r["label"], r["modality"]): r for r in summary}
    assert rows[("eff. rank", "image")]["verdicts"] == {"baseline": None, "distilled": None}
    assert rows[("offset ratio", "image")]["verdicts"]["baseline"] is None
    metrics = {"models": [{"name": n} for n in results], "summary": summary}
    table = summary_table(metrics)
    for cells in table.split("<tr>")[2:]:
        for cell in cells.split("<td")[1:]:
            if cell.split(">", 1)[1].startswith("-<"):
                assert "class='towards'" not in cell and "class='away'" not in cell, cells
    assert "class='towards'" in table  # distilled's CKA row is coloured


def test_html_summary_leaves_dimension_dependent_cells_uncoloured(pair):
    page = (pair / "report.html").read_text()
    row = page[page.index("<td class='label'>eff. rank</td>") :].split("</tr>")[0]
    assert "towards" not in row and "away" not in row and ">-</td>" in row
    cka = page[page.index("<td class='label'>CKA to reference</td>") :].split("</tr>")[0]
    assert "towards" not in cka and "away" not in cka  # one student: alignment rows uncoloured


def test_hover_text_keeps_quotes_and_escapes_tags(pair):
    data = CAPTURED["pair"]
    item_id, caption = _hover_data(data.label("image", np.array([0])))[0]
    assert item_id == "item-000"
    assert caption == '&lt;script&gt;window.__pwned = 1&lt;/script&gt; &amp; &lt;b&gt;"bold"&lt;/b&gt;'


def test_alignment_figure_shares_one_colour_scale_and_compares_pairs(pair):
    data = CAPTURED["pair"]
    fig = build_alignment(alignment_view(data))
    heatmaps = [t for t in fig.data if t.type == "heatmap"]
    assert len(heatmaps) == 2 and len({(t.zmin, t.zmax) for t in heatmaps}) == 1
    assert [bool(t.showscale) for t in heatmaps] == [True, False]
    low = min(float(np.min(t.z)) for t in heatmaps)
    assert heatmaps[0].zmin == pytest.approx(low) and heatmaps[0].zmax == pytest.approx(1.0)
    q = len(data.reference.similarity["rows"])
    pairs = [t for t in fig.data if t.type == "scatter" and "cosines" in (t.name or "")]
    assert len(pairs) == 1 and len(pairs[0].x) == q * (q - 1) // 2
    teacher = data.reference.similarity["matrix"]
    assert pairs[0].x[0] == pytest.approx(teacher[0, 1])


def test_alignment_bars_show_negative_values_and_mark_missing_ones(pair, tmp_path):
    assert bar_limits([0.3, -0.4, None]) == (pytest.approx(-0.45), 1.05)
    assert bar_limits([0.3, None]) == (0.0, 1.05)
    data = CAPTURED["pair"]
    student = copy.deepcopy(data.others[0])
    alignment = student.result["alignment"]["image"]
    alignment["similarity_spearman"]["rho"] = -0.3
    del alignment["knn_overlap"]
    changed = ReportData(models=[data.reference, student], labels=data.labels, meta=data.meta)
    fig = build_alignment(alignment_view(changed))
    image_bars = next(t for t in fig.data if t.type == "bar" and t.name.endswith("image"))
    labels = list(image_bars.x)
    assert image_bars.text[labels.index("k-NN overlap")] == "n/a"
    assert image_bars.y[labels.index("similarity rho")] == pytest.approx(-0.3)
    assert fig.layout.yaxis.range[0] < -0.3
    info = next(info for info in FIGURES if info.name == "alignment")
    assert save_figure(info, alignment_view(changed), tmp_path).stat().st_size > 10_000


def test_alignment_figure_says_which_models_it_leaves_out(pair, tmp_path):
    data = CAPTURED["pair"]
    extra = [
        dataclasses.replace(data.others[0], entry=ModelInput(f"extra{i}", "student", "x", "embeddings"))
        for i in range(SIMILARITY_PANELS)
    ]
    many = ReportData(models=[data.reference, data.others[0], *extra], labels=data.labels, meta=data.meta)
    fig = build_alignment(alignment_view(many))
    assert sum(t.type == "heatmap" for t in fig.data) == SIMILARITY_PANELS
    notes = [a.text for a in fig.layout.annotations if "left out" in a.text]
    assert notes and "extra2, extra3" in notes[0] and "extra1" not in notes[0]
    info = next(info for info in FIGURES if info.name == "alignment")
    assert save_figure(info, alignment_view(many), tmp_path).is_file()


def test_conformity_distributions_name_the_kl_in_both_renderers(pair):
    view = distributions_view(CAPTURED["pair"])
    kl = metrics_of(pair)["results"]["student"]["cross_modal"]["image_vs_text"]["conformity"]
    assert view.panels[1].kl == kl["kl_within_conformity"]["kl"]
    titles = [a.text for a in build_conformity_distributions(view).layout.annotations]
    assert titles[1] == f"student (student, d=24){view.panels[1].kl_note}" and "KL(img||txt) = " in titles[1]


def test_spectra_stop_at_the_numerical_rank():
    spectrum = {"eigenvalues": [3.0, 1.0, 1e-15, 0.0], "total_variance": 4.0, "numerical_rank": 2}
    values, dim = spectrum_values(spectrum)
    assert values.tolist() == [0.75, 0.25] and dim == 4
    noisy = {"eigenvalues": [3.0, 1.0, 1e-14], "total_variance": 4.0}  # no rank given: 1e-12 of the total
    assert len(spectrum_values(noisy)[0]) == 2


# ---- bad input: one LakdError before any heavy work, nothing written ---------------------------


@pytest.fixture
def no_work(monkeypatch):
    """Fail the test if a model is embedded or an analysis starts."""

    def refuse(*args, **kwargs):
        raise AssertionError("embedding or analysis started before the input was checked")

    monkeypatch.setattr(build, "analyze", refuse)
    monkeypatch.setattr(lakd.models.embed, "cached_embed", refuse)
    monkeypatch.setattr(lakd.models.embed, "embed", refuse)


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"teacher": "{tmp}/nope.pt"}, "nope.pt: no such checkpoint file"),
        ({"models": ("lakd:no-such-config",)}, "unknown lakd config"),
        ({"models": ("lakd:tiny-vit",), "data": "{tmp}/missing.csv"}, "missing.csv: no such file or folder"),
        ({"embeddings": ("{tmp}",)}, "not an embedding store"),
        ({"teacher": "{teacher}", "students": ("{short}",)}, "50 items but"),
        ({"teacher": "{teacher}", "students": ("{other_ids}",)}, "item ids differ from"),
        ({"embeddings": ("{teacher}",), "data": "shapes:val?n=10"}, "80 source items but `data` shapes:val?n=10 has 10"),
        # the same count but other items: caught from the source's ids, before the model is embedded
        (
            {"models": ("lakd:tiny-vit",), "embeddings": ("{teacher}",), "data": "shapes:val?n=80"},
            "item ids are not `data` shapes:val?n=80's",
        ),
        (
            {"models": ("lakd:tiny-vit",), "embeddings": ("{teacher}",)},
            "the default data shapes:val (no `data` given) has",
        ),
        ({"teacher": "{teacher}", "text_view": "some"}, "text_view: unknown 'some'"),
        ({}, "give at least one of `models`, `teacher`, `students` or `embeddings`"),
    ],
)
def test_bad_input_fails_before_work(fields, message, stores, tmp_path, no_work):
    names = {"tmp": tmp_path, **stores}

    def fill(value):
        return tuple(fill(v) for v in value) if isinstance(value, tuple) else value.format(**names)

    out = tmp_path / "report"
    cfg = small(out, **{key: fill(value) for key, value in fields.items()})
    with pytest.raises(LakdError, match=re.escape(message)) as err:
        geometry_report(cfg)
    assert "\n" not in str(err.value)
    assert not out.exists()


def test_unwritable_output_is_refused_before_work(stores, tmp_path, no_work):
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a folder")
    with pytest.raises(LakdError, match="cannot be created"):
        geometry_report(small(blocker / "report", teacher=str(stores["teacher"])))
    with pytest.raises(LakdError, match="not a folder"):
        geometry_report(small(blocker, teacher=str(stores["teacher"]), overwrite=True))
    assert blocker.read_text() == "not a folder"


def test_existing_output_needs_overwrite(stores, tmp_path, no_work):
    out = tmp_path / "report"
    out.mkdir()
    (out / "metrics.json").write_text(json.dumps({"format": REPORT_FORMAT}))  # a report: overwrite replaces it
    with pytest.raises(LakdError, match="already exists \\(use `overwrite` to replace it\\)"):
        geometry_report(small(out, teacher=str(stores["student"])))
    # a folder that is not a report: `overwrite` would not replace it either, so it is not advised
    (out / "metrics.json").unlink()
    (out / "mine.txt").write_text("keep")
    with pytest.raises(LakdError, match=r"not a lakd geometry report .*; not replacing it; choose another `out`$"):
        geometry_report(small(out, teacher=str(stores["student"])))
    assert sorted(p.name for p in out.iterdir()) == ["mine.txt"]


def test_overwrite_refuses_a_folder_that_is_not_a_report(stores, tmp_path, no_work):
    out = tmp_path / "thesis"
    (out / "chapters").mkdir(parents=True)
    (out / "chapters" / "one.tex").write_text("keep")
    (out / "metrics.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(LakdError, match="not a lakd geometry report") as err:
        geometry_report(small(out, teacher=str(stores["student"]), overwrite=True))
    assert str(out.resolve()) in str(err.value) and "\n" not in str(err.value)
    assert (out / "chapters" / "one.tex").read_text() == "keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["thesis"]


def test_overwrite_refuses_the_working_folder(stores, tmp_path, monkeypatch, no_work):
    inside = tmp_path / "project" / "src"
    inside.mkdir(parents=True)
    (inside / "code.py").write_text("keep")
    monkeypatch.chdir(inside)
    for out in (".", str(tmp_path / "project")):
        with pytest.raises(LakdError, match="contains the current folder"):
            geometry_report(small(Path(out), teacher=str(stores["student"]), overwrite=True))
    assert (inside / "code.py").read_text() == "keep"


@pytest.mark.parametrize("kind", ["store", "checkpoint", "data"])
def test_overwrite_refuses_a_folder_that_holds_an_input(kind, stores, tmp_path, no_work):
    out = tmp_path / "report"
    (out / "figures").mkdir(parents=True)
    (out / "metrics.json").write_text(json.dumps({"format": REPORT_FORMAT}))  # a report
    if kind == "store":
        inner = synthetic_store(out / "embeddings" / "mine", 16, 5).path
        fields = {"teacher": str(stores["teacher"]), "students": (str(inner),)}
    elif kind == "checkpoint":
        inner = out / "student.pt"
        inner.write_bytes(b"not read")
        fields = {"teacher": str(stores["teacher"]), "students": (str(inner),)}
    else:
        inner = out / "data"
        inner.mkdir()
        fields = {"embeddings": (str(stores["teacher"]),), "data": str(inner)}
    with pytest.raises(LakdError, match="contains the input") as err:
        geometry_report(small(out, overwrite=True, **fields))
    assert str(inner.resolve()) in str(err.value)
    assert inner.exists() and (out / "metrics.json").is_file()


def test_overwrite_replaces_a_previous_report(stores, tmp_path):
    out = tmp_path / "report"
    geometry_report(small(out, embeddings=(str(stores["student"]),)))
    (out / "stale.txt").write_text("from the old report")
    assert geometry_report(small(out, embeddings=(str(stores["teacher"]),), overwrite=True)) == out.resolve()
    assert not (out / "stale.txt").exists()
    assert [m["name"] for m in metrics_of(out)["models"]] == ["teacher"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]


def test_failure_midway_leaves_nothing(stores, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("disk full while drawing")

    monkeypatch.setattr(build, "save_figures", broken)
    out = tmp_path / "report"
    out.mkdir()
    (out / "metrics.json").write_text(json.dumps({"format": REPORT_FORMAT, "previous": True}))
    with pytest.raises(RuntimeError, match="disk full"):
        geometry_report(small(out, teacher=str(stores["student"]), overwrite=True))
    assert metrics_of(out)["previous"] is True  # replaced only on success
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]  # no temporary folder left


def test_analysis_error_names_the_model_and_its_store(tmp_path, capsys):
    from lakd.cli import main
    from lakd.data.store import write_store

    store = tmp_path / "tiny"
    write_store(  # all-zero image rows: no cosine
        store,
        torch.zeros(4, 4),
        model="m",
        source="s",
        text=torch.randn(4, 4),
        text_item=torch.arange(4),
        captions=["a", "b", "c", "d"],
    )
    assert main(["geometry", "report", "--embeddings", str(store), "--out", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"error: tiny ({store}): image: 4 row(s) are all zeros (first at row 0); cosine is undefined"
    assert not (tmp_path / "r").exists()
