"""Whitening statistics of an embedding store (``lakd whiten fit``) and a whitened copy of a store
(``lakd whiten apply``).

``fit`` streams each modality of a store once (float64 moments, ``eigh``; see
:mod:`lakd.analysis.whitening`) and saves one :class:`~lakd.analysis.whitening.WhiteningStats`
per modality. ``out="emb/whiten.safetensors"`` names the set: the files are
``emb/whiten.image.safetensors`` and ``emb/whiten.text.safetensors`` (each with its JSON
sidecar; :func:`lakd.analysis.whitening.stats_path`), found again from the same name by
``apply`` and by the whitened-FD loss (its ``stats`` option, e.g. ``{"whitened_fd": {"stats": "emb/whiten.safetensors"}}`` in a recipe).
Text statistics are fitted on every caption of the store.

``apply`` writes a new store with the same items, captions, labels and shard layout whose
embeddings are whitened, y = (x - mu) W, and records the statistics it used in ``meta.json``;
class prompts stored beside the source store are whitened with the text statistics.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from lakd.analysis.whitening import (
    MODALITIES,
    fit_whitening,
    load_stats_set,
    save_stats_set,
    stats_path,
    whiten,
)
from lakd.data.store.format import (
    ClassPrompts,
    StoreSpec,
    check_replaceable,
    read_class_prompts,
    write_class_prompts,
)
from lakd.data.store.reader import EmbeddingStore
from lakd.data.store.writer import StoreWriter
from lakd.errors import LakdError
from lakd.io import atomic_dir


def _check_modalities(modalities: tuple[str, ...]) -> None:
    unknown = [m for m in modalities if m not in MODALITIES]
    if unknown or not modalities:
        raise LakdError(
            f"modalities: expected some of {', '.join(MODALITIES)}, got {', '.join(modalities) or 'none'}"
        )


@dataclass
class WhitenFitConfig:
    """Fit whitening statistics on the store ``embeddings``; ``out`` names the set (module doc)."""

    embeddings: str
    out: str
    modalities: tuple[str, ...] = MODALITIES
    method: str = "zca"
    eps: float = 1e-6
    shrinkage: str | None = None
    rank: int | None = None
    chunk_size: int = 65536
    allow_nonfinite: bool = False


def fit_store_whitening(cfg: WhitenFitConfig) -> dict[str, Path]:
    """Fit and save the statistics of each modality; returns ``{modality: file}``."""
    _check_modalities(cfg.modalities)
    stats_path(cfg.out, cfg.modalities[0])  # checks the name before reading
    store = EmbeddingStore(cfg.embeddings, allow_nonfinite=cfg.allow_nonfinite)
    fitted = {
        m: fit_whitening(
            lambda m=m: store.iter_chunks(m, cfg.chunk_size),
            method=cfg.method,
            eps=cfg.eps,
            shrinkage=cfg.shrinkage,
            rank=cfg.rank,
            source=f"{cfg.embeddings} ({m}; model {store.meta.get('model')})",
        )
        for m in cfg.modalities
    }
    return save_stats_set(cfg.out, fitted)


@dataclass
class WhitenApplyConfig:
    """Whiten the store ``embeddings`` with the statistics named ``stats`` into a new store ``out``
    (``model`` in its meta reads "<model> whitened by <stats>"); ``allow_nonfinite`` drops NaN/Inf
    rows of the source (with a count) instead of failing."""

    embeddings: str
    stats: str
    out: str
    overwrite: bool = False
    allow_nonfinite: bool = False


def apply_store_whitening(cfg: WhitenApplyConfig) -> EmbeddingStore:
    """Write the whitened copy of a store (see the module docstring) and return it opened."""
    source = EmbeddingStore(cfg.embeddings, allow_nonfinite=cfg.allow_nonfinite)
    stats = load_stats_set(cfg.stats)
    for m, s in stats.items():
        if s.dim != source.dim(m):
            raise LakdError(
                f"{stats_path(cfg.stats, m)}: fitted on dimension {s.dim}, but {cfg.embeddings} has {m} "
                f"dimension {source.dim(m)}"
            )
    if Path(cfg.out).resolve() == source.path.resolve():
        raise LakdError(f"{cfg.out}: must differ from the source store {cfg.embeddings}")
    check_replaceable(Path(cfg.out), cfg.overwrite)
    meta = source.meta
    spec = StoreSpec(  # a distinct identity, so `lakd embed` never resumes into a whitened store
        model=f"{meta['model']} whitened by {cfg.stats}",
        source=meta["source"],
        n_source_items=meta["n_source_items"],
        shard_size=meta["shard_size"],
        dtype="float32",
        arch=meta.get("arch"),
        source_options=meta.get("source_options") or {},
    )
    whitened = {m: {**s.metadata(), "file": str(stats_path(cfg.stats, m))} for m, s in stats.items()}
    extra = {
        "classnames": meta.get("classnames"),
        "options": meta.get("options"),
        "whitened_from": str(cfg.embeddings),
        "whitening": whitened,
    }
    with atomic_dir(cfg.out, overwrite=cfg.overwrite) as folder:  # all of it, or nothing
        writer = StoreWriter(folder, spec, extra=extra)
        for shard in source.shards():
            writer.write(
                writer.ranges.index(shard.range),
                replace(
                    shard,
                    image=whiten(shard.image.double(), stats["image"]).float(),
                    text=whiten(shard.text.double(), stats["text"]).float(),
                ),
            )
        writer.finish()
        prompts = read_class_prompts(source.path)
        if prompts is not None:
            flat = prompts.embeddings.reshape(-1, prompts.embeddings.shape[-1]).double()
            y = whiten(flat, stats["text"]).float().reshape(*prompts.embeddings.shape[:2], -1)
            write_class_prompts(folder, ClassPrompts(y, prompts.classnames, prompts.templates, prompts.model))
    return EmbeddingStore(cfg.out)
