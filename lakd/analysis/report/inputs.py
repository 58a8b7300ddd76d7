"""What a geometry report reads: models (embedded first, cached) or embedding stores of the same items.

Every entry of a report is one string: an embedding-store folder (written by ``lakd embed``) or a
model spec (:func:`lakd.models.load_model`). :func:`resolve_inputs` checks all of them, the data
source and the item counts cheaply, before any model runs; :func:`open_stores` then embeds the
models (through :func:`lakd.eval.cache.cached_store`, under the report's ``embeddings/`` folder)
and checks that every store holds the same items in the same order.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lakd.data import SourceOptions, open_source
from lakd.data.store import META_NAME, EmbeddingStore
from lakd.errors import LakdError

CACHE_DIR = "embeddings"
DEFAULT_DATA = "shapes:val"
# how the report's "text" modality is read from a store: each item's first caption (one row per
# item, paired with its image) or every caption
TEXT_VIEWS = {"paired": "text_paired", "all": "text"}


@dataclass
class ModelInput:
    """One entry of a report: ``name`` (unique, for tables and legends), ``role`` (teacher, student or
    model), ``spec`` (model spec or store folder, as given) and ``kind`` ("model" or "embeddings")."""

    name: str
    role: str
    spec: str
    kind: str


def is_store(spec: str) -> bool:
    """Whether ``spec`` names an embedding-store folder (a folder with a ``meta.json``)."""
    path = Path(spec)
    return path.is_dir() and (path / META_NAME).is_file()


def check_model_spec(spec: str) -> None:
    """Cheap check of a model spec, before anything is loaded: a checkpoint file must exist, a
    ``lakd:`` config must be shipped, anything else must use a known scheme."""
    from lakd.models import list_lakd_configs
    from lakd.models.safe_load import READERS
    from lakd.models.specs import SCHEMES, accepted_forms

    prefix, sep, rest = spec.partition(":")
    if sep and prefix in SCHEMES:
        if prefix == "lakd" and rest not in list_lakd_configs():
            raise LakdError(f"{spec}: unknown lakd config (available: {', '.join(list_lakd_configs())})")
        return
    path = Path(spec)
    if path.suffix.lower() in READERS:
        if not path.is_file():
            raise LakdError(f"{spec}: no such checkpoint file")
        return
    if path.is_dir():
        raise LakdError(f"{spec}: a folder but not an embedding store (no {META_NAME}) nor a model spec")
    raise LakdError(f"{spec}: neither an embedding store folder nor a model spec (use {accepted_forms()})")


def display_name(spec: str) -> str:
    """Short name of an entry: a file or folder's stem, or the part after ``scheme:``."""
    prefix, sep, rest = spec.partition(":")
    if sep and len(prefix) > 1 and not Path(spec).exists():
        return rest.rstrip("/").rsplit("/", 1)[-1] or spec
    path = Path(spec)
    return (path.stem if path.suffix and not path.is_dir() else path.name) or spec


def make_inputs(
    teacher: str | None, models: Sequence[str], embeddings: Sequence[str], students: Sequence[str]
) -> list[ModelInput]:
    """Entries in report order: the teacher, then ``models``, ``embeddings`` and ``students``; the first is
    the reference. Names are made unique by a ``-2``, ``-3``, ... suffix."""
    entries = [(teacher, "teacher")] if teacher else []
    entries += [(s, "model") for s in models] + [(s, "model") for s in embeddings]
    entries += [(s, "student") for s in students]
    if not entries:
        raise LakdError("give at least one --model, --teacher, --student or --embeddings")
    for spec in embeddings:
        if not is_store(spec):
            raise LakdError(f"{spec}: not an embedding store (expected a folder written by `lakd embed`)")
    inputs, seen = [], set()
    for spec, role in entries:
        base = name = display_name(spec)
        suffix = 2
        while name in seen:
            name, suffix = f"{base}-{suffix}", suffix + 1
        seen.add(name)
        inputs.append(ModelInput(name, role, spec, "embeddings" if is_store(spec) else "model"))
    return inputs


def resolve_inputs(
    inputs: list[ModelInput], data: str | None, options: SourceOptions
) -> tuple[str | None, dict[str, EmbeddingStore]]:
    """Check every entry before heavy work; returns the data spec the models will be embedded on
    (None when every entry is a store) and the stores opened so far, by entry name.

    Raises LakdError for a missing or unknown model, an unreadable store, an unknown data source, or
    stores whose item counts differ from each other or from the data.
    """
    stores: dict[str, EmbeddingStore] = {}
    for entry in inputs:
        if entry.kind == "embeddings":
            stores[entry.name] = EmbeddingStore(entry.spec)
        else:
            check_model_spec(entry.spec)
    needs_data = any(entry.kind == "model" for entry in inputs)
    data = data or (DEFAULT_DATA if needs_data else None)
    first = next(iter(stores.values()), None)
    for store in stores.values():
        if store.n_items != first.n_items:
            raise LakdError(
                f"{store.path}: {store.n_items} items but {first.path} has {first.n_items}; "
                "a report compares embeddings of the same items"
            )
    if data is not None:
        n_source = len(open_source(data, options))
        for store in stores.values():
            if store.meta.get("n_source_items") != n_source:
                raise LakdError(
                    f"{store.path}: embedded from {store.meta.get('n_source_items')} source items but "
                    f"--data {data} has {n_source}; a report compares embeddings of the same items"
                )
    return data, stores


def check_output(out: Path, overwrite: bool) -> None:
    """Refuse an existing ``out`` without ``overwrite``, and an output place that cannot be written."""
    if out.exists() and not overwrite:
        raise LakdError(f"{out}: already exists (use --overwrite to replace it)")
    if out.exists() and not out.is_dir():
        raise LakdError(f"{out}: exists and is not a folder")
    parent = out.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise LakdError(f"{out}: cannot be created ({parent} is not a folder)")
    try:
        Path(tempfile.mkdtemp(prefix=".lakd-write-test.", dir=parent)).rmdir()
    except OSError as err:
        raise LakdError(f"{out}: cannot write there ({err.strerror or err})") from None


def reuse_cache(
    inputs: list[ModelInput], data: str, options: SourceOptions, previous: Path, target: Path
) -> None:
    """Carry the models' embeddings cached by a previous report (``previous``: its cache folder) into
    ``target`` (hard links where the file system allows, copies otherwise), so ``--overwrite`` does not
    embed again; :func:`lakd.eval.cache.cached_store` still checks that each is up to date."""
    from lakd.eval.cache import cache_folder_name

    def link_or_copy(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    for entry in inputs:
        name = cache_folder_name(entry.spec, data, None, options) if entry.kind == "model" else None
        if name and (previous / name).is_dir():
            shutil.copytree(previous / name, target / name, copy_function=link_or_copy, dirs_exist_ok=True)


def open_stores(
    inputs: list[ModelInput],
    stores: dict[str, EmbeddingStore],
    data: str | None,
    cache_root: Path,
    *,
    options: SourceOptions,
    batch_size: int,
    device: str,
) -> dict[str, EmbeddingStore]:
    """Every entry's store, in report order: stores as opened, models embedded on ``data`` into
    ``cache_root`` (or reused from it). Raises LakdError unless all hold the same item ids."""
    opened: dict[str, EmbeddingStore] = {}
    for entry in inputs:
        if entry.kind == "embeddings":
            opened[entry.name] = stores[entry.name]
        else:
            from lakd.eval.cache import cached_store  # imports open_clip: only when a model runs

            opened[entry.name] = cached_store(
                entry.spec, data, cache_root, source_options=options, batch_size=batch_size, device=device
            )
    reference_name, reference = next(iter(opened.items()))
    reference_ids = reference.ids()
    for name, store in opened.items():
        if name != reference_name and store.ids() != reference_ids:
            raise LakdError(
                f"{store.path}: its items differ from {reference.path}'s ({store.n_items} vs "
                f"{reference.n_items} items, or another order); embed both on the same data"
            )
    return opened


@dataclass
class RowLabels:
    """Item id and caption of every row of one modality (for hover text and outlier lists)."""

    ids: list[str]
    captions: list[str]


def first_captions(store: EmbeddingStore) -> list[str]:
    """Each item's first caption ("" for an item without one), aligned with image rows."""
    captions, text_item = store.captions(), store.text_item().numpy()
    first = np.full(store.n_items, -1, dtype=np.int64)
    first[text_item[::-1]] = np.arange(len(text_item))[::-1]
    return [captions[j] if j >= 0 else "" for j in first]


def row_labels(store: EmbeddingStore, text_view: str) -> dict[str, RowLabels]:
    """Labels of the ``image`` and ``text`` rows the report analyses (``text_view``: see TEXT_VIEWS)."""
    ids, paired = store.ids(), first_captions(store)
    labels = {"image": RowLabels(ids, paired)}
    if TEXT_VIEWS[text_view] == "text":
        text_item = store.text_item().tolist()
        labels["text"] = RowLabels([ids[i] for i in text_item], store.captions())
    else:
        labels["text"] = RowLabels(ids, paired)
    return labels


def chunk_sources(store: EmbeddingStore, text_view: str, chunk_size: int) -> dict[str, Callable[[], object]]:
    """Re-readable chunk streams of the report's two modalities, as :func:`lakd.analysis.analyze` takes them."""
    views = {"image": "image", "text": TEXT_VIEWS[text_view]}
    return {
        modality: (lambda view=view: store.iter_chunks(view, chunk_size)) for modality, view in views.items()
    }
