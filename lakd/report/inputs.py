"""What a geometry report reads: models (embedded first, cached) or embedding stores of the same items.

Every entry of a report is one string: an embedding-store folder (written by ``lakd embed``) or a
model spec (:func:`lakd.models.load_model`). :func:`resolve_inputs` checks all of them, the data
source and the item counts cheaply, before any model runs; :func:`open_stores` then embeds the
models (through :func:`lakd.models.embed.cached_embed`, under the report's ``embeddings/`` folder)
and checks that every store holds the same items in the same order: the same ids and, caption by
caption, the same captions (:func:`check_same_content`).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import torch

from lakd.data import SourceOptions, open_source
from lakd.data.sources import DataSpec, source_ids
from lakd.data.store import META_NAME, EmbeddingStore
from lakd.errors import LakdError
from lakd.io import clear_stale
from lakd.models.specs import ModelSpec, accepted_forms, scheme_of

CACHE_DIR = "embeddings"
DEFAULT_DATA = "shapes:val"
MODALITIES = ("image", "text")
# metrics.json's "format" marks a folder as a lakd geometry report (the only kind `overwrite` replaces)
REPORT_FORMAT = "lakd-geometry-report/1"
REPORT_FORMAT_PREFIX = "lakd-geometry-report/"
METRICS_NAME = "metrics.json"
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
    """Cheap check of a model spec, before anything is loaded (:meth:`ModelSpec.check`); a folder that
    is neither a store nor a spec gets its own message."""
    if Path(spec).is_dir() and scheme_of(spec) is None:
        raise LakdError(f"{spec}: a folder but not an embedding store (no {META_NAME}) nor a model spec")
    try:
        parsed = ModelSpec.parse(spec)
    except LakdError:
        raise LakdError(
            f"{spec}: neither an embedding store folder nor a model spec (use {accepted_forms()})"
        ) from None
    parsed.check()


def display_name(spec: str) -> str:
    """Short name of an entry: a store folder's name, else the model spec's display name."""
    if is_store(spec):
        return Path(spec).name or spec
    try:
        return ModelSpec.parse(spec).display_name
    except LakdError:
        return Path(spec).name or spec


def make_inputs(
    teacher: str | None,
    models: Sequence[str],
    embeddings: Sequence[str],
    students: Sequence[str],
    names: Sequence[str] = (),
) -> list[ModelInput]:
    """Entries in report order: the teacher, then ``models``, ``embeddings`` and ``students``; the first is
    the reference. ``names`` (optional, one per entry in that order) names them; otherwise each is
    named by its spec, made unique by a ``-2``, ``-3``, ... suffix."""
    entries = [(teacher, "teacher")] if teacher else []
    entries += [(s, "model") for s in models] + [(s, "model") for s in embeddings]
    entries += [(s, "student") for s in students]
    if not entries:
        raise LakdError("give at least one of `models`, `teacher`, `students` or `embeddings`")
    for spec in embeddings:
        if not is_store(spec):
            raise LakdError(f"{spec}: not an embedding store (expected a folder written by `lakd embed`)")
    if names and (len(names) != len(entries) or len(set(names)) != len(names)):
        raise LakdError(f"names: give {len(entries)} distinct names, one per entry (got {list(names)})")
    inputs, seen = [], set()
    for index, (spec, role) in enumerate(entries):
        base = name = names[index] if names else display_name(spec)
        suffix = 2
        while name in seen:
            name, suffix = f"{base}-{suffix}", suffix + 1
        seen.add(name)
        inputs.append(ModelInput(name, role, spec, "embeddings" if is_store(spec) else "model"))
    return inputs


def resolve_inputs(
    inputs: list[ModelInput], data: str | None, options: SourceOptions, *, allow_nonfinite: bool = False
) -> tuple[str | None, dict[str, EmbeddingStore]]:
    """Check every entry before heavy work; returns the data spec the models will be embedded on
    (``data``, else :data:`DEFAULT_DATA` when a model needs data, else None) and the stores, by entry name
    (opened with ``allow_nonfinite``: NaN/Inf rows dropped instead of refused).

    Raises LakdError for a missing or unknown model, an unreadable store, an unknown data source, or
    stores whose item counts or ids differ from each other or from the data's (where the data source
    lists its ids without reading images).
    """
    stores: dict[str, EmbeddingStore] = {}
    for entry in inputs:
        if entry.kind == "embeddings":
            stores[entry.name] = EmbeddingStore(entry.spec, allow_nonfinite=allow_nonfinite)
        else:
            check_model_spec(entry.spec)
    needs_data = any(entry.kind == "model" for entry in inputs)
    given = data
    data = data or (DEFAULT_DATA if needs_data else None)
    first = next(iter(stores.values()), None)
    first_ids = first.ids() if first is not None else []
    for store in stores.values():
        if store.n_items != first.n_items:
            raise LakdError(
                f"{store.path}: {store.n_items} items but {first.path} has {first.n_items}; "
                "a report compares embeddings of the same items"
            )
        if store is not first and store.ids() != first_ids:
            raise LakdError(
                f"{store.path}: its item ids differ from {first.path}'s (other items or another order); "
                "a report compares embeddings of the same items"
            )
        if store is not first:
            check_same_content(store, first)
    if data is not None:
        what = f"`data` {data}" if given else f"the default data {data} (no `data` given)"
        source = open_source(data, options)
        n_source, ids = len(source), source_ids(source)
        for store in stores.values():
            if store.meta.get("n_source_items") != n_source:
                raise LakdError(
                    f"{store.path}: embedded from {store.meta.get('n_source_items')} source items but "
                    f"{what} has {n_source}; a report compares embeddings of the same items"
                )
            if ids is not None and not in_source_order(store.ids(), ids):
                raise LakdError(
                    f"{store.path}: its item ids are not {what}'s (embedded from other data?); "
                    "a report compares embeddings of the same items"
                )
    return data, stores


def in_source_order(ids: Sequence[str], source: Sequence[str]) -> bool:
    """Whether ``ids`` are items of ``source`` in its order (a store drops unreadable items, so
    its ids are a subsequence of the source's)."""
    position = {item_id: i for i, item_id in enumerate(source)}
    positions = [position.get(item_id, -1) for item_id in ids]
    return all(p >= 0 for p in positions) and all(a < b for a, b in pairwise(positions))


def input_paths(inputs: Sequence[ModelInput], data: str | None, options: SourceOptions) -> list[Path]:
    """Existing files and folders the report reads (stores, checkpoints and their sidecars, ``local-dir``
    folders, the data's file or folder and its ``root=``), resolved."""
    candidates = []
    for entry in inputs:
        if entry.kind == "embeddings":
            candidates.append(Path(entry.spec))
        else:
            spec = ModelSpec.parse(entry.spec)
            candidates += spec.files() + ([Path(spec.target)] if spec.scheme == "local-dir" else [])
    if data:
        candidates += DataSpec.parse(data).files()
    return [path.resolve() for path in candidates if str(path) not in ("", ".") and path.exists()]


def is_report(folder: Path) -> bool:
    """Whether ``folder`` holds a lakd geometry report (its metrics.json has the report's format)."""
    try:
        metrics = json.loads((folder / METRICS_NAME).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    marker = metrics.get("format") if isinstance(metrics, dict) else None
    return isinstance(marker, str) and marker.startswith(REPORT_FORMAT_PREFIX)


def check_output(out: Path, overwrite: bool, inputs: Sequence[Path] = ()) -> None:
    """Refuse an output folder (``out``, resolved) that would destroy something: one that exists
    without ``overwrite``; one that is not a lakd report (nor empty), even with it; one that is or
    contains the working folder or any of the resolved ``inputs``; or a place that cannot be written."""
    clear_stale(out)  # what a killed report left beside it
    cwd = Path.cwd().resolve()
    if cwd.is_relative_to(out):
        raise LakdError(
            f"`out` {out}: is or contains the current folder; give the report a folder of its own"
        )
    for path in inputs:
        if path.is_relative_to(out):
            raise LakdError(f"`out` {out}: contains the input {path}; write the report somewhere else")
    # `overwrite` replaces only a report (or an empty folder): advise it only then
    even = ", even with `overwrite`" if overwrite else ""
    if out.exists() and not out.is_dir():
        raise LakdError(f"{out}: exists and is not a folder; choose another `out`")
    if out.exists() and not is_report(out) and any(out.iterdir()):
        raise LakdError(
            f"{out}: exists and is not a lakd geometry report (no {METRICS_NAME} with format "
            f"{REPORT_FORMAT}); not replacing it{even}; choose another `out`"
        )
    if out.exists() and not overwrite:
        raise LakdError(f"{out}: already exists (use `overwrite` to replace it)")
    parent = out.parent
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
    ``target`` (hard links where the file system allows, copies otherwise), so ``overwrite`` does not
    embed again; :func:`lakd.models.embed.cached_embed` still checks that each is up to date."""
    from lakd.data.cache import cache_folder_name
    from lakd.models.embed import embedding_cache_key

    def link_or_copy(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    for entry in inputs:
        name = cache_folder_name(embedding_cache_key(entry.spec, data, None, options)) if entry.kind == "model" else None
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
    allow_nonfinite: bool = False,
) -> dict[str, EmbeddingStore]:
    """Every entry's store, in report order: stores as opened, models embedded on ``data`` into
    ``cache_root`` (or reused from it; read with ``allow_nonfinite``). Raises LakdError unless all hold
    the same item ids."""
    opened: dict[str, EmbeddingStore] = {}
    for entry in inputs:
        if entry.kind == "embeddings":
            opened[entry.name] = stores[entry.name]
        else:
            from lakd.models.checkpoint import MissingArch  # imports open_clip: only when a model runs
            from lakd.models.embed import cached_embed

            try:
                opened[entry.name] = cached_embed(
                    entry.spec,
                    data,
                    cache_root,
                    source_options=options,
                    batch_size=batch_size,
                    device=device,
                    allow_nonfinite=allow_nonfinite,
                )
            except MissingArch as err:  # a report reads every model without an architecture
                raise err.advice(
                    "a report reads models without an architecture; embed the data with it first (lakd "
                    "embed and its arch option) and give that store as one of the `embeddings`"
                ) from None
    reference_name, reference = next(iter(opened.items()))
    reference_ids = reference.ids()
    for name, store in opened.items():
        if name != reference_name and store.ids() != reference_ids:
            raise LakdError(
                f"{store.path}: its items differ from {reference.path}'s ({store.n_items} vs "
                f"{reference.n_items} items, or another order); embed both on the same data"
            )
        if name != reference_name:
            check_same_content(store, reference)
    return opened


def check_same_content(store: EmbeddingStore, reference: EmbeddingStore) -> None:
    """Stores of the same item ids must also hold the same captions, caption by caption (as lakd eval
    checks a teacher's): equal ids with other captions are other items (e.g. data made with other
    options). LakdError naming the store and the first caption that differs."""
    captions, expected = store.captions(), reference.captions()
    if captions == expected and torch.equal(store.text_item(), reference.text_item()):
        return
    ids = store.ids()
    text_item = store.text_item().tolist()
    first = next((j for j, (a, b) in enumerate(zip(captions, expected, strict=False)) if a != b), None)
    if first is None:  # one store has more captions, or they belong to other items
        where = f"{len(captions)} vs {len(expected)} captions"
    else:
        where = f"item {ids[text_item[first]]!r} is captioned {captions[first][:60]!r} vs {expected[first][:60]!r}"
    raise LakdError(
        f"{store.path}: its items have the ids of {reference.path}'s but other captions ({where}); "
        "a report compares embeddings of the same items"
    )


@dataclass
class RowLabels:
    """Item id and caption of every row of one modality (for hover text and outlier lists)."""

    ids: list[str]
    captions: list[str]


def row_labels(store: EmbeddingStore, text_view: str) -> dict[str, RowLabels]:
    """Labels of the ``image`` and ``text`` rows the report analyses (``text_view``: see TEXT_VIEWS)."""
    ids, paired = store.ids(), store.paired_captions()
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
