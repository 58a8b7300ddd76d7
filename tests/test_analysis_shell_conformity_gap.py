"""Thin shell statistics, exact conformity (vs the brute-force N x N mean), modality gap and cone effect."""

import numpy as np
import pytest
import torch

from lakd.analysis import (
    cone_effect,
    conformity,
    conformity_fit,
    cross_conformity,
    gap_shift,
    gap_vector,
    histogram_kl,
    modality_gap,
    thin_shell,
)
from lakd.analysis.conformity import conformity_given_sum
from lakd.errors import LakdError


def unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def brute_force_conformity(x):
    cos = unit(x) @ unit(x).T
    np.fill_diagonal(cos, np.nan)
    return np.nanmean(cos, axis=1)


@pytest.fixture
def clip_like():
    rng = np.random.default_rng(0)
    return rng.standard_normal((300, 16)) * 0.3 + np.linspace(-1, 1, 16)


def test_thin_shell_matches_numpy(clip_like):
    result = thin_shell(clip_like)
    centred = np.linalg.norm(clip_like - clip_like.mean(axis=0), axis=1)
    assert result["centred"]["mean"] == pytest.approx(centred.mean())
    assert result["centred"]["var"] == pytest.approx(centred.var(ddof=1))
    assert result["centred"]["mean_sq_over_var"] == pytest.approx(centred.mean() ** 2 / centred.var(ddof=1))
    assert result["centred"]["cv"] == pytest.approx(centred.std(ddof=1) / centred.mean())
    assert result["centred"]["quantiles"]["q50"] == pytest.approx(np.median(centred))
    assert result["raw"]["mean"] == pytest.approx(np.linalg.norm(clip_like, axis=1).mean())
    assert sum(result["raw"]["histogram"]["counts"]) == len(clip_like)


def test_thin_shell_of_high_dimensional_gaussian_is_thin():
    # ||x - mu|| of N(mu, I_d) concentrates at sqrt(d) with variance about 1/2: E^2/Var ~ 2d
    x = np.random.default_rng(1).standard_normal((20_000, 256)) + 4.0
    result = thin_shell(x)
    assert result["centred"]["mean"] == pytest.approx(np.sqrt(256 - 0.5), rel=0.01)
    assert result["centred"]["var"] == pytest.approx(0.5, rel=0.05)
    assert result["centred"]["cv"] == pytest.approx(np.sqrt(0.5) / 16, rel=0.05)


def test_thin_shell_with_given_mean_and_constant_norms():
    x = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    result = thin_shell(x, mean=np.zeros(2))
    assert result["centred"]["var"] == 0.0
    assert result["centred"]["mean_sq_over_var"] is None  # undefined, not inf
    assert result["centred"]["cv"] == 0.0
    with pytest.raises(LakdError, match="at least 2 rows"):
        thin_shell(x[:1])


def test_conformity_identity_equals_brute_force(clip_like):
    np.testing.assert_allclose(conformity(clip_like), brute_force_conformity(clip_like), atol=1e-12)
    np.testing.assert_allclose(
        conformity(torch.from_numpy(clip_like)), brute_force_conformity(clip_like), atol=1e-12
    )
    # a chunk of the set, scored against the sum of the whole set
    x_hat = unit(clip_like)
    np.testing.assert_allclose(
        conformity_given_sum(x_hat[10:20], x_hat.sum(axis=0), len(x_hat)),
        brute_force_conformity(clip_like)[10:20],
    )


def test_cross_conformity_equals_brute_force(clip_like):
    other = np.random.default_rng(2).standard_normal((120, 16)) - 0.5
    expected = (unit(clip_like) @ unit(other).T).mean(axis=1)
    np.testing.assert_allclose(cross_conformity(clip_like, other), expected, atol=1e-12)
    with pytest.raises(LakdError, match="dimension 16 but other has 8"):
        cross_conformity(clip_like, other[:, :8])


def test_conformity_fit_recovers_a_linear_relation(clip_like):
    c = conformity(clip_like)
    mean_hat = unit(clip_like.mean(axis=0, keepdims=True))[0]
    cos_mu = unit(clip_like) @ mean_hat
    fit = conformity_fit(c, cos_mu)
    assert fit["pearson_r"] > 0.99  # [DE]: C is nearly linear in cos(x, mu)
    np.testing.assert_allclose(fit["slope"] * cos_mu + fit["intercept"], c, atol=0.02)
    exact = conformity_fit(2.0 * cos_mu - 0.25, cos_mu)
    assert exact["slope"] == pytest.approx(2.0) and exact["intercept"] == pytest.approx(-0.25)
    assert exact["pearson_r"] == pytest.approx(1.0)
    flat = conformity_fit(np.ones(10), np.linspace(0, 1, 10))
    assert flat["slope"] is None and flat["reason"] == "constant input"


def test_conformity_degenerate_inputs():
    with pytest.raises(LakdError, match="at least 2 rows"):
        conformity(np.ones((1, 4)))
    x = np.ones((5, 4))
    x[3] = 0.0
    with pytest.raises(LakdError, match=r"all zeros \(first at row 3\)"):
        conformity(x)


def test_histogram_kl():
    rng = np.random.default_rng(3)
    a, b = rng.normal(0, 1, 5000), rng.normal(0, 1, 5000)
    assert histogram_kl(a, b)["kl"] < 0.05
    shifted = histogram_kl(a, b + 2.0)
    assert shifted["kl"] > 1.0
    disjoint = histogram_kl(np.zeros(100), np.ones(100), bins=10)
    # 100 + 0.5 counts in one end bin of P and 0.5 in Q's, and the reverse at the other end:
    # KL = (100.5 log(100.5 / 0.5) + 0.5 log(0.5 / 100.5)) / 105 = (100 / 105) log 201
    assert disjoint["kl"] == pytest.approx(100 / 105 * np.log(201), rel=1e-12)
    assert len(disjoint["edges"]) == 11 and sum(disjoint["p_counts"]) == 100


def test_gap_of_a_known_shift():
    # image rows on the unit circle around +e0 (angle +-a), text around +e1: means known exactly
    angle = 0.3
    image = np.array([[np.cos(angle), np.sin(angle), 0.0], [np.cos(angle), -np.sin(angle), 0.0]]) * 5.0
    text = np.array([[0.0, np.cos(angle), np.sin(angle)], [0.0, np.cos(angle), -np.sin(angle)]]) * 2.0
    result = modality_gap(image, text)
    expected_delta = np.array([np.cos(angle), -np.cos(angle), 0.0])
    np.testing.assert_allclose(gap_vector(image, text), expected_delta, atol=1e-12)
    assert result["gap_norm"] == pytest.approx(np.sqrt(2) * np.cos(angle))
    assert result["raw_gap_norm"] == pytest.approx(np.linalg.norm([5 * np.cos(angle), -2 * np.cos(angle), 0]))
    assert result["mean_cosine"] == pytest.approx(0.0, abs=1e-12)
    assert result["cone_effect_image"] == pytest.approx(np.cos(2 * angle))


def test_gap_of_identical_sets_is_zero_and_shift_closes_it():
    rng = np.random.default_rng(4)
    base = rng.standard_normal((400, 8)) * 0.2
    shift = np.zeros(8)
    shift[0] = 1.0
    image, text = base + shift, base - shift
    assert modality_gap(base, base)["gap_norm"] == pytest.approx(0.0, abs=1e-12)
    delta = gap_vector(image, text)
    before = modality_gap(image, text)["gap_norm"]
    closed_image, closed_text = gap_shift(image, text, delta, 0.5)
    assert np.allclose(np.linalg.norm(closed_image, axis=1), 1.0)
    assert modality_gap(closed_image, closed_text)["gap_norm"] < 0.1 * before
    wider = modality_gap(*gap_shift(image, text, delta, -0.5))["gap_norm"]
    assert wider > before
    torch_image, torch_text = gap_shift(torch.from_numpy(image), torch.from_numpy(text), delta, 0.5)
    np.testing.assert_allclose(torch_image.numpy(), closed_image, atol=1e-12)
    np.testing.assert_allclose(torch_text.numpy(), closed_text, atol=1e-12)
    with pytest.raises(LakdError, match="dimension"):
        gap_shift(image, text, delta[:4], 0.5)
    with pytest.raises(LakdError, match="image has dimension 8 but text has 4"):
        modality_gap(image, text[:, :4])


def test_cone_effect_equals_brute_force_pairwise_mean():
    x = np.random.default_rng(5).standard_normal((150, 6)) + 0.7
    cos = unit(x) @ unit(x).T
    expected = (cos.sum() - np.trace(cos)) / (len(x) * (len(x) - 1))
    assert cone_effect(x) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("values", [[0.3, 0.3, 0.3], [0.3, 0.3 + 1e-16, 0.3 - 1e-16], [1e6, 1e6 + 1e-7, 1e6]])
def test_histogram_of_nearly_constant_values(values):
    from lakd.analysis.summary import histogram

    h = histogram(np.array(values))
    assert sum(h["counts"]) == len(values) and len(h["edges"]) == 51
    assert h["edges"][0] <= min(values) <= max(values) <= h["edges"][-1]
