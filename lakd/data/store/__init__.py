"""The embedding store: raw CLIP embeddings of a data set, in shards, read back in chunks.

- :mod:`~lakd.data.store.format`: the files (``meta.json``, shards, class prompts) and their I/O.
- :mod:`~lakd.data.store.writer`: :class:`StoreWriter` (``lakd embed``) and :func:`write_store`.
- :mod:`~lakd.data.store.reader`: :class:`EmbeddingStore`.
- :mod:`~lakd.data.store.whitening`: whitening statistics fitted on a store, and a whitened copy.
"""

from lakd.data.store.format import (
    CLASSES_NAME,
    FORMAT,
    META_NAME,
    ClassPrompts,
    ShardData,
    StoreSpec,
    read_class_prompts,
    read_shard_header,
    shard_file_name,
    write_class_prompts,
)
from lakd.data.store.reader import EmbeddingStore
from lakd.data.store.writer import StoreWriter, write_store

__all__ = [
    "CLASSES_NAME",
    "FORMAT",
    "META_NAME",
    "ClassPrompts",
    "EmbeddingStore",
    "ShardData",
    "StoreSpec",
    "StoreWriter",
    "read_class_prompts",
    "read_shard_header",
    "shard_file_name",
    "write_class_prompts",
    "write_store",
]
