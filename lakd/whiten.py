"""``lakd whiten fit`` / ``lakd whiten apply``: whitening statistics of an embedding store.

``fit`` streams each modality of a store once (float64 moments, ``eigh``; see
:mod:`lakd.analysis.whitening`) and saves one :class:`~lakd.analysis.whitening.WhiteningStats`
per modality. ``--out emb/whiten.safetensors`` names the set: the files are
``emb/whiten.image.safetensors`` and ``emb/whiten.text.safetensors`` (each with its JSON
sidecar), found again from the same name by ``apply`` and by the whitened-FD loss (its
``stats`` option, e.g. ``{"whitened_fd": {"stats": "emb/whiten.safetensors"}}`` in a recipe).
Text statistics are fitted on every caption of the store.

``apply`` writes a new store with the same items, captions, labels and shard layout whose
embeddings are whitened, y = (x - mu) W, and records the statistics it used in ``meta.json``;
class prompts stored beside the source store are whitened with the text statistics.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file

from lakd.analysis.whitening import WhiteningStats, fit_whitening, whiten
from lakd.data.store import (
    ClassPrompts,
    EmbeddingStore,
    ShardData,
    StoreSpec,
    StoreWriter,
    read_class_prompts,
    read_shard_header,
    write_class_prompts,
)
from lakd.errors import LakdError

MODALITIES = ("image", "text")


def stats_path(out: str | Path, modality: str) -> Path:
    """``whiten.safetensors`` -> ``whiten.<modality>.safetensors`` (the file of one modality)."""
    out = Path(out)
    if out.suffix != ".safetensors":
        raise LakdError(f"{out}: whitening statistics are named NAME.safetensors")
    return out.with_name(f"{out.stem}.{modality}.safetensors")


def _check_modalities(modalities: tuple[str, ...]) -> None:
    unknown = [m for m in modalities if m not in MODALITIES]
    if unknown or not modalities:
        raise LakdError(
            f"modality: expected some of {', '.join(MODALITIES)}, got {', '.join(modalities) or 'none'}"
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
    paths = {m: stats_path(cfg.out, m) for m in cfg.modalities}  # checks the name before reading
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
    return {m: stats.save(paths[m]) for m, stats in fitted.items()}


def load_stats_set(out: str | Path, modalities: tuple[str, ...] = MODALITIES) -> dict[str, WhiteningStats]:
    """The statistics saved by :func:`fit_store_whitening` under the name ``out``."""
    return {m: WhiteningStats.load(stats_path(out, m)) for m in modalities}


@dataclass
class WhitenApplyConfig:
    """Whiten the store ``embeddings`` with the statistics named ``stats`` into a new store ``out``
    (``model`` in its meta reads "<model> whitened by <stats>")."""

    embeddings: str
    stats: str
    out: str
    overwrite: bool = False


def apply_store_whitening(cfg: WhitenApplyConfig) -> EmbeddingStore:
    """Write the whitened copy of a store (see the module docstring) and return it opened."""
    source = EmbeddingStore(cfg.embeddings)
    stats = load_stats_set(cfg.stats)
    for m, s in stats.items():
        if s.dim != source.dim(m):
            raise LakdError(
                f"{stats_path(cfg.stats, m)}: fitted on dimension {s.dim}, but {cfg.embeddings} has {m} "
                f"dimension {source.dim(m)}"
            )
    if Path(cfg.out).exists() and not cfg.overwrite:
        raise LakdError(f"{cfg.out}: already exists (use --overwrite to replace it)")
    if Path(cfg.out).resolve() == source.path.resolve():
        raise LakdError(f"{cfg.out}: must differ from the source store {cfg.embeddings}")
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
    writer = StoreWriter(cfg.out, spec, overwrite=cfg.overwrite, extra=extra)
    for entry in meta["shards"]:
        index = writer.ranges.index((entry["start"], entry["stop"]))
        shard_file = source.path / entry["file"]
        header = read_shard_header(shard_file)
        tensors = load_file(str(shard_file))
        for key in ("image", "text"):
            bad = int((~torch.isfinite(tensors[key])).any(dim=1).sum())
            if bad:
                raise LakdError(
                    f"{shard_file}: {bad} {key} row(s) contain NaN/Inf; re-embed them before whitening the store"
                )
        writer.write(
            index,
            ShardData(
                image=whiten(tensors["image"].double(), stats["image"]).float(),
                text=whiten(tensors["text"].double(), stats["text"]).float(),
                text_item=tensors["text_item"],
                ids=json.loads(header.metadata["ids"]),
                captions=json.loads(header.metadata["captions"]),
                labels=tensors.get("label"),
                n_skipped=header.count("n_skipped"),
                n_truncated=header.count("n_truncated"),
            ),
        )
    writer.finish()
    prompts = read_class_prompts(source.path)
    if prompts is not None:
        flat = prompts.embeddings.reshape(-1, prompts.embeddings.shape[-1]).double()
        y = whiten(flat, stats["text"]).float().reshape(*prompts.embeddings.shape[:2], -1)
        write_class_prompts(
            writer.path, ClassPrompts(y, prompts.classnames, prompts.templates, prompts.model)
        )
    return EmbeddingStore(writer.path)
