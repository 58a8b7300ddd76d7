"""``lakd geometry report`` from embedding stores: files, metrics.json / metrics.csv content, figures,
escaping, summary verdicts, bad input before any work, overwrite protection, atomic output."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import lakd.analysis.report.build as build
from lakd.analysis import AnalysisConfig, GeometryResult, analyze
from lakd.analysis.report import ReportConfig, geometry_report, report_summary
from lakd.analysis.report.figures import DRAW, pixel_size
from lakd.analysis.report.html import BUILD
from lakd.analysis.report.table import summary_rows, verdict
from lakd.analysis.report.views import FIGURES
from lakd.cli import main
from lakd.data.store import EmbeddingStore
from lakd.errors import LakdError
from lakd.eval.inputs import write_embeddings

N = 80
EVIL = "<script>window.__pwned = 1</script> & <b>bold</b>"


def synthetic_store(path: Path, dim: int, seed: int, n: int = N) -> EmbeddingStore:
    """Two captions per item (text rows 2n); image and text share an 8-d latent, offset means."""
    rng = np.random.default_rng(seed)
    latent = np.random.default_rng(0).normal(size=(n, 8))
    mix = rng.normal(size=(8, dim))
    image = latent @ mix + 2.0 + 0.1 * rng.normal(size=(n, dim))
    text = np.repeat(latent @ mix, 2, axis=0) - 1.0 + 0.3 * rng.normal(size=(2 * n, dim))
    captions = [
        c for i in range(n) for c in ((EVIL if i == 0 else f"first caption {i}"), f"second caption {i}")
    ]
    return write_embeddings(
        path,
        torch.tensor(image, dtype=torch.float32),
        model=f"synthetic-{dim}",
        source="synthetic",
        text=torch.tensor(text, dtype=torch.float32),
        text_item=torch.arange(n).repeat_interleave(2),
        captions=captions,
        ids=[f"item-{i:03d}" for i in range(n)],
    )


@pytest.fixture(scope="module")
def stores(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("stores")
    paths = {"teacher": (48, 1, N), "student": (24, 2, N), "short": (24, 3, 50)}
    for name, (dim, seed, n) in paths.items():
        synthetic_store(root / name, dim, seed, n)
    return {name: root / name for name in paths}


def small(out: Path, **fields) -> ReportConfig:
    return ReportConfig(out=str(out), tsne_items=30, plot_points=N, similarity_items=20, **fields)


@pytest.fixture(scope="module")
def pair(stores, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pair") / "report"
    return geometry_report(small(out, teacher=str(stores["teacher"]), students=(str(stores["student"]),)))


@pytest.fixture(scope="module")
def single(stores, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("single") / "report"
    return geometry_report(small(out, embeddings=(str(stores["teacher"]),), text_view="all"))


def metrics_of(report: Path) -> dict:
    return json.loads((report / "metrics.json").read_text())


def test_both_renderers_draw_every_figure():
    assert set(DRAW) == set(BUILD) == {info.name for info in FIGURES}
    assert len(FIGURES) == 8


def test_two_model_report_writes_every_file(pair):
    assert sorted(p.name for p in pair.iterdir()) == ["figures", "metrics.csv", "metrics.json", "report.html"]
    pngs = {p.stem: p for p in (pair / "figures").glob("*.png")}
    assert set(pngs) == {info.name for info in FIGURES}
    for info in FIGURES:
        assert pngs[info.name].stat().st_size > 10_000
        with Image.open(pngs[info.name]) as image:
            assert image.format == "PNG"
            assert image.size == pixel_size(info)
            # not blank: the figure has ink in many colours
            assert len(image.convert("RGB").getcolors(1 << 20)) > 20
    assert pixel_size(FIGURES[0]) == (1050, 630)  # 7 x 4.2 in at 150 dpi: a two-column paper figure
    assert metrics_of(pair)["figures"] == [f"figures/{info.name}.png" for info in FIGURES]


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
    assert "<script>window.__pwned" not in page and "<b>bold</b>" not in page
    assert "&lt;script&gt;window.__pwned = 1&lt;" in page and "&amp; &lt;b&gt;bold&lt;" in page
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


def test_verdict_rules():
    assert verdict(0.95, 1.0) == "towards" and verdict(0.5, 1.0) == "away"  # within 10% of the reference
    assert verdict(0.01, 0.0) == "towards" and verdict(0.05, 0.0) == "away"  # at least 0.02
    assert verdict(0.8, 1.0, baseline=0.5) == "towards" and verdict(0.4, 1.0, baseline=0.5) == "away"
    assert verdict(1.5, 1.0, baseline=0.5) is None  # as far as the baseline
    assert verdict(None, 1.0) is None


def _result(offset: float, rank: float, dim: int, cka: float | None = None) -> dict:
    spectrum = {"effective_rank": rank}
    modality = {"dim": dim, "ellipsoid": {"offset_ratio": offset, "spectrum": spectrum}}
    result = {"modalities": {"image": modality}, "cross_modal": {}, "alignment": {}}
    if cka is not None:
        result["alignment"] = {"image": {"linear_cka": cka}}
    return result


def test_summary_rows_with_a_baseline_student():
    results = {
        "teacher": _result(1.0, 40.0, 64),
        "baseline": _result(0.4, 20.0, 64, cka=0.5),
        "distilled": _result(0.8, 50.0, 64, cka=0.9),
    }
    rows = {(r["label"], r["modality"]): r for r in summary_rows(results, {n: 64 for n in results})}
    offset = rows[("offset ratio", "image")]
    assert offset["verdicts"] == {"baseline": "away", "distilled": "towards"}
    assert offset["deltas"]["distilled"] == pytest.approx(-0.2)
    rank = rows[("eff. rank", "image")]  # same dims, so compared: |50 - 40| < |20 - 40|
    assert rank["verdicts"]["distilled"] == "towards" and rank["deltas"]["baseline"] == pytest.approx(-20)
    cka = rows[("CKA to reference", "image")]
    assert cka["values"]["teacher"] is None and cka["verdicts"] == {
        "baseline": "away",
        "distilled": "towards",
    }
    assert ("k-NN overlap", "image") not in rows  # absent everywhere: no row


# ---- bad input: one LakdError before any heavy work, nothing written ---------------------------


@pytest.fixture
def no_analysis(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("analysis started before the input was checked")

    monkeypatch.setattr(build, "analyze", refuse)


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"teacher": "{tmp}/nope.pt"}, "nope.pt: no such checkpoint file"),
        ({"models": ("lakd:no-such-config",)}, "unknown lakd config"),
        ({"models": ("lakd:tiny-vit",), "data": "{tmp}/missing.csv"}, "missing.csv: no such file or folder"),
        ({"embeddings": ("{tmp}",)}, "not an embedding store"),
        ({"teacher": "{teacher}", "students": ("{short}",)}, "50 items but"),
        ({"embeddings": ("{teacher}",), "data": "shapes:val?n=10"}, "80 source items but --data"),
        ({"teacher": "{teacher}", "text_view": "some"}, "--text-view"),
        ({}, "give at least one"),
    ],
)
def test_bad_input_fails_before_work(fields, message, stores, tmp_path, no_analysis):
    names = {"tmp": tmp_path, "teacher": stores["teacher"], "short": stores["short"]}

    def fill(value):
        return tuple(fill(v) for v in value) if isinstance(value, tuple) else value.format(**names)

    out = tmp_path / "report"
    cfg = small(out, **{key: fill(value) for key, value in fields.items()})
    with pytest.raises(LakdError, match=message.replace("?", r"\?")) as err:
        geometry_report(cfg)
    assert "\n" not in str(err.value)
    assert not out.exists()


def test_unwritable_output_is_refused_before_work(stores, tmp_path, no_analysis):
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a folder")
    with pytest.raises(LakdError, match="cannot be created"):
        geometry_report(small(blocker / "report", teacher=str(stores["teacher"])))
    with pytest.raises(LakdError, match="not a folder"):
        geometry_report(small(blocker, teacher=str(stores["teacher"]), overwrite=True))
    assert blocker.read_text() == "not a folder"


def test_existing_output_needs_overwrite(stores, tmp_path, monkeypatch):
    out = tmp_path / "report"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    with monkeypatch.context() as patch:
        patch.setattr(build, "analyze", lambda *a, **k: pytest.fail("analysis ran"))
        with pytest.raises(LakdError, match="--overwrite"):
            geometry_report(small(out, teacher=str(stores["student"])))
    assert (out / "mine.txt").read_text() == "keep"


def test_failure_midway_leaves_nothing(stores, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("disk full while drawing")

    monkeypatch.setattr(build, "save_figures", broken)
    out = tmp_path / "report"
    out.mkdir()
    (out / "old.txt").write_text("previous report")
    with pytest.raises(RuntimeError, match="disk full"):
        geometry_report(small(out, teacher=str(stores["student"]), overwrite=True))
    assert (out / "old.txt").read_text() == "previous report"  # replaced only on success
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]  # no temporary folder left
