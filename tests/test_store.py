"""Embedding store: writer, reader, resume, and every bad-store error, on synthetic tensors."""

from __future__ import annotations

import json
import math
import os

import pytest
import torch

from lakd.data.store import (
    META_NAME,
    EmbeddingStore,
    ShardData,
    StoreSpec,
    StoreWriter,
    read_shard_header,
    shard_file_name,
)
from lakd.data.store.format import shard_ranges, shards_for_rank, write_shard
from lakd.errors import LakdError

D_IMAGE, D_TEXT = 8, 6


def captions_per_item(index: int) -> int:
    """1 to 3 captions per source item, varying."""
    return 1 + index % 3


def make_shard(start: int, stop: int, *, skip=(), nan_images=(), nan_texts=(), d_image=D_IMAGE) -> ShardData:
    """Rows encode their source item: image[:, 0] = item, text[:, 0] = item + caption / 10."""
    kept = [i for i in range(start, stop) if i not in skip]
    image = torch.randn(len(kept), d_image)
    image[:, 0] = torch.tensor(kept, dtype=torch.float32)
    texts, text_item, captions = [], [], []
    for row, item in enumerate(kept):
        for c in range(captions_per_item(item)):
            vec = torch.randn(D_TEXT)
            vec[0] = item + c / 10
            texts.append(vec)
            text_item.append(row)
            captions.append(f"caption {c} of item {item}")
    text = torch.stack(texts) if texts else torch.empty(0, D_TEXT)
    for item in set(nan_images) & set(kept):
        image[kept.index(item), 1] = math.nan
    for item, c in nan_texts:
        if f"caption {c} of item {item}" in captions:
            text[captions.index(f"caption {c} of item {item}"), 2] = math.inf
    return ShardData(
        image=image,
        text=text,
        text_item=torch.tensor(text_item, dtype=torch.int64),
        ids=[f"item-{i}" for i in kept],
        captions=captions,
        labels=torch.tensor([i % 5 for i in kept], dtype=torch.int64),
        n_skipped=len([i for i in range(start, stop) if i in skip]),
        n_truncated=1 if start == 0 else 0,
    )


def make_spec(n=40, shard_size=16, **kw) -> StoreSpec:
    return StoreSpec(model="lakd:tiny-vit", source="synthetic", n_source_items=n, shard_size=shard_size, **kw)


def build_store(path, spec=None, **shard_kw) -> StoreWriter:
    spec = spec or make_spec()
    writer = StoreWriter(path, spec, extra={"classnames": ["a", "b", "c", "d", "e"]})
    for index in writer.pending():
        start, stop = writer.ranges[index]
        writer.write(index, make_shard(start, stop, **shard_kw))
    writer.finish()
    return writer


@pytest.fixture
def store_path(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "store"
    build_store(path, skip=(3, 17, 18))
    return path


def rewrite_meta(path, **changes):
    meta = json.loads((path / META_NAME).read_text())
    meta.update(changes)
    (path / META_NAME).write_text(json.dumps(meta))


# ---- pure helpers ----------------------------------------------------------------------------


def test_shard_ranges_cover_items_with_short_last_shard():
    assert shard_ranges(40, 16) == [(0, 16), (16, 32), (32, 40)]
    assert shard_ranges(32, 16) == [(0, 16), (16, 32)]
    assert shard_ranges(0, 16) == []


@pytest.mark.parametrize("n_shards,world", [(7, 1), (7, 3), (2, 4), (16, 8)])
def test_shards_for_rank_partition_the_shards(n_shards, world):
    assigned = [shards_for_rank(n_shards, rank, world) for rank in range(world)]
    flat = sorted(i for part in assigned for i in part)
    assert flat == list(range(n_shards))
    for rank, part in enumerate(assigned):
        assert all(i % world == rank for i in part)


def test_shards_for_rank_rejects_rank_outside_world():
    with pytest.raises(ValueError):
        shards_for_rank(4, 2, 2)


def test_spec_rejects_unknown_dtype_and_bad_shard_size():
    with pytest.raises(LakdError, match="dtype"):
        make_spec(dtype="int8")
    with pytest.raises(LakdError, match="shard_size"):
        make_spec(shard_size=0)


# ---- writing and reading ---------------------------------------------------------------------


def test_meta_fields_and_shard_files(store_path):
    meta = json.loads((store_path / META_NAME).read_text())
    assert meta["format"] == "lakd-embeddings" and meta["complete"] is True
    assert meta["model"] == "lakd:tiny-vit" and meta["source"] == "synthetic"
    assert (meta["n_items"], meta["image_dim"], meta["text_dim"]) == (37, D_IMAGE, D_TEXT)
    kept = [i for i in range(40) if i not in (3, 17, 18)]
    assert meta["n_texts"] == sum(captions_per_item(i) for i in kept)
    assert meta["n_skipped"] == 3 and meta["n_truncated"] == 1
    assert meta["dtype"] == "float32" and meta["shard_size"] == 16 and meta["has_labels"] is True
    assert meta["classnames"] == ["a", "b", "c", "d", "e"] and meta["lakd_version"]
    assert [s["file"] for s in meta["shards"]] == [shard_file_name(i) for i in range(3)]
    assert [(s["start"], s["stop"], s["n_items"]) for s in meta["shards"]] == [
        (0, 16, 15),
        (16, 32, 14),
        (32, 40, 8),
    ]
    assert sorted(p.name for p in store_path.iterdir()) == [META_NAME] + [
        shard_file_name(i) for i in range(3)
    ]


def test_reader_round_trip_and_alignment(store_path):
    store = EmbeddingStore(store_path)
    kept = [i for i in range(40) if i not in (3, 17, 18)]
    assert store.n_items == 37 and store.dim("image") == D_IMAGE and store.dim("text_paired") == D_TEXT
    assert store.ids() == [f"item-{i}" for i in kept]
    assert store.labels().tolist() == [i % 5 for i in kept]
    image, text, paired = store.load("image"), store.load("text"), store.load("text_paired")
    assert image.dtype == torch.float32 and image.shape == (37, D_IMAGE)
    assert image[:, 0].tolist() == kept
    assert paired.shape == (37, D_TEXT) and torch.equal(paired[:, 0], image[:, 0])
    text_item = store.text_item()
    assert text.shape[0] == store.n_texts == len(store.captions()) == text_item.shape[0]
    assert torch.equal(text[:, 0].floor(), image[text_item, 0])
    assert store.captions()[:3] == ["caption 0 of item 0", "caption 0 of item 1", "caption 1 of item 1"]


@pytest.mark.parametrize("modality", ["image", "text", "text_paired"])
@pytest.mark.parametrize("chunk_size", [1, 7, 16, 1000])
def test_chunks_equal_full_load(store_path, modality, chunk_size):
    store = EmbeddingStore(store_path)
    chunks = list(store.iter_chunks(modality, chunk_size=chunk_size))
    assert all(c.shape[0] == chunk_size for c in chunks[:-1]) and 0 < chunks[-1].shape[0] <= chunk_size
    assert torch.equal(torch.cat(chunks), store.load(modality))


def test_float16_store_reads_back_as_float32(tmp_path):
    path = tmp_path / "half"
    build_store(path, make_spec(dtype="float16"))
    store = EmbeddingStore(path)
    image = store.load("image")
    assert image.dtype == torch.float32 and image[:, 0].tolist() == list(range(40))
    assert json.loads((path / META_NAME).read_text())["dtype"] == "float16"


def test_store_without_labels_and_empty_shard(tmp_path):
    spec = make_spec(n=20, shard_size=8)
    writer = StoreWriter(tmp_path / "s", spec)
    for index, (start, stop) in enumerate(writer.ranges):
        shard = make_shard(start, stop, skip=range(8, 16) if index == 1 else ())
        shard.labels = None
        writer.write(index, shard)
    meta = writer.finish()
    assert meta["has_labels"] is False and [s["n_items"] for s in meta["shards"]] == [8, 0, 4]
    store = EmbeddingStore(tmp_path / "s")
    assert store.labels() is None and store.load("image").shape == (12, D_IMAGE)


def test_unknown_modality_is_an_error(store_path):
    with pytest.raises(LakdError, match="modality"):
        EmbeddingStore(store_path).load("audio")


# ---- resume, overwrite ------------------------------------------------------------------------


def test_resume_recomputes_only_missing_or_corrupt_shards(store_path):
    spec = make_spec()
    (store_path / shard_file_name(1)).unlink()
    truncated = store_path / shard_file_name(2)
    truncated.write_bytes(truncated.read_bytes()[:-10])
    untouched = os.stat(store_path / shard_file_name(0)).st_mtime_ns
    writer = StoreWriter(store_path, spec)
    assert writer.pending() == [1, 2]
    assert json.loads((store_path / META_NAME).read_text())["complete"] is False
    for index in writer.pending():
        writer.write(index, make_shard(*writer.ranges[index]))
    writer.finish()
    assert os.stat(store_path / shard_file_name(0)).st_mtime_ns == untouched
    assert EmbeddingStore(store_path).n_items == 15 + 16 + 8


def test_resume_pending_respects_rank(store_path):
    for index in (0, 1, 2):
        (store_path / shard_file_name(index)).unlink()
    assert StoreWriter(store_path, make_spec(), rank=1, world_size=2).pending() == [1]


def test_existing_store_from_another_model_is_refused_without_overwrite(store_path):
    other = StoreSpec(model="lakd:tiny-resnet", source="synthetic", n_source_items=40, shard_size=16)
    with pytest.raises(LakdError, match="model='lakd:tiny-vit'.*use `overwrite` to replace it or choose another `out`"):
        StoreWriter(store_path, other)
    with pytest.raises(LakdError, match="shard_size"):
        StoreWriter(store_path, make_spec(shard_size=8))
    writer = StoreWriter(store_path, other, overwrite=True)
    assert writer.pending() == [0, 1, 2]
    assert EmbeddingStore(store_path).meta["model"] == "lakd:tiny-vit"  # whole until the new one is
    for index, (start, stop) in enumerate(writer.ranges):
        writer.write(index, make_shard(start, stop))
    writer.finish()
    assert EmbeddingStore(store_path).meta["model"] == "lakd:tiny-resnet"
    assert sorted(p.name for p in store_path.iterdir()) == [META_NAME] + [shard_file_name(i) for i in range(3)]


def test_shards_without_meta_are_refused_without_overwrite(store_path):
    (store_path / META_NAME).unlink()
    with pytest.raises(LakdError, match="no meta.json"):
        StoreWriter(store_path, make_spec())


def test_all_items_skipped_is_an_error_and_leaves_nothing(tmp_path):
    spec = make_spec(n=10, shard_size=4)
    writer = StoreWriter(tmp_path / "s", spec)
    for index, (start, stop) in enumerate(writer.ranges):
        writer.write(index, make_shard(start, stop, skip=range(start, stop)))
    with pytest.raises(LakdError, match="synthetic: no readable image"):
        writer.finish()
    assert not (tmp_path / "s").exists()


# ---- bad stores -------------------------------------------------------------------------------


def test_missing_folder_and_file_are_not_stores(tmp_path):
    with pytest.raises(LakdError, match="not found"):
        EmbeddingStore(tmp_path / "nope")
    (tmp_path / "file").write_text("x")
    with pytest.raises(LakdError, match="not an embedding store"):
        EmbeddingStore(tmp_path / "file")
    with pytest.raises(LakdError, match="no meta.json"):
        EmbeddingStore(tmp_path)


def test_meta_missing(store_path):
    (store_path / META_NAME).unlink()
    with pytest.raises(LakdError, match=r"meta.json: missing.*embed the data again into a new folder"):
        EmbeddingStore(store_path)


def test_meta_not_json_or_foreign(store_path):
    (store_path / META_NAME).write_text("{not json")
    with pytest.raises(LakdError, match="meta.json: unreadable"):
        EmbeddingStore(store_path)
    (store_path / META_NAME).write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(LakdError, match="not a lakd embedding store"):
        EmbeddingStore(store_path)


def test_incomplete_store_says_to_resume(store_path):
    rewrite_meta(store_path, complete=False)
    with pytest.raises(LakdError, match="incomplete.*embed again \\(`lakd embed`\\) with the same model, data and output folder"):
        EmbeddingStore(store_path)


def test_missing_shard_says_to_resume(store_path):
    (store_path / shard_file_name(1)).unlink()
    with pytest.raises(LakdError, match=r"shard-00001.safetensors: missing shard.*embed again \(`lakd embed`\)"):
        EmbeddingStore(store_path)


@pytest.mark.parametrize("cut", [0, 7, 200, -4])
def test_truncated_shard(store_path, cut):
    shard = store_path / shard_file_name(2)
    data = shard.read_bytes()
    shard.write_bytes(data[:cut])
    with pytest.raises(LakdError, match="shard-00002.safetensors: corrupt or truncated"):
        EmbeddingStore(store_path)


def test_dim_mismatch_between_shards(store_path):
    write_shard(
        store_path / shard_file_name(1),
        make_shard(16, 32, skip=(17, 18), d_image=D_IMAGE + 1),
        index=1,
        start=16,
        stop=32,
        spec=make_spec(),
    )
    with pytest.raises(LakdError, match=r"shard-00001.safetensors: image dim 9 differs .*shard-00000"):
        EmbeddingStore(store_path)


def test_meta_with_malformed_shard_list(store_path):
    rewrite_meta(store_path, shards="shard-00000.safetensors")
    with pytest.raises(LakdError, match="meta.json: field 'shards'"):
        EmbeddingStore(store_path)
    rewrite_meta(store_path, shards=[{"file": "nope.safetensors", "n_items": 1, "n_texts": 1}])
    with pytest.raises(LakdError, match="nope.safetensors: missing shard"):
        EmbeddingStore(store_path)


def test_counts_disagreeing_with_meta(store_path):
    rewrite_meta(store_path, n_items=99)
    with pytest.raises(LakdError, match="meta.json: counts 99"):
        EmbeddingStore(store_path)


def test_shard_header_names_a_foreign_safetensors_file(tmp_path):
    from safetensors.torch import save_file

    save_file({"weight": torch.zeros(2, 2)}, str(tmp_path / "w.safetensors"))
    with pytest.raises(LakdError, match="not a lakd embedding shard"):
        read_shard_header(tmp_path / "w.safetensors")


# ---- non-finite rows --------------------------------------------------------------------------


def test_nonfinite_rows_are_an_error_naming_shard_and_count(tmp_path):
    build_store(tmp_path / "s", nan_images=(20, 21), nan_texts=[(5, 0)])
    store = EmbeddingStore(tmp_path / "s")
    with pytest.raises(
        LakdError, match=r"shard-00001.safetensors: 2 of 16 image rows contain NaN/Inf; rerun with `allow_nonfinite` to drop them"
    ):
        store.load("image")
    with pytest.raises(LakdError, match=r"shard-00000.safetensors: 1 of \d+ text rows"):
        list(store.iter_chunks("text"))


def test_allow_nonfinite_drops_rows_and_keeps_alignment(tmp_path, caplog):
    # item 20, 21: bad image; item 5: bad first caption (drops the item); item 7: bad second caption only
    build_store(tmp_path / "s", nan_images=(20, 21), nan_texts=[(5, 0), (7, 1)])
    with caplog.at_level("WARNING", logger="lakd.data.store"):
        store = EmbeddingStore(tmp_path / "s", allow_nonfinite=True)
    assert "dropped 3 item" in caplog.text
    dropped_items = {5, 20, 21}
    kept = [i for i in range(40) if i not in dropped_items]
    assert store.n_dropped_items == 3
    assert store.n_dropped_texts == sum(captions_per_item(i) for i in dropped_items) + 1
    image, text, paired = store.load("image"), store.load("text"), store.load("text_paired")
    assert torch.isfinite(image).all() and torch.isfinite(text).all() and torch.isfinite(paired).all()
    assert image[:, 0].tolist() == kept and store.ids() == [f"item-{i}" for i in kept]
    assert torch.equal(paired[:, 0], image[:, 0])
    assert store.labels().tolist() == [i % 5 for i in kept]
    assert torch.equal(text[:, 0].floor(), image[store.text_item(), 0])
    assert store.n_texts == text.shape[0] == len(store.captions())
    assert "caption 1 of item 7" not in store.captions() and "caption 0 of item 7" in store.captions()
    assert store.n_items == len(kept)


def test_paired_captions_follow_image_rows(store_path):
    store = EmbeddingStore(store_path)
    captions, text_item = store.captions(), store.text_item().tolist()
    paired = store.paired_captions()
    assert len(paired) == store.n_items
    for row, caption in enumerate(paired):
        assert caption == captions[text_item.index(row)]


@pytest.mark.parametrize("nonfinite", [False, True])
def test_shards_rebuild_the_store_row_for_row(tmp_path, nonfinite):
    torch.manual_seed(0)
    kw = {"nan_images": (20,), "nan_texts": [(7, 1)]} if nonfinite else {}
    build_store(tmp_path / "s", skip=(3,), **kw)
    store = EmbeddingStore(tmp_path / "s", allow_nonfinite=nonfinite)
    shards = list(store.shards())
    assert [s.range for s in shards] == [(0, 16), (16, 32), (32, 40)]
    assert torch.equal(torch.cat([s.image for s in shards]), store.load("image"))
    assert torch.equal(torch.cat([s.text for s in shards]), store.load("text"))
    assert sum((s.ids for s in shards), []) == store.ids()
    assert sum((s.captions for s in shards), []) == store.captions()
    assert torch.equal(torch.cat([s.labels for s in shards]), store.labels())
    offsets = torch.tensor([0, *torch.cumsum(torch.tensor([len(s.ids) for s in shards]), 0)[:-1].tolist()])
    global_rows = torch.cat([s.text_item + offset for s, offset in zip(shards, offsets, strict=True)])
    assert torch.equal(global_rows, store.text_item())
    # a writer given the shards back writes an equal store
    copy = StoreWriter(tmp_path / "copy", make_spec())
    for shard in shards:
        copy.write(copy.ranges.index(shard.range), shard)
    copy.finish()
    again = EmbeddingStore(tmp_path / "copy")
    assert again.ids() == store.ids() and torch.equal(again.load("text"), store.load("text"))


def test_row_metadata_is_cached_and_returned_as_copies(store_path, monkeypatch):
    store = EmbeddingStore(store_path)
    ids = store.ids()
    store.captions()
    ids.append("mine")
    import lakd.data.store.reader as reader

    monkeypatch.setattr(reader, "read_json_list", lambda *a: pytest.fail("read twice"))
    assert store.ids() == ids[:-1] and len(store.captions()) == store.n_texts
    labels = store.labels()
    labels[0] = 99
    assert int(store.labels()[0]) != 99


def test_write_store_from_arrays(tmp_path):
    from lakd.data.store import write_store

    image, text = torch.randn(3, 4), torch.randn(4, 4)
    store = write_store(
        tmp_path / "w",
        image,
        model="external",
        source="mine",
        text=text,
        text_item=torch.tensor([0, 0, 1, 2]),
        captions=["a", "b", "c", "d"],
        labels=torch.tensor([0, 1, 0]),
        classnames=["x", "y"],
    )
    assert store.ids() == ["0", "1", "2"] and store.paired_captions() == ["a", "c", "d"]
    assert torch.equal(store.load("image"), image) and torch.equal(store.load("text"), text)
