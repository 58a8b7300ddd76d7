"""One string names any data: ``open_source(spec)`` resolves it to a dataset of items.

Spec forms (DESIGN.md): ``shapes:train|val|test|probes[?n=N&seed=S...]``, a folder written by
``lakd data shapes``, a CSV file (open_clip convention), a COCO captions JSON (with
``image_root``), an image folder (one subfolder per class), ``wds:PATTERN`` (webdataset tar
shards) and ``tv:NAME?root=DIR`` (torchvision data sets; no download unless ``download``).

Scheme-prefixed specs are looked up in ``SCHEMES``; plain paths are matched by ``PATH_KINDS``
in order (first predicate that accepts the path wins). Readers register themselves with
:func:`register_scheme` / :func:`register_path_kind`.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lakd.data.base import SourceOptions
from lakd.errors import LakdError

Opener = Callable[[str, dict[str, str], SourceOptions], Any]
SCHEMES: dict[str, Opener] = {}
PATH_KINDS: list[tuple[str, Callable[[Path], bool], Opener]] = []


def register_scheme(name: str) -> Callable[[Opener], Opener]:
    """Register ``opener(rest, query, options)`` for specs written ``name:rest[?query]``."""

    def deco(fn: Opener) -> Opener:
        SCHEMES[name] = fn
        return fn

    return deco


def register_path_kind(name: str, accepts: Callable[[Path], bool]) -> Callable[[Opener], Opener]:
    """Register ``opener(path, query, options)`` for plain paths that ``accepts(path)``."""

    def deco(fn: Opener) -> Opener:
        PATH_KINDS.append((name, accepts, fn))
        return fn

    return deco


def split_spec(spec: str) -> tuple[str | None, str, dict[str, str]]:
    """``"shapes:val?n=10"`` -> ``("shapes", "val", {"n": "10"})``; plain paths get scheme None."""
    scheme = None
    rest = spec
    head, sep, tail = spec.partition(":")
    if sep and head in SCHEMES:
        scheme, rest = head, tail
    query: dict[str, str] = {}
    if "?" in rest:
        rest, _, qs = rest.partition("?")
        for key, values in urllib.parse.parse_qs(qs, keep_blank_values=True, strict_parsing=False).items():
            query[key] = values[-1]
    return scheme, rest, query


def open_source(spec: str, options: SourceOptions | None = None):
    """Resolve a data spec to a map-style dataset of :class:`~lakd.data.base.Item`.

    Raises :class:`LakdError` naming the spec when it matches no known kind.
    """
    _load_readers()
    options = options or SourceOptions()
    scheme, rest, query = split_spec(spec)
    if scheme is not None:
        return SCHEMES[scheme](rest, query, options)
    path = Path(rest)
    if not path.exists():
        known = ", ".join(f"{s}:" for s in sorted(SCHEMES))
        raise LakdError(f"{spec}: no such file or folder, and not a known data scheme ({known})")
    for _name, accepts, opener in PATH_KINDS:
        if accepts(path):
            return opener(str(path), query, options)
    kinds = ", ".join(name for name, _, _ in PATH_KINDS)
    raise LakdError(f"{spec}: not a recognised data source (expected one of: {kinds})")


def _load_readers() -> None:
    """Import the reader modules so that they register themselves (shapes first: its folder kind
    is the most specific path kind)."""
    import lakd.data.shapes  # noqa: F401, I001
    import lakd.data.readers  # noqa: F401
