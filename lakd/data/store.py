"""The embedding store: raw CLIP embeddings of a data set, in shards, read back in chunks.

Format (one folder, written by ``lakd embed``; format name ``lakd-embeddings``, version 1):

``meta.json``
    ``format``, ``version``, ``complete`` (true only once every shard is written), the store's
    identity (``model``, ``arch``, ``source``, ``source_options``, ``n_source_items``,
    ``shard_size``, ``dtype``), the totals ``n_items``, ``n_texts``, ``image_dim``, ``text_dim``,
    ``has_labels``, ``n_skipped`` (unreadable images), ``n_truncated`` (captions longer than the
    tokenizer's context), ``classnames`` (or null), ``options`` (how the last run was made),
    ``lakd_version`` and ``shards``: one entry per shard with ``file``, the source item range
    ``start``/``stop`` and its counts.
``shard-00000.safetensors``, ...
    Shard ``k`` covers source items ``[k * shard_size, (k + 1) * shard_size)``; unreadable items
    are left out, so it holds ``n <= shard_size`` rows. Tensors: ``image`` [n, d_i] and ``text``
    [m, d_t] raw (pre-L2-normalisation) pooled embeddings in the store dtype (float32 or
    float16); ``text_item`` [m] int64, the row of ``image`` *within this shard* that each caption
    belongs to (shards stay self-contained, so they can be written in any order by any rank;
    :meth:`EmbeddingStore.text_item` returns store-global rows); ``label`` [n] int64 (-1 = no
    label) when the source has labels. String metadata: ``ids`` and ``captions`` (JSON lists;
    captions flat, aligned with ``text`` rows), the shard's index and range, its counts, and the
    store identity (JSON) used to decide whether a shard can be reused when resuming.

``classes.safetensors`` (optional, written by ``lakd eval`` or :func:`write_class_prompts`)
    Class-prompt text embeddings for zero-shot classification: tensor ``prompts`` [C, T, d_t]
    raw (pre-L2-normalisation), one row per class name and prompt template; string metadata
    ``format`` (``lakd-class-prompts``), ``classnames`` and ``templates`` (JSON lists) and
    ``model`` (the spec that embedded them).

Every file is written atomically (:func:`lakd.io.atomic_path`); ``meta.json`` is written with
``complete: false`` before the first shard and rewritten with ``complete: true`` at the end, so
an interrupted run is recognised and resumed by rerunning ``lakd embed``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

import lakd
from lakd import distributed
from lakd.errors import LakdError
from lakd.io import atomic_path, write_json

log = logging.getLogger(__name__)

FORMAT = "lakd-embeddings"
VERSION = 1
META_NAME = "meta.json"
SHARD_GLOB = "shard-*.safetensors"
STORE_DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "float16": torch.float16}
IDENTITY_FIELDS = ("model", "arch", "source", "source_options", "n_source_items", "shard_size", "dtype")
RESUME_HINT = "rerun `lakd embed` with the same --model, --data and --out to resume"


CLASSES_NAME = "classes.safetensors"
CLASSES_FORMAT = "lakd-class-prompts"


def shard_file_name(index: int) -> str:
    """``3`` -> ``"shard-00003.safetensors"``."""
    return f"shard-{index:05d}.safetensors"


def shard_ranges(n_source_items: int, shard_size: int) -> list[tuple[int, int]]:
    """Source item ranges ``[(start, stop), ...]`` of the shards; the last may be shorter."""
    return [
        (start, min(start + shard_size, n_source_items)) for start in range(0, n_source_items, shard_size)
    ]


def shards_for_rank(n_shards: int, rank: int, world_size: int) -> list[int]:
    """Shard indices embedded by ``rank`` of ``world_size`` processes: those with ``index % world == rank``."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in a world of size {world_size}")
    return list(range(rank, n_shards, world_size))


@dataclass(frozen=True)
class StoreSpec:
    """What a store is made of; two runs with equal specs write interchangeable shards."""

    model: str
    source: str
    n_source_items: int
    shard_size: int = 10000
    dtype: str = "float32"
    arch: str | None = None
    source_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.dtype not in STORE_DTYPES:
            raise LakdError(
                f"dtype: unknown store dtype {self.dtype!r} (choose from {', '.join(STORE_DTYPES)})"
            )
        if self.shard_size < 1:
            raise LakdError(f"shard_size: must be a positive number of items, got {self.shard_size}")

    def identity(self) -> dict[str, Any]:
        """The fields compared when resuming, as plain JSON values."""
        return json.loads(json.dumps(asdict(self)))


@dataclass
class ShardData:
    """One shard's content in memory.

    ``image`` [n, d_i] and ``text`` [m, d_t] raw embeddings; ``text_item`` [m] int64 rows of
    ``image`` within the shard; ``ids`` (n) and ``captions`` (m, aligned with ``text``);
    ``labels`` [n] int64 with -1 for unlabelled items, or None when no item has a label.
    """

    image: torch.Tensor
    text: torch.Tensor
    text_item: torch.Tensor
    ids: list[str]
    captions: list[str]
    labels: torch.Tensor | None = None
    n_skipped: int = 0
    n_truncated: int = 0


@dataclass
class ShardHeader:
    """What a shard file says about itself without reading its tensors."""

    path: Path
    metadata: dict[str, str]
    shapes: dict[str, list[int]]

    @property
    def n_items(self) -> int:
        return self.shapes["image"][0]

    @property
    def n_texts(self) -> int:
        return self.shapes["text"][0]

    def count(self, key: str) -> int:
        return int(self.metadata.get(key, "0"))


def write_shard(
    path: str | Path, shard: ShardData, *, index: int, start: int, stop: int, spec: StoreSpec
) -> None:
    """Write one shard file atomically in the spec's dtype (format: module docstring)."""
    n, m = shard.image.shape[0], shard.text.shape[0]
    if len(shard.ids) != n or len(shard.captions) != m or shard.text_item.shape != (m,):
        raise ValueError(
            f"shard {index}: {n} images, {len(shard.ids)} ids, {m} texts, {len(shard.captions)} captions"
        )
    dtype = STORE_DTYPES[spec.dtype]
    tensors = {
        "image": shard.image.detach().to("cpu", dtype).contiguous(),
        "text": shard.text.detach().to("cpu", dtype).contiguous(),
        "text_item": shard.text_item.detach().to("cpu", torch.int64).contiguous(),
    }
    if shard.labels is not None:
        tensors["label"] = shard.labels.detach().to("cpu", torch.int64).contiguous()
    metadata = {
        "format": f"{FORMAT}-shard",
        "version": str(VERSION),
        "store": json.dumps(spec.identity(), sort_keys=True),
        "index": str(index),
        "start": str(start),
        "stop": str(stop),
        "n_skipped": str(shard.n_skipped),
        "n_truncated": str(shard.n_truncated),
        "ids": json.dumps(list(shard.ids)),
        "captions": json.dumps(list(shard.captions)),
    }
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def read_shard_header(path: str | Path) -> ShardHeader:
    """Open a shard's header (metadata and tensor shapes); LakdError if it is corrupt or truncated."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = dict(f.metadata() or {})
            shapes = {key: list(f.get_slice(key).get_shape()) for key in f.keys()}
    except (SafetensorError, OSError) as err:
        raise LakdError(f"{path}: corrupt or truncated shard file ({err}); {RESUME_HINT}") from None
    if metadata.get("format") != f"{FORMAT}-shard":
        raise LakdError(f"{path}: not a lakd embedding shard (metadata format {metadata.get('format')!r})")
    header = ShardHeader(path, metadata, shapes)
    _check_shard_shapes(header)
    return header


def _check_shard_shapes(header: ShardHeader) -> None:
    """Tensors present with consistent row counts; LakdError naming the file otherwise."""
    shapes = header.shapes
    for key, ndim in (("image", 2), ("text", 2), ("text_item", 1)):
        if key not in shapes:
            raise LakdError(f"{header.path}: shard has no {key!r} tensor")
        if len(shapes[key]) != ndim:
            raise LakdError(
                f"{header.path}: tensor {key!r} has shape {shapes[key]}, expected {ndim} dimensions"
            )
    if shapes["text_item"][0] != header.n_texts:
        raise LakdError(
            f"{header.path}: {shapes['text_item'][0]} text_item rows for {header.n_texts} text rows"
        )
    if "label" in shapes and shapes["label"] != [header.n_items]:
        raise LakdError(f"{header.path}: label shape {shapes['label']} for {header.n_items} image rows")


def _read_tensor(path: Path, key: str) -> torch.Tensor:
    try:
        with safe_open(str(path), framework="pt") as f:
            return f.get_tensor(key)
    except (SafetensorError, OSError) as err:
        raise LakdError(f"{path}: cannot read tensor {key!r} ({err})") from None


def _read_json_list(header: ShardHeader, key: str, length: int) -> list:
    try:
        values = json.loads(header.metadata[key])
    except (KeyError, json.JSONDecodeError) as err:
        raise LakdError(f"{header.path}: shard metadata {key!r} is missing or not JSON ({err})") from None
    if not isinstance(values, list) or len(values) != length:
        raise LakdError(f"{header.path}: shard metadata {key!r} does not hold {length} entries")
    return values


def _read_meta(path: Path) -> dict[str, Any] | None:
    """The parsed ``meta.json`` of a store folder, None when it has none."""
    meta_path = path / META_NAME
    if not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise LakdError(f"{meta_path}: unreadable store meta ({err})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise LakdError(f"{meta_path}: not a lakd embedding store meta (format is not {FORMAT!r})")
    if meta.get("version") != VERSION:
        raise LakdError(
            f"{meta_path}: store format version {meta.get('version')!r}, this lakd reads {VERSION}"
        )
    return meta


@dataclass
class ClassPrompts:
    """Class-prompt text embeddings stored beside a store (``classes.safetensors``).

    ``embeddings`` [C, T, d] raw text embeddings of ``templates[t].format(c=classnames[c])``;
    ``model`` is the spec that embedded them (None when unknown).
    """

    embeddings: torch.Tensor
    classnames: list[str]
    templates: list[str]
    model: str | None = None


def write_class_prompts(store_path: str | Path, prompts: ClassPrompts) -> Path:
    """Write ``prompts`` to ``store_path/classes.safetensors`` atomically; returns the file path."""
    c, t = len(prompts.classnames), len(prompts.templates)
    if prompts.embeddings.ndim != 3 or tuple(prompts.embeddings.shape[:2]) != (c, t):
        raise ValueError(
            f"class prompts: embeddings of shape {tuple(prompts.embeddings.shape)} for {c} classes x {t} templates"
        )
    path = Path(store_path) / CLASSES_NAME
    metadata = {
        "format": CLASSES_FORMAT,
        "version": str(VERSION),
        "classnames": json.dumps(list(prompts.classnames)),
        "templates": json.dumps(list(prompts.templates)),
        "model": prompts.model or "",
    }
    tensors = {"prompts": prompts.embeddings.detach().to("cpu", torch.float32).contiguous()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return path


def read_class_prompts(store_path: str | Path) -> ClassPrompts | None:
    """The class prompts stored beside a store, None when it has none; LakdError if the file is bad."""
    path = Path(store_path) / CLASSES_NAME
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = dict(f.metadata() or {})
            embeddings = f.get_tensor("prompts") if "prompts" in f.keys() else None
    except (SafetensorError, OSError) as err:
        raise LakdError(f"{path}: corrupt or truncated class-prompt file ({err})") from None
    if metadata.get("format") != CLASSES_FORMAT or embeddings is None:
        raise LakdError(f"{path}: not a lakd class-prompt file (expected format {CLASSES_FORMAT!r})")
    names = {}
    for key in ("classnames", "templates"):
        try:
            names[key] = json.loads(metadata[key])
        except (KeyError, json.JSONDecodeError):
            raise LakdError(f"{path}: metadata {key!r} is missing or not JSON") from None
        if not isinstance(names[key], list) or not all(isinstance(v, str) for v in names[key]):
            raise LakdError(f"{path}: metadata {key!r} must be a list of strings")
    shape = (len(names["classnames"]), len(names["templates"]))
    if embeddings.ndim != 3 or tuple(embeddings.shape[:2]) != shape:
        raise LakdError(
            f"{path}: prompts shape {list(embeddings.shape)} does not match {shape[0]} classes x {shape[1]} templates"
        )
    if not bool(torch.isfinite(embeddings).all()):
        raise LakdError(f"{path}: class-prompt embeddings contain NaN/Inf")
    return ClassPrompts(
        embeddings.float(), names["classnames"], names["templates"], metadata.get("model") or None
    )


class StoreWriter:
    """Writes a store shard by shard; resumable, and shared by ranks under torchrun.

    Construction checks an existing store in ``path`` (same spec: resume; other spec: LakdError
    unless ``overwrite``) and writes ``meta.json`` with ``complete: false``. Each rank calls
    :meth:`pending` for its shards that still need computing, :meth:`write` for each, and
    :meth:`finish`, which rank 0 ends by writing the complete ``meta.json``. ``extra`` goes into
    meta as is (``classnames``, ``options``).
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
        self.path = Path(path)
        self.spec = spec
        self.rank, self.world_size = rank, world_size
        self.extra = dict(extra or {})
        self.ranges = shard_ranges(spec.n_source_items, spec.shard_size)
        if self.path.exists() and not self.path.is_dir():
            raise LakdError(f"{self.path}: exists and is not a folder; choose another --out")
        if not overwrite:
            self._check_existing()
        distributed.barrier()
        if rank == 0:
            self._clear(everything=overwrite)
            write_json(self.path / META_NAME, self._meta(complete=False))
        distributed.barrier()

    def _check_existing(self) -> None:
        if not self.path.is_dir():
            return
        meta_path = self.path / META_NAME
        try:
            meta = _read_meta(self.path)
        except LakdError as err:
            raise LakdError(f"{err}; use --overwrite to replace it") from None
        if meta is None:
            if any(self.path.glob(SHARD_GLOB)):
                raise LakdError(
                    f"{self.path}: holds shard files but no {META_NAME}; use --overwrite to replace them"
                )
            return
        mine = self.spec.identity()
        for key in IDENTITY_FIELDS:
            if meta.get(key) != mine[key]:
                raise LakdError(
                    f"{meta_path}: existing store was made with {key}={meta.get(key)!r}, not {mine[key]!r}; "
                    "use --overwrite to replace it or choose another --out"
                )

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
        distributed.barrier()
        return meta

    def _meta(self, *, complete: bool, headers: list[ShardHeader] | None = None) -> dict[str, Any]:
        headers = headers or []
        dims = _shard_dims(headers)
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


def _shard_dims(headers: list[ShardHeader]) -> dict[str, int | None]:
    """The image and text dims shared by all shards; LakdError naming two shards that differ."""
    dims: dict[str, int | None] = {"image": None, "text": None}
    first: dict[str, Path] = {}
    for header in headers:
        for key in dims:
            dim = header.shapes[key][1]
            if dims[key] is None:
                dims[key], first[key] = dim, header.path
            elif dim != dims[key]:
                raise LakdError(
                    f"{header.path}: {key} dim {dim} differs from {dims[key]} in {first[key].name} (dim mismatch between shards)"
                )
    return dims


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
        meta = _read_meta(self.path)
        if meta is None:
            if any(self.path.glob(SHARD_GLOB)):
                raise LakdError(
                    f"{self.path / META_NAME}: missing (the folder holds shards but no meta); "
                    "rerun `lakd embed` with --overwrite to rebuild the store"
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
        dims = _shard_dims(headers)
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

    def ids(self) -> list[str]:
        """Item ids, aligned with ``image`` rows."""
        out: list[str] = []
        for shard in self._shards:
            ids = _read_json_list(shard.header, "ids", shard.header.n_items)
            out += _select(ids, shard.item_keep)
        return out

    def captions(self) -> list[str]:
        """All captions, flat, aligned with ``text`` rows."""
        out: list[str] = []
        for shard in self._shards:
            captions = _read_json_list(shard.header, "captions", shard.header.n_texts)
            out += _select(captions, shard.text_keep)
        return out

    def paired_captions(self) -> list[str]:
        """Each item's first caption ("" for an item without one), aligned with ``image`` rows
        (the captions of the ``text_paired`` view)."""
        captions, text_item = self.captions(), self.text_item()
        first = torch.full((self.n_items,), len(captions), dtype=torch.int64)
        first = first.scatter_reduce(0, text_item, torch.arange(len(captions)), reduce="amin")
        return [captions[j] if j < len(captions) else "" for j in first.tolist()]

    def labels(self) -> torch.Tensor | None:
        """Class labels [n_items] int64 (-1 = none), or None when the store has no labels."""
        if not any("label" in shard.header.shapes for shard in self._shards):
            return None
        parts = []
        for shard in self._shards:
            if "label" in shard.header.shapes:
                labels = _read_tensor(shard.path, "label")
            else:
                labels = torch.full((shard.header.n_items,), -1, dtype=torch.int64)
            parts.append(labels if shard.item_keep is None else labels[shard.item_keep])
        return torch.cat(parts)

    def text_item(self) -> torch.Tensor:
        """For each ``text`` row, its ``image`` row [n_texts] int64, global across the store."""
        parts, offset = [], 0
        for shard in self._shards:
            local = self._local_text_item(shard)
            if shard.item_keep is not None:
                new_row = torch.cumsum(shard.item_keep.long(), 0) - 1
                local = new_row[local[shard.text_keep]]
            parts.append(local + offset)
            offset += shard.n_kept_items()
        return torch.cat(parts) if parts else torch.empty(0, dtype=torch.int64)

    def _local_text_item(self, shard: _Shard) -> torch.Tensor:
        text_item = _read_tensor(shard.path, "text_item")
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
        rows = _read_tensor(shard.path, key).float()
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
        rows = _read_tensor(shard.path, "text").float()[first]
        _raise_if_nonfinite(rows, shard.path, "paired text")
        return rows

    def _drop_nonfinite(self) -> None:
        """Scan every shard; keep masks that drop non-finite rows consistently (see class doc)."""
        for shard in self._shards:
            image_ok = torch.isfinite(_read_tensor(shard.path, "image").float()).all(dim=1)
            text_ok = torch.isfinite(_read_tensor(shard.path, "text").float()).all(dim=1)
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
                "with NaN/Inf embeddings (--allow-nonfinite)"
            )


def _raise_if_nonfinite(rows: torch.Tensor, path: Path, what: str) -> None:
    bad = int((~torch.isfinite(rows).all(dim=1)).sum()) if rows.numel() else 0
    if bad:
        raise LakdError(
            f"{path}: {bad} of {rows.shape[0]} {what} rows contain NaN/Inf; rerun with --allow-nonfinite to drop them"
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
