"""Normality of whitened coordinates: Gaussian passes ~95% by construction, heavy tails fail."""

import numpy as np
import pytest

from lakd.analysis import fit_whitening, normality, whiten
from lakd.errors import LakdError


def whitened(x):
    return whiten(x, fit_whitening(x))


@pytest.fixture(scope="module")
def gaussian_result():
    rng = np.random.default_rng(0)
    mixing = rng.standard_normal((200, 200)) / np.sqrt(200)
    x = rng.standard_normal((2000, 200)) @ mixing + 3.0
    return normality(whitened(x), qq_coordinates=3, seed=1)


def test_gaussian_passes_about_95_percent(gaussian_result):
    # 200 coordinates at the 5% level: pass rate ~ 0.95 with sd ~ 0.015
    assert 0.90 <= gaussian_result["anderson_darling"]["pass_rate"] <= 0.995
    assert 0.90 <= gaussian_result["dagostino_pearson"]["pass_rate"] <= 0.995
    assert gaussian_result["anderson_darling"]["mean_statistic"] < 0.752
    assert gaussian_result["constant_coordinates"] == 0
    assert gaussian_result["rows"] == 2000 and gaussian_result["coordinates"] == 200


def test_gaussian_whitened_norms_match_chi(gaussian_result):
    norms = gaussian_result["norms"]
    assert norms["chi_dof"] == 200
    assert norms["chi_mean"] == pytest.approx(np.sqrt(200 - 0.5), rel=1e-3)
    assert norms["mean"] == pytest.approx(norms["chi_mean"], rel=0.01)
    assert norms["cv"] == pytest.approx(norms["chi_cv"], rel=0.1)


def test_qq_points(gaussian_result):
    qq = gaussian_result["qq"]
    assert len(qq) == 3 and len({q["coordinate"] for q in qq}) == 3
    for q in qq:
        assert len(q["theoretical"]) == len(q["sample"]) == 99
        np.testing.assert_allclose(q["sample"], q["theoretical"], atol=0.25)  # Gaussian: on the diagonal


def test_heavy_tails_fail():
    rng = np.random.default_rng(2)
    x = rng.standard_t(df=3, size=(2000, 50)) @ (rng.standard_normal((50, 50)) / 7) + 1.0
    result = normality(whitened(x), qq_coordinates=2)
    assert result["anderson_darling"]["pass_rate"] < 0.2
    assert result["dagostino_pearson"]["pass_rate"] < 0.2
    assert result["anderson_darling"]["mean_statistic"] > 2.0
    assert result["norms"]["cv"] > 1.3 * result["norms"]["chi_cv"]


def test_constant_coordinates_are_excluded_and_counted():
    y = np.random.default_rng(3).standard_normal((500, 6))
    y[:, 2] = 0.0
    result = normality(y, dof=5)
    assert result["constant_coordinates"] == 1
    assert result["norms"]["chi_dof"] == 5
    assert all(q["coordinate"] != 2 for q in result["qq"])


def test_degenerate_inputs():
    with pytest.raises(LakdError, match="at least 20 rows, got 10"):
        normality(np.random.default_rng(4).standard_normal((10, 3)))
    with pytest.raises(LakdError, match="degrees of freedom must be between 1 and 3, got 0"):
        normality(np.random.default_rng(4).standard_normal((30, 3)), dof=0)
    with pytest.raises(LakdError, match="every coordinate is constant"):
        normality(np.zeros((30, 3)))
    bad = np.random.default_rng(5).standard_normal((30, 3))
    bad[4, 0] = np.nan
    with pytest.raises(LakdError, match="NaN or Inf"):
        normality(bad)
