"""The trainer's configuration: one YAML file -> :class:`TrainConfig` (nested dataclasses), read by
the strict loader of :mod:`lakd.config` (unknown keys with a "did you mean", wrong types naming the
key, dotted overrides such as ``optim.lr=3e-4 teacher.kind=cached``).

Sections, in the order of a config file: ``data`` (training data and loader), ``student`` (the model
being trained), ``teacher`` (none, a cached embedding store, or an online model), ``recipe`` (a
shipped recipe name or a mapping of loss terms, :class:`lakd.distill.Recipe`), ``optim``,
``schedule``, ``precision``, ``eval`` (the fixed evaluation sets), ``track`` (geometry tracked at
every evaluation), ``checkpoint``, and ``out``, ``seed``, ``log_every``, ``on_nan``, ``device``.
Every field and its default: docs/training.md.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from lakd.config import load_config
from lakd.errors import LakdError

GEOMETRY_GROUPS = ("ellipsoid", "shell", "conformity", "whitening", "normality", "gap", "alignment")


def _positive(section: str, **values: int | float | None) -> None:
    for name, value in values.items():
        if value is not None and value <= 0:
            key = f"{section}.{name}" if section else name
            raise LakdError(f"{key}: must be positive, got {value}")


@dataclass
class DataConfig:
    """Training data. ``train``: a data spec (``shapes:train?n=4096``, ``captions.csv?root=DIR``, ...).
    ``batch_size``: the global batch of one optimizer step (split over ranks and ``optim.accum``).
    ``caption``: which caption of an item a step uses: ``random`` (drawn per epoch and item, seeded)
    or ``first``. ``augment``: ``crop`` applies a seeded random resized crop (scale 0.8-1) to the
    student's images before its preprocessing (a teacher must then see the same view: online only).
    ``workers``: DataLoader worker processes (persistent, pinned memory on CUDA). ``cache``: keep
    every training item in memory after its first read (a rendered shapes scene, a decoded image),
    for data that fits in RAM and is read for several epochs; each worker keeps its own."""

    train: str = "shapes:train?n=4096"
    batch_size: int = 64
    workers: int = 0
    caption: Literal["random", "first"] = "random"
    augment: Literal["none", "crop"] = "none"
    cache: bool = False
    download: bool = False
    allow_outside_root: bool = False

    def __post_init__(self) -> None:
        _positive("data", batch_size=self.batch_size)
        if self.workers < 0:
            raise LakdError(f"data.workers: must be >= 0, got {self.workers}")


@dataclass
class StudentConfig:
    """The model trained: any model spec (``lakd:tiny-vit``, ``open_clip:ARCH`` random init, a
    checkpoint to continue from; ``arch`` for a bare open_clip checkpoint). Random-init specs draw
    their weights from the run's ``seed``. ``mask_ratio``: CLIP-KD's (Yang et al., CVPR 2024)
    masked feature distillation in a single pass: the student's training forward encodes a masked
    view of the images (patch dropout for ViT towers, pixel cells otherwise; seeded by the run's
    seed, rank and micro-batch) and every recipe term sees those features; evaluation and the
    teacher see the full images (docs/losses.md)."""

    model: str = "lakd:tiny-vit"
    arch: str | None = None
    mask_ratio: float | None = None

    def __post_init__(self) -> None:
        if self.mask_ratio is not None and not 0.0 < self.mask_ratio < 1.0:
            raise LakdError(f"student.mask_ratio: must be in (0, 1), got {self.mask_ratio}")


@dataclass
class TeacherConfig:
    """``kind``: ``none`` (plain CLIP training), ``cached`` (``store``: an embedding store of the
    training data from ``lakd embed``, joined by item id; no teacher forward per step) or ``online``
    (``model``: a model spec, frozen, in eval mode). ``model`` with a cached teacher is optional: it
    embeds the evaluation set (the teacher's reference geometry) and class prompts. ``logit_scale``:
    the teacher's (exp'd) logit scale for ``crd`` / ``gd`` when the store does not record it.
    ``whitening``: statistics from ``lakd whiten fit`` (``NAME.safetensors``) for ``whitened_fd``;
    by default fitted from the cached store at start. ``eval_store``: the teacher's embeddings of the
    evaluation set, instead of embedding it with ``model``."""

    kind: Literal["none", "cached", "online"] = "none"
    store: str | None = None
    model: str | None = None
    arch: str | None = None
    logit_scale: float | None = None
    whitening: str | None = None
    eval_store: str | None = None

    def __post_init__(self) -> None:
        if self.kind == "cached" and not self.store:
            raise LakdError("teacher.store: a cached teacher needs the embedding store of the training data")
        if self.kind == "online" and not self.model:
            raise LakdError("teacher.model: an online teacher needs a model spec")
        if self.kind == "none" and (self.store or self.model):
            raise LakdError("teacher.kind: is none, but teacher.store / teacher.model are set (use cached or online)")
        _positive("teacher", logit_scale=self.logit_scale)


@dataclass
class OptimConfig:
    """AdamW with CLIP's parameter groups (no weight decay on gains, biases, the logit scale and
    embeddings). ``accum``: micro-batches per step (each rank's batch split into ``accum`` parts,
    gradients summed; contrastive terms then see micro-batches). ``grad_clip``: max gradient norm
    (None: no clipping)."""

    lr: float = 5e-4
    weight_decay: float = 0.2
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-6
    accum: int = 1
    grad_clip: float | None = 1.0

    def __post_init__(self) -> None:
        _positive("optim", lr=self.lr, eps=self.eps, accum=self.accum, grad_clip=self.grad_clip)
        if self.weight_decay < 0:
            raise LakdError(f"optim.weight_decay: must be >= 0, got {self.weight_decay}")
        if not all(0 <= b < 1 for b in self.betas):
            raise LakdError(f"optim.betas: must be in [0, 1), got {list(self.betas)}")


@dataclass
class ScheduleConfig:
    """``steps`` optimizer steps; linear warmup over ``warmup`` steps, then ``cosine`` decay to
    ``min_lr_ratio`` * lr at the last step, or ``constant``."""

    steps: int = 1000
    warmup: int = 100
    kind: Literal["cosine", "constant"] = "cosine"
    min_lr_ratio: float = 0.0

    def __post_init__(self) -> None:
        _positive("schedule", steps=self.steps)
        if not 0 <= self.warmup <= self.steps:
            raise LakdError(f"schedule.warmup: must be in [0, steps={self.steps}], got {self.warmup}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise LakdError(f"schedule.min_lr_ratio: must be in [0, 1], got {self.min_lr_ratio}")


@dataclass
class PrecisionConfig:
    """``amp``: ``auto`` (bf16 autocast on CUDA, fp32 on CPU), ``fp32`` or ``bf16``. ``compile``:
    wrap the training task in ``torch.compile``. ``threads``: torch's CPU threads (None: torch's
    default)."""

    amp: Literal["auto", "fp32", "bf16"] = "auto"
    compile: bool = False
    threads: int | None = None

    def __post_init__(self) -> None:
        _positive("precision", threads=self.threads)


@dataclass
class EvalConfig:
    """The fixed evaluation sets, evaluated every ``every`` steps and at the end by rank 0: ``data``
    (retrieval R@1/R@5, zero-shot top-1 when it has labels, and the tracked geometry; None: none),
    ``probes`` (a shapes-world probe set; ``auto``: ``shapes:probes?n=200`` when the training data
    is the shapes world, none otherwise) and ``extra``: more sets by name, for their tasks only,
    their keys prefixed by the name (e.g. ``cifar10: tv:CIFAR10?root=data&train=false`` gives
    ``cifar10/zeroshot/acc1``)."""

    data: str | None = "shapes:val?n=512"
    probes: str | None = "auto"
    extra: dict[str, str] = field(default_factory=dict)
    every: int = 250
    batch_size: int = 256

    def __post_init__(self) -> None:
        _positive("eval", every=self.every, batch_size=self.batch_size)
        bad = [name for name in self.extra if not name or "/" in name or name in ("retrieval", "zeroshot", "probes", "geometry")]
        if bad:
            raise LakdError(f"eval.extra: {bad[0]!r} cannot name a set (no '/', not a task or 'geometry')")


@dataclass
class TrackConfig:
    """Geometry of the student on ``eval.data`` at every evaluation (:func:`lakd.analysis.analyze`:
    ``groups`` of metrics, ``sample_size`` rows for the sampled ones), with CKA / k-NN overlap to the
    teacher's embeddings of the same items when there is a teacher. ``reference_cache``: a folder that
    keeps the teacher's reference measurement (its embeddings of ``eval.data`` and its metrics) for
    later runs with the same teacher files and evaluation settings (:mod:`lakd.train.reference`);
    None: every run measures the teacher."""

    geometry: bool = True
    groups: tuple[str, ...] = GEOMETRY_GROUPS
    sample_size: int = 2000
    reference_cache: str | None = None

    def __post_init__(self) -> None:
        _positive("track", sample_size=self.sample_size)


@dataclass
class CheckpointConfig:
    """A checkpoint every ``every`` steps and at the end; keep the last ``keep_last`` and the best by
    ``best_metric`` (a key of the eval lines of metrics.jsonl, ``max`` or ``min`` by ``best_mode``;
    None: no best)."""

    every: int = 500
    keep_last: int = 2
    best_metric: str | None = "retrieval/text_retrieval_recall@1"
    best_mode: Literal["max", "min"] = "max"

    def __post_init__(self) -> None:
        _positive("checkpoint", every=self.every, keep_last=self.keep_last)


@dataclass
class TrainConfig:
    """Everything a run needs (module docstring); ``recipe`` is a shipped name or a mapping of terms."""

    data: DataConfig = field(default_factory=DataConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    recipe: str | dict[str, Any] = "none"
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    precision: PrecisionConfig = field(default_factory=PrecisionConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    track: TrackConfig = field(default_factory=TrackConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    out: str | None = None
    seed: int = 0
    log_every: int = 10
    on_nan: Literal["stop", "skip"] = "stop"
    device: str = "cpu"

    def __post_init__(self) -> None:
        _positive("", log_every=self.log_every)
        if self.seed < 0:
            raise LakdError(f"seed: must be >= 0, got {self.seed}")
        unknown = sorted(set(self.track.groups) - set(GEOMETRY_GROUPS))
        if unknown:
            raise LakdError(f"track.groups: unknown {', '.join(unknown)} (choose from {', '.join(GEOMETRY_GROUPS)})")


def load_train_config(
    path: str | os.PathLike | None = None, overrides: Sequence[str] = (), mapping: dict | None = None
) -> TrainConfig:
    """A :class:`TrainConfig` from a YAML file (or a mapping) and dotted ``overrides``."""
    return load_config(TrainConfig, path=path, overrides=overrides, mapping=mapping)
