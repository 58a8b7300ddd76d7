"""What an evaluation reads: one model's embeddings of one data set, from an embedding store.

:class:`EvalInputs` gathers the store's raw image and caption embeddings, labels, class names,
class-prompt embeddings (``classes.safetensors``) and, for probe sets, each item's probe
condition. :func:`lakd.data.store.write_store` builds such a store from arrays computed elsewhere
(a model lakd cannot load), so ``lakd eval --embeddings DIR`` can evaluate it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch

from lakd.data import SourceOptions, open_source
from lakd.data.store import (
    ClassPrompts,
    EmbeddingStore,
)
from lakd.errors import LakdError
from lakd.eval.probes import probe_conditions
from lakd.eval.truth import Truth, source_truth


@dataclass
class EvalInputs:
    """Embeddings of one model on one data set.

    ``image`` [N, d] and ``text`` [M, d] raw embeddings; ``text_item`` [M] each caption's image row;
    ``ids`` (N) and ``captions`` (M); ``labels`` [N] int64 (-1 = none) or None; ``classnames`` or
    None; ``class_prompts`` (per-class prompt embeddings) or None; ``conditions`` (N) probe
    conditions when the data is a probe set, else None; ``truth`` what is true of each image where
    the data knows it (:mod:`lakd.eval.truth`; None: each caption is true of its own image, each
    image of its label). ``model`` and ``source`` are the specs the store was made from; ``path``
    the store folder.
    """

    model: str
    source: str
    path: Path
    image: torch.Tensor
    text: torch.Tensor
    text_item: torch.Tensor
    ids: list[str]
    captions: list[str]
    labels: torch.Tensor | None
    classnames: list[str] | None
    class_prompts: ClassPrompts | None
    conditions: list[str] | None
    truth: Truth | None = None

    @property
    def n_items(self) -> int:
        return self.image.shape[0]

    def to(self, device: str | torch.device) -> EvalInputs:
        """Move the tensors the metrics read (embeddings, caption rows, labels) to ``device``; returns self."""
        self.image, self.text, self.text_item = (
            t.to(device) for t in (self.image, self.text, self.text_item)
        )
        self.labels = None if self.labels is None else self.labels.to(device)
        if self.truth is not None:
            self.truth = Truth(self.truth.captions.to(device), self.truth.classes.to(device), self.truth.protocol)
        return self


def store_source(store: EmbeddingStore):
    """The data source named in the store's meta, opened without downloading; None when it cannot be
    opened here (a folder elsewhere, a torchvision set not on disk)."""
    meta = store.meta
    try:
        options = SourceOptions.from_meta(meta.get("source_options") or {}, str(store.path / "meta.json"))
        return open_source(str(meta.get("source")), dataclasses.replace(options, download=False))
    except (LakdError, TypeError):
        return None


def store_conditions(store: EmbeddingStore, ids: list[str], source=None) -> list[str] | None:
    """Probe conditions of the store's items, from its data source (None when that source is not a
    probe set or cannot be opened here)."""
    source = source if source is not None else store_source(store)
    by_id = probe_conditions(source) if source is not None else None
    if by_id is None:
        return None
    missing = [i for i in ids if i not in by_id]
    if missing:
        raise LakdError(
            f"{store.path}: item {missing[0]!r} is not in the probe set {store.meta.get('source')!r} "
            f"({len(missing)} of {len(ids)} items missing)"
        )
    return [by_id[i] for i in ids]


def load_inputs(store: EmbeddingStore, *, conditions: bool = True) -> EvalInputs:
    """Read everything an evaluation needs from ``store`` (``conditions``: look up probe conditions)."""
    ids = store.ids()
    classnames = store.meta.get("classnames")
    if classnames is not None and (
        not isinstance(classnames, list) or not all(isinstance(c, str) for c in classnames)
    ):
        raise LakdError(f"{store.path / 'meta.json'}: field 'classnames' must be a list of names")
    source = store_source(store)
    captions = store.captions()
    return EvalInputs(
        model=str(store.meta.get("model")),
        source=str(store.meta.get("source")),
        path=store.path,
        image=store.load("image"),
        text=store.load("text"),
        text_item=store.text_item(),
        ids=ids,
        captions=captions,
        labels=store.labels(),
        classnames=classnames or None,
        class_prompts=store.class_prompts(),
        conditions=store_conditions(store, ids, source) if conditions else None,
        truth=source_truth(source, ids, captions) if source is not None else None,
    )
