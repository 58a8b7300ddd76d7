"""Offset ratio, spectrum and tilt recover the parameters of Gaussians with known mean and covariance."""

import numpy as np
import pytest
import torch
from scipy import stats

from lakd.analysis import Moments, mean_cosine, offset_ratio, spectrum, tilt
from lakd.errors import LakdError

D = 24


def random_rotation(d, seed):
    return np.linalg.qr(np.random.default_rng(seed).standard_normal((d, d)))[0]


@pytest.fixture(scope="module")
def gaussian():
    """N = 40k rows with mean mu (||mu|| = 3) and covariance Q diag(lam) Q^T (tr = 9)."""
    rng = np.random.default_rng(0)
    eigenvalues = np.geomspace(2.0, 0.05, D)
    eigenvalues *= 9.0 / eigenvalues.sum()
    rotation = random_rotation(D, 1)
    mu = rng.standard_normal(D)
    mu *= 3.0 / np.linalg.norm(mu)
    x = mu + (rng.standard_normal((40_000, D)) * np.sqrt(eigenvalues)) @ rotation.T
    return x, mu, eigenvalues, rotation


def test_offset_ratio_recovers_analytic_value(gaussian):
    x, *_ = gaussian
    assert offset_ratio(x) == pytest.approx(3.0 / np.sqrt(9.0), rel=0.01)
    assert offset_ratio(torch.from_numpy(x)) == pytest.approx(offset_ratio(x))
    assert offset_ratio(Moments.from_array(x)) == pytest.approx(offset_ratio(x))


def test_spectrum_recovers_eigenvalues_and_effective_rank(gaussian):
    x, _, eigenvalues, _ = gaussian
    result = spectrum(x)
    np.testing.assert_allclose(result["eigenvalues"], eigenvalues, rtol=0.05)
    p = eigenvalues / eigenvalues.sum()
    assert result["effective_rank"] == pytest.approx(np.exp(stats.entropy(p)), rel=0.01)
    assert result["participation_ratio"] == pytest.approx(1 / np.sum(p**2), rel=0.02)
    assert result["anisotropy"] == pytest.approx(eigenvalues[0] / eigenvalues.mean(), rel=0.03)
    assert result["condition_number"] == pytest.approx(eigenvalues[0] / eigenvalues[-1], rel=0.06)
    assert result["numerical_rank"] == D
    assert result["top"] == result["eigenvalues"][:5]
    assert result["total_variance"] == pytest.approx(9.0, rel=0.01)


def test_isotropic_data_has_full_effective_rank():
    x = np.random.default_rng(2).standard_normal((50_000, 8))
    result = spectrum(x)
    assert result["effective_rank"] == pytest.approx(8, rel=0.01)
    assert result["participation_ratio"] == pytest.approx(8, rel=0.02)
    assert result["anisotropy"] == pytest.approx(1, abs=0.05)


def test_tilt_of_axis_aligned_and_rotated_ellipsoids():
    rng = np.random.default_rng(3)
    scales = np.array([3.0, 1.0, 0.5, 0.2])
    aligned = rng.standard_normal((30_000, 4)) * scales + np.array([0.0, 5.0, 0.0, 0.0])
    result = tilt(aligned)
    assert result["off_diagonal_mass"] < 0.02
    # top axis is e_0, the mean points along e_1: perpendicular
    assert result["top_axis_mean_angle_deg"] == pytest.approx(90, abs=1.0)
    along = rng.standard_normal((30_000, 4)) * scales + np.array([-4.0, 0.0, 0.0, 0.0])
    assert tilt(along)["top_axis_mean_angle_deg"] == pytest.approx(0, abs=1.0)  # sign of the axis folded away
    rotated = aligned @ random_rotation(4, 4).T
    assert tilt(rotated)["off_diagonal_mass"] > 0.3
    centred = aligned - aligned.mean(axis=0)
    assert tilt(centred)["top_axis_mean_angle_deg"] is not None
    assert (
        tilt(Moments.from_array(np.array([[1.0, 0], [-1.0, 0], [0, 0.1], [0, -0.1]])))[
            "top_axis_mean_angle_deg"
        ]
        is None
    )


def test_mean_cosine():
    a = np.array([[1.0, 0.0], [1.0, 0.2], [1.0, -0.2]])
    b = np.array([[0.0, 2.0], [0.1, 2.0], [-0.1, 2.0]])
    assert mean_cosine(a, b) == pytest.approx(0.0, abs=1e-12)
    assert mean_cosine(a, a * 3) == pytest.approx(1.0)
    with pytest.raises(LakdError, match="dimensions 2 and 3"):
        mean_cosine(a, np.ones((3, 3)))


@pytest.mark.parametrize(
    "case",
    ["n_below_d", "duplicated_columns", "constant_column"],
)
def test_rank_deficient_covariance_reports_rank_and_no_condition_number(case):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((200, 10)) + 1.0
    if case == "n_below_d":
        x = x[:6]
    elif case == "duplicated_columns":
        x[:, 7] = x[:, 2]
    else:
        x[:, 4] = 3.0
    result = spectrum(x)
    assert result["condition_number"] is None
    assert result["numerical_rank"] == {"n_below_d": 5, "duplicated_columns": 9, "constant_column": 9}[case]
    assert min(result["eigenvalues"]) >= 0.0  # rounding noise clipped, never negative
    # by hand: exp(entropy) of the normalised eigenvalues (0 log 0 = 0), ||mu|| / sqrt(tr Sigma)
    covariance = np.cov(x, rowvar=False)
    share = np.clip(np.linalg.eigvalsh(covariance), 0.0, None) / np.trace(covariance)
    share = share[share > 1e-12]
    assert result["effective_rank"] == pytest.approx(np.exp(-(share * np.log(share)).sum()), rel=1e-9)
    assert offset_ratio(x) == pytest.approx(np.linalg.norm(x.mean(axis=0)) / np.sqrt(np.trace(covariance)), rel=1e-12)


def test_degenerate_inputs_are_clear_errors():
    x = np.random.default_rng(6).standard_normal((20, 4))
    with pytest.raises(LakdError, match="at least 2 rows, got 1"):
        offset_ratio(x[:1], name="image")
    with pytest.raises(LakdError, match="all 5 rows are identical"):
        spectrum(np.ones((5, 4)))
    bad = x.copy()
    bad[7, 1] = np.inf
    with pytest.raises(LakdError, match=r"text: 1 row\(s\) contain NaN or Inf \(first at row 7\)"):
        offset_ratio(bad, name="text")
    with pytest.raises(LakdError, match="2-D"):
        spectrum(np.ones(4))
    with pytest.raises(LakdError, match="not a numeric matrix"):
        tilt([["a", "b"], ["c", "d"]])
