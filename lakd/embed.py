"""``lakd embed``: run a CLIP model over a data source and write an embedding store.

Images and captions go through the model's two towers in batches (raw pooled embeddings,
``normalize=False``); the result is the shard format of :mod:`lakd.data.store`. Decoding,
preprocessing and tokenisation happen in DataLoader workers; unreadable images are dropped and
counted; captions longer than the tokenizer's context are truncated (by the tokenizer) and
counted. Reruns resume: finished shards are kept. Under torchrun each rank embeds the shards
``index % world == rank`` and rank 0 writes ``meta.json`` at the end.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from lakd import distributed
from lakd.data import Item, Skipped, SourceOptions, describe_skipped, drop_skipped, open_source
from lakd.data.store import EmbeddingStore, ShardData, StoreSpec, StoreWriter
from lakd.errors import LakdError
from lakd.models import load_model

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


def count_truncated(tokenizer, texts: list[str]) -> int:
    """How many ``texts`` are longer than ``tokenizer.context_length`` tokens (so get truncated).

    Tokenises with one extra position and counts rows that reach it (not padding).
    """
    if not texts:
        return 0
    longer = tokenizer(texts, context_length=tokenizer.context_length + 1)
    pad_id = getattr(getattr(tokenizer, "tokenizer", None), "pad_token_id", None) or 0
    return int((longer[:, -1] != pad_id).sum())


@torch.no_grad()
def embed_texts(model, tokenizer, texts: list[str], batch_size: int = 256, device="cpu") -> torch.Tensor:
    """Raw text embeddings [len(texts), d] float32 on CPU (e.g. class prompts).

    Uses ``torch.no_grad`` rather than inference mode, so the result can enter autograd later
    (a frozen zero-shot head during training).
    """
    if not texts:
        return embed_texts(model, tokenizer, [""], batch_size, device)[:0]
    parts = []
    for start in range(0, len(texts), batch_size):
        tokens = tokenizer(texts[start : start + batch_size]).to(device)
        parts.append(model.encode_text(tokens, normalize=False).float().cpu())
    return torch.cat(parts)


@dataclass
class Batch:
    """A collated batch: ``images`` [b, 3, H, W] of the usable items and ``tokens`` [m, L] of
    all their captions; ``text_item`` [m] gives each caption's row among the ``b`` items."""

    indices: list[int]
    images: torch.Tensor | None
    tokens: torch.Tensor | None
    text_item: list[int]
    ids: list[str]
    captions: list[str]
    labels: list[int | None]
    skipped: list[Skipped]
    n_truncated: int


class IndexedSource(Dataset):
    """``source[i]`` as ``(i, item)`` so a batch knows which shard it belongs to."""

    def __init__(self, source):
        self.source = source

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> tuple[int, Item | Skipped]:
        return index, self.source[index]


class Collate:
    """Turns ``[(index, Item | Skipped), ...]`` into a :class:`Batch` (runs in DataLoader workers)."""

    def __init__(self, preprocess, tokenizer):
        self.preprocess = preprocess
        self.tokenizer = tokenizer

    def __call__(self, batch: list[tuple[int, Item | Skipped]]) -> Batch:
        items, skipped = drop_skipped([entry for _, entry in batch])
        captions = [caption for item in items for caption in item.captions]
        text_item = [row for row, item in enumerate(items) for _ in item.captions]
        return Batch(
            indices=[index for index, _ in batch],
            images=torch.stack([self.preprocess(item.image) for item in items]) if items else None,
            tokens=self.tokenizer(captions) if captions else None,
            text_item=text_item,
            ids=[item.id for item in items],
            captions=captions,
            labels=[item.label for item in items],
            skipped=skipped,
            n_truncated=count_truncated(self.tokenizer, captions),
        )


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


def probe_dims(model, preprocess, tokenizer, device) -> dict[str, int]:
    """Output widths of both towers, from one blank image and one empty caption."""
    with torch.inference_mode():
        image = preprocess(Image.new("RGB", (64, 64))).unsqueeze(0).to(device)
        return {
            "image": model.encode_image(image, normalize=False).shape[-1],
            "text": model.encode_text(tokenizer([""]).to(device), normalize=False).shape[-1],
        }


def embed(cfg: EmbedConfig) -> EmbeddingStore:
    """Embed ``cfg.data`` with ``cfg.model`` into the store ``cfg.out`` and return it opened."""
    if cfg.batch_size < 1:
        raise LakdError(f"batch_size: must be positive, got {cfg.batch_size}")
    with distributed.distributed(cfg.device) as context:
        device = context.device
        model, preprocess, tokenizer = load_model(cfg.model, device=device, arch=cfg.arch)
        source = open_source(cfg.data, cfg.source_options)
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
        options = {k: getattr(cfg, k) for k in ("batch_size", "device", "num_workers", "allow_nonfinite")}
        classnames = list(getattr(source, "classnames", None) or []) or None
        writer = StoreWriter(
            cfg.out,
            spec,
            overwrite=cfg.overwrite,
            rank=context.rank,
            world_size=context.world_size,
            extra={"classnames": classnames, "options": options},
        )
        _embed_shards(cfg, writer, source, model, preprocess, tokenizer, device, show_progress=context.is_main)
        writer.finish()
        return EmbeddingStore(cfg.out, allow_nonfinite=cfg.allow_nonfinite)


def _embed_shards(
    cfg, writer: StoreWriter, source, model, preprocess, tokenizer, device, *, show_progress
) -> None:
    """Embed this rank's pending shards, writing each as soon as its last batch is done."""
    pending = writer.pending()
    batches = [
        list(range(first, min(first + cfg.batch_size, writer.ranges[index][1])))
        for index in pending
        for first in range(writer.ranges[index][0], writer.ranges[index][1], cfg.batch_size)
    ]
    loader = DataLoader(
        IndexedSource(source),
        batch_sampler=batches,
        collate_fn=Collate(preprocess, tokenizer),
        num_workers=cfg.num_workers,
        pin_memory=torch.device(device).type == "cuda",
        generator=torch.Generator(),  # leave the caller's global RNG untouched
    )
    total = sum(len(b) for b in batches)
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
            image_emb = text_emb = None
            if batch.images is not None:
                image_emb = model.encode_image(batch.images.to(device, non_blocking=True), normalize=False)
                image_emb = image_emb.float().cpu()
            if batch.tokens is not None:
                text_emb = model.encode_text(batch.tokens.to(device, non_blocking=True), normalize=False)
                text_emb = text_emb.float().cpu()
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
