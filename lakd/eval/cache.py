"""Embeddings computed once per model and data: an embedding store in a cache folder.

``cached_store`` keeps one store per (model spec, arch, data spec, source options) under the cache
folder, named by a readable slug plus a hash. ``eval-cache.json`` in the store records that key and
a fingerprint of the model files (size and modification time), so a retrained checkpoint at the
same path is embedded again, while an interrupted run resumes (``lakd embed`` keeps finished
shards). ``ensure_class_prompts`` adds the class-prompt embeddings beside the store, re-embedding
them only when the class names or templates change.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import asdict
from pathlib import Path
from typing import Any

from lakd.data import SourceOptions
from lakd.data.store import CLASSES_NAME, ClassPrompts, EmbeddingStore, write_class_prompts
from lakd.embed import EmbedConfig, embed
from lakd.errors import LakdError
from lakd.eval.zeroshot import embed_class_prompts
from lakd.io import write_json
from lakd.models import ModelSpec, load_model

CACHE_FILE = "eval-cache.json"


def cache_identity(
    model: str, data: str, *, arch: str | None = None, source_options: SourceOptions | None = None
) -> dict[str, Any]:
    """What a cached store was made from, including the model files' size and mtime."""
    return {
        "model": model,
        "arch": arch,
        "data": data,
        "source_options": asdict(source_options or SourceOptions()),
        "model_files": {str(p): [p.stat().st_size, p.stat().st_mtime_ns] for p in ModelSpec.parse(model).files()},
    }


def cache_folder_name(model: str, data: str, arch: str | None, source_options: SourceOptions) -> str:
    """``<model>__<data>-<hash>`` with unsafe characters replaced (the hash keeps names distinct)."""
    key = json.dumps([model, arch, data, asdict(source_options)], sort_keys=True)
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:12]
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{model}__{data}").strip("._")[:80]
    return f"{slug}-{digest}"


def _read_identity(path: Path) -> dict | None:
    try:
        return json.loads((path / CACHE_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None


def cached_store(
    model: str,
    data: str,
    cache_root: str | os.PathLike,
    *,
    arch: str | None = None,
    source_options: SourceOptions | None = None,
    batch_size: int = 64,
    device: str = "cpu",
) -> EmbeddingStore:
    """The store of ``model`` on ``data`` under ``cache_root``: reused when complete and made from the
    same model files, resumed when interrupted, rebuilt otherwise."""
    source_options = source_options or SourceOptions()
    path = Path(cache_root) / cache_folder_name(model, data, arch, source_options)
    identity = cache_identity(model, data, arch=arch, source_options=source_options)
    same = _read_identity(path) == identity
    if same:
        try:
            return EmbeddingStore(path)
        except LakdError:
            pass  # interrupted: embed() below resumes from the finished shards
    overwrite = path.exists() and not same
    if overwrite:
        (path / CLASSES_NAME).unlink(missing_ok=True)
    write_json(path / CACHE_FILE, identity)
    cfg = EmbedConfig(
        model=model,
        data=data,
        out=str(path),
        batch_size=batch_size,
        device=device,
        arch=arch,
        overwrite=overwrite,
        source_options=source_options,
    )
    return embed(cfg)


def ensure_class_prompts(
    store: EmbeddingStore,
    templates: list[str],
    model: str,
    *,
    arch: str | None = None,
    batch_size: int = 256,
    device: str = "cpu",
) -> ClassPrompts:
    """The store's class prompts for ``templates``, embedded with ``model`` and written beside the store
    unless ones with the same class names and templates are already there."""
    classnames = store.meta.get("classnames")
    if not classnames:
        raise LakdError(f"{store.path}: the data has no class names, so there are no class prompts")
    try:
        prompts = store.class_prompts()
    except LakdError:
        prompts = None  # a damaged cache file is rebuilt below
    if prompts is not None and prompts.classnames == classnames and prompts.templates == list(templates):
        return prompts
    net, _, tokenizer = load_model(model, device=device, arch=arch)
    embeddings = embed_class_prompts(
        net, tokenizer, classnames, list(templates), batch_size=batch_size, device=device
    )
    prompts = ClassPrompts(embeddings, list(classnames), list(templates), model)
    write_class_prompts(store.path, prompts)
    return prompts
