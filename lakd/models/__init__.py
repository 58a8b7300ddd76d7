"""Model specs -> open_clip models; lakd's tiny configs; safe checkpoint I/O.

- :mod:`~lakd.models.specs`: :class:`ModelSpec`, the one parser of every model-spec form (light:
  no torch, no open_clip).
- :mod:`~lakd.models.factory`: :func:`load_model` (spec -> model, preprocess, tokenizer).
- :mod:`~lakd.models.checkpoint` / :mod:`~lakd.models.safe_load`: checkpoints without unpickling code.
- :mod:`~lakd.models.build`: open_clip models from configs, tokenizers, lakd's shipped configs.
- :mod:`~lakd.models.encode`: the encode loop (images and captions -> raw features).
- :mod:`~lakd.models.tokens`: patch and text token features in the joint space (dense alignment).

Names are imported on first use, so ``lakd.models.specs`` stays cheap to import. The shipped configs
are registered with open_clip as ``lakd-NAME`` by :func:`register_lakd_configs`, which every
function that builds a model calls.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ModelSpec": "lakd.models.specs",
    "list_lakd_configs": "lakd.models.specs",
    "load_model": "lakd.models.factory",
    "register_lakd_configs": "lakd.models.build",
    "export_local_dir": "lakd.models.checkpoint",
    "load_checkpoint": "lakd.models.checkpoint",
    "save_checkpoint": "lakd.models.checkpoint",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'lakd.models' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
