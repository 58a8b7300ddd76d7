"""Teacher-student alignment: CKA, k-NN overlap, Procrustes, similarity Spearman, retrieval agreement."""

import numpy as np
import pytest

from lakd.analysis import (
    knn_overlap,
    linear_cka,
    procrustes_residual,
    retrieval_agreement,
    similarity_spearman,
)
from lakd.errors import LakdError


def rotation(d, seed):
    return np.linalg.qr(np.random.default_rng(seed).standard_normal((d, d)))[0]


@pytest.fixture(scope="module")
def teacher():
    rng = np.random.default_rng(0)
    return rng.standard_normal((400, 32)) @ np.diag(np.geomspace(2, 0.2, 32)) + 0.5


def test_rotated_scaled_shifted_copy_is_perfectly_aligned(teacher):
    student = 3.0 * teacher @ rotation(32, 1) + 7.0
    assert linear_cka(student, teacher) == pytest.approx(1.0, abs=1e-10)
    assert procrustes_residual(student, teacher) == pytest.approx(0.0, abs=1e-10)


def test_rotated_copy_keeps_neighbours_and_retrieval(teacher):
    student = teacher @ rotation(32, 2)  # cosine geometry preserved (no shift)
    assert knn_overlap(student, teacher, k=10) == pytest.approx(1.0)
    assert similarity_spearman(student, teacher, sample_size=200)["rho"] == pytest.approx(1.0)
    assert retrieval_agreement(student, teacher) == 1.0


def test_independent_data_is_not_aligned(teacher):
    other = np.random.default_rng(3).standard_normal(teacher.shape) @ np.diag(np.geomspace(2, 0.2, 32)) + 0.5
    assert linear_cka(other, teacher) < 0.15
    assert procrustes_residual(other, teacher) > 0.6
    assert knn_overlap(other, teacher, k=10) < 0.1
    assert abs(similarity_spearman(other - 0.5, teacher - 0.5, sample_size=200)["rho"]) < 0.1
    assert retrieval_agreement(other, teacher) < 0.05


def test_different_dimensions(teacher):
    # a student in 48 dims holding a rotated copy of the teacher plus zeros: still a perfect match
    embedded = np.hstack([teacher, np.zeros((len(teacher), 16))]) @ rotation(48, 4)
    assert procrustes_residual(embedded, teacher) == pytest.approx(0.0, abs=1e-10)
    assert procrustes_residual(teacher, embedded) == pytest.approx(0.0, abs=1e-10)
    assert linear_cka(embedded, teacher) == pytest.approx(1.0, abs=1e-10)
    projected = teacher[:, :8]  # loses most of the variance
    assert 0.0 < linear_cka(projected, teacher) < 1.0
    assert procrustes_residual(projected, teacher) > 0.1


def test_cross_modal_retrieval_agreement(teacher):
    texts = teacher + 0.05 * np.random.default_rng(5).standard_normal(teacher.shape)
    turn = rotation(32, 6)
    assert retrieval_agreement(teacher @ turn, teacher, texts @ turn, texts) == 1.0
    shuffled = texts[np.random.default_rng(7).permutation(len(texts))]
    assert retrieval_agreement(teacher @ turn, teacher, shuffled @ turn, texts) < 0.05
    with pytest.raises(LakdError, match="for both student and reference"):
        retrieval_agreement(teacher, teacher, texts, None)


def test_bad_inputs(teacher):
    with pytest.raises(LakdError, match="student has 400 rows but reference has 300"):
        linear_cka(teacher, teacher[:300])
    with pytest.raises(LakdError, match="zero variance"):
        linear_cka(np.ones((10, 3)), teacher[:10])
    with pytest.raises(LakdError, match="all rows identical"):
        procrustes_residual(np.ones((10, 3)), teacher[:10])
    with pytest.raises(LakdError, match="at least 11 rows"):
        knn_overlap(teacher[:5], teacher[:5], k=10)
    assert similarity_spearman(np.ones((10, 3)), teacher[:10])["rho"] is None
