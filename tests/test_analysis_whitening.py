"""Whitening: identity covariance, PCA/ZCA structure, streaming, shrinkage, likelihood, save/load."""

import hashlib
import json

import numpy as np
import pytest
import sklearn.covariance
import torch
from safetensors.numpy import save_file
from scipy import stats

from lakd.analysis import Moments, WhiteningStats, fit_whitening, log_likelihood, whiten
from lakd.errors import LakdError


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    mixing = rng.standard_normal((16, 16)) * np.geomspace(3, 0.01, 16)
    return rng.standard_normal((3000, 16)) @ mixing + 7.0


@pytest.mark.parametrize("method", ["zca", "pca"])
def test_whitened_covariance_is_identity(data, method):
    stats_ = fit_whitening(data, method=method, eps=0.0)
    y = whiten(data, stats_)
    np.testing.assert_allclose(np.cov(y, rowvar=False), np.eye(16), atol=1e-8)
    np.testing.assert_allclose(y.mean(axis=0), 0.0, atol=1e-8)
    assert stats_.n == len(data) and stats_.rank == 16
    assert np.all(np.diff(stats_.eigenvalues) <= 0)  # descending


def test_zca_is_symmetric_and_pca_axes_are_orthogonal(data):
    zca = fit_whitening(data, method="zca")
    np.testing.assert_allclose(zca.W, zca.W.T, atol=1e-10)
    pca = fit_whitening(data, method="pca")
    gram = pca.W.T @ pca.W  # = Lambda^-1: the transform's rows (W's columns) are orthogonal
    np.testing.assert_allclose(gram, np.diag(np.diag(gram)), atol=1e-8 * np.abs(gram).max())
    np.testing.assert_allclose(np.diag(gram), 1 / pca.kept_eigenvalues, rtol=1e-8)
    # ZCA stays closest to the centred data among whitenings: y_zca = y_pca V^T
    np.testing.assert_allclose(
        np.linalg.norm(whiten(data, zca), axis=1), np.linalg.norm(whiten(data, pca), axis=1)
    )


def test_streamed_fit_equals_in_memory_fit(data):
    direct = fit_whitening(data, method="pca")
    chunks = [data[i : i + 500] for i in range(0, len(data), 500)]
    for source in (chunks, iter(chunks), lambda: iter(chunks), Moments.from_array(data)):
        streamed = fit_whitening(source, method="pca")
        np.testing.assert_allclose(streamed.mu, direct.mu, rtol=1e-12)
        np.testing.assert_allclose(np.abs(streamed.W), np.abs(direct.W), rtol=1e-7, atol=1e-9)
        np.testing.assert_allclose(streamed.eigenvalues, direct.eigenvalues, rtol=1e-10)


@pytest.mark.parametrize(
    "name,estimator", [("ledoit_wolf", sklearn.covariance.ledoit_wolf), ("oas", sklearn.covariance.oas)]
)
def test_shrinkage_uses_scikit_learn_intensity(data, name, estimator):
    small = data[:40]
    fitted = fit_whitening(small, shrinkage=name, eps=0.0)
    _, expected = estimator(small)
    assert fitted.shrinkage_coefficient == pytest.approx(expected)
    covariance = sklearn.covariance.shrunk_covariance(np.cov(small, rowvar=False), expected)
    np.testing.assert_allclose(fitted.eigenvalues, np.linalg.eigvalsh(covariance)[::-1], rtol=1e-8)
    streamed = fit_whitening([small[:20], small[20:]], shrinkage=name, eps=0.0, sample_size=100)
    assert streamed.shrinkage_coefficient == pytest.approx(expected)  # the sample is every row here
    with pytest.raises(LakdError, match="needs sample rows"):
        fit_whitening(Moments.from_array(small), shrinkage=name)


def test_rank_truncation(data):
    pca = fit_whitening(data, method="pca", rank=4, eps=0.0)
    y = whiten(data, pca)
    assert y.shape == (len(data), 4)
    np.testing.assert_allclose(np.cov(y, rowvar=False), np.eye(4), atol=1e-8)
    zca = fit_whitening(data, method="zca", rank=4)
    y = whiten(data, zca)
    assert y.shape == (len(data), 16)
    assert np.linalg.matrix_rank(np.cov(y, rowvar=False), tol=1e-6) == 4
    with pytest.raises(LakdError, match="rank must be between 1 and 16"):
        fit_whitening(data, rank=17)


@pytest.mark.parametrize("case", ["n_below_d", "duplicated_columns", "constant_column"])
def test_singular_covariance_needs_regularisation(data, case):
    x = data[:10].copy() if case == "n_below_d" else data.copy()
    if case == "duplicated_columns":
        x[:, 5] = x[:, 3]
    elif case == "constant_column":
        x[:, 2] = 1.5
    with pytest.raises(LakdError, match="covariance is singular"):
        fit_whitening(x, eps=0.0)
    regularised = fit_whitening(x, eps=1e-3)  # documented ridge: eps * mean eigenvalue
    assert regularised.ridge == pytest.approx(1e-3 * regularised.eigenvalues.mean())
    # by hand: the Gaussian of covariance Sigma + ridge I, ZCA matrix (Sigma + ridge I)^(-1/2)
    ridged = np.cov(x, rowvar=False) + regularised.ridge * np.eye(x.shape[1])
    values, vectors = np.linalg.eigh(ridged)
    zca = vectors @ np.diag(values**-0.5) @ vectors.T
    np.testing.assert_allclose(whiten(x, regularised), (x - x.mean(axis=0)) @ zca, rtol=1e-6, atol=1e-8)
    expected = stats.multivariate_normal(mean=x.mean(axis=0), cov=ridged).logpdf(x)
    np.testing.assert_allclose(log_likelihood(x, regularised), expected, rtol=1e-8)
    numerical = int(np.sum(regularised.eigenvalues > regularised.eigenvalues[0] * 16 * np.finfo(float).eps))
    truncated = fit_whitening(x, eps=0.0, method="pca", rank=numerical)  # or keep only the supported axes
    np.testing.assert_allclose(np.cov(whiten(x, truncated), rowvar=False), np.eye(numerical), atol=1e-6)


def test_bad_settings_and_inputs(data):
    with pytest.raises(LakdError, match="unknown value 'cholesky'"):
        fit_whitening(data, method="cholesky")
    with pytest.raises(LakdError, match="unknown value 'glasso'"):
        fit_whitening(data, shrinkage="glasso")
    with pytest.raises(LakdError, match="eps must be"):
        fit_whitening(data, eps=-1.0)
    with pytest.raises(LakdError, match="all 4 rows are identical"):
        fit_whitening(np.ones((4, 3)))
    with pytest.raises(LakdError, match="at least 2 rows"):
        fit_whitening(data[:1])
    stats_ = fit_whitening(data)
    with pytest.raises(LakdError, match="expects dimension 16, got 8"):
        whiten(data[:, :8], stats_)
    with pytest.raises(LakdError, match="expects dimension 16, got 8"):
        whiten(torch.zeros(2, 8), stats_)


def test_log_likelihood_equals_scipy_gaussian(data):
    stats_ = fit_whitening(data, eps=0.0)
    expected = stats.multivariate_normal(mean=data.mean(axis=0), cov=np.cov(data, rowvar=False)).logpdf(
        data[:50]
    )
    np.testing.assert_allclose(log_likelihood(data[:50], stats_), expected, rtol=1e-8)
    without = log_likelihood(data[:50], stats_, include_log_det=False)
    np.testing.assert_allclose(expected - without, stats_.log_det, rtol=1e-8)


def test_torch_whitening_matches_numpy_and_is_differentiable(data):
    stats_ = fit_whitening(data)
    x = torch.tensor(data[:10], requires_grad=True)
    y = whiten(x, stats_)
    np.testing.assert_allclose(y.detach().numpy(), whiten(data[:10], stats_), rtol=1e-10)
    log_likelihood(x, stats_).sum().backward()
    # d/dx log N(x; mu, Sigma + ridge I) = -(Sigma + ridge I)^(-1) (x - mu)
    ridged = np.cov(data, rowvar=False) + stats_.ridge * np.eye(data.shape[1])
    expected = -(data[:10] - data.mean(axis=0)) @ np.linalg.inv(ridged)
    np.testing.assert_allclose(x.grad.numpy(), expected, rtol=1e-6, atol=1e-10)
    assert whiten(torch.from_numpy(data[:3]).float(), stats_).dtype == torch.float32


def test_whitened_norms_follow_chi(data):
    gaussian = np.random.default_rng(1).standard_normal((20_000, 16)) @ np.diag(np.geomspace(3, 0.1, 16)) + 2
    norms = np.linalg.norm(whiten(gaussian, fit_whitening(gaussian)), axis=1)
    chi = stats.chi(16)
    assert norms.mean() == pytest.approx(chi.mean(), rel=0.005)
    assert norms.std() == pytest.approx(chi.std(), rel=0.03)
    assert stats.kstest(norms, chi.cdf).pvalue > 0.001


def test_save_load_round_trip(tmp_path, data):
    fitted = fit_whitening(data, method="pca", shrinkage="oas", rank=10, source="emb/teacher")
    path = fitted.save(tmp_path / "whiten.safetensors")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["whiten.json", "whiten.safetensors"]
    loaded = WhiteningStats.load(path)
    for field in ("mu", "W", "eigenvalues"):
        np.testing.assert_array_equal(getattr(loaded, field), getattr(fitted, field))
    for field in ("n", "method", "eps", "ridge", "shrinkage", "shrinkage_coefficient", "rank", "source"):
        assert getattr(loaded, field) == getattr(fitted, field)
    sidecar = json.loads((tmp_path / "whiten.json").read_text())
    assert sidecar["method"] == "pca" and sidecar["n"] == len(data)
    np.testing.assert_allclose(whiten(data, loaded), whiten(data, fitted))


def _rewrite_sidecar(path, **changes):
    sidecar = path.with_suffix(".json")
    meta = json.loads(sidecar.read_text())
    meta.update(changes)
    sidecar.write_text(json.dumps(meta))


@pytest.mark.parametrize(
    "damage,message",
    [
        ("missing", "whitening file not found"),
        ("directory", "it is a directory"),
        ("no_sidecar", "missing JSON sidecar"),
        ("bad_json", "not valid JSON"),
        ("wrong_format", "not a lakd whitening sidecar"),
        ("random_bytes", "not a readable safetensors file"),
        ("truncated", "not a readable safetensors file"),
        ("replaced", "do not match whiten.json"),
        ("missing_tensor", "missing tensor"),
        ("wrong_shape", "do not match dim"),
        ("missing_field", "missing field"),
        ("bad_method", "unknown value 'eig'"),
        ("nan", "NaN or Inf"),
    ],
)
def test_load_refuses_bad_files(tmp_path, data, damage, message):
    path = fit_whitening(data[:200]).save(tmp_path / "whiten.safetensors")
    sidecar = path.with_suffix(".json")
    if damage == "missing":
        path.unlink()
    elif damage == "directory":
        path.unlink()
        path.mkdir()
    elif damage == "no_sidecar":
        sidecar.unlink()
    elif damage == "bad_json":
        sidecar.write_text("{not json")
    elif damage == "wrong_format":
        _rewrite_sidecar(path, format="something-else")
    elif damage == "random_bytes":
        path.write_bytes(np.random.default_rng(0).bytes(300))
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:-40])
    elif damage == "replaced":
        save_file({"mu": np.zeros(16), "W": np.eye(16), "eigenvalues": np.ones(16)}, path)
    elif damage in ("missing_tensor", "wrong_shape", "nan"):
        tensors = {"mu": np.zeros(16), "W": np.eye(16), "eigenvalues": np.ones(16)}
        if damage == "missing_tensor":
            del tensors["eigenvalues"]
        elif damage == "wrong_shape":
            tensors["W"] = np.eye(8)
        else:
            tensors["mu"][3] = np.nan
        save_file(tensors, path)
        _rewrite_sidecar(path, tensors_sha256=hashlib.sha256(path.read_bytes()).hexdigest())
    elif damage == "missing_field":
        meta = json.loads(sidecar.read_text())
        del meta["rank"]
        sidecar.write_text(json.dumps(meta))
    elif damage == "bad_method":
        _rewrite_sidecar(path, method="eig")
    with pytest.raises(LakdError, match=message):
        WhiteningStats.load(path)


def test_save_needs_safetensors_suffix_and_leaves_nothing_half_written(tmp_path, data):
    with pytest.raises(LakdError, match="saved as a .safetensors file"):
        fit_whitening(data).save(tmp_path / "whiten.pt")
    assert list(tmp_path.iterdir()) == []
