"""Writing an embedding store: :class:`StoreWriter` (shard by shard, resumable, rank-aware) and
:func:`write_store` (arrays computed elsewhere -> a one-shard store). Format: :mod:`.format`."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch

import lakd
from lakd import distributed
from lakd.data.store.format import (
    CLASSES_NAME,
    FORMAT,
    IDENTITY_FIELDS,
    META_NAME,
    RESUME_HINT,
    SHARD_GLOB,
    VERSION,
    ClassPrompts,
    ShardData,
    ShardHeader,
    StoreSpec,
    is_store,
    read_meta,
    read_shard_header,
    shard_dims,
    shard_file_name,
    shard_ranges,
    shards_for_rank,
    write_class_prompts,
    write_shard,
)
from lakd.data.store.reader import EmbeddingStore
from lakd.errors import LakdError
from lakd.io import write_json

STAGING = ".lakd-overwrite"  # the folder inside a store where its replacement is written


class StoreWriter:
    """Writes a store shard by shard; resumable, and shared by ranks under torchrun.

    Construction checks ``path`` (:func:`check_out`: an existing store of the same spec is resumed,
    one of another spec is a LakdError unless ``overwrite``; a folder that is not a lakd store is
    never replaced) and writes ``meta.json`` with ``complete: false``. Each rank calls
    :meth:`pending` for its shards that still need computing, :meth:`write` for each, and
    :meth:`finish`, which rank 0 ends by writing the complete ``meta.json``. ``extra`` goes into
    meta as is (``classnames``, ``options``). A store replaced with ``overwrite`` stays whole until
    the new one is complete: the new one is written in ``path/.lakd-overwrite/`` and moved in by
    :meth:`finish` (renames only), so a failure on the way (a full disk) leaves the old store readable.
    """

    def __init__(
        self,
        path: str | Path,
        spec: StoreSpec,
        *,
        overwrite: bool = False,
        rank: int = 0,
        world_size: int = 1,
        extra: dict[str, Any] | None = None,
    ):
        self.final = Path(path)
        self.spec = spec
        self.rank, self.world_size = rank, world_size
        self.extra = dict(extra or {})
        self.ranges = shard_ranges(spec.n_source_items, spec.shard_size)
        check_out(self.final, spec, overwrite)
        # a store being replaced stays whole until the new one is: the new one is written in a
        # staging folder inside it and moved in by finish()
        self.path = self.final / STAGING if overwrite and is_store(self.final) else self.final
        distributed.barrier()
        if rank == 0:
            if self.path != self.final:
                shutil.rmtree(self.path, ignore_errors=True)  # what a killed overwrite left
                self.path.mkdir()
            elif is_store(self.final):  # resumed: a killed overwrite's staging folder is ours to remove
                shutil.rmtree(self.final / STAGING, ignore_errors=True)
            self._clear(everything=overwrite)
            write_json(self.path / META_NAME, self._meta(complete=False))
        distributed.barrier()

    @property
    def staging(self) -> bool:
        """Whether the store is written in a staging folder, to replace the one at ``final``."""
        return self.path != self.final

    def abandon(self) -> None:
        """After a failure: remove the staging folder of a replacement (the old store is untouched;
        an overwrite always starts afresh, so nothing of it is worth keeping)."""
        if self.staging and self.rank == 0:
            shutil.rmtree(self.path, ignore_errors=True)

    def _promote(self) -> None:
        """Move the finished store from the staging folder over the old one: the old meta goes first
        (so no reader pairs it with new shards), then its shards and class prompts, then the new
        shards and meta come in. Renames only: nothing here needs disk space."""
        (self.final / META_NAME).unlink(missing_ok=True)
        for old in [*self.final.glob(SHARD_GLOB), self.final / CLASSES_NAME]:
            old.unlink(missing_ok=True)
        for new in self.path.glob(SHARD_GLOB):
            os.replace(new, self.final / new.name)
        os.replace(self.path / META_NAME, self.final / META_NAME)
        shutil.rmtree(self.path, ignore_errors=True)

    def _clear(self, *, everything: bool) -> None:
        """Remove leftover temporary shards; with ``everything`` also the old meta and shards."""
        leftovers = list(self.path.glob(f".{SHARD_GLOB}.*.tmp"))
        if everything:
            leftovers += [self.path / META_NAME, *self.path.glob(SHARD_GLOB)]
        for file in leftovers:
            file.unlink(missing_ok=True)

    def shard_path(self, index: int) -> Path:
        return self.path / shard_file_name(index)

    def is_done(self, index: int) -> bool:
        """True when shard ``index`` exists, reads, and was made from this spec and range."""
        if not self.shard_path(index).is_file():
            return False
        try:
            header = read_shard_header(self.shard_path(index))
        except LakdError:
            return False
        start, stop = self.ranges[index]
        meta = header.metadata
        return (
            meta.get("store") == json.dumps(self.spec.identity(), sort_keys=True)
            and meta.get("index") == str(index)
            and meta.get("start") == str(start)
            and meta.get("stop") == str(stop)
        )

    def pending(self) -> list[int]:
        """This rank's shard indices that still need computing (missing or invalid files)."""
        mine = shards_for_rank(len(self.ranges), self.rank, self.world_size)
        return [index for index in mine if not self.is_done(index)]

    def write(self, index: int, shard: ShardData) -> None:
        start, stop = self.ranges[index]
        write_shard(self.shard_path(index), shard, index=index, start=start, stop=stop, spec=self.spec)

    def finish(self) -> dict[str, Any]:
        """Wait for all ranks, check every shard, write the complete meta (rank 0); return it."""
        distributed.barrier()
        headers = []
        for index in range(len(self.ranges)):
            if not self.is_done(index):
                raise LakdError(
                    f"{self.shard_path(index)}: shard missing or invalid after embedding; {RESUME_HINT}"
                )
            headers.append(read_shard_header(self.shard_path(index)))
        meta = self._meta(complete=True, headers=headers)
        if meta["n_items"] == 0:
            distributed.barrier()
            if self.rank == 0:
                self._clear(everything=True)
                if not any(self.path.iterdir()):
                    self.path.rmdir()
            raise LakdError(
                f"{self.spec.source}: no readable image among {self.spec.n_source_items} items "
                f"({meta['n_skipped']} skipped); nothing was written"
            )
        if self.rank == 0:
            write_json(self.path / META_NAME, meta)
            if self.staging:
                self._promote()
        distributed.barrier()
        return meta

    def _meta(self, *, complete: bool, headers: list[ShardHeader] | None = None) -> dict[str, Any]:
        headers = headers or []
        dims = shard_dims(headers)
        return {
            "format": FORMAT,
            "version": VERSION,
            "complete": complete,
            **self.spec.identity(),
            "n_items": sum(h.n_items for h in headers),
            "n_texts": sum(h.n_texts for h in headers),
            "image_dim": dims["image"],
            "text_dim": dims["text"],
            "has_labels": any("label" in h.shapes for h in headers),
            "n_skipped": sum(h.count("n_skipped") for h in headers),
            "n_truncated": sum(h.count("n_truncated") for h in headers),
            "lakd_version": lakd.__version__,
            **self.extra,
            "shards": [
                {
                    "file": h.path.name,
                    "start": int(h.metadata["start"]),
                    "stop": int(h.metadata["stop"]),
                    "n_items": h.n_items,
                    "n_texts": h.n_texts,
                    "n_skipped": h.count("n_skipped"),
                    "n_truncated": h.count("n_truncated"),
                }
                for h in headers
            ],
        }


def check_out(path: str | Path, spec: StoreSpec, overwrite: bool) -> None:
    """Whether a store of ``spec`` may be written at ``path`` (cheap; :class:`StoreWriter` checks it
    again): a new or empty folder; a store of the same spec (resumed); with ``overwrite`` any lakd
    embedding store (recognised by the format marker of its ``meta.json``), never another folder.
    LakdError naming the folder otherwise."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise LakdError(f"{path}: exists and is not a folder; choose another `out`")
    if not path.is_dir() or not any(path.iterdir()):
        return
    meta_path = path / META_NAME
    even = ", even with `overwrite`" if overwrite else ""  # which is never advised here: it would not help
    if not is_store(path):
        if meta_path.exists():
            raise LakdError(
                f"{meta_path}: not a lakd embedding store meta (no format {FORMAT!r}); "
                f"not replacing it{even}; choose another `out`"
            )
        if any(path.glob(SHARD_GLOB)):
            raise LakdError(
                f"{path}: holds shard files but no {META_NAME}, so it is not a lakd embedding store; "
                f"not replacing them{even}; choose another `out`"
            )
        return  # other files: the store is written beside them and they are left alone
    if overwrite:
        return
    try:
        meta = read_meta(path)
    except LakdError as err:  # a lakd store of another format version
        raise LakdError(f"{err}; use `overwrite` to replace it") from None
    mine = spec.identity()
    for key in IDENTITY_FIELDS:
        if meta.get(key) != mine[key]:
            raise LakdError(
                f"{meta_path}: existing store was made with {key}={meta.get(key)!r}, not {mine[key]!r}; "
                "use `overwrite` to replace it or choose another `out`"
            )


def write_store(
    path: str | os.PathLike,
    image: torch.Tensor,
    *,
    model: str,
    source: str,
    labels: torch.Tensor | None = None,
    classnames: list[str] | None = None,
    class_prompts: torch.Tensor | None = None,
    templates: list[str] | None = None,
    text: torch.Tensor | None = None,
    text_item: torch.Tensor | None = None,
    captions: list[str] | None = None,
    ids: list[str] | None = None,
    overwrite: bool = False,
) -> EmbeddingStore:
    """Write embeddings computed elsewhere as a one-shard store (``lakd eval --embeddings`` and the
    report read it like one written by ``lakd embed``).

    ``image`` [N, d]; ``labels`` [N] int64 (-1 = none) with ``classnames``; ``class_prompts``
    [C, T, d] raw prompt embeddings of ``templates`` (``{c}`` patterns) for each class; ``text``
    [M, d] with ``text_item`` [M] and ``captions`` (M) for retrieval; ``ids`` default to
    ``"0".."N-1"``. ``model`` and ``source`` name what the embeddings came from.
    """
    n, width = image.shape
    text = torch.empty(0, width) if text is None else text
    text_item = torch.empty(0, dtype=torch.int64) if text_item is None else text_item
    captions = [] if captions is None else list(captions)
    ids = [str(i) for i in range(n)] if ids is None else list(ids)
    if (class_prompts is None) != (templates is None) or (class_prompts is not None and classnames is None):
        raise LakdError("write_store: class_prompts need templates and classnames")
    spec = StoreSpec(model=model, source=source, n_source_items=n, shard_size=max(n, 1))
    writer = StoreWriter(path, spec, overwrite=overwrite, extra={"classnames": classnames, "options": {}})
    try:
        writer.write(0, ShardData(image, text, text_item, ids, captions, labels=labels))
    except ValueError as err:
        raise LakdError(f"{path}: {err}") from None
    writer.finish()
    (Path(path) / CLASSES_NAME).unlink(missing_ok=True)  # another store's prompts
    if class_prompts is not None:
        try:
            write_class_prompts(path, ClassPrompts(class_prompts, list(classnames), list(templates), model))
        except ValueError as err:
            raise LakdError(f"{path}: {err}") from None
    return EmbeddingStore(path)
