"""``lakd eval``: zero-shot classification, retrieval and compositional probes of one model.

The model is read either as embeddings (``embeddings``: a store written by ``lakd embed`` or
:func:`~lakd.data.store.write_store`, with class prompts beside it) or as a model spec run
over ``data``; a model's embeddings go to a cache store beside ``out`` (``eval-cache/``) and are
reused by every task and by later runs. ``dense-probes`` reads the model itself (token features,
:mod:`lakd.eval.dense`) and no store. Results are written in clip_benchmark's format
(:mod:`lakd.eval.results`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from lakd.data import SourceOptions
from lakd.data.store import EmbeddingStore
from lakd.errors import LakdError
from lakd.eval.dense import DenseContext, DenseOptions
from lakd.eval.inputs import EvalInputs, load_inputs, store_source
from lakd.eval.results import result_record, write_results
from lakd.eval.tasks import select_tasks, task_by_name
from lakd.eval.templates import load_templates, source_templates
from lakd.eval.zeroshot import ensure_class_prompts
from lakd.models.checkpoint import MissingArch
from lakd.models.embed import cached_embed

CACHE_DIR_NAME = "eval-cache"


@dataclass
class EvalConfig:
    """Arguments of :func:`evaluate` (the CLI's ``lakd eval`` options).

    Exactly one of ``model`` (with ``data``) and ``embeddings``. ``task``: ``zeroshot``,
    ``retrieval``, ``probes``, ``dense-probes`` or ``all`` (every task the data supports, but
    ``dense-probes``). ``out``: result file (may
    contain ``{task}``); None writes nothing. ``teacher`` (a model spec, run over the same data) or
    ``teacher_embeddings`` (a store of the same items) adds teacher-agreement metrics.
    ``templates``: a template file (default: the data's own, :func:`~lakd.eval.templates.source_templates`). ``cache_dir`` defaults to
    ``eval-cache`` beside ``out``. ``allow_nonfinite``: drop NaN/Inf rows of the stores (with a count)
    instead of failing; the student's and the teacher's must still hold the same items. ``dense``: the
    learned head of ``dense-probes`` (:class:`~lakd.eval.dense.DenseOptions`; that task needs ``model``,
    not ``embeddings``).
    """

    model: str | None = None
    data: str | None = None
    embeddings: str | None = None
    task: str = "all"
    out: str | None = None
    teacher: str | None = None
    teacher_embeddings: str | None = None
    templates: str | None = None
    batch_size: int = 64
    device: str = "cpu"
    arch: str | None = None
    cache_dir: str | None = None
    allow_nonfinite: bool = False
    source_options: SourceOptions = field(default_factory=SourceOptions)
    dense: DenseOptions = field(default_factory=DenseOptions)


def _check(cfg: EvalConfig) -> None:
    if (cfg.model is None) == (cfg.embeddings is None):
        raise LakdError("give either `model` (with `data`) or `embeddings`")
    if cfg.model is not None and not cfg.data:
        raise LakdError("data: needed with `model` (the data to evaluate on)")
    if cfg.embeddings is not None and cfg.data:
        raise LakdError("data: not used with `embeddings` (the store names its data)")
    if cfg.teacher and cfg.teacher_embeddings:
        raise LakdError("give either `teacher` or `teacher_embeddings`, not both")
    if cfg.batch_size < 1:
        raise LakdError(f"batch_size: must be positive, got {cfg.batch_size}")
    task = task_by_name(cfg.task)  # unknown task names fail before any work
    if task is not None and task.run_model is not None:
        if cfg.model is None:
            raise LakdError(f"`task` {task.name}: needs `model` (token features are not in an embedding store)")
        if cfg.teacher or cfg.teacher_embeddings:
            raise LakdError(f"`task` {task.name}: no teacher agreement; evaluate the teacher as its own `model`")


def _cache_root(cfg: EvalConfig) -> Path:
    if cfg.cache_dir:
        return Path(cfg.cache_dir)
    if cfg.out:
        return Path(cfg.out).parent / CACHE_DIR_NAME
    raise LakdError("out: give an output file or a `cache_dir` to evaluate a model spec")


def _model_store(cfg: EvalConfig, spec: str, data: str, options: SourceOptions, arch: str | None):
    return cached_embed(
        spec,
        data,
        _cache_root(cfg),
        arch=arch,
        source_options=options,
        batch_size=cfg.batch_size,
        device=cfg.device,
        allow_nonfinite=cfg.allow_nonfinite,
    )


def _student(cfg: EvalConfig, templates: list[str] | None) -> tuple[EmbeddingStore, EvalInputs]:
    task = task_by_name(cfg.task)  # None: all tasks
    only_zeroshot = task is not None and task.name == "zeroshot"
    if cfg.embeddings is not None:
        store = EmbeddingStore(cfg.embeddings, allow_nonfinite=cfg.allow_nonfinite)
    else:
        store = _model_store(cfg, cfg.model, cfg.data, cfg.source_options, cfg.arch)
        if (task is None or only_zeroshot) and store.meta.get("classnames") and store.meta.get("has_labels"):
            ensure_class_prompts(
                store,
                templates or source_templates(store_source(store)),
                cfg.model,
                arch=cfg.arch,
                batch_size=cfg.batch_size,
                device=cfg.device,
            )
    inputs = load_inputs(store, conditions=not only_zeroshot)  # probe sets: no retrieval
    stored = inputs.class_prompts
    if (
        cfg.embeddings is not None
        and templates is not None
        and stored is not None
        and stored.templates != templates
    ):
        raise LakdError(
            f"`templates`: {store.path} holds class prompts of other templates "
            "(a store's prompts cannot be re-embedded without the model)"
        )
    return store, inputs


def _teacher(cfg: EvalConfig, store: EmbeddingStore, student: EvalInputs, zeroshot: bool) -> EvalInputs:
    try:
        if cfg.teacher_embeddings:
            teacher_store = EmbeddingStore(cfg.teacher_embeddings, allow_nonfinite=cfg.allow_nonfinite)
        elif cfg.model is not None:
            teacher_store = _model_store(cfg, cfg.teacher, cfg.data, cfg.source_options, None)
        else:
            options = SourceOptions.from_meta(store.meta.get("source_options") or {}, str(store.path / "meta.json"))
            teacher_store = _model_store(cfg, cfg.teacher, student.source, options, None)
    except MissingArch as err:  # `arch` is the student's: a teacher's cannot be given
        raise err.advice(
            "a teacher is read without an architecture; embed the data with it first (lakd embed and its "
            "arch option) and give that store as `teacher_embeddings`"
        ) from None
    teacher = load_inputs(teacher_store, conditions=False)
    if teacher.ids != student.ids:
        raise LakdError(
            f"{teacher_store.path}: the teacher's items differ from the student's ({teacher.n_items} vs "
            f"{student.n_items} items, or another order); embed both on the same data"
        )
    if zeroshot and teacher.classnames != student.classnames:
        raise LakdError(f"{teacher_store.path}: the teacher's class names differ from the student's")
    if zeroshot and cfg.teacher:
        teacher.class_prompts = ensure_class_prompts(
            teacher_store,
            student.class_prompts.templates,
            cfg.teacher,
            batch_size=cfg.batch_size,
            device=cfg.device,
        )
    return teacher


def evaluate(cfg: EvalConfig) -> dict[str, dict]:
    """Run the tasks of ``cfg`` and write their results; returns ``{task name: result object}``.

    Each result object has clip_benchmark's keys (``dataset``, ``model``, ``pretrained``, ``task``,
    ``metrics``, ``language``) plus ``lakd`` details.
    """
    _check(cfg)
    task = task_by_name(cfg.task)
    if task is not None and task.run_model is not None:
        return _evaluate_model_task(cfg, task)
    templates = load_templates(cfg.templates) if cfg.templates else None
    store, inputs = _student(cfg, templates)
    tasks = select_tasks(cfg.task, inputs)
    teacher = None
    if cfg.teacher or cfg.teacher_embeddings:
        teacher = _teacher(cfg, store, inputs, zeroshot=any(t.name == "zeroshot" for t in tasks))
        teacher.to(cfg.device)
    inputs.to(cfg.device)  # metrics run where the model ran
    model = cfg.model or inputs.model
    records = {}
    for task in tasks:
        result = task.run(inputs, teacher)
        details = {
            "task": task.name,
            **result.details,
            "embeddings": str(store.path),
            "teacher": cfg.teacher or (teacher.model if teacher is not None else None),
        }
        records[task.name] = result_record(
            task.benchmark, cfg.data or inputs.source, model, result.metrics, details, arch=cfg.arch
        )
    if cfg.out:
        write_results(cfg.out, list(records.values()))
    return records


def _evaluate_model_task(cfg: EvalConfig, task) -> dict[str, dict]:
    """A task that reads the model itself (``dense-probes``): no embedding store, no teacher."""
    context = DenseContext(cfg.model, cfg.data, cfg.dense, cfg.arch, cfg.device, cfg.batch_size, cfg.source_options)
    result = task.run_model(context)
    details = {"task": task.name, **result.details, "embeddings": None, "teacher": None}
    record = result_record(task.benchmark, cfg.data, cfg.model, result.metrics, details, arch=cfg.arch)
    if cfg.out:
        write_results(cfg.out, [record])
    return {task.name: record}
