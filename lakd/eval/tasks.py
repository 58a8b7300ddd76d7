"""The evaluation tasks, in a registry: what each needs, when ``task="all"`` runs it, how it runs.

Each task reads :class:`~lakd.eval.inputs.EvalInputs` (and a teacher's, for teacher agreement:
the fraction of items where the student's top-1 pick equals the teacher's) and returns
clip_benchmark-named metrics plus details for the result file. A top-1 pick exists only when one
candidate holds the highest score alone (captions of identical text count as one); an item where
either model ties for its top-1 does not agree (:func:`~lakd.eval.ties.agreement`), so a collapsed
student agrees with nothing, not even a collapsed teacher, and a model agrees fully with itself.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from lakd.errors import LakdError
from lakd.eval.dense import DenseContext, run_dense_probes
from lakd.eval.inputs import EvalInputs
from lakd.eval.probes import probe_choices, probe_metrics
from lakd.eval.retrieval import retrieval_metrics, retrieval_ranks
from lakd.eval.ties import agreement, text_keys
from lakd.eval.zeroshot import zeroshot_classifier, zeroshot_metrics, zeroshot_predictions


@dataclass
class TaskResult:
    metrics: dict[str, float]
    details: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Task:
    """``name`` (lakd's), ``benchmark`` (clip_benchmark's task name), ``unavailable(inputs)`` -> why it
    cannot run (None if it can), ``in_all(inputs)`` -> whether ``task="all"`` runs it, ``run``.

    A task with ``run_model`` needs the model itself, not only its embeddings (token features):
    :func:`~lakd.eval.evaluate.evaluate` calls ``run_model(context)`` with a
    :class:`~lakd.eval.dense.DenseContext` instead of reading a store, and never runs it in ``all``.
    """

    name: str
    benchmark: str
    unavailable: Callable[[EvalInputs], str | None]
    in_all: Callable[[EvalInputs], bool]
    run: Callable[[EvalInputs, EvalInputs | None], TaskResult]
    run_model: Callable[[DenseContext], TaskResult] | None = None


TASKS: dict[str, Task] = {}


def register_task(task: Task) -> Task:
    TASKS[task.name] = task
    return task


# ---- zero-shot classification ----------------------------------------------------------------


def _zeroshot_unavailable(inputs: EvalInputs) -> str | None:
    if inputs.labels is None or not bool((inputs.labels >= 0).any()):
        return "has no class labels"
    if not inputs.classnames:
        return "has no class names"
    if inputs.class_prompts is None:
        return f"has no class-prompt embeddings ({inputs.path / 'classes.safetensors'} is missing)"
    return None


def _classifier(inputs: EvalInputs, who: str) -> torch.Tensor:
    prompts = inputs.class_prompts
    if prompts is None:
        raise LakdError(f"{inputs.path}: {who} has no class-prompt embeddings (classes.safetensors)")
    if prompts.classnames != inputs.classnames:
        raise LakdError(f"{inputs.path / 'classes.safetensors'}: class names differ from the store's")
    return zeroshot_classifier(prompts.embeddings).to(inputs.image.device)


def run_zeroshot(inputs: EvalInputs, teacher: EvalInputs | None) -> TaskResult:
    truth = inputs.truth.classes if inputs.truth is not None else None
    result = zeroshot_metrics(inputs.image, _classifier(inputs, "the model"), inputs.labels, truth)
    metrics = dict(result.metrics)
    if teacher is not None:
        labelled = inputs.labels >= 0
        picks = zeroshot_predictions(
            teacher.image[labelled.to(teacher.image.device)], _classifier(teacher, "the teacher")
        )
        metrics["teacher_agreement"] = agreement(result.predictions, picks)
    details = {
        "n_items": result.n_items,
        "n_classes": result.n_classes,
        "classnames": inputs.classnames,
        "templates": inputs.class_prompts.templates,
        "protocol": inputs.truth.protocol if inputs.truth is not None else "a prediction is correct when it is the label",
        "notes": result.notes,
    }
    return TaskResult(metrics, details)


# ---- retrieval -------------------------------------------------------------------------------


def _retrieval_unavailable(inputs: EvalInputs) -> str | None:
    if inputs.conditions is not None:
        return "is a probe set (its false captions would count as positives)"
    if inputs.text.shape[0] == 0:
        return "has no captions"
    return None


def _retrieval_in_all(inputs: EvalInputs) -> bool:
    """Captions that are more than one class prompt per class (classification data sets caption every
    image with its class prompt; retrieving those is not a retrieval benchmark)."""
    if _retrieval_unavailable(inputs) is not None:
        return False
    return not inputs.classnames or len(set(inputs.captions)) > len(inputs.classnames)


def run_retrieval(inputs: EvalInputs, teacher: EvalInputs | None) -> TaskResult:
    keys = text_keys(inputs.captions)
    truth = inputs.truth.captions if inputs.truth is not None else None
    ranks = retrieval_ranks(inputs.image, inputs.text, inputs.text_item, text_key=keys, truth=truth)
    metrics = retrieval_metrics(ranks)
    if teacher is not None:
        if teacher.captions != inputs.captions:
            raise LakdError(f"{teacher.path}: the teacher's captions differ from the student's")
        theirs = retrieval_ranks(teacher.image, teacher.text, teacher.text_item, text_key=keys, truth=truth)
        metrics["teacher_agreement_image_retrieval"] = agreement(
            ranks.text_to_image_top1, theirs.text_to_image_top1
        )
        metrics["teacher_agreement_text_retrieval"] = agreement(
            ranks.image_to_text_top1, theirs.image_to_text_top1
        )
    n_without = inputs.n_items - ranks.images_with_captions.shape[0]
    notes = [f"{n_without} image(s) without captions left out of text retrieval"] if n_without else []
    details = {
        "n_items": ranks.images_with_captions.shape[0],
        "n_texts": inputs.text.shape[0],
        "protocol": (
            inputs.truth.protocol if inputs.truth is not None else "a caption is a positive of its own image only"
        ),
        "notes": notes,
    }
    return TaskResult(metrics, details)


# ---- compositional probes --------------------------------------------------------------------


def _probes_unavailable(inputs: EvalInputs) -> str | None:
    if inputs.conditions is None:
        return "is not a probe set (use shapes:probes or a folder exported from it)"
    return None


def run_probes(inputs: EvalInputs, teacher: EvalInputs | None) -> TaskResult:
    choices = probe_choices(inputs.image, inputs.text, inputs.text_item)
    metrics = probe_metrics(choices, inputs.conditions)
    if teacher is not None:
        theirs = probe_choices(teacher.image, teacher.text, teacher.text_item)
        metrics["teacher_agreement"] = agreement(choices.choice, theirs.choice)
    details = {
        "n_items": inputs.n_items,
        "n_per_condition": dict(Counter(inputs.conditions)),
        "protocol": (
            "each probe image against its true caption and its hard negatives (captions checked false "
            "of the scene); correct when the true caption scores highest alone, a tie of t captions "
            "including it scores 1/t"
        ),
    }
    return TaskResult(metrics, details)


register_task(
    Task(
        "zeroshot",
        "zeroshot_classification",
        _zeroshot_unavailable,
        lambda inputs: _zeroshot_unavailable(inputs) is None,
        run_zeroshot,
    )
)
register_task(
    Task("retrieval", "zeroshot_retrieval", _retrieval_unavailable, _retrieval_in_all, run_retrieval)
)
register_task(
    Task(
        "probes",
        "image_caption_selection",
        _probes_unavailable,
        lambda inputs: _probes_unavailable(inputs) is None,
        run_probes,
    )
)


# ---- dense probes: a learned head on token-by-patch maps (lakd.eval.dense) -------------------


def _dense_needs_model(inputs: EvalInputs, teacher: EvalInputs | None) -> TaskResult:
    raise LakdError("dense-probes: needs the model (token features), not only its embeddings")


def run_dense(context: DenseContext) -> TaskResult:
    metrics, details = run_dense_probes(context)
    details = {
        **details,
        "protocol": (
            "each probe image against its true caption and its hard negatives, scored by a head "
            "trained on token-by-patch similarity maps of other probe items (acc, acc_<condition>) "
            "and by the pooled cosine (pooled_acc, pooled_acc_<condition>); ties as in probes"
        ),
    }
    return TaskResult(metrics, details)


register_task(
    Task(
        "dense-probes",
        "dense_image_caption_selection",
        _probes_unavailable,
        lambda inputs: False,
        _dense_needs_model,
        run_model=run_dense,
    )
)
TASK_CHOICES = (*TASKS, "all")


def task_by_name(name: str) -> Task | None:
    """A task by lakd name or clip_benchmark name; None for ``all``; LakdError for unknown names."""
    if name == "all":
        return None
    for task in TASKS.values():
        if name in (task.name, task.benchmark):
            return task
    raise LakdError(f"task: unknown task {name!r} (choose from {', '.join(TASK_CHOICES)})")


def select_tasks(name: str, inputs: EvalInputs) -> list[Task]:
    """The tasks ``task=name`` runs on ``inputs``; LakdError when the data cannot support them."""
    task = task_by_name(name)
    if task is not None:
        reason = task.unavailable(inputs)
        if reason:
            raise LakdError(f"`task` {task.name}: {inputs.source} {reason}")
        return [task]
    tasks = [task for task in TASKS.values() if task.in_all(inputs)]
    if not tasks:
        reasons = "; ".join(
            f"{t.name}: {t.unavailable(inputs) or 'captions are class prompts'}"
            for t in TASKS.values()
            if t.run_model is None
        )
        raise LakdError(f"`task` all: no task applies to {inputs.source} ({reasons})")
    return tasks
