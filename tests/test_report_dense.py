"""The report's ``dense_maps`` figure: example token-by-patch maps of a ViT teacher and student per
probe condition, drawn by both renderers from one view; skipped, with the reason, otherwise."""

from __future__ import annotations

from PIL import Image

from lakd.report.dense import dense_examples
from lakd.report.figures import pixel_size, save_figure
from lakd.report.html import BUILD
from lakd.report.inputs import ModelInput
from lakd.report.points import ReportData
from lakd.report.views import FIGURES, dense_maps_view, figure_views

TEACHER = ModelInput("teacher", "teacher", "lakd:tiny-vit", "model")
STUDENT = ModelInput("student", "student", "lakd:tiny-vit", "model")


def test_dense_maps_render_for_vit_models(tmp_path):
    examples = dense_examples([TEACHER, STUDENT])
    assert examples.reason == "" and len(examples.maps) == 8  # 4 conditions x (teacher, student)
    assert [m.condition for m in examples.maps[::2]] == ["basic", "binding", "spatial", "negation"]
    first = examples.maps[0]
    assert first.values.shape == (len(first.tokens), 64) and first.tokens[0] == "<start>" and first.tokens[-1] == "<end>"
    info = next(info for info in FIGURES if info.name == "dense_maps")
    view = dense_maps_view(ReportData([], {}, {}, dense=examples))
    assert len(view.panels) == 8 and 0 < view.limit <= 1
    path = save_figure(info, view, tmp_path)
    with Image.open(path) as image:
        assert image.size == pixel_size(info) and len(image.convert("RGB").getcolors(1 << 20)) > 20
    html = BUILD["dense_maps"](view).to_html(full_html=False, include_plotlyjs=False)
    assert "negation" in html and "heatmap" in html


def test_dense_maps_are_skipped_with_a_reason():
    resnet = ModelInput("student", "student", "lakd:tiny-resnet", "model")
    reason = dense_examples([TEACHER, resnet]).reason
    assert "student" in reason and "ViT" in reason
    assert "embeddings" in dense_examples([TEACHER, ModelInput("s", "student", "emb/s", "embeddings")]).reason
    assert dense_examples([TEACHER]).reason
    assert not any(info.dense for info in figure_views(ReportData([], {}, {}, dense=dense_examples([TEACHER]))))
