"""``embed``: end-to-end on lakd:tiny-vit with a small in-test data source."""

from __future__ import annotations

import json
import logging
import os
import socket

import numpy as np
import pytest
import torch
from PIL import Image

import lakd.models.embed
from lakd.data import Item, Skipped
from lakd.data.sources import SourceKind, register_source, unregister_source
from lakd.data.store import META_NAME, EmbeddingStore, shard_file_name
from lakd.errors import LakdError
from lakd.models import load_model
from lakd.models.embed import EmbedConfig, embed
from lakd.models.encode import count_truncated, encode_texts

N_ITEMS, SHARD_SIZE = 40, 16
LONG_CAPTION = " ".join(["word"] * 300)


class TinyWorld:
    """``n`` random 64 px images; item i has 1 + i % 3 captions and label i % 3.

    Items in ``skip`` come back as :class:`Skipped`; items in ``long`` get a first caption far
    beyond any context length.
    """

    classnames = ["zero", "one", "two"]

    def __init__(self, n: int, skip=(), long=()):
        self.n, self.skip, self.long = n, set(skip), set(long)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> Item | Skipped:
        if i in self.skip:
            return Skipped(f"img-{i}", f"/data/img-{i}.png", "corrupt image")
        pixels = np.random.default_rng(i).integers(0, 256, (64, 64, 3), dtype=np.uint8)
        captions = [f"picture {i} caption {c}" for c in range(1 + i % 3)]
        if i in self.long:
            captions[0] = LONG_CAPTION
        return Item(f"img-{i}", Image.fromarray(pixels), captions, label=i % 3)


def _indices(value: str, n: int) -> set[int]:
    if value == "all":
        return set(range(n))
    return {int(x) for x in value.split(",") if x}


def open_tiny_world(rest: str, query: dict[str, str], options) -> TinyWorld:
    """``embedtest:N?skip=1,2&long=3`` (``skip=all`` makes every image unreadable)."""
    n = int(rest)
    return TinyWorld(n, _indices(query.get("skip", ""), n), _indices(query.get("long", ""), n))


TINY_WORLD = SourceKind("embedtest", open_tiny_world, scheme="embedtest")


@pytest.fixture
def tiny_world_scheme():
    register_source(TINY_WORLD)
    yield TINY_WORLD
    unregister_source(TINY_WORLD.name)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return load_model("lakd:tiny-vit")


@pytest.fixture
def counting(tiny, monkeypatch, tiny_world_scheme):
    """Route embed's model loading to the shared tiny model; count the images it encodes."""
    model, preprocess, tokenizer = tiny
    counts = {"images": 0, "loads": 0}
    encode_image = model.encode_image

    def counted_encode_image(images, normalize=False):
        counts["images"] += images.shape[0]
        return encode_image(images, normalize=normalize)

    def fake_load_model(spec, *, device="cpu", arch=None, precision="fp32"):
        counts["loads"] += 1
        return model, preprocess, tokenizer

    monkeypatch.setattr(model, "encode_image", counted_encode_image, raising=False)
    monkeypatch.setattr(lakd.models.embed, "load_model", fake_load_model)
    return counts


def config(tmp_path, data=f"embedtest:{N_ITEMS}", **kw) -> EmbedConfig:
    kw = {"batch_size": 8, "shard_size": SHARD_SIZE, **kw}
    return EmbedConfig(model="lakd:tiny-vit", data=data, out=str(tmp_path / "emb"), **kw)


def test_round_trip_equals_model_outputs(tmp_path, tiny, counting):
    model, preprocess, tokenizer = tiny
    store = embed(config(tmp_path))
    assert isinstance(store, EmbeddingStore) and store.n_items == N_ITEMS
    assert counting == {"images": N_ITEMS, "loads": 1}
    world = TinyWorld(N_ITEMS)
    rows = [0, 17, 39]
    with torch.no_grad():
        expected = model.encode_image(
            torch.stack([preprocess(world[i].image) for i in rows]), normalize=False
        )
    assert torch.allclose(store.load("image")[rows], expected, atol=1e-5)
    captions = [c for i in range(N_ITEMS) for c in world[i].captions]
    assert store.captions() == captions
    assert torch.allclose(store.load("text"), encode_texts(model, tokenizer, captions, 64), atol=1e-5)
    first = encode_texts(model, tokenizer, [world[i].captions[0] for i in range(N_ITEMS)], 64)
    assert torch.allclose(store.load("text_paired"), first, atol=1e-5)
    assert store.text_item().tolist() == [i for i in range(N_ITEMS) for _ in world[i].captions]
    assert store.ids() == [f"img-{i}" for i in range(N_ITEMS)]
    assert store.labels().tolist() == [i % 3 for i in range(N_ITEMS)]
    # raw embeddings: not L2-normalised
    assert not torch.allclose(store.load("image").norm(dim=1), torch.ones(N_ITEMS))


def test_meta_and_shards(tmp_path, counting):
    embed(config(tmp_path))
    out = tmp_path / "emb"
    meta = json.loads((out / META_NAME).read_text())
    assert (
        meta["complete"] is True
        and meta["model"] == "lakd:tiny-vit"
        and meta["source"] == f"embedtest:{N_ITEMS}"
    )
    assert (meta["n_items"], meta["image_dim"], meta["text_dim"]) == (N_ITEMS, 256, 256)
    assert meta["n_texts"] == sum(1 + i % 3 for i in range(N_ITEMS))
    assert meta["classnames"] == TinyWorld.classnames and meta["dtype"] == "float32"
    assert meta["options"]["batch_size"] == 8 and meta["shard_size"] == SHARD_SIZE
    assert [s["n_items"] for s in meta["shards"]] == [16, 16, 8]
    assert sorted(p.name for p in out.iterdir()) == [META_NAME] + [shard_file_name(i) for i in range(3)]


def test_resume_recomputes_only_the_missing_shard(tmp_path, counting):
    first = embed(config(tmp_path)).load("image")
    out = tmp_path / "emb"
    (out / shard_file_name(1)).unlink()
    kept = {i: os.stat(out / shard_file_name(i)).st_mtime_ns for i in (0, 2)}
    counting["images"] = 0
    second = embed(config(tmp_path)).load("image")
    assert counting["images"] == SHARD_SIZE
    assert {i: os.stat(out / shard_file_name(i)).st_mtime_ns for i in (0, 2)} == kept
    assert torch.allclose(first, second, atol=1e-6)
    counting["images"] = 0
    embed(config(tmp_path))
    assert counting["images"] == 0


def test_store_of_another_model_is_refused_without_overwrite(tmp_path, counting):
    embed(config(tmp_path))
    other = config(tmp_path)
    other.model = "lakd:tiny-resnet"
    with pytest.raises(LakdError, match=r"model='lakd:tiny-vit'.*use `overwrite`"):
        embed(other)
    other.overwrite = True
    counting["images"] = 0
    assert embed(other).meta["model"] == "lakd:tiny-resnet" and counting["images"] == N_ITEMS


def test_skipped_images_are_counted_and_reported(tmp_path, counting, caplog):
    with caplog.at_level(logging.WARNING, logger="lakd.models.embed"):
        store = embed(config(tmp_path, data=f"embedtest:{N_ITEMS}?skip=2,5,20"))
    assert store.n_items == N_ITEMS - 3 and store.meta["n_skipped"] == 3
    assert "img-2" not in store.ids() and "img-3" in store.ids()
    assert "skipped 3 unreadable image(s): /data/img-2.png (corrupt image)" in caplog.text
    assert store.load("image").shape == (N_ITEMS - 3, 256)


def test_shard_of_only_unreadable_images(tmp_path, counting):
    skip = ",".join(str(i) for i in range(16, 32))
    store = embed(config(tmp_path, data=f"embedtest:{N_ITEMS}?skip={skip}"))
    assert [s["n_items"] for s in store.meta["shards"]] == [16, 0, 8]
    assert store.load("text_paired").shape == (24, 256)


def test_all_images_unreadable_is_an_error_naming_the_source(tmp_path, counting):
    with pytest.raises(LakdError, match=r"embedtest:10\?skip=all: no readable image"):
        embed(config(tmp_path, data="embedtest:10?skip=all"))
    assert not (tmp_path / "emb" / META_NAME).exists()


def test_empty_source_is_an_error(tmp_path, counting):
    with pytest.raises(LakdError, match="embedtest:0: the data source has no items"):
        embed(config(tmp_path, data="embedtest:0"))


def test_truncated_captions_are_counted(tmp_path, counting, caplog):
    with caplog.at_level(logging.WARNING, logger="lakd.models.embed"):
        store = embed(config(tmp_path, data=f"embedtest:{N_ITEMS}?long=1,4,30"))
    assert store.meta["n_truncated"] == 3
    assert "3 caption(s) longer than the context length (32 tokens) were truncated" in caplog.text


def test_count_truncated_boundary(tiny):
    _, _, tokenizer = tiny
    ctx = tokenizer.context_length
    fits, too_long = " ".join(["a"] * (ctx - 2)), " ".join(["a"] * (ctx - 1))
    lengths = (tokenizer([fits, too_long], context_length=4 * ctx) != 0).sum(dim=1).tolist()
    assert lengths == [ctx, ctx + 1]
    assert count_truncated(tokenizer, [fits, too_long, "a cat"]) == 1
    assert count_truncated(tokenizer, []) == 0


def test_encode_texts_batches_and_empty(tiny):
    model, _, tokenizer = tiny
    texts = [f"a photo of class {i}" for i in range(11)]
    whole = encode_texts(model, tokenizer, texts, batch_size=64)
    assert whole.shape == (11, 256) and whole.dtype == torch.float32
    assert torch.allclose(encode_texts(model, tokenizer, texts, batch_size=3), whole, atol=1e-5)
    assert encode_texts(model, tokenizer, [], batch_size=8).shape == (0, 256)


def test_float16_store_and_workers_match(tmp_path, counting):
    reference = embed(config(tmp_path)).load("image")
    half = embed(config(tmp_path / "half", dtype="float16", num_workers=2, batch_size=16))
    assert half.meta["dtype"] == "float16"
    assert torch.allclose(half.load("image"), reference, rtol=1e-2, atol=1e-2)


def test_bad_options_are_errors(tmp_path, counting):
    with pytest.raises(LakdError, match="batch_size"):
        embed(config(tmp_path, batch_size=0))
    with pytest.raises(LakdError, match="dtype"):
        embed(config(tmp_path, dtype="int8"))
    assert not (tmp_path / "emb").exists()


def test_random_init_spec_embeds_the_same_on_every_run(tmp_path, tiny_world_scheme):
    rng_state = torch.random.get_rng_state()
    first = embed(EmbedConfig(model="lakd:tiny-vit", data="embedtest:4", out=str(tmp_path / "a")))
    second = embed(EmbedConfig(model="lakd:tiny-vit", data="embedtest:4", out=str(tmp_path / "b")))
    assert torch.equal(first.load("image"), second.load("image"))
    assert torch.equal(torch.random.get_rng_state(), rng_state)


# ---- two ranks (gloo) -------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _rank_main(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    register_source(TINY_WORLD)
    store = embed(
        EmbedConfig(model="lakd:tiny-vit", data="embedtest:24", out=out, batch_size=8, shard_size=8)
    )
    assert store.n_items == 24


@pytest.mark.slow
def test_two_gloo_ranks_write_one_store(tmp_path, tiny_world_scheme):
    out = tmp_path / "emb"
    torch.multiprocessing.spawn(_rank_main, args=(2, _free_port(), str(out)), nprocs=2, join=True)
    store = EmbeddingStore(out)
    assert [s["n_items"] for s in store.meta["shards"]] == [8, 8, 8]
    assert store.ids() == [f"img-{i}" for i in range(24)]
    assert store.load("text_paired").shape == (24, 256)
    # the same embeddings as one process writes
    single = embed(
        EmbedConfig(model="lakd:tiny-vit", data="embedtest:24", out=str(tmp_path / "one"), batch_size=8, shard_size=8)
    )
    for view in ("image", "text"):
        torch.testing.assert_close(store.load(view), single.load(view), rtol=1e-4, atol=1e-5)


def test_processes_sharing_a_cache_take_turns(tmp_path, monkeypatch):
    """Two callers of cached_embed on one model and data at once (threads here; the lock is a file
    lock, so processes alike): one embeds, the other waits for its store and reuses it."""
    import threading
    import time

    from lakd.models.embed import cached_embed

    calls: list[str] = []
    real = lakd.models.embed.embed

    def slow_embed(cfg):
        calls.append(cfg.out)
        time.sleep(0.5)  # the second caller arrives while the first is embedding
        return real(cfg)

    monkeypatch.setattr(lakd.models.embed, "embed", slow_embed)
    stores, errors = [], []

    def run():
        try:
            stores.append(cached_embed("lakd:tiny-resnet", "shapes:val?n=8&image_size=32", tmp_path / "cache", batch_size=4))
        except Exception as err:  # pragma: no cover - reported by the assert below
            errors.append(err)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and len(calls) == 1 and len(stores) == 2
    assert stores[0].ids() == stores[1].ids() and torch.equal(stores[0].load("image"), stores[1].load("image"))


def test_a_failed_cached_embed_leaves_no_trace(tmp_path):
    from lakd.models.embed import cached_embed

    with pytest.raises(LakdError):
        cached_embed("lakd:tiny-resnet", "shapes:val?n=0", tmp_path / "cache" / "deeper")
    assert not (tmp_path / "cache").exists()  # no key, no lock file, no folder it made
