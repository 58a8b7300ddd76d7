"""The encode loop shared by ``lakd embed``, evaluation and training: data items and captions ->
raw (pre-L2-normalisation) pooled features of a CLIP model.

:class:`Collate` turns dataset items into a :class:`Batch` in DataLoader workers (unreadable images
dropped and counted, captions tokenised, truncation counted); :func:`encode_batch` runs both towers on
it; :func:`encode_texts` embeds a list of strings (class prompts); :func:`probe_dims` reads the
towers' output widths.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from PIL import Image
from torch.utils.data import Dataset

from lakd.data import Item, Skipped, drop_skipped


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
def encode_texts(model, tokenizer, texts: list[str], batch_size: int = 256, device="cpu") -> torch.Tensor:
    """Raw text embeddings [len(texts), d] float32 on CPU (e.g. class prompts).

    Uses ``torch.no_grad`` rather than inference mode, so the result can enter autograd later
    (a frozen zero-shot head during training).
    """
    if not texts:
        return encode_texts(model, tokenizer, [""], batch_size, device)[:0]
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


def probe_dims(model, preprocess, tokenizer, device) -> dict[str, int]:
    """Output widths of both towers, from one blank image and one empty caption."""
    with torch.inference_mode():
        image = preprocess(Image.new("RGB", (64, 64))).unsqueeze(0).to(device)
        return {
            "image": model.encode_image(image, normalize=False).shape[-1],
            "text": model.encode_text(tokenizer([""]).to(device), normalize=False).shape[-1],
        }


def encode_batch(model, batch: Batch, device) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Raw image and caption features of a :class:`Batch`, float32 on CPU (None for an empty part).
    Call it under ``torch.inference_mode()`` or ``torch.no_grad()``."""
    image_emb = text_emb = None
    if batch.images is not None:
        image_emb = model.encode_image(batch.images.to(device, non_blocking=True), normalize=False)
        image_emb = image_emb.float().cpu()
    if batch.tokens is not None:
        text_emb = model.encode_text(batch.tokens.to(device, non_blocking=True), normalize=False)
        text_emb = text_emb.float().cpu()
    return image_emb, text_emb


@dataclass
class Encoded:
    """A data source encoded in memory: raw ``image`` [N, d] of the readable items, ``text`` [M, d]
    of all their captions, ``text_item`` [M] each caption's image row, ``ids`` (N), ``captions`` (M),
    ``labels`` [N] (-1 = none) or None, and the ``skipped`` items."""

    image: torch.Tensor
    text: torch.Tensor
    text_item: torch.Tensor
    ids: list[str]
    captions: list[str]
    labels: torch.Tensor | None
    skipped: list[Skipped]


def collate_source(source, preprocess, tokenizer, batch_size: int) -> list[Batch]:
    """Every item of ``source`` read, preprocessed and tokenised once, as :class:`Batch` es (for a
    fixed evaluation set encoded again and again)."""
    collate = Collate(preprocess, tokenizer)
    indexed = IndexedSource(source)
    return [
        collate([indexed[i] for i in range(start, min(start + batch_size, len(source)))])
        for start in range(0, len(source), batch_size)
    ]


@torch.no_grad()
def encode_batches(model, batches: list[Batch], device) -> Encoded:
    """Encode collated batches (:func:`collate_source`) with ``model`` into one :class:`Encoded`."""
    images, texts, text_item, ids, captions, labels, skipped = [], [], [], [], [], [], []
    for batch in batches:
        image_emb, text_emb = encode_batch(model, batch, device)
        if image_emb is not None:
            images.append(image_emb)
        if text_emb is not None:
            texts.append(text_emb)
        text_item += [len(ids) + row for row in batch.text_item]
        ids += batch.ids
        captions += batch.captions
        labels += batch.labels
        skipped += batch.skipped
    has_labels = any(label is not None for label in labels)
    return Encoded(
        image=torch.cat(images) if images else torch.empty(0, 0),
        text=torch.cat(texts) if texts else torch.empty(0, 0),
        text_item=torch.tensor(text_item, dtype=torch.int64),
        ids=ids,
        captions=captions,
        labels=torch.tensor([-1 if x is None else x for x in labels]) if has_labels else None,
        skipped=skipped,
    )
