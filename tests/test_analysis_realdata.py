"""Released W-CLIP statistics (OpenAI CLIP ViT-L/14, MS-COCO): the offset
ratios these statistics imply (about 1.00 image / 0.75 text) and lakd recovers them and the spectrum
from Gaussian samples with that mean and the covariance implied by the released PCA whitening matrix
W = V S^(-1/2)."""

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from lakd.analysis import AnalysisConfig, analyze, offset_ratio, spectrum
from lakd.analysis.moments import sorted_eigh

W_CLIP = Path(__file__).resolve().parents[1].parent / "shared" / "realdata" / "W_CLIP"
# skipped where ../shared is absent, but never in CI (CI=true), which has it: there a missing file fails
pytestmark = pytest.mark.skipif(
    not W_CLIP.is_dir() and not os.environ.get("CI"),
    reason=f"released W-CLIP statistics not found at {W_CLIP}",
)


def released(modality):
    """mean [768] and covariance factors: eigenvalues lam = 1 / ||w_i||^2, axes v_i = w_i sqrt(lam_i)."""
    mean = torch.load(W_CLIP / f"mean_{modality}_L14.pt", weights_only=True, map_location="cpu")
    w = torch.load(W_CLIP / f"w_mat_{modality}_L14.pt", weights_only=True, map_location="cpu")
    mean, w = mean.double().numpy().ravel(), w.double().numpy()
    eigenvalues = 1.0 / np.sum(w**2, axis=0)
    return mean, eigenvalues, w * np.sqrt(eigenvalues)


def gaussian_sample(modality, n, seed):
    """x = mu + z diag(sqrt(lam)) V^T: covariance V diag(lam) V^T (PSD even where the released
    V is not orthonormal, its tail having come from eig on a near-singular matrix)."""
    mean, eigenvalues, axes = released(modality)
    z = np.random.default_rng(seed).standard_normal((n, len(mean)))
    return mean + (z * np.sqrt(eigenvalues)) @ axes.T, mean, eigenvalues, axes


@pytest.fixture(scope="module")
def samples():
    """10k Gaussian rows per modality, drawn once for the module."""
    return {
        modality: gaussian_sample(modality, 10_000, seed=seed)
        for seed, modality in enumerate(("image", "text"))
    }


@pytest.mark.parametrize("modality,expected", [("image", 1.00), ("text", 0.75)])
def test_offset_ratio_matches_published_value(samples, modality, expected):
    x, mean, eigenvalues, _ = samples[modality]
    population = np.linalg.norm(mean) / np.sqrt(eigenvalues.sum())
    assert population == pytest.approx(expected, abs=0.01)  # about 1.00 / 0.75
    assert offset_ratio(x) == pytest.approx(population, rel=0.01)


@pytest.mark.parametrize("modality", ["image", "text"])
def test_spectrum_is_recovered(samples, modality):
    x, _, eigenvalues, axes = samples[modality]
    implied, _ = sorted_eigh((axes * eigenvalues) @ axes.T)
    result = spectrum(x)
    # PROVENANCE.md: top eigenvalues 8.12, 6.81, 6.00, 5.27, 4.28 (image) / 8.27, 5.18, 4.33, 3.48, 2.56 (text)
    np.testing.assert_allclose(result["top"], np.sort(eigenvalues)[::-1][:5], rtol=0.06)
    np.testing.assert_allclose(result["eigenvalues"][:20], implied[:20], rtol=0.1)
    assert result["total_variance"] == pytest.approx(eigenvalues.sum(), rel=0.01)
    p = implied / implied.sum()
    assert result["effective_rank"] == pytest.approx(np.exp(-np.sum(p[p > 0] * np.log(p[p > 0]))), rel=0.03)


def test_analyze_on_released_statistics(samples):
    image, text = samples["image"][0][:3000], samples["text"][0][:3000]
    config = AnalysisConfig(groups=("ellipsoid", "gap"), sample_size=1000)
    result = analyze({"image": image, "text": text}, config=config)
    assert result.modalities["image"]["ellipsoid"]["offset_ratio"] == pytest.approx(1.00, abs=0.03)
    assert result.modalities["text"]["ellipsoid"]["offset_ratio"] == pytest.approx(0.75, abs=0.03)
    # PROVENANCE.md: cos(mean_image, mean_text) = 0.204
    assert result.cross_modal["image_vs_text"]["ellipsoid"]["mean_cosine"] == pytest.approx(0.204, abs=0.01)
