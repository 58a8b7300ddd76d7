"""Embed a data source with a CLIP model into an embedding store (``lakd embed``).

Images and captions go through the model's two towers in batches (:mod:`lakd.models.encode`; raw
pooled embeddings, ``normalize=False``); the result is the shard format of :mod:`lakd.data.store`. Decoding,
preprocessing and tokenisation happen in DataLoader workers; unreadable images are dropped and
counted; captions longer than the tokenizer's context are truncated (by the tokenizer) and
counted. Reruns resume: finished shards are kept. Under torchrun each rank embeds the shards
``index % world == rank`` and rank 0 writes ``meta.json`` at the end. :func:`cached_embed` keeps
one store per model and data in a cache folder (:mod:`lakd.data.cache`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from lakd import distributed
from lakd.data import Skipped, SourceOptions, describe_skipped, open_source
from lakd.data.cache import cache_folder_name, cached_store
from lakd.data.store import EmbeddingStore, ShardData, StoreSpec, StoreWriter
from lakd.data.store.writer import check_out
from lakd.errors import LakdError
from lakd.models.encode import Batch, Collate, IndexedSource, encode_batch, probe_dims
from lakd.models.factory import load_model
from lakd.models.specs import ModelSpec

log = logging.getLogger(__name__)


@dataclass
class EmbedConfig:
    """Arguments of :func:`embed` (the CLI's ``lakd embed`` options)."""

    model: str
    data: str
    out: str
    batch_size: int = 64
    device: str = "cpu"
    shard_size: int = 10000
    dtype: str = "float32"
    num_workers: int = 0
    allow_nonfinite: bool = False
    overwrite: bool = False
    arch: str | None = None
    source_options: SourceOptions = field(default_factory=SourceOptions)


class ShardBuffer:
    """Collects the embedded batches of one shard until it is written."""

    def __init__(self):
        self.images: list[torch.Tensor] = []
        self.texts: list[torch.Tensor] = []
        self.text_item: list[int] = []
        self.ids: list[str] = []
        self.captions: list[str] = []
        self.labels: list[int | None] = []
        self.n_skipped = 0
        self.n_truncated = 0

    def add(self, batch: Batch, image_emb: torch.Tensor | None, text_emb: torch.Tensor | None) -> None:
        offset = len(self.ids)
        if image_emb is not None:
            self.images.append(image_emb)
        if text_emb is not None:
            self.texts.append(text_emb)
        self.text_item += [offset + row for row in batch.text_item]
        self.ids += batch.ids
        self.captions += batch.captions
        self.labels += batch.labels
        self.n_skipped += len(batch.skipped)
        self.n_truncated += batch.n_truncated

    def to_shard(self, widths: Callable[[], dict[str, int]]) -> ShardData:
        """The shard; ``widths()`` gives the widths of empty tensors (a shard of unreadable images)."""
        has_labels = any(label is not None for label in self.labels)
        return ShardData(
            image=torch.cat(self.images) if self.images else torch.empty(0, widths()["image"]),
            text=torch.cat(self.texts) if self.texts else torch.empty(0, widths()["text"]),
            text_item=torch.tensor(self.text_item, dtype=torch.int64),
            ids=self.ids,
            captions=self.captions,
            labels=torch.tensor([-1 if x is None else x for x in self.labels]) if has_labels else None,
            n_skipped=self.n_skipped,
            n_truncated=self.n_truncated,
        )


class ShardBatches:
    """The batches of source indices of some shards, made as they are asked for (a DataLoader
    ``batch_sampler``): the items ``[start, stop)`` of each shard in ``shards``, in runs of
    ``batch_size`` that never cross a shard's end. Nothing is built up front, so a source of any size
    costs no memory before its first batch."""

    def __init__(self, ranges: Sequence[tuple[int, int]], shards: Sequence[int], batch_size: int):
        if batch_size < 1:
            raise LakdError(f"batch_size: must be positive, got {batch_size}")
        self.ranges, self.shards, self.batch_size = ranges, list(shards), batch_size

    def __iter__(self) -> Iterator[list[int]]:
        for index in self.shards:
            start, stop = self.ranges[index]
            for first in range(start, stop, self.batch_size):
                yield list(range(first, min(first + self.batch_size, stop)))

    def __len__(self) -> int:
        return sum(-(-(stop - start) // self.batch_size) for start, stop in (self.ranges[i] for i in self.shards))

    @property
    def n_items(self) -> int:
        """How many source items the batches cover."""
        return sum(stop - start for start, stop in (self.ranges[i] for i in self.shards))


def logit_scale_of(model) -> float | None:
    """The model's multiplicative logit scale (``logit_scale.exp()``), recorded in a store's meta so a
    cached teacher's logit-based distillation terms can use it; None when the model has none."""
    scale = getattr(model, "logit_scale", None)
    return float(scale.detach().float().exp()) if isinstance(scale, torch.Tensor) and scale.numel() == 1 else None


def embed(cfg: EmbedConfig) -> EmbeddingStore:
    """Embed ``cfg.data`` with ``cfg.model`` into the store ``cfg.out`` and return it opened."""
    if cfg.batch_size < 1:
        raise LakdError(f"batch_size: must be positive, got {cfg.batch_size}")
    with distributed.distributed(cfg.device) as context:
        device = context.device
        source = open_source(cfg.data, cfg.source_options)  # bad data fails before the model loads
        if len(source) == 0:
            raise LakdError(f"{cfg.data}: the data source has no items")
        spec = StoreSpec(
            model=cfg.model,
            source=cfg.data,
            n_source_items=len(source),
            shard_size=cfg.shard_size,
            dtype=cfg.dtype,
            arch=cfg.arch,
            source_options=asdict(cfg.source_options),
        )
        check_out(cfg.out, spec, cfg.overwrite)  # before the model loads; the writer checks again
        model, preprocess, tokenizer = load_model(cfg.model, device=device, arch=cfg.arch)
        options = {k: getattr(cfg, k) for k in ("batch_size", "device", "num_workers", "allow_nonfinite")}
        classnames = list(getattr(source, "classnames", None) or []) or None
        writer = StoreWriter(
            cfg.out,
            spec,
            overwrite=cfg.overwrite,
            rank=context.rank,
            world_size=context.world_size,
            extra={"classnames": classnames, "options": options, "logit_scale": logit_scale_of(model)},
        )
        try:
            _embed_shards(cfg, writer, source, model, preprocess, tokenizer, device, show_progress=context.is_main)
            writer.finish()
        except BaseException:
            writer.abandon()  # a store being replaced stays as it was
            raise
        return EmbeddingStore(cfg.out, allow_nonfinite=cfg.allow_nonfinite)


def _embed_shards(
    cfg, writer: StoreWriter, source, model, preprocess, tokenizer, device, *, show_progress
) -> None:
    """Embed this rank's pending shards, writing each as soon as its last batch is done."""
    batches = ShardBatches(writer.ranges, writer.pending(), cfg.batch_size)
    loader = DataLoader(
        IndexedSource(source),
        batch_sampler=batches,
        collate_fn=Collate(preprocess, tokenizer),
        num_workers=cfg.num_workers,
        pin_memory=torch.device(device).type == "cuda",
        generator=torch.Generator(),  # leave the caller's global RNG untouched
    )
    total = batches.n_items
    progress = tqdm(total=total, desc=f"embedding {cfg.model}", unit=" items", disable=not show_progress)
    dims: dict[str, int] = {}

    def widths() -> dict[str, int]:
        if not dims:
            dims.update(probe_dims(model, preprocess, tokenizer, device))
        return dims

    skipped: list[Skipped] = []
    n_truncated = 0
    current, buffer = None, ShardBuffer()
    with torch.inference_mode(), progress:
        for batch in loader:
            index = batch.indices[0] // writer.spec.shard_size
            if current is not None and index != current:
                writer.write(current, buffer.to_shard(widths))
                buffer = ShardBuffer()
            current = index
            image_emb, text_emb = encode_batch(model, batch, device)
            buffer.add(batch, image_emb, text_emb)
            skipped += batch.skipped
            n_truncated += batch.n_truncated
            progress.update(len(batch.indices))
        if current is not None:
            writer.write(current, buffer.to_shard(widths))
    if skipped:
        log.warning("%s: %s", cfg.data, describe_skipped(skipped))
    if n_truncated:
        log.warning(
            "%s: %d caption(s) longer than the context length (%d tokens) were truncated",
            cfg.data,
            n_truncated,
            tokenizer.context_length,
        )


def embedding_cache_key(
    model: str, data: str, arch: str | None = None, source_options: SourceOptions | None = None
) -> dict[str, Any]:
    """What names a cached store of ``model`` on ``data`` (its folder, :func:`cache_folder_name`)."""
    return {"model": model, "arch": arch, "data": data, "source_options": asdict(source_options or SourceOptions())}


def cached_embed(
    model: str,
    data: str,
    cache_root: str | os.PathLike,
    *,
    arch: str | None = None,
    source_options: SourceOptions | None = None,
    batch_size: int = 64,
    device: str = "cpu",
    allow_nonfinite: bool = False,
) -> EmbeddingStore:
    """The store of ``model`` on ``data`` under ``cache_root``: reused when complete and made from the
    same model files (size and modification time), resumed when interrupted, rebuilt otherwise;
    opened with ``allow_nonfinite`` (NaN/Inf rows dropped with a count instead of refused)."""
    key = embedding_cache_key(model, data, arch, source_options)
    identity = {**key, "model_files": ModelSpec.parse(model).fingerprint()}

    def build(overwrite: bool) -> EmbeddingStore:
        return embed(
            EmbedConfig(
                model=model,
                data=data,
                out=str(folder),
                batch_size=batch_size,
                device=device,
                arch=arch,
                allow_nonfinite=allow_nonfinite,
                overwrite=overwrite,
                source_options=source_options or SourceOptions(),
            )
        )

    folder = Path(cache_root) / cache_folder_name(key)
    return cached_store(folder, identity, build, allow_nonfinite=allow_nonfinite)
