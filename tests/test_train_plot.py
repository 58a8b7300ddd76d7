"""``lakd train plot RUN``: training.html and plots/*.png of real tiny runs (plain with a skipped
non-finite step; online teacher for the reference lines), one view per figure for both renderers,
null values as gaps, deterministic output, one-line errors for folders that are not runs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure
from PIL import Image
from test_train import poison_clip_loss, tiny  # the same tiny runs as the trainer tests

import lakd.report.training as training
from lakd.cli import main
from lakd.errors import LakdError
from lakd.report.curves import curve_views
from lakd.report.figures import pixel_size
from lakd.report.table import format_value
from lakd.runs import RunFolder
from lakd.train import train

PLAIN_FIGURES = [
    "losses",
    "optimisation",
    "retrieval",
    "zeroshot",
    "probes",
    "geometry_image",
    "geometry_text",
    "geometry_image_vs_text",
]


def records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def plain_run(tmp_path_factory) -> Path:
    """No teacher; the loss of step 5 is NaN and the step skipped (on_nan: skip)."""
    out = tmp_path_factory.mktemp("plain") / "run"
    with pytest.MonkeyPatch.context() as patch:
        poison_clip_loss(patch, 5)
        train(tiny(on_nan="skip"), out=str(out), echo=lambda _: None)
    return out


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("teacher") / "run"
    cfg = tiny(teacher={"kind": "online", "model": "lakd:tiny-resnet"}, recipe={"clip": 1, "fd": 1}, eval={"probes": None})
    train(cfg, out=str(out), echo=lambda _: None)
    return out


def check_png(path: Path, info) -> None:
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == pixel_size(info)
        assert len(image.convert("RGB").getcolors(1 << 20)) > 10  # drawn, not blank


def test_plain_run(plain_run):
    paths = training.plot_run(plain_run)
    assert paths[0] == plain_run / "training.html"
    assert [p.stem for p in paths[1:]] == PLAIN_FIGURES
    assert all(p.parent == plain_run / "plots" for p in paths[1:])
    views = curve_views(RunFolder(plain_run).records())
    for info, path in zip(views, paths[1:], strict=True):
        check_png(path, info)
    page = paths[0].read_text()
    titles = ["Losses", "Optimisation", "Retrieval", "Zero-shot classification", "Compositional probes",
              "Geometry: image", "Geometry: text", "Geometry: image vs text"]
    assert [info.title for info in views] == titles
    assert all(f"<h3>{title}</h3>" in page for title in titles)
    assert "Alignment with the teacher" not in page and "no teacher reference" in page
    assert page.count("<script") >= len(titles) and "<script src" not in page and "Plotly.newPlot" in page

    # the numbers drawn are those of metrics.jsonl
    logged = records(plain_run)
    train_lines = [r for r in logged if r["kind"] == "train"]
    by_title = {info.name: view for info, view in views.items()}
    loss = by_title["losses"].panels[0]
    assert [c.name for c in loss.curves] == ["total", "clip"]
    assert loss.curves[0].steps == [2, 4, 6]
    assert loss.curves[0].values == [r["loss/total"] for r in train_lines]
    assert loss.marks == [5] and loss.mark_label == "non-finite loss"
    panels = {p.title: p for p in by_title["optimisation"].panels}
    assert list(panels) == ["learning rate", "samples / s", "gradient norm", "logit scale", "skipped (cumulative)",
                            "evaluation time (s)"]
    assert panels["skipped (cumulative)"].curves[0].values == [0.0, 0.0, 1.0]
    assert panels["evaluation time (s)"].curves[0].steps == [3, 6]
    probes = by_title["probes"].panels[0]
    assert [g.label for g in probes.guides] == ["chance 0.25"]
    assert all(c.teacher is None for view in views.values() for p in view.panels for c in p.curves)
    offset = next(p for p in by_title["geometry_image"].panels if p.title == "offset ratio").curves[0]
    evals = [r for r in logged if r["kind"] == "eval"]
    assert offset.values == [r["geometry/image.offset_ratio"] for r in evals]


def test_teacher_values_are_reference_lines(teacher_run, capsys):
    assert main(["train", "plot", str(teacher_run)]) == 0
    printed = capsys.readouterr().out.split()
    assert printed[0] == str(teacher_run / "training.html") and len(printed) == 9
    teacher = next(r for r in records(teacher_run) if r["kind"] == "teacher")
    views = {info.name: view for info, view in curve_views(RunFolder(teacher_run).records()).items()}
    assert list(views) == [*PLAIN_FIGURES[:4], *PLAIN_FIGURES[5:], "alignment"]
    offset = next(p for p in views["geometry_image"].panels if p.title == "offset ratio").curves[0]
    assert offset.teacher == teacher["geometry/image.offset_ratio"]
    recall = views["retrieval"].panels[0]
    assert recall.title == "recall" and recall.curves[0].name == "image R@1"
    assert recall.curves[0].teacher == teacher["retrieval/image_retrieval_recall@1"]
    assert [c.name for c in views["alignment"].panels[0].curves] == ["image", "text"]
    assert all(c.teacher is None for p in views["alignment"].panels for c in p.curves)  # no teacher value
    page = (teacher_run / "training.html").read_text()
    assert f"teacher image: {format_value(teacher['geometry/image.offset_ratio'])}" in page
    assert f"teacher image R@1: {format_value(teacher['retrieval/image_retrieval_recall@1'])}" in page
    assert "<h3>Alignment with the teacher</h3>" in page and "the teacher's values as reference" in page
    fig = Figure()
    training.draw_curves(fig, views["geometry_image"])
    ax = next(ax for ax in fig.axes if ax.get_title() == "offset ratio")
    assert [tuple(line.get_ydata()) for line in ax.get_lines()][1] == (offset.teacher, offset.teacher)


def test_one_view_feeds_both_renderers(plain_run, monkeypatch):
    built, drawn, plotted = [], [], []

    def build_once(found):
        built.append(curve_views(found))
        return built[-1]

    def draw(fig, view, real=training.draw_curves):
        drawn.append(view)
        return real(fig, view)

    def plot(view, real=training.build_curves):
        plotted.append(view)
        return real(view)

    monkeypatch.setattr(training, "curve_views", build_once)
    monkeypatch.setattr(training, "draw_curves", draw)
    monkeypatch.setattr(training, "build_curves", plot)
    training.plot_run(plain_run)
    assert len(built) == 1 and len(built[0]) == len(PLAIN_FIGURES)
    views = list(built[0].values())
    assert all(a is b for a, b in zip(drawn, views, strict=True))
    assert all(a is b for a, b in zip(plotted, views, strict=True))


def test_output_is_deterministic(plain_run):
    first = {p: p.read_bytes() for p in training.plot_run(plain_run)}
    second = training.plot_run(plain_run)
    assert list(first) == second and all(p.read_bytes() == first[p] for p in second)


def test_null_values_are_gaps():
    logged = [
        {"kind": "teacher", "step": 0, "zeroshot/acc1": 0.5, "geometry/image.offset_ratio": None},
        *({"kind": "eval", "step": s, "zeroshot/acc1": v, "geometry/image.offset_ratio": None}
          for s, v in ((10, 0.1), (20, None), (30, 0.3))),
        {"kind": "train", "step": 10, "lr": 1e-3, "loss/total": float("nan")},
    ]
    views = {info.name: view for info, view in curve_views(logged).items()}
    assert list(views) == ["optimisation", "zeroshot"]  # all-null curves (loss, offset ratio) are left out
    acc = views["zeroshot"].panels[0].curves[0]
    assert (acc.steps, acc.values, acc.teacher) == ([10, 20, 30], [0.1, None, 0.3], 0.5)
    trace = training.build_curves(views["zeroshot"]).data[0]
    assert list(trace.y) == [0.1, None, 0.3] and trace.connectgaps is False
    fig = Figure()
    training.draw_curves(fig, views["zeroshot"])
    drawn = fig.axes[0].get_lines()[0].get_ydata()
    assert drawn[0] == 0.1 and math.isnan(drawn[1]) and drawn[2] == 0.3
    assert np.allclose(fig.axes[0].get_lines()[1].get_ydata(), 0.5)  # the teacher's line


def test_stale_figures_are_removed(plain_run):
    stale = plain_run / "plots" / "alignment.png"
    stale.write_bytes(b"old")
    keep = plain_run / "plots" / "mine.png"
    keep.write_bytes(b"mine")
    training.plot_run(plain_run)
    assert not stale.exists() and keep.read_bytes() == b"mine"


def test_folders_that_are_not_runs(tmp_path, capsys):
    with pytest.raises(LakdError, match=r"not a lakd training run \(no run.json with format lakd-train-run/1\)"):
        training.plot_run(tmp_path)
    assert main(["train", "plot", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {tmp_path}: not a lakd training run") and len(err.strip().splitlines()) == 1
    (tmp_path / "run.json").write_text(json.dumps({"format": "lakd-train-run/1"}))
    with pytest.raises(LakdError, match=r"metrics.jsonl: no such file; the run has logged no metrics"):
        training.plot_run(tmp_path)
    (tmp_path / "metrics.jsonl").write_text('{"kind": "teacher", "step": 0}\n')
    with pytest.raises(LakdError, match=r"metrics.jsonl: no training or evaluation records; nothing to plot yet"):
        training.plot_run(tmp_path)
    (tmp_path / "metrics.jsonl").write_text('[1, 2]\n{"kind": "train", "step": 2, "lr": 0.1}\n')
    with pytest.raises(LakdError, match=r"metrics.jsonl: line 1 is not a metrics record"):
        training.plot_run(tmp_path)
    (tmp_path / "metrics.jsonl").write_text('{"kind": "train", "step": 2, "lr": 0.1}\n{"kind": "tra')
    (tmp_path / "config.yaml").write_text("student:\n  model: lakd:tiny-vit\n")
    paths = training.plot_run(tmp_path)  # a cut last line (a run still writing) is left out
    assert [p.name for p in paths] == ["training.html", "optimisation.png"]


def test_extra_sets_and_other_tasks_get_their_own_panels():
    evil = "<b>set & co"  # set names have no "/"
    logged = [
        {"kind": "eval", "step": 5, "retrieval/text_retrieval_recall@1": 0.2, "retrieval/text_retrieval_mean_rank": 3.0,
         f"{evil}/zeroshot/acc1": 0.4, f"{evil}/zeroshot/acc5": 0.9, "foo/bar/score": 7.0,
         "probes/acc": 0.3, "probes/chance": 0.25, "probes/chance_binding": 0.5},
    ]
    views = {info.name: view for info, view in curve_views(logged).items()}
    assert list(views) == ["retrieval", "zeroshot", "probes", "other"]
    assert [p.title for p in views["retrieval"].panels] == ["recall", "rank"]
    assert [p.title for p in views["zeroshot"].panels] == [f"{evil}: accuracy"]
    assert [c.name for c in views["zeroshot"].panels[0].curves] == ["acc1", "acc5"]
    assert [p.title for p in views["other"].panels] == ["foo: bar score"]
    assert [(g.value, g.label) for g in views["probes"].panels[0].guides] == [(0.25, "chance 0.25"), (0.5, "chance 0.5")]
    fig = training.build_curves(views["zeroshot"])
    assert fig.layout.annotations[0].text == "&lt;b&gt;set &amp; co: accuracy"
