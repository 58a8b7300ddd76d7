"""A cache of embedding stores, each kept in its own folder with the key it was made from.

:func:`cached_store` returns the store in a folder when it is complete and its recorded identity
(``cache-key.json``) equals the one asked for; resumes it when it was interrupted (the builder
keeps finished shards); rebuilds it otherwise. A build that fails before writing any of the store
leaves no trace (no key, no folder it created). :func:`cache_folder_name` names the folder of a key
by a readable slug plus a hash. What the identity holds (e.g. a model's files' sizes and modification
times, so a retrained checkpoint is embedded again) is up to the caller
(:func:`lakd.models.embed.cached_embed`).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import re
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from lakd.data.store import CLASSES_NAME, META_NAME, EmbeddingStore
from lakd.data.store.format import SHARD_GLOB
from lakd.errors import LakdError
from lakd.io import write_json

KEY_FILE = "cache-key.json"


def cache_folder_name(key: Mapping[str, Any]) -> str:
    """``<model>__<data>-<hash>`` of a key with ``model`` and ``data`` entries (unsafe characters
    replaced; the hash of the whole key keeps names distinct)."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode("utf-8")).hexdigest()[:12]
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{key.get('model')}__{key.get('data')}").strip("._")[:80]
    return f"{slug}-{digest}"


def read_identity(folder: Path) -> dict | None:
    """The identity recorded in a cache folder, None when absent or unreadable."""
    try:
        return json.loads((folder / KEY_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None


def cached_store(
    folder: Path,
    identity: Mapping[str, Any],
    build: Callable[[bool], EmbeddingStore],
    *,
    allow_nonfinite: bool = False,
) -> EmbeddingStore:
    """The store in ``folder`` made from ``identity``: reused when complete, else ``build(overwrite)``
    (``overwrite`` True when the folder holds a store of another identity, which is replaced). A reused
    store is opened with ``allow_nonfinite``. Processes sharing the cache take turns on a folder
    (a lock file beside it): the second waits for the first's store and reuses it."""
    created = [p for p in (folder, *folder.parents) if not p.exists()]
    lock_path = folder.parent / f".{folder.name}.lock"
    with _turn(lock_path):
        identity = json.loads(json.dumps(identity))  # plain JSON values, as read back
        same = read_identity(folder) == identity
        if same:
            try:
                return EmbeddingStore(folder, allow_nonfinite=allow_nonfinite)
            except LakdError:
                pass  # interrupted: build() resumes from the finished shards
        overwrite = folder.exists() and not same
        if overwrite:
            (folder / CLASSES_NAME).unlink(missing_ok=True)
        write_json(folder / KEY_FILE, identity)
        try:
            return build(overwrite)
        except BaseException:
            _forget(folder, created, lock_path)
            raise


@contextlib.contextmanager
def _turn(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``lock_path`` (made with its folder); a cache that cannot be
    written (read-only, shared) is read without one."""
    try:
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        lock = open(lock_path, "a")  # noqa: SIM115 (held for the block below)
    except OSError:
        yield
        return
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _forget(folder: Path, created: list[Path], lock_path: Path) -> None:
    """After a build that failed before writing any of the store (a model that does not load, data
    that does not open), remove the key it was given, its lock file and the folders made for it, so
    a failed run leaves nothing behind; a store that was begun keeps its key, so the next run resumes it."""
    if (folder / META_NAME).exists() or any(folder.glob(SHARD_GLOB)):
        return
    (folder / KEY_FILE).unlink(missing_ok=True)
    lock_path.unlink(missing_ok=True)
    for path in created:  # innermost first; each only when it is empty
        try:
            path.rmdir()
        except OSError:
            return
