"""analyze(): one JSON-safe result from matrices or streams, sampling recorded, degenerate input refused."""

import json

import numpy as np
import pytest
import torch

from lakd.analysis import GROUPS, AnalysisConfig, GeometryResult, analyze, conformity, offset_ratio, spectrum
from lakd.errors import LakdError

D = 12


def assert_nested_close(a, b, rel=1e-8):
    """Same structure; floats equal up to rounding (chunking changes the summation order)."""
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            assert_nested_close(a[key], b[key], rel)
    elif isinstance(a, list):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert_nested_close(x, y, rel)
    elif isinstance(a, float):
        assert a == pytest.approx(b, rel=rel, abs=1e-12)
    else:
        assert a == b


def rotation(d, seed):
    return np.linalg.qr(np.random.default_rng(seed).standard_normal((d, d)))[0]


@pytest.fixture(scope="module")
def embeddings():
    """A CLIP-like toy: two offset anisotropic Gaussians (image, text), 600 paired rows each."""
    rng = np.random.default_rng(0)
    scales = np.geomspace(1.0, 0.1, D)
    image = rng.standard_normal((600, D)) * scales @ rotation(D, 1) + 1.5 * np.eye(D)[0]
    text = rng.standard_normal((600, D)) * scales @ rotation(D, 2) + 1.2 * np.eye(D)[1]
    return {"image": image.astype(np.float32), "text": text.astype(np.float32)}


@pytest.fixture(scope="module")
def config():
    return AnalysisConfig(sample_size=300, chunk_size=128, knn_k=5, spearman_sample_size=100)


@pytest.fixture(scope="module")
def result(embeddings, config):
    turn = rotation(D, 3)
    reference = {name: torch.from_numpy(x @ turn.astype(np.float32) * 2) for name, x in embeddings.items()}
    return analyze(
        {k: torch.from_numpy(v) for k, v in embeddings.items()}, reference=reference, config=config
    )


def test_result_has_every_group_and_matches_the_metric_functions(result, embeddings):
    image = embeddings["image"].astype(np.float64)
    for name in ("image", "text"):
        entry = result.modalities[name]
        assert entry["rows"] == 600 and entry["dim"] == D
        assert {"ellipsoid", "shell", "conformity", "whitening", "normality"} <= set(entry)
    assert result.modalities["image"]["ellipsoid"]["offset_ratio"] == pytest.approx(
        offset_ratio(image), rel=1e-10
    )
    np.testing.assert_allclose(
        result.modalities["image"]["ellipsoid"]["spectrum"]["eigenvalues"],
        spectrum(image)["eigenvalues"],
        rtol=1e-8,
    )
    assert result.modalities["image"]["conformity"]["distribution"]["mean"] == pytest.approx(
        conformity(image).mean()
    )
    assert result.modalities["image"]["conformity"]["fit_vs_cosine_to_mean"]["pearson_r"] > 0.9
    pair = result.cross_modal["image_vs_text"]
    assert {"ellipsoid", "gap", "conformity", "separability"} == set(pair)
    assert pair["separability"]["cv_accuracy"] > 0.95  # offset means: linearly separable
    assert 0 < pair["gap"]["gap_norm"] < 2
    assert pair["conformity"]["kl_within_conformity"]["kl"] >= 0


def test_alignment_against_a_rotated_reference(result):
    for name in ("image", "text"):
        alignment = result.alignment[name]
        assert alignment["linear_cka"] == pytest.approx(1.0, abs=1e-6)
        assert alignment["procrustes_residual"] == pytest.approx(0.0, abs=1e-6)
        assert alignment["rows"] == 300
    assert result.alignment["image_vs_text"]["retrieval_agreement"] == 1.0


def test_sampling_is_recorded(result):
    sampling = result.sampling
    assert sampling["seed"] == 0 and sampling["sample_size"] == 300
    assert sampling["rows"] == {"image": 600, "text": 600}
    assert sampling["sampled_rows"] == {"image": 300, "text": 300}
    assert sampling["per_item_rows"] == {"image": "all", "text": "all"}
    assert "normality" in sampling["sampled_metrics"] and "alignment" in sampling["sampled_metrics"]
    assert "cross_modal.separability" in sampling["sampled_metrics"]
    assert "shell" not in sampling["sampled_metrics"] and "ellipsoid" not in sampling["sampled_metrics"]
    assert result.modalities["image"]["normality"]["rows"] == 300


def test_result_is_plain_json_and_round_trips(result):
    text = json.dumps(result.to_dict(), allow_nan=False)
    restored = GeometryResult.from_dict(json.loads(text))
    assert restored.to_dict() == result.to_dict()
    assert restored.config["groups"] == list(GROUPS)


def test_from_dict_refuses_bad_input(result):
    data = result.to_dict()
    data["modalities"]["image"]["ellipsoid"]["offset_ratio"] = float("nan")
    with pytest.raises(LakdError, match="modalities.image.ellipsoid.offset_ratio is not finite"):
        GeometryResult.from_dict(data)
    with pytest.raises(LakdError, match="unknown field"):
        GeometryResult.from_dict({"bogus": {}})
    with pytest.raises(LakdError, match="expected a JSON object"):
        GeometryResult.from_dict([1, 2])


def test_streaming_inputs_give_the_same_result(embeddings, config):
    direct = analyze(embeddings, config=config).to_dict()
    chunks = {name: [x[i : i + 100] for i in range(0, len(x), 100)] for name, x in embeddings.items()}
    listed = analyze(chunks, config=config).to_dict()
    called = analyze({name: (lambda c=c: iter(c)) for name, c in chunks.items()}, config=config).to_dict()
    for streamed in (listed, called):
        assert streamed["sampling"] == direct["sampling"]
        for name in ("image", "text"):
            for path in (
                ("ellipsoid", "offset_ratio"),
                ("shell", "centred", "mean"),
                ("conformity", "distribution", "mean"),
            ):
                a, b = direct["modalities"][name], streamed["modalities"][name]
                for key in path:
                    a, b = a[key], b[key]
                assert a == pytest.approx(b, rel=1e-10)
            assert_nested_close(
                direct["modalities"][name]["normality"], streamed["modalities"][name]["normality"]
            )


def test_one_shot_iterators_fall_back_to_the_sample(embeddings, config):
    generators = {
        name: iter([x[i : i + 100] for i in range(0, len(x), 100)]) for name, x in embeddings.items()
    }
    result = analyze(generators, config=config)
    assert result.sampling["per_item_rows"] == {"image": "sample", "text": "sample"}
    assert {"shell", "conformity", "cross_modal.conformity"} <= set(result.sampling["sampled_metrics"])
    assert result.modalities["image"]["shell"]["centred"]["n"] == 300
    # exact per-item conformity of the sampled items, against the whole set
    assert result.modalities["image"]["ellipsoid"]["offset_ratio"] == pytest.approx(
        offset_ratio(embeddings["image"].astype(np.float64)), rel=1e-10
    )


def test_group_selection_and_single_modality(embeddings, config):
    only = AnalysisConfig(groups=("ellipsoid", "gap"), sample_size=50)
    result = analyze({"image": embeddings["image"]}, config=only)
    assert set(result.modalities["image"]) == {"rows", "dim", "ellipsoid"}
    assert result.cross_modal == {} and result.alignment == {}
    assert result.sampling["per_item_rows"] == {"image": "none"}


def test_small_samples_skip_sampled_groups_with_a_reason(embeddings):
    result = analyze(embeddings, config=AnalysisConfig(sample_size=10, knn_k=10))
    assert result.modalities["image"]["normality"] == {"skipped": "needs at least 20 sampled rows, have 10"}
    assert "offset_ratio" in result.modalities["image"]["ellipsoid"]
    with_reference = analyze(
        embeddings, reference=embeddings, config=AnalysisConfig(sample_size=10, knn_k=10)
    )
    assert "skipped" in with_reference.alignment["image"]


def test_rank_deficient_data_is_regularised_without_nan(config):
    rng = np.random.default_rng(4)
    image = rng.standard_normal((200, D)) + 2.0
    image[:, 3] = 1.0  # constant coordinate
    image[:, 5] = image[:, 4]  # duplicated coordinate
    text = rng.standard_normal((8, D)) - 1.0  # N < d
    result = analyze(
        {"image": image, "text": text}, config=AnalysisConfig(sample_size=100, separability_folds=2)
    )
    whitening = result.modalities["image"]["whitening"]
    assert whitening["covariance_numerical_rank"] == D - 2 and whitening["regularised_axes"] >= 2
    assert result.modalities["image"]["ellipsoid"]["spectrum"]["condition_number"] is None
    assert result.modalities["text"]["normality"] == {"skipped": "needs at least 20 sampled rows, have 8"}
    json.dumps(result.to_dict(), allow_nan=False)


@pytest.mark.parametrize(
    "case,message",
    [
        ("one_row", "image: geometry analysis needs at least 2 rows, got 1"),
        ("nan_row", r"text: 1 row\(s\) contain NaN or Inf \(first at row 37\)"),
        ("inf_in_stream", r"image: 1 row\(s\) contain NaN or Inf \(first at row 250\)"),
        ("mismatched_dims", "image has dimension 12 but text has 8"),
        ("zero_row", r"text: 1 row\(s\) are all zeros \(first at row 5\)"),
        ("empty", "image: no embeddings"),
        ("not_a_matrix", "expected a tensor, an array or an iterable"),
        ("chunk_dims", "chunk at row 100 has dimension 8, expected 12"),
        ("reference_rows", "reference image: 300 rows but the analysed image has 600"),
        ("reference_keys", "reference has modalities audio"),
        ("unknown_group", "unknown spectra"),
        ("bad_sample_size", "sample_size: must be an integer >= 1, got 0"),
        ("no_modalities", "no modalities given"),
    ],
)
def test_degenerate_input_is_a_clear_error(embeddings, case, message):
    image, text = embeddings["image"].copy(), embeddings["text"].copy()
    reference, config = (
        None,
        AnalysisConfig(sample_size=50, groups=("ellipsoid", "shell", "gap", "alignment")),
    )
    data = {"image": image, "text": text}
    if case == "one_row":
        data = {"image": image[:1]}
    elif case == "nan_row":
        text[37, 2] = np.nan
    elif case == "inf_in_stream":
        image[250, 0] = np.inf
        data["image"] = [image[i : i + 100] for i in range(0, 600, 100)]
    elif case == "mismatched_dims":
        data["text"] = text[:, :8]
    elif case == "zero_row":
        text[5] = 0.0
    elif case == "empty":
        data = {"image": image[:0]}
    elif case == "not_a_matrix":
        data = {"image": 3.5}
    elif case == "chunk_dims":
        data = {"image": [image[:100], image[100:200, :8]]}
    elif case == "reference_rows":
        reference = {"image": image[:300]}
    elif case == "reference_keys":
        reference = {"audio": image}
    elif case == "unknown_group":
        config = AnalysisConfig(groups=("spectra",))
    elif case == "bad_sample_size":
        config = AnalysisConfig(sample_size=0)
    elif case == "no_modalities":
        data = {}
    with pytest.raises(LakdError, match=message):
        analyze(data, reference=reference, config=config)


def test_config_round_trip_and_unknown_fields():
    config = AnalysisConfig(
        groups=("ellipsoid",), cross_modal=(("image", "text_paired"),), whitening_method="pca"
    )
    assert AnalysisConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(LakdError, match="unknown field"):
        AnalysisConfig.from_dict({"samples": 10})
    with pytest.raises(LakdError, match="whitening_method"):
        AnalysisConfig.from_dict({"whitening_method": "eig"})
    with pytest.raises(LakdError, match="qq_coordinates: must be an integer >= 0, got -1"):
        AnalysisConfig.from_dict({"qq_coordinates": -1})
    with pytest.raises(LakdError, match="is not a pair"):
        AnalysisConfig.from_dict({"cross_modal": [["image", "image"]]})


def test_a_source_that_changes_between_passes_is_refused(embeddings):
    calls = []

    def shrinking():
        calls.append(1)
        return iter([embeddings["image"][: 600 - 100 * (len(calls) - 1)]])

    with pytest.raises(LakdError, match="image: 500 rows on this pass but 600 on the first"):
        analyze({"image": shrinking}, config=AnalysisConfig(groups=("shell",)))
