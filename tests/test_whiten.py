"""``lakd whiten fit`` / ``apply`` on embedding stores."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lakd.analysis.whitening import WhiteningStats, whiten
from lakd.cli import main
from lakd.data.store import (
    ClassPrompts,
    EmbeddingStore,
    ShardData,
    StoreSpec,
    StoreWriter,
    write_class_prompts,
)
from lakd.data.store.whitening import (
    WhitenApplyConfig,
    WhitenFitConfig,
    apply_store_whitening,
    fit_store_whitening,
    load_stats_set,
    stats_path,
)
from lakd.errors import LakdError

N, SHARD, D_IMAGE, D_TEXT = 600, 250, 12, 8


def _gaussian(rng, n, d, offset):
    a = np.eye(d) + 0.5 * rng.normal(size=(d, d)) / np.sqrt(d)  # correlated, well conditioned
    return torch.tensor(rng.normal(size=(n, d)) @ a + offset, dtype=torch.float32)


@pytest.fixture()
def store(tmp_path):
    """A three-shard store of correlated, offset Gaussian embeddings (two captions per item)."""
    rng = np.random.default_rng(0)
    image = _gaussian(rng, N, D_IMAGE, 3.0)
    text = _gaussian(rng, 2 * N, D_TEXT, -1.0)
    writer = StoreWriter(
        tmp_path / "emb", StoreSpec(model="synthetic", source="synthetic", n_source_items=N, shard_size=SHARD)
    )
    for index, (start, stop) in enumerate(writer.ranges):
        n = stop - start
        writer.write(
            index,
            ShardData(
                image=image[start:stop],
                text=text[2 * start : 2 * stop],
                text_item=torch.arange(n).repeat_interleave(2),
                ids=[f"item{i}" for i in range(start, stop)],
                captions=[f"caption {j}" for j in range(2 * start, 2 * stop)],
                labels=torch.arange(start, stop) % 3,
            ),
        )
    writer.finish()
    prompts = torch.tensor(rng.normal(size=(3, 2, D_TEXT)), dtype=torch.float32)
    write_class_prompts(
        tmp_path / "emb", ClassPrompts(prompts, ["a", "b", "c"], ["{c}", "a {c}"], "synthetic")
    )
    return tmp_path / "emb", image, text, prompts


def test_stats_path_naming(tmp_path):
    assert stats_path(tmp_path / "w.safetensors", "image") == tmp_path / "w.image.safetensors"
    with pytest.raises(LakdError, match="NAME.safetensors"):
        stats_path(tmp_path / "w.pt", "image")


@pytest.mark.parametrize("method", ["zca", "pca"])
def test_fit_whitens_each_modality_to_identity(store, tmp_path, method):
    path, image, text, _ = store
    files = fit_store_whitening(
        WhitenFitConfig(str(path), str(tmp_path / "w.safetensors"), method=method, chunk_size=97)
    )
    assert set(files) == {"image", "text"}
    stats = load_stats_set(tmp_path / "w.safetensors")
    for name, x in (("image", image), ("text", text)):
        assert stats[name].n == len(x) and stats[name].method == method
        y = whiten(x.double().numpy(), stats[name])
        np.testing.assert_allclose(np.cov(y, rowvar=False), np.eye(x.shape[1]), atol=1e-4)
        np.testing.assert_allclose(y.mean(0), 0, atol=1e-8)


def test_fit_one_modality_only(store, tmp_path):
    path, *_ = store
    files = fit_store_whitening(
        WhitenFitConfig(str(path), str(tmp_path / "w.safetensors"), modalities=("text",))
    )
    assert list(files) == ["text"] and not (tmp_path / "w.image.safetensors").exists()


def test_apply_writes_a_whitened_store_with_the_same_items(store, tmp_path):
    path, image, text, prompts = store
    fit_store_whitening(WhitenFitConfig(str(path), str(tmp_path / "w.safetensors")))
    out = apply_store_whitening(
        WhitenApplyConfig(str(path), str(tmp_path / "w.safetensors"), str(tmp_path / "white"))
    )
    src = EmbeddingStore(path)
    assert out.ids() == src.ids() and out.captions() == src.captions()
    assert torch.equal(out.labels(), src.labels()) and torch.equal(out.text_item(), src.text_item())
    assert len(out.meta["shards"]) == 3
    stats = WhiteningStats.load(tmp_path / "w.image.safetensors")
    np.testing.assert_allclose(out.load("image").numpy(), whiten(image.double().numpy(), stats), atol=1e-4)
    np.testing.assert_allclose(np.cov(out.load("text").numpy(), rowvar=False), np.eye(D_TEXT), atol=1e-3)
    assert set(out.meta["whitening"]) == {"image", "text"} and out.meta["whitened_from"] == str(path)
    assert "whitened by" in out.meta["model"]
    text_stats = WhiteningStats.load(tmp_path / "w.text.safetensors")
    expected = whiten(prompts.reshape(-1, D_TEXT).double().numpy(), text_stats).reshape(3, 2, D_TEXT)
    np.testing.assert_allclose(out.class_prompts().embeddings.numpy(), expected, atol=1e-4)


def test_apply_errors(store, tmp_path):
    path, *_ = store
    w = tmp_path / "w.safetensors"
    with pytest.raises(LakdError, match="whitening file not found"):
        apply_store_whitening(WhitenApplyConfig(str(path), str(w), str(tmp_path / "white")))
    fit_store_whitening(WhitenFitConfig(str(path), str(w)))
    with pytest.raises(LakdError, match="must differ"):
        apply_store_whitening(WhitenApplyConfig(str(path), str(w), str(path), overwrite=True))
    (tmp_path / "taken").mkdir()
    with pytest.raises(LakdError, match="already exists"):
        apply_store_whitening(WhitenApplyConfig(str(path), str(w), str(tmp_path / "taken")))
    # statistics of another dimension
    other = tmp_path / "other.safetensors"
    stats = load_stats_set(w)
    stats["text"].save(stats_path(other, "image"))
    stats["text"].save(stats_path(other, "text"))
    with pytest.raises(LakdError, match="dimension"):
        apply_store_whitening(WhitenApplyConfig(str(path), str(other), str(tmp_path / "white2")))
    assert not (tmp_path / "white2").exists()


def test_cli_fit_and_apply(store, tmp_path, capsys):
    path, *_ = store
    w = tmp_path / "w.safetensors"
    assert (
        main(
            [
                "whiten",
                "fit",
                "--embeddings",
                str(path),
                "--out",
                str(w),
                "--method",
                "pca",
                "--rank",
                "4",
                "--modality",
                "image",
            ]
        )
        == 0
    )
    assert "w.image.safetensors" in capsys.readouterr().out
    meta = json.loads((tmp_path / "w.image.json").read_text())  # the statistics' JSON sidecar
    assert meta["rank"] == 4 and meta["method"] == "pca"
    assert main(["whiten", "fit", "--embeddings", str(path), "--out", str(w), "--modality", "audio"]) == 1
    assert "modality" in capsys.readouterr().err
    assert main(["whiten", "fit", "--embeddings", str(tmp_path / "nope"), "--out", str(w)]) == 1
    assert "nope" in capsys.readouterr().err
    assert main(["whiten", "fit", "--embeddings", str(path), "--out", str(w)]) == 0
    assert (
        main(["whiten", "apply", "--embeddings", str(path), "--stats", str(w), "--out", str(tmp_path / "o")])
        == 0
    )
    assert "600 items" in capsys.readouterr().out


def test_apply_refuses_nonfinite_rows(store, tmp_path):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    path, *_ = store
    w = tmp_path / "w.safetensors"
    fit_store_whitening(WhitenFitConfig(str(path), str(w)))
    shard = path / "shard-00001.safetensors"
    with safe_open(str(shard), framework="pt") as f:
        metadata = f.metadata()
    tensors = load_file(str(shard))
    tensors["text"][3, 0] = float("nan")
    save_file(tensors, str(shard), metadata=metadata)
    with pytest.raises(
        LakdError, match=r"shard-00001.safetensors: 1 of 500 text rows contain NaN/Inf; rerun with `allow_nonfinite`"
    ):
        apply_store_whitening(WhitenApplyConfig(str(path), str(w), str(tmp_path / "white")))
    assert not (tmp_path / "white").exists()
    # --allow-nonfinite drops that caption (and nothing else) and whitens the rest
    white = apply_store_whitening(
        WhitenApplyConfig(str(path), str(w), str(tmp_path / "white"), allow_nonfinite=True)
    )
    source = EmbeddingStore(path, allow_nonfinite=True)
    assert (white.n_items, white.n_texts) == (source.n_items, source.n_texts)
    assert source.n_dropped_texts == 1 and white.captions() == source.captions()
    assert torch.isfinite(white.load("text")).all()


def test_apply_overwrite_replaces_only_a_store(store, tmp_path):
    path, *_ = store
    w = tmp_path / "w.safetensors"
    fit_store_whitening(WhitenFitConfig(str(path), str(w)))
    users = tmp_path / "users"
    users.mkdir()
    (users / "meta.json").write_text('{"mine": true}')
    with pytest.raises(LakdError, match="not a lakd embedding store.*not replacing it, even with `overwrite`"):
        apply_store_whitening(WhitenApplyConfig(str(path), str(w), str(users), overwrite=True))
    assert (users / "meta.json").read_text() == '{"mine": true}'
    out = tmp_path / "white"
    apply_store_whitening(WhitenApplyConfig(str(path), str(w), str(out)))
    again = apply_store_whitening(WhitenApplyConfig(str(path), str(w), str(out), overwrite=True))
    assert again.n_items == EmbeddingStore(path).n_items
