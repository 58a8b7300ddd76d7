"""One metric catalogue (``lakd.analysis.result.METRICS``) for logging and for the report:
``GeometryResult.scalars()`` on real ``analyze()`` results, and the summary rows under the same names."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lakd.analysis import AnalysisConfig, analyze
from lakd.analysis.result import BETTER, METRICS, RULES
from lakd.report.table import summary_rows

N, D = 200, 10
PER_MODALITY = [m.name for m in METRICS if m.per_modality and m.path[0] == "modalities"]
PAIR = [m.name for m in METRICS if m.path[0] == "cross_modal"]
ALIGNMENT = [m.name for m in METRICS if m.per_modality and m.path[0] == "alignment"]


def embeddings(seed: int, shift: float = 0.0) -> dict[str, np.ndarray]:
    """Paired image and text rows sharing a latent, with offset means (a small CLIP-like toy)."""
    rng = np.random.default_rng(seed)
    latent = np.random.default_rng(0).normal(size=(N, 4))
    mix = rng.normal(size=(4, D))
    return {
        "image": latent @ mix + 1.0 + shift + 0.2 * rng.normal(size=(N, D)),
        "text": latent @ mix - 1.0 + 0.3 * rng.normal(size=(N, D)),
    }


@pytest.fixture(scope="module")
def result():
    return analyze(embeddings(1), reference=embeddings(2), config=AnalysisConfig(sample_size=N))


def test_metadata_is_consistent():
    assert len(METRICS) == 21
    for metric in METRICS:
        assert metric.rule in RULES and (metric.better is None or metric.better in BETTER)
        assert ("{m}" in metric.path) == metric.per_modality
        assert metric.name.isidentifier() and metric.name == metric.name.lower()
    names = [m.scalar_name("image") for m in METRICS]
    assert len(set(names)) == len(names)


def test_scalars_are_the_nested_values_under_readable_names(result):
    scalars = result.scalars()
    expected = (
        [f"{m}.{name}" for m in ("image", "text") for name in PER_MODALITY]
        + [f"image_vs_text.{name}" for name in PAIR]
        + [f"alignment.{m}.{name}" for m in ("image", "text") for name in ALIGNMENT]
        + ["alignment.image_vs_text.top1_agreement"]
    )
    assert sorted(scalars) == sorted(expected)
    assert all(isinstance(v, float) and math.isfinite(v) for v in scalars.values())
    image, pair, alignment = result.modalities["image"], result.cross_modal["image_vs_text"], result.alignment
    spectrum = image["ellipsoid"]["spectrum"]
    assert scalars["image.offset_ratio"] == image["ellipsoid"]["offset_ratio"]
    assert scalars["image.effective_rank"] == spectrum["effective_rank"]
    assert scalars["image.effective_rank_fraction"] == pytest.approx(spectrum["effective_rank"] / D)
    assert scalars["image.tilt"] == image["ellipsoid"]["tilt"]["off_diagonal_mass"]
    assert scalars["image.shell_cv"] == image["shell"]["centred"]["cv"]
    assert scalars["text.norm_cv"] == result.modalities["text"]["shell"]["raw"]["cv"]
    assert scalars["image.conformity_r"] == image["conformity"]["fit_vs_cosine_to_mean"]["pearson_r"]
    assert scalars["image.ad_pass_rate"] == image["normality"]["anderson_darling"]["pass_rate"]
    assert scalars["image_vs_text.gap_norm"] == pair["gap"]["gap_norm"]
    assert scalars["image_vs_text.conformity_kl"] == pair["conformity"]["kl_within_conformity"]["kl"]
    assert scalars["image_vs_text.separability"] == pair["separability"]["cv_accuracy"]
    assert scalars["alignment.image.cka"] == alignment["image"]["linear_cka"]
    assert scalars["alignment.text.similarity_spearman"] == alignment["text"]["similarity_spearman"]["rho"]
    assert (
        scalars["alignment.image_vs_text.top1_agreement"] == alignment["image_vs_text"]["retrieval_agreement"]
    )
    assert result.scalars(prefix="geometry/") == {f"geometry/{k}": v for k, v in scalars.items()}


def test_skipped_metrics_are_none_and_without_a_reference_there_are_no_alignment_names(result):
    # 15 sampled rows: too few for normality (20) and for alignment with k = 14 (16)
    config = AnalysisConfig(sample_size=15, knn_k=14)
    small = analyze(embeddings(1), reference=embeddings(2), config=config)
    scalars = small.scalars()
    assert "skipped" in small.modalities["image"]["normality"] and "skipped" in small.alignment["image"]
    assert scalars["image.ad_pass_rate"] is None and scalars["text.dp_pass_rate"] is None
    assert scalars["alignment.image.cka"] is None and scalars["image.offset_ratio"] is not None
    assert scalars.keys() == result.scalars().keys()  # the same names as a full analysis
    alone = analyze(embeddings(1), config=AnalysisConfig(sample_size=N, groups=("ellipsoid", "gap")))
    names = alone.scalars()
    assert not [name for name in names if name.startswith("alignment.")]
    assert names["image.shell_cv"] is None and names["image_vs_text.gap_norm"] is not None


def test_summary_rows_use_the_scalar_names(result):
    student = analyze(embeddings(3, shift=0.5), reference=embeddings(2), config=AnalysisConfig(sample_size=N))
    results = {"teacher": result.to_dict(), "student": student.to_dict()}
    rows = summary_rows(results, {"teacher": D, "student": D})
    scalars = {name: r.scalars() for name, r in (("teacher", result), ("student", student))}
    assert {row["name"] for row in rows} == set(scalars["student"])
    for row in rows:
        assert row["values"]["student"] == scalars["student"][row["name"]]
        if not row["alignment"]:
            assert row["values"]["teacher"] == scalars["teacher"][row["name"]]
