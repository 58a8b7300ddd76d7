"""The teacher's reference measurement, kept between runs (``track.reference_cache``).

A run with a teacher model measures the teacher once, for reference: its embeddings of ``eval.data``
(what CKA / k-NN overlap compare the student with) and its own metrics on every evaluation set (the
``teacher`` line of metrics.jsonl). Students distilled from one teacher on the same evaluation sets
would each measure the same thing again; with a cache folder the first run writes it and later runs
read it.

The file of a teacher and its evaluation settings (the teacher's spec, every evaluation set, the
tracked geometry, the seed, the device type) is
``<cache>/<teacher>__<eval data>-<hash>/reference.safetensors``. It is used only when its recorded
identity also matches the teacher's files (size and modification time, as
:func:`lakd.models.embed.cached_embed` checks them) and lakd's version; otherwise, or when it cannot
be read, the teacher is measured again and the file replaced. Contents: tensors ``image`` and
``text`` (each item's first caption) [N, d] when there is ``eval.data``; metadata ``identity``,
``ids`` and ``metrics`` (JSON; NaN written as null, as in metrics.jsonl).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from lakd import __version__
from lakd.data.cache import cache_folder_name
from lakd.eval.results import json_safe
from lakd.io import atomic_path, writing
from lakd.models.specs import ModelSpec
from lakd.train.config import TrainConfig

REFERENCE_FILE = "reference.safetensors"


@dataclass
class TeacherReference:
    """The teacher's embeddings of ``eval.data`` (``image``, ``text`` [N, d] on the CPU and their
    ``ids``; None without ``eval.data``) and its metrics on every set."""

    image: torch.Tensor | None
    text: torch.Tensor | None
    ids: list[str] | None
    metrics: dict[str, float | None]


def reference_key(cfg: TrainConfig, device: str, probes: str | None) -> dict[str, Any]:
    """The teacher and the evaluation settings a reference is measured with (``probes``: the
    resolved probe set); names its file."""
    return {
        "model": cfg.teacher.model,
        "arch": cfg.teacher.arch,
        "data": cfg.eval.data,
        "probes": probes,
        "extra": dict(sorted(cfg.eval.extra.items())),
        "batch_size": cfg.eval.batch_size,
        "track": dataclasses.asdict(cfg.track) | {"reference_cache": None},
        "source_options": {"download": cfg.data.download, "allow_outside_root": cfg.data.allow_outside_root},
        "seed": cfg.seed,
        "device": torch.device(device).type,
    }


def reference_identity(key: dict[str, Any]) -> dict[str, Any]:
    """``key`` with what must also match for a kept reference to be used: the teacher's files now
    and lakd's version (plain JSON values, as read back)."""
    files = ModelSpec.parse(key["model"]).fingerprint()
    return json.loads(json.dumps({**key, "model_files": files, "lakd": __version__}))


def reference_file(cache: str, key: dict[str, Any]) -> Path:
    """Where the reference of ``key`` is kept under the folder ``cache``."""
    return Path(cache).expanduser() / cache_folder_name(key) / REFERENCE_FILE


def read_reference(path: Path, identity: dict[str, Any]) -> TeacherReference | None:
    """The reference kept at ``path`` when it was measured with ``identity``; None when it is
    missing, unreadable, of another identity or not finite (it is then measured again)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if json.loads(meta.get("identity", "null")) != identity:
                return None
            tensors = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
        metrics, ids = json.loads(meta["metrics"]), json.loads(meta["ids"])
    except (OSError, SafetensorError, KeyError, ValueError):
        return None
    image, text = tensors.get("image"), tensors.get("text")
    if not isinstance(metrics, dict) or (image is None) != (text is None):
        return None
    if image is not None and not (
        isinstance(ids, list)
        and image.shape[0] == text.shape[0] == len(ids)
        and bool(torch.isfinite(image).all() and torch.isfinite(text).all())
    ):
        return None
    return TeacherReference(image, text, ids, metrics)


def write_reference(path: Path, identity: dict[str, Any], reference: TeacherReference) -> None:
    """Keep ``reference`` at ``path`` (written to a temporary file, then renamed)."""
    tensors = {}
    if reference.image is not None and reference.text is not None:
        tensors = {"image": reference.image.detach().cpu().contiguous(), "text": reference.text.detach().cpu().contiguous()}
    metadata = {
        "identity": json.dumps(identity, sort_keys=True),
        "ids": json.dumps(reference.ids),
        "metrics": json.dumps(json_safe(reference.metrics)),
    }
    with atomic_path(path) as tmp, writing(tmp):
        save_file(tensors, str(tmp), metadata=metadata)
