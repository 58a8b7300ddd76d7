"""The embedding-store format: files, metadata, shard I/O and class prompts.

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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from lakd.errors import LakdError
from lakd.io import atomic_path, clear_stale, writing

FORMAT = "lakd-embeddings"
VERSION = 1
META_NAME = "meta.json"
SHARD_GLOB = "shard-*.safetensors"
STORE_DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "float16": torch.float16}
IDENTITY_FIELDS = ("model", "arch", "source", "source_options", "n_source_items", "shard_size", "dtype")
# the most shards a store may have (shard files, resume checks and meta.json grow with it):
# 10,000-item shards hold a billion items
MAX_SHARDS = 100_000
RESUME_HINT = "embed again (`lakd embed`) with the same model, data and output folder to resume"


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
        n_shards = -(-self.n_source_items // self.shard_size)
        if n_shards > MAX_SHARDS:
            raise LakdError(
                f"shard_size: {self.n_source_items} source items in shards of {self.shard_size} make {n_shards} "
                f"shards, more than a store holds ({MAX_SHARDS}); use a larger `shard_size`"
            )

    def identity(self) -> dict[str, Any]:
        """The fields compared when resuming, as plain JSON values."""
        return json.loads(json.dumps(asdict(self)))


@dataclass
class ShardData:
    """One shard's content in memory.

    ``image`` [n, d_i] and ``text`` [m, d_t] raw embeddings; ``text_item`` [m] int64 rows of
    ``image`` within the shard; ``ids`` (n) and ``captions`` (m, aligned with ``text``);
    ``labels`` [n] int64 with -1 for unlabelled items, or None when no item has a label;
    ``range`` the source item range of a shard read back from a store (None for a new shard).
    """

    image: torch.Tensor
    text: torch.Tensor
    text_item: torch.Tensor
    ids: list[str]
    captions: list[str]
    labels: torch.Tensor | None = None
    n_skipped: int = 0
    n_truncated: int = 0
    range: tuple[int, int] | None = None  # source items [start, stop) of a stored shard


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
    with atomic_path(path) as tmp, writing(tmp):
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


def read_tensor(path: Path, key: str) -> torch.Tensor:
    try:
        with safe_open(str(path), framework="pt") as f:
            return f.get_tensor(key)
    except (SafetensorError, OSError) as err:
        raise LakdError(f"{path}: cannot read tensor {key!r} ({err})") from None


def read_json_list(header: ShardHeader, key: str, length: int) -> list:
    try:
        values = json.loads(header.metadata[key])
    except (KeyError, json.JSONDecodeError) as err:
        raise LakdError(f"{header.path}: shard metadata {key!r} is missing or not JSON ({err})") from None
    if not isinstance(values, list) or len(values) != length:
        raise LakdError(f"{header.path}: shard metadata {key!r} does not hold {length} entries")
    return values


def read_meta(path: Path) -> dict[str, Any] | None:
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


def is_store(path: Path) -> bool:
    """Whether ``path`` is a folder holding a lakd embedding store (its meta.json has the format marker)."""
    try:
        meta = json.loads((path / META_NAME).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(meta, dict) and meta.get("format") == FORMAT


def check_replaceable(out: Path, overwrite: bool) -> None:
    """Refuse to write a store at ``out`` when something is there: without ``overwrite`` anything, with
    it anything but a lakd embedding store (or an empty folder)."""
    clear_stale(out)  # what a killed write of `out` left beside it
    if not out.exists():
        return
    if not out.is_dir() or (any(out.iterdir()) and not is_store(out)):
        # `overwrite` would not replace it either: advise only what works
        even = ", even with `overwrite`" if overwrite else ""
        raise LakdError(
            f"{out}: exists and is not a lakd embedding store (no {META_NAME} with format {FORMAT!r}); "
            f"not replacing it{even}; choose another `out`"
        )
    if not overwrite:
        raise LakdError(f"{out}: already exists (use `overwrite` to replace it)")


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
    with atomic_path(path) as tmp, writing(tmp):
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


def shard_dims(headers: list[ShardHeader]) -> dict[str, int | None]:
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
