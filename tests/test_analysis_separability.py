"""Linear separability of two sets: cross-validated accuracy and the fewest separating coordinates."""

import numpy as np
import pytest

from lakd.analysis import linear_separability
from lakd.analysis.separability import single_coordinate_accuracy
from lakd.errors import LakdError


def test_two_coordinates_needed_and_found():
    # classes differ only in x0 + x1 (a diagonal boundary): no single coordinate separates them
    rng = np.random.default_rng(0)
    a = rng.standard_normal((400, 10))
    b = rng.standard_normal((400, 10))
    a[:, :2] = rng.uniform(-1, 1, (400, 2))
    b[:, :2] = rng.uniform(-1, 1, (400, 2))
    a = a[a[:, 0] + a[:, 1] > 0.2]
    b = b[b[:, 0] + b[:, 1] < -0.2]
    result = linear_separability(a, b, seed=0)
    assert result["cv_accuracy"] > 0.95
    assert result["min_coordinates"] == 2
    assert sorted(result["coordinates"]) == [0, 1]
    assert result["accuracy_path"][0] < 1.0 and result["accuracy_path"][-1] == 1.0
    assert result["rows"] == [len(a), len(b)]


def test_identical_distributions_are_not_separable():
    rng = np.random.default_rng(1)
    result = linear_separability(
        rng.standard_normal((300, 8)), rng.standard_normal((300, 8)), max_coordinates=3
    )
    assert 0.4 < result["cv_accuracy"] < 0.6
    assert result["min_coordinates"] is None
    assert len(result["coordinates"]) == 3


def test_single_coordinate_accuracy_equals_brute_force():
    rng = np.random.default_rng(2)
    x = np.round(rng.standard_normal((60, 3)), 1)  # ties included
    x[:, 2] = 1.0  # constant: no threshold can split it
    labels = (rng.random(60) < 0.4).astype(int)
    expected = []
    for column in x.T:
        best = max(np.mean(labels == 0), np.mean(labels == 1))
        for threshold in np.unique(column):
            predicted = (column > threshold).astype(int)
            best = max(best, np.mean(predicted == labels), np.mean(predicted != labels))
        expected.append(best)
    np.testing.assert_allclose(single_coordinate_accuracy(x, labels), expected)


def test_bad_inputs():
    x = np.random.default_rng(3).standard_normal((20, 4))
    with pytest.raises(LakdError, match="dimension 4 but text has 3"):
        linear_separability(x, x[:, :3])
    with pytest.raises(LakdError, match="at least 5 rows, got 3"):
        linear_separability(x, x[:3])
