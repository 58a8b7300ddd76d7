"""One string names any data: :meth:`DataSpec.parse` splits it, :func:`open_source` opens it.

A data spec is ``[SCHEME:]TARGET[?key=value&...]``; the query holds the source's own options, so
the string alone says how the data is read (and a store or run that records it can reopen it):

| spec | kind | options (``?key=value``) |
|---|---|---|
| ``shapes:train\\|val\\|test\\|probes`` | shapes world, generated | ``n``, ``seed``, ``image_size``, ``max_objects``, ``noise`` (probes: ``k``) |
| a folder written by ``lakd data shapes`` | shapes folder | none |
| ``captions.csv`` / ``.tsv`` (open_clip convention) | csv | ``img_key`` (filepath), ``caption_key`` (title), ``sep`` (detected; ``tab``, ``comma``, ...), ``root`` (image folder) |
| ``captions_val2017.json`` | coco | ``root`` (image folder; default the JSON's folder) |
| a folder of class subfolders | image folder | none |
| ``wds:shards/train-{000..009}.tar`` | webdataset | none |
| ``tv:NAME`` | torchvision | ``root``, ``split`` and the data set's constructor arguments |

Policy that is not part of the data (may images be downloaded, may paths leave the image root) is
:class:`~lakd.data.base.SourceOptions`. :data:`SOURCE_KINDS` is a static table: scheme kinds match
``SCHEME:``, path kinds test a plain path in order of their explicit ``priority`` (highest first);
openers and path tests are imported when first used, so opening a spec never depends on which
modules happened to be imported before.
"""

from __future__ import annotations

import importlib
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lakd.data.base import SourceOptions
from lakd.errors import LakdError

Opener = Callable[[str, dict[str, str], SourceOptions], Any]


@dataclass(frozen=True)
class SourceKind:
    """One kind of data source. ``opener`` (and ``accepts`` for path kinds) are ``"module:function"``
    names, or callables; ``opener(target, query, options)`` returns a map-style dataset of items and
    ``accepts(path) -> bool`` says whether a plain path is of this kind."""

    name: str
    opener: str | Opener
    scheme: str | None = None
    accepts: str | Callable[[Path], bool] | None = None
    priority: int = 0

    def __post_init__(self) -> None:
        if (self.scheme is None) == (self.accepts is None):
            raise ValueError(f"data source kind {self.name!r}: give a scheme or a path test, not both")


SOURCE_KINDS: tuple[SourceKind, ...] = (
    SourceKind("shapes", "lakd.data.shapes.dataset:open_shapes", scheme="shapes"),
    SourceKind("wds", "lakd.data.readers.wds:open_webdataset", scheme="wds"),
    SourceKind("tv", "lakd.data.readers.tv:open_torchvision", scheme="tv"),
    # path kinds: a shapes folder also holds captions.csv, so it is tested before csv
    SourceKind(
        "shapes-folder",
        "lakd.data.shapes.export:open_shapes_folder",
        accepts="lakd.data.shapes.export:is_shapes_folder",
        priority=30,
    ),
    SourceKind("csv", "lakd.data.readers.csvfile:open_csv", accepts="lakd.data.readers.csvfile:is_csv", priority=20),
    SourceKind("coco", "lakd.data.readers.coco:open_coco", accepts="lakd.data.readers.coco:is_json", priority=20),
    SourceKind(
        "image-folder",
        "lakd.data.readers.imagefolder:open_image_folder",
        accepts="lakd.data.readers.imagefolder:looks_like_image_folder",
        priority=10,
    ),
)
_KINDS: dict[str, SourceKind] = {}


def register_source(kind: SourceKind) -> SourceKind:
    """Add a kind of data source (the shipped ones are :data:`SOURCE_KINDS`); a name or scheme that
    is already taken is refused."""
    if kind.name in _KINDS:
        raise ValueError(f"data source kind {kind.name!r} is already registered")
    if kind.scheme is not None and kind.scheme in schemes():
        raise ValueError(f"data scheme {kind.scheme!r} is already registered")
    _KINDS[kind.name] = kind
    return kind


def unregister_source(name: str) -> None:
    """Remove a kind added by :func:`register_source` (tests); unknown names are ignored."""
    _KINDS.pop(name, None)


def schemes() -> dict[str, SourceKind]:
    """Scheme kinds by scheme."""
    return {kind.scheme: kind for kind in _KINDS.values() if kind.scheme is not None}


def path_kinds() -> list[SourceKind]:
    """Path kinds, highest priority first (ties in registration order)."""
    return sorted((k for k in _KINDS.values() if k.accepts is not None), key=lambda k: -k.priority)


for _kind in SOURCE_KINDS:
    register_source(_kind)


def _resolve(ref: str | Callable) -> Callable:
    if callable(ref):
        return ref
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class DataSpec:
    """A parsed data spec: ``scheme`` (None for a plain path), ``target`` and the ``query`` options."""

    text: str
    scheme: str | None
    target: str
    query: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> DataSpec:
        """Split ``[SCHEME:]TARGET[?query]`` (a repeated query key keeps its last value)."""
        text = str(text)
        scheme, rest = None, text
        head, sep, tail = text.partition(":")
        if sep and head in schemes():
            scheme, rest = head, tail
        query: dict[str, str] = {}
        if "?" in rest:
            rest, _, qs = rest.partition("?")
            for key, values in urllib.parse.parse_qs(qs, keep_blank_values=True).items():
                query[key] = values[-1]
        return cls(text, scheme, rest, query)

    def __str__(self) -> str:
        return self.text

    def files(self) -> list[Path]:
        """Files and folders the spec reads that exist: the target path (a webdataset's folder) and
        its ``root`` option."""
        candidates = [Path(self.query["root"])] if self.query.get("root") else []
        if self.scheme is None:
            candidates.append(Path(self.target))
        elif self.scheme == "wds":
            candidates.append(Path(self.target).parent)
        return [p for p in candidates if str(p) not in ("", ".") and p.exists()]


def with_query(spec: str, options: Mapping[str, str | None]) -> str:
    """``spec`` with the ``key=value`` pairs of ``options`` added to its query (None values are
    skipped). A key the spec already sets to another value is a LakdError: the spec and the flag
    that fills it disagree."""
    parsed = DataSpec.parse(spec)
    added = {key: str(value) for key, value in options.items() if value is not None}
    for key, value in added.items():
        if key in parsed.query and parsed.query[key] != value:
            raise LakdError(
                f"{spec}: option {key}={parsed.query[key]!r} in the spec, but {value!r} given as a flag"
            )
    new = {key: value for key, value in added.items() if key not in parsed.query}
    if not new:
        return spec
    joiner = "&" if "?" in spec else "?"
    return spec + joiner + urllib.parse.urlencode(new)


def open_source(spec: str, options: SourceOptions | None = None):
    """Resolve a data spec to a map-style dataset of :class:`~lakd.data.base.Item`.

    Raises :class:`LakdError` naming the spec when it matches no known kind.
    """
    options = options or SourceOptions()
    parsed = DataSpec.parse(spec)
    query = dict(parsed.query)
    if parsed.scheme is not None:
        return _resolve(schemes()[parsed.scheme].opener)(parsed.target, query, options)
    path = Path(parsed.target)
    if not path.exists():
        known = ", ".join(f"{s}:" for s in sorted(schemes()))
        raise LakdError(f"{spec}: no such file or folder, and not a known data scheme ({known})")
    kinds = path_kinds()
    for kind in kinds:
        if _resolve(kind.accepts)(path):
            return _resolve(kind.opener)(str(path), query, options)
    names = ", ".join(kind.name for kind in kinds)
    raise LakdError(f"{spec}: not a recognised data source (expected one of: {names})")


def source_ids(source: object) -> list[str] | None:
    """Item ids of a data source when it lists them without reading images (an ``ids`` sequence, as the
    file readers keep, or an ``item_id(i)`` method, as the shapes world has); None otherwise."""
    ids = getattr(source, "ids", None)
    if isinstance(ids, Sequence) and not isinstance(ids, str) and len(ids) == len(source):
        return [str(item_id) for item_id in ids]
    item_id = getattr(source, "item_id", None)
    if callable(item_id):
        return [item_id(i) for i in range(len(source))]
    return None
