"""What a run measures at every evaluation, on fixed sets: the tasks of :mod:`lakd.eval` (retrieval
R@1/R@5, zero-shot top-1 when the data has labels, compositional probes on a probe set) and the
student's geometry from :func:`lakd.analysis.analyze` (offset ratio, modality gap, conformity fit,
thin shell, effective rank, normality of whitened coordinates, and CKA / k-NN overlap to the
teacher's embeddings of the same items). The teacher's own values are measured once, for reference.

Keys are ``<task>/<metric>`` (e.g. ``retrieval/text_retrieval_recall@1``, ``zeroshot/acc1``,
``probes/acc_binding``), ``<extra set>/<task>/<metric>`` for the sets of ``eval.extra``, and
``geometry/<name>`` (:meth:`lakd.analysis.GeometryResult.scalars`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lakd.analysis import AnalysisConfig, analyze
from lakd.data import SourceOptions, open_source
from lakd.data.sources import DataSpec
from lakd.data.store import ClassPrompts, EmbeddingStore
from lakd.errors import LakdError
from lakd.eval.inputs import EvalInputs
from lakd.eval.probes import probe_conditions
from lakd.eval.tasks import TASKS
from lakd.eval.templates import source_templates
from lakd.eval.truth import Truth, source_truth
from lakd.eval.zeroshot import embed_class_prompts
from lakd.models.encode import Encoded, collate_source, encode_batches
from lakd.train.config import TrainConfig
from lakd.train.reference import (
    TeacherReference,
    read_reference,
    reference_file,
    reference_identity,
    reference_key,
    write_reference,
)

PROBES_FOR_SHAPES = "shapes:probes?n=200"
# preprocessed images of a fixed set are kept in memory up to this size, else re-read at each evaluation
MAX_CACHED_BYTES = 1 << 30


@dataclass
class Encoder:
    """A model with its preprocessing and tokenizer, as :func:`lakd.models.load_model` returns them."""

    model: torch.nn.Module
    preprocess: Any
    tokenizer: Any


class FixedSet:
    """One evaluation set: its source, class names, probe conditions, and its collated batches for
    each preprocessing (kept when small, :data:`MAX_CACHED_BYTES`)."""

    def __init__(self, spec: str, options: SourceOptions, batch_size: int):
        self.spec, self.batch_size = spec, batch_size
        self.source = open_source(spec, options)
        if len(self.source) == 0:
            raise LakdError(f"{spec}: the evaluation data has no items")
        self.classnames = list(getattr(self.source, "classnames", None) or []) or None
        self.conditions = probe_conditions(self.source)
        self._batches: dict[int, list] = {}
        self._truth: tuple[tuple[str, ...], Truth | None] | None = None

    def batches(self, encoder: Encoder) -> list:
        key = id(encoder.preprocess)
        if key in self._batches:
            return self._batches[key]
        batches = collate_source(self.source, encoder.preprocess, encoder.tokenizer, self.batch_size)
        size = sum(b.images.numel() * b.images.element_size() for b in batches if b.images is not None)
        if size <= MAX_CACHED_BYTES:
            self._batches[key] = batches
        return batches

    def truth(self, encoded: Encoded) -> Truth | None:
        """What is true of the set's images (:mod:`lakd.eval.truth`), computed once."""
        key = tuple(encoded.ids)
        if self._truth is None or self._truth[0] != key:
            self._truth = (key, source_truth(self.source, encoded.ids, encoded.captions))
        return self._truth[1]

    def inputs(self, encoded: Encoded, prompts: ClassPrompts | None, model: str) -> EvalInputs:
        conditions = None
        if self.conditions is not None:
            conditions = [self.conditions[item_id] for item_id in encoded.ids]
        return EvalInputs(
            truth=self.truth(encoded),
            model=model,
            source=self.spec,
            path=Path(self.spec),
            image=encoded.image,
            text=encoded.text,
            text_item=encoded.text_item,
            ids=encoded.ids,
            captions=encoded.captions,
            labels=encoded.labels,
            classnames=self.classnames,
            class_prompts=prompts,
            conditions=conditions,
        )


def paired_text(encoded: Encoded) -> torch.Tensor:
    """Each item's first caption feature [N, d] (items without a caption are not in a fixed set)."""
    first = torch.full((len(encoded.ids),), len(encoded.captions), dtype=torch.int64)
    first = first.scatter_reduce(0, encoded.text_item, torch.arange(len(encoded.captions)), reduce="amin")
    if bool((first == len(encoded.captions)).any()):
        raise LakdError("evaluation set: every item needs a caption for the geometry of its text")
    return encoded.text[first]


def task_metrics(fixed: FixedSet, encoded: Encoded, encoder: Encoder, device: str, name: str) -> dict[str, float]:
    """``<task>/<metric>`` of every task of :mod:`lakd.eval` that applies to the set."""
    prompts = None
    if fixed.classnames and encoded.labels is not None and fixed.conditions is None:
        templates = source_templates(fixed.source)
        embeddings = embed_class_prompts(
            encoder.model, encoder.tokenizer, fixed.classnames, templates, device=device
        )
        prompts = ClassPrompts(embeddings, fixed.classnames, templates, name)
    inputs = fixed.inputs(encoded, prompts, name)
    metrics = {}
    for task in TASKS.values():
        if task.in_all(inputs):
            result = task.run(inputs, None)
            metrics.update({f"{task.name}/{key}": value for key, value in result.metrics.items()})
    return metrics


class Tracker:
    """Evaluates a student on the fixed sets of ``cfg.eval`` and measures its geometry (module
    docstring); ``teacher`` (an :class:`Encoder`) or ``teacher_store`` (its embeddings of
    ``cfg.eval.data``) give the reference; with ``cfg.track.reference_cache`` the teacher's is read
    from there, or measured and kept there (:mod:`lakd.train.reference`; ``echo`` says when it
    cannot be kept)."""

    def __init__(
        self,
        cfg: TrainConfig,
        device: str,
        *,
        teacher: Encoder | None = None,
        teacher_store: str | None = None,
        teacher_name: str = "teacher",
        echo: Callable[[str], None] = print,
    ):
        self.cfg, self.device = cfg, device
        options = SourceOptions(download=cfg.data.download, allow_outside_root=cfg.data.allow_outside_root)
        self.eval = FixedSet(cfg.eval.data, options, cfg.eval.batch_size) if cfg.eval.data else None
        probes = cfg.eval.probes
        if probes == "auto":
            probes = PROBES_FOR_SHAPES if DataSpec.parse(cfg.data.train).scheme == "shapes" else None
        self.probes = FixedSet(probes, options, cfg.eval.batch_size) if probes else None
        self.extra = {name: FixedSet(spec, options, cfg.eval.batch_size) for name, spec in cfg.eval.extra.items()}
        self.analysis = AnalysisConfig(
            groups=tuple(cfg.track.groups), sample_size=cfg.track.sample_size, seed=cfg.seed
        ).validate()
        self.teacher, self.teacher_name = teacher, teacher_name
        self.reference: dict[str, torch.Tensor] | None = None
        self._teacher_encoded: Encoded | None = None
        self._teacher_metrics: dict[str, float | None] | None = None
        self._keep: tuple[Path, dict[str, Any]] | None = None  # where to keep the teacher's reference
        self.echo = echo
        kept = None
        if teacher is not None and cfg.track.reference_cache and cfg.teacher.model:
            key = reference_key(cfg, device, probes)
            self._keep = (reference_file(cfg.track.reference_cache, key), reference_identity(key))
            kept = read_reference(*self._keep)
        if kept is not None:  # no teacher forward in this run
            if self.eval is not None and kept.image is not None:
                self.reference = {"image": kept.image, "text": kept.text}
                self.reference_ids, self.reference_path = kept.ids, str(self._keep[0])
            self._teacher_metrics, self._keep = kept.metrics, None
        elif self.eval is not None and teacher is not None:
            encoded = encode_batches(teacher.model, self.eval.batches(teacher), device)
            self.reference = {"image": encoded.image, "text": paired_text(encoded)}
            self._teacher_encoded = encoded
        elif self.eval is not None and teacher_store is not None:
            self.reference = self._load_reference(teacher_store)

    @property
    def empty(self) -> bool:
        """Whether there is nothing to evaluate (no evaluation data, no probe set)."""
        return self.eval is None and self.probes is None and not self.extra

    def _load_reference(self, path: str) -> dict[str, torch.Tensor]:
        store = EmbeddingStore(path)
        self.reference_ids = store.ids()
        self.reference_path = path
        return {"image": store.load("image"), "text": store.load("text_paired")}

    def _check_reference(self, encoded: Encoded) -> None:
        ids = getattr(self, "reference_ids", None)
        if ids is not None and ids != encoded.ids:
            raise LakdError(
                f"{self.reference_path}: its items are not those of eval.data {self.cfg.eval.data} "
                f"({len(ids)} vs {len(encoded.ids)} items, or another order); embed eval.data with the teacher"
            )

    def measure(
        self, encoder: Encoder, *, name: str, reference: bool = True, encoded_eval: Encoded | None = None
    ) -> dict[str, float | None]:
        """Every metric of ``encoder`` (``reference``: alignment to the teacher's embeddings;
        ``encoded_eval``: its embeddings of ``eval.data`` when already computed)."""
        was_training = encoder.model.training
        encoder.model.eval()
        metrics: dict[str, float | None] = {}
        try:
            if self.eval is not None:
                encoded = encoded_eval or encode_batches(encoder.model, self.eval.batches(encoder), self.device)
                metrics.update(task_metrics(self.eval, encoded, encoder, self.device, name))
                if self.cfg.track.geometry:
                    self._check_reference(encoded)
                    result = analyze(
                        {"image": encoded.image, "text": paired_text(encoded)},
                        reference=self.reference if reference else None,
                        config=self.analysis,
                    )
                    metrics.update(result.scalars(prefix="geometry/"))
            if self.probes is not None:
                encoded = encode_batches(encoder.model, self.probes.batches(encoder), self.device)
                metrics.update(task_metrics(self.probes, encoded, encoder, self.device, name))
            for set_name, fixed in self.extra.items():
                encoded = encode_batches(encoder.model, fixed.batches(encoder), self.device)
                found = task_metrics(fixed, encoded, encoder, self.device, name)
                metrics.update({f"{set_name}/{key}": value for key, value in found.items()})
        finally:
            encoder.model.train(was_training)
        return metrics

    def teacher_metrics(self) -> dict[str, float | None] | None:
        """The teacher's own values, for reference (None without a teacher model)."""
        if self.teacher is None:
            return None
        if self._teacher_metrics is None:
            self._teacher_metrics = self.measure(
                self.teacher, name=self.teacher_name, reference=False, encoded_eval=self._teacher_encoded
            )
            if self._keep is not None:
                self._keep_reference(*self._keep)
        return self._teacher_metrics

    def _keep_reference(self, path: Path, identity: dict[str, Any]) -> None:
        """Write the teacher's reference into the cache; a cache that cannot be written costs the
        next run a measurement, not this run: one line says so."""
        encoded = self._teacher_encoded
        reference = TeacherReference(  # write_reference moves the tensors to the CPU
            None if self.reference is None else self.reference["image"],
            None if self.reference is None else self.reference["text"],
            None if encoded is None else encoded.ids,
            self._teacher_metrics or {},
        )
        try:
            write_reference(path, identity, reference)
        except OSError as err:
            self.echo(f"track.reference_cache: cannot keep the teacher's reference at {path} ({err.strerror or err})")
