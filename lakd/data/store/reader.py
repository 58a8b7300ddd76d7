"""Reading an embedding store: :class:`EmbeddingStore` (validated at open, streamed in chunks or
shard by shard, NaN/Inf rows refused or dropped). Format: :mod:`.format`."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lakd.data.store.format import (
    CLASSES_NAME,
    META_NAME,
    RESUME_HINT,
    SHARD_GLOB,
    ClassPrompts,
    ShardData,
    ShardHeader,
    read_class_prompts,
    read_json_list,
    read_meta,
    read_shard_header,
    read_tensor,
    shard_dims,
)
from lakd.errors import LakdError

log = logging.getLogger("lakd.data.store")


@dataclass
class _Shard:
    """Reader-side view of one shard: header plus the rows kept (None = all)."""

    header: ShardHeader
    item_keep: torch.Tensor | None = None
    text_keep: torch.Tensor | None = None

    @property
    def path(self) -> Path:
        return self.header.path

    def n_kept_items(self) -> int:
        return self.header.n_items if self.item_keep is None else int(self.item_keep.sum())

    def n_kept_texts(self) -> int:
        return self.header.n_texts if self.text_keep is None else int(self.text_keep.sum())


class EmbeddingStore:
    """Read a store written by ``lakd embed`` (format: module docstring).

    The folder is validated at open: meta present and complete, every shard present and
    readable, dims and counts consistent. NaN/Inf rows are a LakdError naming the shard when
    its rows are read, unless ``allow_nonfinite``: then the store is scanned at open and an item
    is dropped when its image or its first caption is not finite (so ``image`` and
    ``text_paired`` stay aligned), a caption when it or its item is dropped; ``n_dropped_items``
    and ``n_dropped_texts`` give the counts and a warning reports them. Embeddings come back as
    float32 tensors; ``ids``, ``captions``, ``labels`` and ``text_item`` follow the same drops.
    """

    def __init__(self, path: str | Path, *, allow_nonfinite: bool = False):
        self.path = Path(path)
        self.allow_nonfinite = allow_nonfinite
        self.meta = self._open_meta()
        self._shards = [_Shard(header) for header in self._open_shards()]
        self.n_dropped_items = 0
        self.n_dropped_texts = 0
        self._row_cache: dict[str, Any] = {}
        if allow_nonfinite:
            self._drop_nonfinite()

    def __repr__(self) -> str:
        return f"EmbeddingStore({str(self.path)!r}, n_items={self.n_items}, n_texts={self.n_texts})"

    def _open_meta(self) -> dict[str, Any]:
        if not self.path.exists():
            raise LakdError(f"{self.path}: no such embedding store (folder not found)")
        if not self.path.is_dir():
            raise LakdError(
                f"{self.path}: not an embedding store (expected a folder written by `lakd embed`)"
            )
        meta = read_meta(self.path)
        if meta is None:
            if any(self.path.glob(SHARD_GLOB)):
                raise LakdError(
                    f"{self.path / META_NAME}: missing (the folder holds shards but no meta); "
                    "embed the data again into a new folder to rebuild the store"
                )
            raise LakdError(f"{self.path}: not an embedding store (no {META_NAME})")
        if meta.get("complete") is not True:
            raise LakdError(
                f"{self.path}: incomplete embedding store (embedding was interrupted); {RESUME_HINT}"
            )
        required = ("n_items", "n_texts", "image_dim", "text_dim", "shards", "dtype")
        missing = [key for key in required if key not in meta]
        if missing:
            raise LakdError(f"{self.path / META_NAME}: missing field(s) {', '.join(missing)}")
        if not isinstance(meta["shards"], list) or not all(isinstance(s, dict) for s in meta["shards"]):
            raise LakdError(f"{self.path / META_NAME}: field 'shards' must be a list of shard entries")
        return meta

    def _open_shards(self) -> list[ShardHeader]:
        headers = []
        for entry in self.meta["shards"]:
            shard_path = self.path / str(entry.get("file", ""))
            if not shard_path.is_file():
                raise LakdError(f"{shard_path}: missing shard (store incomplete); {RESUME_HINT}")
            header = read_shard_header(shard_path)
            if (header.n_items, header.n_texts) != (entry.get("n_items"), entry.get("n_texts")):
                raise LakdError(
                    f"{shard_path}: holds {header.n_items} images / {header.n_texts} texts, "
                    f"meta says {entry.get('n_items')} / {entry.get('n_texts')}"
                )
            headers.append(header)
        dims = shard_dims(headers)
        for key in ("image", "text"):
            if dims[key] is not None and dims[key] != self.meta[f"{key}_dim"]:
                raise LakdError(
                    f"{self.path / META_NAME}: {key}_dim {self.meta[f'{key}_dim']} but shards hold {dims[key]}"
                )
        totals = (sum(h.n_items for h in headers), sum(h.n_texts for h in headers))
        if totals != (self.meta["n_items"], self.meta["n_texts"]):
            raise LakdError(
                f"{self.path / META_NAME}: counts {self.meta['n_items']}/{self.meta['n_texts']} but shards hold {totals[0]}/{totals[1]}"
            )
        return headers

    def class_prompts(self) -> ClassPrompts | None:
        """Class-prompt embeddings stored beside the store (``classes.safetensors``), None if absent.

        LakdError when the file is unreadable or its width differs from the store's text dim.
        """
        prompts = read_class_prompts(self.path)
        if prompts is not None and prompts.embeddings.shape[2] != self.dim("text"):
            raise LakdError(
                f"{self.path / CLASSES_NAME}: prompt dim {prompts.embeddings.shape[2]} differs from "
                f"the store's text dim {self.dim('text')}"
            )
        return prompts

    # ---- sizes -----------------------------------------------------------------------------

    @property
    def n_items(self) -> int:
        return sum(shard.n_kept_items() for shard in self._shards)

    @property
    def n_texts(self) -> int:
        return sum(shard.n_kept_texts() for shard in self._shards)

    def dim(self, modality: str) -> int:
        """Embedding width of ``"image"``, ``"text"`` or ``"text_paired"``."""
        _check_modality(modality)
        return int(self.meta["image_dim" if modality == "image" else "text_dim"])

    # ---- per-row metadata ------------------------------------------------------------------

    # Per-row metadata is read once (JSON lists and small tensors of every shard) and cached;
    # the methods return fresh copies, so a caller's edits never reach the cache.

    def ids(self) -> list[str]:
        """Item ids, aligned with ``image`` rows."""
        return list(self._cached("ids", lambda: self._metadata_list("ids")))

    def captions(self) -> list[str]:
        """All captions, flat, aligned with ``text`` rows."""
        return list(self._cached("captions", lambda: self._metadata_list("captions")))

    def paired_captions(self) -> list[str]:
        """Each item's first caption ("" for an item without one), aligned with ``image`` rows
        (the captions of the ``text_paired`` view)."""

        def make() -> list[str]:
            captions, text_item = self.captions(), self.text_item()
            first = torch.full((self.n_items,), len(captions), dtype=torch.int64)
            first = first.scatter_reduce(0, text_item, torch.arange(len(captions)), reduce="amin")
            return [captions[j] if j < len(captions) else "" for j in first.tolist()]

        return list(self._cached("paired_captions", make))

    def labels(self) -> torch.Tensor | None:
        """Class labels [n_items] int64 (-1 = none), or None when the store has no labels."""
        labels = self._cached("labels", self._read_labels)
        return None if labels is None else labels.clone()

    def text_item(self) -> torch.Tensor:
        """For each ``text`` row, its ``image`` row [n_texts] int64, global across the store."""

        def make() -> torch.Tensor:
            parts, offset = [], 0
            for shard in self._shards:
                parts.append(self._kept_text_item(shard) + offset)
                offset += shard.n_kept_items()
            return torch.cat(parts) if parts else torch.empty(0, dtype=torch.int64)

        return self._cached("text_item", make).clone()

    def _cached(self, key: str, make: Callable[[], Any]) -> Any:
        if key not in self._row_cache:
            self._row_cache[key] = make()
        return self._row_cache[key]

    def _metadata_list(self, key: str) -> list[str]:
        out: list[str] = []
        for shard in self._shards:
            out += self._shard_list(shard, key)
        return out

    def _shard_list(self, shard: _Shard, key: str) -> list[str]:
        """A shard's ``ids`` or ``captions``, after the drops."""
        length = shard.header.n_items if key == "ids" else shard.header.n_texts
        keep = shard.item_keep if key == "ids" else shard.text_keep
        return _select(read_json_list(shard.header, key, length), keep)

    def _shard_labels(self, shard: _Shard) -> torch.Tensor:
        if "label" in shard.header.shapes:
            labels = read_tensor(shard.path, "label")
        else:
            labels = torch.full((shard.header.n_items,), -1, dtype=torch.int64)
        return labels if shard.item_keep is None else labels[shard.item_keep]

    def _read_labels(self) -> torch.Tensor | None:
        if not any("label" in shard.header.shapes for shard in self._shards):
            return None
        return torch.cat([self._shard_labels(shard) for shard in self._shards])

    def _kept_text_item(self, shard: _Shard) -> torch.Tensor:
        """A shard's ``text_item`` (rows within the shard) after the drops."""
        local = self._local_text_item(shard)
        if shard.item_keep is None:
            return local
        new_row = torch.cumsum(shard.item_keep.long(), 0) - 1
        return new_row[local[shard.text_keep]]

    # ---- shard by shard --------------------------------------------------------------------

    def shards(self) -> Iterator[ShardData]:
        """Every shard's content in order, as :class:`ShardData` with its source ``range`` set (the
        drops of ``allow_nonfinite`` applied; NaN/Inf rows otherwise a LakdError). Embeddings
        float32; memory holds one shard at a time. For tools that rewrite a store shard by shard."""
        has_labels = any("label" in shard.header.shapes for shard in self._shards)
        for shard in self._shards:
            yield ShardData(
                image=self._image_rows(shard),
                text=self._text_rows(shard),
                text_item=self._kept_text_item(shard),
                ids=self._shard_list(shard, "ids"),
                captions=self._shard_list(shard, "captions"),
                labels=self._shard_labels(shard) if has_labels else None,
                n_skipped=shard.header.count("n_skipped"),
                n_truncated=shard.header.count("n_truncated"),
                range=(int(shard.header.metadata["start"]), int(shard.header.metadata["stop"])),
            )

    def _local_text_item(self, shard: _Shard) -> torch.Tensor:
        text_item = read_tensor(shard.path, "text_item")
        n = shard.header.n_items
        if text_item.numel() and (int(text_item.min()) < 0 or int(text_item.max()) >= n):
            raise LakdError(f"{shard.path}: text_item points outside the shard's {n} image rows")
        return text_item

    def _first_caption(self, shard: _Shard) -> torch.Tensor:
        """Text row of each item's first caption [n] (``n_texts`` where the item has none)."""
        m = shard.header.n_texts
        first = torch.full((shard.header.n_items,), m, dtype=torch.int64)
        return first.scatter_reduce(0, self._local_text_item(shard), torch.arange(m), reduce="amin")

    # ---- embeddings ------------------------------------------------------------------------

    def iter_chunks(self, modality: str, chunk_size: int = 65536) -> Iterator[torch.Tensor]:
        """Float32 chunks of ``chunk_size`` rows (the last may be shorter) of one modality.

        ``"image"`` [n_items, d_i], ``"text"`` [n_texts, d_t] (all captions), ``"text_paired"``
        [n_items, d_t] (each item's first caption, aligned with ``image``). Memory stays
        bounded by one shard plus one chunk.
        """
        view = _check_modality(modality)
        if chunk_size < 1:
            raise LakdError(f"chunk_size: must be positive, got {chunk_size}")
        pending: list[torch.Tensor] = []
        n_pending = 0
        for shard in self._shards:
            rows = view(self, shard)
            while rows.shape[0]:
                take = min(chunk_size - n_pending, rows.shape[0])
                pending.append(rows[:take])
                n_pending += take
                rows = rows[take:]
                if n_pending == chunk_size:
                    yield torch.cat(pending)
                    pending, n_pending = [], 0
        if n_pending:
            yield torch.cat(pending)

    def load(self, modality: str) -> torch.Tensor:
        """All rows of one modality as one float32 tensor (see :meth:`iter_chunks`)."""
        view = _check_modality(modality)
        parts = [view(self, shard) for shard in self._shards]
        return torch.cat(parts) if parts else torch.empty(0, self.dim(modality))

    def _rows(self, shard: _Shard, key: str, keep: torch.Tensor | None, what: str) -> torch.Tensor:
        rows = read_tensor(shard.path, key).float()
        if keep is not None:
            return rows[keep]
        _raise_if_nonfinite(rows, shard.path, what)
        return rows

    def _image_rows(self, shard: _Shard) -> torch.Tensor:
        return self._rows(shard, "image", shard.item_keep, "image")

    def _text_rows(self, shard: _Shard) -> torch.Tensor:
        return self._rows(shard, "text", shard.text_keep, "text")

    def _paired_rows(self, shard: _Shard) -> torch.Tensor:
        first = self._first_caption(shard)
        if shard.item_keep is not None:
            first = first[shard.item_keep]
        n_without = int((first == shard.header.n_texts).sum())
        if n_without:
            raise LakdError(
                f"{shard.path}: {n_without} item(s) have no caption, so there is no paired text view"
            )
        rows = read_tensor(shard.path, "text").float()[first]
        _raise_if_nonfinite(rows, shard.path, "paired text")
        return rows

    def _drop_nonfinite(self) -> None:
        """Scan every shard; keep masks that drop non-finite rows consistently (see class doc)."""
        for shard in self._shards:
            image_ok = torch.isfinite(read_tensor(shard.path, "image").float()).all(dim=1)
            text_ok = torch.isfinite(read_tensor(shard.path, "text").float()).all(dim=1)
            first = self._first_caption(shard)
            has_caption = first < shard.header.n_texts
            first_ok = torch.ones_like(image_ok)
            first_ok[has_caption] = text_ok[first[has_caption]]
            item_keep = image_ok & first_ok
            text_keep = text_ok & item_keep[self._local_text_item(shard)]
            self.n_dropped_items += int((~item_keep).sum())
            self.n_dropped_texts += int((~text_keep).sum())
            if not item_keep.all() or not text_keep.all():
                shard.item_keep, shard.text_keep = item_keep, text_keep
        if self.n_dropped_items or self.n_dropped_texts:
            log.warning(
                f"{self.path}: dropped {self.n_dropped_items} item(s) and {self.n_dropped_texts} caption(s) "
                "with NaN/Inf embeddings (`allow_nonfinite`)"
            )


def _raise_if_nonfinite(rows: torch.Tensor, path: Path, what: str) -> None:
    bad = int((~torch.isfinite(rows).all(dim=1)).sum()) if rows.numel() else 0
    if bad:
        raise LakdError(
            f"{path}: {bad} of {rows.shape[0]} {what} rows contain NaN/Inf; rerun with `allow_nonfinite` to drop them"
        )


def _select(values: list, keep: torch.Tensor | None) -> list:
    return values if keep is None else [v for v, k in zip(values, keep.tolist(), strict=True) if k]


View = Callable[[EmbeddingStore, _Shard], torch.Tensor]
VIEWS: dict[str, View] = {
    "image": EmbeddingStore._image_rows,
    "text": EmbeddingStore._text_rows,
    "text_paired": EmbeddingStore._paired_rows,
}


def _check_modality(modality: str) -> View:
    if modality not in VIEWS:
        raise LakdError(f"modality: unknown {modality!r} (choose from {', '.join(VIEWS)})")
    return VIEWS[modality]
