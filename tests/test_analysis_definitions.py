"""One definition per geometry quantity: the float64 analysis metrics, the torch definitions the
distillation losses call, and the streamed forms of analyze() give the same numbers."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import lakd.analysis as analysis
from lakd.analysis.alignment import linear_cka_torch
from lakd.analysis.conformity import conformity_given_sum, conformity_torch, cross_conformity_torch
from lakd.analysis.ellipsoid import offset_ratio_torch
from lakd.analysis.gap import gap_vector_torch
from lakd.analysis.shell import shell_statistics_torch
from lakd.distill import DistillBatch, FeatureDims, build_loss
from lakd.distill.geometry import shell_features
from lakd.errors import LakdError

TIGHT = {"rtol": 1e-12, "atol": 1e-14}


@pytest.fixture(scope="module")
def data():
    """CLIP-like raw float64 embeddings: offset means and anisotropic noise, image and text."""
    rng = np.random.default_rng(0)
    scales = np.geomspace(2.0, 0.1, 16)
    image = 1.5 + rng.standard_normal((300, 16)) * scales
    text = -0.5 + rng.standard_normal((300, 16)) * scales[::-1]
    return image, text


def tensor(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(x)


def test_linear_cka_is_one_definition(data):
    image, text = data
    student = image[:, :10] @ np.random.default_rng(1).standard_normal((10, 7)) + 0.3 * text[:, :7]
    value = analysis.linear_cka(student, image)
    assert isinstance(value, float)
    assert analysis.linear_cka(tensor(student), tensor(image)) == value  # tensors in: the same float
    torch.testing.assert_close(linear_cka_torch(tensor(student), tensor(image)).item(), value, **TIGHT)
    # independently: the centred Frobenius form
    xc, yc = student - student.mean(0), image - image.mean(0)
    expected = np.linalg.norm(yc.T @ xc) ** 2 / (np.linalg.norm(xc.T @ xc) * np.linalg.norm(yc.T @ yc))
    assert value == pytest.approx(expected, rel=1e-12)
    # the relational loss is 1 - the same CKA, per modality
    batch = DistillBatch(
        tensor(student[:40]),
        tensor(student[40:80]),
        torch.tensor(1.0),
        tensor(image[:40]),
        tensor(image[40:80]),
    )
    loss = build_loss("relational", {"method": "cka"})(batch)
    expected_loss = (1 - analysis.linear_cka(student[:40], image[:40])) + (
        1 - analysis.linear_cka(student[40:80], image[40:80])
    )
    torch.testing.assert_close(loss.item(), expected_loss, **TIGHT)


def test_conformity_is_one_definition(data):
    image, text = data
    x_hat = F.normalize(tensor(image), dim=-1)
    torch.testing.assert_close(conformity_torch(x_hat).numpy(), analysis.conformity(image), **TIGHT)
    # the streamed form: chunks scored against the sum of the whole set
    unit = image / np.linalg.norm(image, axis=1, keepdims=True)
    chunks = [conformity_given_sum(unit[i : i + 64], unit.sum(axis=0), len(unit)) for i in range(0, 300, 64)]
    np.testing.assert_allclose(np.concatenate(chunks), analysis.conformity(image), **TIGHT)
    y_hat = F.normalize(tensor(text), dim=-1)
    np.testing.assert_allclose(
        cross_conformity_torch(x_hat, y_hat.mean(0)).numpy(), analysis.cross_conformity(image, text), **TIGHT
    )


def test_conformity_loss_is_built_on_the_analysis_values(data):
    image, text = data
    student = {"image": image[:50], "text": text[:50]}
    teacher = {"image": image[50:100] * 2.0 + 1.0, "text": text[50:100] - 0.5}
    batch = DistillBatch(
        tensor(student["image"]),
        tensor(student["text"]),
        torch.tensor(1.0),
        tensor(teacher["image"]),
        tensor(teacher["text"]),
    )
    expected = sum(
        np.mean((analysis.conformity(student[m]) - analysis.conformity(teacher[m])) ** 2) for m in student
    )
    torch.testing.assert_close(build_loss("conformity")(batch).item(), expected, **TIGHT)


def test_offset_ratio_is_one_definition_and_the_streamed_form_agrees(data):
    image, _ = data
    value = analysis.offset_ratio(image)
    torch.testing.assert_close(offset_ratio_torch(tensor(image)).item(), value, **TIGHT)
    mu = image.mean(0)
    assert value == pytest.approx(np.linalg.norm(mu) / np.sqrt(np.trace(np.cov(image.T))), rel=1e-12)
    streamed = analysis.Moments()
    for i in range(0, len(image), 37):
        streamed.update(image[i : i + 37])
    assert analysis.offset_ratio(streamed) == pytest.approx(value, rel=1e-12)


def test_shell_statistics_are_one_definition(data):
    image, _ = data
    shell = analysis.thin_shell(image)
    expected = [analysis.offset_ratio(image), shell["centred"]["cv"], shell["raw"]["cv"]]
    torch.testing.assert_close(shell_statistics_torch(tensor(image)).tolist(), expected, **TIGHT)
    # the shell loss compares arctan(offset ratio) and the CVs; with a vanishing eps these are
    # the analysis values
    features = shell_features(tensor(image), eps=1e-14).tolist()
    np.testing.assert_allclose(features, [np.arctan(expected[0]), *expected[1:]], rtol=1e-10)
    # thin_shell's CV is std / mean with the unbiased variance
    centred = np.linalg.norm(image - image.mean(0), axis=1)
    assert shell["centred"]["cv"] == pytest.approx(centred.std(ddof=1) / centred.mean(), rel=1e-12)


def test_gap_is_one_definition(data):
    image, text = data
    image_hat, text_hat = F.normalize(tensor(image), dim=-1), F.normalize(tensor(text), dim=-1)
    delta = gap_vector_torch(image_hat, text_hat)
    np.testing.assert_allclose(delta.numpy(), analysis.gap_vector(image, text), **TIGHT)
    gap = analysis.modality_gap(image, text)
    assert gap["gap_norm"] == pytest.approx(delta.norm().item(), rel=1e-12)
    assert gap["raw_gap_norm"] == pytest.approx(np.linalg.norm(image.mean(0) - text.mean(0)), rel=1e-12)
    # the gap loss (equal dims, no heads): ||Delta_s - Delta_t||^2 + (||Delta_s|| - ||Delta_t||)^2
    student, teacher = (image[:60], text[:60]), (image[60:120] + 0.5, text[60:120])
    batch = DistillBatch(*map(tensor, student), torch.tensor(1.0), *map(tensor, teacher))
    d_s, d_t = analysis.gap_vector(*student), analysis.gap_vector(*teacher)
    expected = np.sum((d_s - d_t) ** 2) + (np.linalg.norm(d_s) - np.linalg.norm(d_t)) ** 2
    torch.testing.assert_close(build_loss("gap", {}, FeatureDims())(batch).item(), expected, **TIGHT)


def test_analyze_streamed_values_equal_the_in_memory_definitions(data):
    image, text = data
    config = analysis.AnalysisConfig(
        chunk_size=64, groups=("ellipsoid", "shell", "conformity", "gap"), histogram_bins=10
    )
    result = analysis.analyze({"image": image, "text": text}, config=config)
    streamed_once = analysis.analyze(
        {"image": iter([image[i : i + 64] for i in range(0, 300, 64)]), "text": text},
        config=analysis.AnalysisConfig(
            chunk_size=64, groups=("shell", "conformity"), histogram_bins=10, sample_size=300
        ),
    )
    for name, x in (("image", image), ("text", text)):
        modality = result.modalities[name]
        assert modality["ellipsoid"]["offset_ratio"] == pytest.approx(analysis.offset_ratio(x), rel=1e-12)
        shell = analysis.thin_shell(x)
        for part in ("centred", "raw"):
            for key in ("mean", "var", "cv"):
                assert modality["shell"][part][key] == pytest.approx(shell[part][key], rel=1e-12)
        conformity = analysis.conformity(x)
        assert modality["conformity"]["distribution"]["mean"] == pytest.approx(conformity.mean(), rel=1e-12)
        assert modality["conformity"]["distribution"]["var"] == pytest.approx(
            conformity.var(ddof=1), rel=1e-10
        )
    # a one-shot iterator (per-item values from the sample, here every row) gives the same values
    image_once = streamed_once.modalities["image"]
    assert image_once["shell"]["centred"]["cv"] == pytest.approx(
        result.modalities["image"]["shell"]["centred"]["cv"], rel=1e-12
    )
    assert image_once["conformity"]["distribution"]["mean"] == pytest.approx(
        result.modalities["image"]["conformity"]["distribution"]["mean"], rel=1e-12
    )
    pair = result.cross_modal["image_vs_text"]
    gap = analysis.modality_gap(image, text)
    assert pair["gap"]["gap_norm"] == pytest.approx(gap["gap_norm"], rel=1e-12)
    assert pair["gap"]["raw_gap_norm"] == pytest.approx(gap["raw_gap_norm"], rel=1e-12)
    assert pair["conformity"]["image_to_text"]["mean"] == pytest.approx(
        analysis.cross_conformity(image, text).mean(), rel=1e-12
    )


def test_analysis_metrics_keep_their_one_line_errors():
    with pytest.raises(LakdError, match="zero variance"):
        analysis.linear_cka(np.full((5, 3), 0.1), np.random.default_rng(0).standard_normal((5, 3)))
    with pytest.raises(LakdError, match="all 6 rows are identical"):
        analysis.offset_ratio(np.full((6, 4), 0.1), name="image")
    bad = np.ones((4, 3))
    bad[2] = 0.0
    with pytest.raises(LakdError, match=r"all zeros \(first at row 2\)"):
        analysis.gap_shift(bad, np.ones((4, 3)), np.zeros(3), 0.5)
    # a shift that moves a row onto the origin leaves it without a direction
    with pytest.raises(LakdError, match="shifted image"):
        analysis.gap_shift(np.array([[1.0, 0.0], [0.0, 1.0]]), np.ones((2, 2)), np.array([1.0, 0.0]), 1.0)


BANNED_IMPORTS = (
    "pandas",
    "matplotlib",
    "plotly",
    "lakd.models",
    "lakd.eval",
    "lakd.analysis.report",
    "lakd.distill",
)


def test_analysis_imports_no_models_eval_report_or_plotting():
    root = Path(analysis.__file__).parent
    for path in root.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert not name.startswith(BANNED_IMPORTS), f"{path.name} imports {name}"
    code = (
        "import sys, lakd.analysis; "
        "print(sorted(m for m in sys.modules if m.startswith(('lakd.models', 'lakd.eval', "
        "'lakd.analysis.report', 'lakd.distill', 'matplotlib', 'plotly'))))"
    )
    env = {**os.environ, "PYTHONPATH": str(root.parents[1])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.strip() == "[]"
