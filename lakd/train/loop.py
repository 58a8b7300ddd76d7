"""``lakd train``: one linear function, :func:`train`, from a :class:`TrainConfig` to a run folder.

Build (student, teacher, recipe, heads, whitening, optimizer, schedule), resume when asked, then for
each step: this rank's batch (:mod:`lakd.train.data`), micro-batches through the task (DDP-wrapped
under torchrun), a NaN/Inf check agreed by all ranks, gradient clipping, the optimizer and
scheduler steps, the logit-scale clamps; logs every ``log_every`` steps, evaluation and geometry
every ``eval.every`` (rank 0), checkpoints every ``checkpoint.every``; at the end the final student.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from lakd import distributed
from lakd.analysis.whitening import MODALITIES, fit_whitening, load_stats_set, save_stats_set
from lakd.config import dump_yaml, load_yaml, to_mapping
from lakd.data import SourceOptions, open_source
from lakd.data.store import EmbeddingStore
from lakd.distill import Recipe, StudentWithHeads
from lakd.distill.heads import embed_dim_of
from lakd.distill.masking import mask_seed
from lakd.errors import LakdError
from lakd.eval.results import json_safe
from lakd.eval.templates import source_templates
from lakd.eval.zeroshot import embed_class_prompts
from lakd.io import writing
from lakd.models import export_local_dir, load_model, save_checkpoint
from lakd.models.checkpoint import unwrap
from lakd.models.tokens import check_dense_model
from lakd.train.checkpoint import (
    RunFolder,
    newest_checkpoint,
    read_training_checkpoint,
    rng_state,
    save_training_checkpoint,
    set_best,
    set_rng_state,
)
from lakd.train.config import TrainConfig, load_train_config
from lakd.train.data import CachedTeacher, StepSampler, TrainBatch, TrainCollate, TrainItems
from lakd.train.task import DistillTask
from lakd.train.track import Encoder, Tracker

log = logging.getLogger(__name__)

MAX_LOG_LOGIT_SCALE = math.log(100.0)
# fields of the resolved config that a resumed run must share with the run it continues
RESUME_FIXED = ("data", "student", "teacher", "recipe", "optim", "schedule", "seed")


# ---- building blocks -------------------------------------------------------------------------


def no_weight_decay(name: str, param: torch.Tensor) -> bool:
    """CLIP's rule: gains, biases, the logit scale and embeddings are not decayed."""
    return param.ndim < 2 or any(key in name for key in ("bn", "ln", "bias", "logit_scale", "embedding"))


def param_groups(module: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups of the trainable parameters: decayed and not (:func:`no_weight_decay`)."""
    decay, no_decay = [], []
    for name, param in module.named_parameters():
        if param.requires_grad:
            (no_decay if no_weight_decay(name, param) else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def adamw(task: torch.nn.Module, cfg: TrainConfig, device: str | torch.device) -> torch.optim.AdamW:
    """AdamW over :func:`param_groups`; torch's fused kernel on CPU and CUDA (the same update as the
    per-tensor loop in one pass over all parameters; on CPU the update of a student's 49408-row token
    embedding is a large part of a small model's step)."""
    fused = torch.device(device).type in ("cpu", "cuda") or None
    groups = param_groups(task, cfg.optim.weight_decay)
    return torch.optim.AdamW(groups, lr=cfg.optim.lr, betas=cfg.optim.betas, eps=cfg.optim.eps, fused=fused)


def lr_factor(cfg: TrainConfig) -> Callable[[int], float]:
    """Multiplier of the base lr at step ``s``: linear warmup, then cosine (or constant)."""
    schedule = cfg.schedule

    def factor(step: int) -> float:
        if step < schedule.warmup:
            return (step + 1) / schedule.warmup
        if schedule.kind == "constant":
            return 1.0
        span = max(1, schedule.steps - schedule.warmup)
        progress = min(1.0, (step - schedule.warmup) / span)
        return schedule.min_lr_ratio + (1 - schedule.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def autocast(cfg: TrainConfig, device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA (``auto`` or ``bf16``), nothing on CPU unless ``bf16`` is asked for."""
    amp = cfg.precision.amp
    if amp == "bf16" or (amp == "auto" and device.type == "cuda"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def same_preprocessing(a, b) -> bool:
    """Whether two open_clip eval transforms do the same (compared by their description)."""
    return repr(a) == repr(b)


def same_tokenizer(a, b) -> bool:
    def key(tok):
        return (type(tok).__name__, getattr(tok, "context_length", None), getattr(tok, "tokenizer_name", None))

    return key(a) == key(b)


class MetricsLog:
    """``metrics.jsonl``: one JSON object a line (rank 0 only); on resume, lines after the resumed
    step are dropped so the file matches the run."""

    def __init__(self, path: Path, *, resume_step: int | None):
        self.path = path
        if resume_step is not None and path.is_file():
            kept = [  # a line cut by a kill does not parse and is dropped with the steps after the checkpoint
                line
                for line in path.read_text(encoding="utf-8").splitlines()
                if _parse(line) and _step_of(line) <= resume_step
            ]
            path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
        elif resume_step is None:
            path.write_text("", encoding="utf-8")

    def has(self, kind: str) -> bool:
        if not self.path.is_file():
            return False
        return any(_kind_of(line) == kind for line in self.path.read_text(encoding="utf-8").splitlines())

    def write(self, record: dict[str, Any]) -> None:
        with writing(self.path), open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(json_safe(record)) + "\n")


def _parse(line: str) -> dict:
    try:
        value = json.loads(line)
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _step_of(line: str) -> int:
    return int(_parse(line).get("step", 0))


def _kind_of(line: str) -> str | None:
    return _parse(line).get("kind")


@dataclass
class Window:
    """Sums of the logged scalars since the last log line (tensors: no device sync per step)."""

    sums: dict[str, torch.Tensor] = field(default_factory=dict)
    steps: int = 0
    samples: int = 0
    start: float = field(default_factory=time.perf_counter)

    def add(self, values: dict[str, torch.Tensor], samples: int) -> None:
        for key, value in values.items():
            value = value.detach().float()
            self.sums[key] = self.sums[key] + value if key in self.sums else value
        self.steps += 1
        self.samples += samples

    def means(self) -> dict[str, float]:
        values = {key: float(total) / max(1, self.steps) for key, total in self.sums.items()}
        return distributed.all_reduce_mean(values)


# ---- the run ---------------------------------------------------------------------------------


@dataclass
class Setup:
    """What :func:`build` made."""

    task: DistillTask
    encoder: Encoder
    teacher: Encoder | None
    source: Any
    collate: TrainCollate
    whitening_file: Path | None


def build(cfg: TrainConfig, device: str, run: RunFolder, *, is_main: bool) -> Setup:
    """Student, teacher, recipe, heads and whitening of a run; every config problem is a LakdError
    before the first step."""
    model, preprocess, tokenizer = load_model(cfg.student.model, device=device, arch=cfg.student.arch, seed=cfg.seed)
    model.train()
    teacher_cfg = cfg.teacher
    teacher = cached = None
    if teacher_cfg.model:
        t_model, t_pre, t_tok = load_model(teacher_cfg.model, device=device, arch=teacher_cfg.arch)
        teacher = Encoder(t_model.requires_grad_(False).eval(), t_pre, t_tok)
    if teacher_cfg.kind == "cached":
        cached = CachedTeacher(EmbeddingStore(teacher_cfg.store))
    teacher_dim = cached.dim if cached is not None else (embed_dim_of(teacher.model) if teacher else None)
    recipe = Recipe.from_config(cfg.recipe, student_dim=embed_dim_of(model), teacher_dim=teacher_dim)
    if recipe.needs_teacher and teacher_cfg.kind == "none":
        raise LakdError(f"recipe: {_recipe_name(cfg)} needs a teacher (set teacher.kind to cached or online)")
    if teacher_cfg.kind == "cached" and (recipe.needs_online_teacher or cfg.data.augment != "none"):
        online_terms = [term for term, loss in recipe.losses.items() if loss.needs_online_teacher]
        why = (
            "data.augment"
            if cfg.data.augment != "none"
            else f"the recipe's term(s) {', '.join(repr(t) for t in online_terms)}"
        )
        raise LakdError(
            f"teacher.kind: {why} needs the teacher's features of this step's own images, which a cached "
            "store cannot give; use teacher.kind=online"
        )
    if cfg.student.mask_ratio is not None:
        _check_mask(cfg, recipe)
    if "student_dense" in recipe.required_fields:
        _check_dense(recipe, model, tokenizer, teacher if teacher_cfg.kind == "online" else None)
    needed = recipe.required_fields if teacher_cfg.kind != "none" else set()
    scale = None
    if cached is not None:
        scale = teacher_cfg.logit_scale or cached.logit_scale
        if "teacher_logit_scale" in needed and scale is None:
            raise LakdError(
                f"teacher.logit_scale: {teacher_cfg.store} does not record the teacher's logit scale, which "
                "the recipe's logit terms need; set teacher.logit_scale"
            )
    source = open_source(
        cfg.data.train, SourceOptions(download=cfg.data.download, allow_outside_root=cfg.data.allow_outside_root)
    )
    if cached is not None:
        cached.check_covers(source, cfg.data.train)
    whitening, whitening_file = None, None
    if "whitening" in needed:
        whitening = _whitening(cfg, cached)
        whitening_file = run.whitening
        if is_main:
            save_stats_set(whitening_file, whitening)
    anchors = None
    if "text_anchors" in needed:
        anchors = _text_anchors(cfg, teacher, source, device)
    heads = StudentWithHeads.for_teacher(model, teacher_dim) if teacher_dim else StudentWithHeads(model)
    online = teacher.model if teacher_cfg.kind == "online" else None
    task = DistillTask(
        heads,
        recipe,
        teacher=online,
        cached=cached,
        teacher_logit_scale=scale,
        whitening=whitening,
        text_anchors=anchors,
        mask_ratio=cfg.student.mask_ratio,
    ).to(device)
    collate = TrainCollate(
        preprocess,
        tokenizer,
        None if online is None or same_preprocessing(preprocess, teacher.preprocess) else teacher.preprocess,
        None if online is None or same_tokenizer(tokenizer, teacher.tokenizer) else teacher.tokenizer,
    )
    return Setup(task, Encoder(model, preprocess, tokenizer), teacher, source, collate, whitening_file)


def _check_mask(cfg: TrainConfig, recipe: Recipe) -> None:
    """The single masked pass replaces ``mfd``'s extra one and cannot give token maps of a masked view."""
    for term, loss in recipe.losses.items():
        if loss.name == "mfd":
            raise LakdError(
                f"student.mask_ratio: the recipe's term {term!r} (mfd) masks in an extra pass; use one of "
                "the two (CLIP-KD's single pass is student.mask_ratio with an fd term, docs/losses.md)"
            )
        if "student_dense" in loss.required_fields():
            raise LakdError(f"student.mask_ratio: the recipe's term {term!r} needs token maps of the full images")


def _check_dense(recipe: Recipe, model, tokenizer, teacher: Encoder | None) -> None:
    """Token-map terms need ViT towers on both sides and the shared tokenizer (one error line each)."""
    terms = ", ".join(repr(term) for term, loss in recipe.losses.items() if "student_dense" in loss.required_fields())
    for key, who in (("student.model", model), ("teacher.model", teacher.model if teacher else None)):
        if who is not None:
            try:
                check_dense_model(who)
            except LakdError as err:
                raise LakdError(f"{key}: the recipe's term(s) {terms} need token features: {err}") from None
    if teacher is not None and not same_tokenizer(tokenizer, teacher.tokenizer):
        raise LakdError(
            f"teacher.model: the recipe's term(s) {terms} align token maps through the shared tokenizer, but the "
            f"teacher's tokenizer ({_tokenizer_name(teacher.tokenizer)}) differs from the student's "
            f"({_tokenizer_name(tokenizer)})"
        )


def _tokenizer_name(tokenizer) -> str:
    name = getattr(tokenizer, "tokenizer_name", None) or type(tokenizer).__name__
    return f"{name}, context length {getattr(tokenizer, 'context_length', '?')}"


def _recipe_name(cfg: TrainConfig) -> str:
    return repr(cfg.recipe) if isinstance(cfg.recipe, str) else "the recipe"


def _whitening(cfg: TrainConfig, cached: CachedTeacher | None):
    """The teacher's whitening statistics: from ``teacher.whitening`` files, else fitted on the cached
    store (ZCA, float64)."""
    if cfg.teacher.whitening:
        return load_stats_set(cfg.teacher.whitening)
    if cached is None:
        raise LakdError(
            "teacher.whitening: whitened_fd with an online teacher needs the teacher's statistics "
            "(lakd whiten fit on an embedding store of the teacher)"
        )
    features = {"image": cached.image, "text": cached.text}
    return {m: fit_whitening(features[m].double(), source=f"{cfg.teacher.store} ({m})") for m in MODALITIES}


def _text_anchors(cfg: TrainConfig, teacher: Encoder | None, source, device: str) -> torch.Tensor:
    classnames = list(getattr(source, "classnames", None) or [])
    if teacher is None or not classnames:
        raise LakdError(
            "recipe: rise_relative needs text anchors: the teacher's class prompts, so teacher.model and "
            "training data with class names"
        )
    return embed_class_prompts(
        teacher.model, teacher.tokenizer, classnames, source_templates(source), device=device
    ).to(device)


def resume_mismatch(run: RunFolder, cfg: TrainConfig) -> tuple[str, Any, Any] | None:
    """The first section of :data:`RESUME_FIXED` in which ``cfg`` differs from the run's saved
    configuration, as ``(key, saved, now)``; None when the run can be resumed with ``cfg``."""
    saved = load_yaml(run.config_file)
    try:  # fields added since the run was made take their defaults
        saved = to_mapping(load_train_config(mapping=saved))
    except LakdError:
        pass  # compared as written: an unreadable section differs
    now = to_mapping(cfg)
    for key in RESUME_FIXED:
        if saved.get(key) != now.get(key):
            return key, saved.get(key), now.get(key)
    return None


def _check_resumable(run: RunFolder, cfg: TrainConfig) -> None:
    mismatch = resume_mismatch(run, cfg)
    if mismatch is not None:
        key, saved, now = mismatch
        raise LakdError(
            f"{run.config_file}: the run was made with another {key} section ({saved!r}); "
            f"resume with the same configuration (now {now!r})"
        )


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """``optimizer.load_state_dict(state)``, keeping this optimizer's kernel choice (``fused``):
    the saved groups carry that of the run that saved them (another device, an older lakd)."""
    optimizer.load_state_dict(state)
    for group in optimizer.param_groups:
        if "fused" in optimizer.defaults:
            group["fused"] = optimizer.defaults["fused"]


def _restore(setup: Setup, path: Path, optimizer, scheduler) -> int:
    state_dict, meta = read_training_checkpoint(path)
    student = setup.task.student
    student.student.load_state_dict(state_dict)
    if student.heads is not None:
        student.heads.load_state_dict(meta["heads_state_dict"])
    training = meta["training_state"]
    setup.task.recipe.load_state_dict(training["recipe"])
    load_optimizer_state(optimizer, training["optimizer"])
    scheduler.load_state_dict(training["scheduler"])
    set_rng_state(training["rng"])
    return int(training["step"])


def _loader(cfg: TrainConfig, setup: Setup, sampler: StepSampler, device: torch.device) -> Iterator[TrainBatch]:
    items = TrainItems(
        setup.source, seed=cfg.seed, caption=cfg.data.caption, augment=cfg.data.augment, cache=cfg.data.cache
    )
    loader = DataLoader(
        items,
        batch_sampler=sampler,
        collate_fn=setup.collate,
        num_workers=cfg.data.workers,
        persistent_workers=cfg.data.workers > 0,
        pin_memory=device.type == "cuda",
        generator=torch.Generator(),
    )
    return iter(loader)


def _equal_sizes(batch: TrainBatch) -> TrainBatch:
    """Under torch.distributed every rank keeps as many items as the smallest batch (skipped images
    shrink a batch; gathered features need equal shapes)."""
    if distributed.world_size() == 1:
        return batch
    size = torch.tensor([len(batch)], device="cuda" if torch.distributed.get_backend() == "nccl" else "cpu")
    torch.distributed.all_reduce(size, op=torch.distributed.ReduceOp.MIN)
    return batch.rows(slice(0, int(size))) if int(size) < len(batch) else batch


def _all_finite(value: torch.Tensor) -> bool:
    flag = torch.isfinite(value.detach()).all().float().reshape(1)
    if distributed.world_size() > 1:
        flag = flag.to("cuda" if torch.distributed.get_backend() == "nccl" else "cpu")
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MIN)
    return bool(flag.item() == 1.0)


def train(
    cfg: TrainConfig,
    *,
    out: str | None = None,
    max_steps: int | None = None,
    resume: bool = False,
    overwrite: bool = False,
    echo: Callable[[str], None] = print,
) -> Path:
    """Train as ``cfg`` says into the run folder ``out`` (default ``cfg.out``); returns the folder.

    ``max_steps``: stop once this many steps are done (the schedule stays that of
    ``schedule.steps``; ``resume`` continues later). Under torchrun every rank calls this; rank 0
    writes the files and shows the progress bar.
    """
    out = out or cfg.out
    if not out:
        raise LakdError("out: give the run folder (--out DIR or out: in the config)")
    if max_steps is not None and max_steps < 1:
        raise LakdError(f"max_steps: must be positive, got {max_steps}")
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise LakdError(f"device: {cfg.device} is not available on this machine (no CUDA device)")
    run = RunFolder(Path(out))
    stop = min(cfg.schedule.steps, max_steps) if max_steps else cfg.schedule.steps
    with distributed.distributed(cfg.device) as context:
        device = torch.device(context.device)
        if cfg.precision.threads:
            torch.set_num_threads(cfg.precision.threads)
        random.seed(cfg.seed)
        np.random.seed(cfg.seed)
        torch.manual_seed(cfg.seed)
        if context.is_main:
            run.prepare(resume=resume, overwrite=overwrite)
            if resume:
                _check_resumable(run, cfg)
            else:
                dump_yaml(cfg, run.config_file)
        distributed.barrier()
        setup = build(cfg, context.device, run, is_main=context.is_main)
        task = setup.task
        optimizer = adamw(task, cfg, context.device)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(cfg))
        start = 0
        if resume:
            path = newest_checkpoint(run)
            if path is None:
                raise LakdError(f"{run.checkpoints}: no complete checkpoint to resume from")
            start = _restore(setup, path, optimizer, scheduler)
            if context.is_main:
                echo(f"resuming {run.path} from {path.name} (step {start})")
        steps = _Steps(cfg, run, setup, optimizer, scheduler, context, device, echo)
        steps.loop(start, stop)
        distributed.barrier()
    return run.path


class _Steps:
    """The step loop of :func:`train` and its per-run state (log, best checkpoint, tracker)."""

    def __init__(self, cfg, run, setup, optimizer, scheduler, context, device, echo):
        self.cfg, self.run, self.setup = cfg, run, setup
        self.optimizer, self.scheduler = optimizer, scheduler
        self.context, self.device, self.echo = context, device, echo
        task = setup.task
        self.model = task
        if context.world_size > 1:
            extra = task.student.heads is not None or any(True for _ in task.recipe.parameters())
            self.model = torch.nn.parallel.DistributedDataParallel(
                task,
                device_ids=[device] if device.type == "cuda" else None,
                find_unused_parameters=extra,
            )
        if cfg.precision.compile:
            self.model = torch.compile(self.model)
        self.params = [p for p in task.parameters() if p.requires_grad]
        self.last_eval: dict[str, Any] = {}
        self.best_value = self._saved_best() if context.is_main else None
        self.n_skipped_steps = 0
        self.n_skipped_images = 0

    # -- one step ----------------------------------------------------------------------------

    def step(self, batch: TrainBatch, step: int) -> dict[str, torch.Tensor] | None:
        """Forward/backward over micro-batches and the optimizer step; the logged values, or None
        when the step was skipped (``on_nan: skip``)."""
        cfg, task = self.cfg, self.setup.task
        parts = [p for p in _split(len(batch), cfg.optim.accum) if p.stop > p.start]
        totals: dict[str, torch.Tensor] = {}
        for k, rows in enumerate(parts):
            micro = batch.rows(rows)
            sync = k == len(parts) - 1 or not hasattr(self.model, "no_sync")
            with (contextlib.nullcontext() if sync else self.model.no_sync()), autocast(cfg, self.device):
                output = self.model(micro, **self._mask_seed(step, k))
            if not _all_finite(output.total):
                self._non_finite(output, batch, step)
                return None
            (output.total / len(parts)).backward()
            values = {"loss/total": output.total, **{f"loss/{k}": v for k, v in output.terms.items()}}
            for key, value in values.items():
                totals[key] = totals.get(key, 0) + value.detach().float() / len(parts)
        if cfg.optim.grad_clip is not None:
            norm = torch.nn.utils.clip_grad_norm_(self.params, cfg.optim.grad_clip)
            totals["grad_norm"] = norm.detach()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        with torch.no_grad():
            task.student.student.logit_scale.clamp_(0, MAX_LOG_LOGIT_SCALE)
        task.recipe.clamp_logit_scales_()
        totals["logit_scale"] = task.student.student.logit_scale.detach().exp()
        return totals

    def _mask_seed(self, step: int, micro: int) -> dict[str, int]:
        """The masks of micro-batch ``micro`` of ``step`` on this rank (``student.mask_ratio``): a
        seed from the run's seed, the rank and the micro-batch's index, so a resumed run repeats them."""
        if self.cfg.student.mask_ratio is None:
            return {}
        return {"mask_seed": mask_seed(self.cfg.seed, self.context.rank, step * self.cfg.optim.accum + micro)}

    def _non_finite(self, output, batch: TrainBatch, step: int) -> None:
        terms = {key: float(value) for key, value in output.scalars().items()}
        self.optimizer.zero_grad(set_to_none=True)
        if self.context.is_main:
            self.log.write({"kind": "nan", "step": step + 1, "item_ids": batch.ids, **terms})
        if self.cfg.on_nan == "stop":
            latest = self.run.pointer("latest")
            raise LakdError(
                f"step {step + 1}: the loss is not finite ({', '.join(f'{k}={v:g}' for k, v in terms.items())}); "
                f"stopped, the last good checkpoint is {latest or 'none'} (on_nan: skip would skip such steps)"
            )
        self.n_skipped_steps += 1
        self.scheduler.step()

    # -- the loop ------------------------------------------------------------------------------

    def loop(self, start: int, stop: int) -> None:
        cfg, context = self.cfg, self.context
        self.log = MetricsLog(self.run.metrics_file, resume_step=start if start else None) if context.is_main else None
        tracker = self._tracker() if context.is_main else None
        if start >= stop:
            if context.is_main:
                self.echo(f"{self.run.path}: already at step {start} of {stop}; nothing to train")
            self._finish(stop)
            return
        sampler = StepSampler(
            len(self.setup.source),
            cfg.data.batch_size,
            seed=cfg.seed,
            start=start,
            stop=stop,
            rank=context.rank,
            world=context.world_size,
        )
        batches = _loader(cfg, self.setup, sampler, self.device)
        window = Window()
        self.setup.task.train()
        progress = tqdm(total=stop, initial=start, desc="training", unit=" steps", disable=not context.is_main)
        with progress:
            for step in range(start, stop):
                batch = next(batches)
                self.n_skipped_images += len(batch.skipped)
                batch = _equal_sizes(batch).to(self.device)
                values = self.step(batch, step)
                done = step + 1
                if values is not None:
                    window.add(values, len(batch) * context.world_size)
                if done % cfg.log_every == 0 or done == stop:
                    self._log(window, done)
                    window = Window()
                if done % cfg.eval.every == 0 or done == stop:
                    self._evaluate(tracker, done)
                if done % cfg.checkpoint.every == 0 or done == stop:
                    self._checkpoint(done)
                progress.update(1)
        self._finish(stop)

    def _tracker(self) -> Tracker | None:
        cfg, setup = self.cfg, self.setup
        tracker = Tracker(
            cfg, self.context.device, teacher=setup.teacher, teacher_store=cfg.teacher.eval_store,
            teacher_name=cfg.teacher.model or cfg.teacher.store or "teacher", echo=self.echo,
        )
        if tracker.empty:
            return None
        if not self.log.has("teacher"):
            reference = tracker.teacher_metrics()
            if reference is not None:
                self.log.write({"kind": "teacher", "step": 0, **reference})
        return tracker

    def _log(self, window: Window, step: int) -> None:
        means = window.means()
        elapsed = time.perf_counter() - window.start
        if not self.context.is_main:
            return
        record = {
            "kind": "train",
            "step": step,
            "lr": self.scheduler.get_last_lr()[0],
            "samples_per_s": window.samples / elapsed if elapsed > 0 else None,
            "skipped_steps": self.n_skipped_steps,
            "skipped_images": self.n_skipped_images,
            **means,
        }
        self.log.write(record)

    def _evaluate(self, tracker: Tracker | None, step: int) -> None:
        if self.context.is_main and tracker is not None:
            start = time.perf_counter()
            metrics = tracker.measure(self.setup.encoder, name=f"step {step}")
            self.last_eval = {"eval_step": step, "eval": metrics}
            self.log.write({"kind": "eval", "step": step, "seconds": time.perf_counter() - start, **metrics})
        distributed.barrier()

    def _checkpoint(self, step: int) -> None:
        if self.context.is_main:
            task = self.setup.task
            state = {
                "step": step,
                "recipe": task.recipe.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "rng": rng_state(),
                "config": to_mapping(self.cfg),
            }
            is_best = self._is_best()
            best = self.run.checkpoint(step) if is_best else self.run.pointer("best")
            path = save_training_checkpoint(
                self.run, step, task.student, state, summary=self._summary(step),
                keep_last=self.cfg.checkpoint.keep_last, best=best,
            )
            if is_best:
                set_best(self.run, path)
        distributed.barrier()

    def _summary(self, step: int) -> dict[str, Any]:
        """What a checkpoint's ``lakd.train`` metadata says: step, recipe, teacher and latest evaluation."""
        teacher = self.cfg.teacher
        return {
            "step": step,
            "recipe": self.cfg.recipe,
            "teacher": teacher.model or teacher.store if teacher.kind != "none" else None,
            **self.last_eval,
        }

    def _saved_best(self) -> float | None:
        """The best metric of a resumed run's ``best`` checkpoint (None for a new run)."""
        best, name = self.run.pointer("best"), self.cfg.checkpoint.best_metric
        if best is None or not name:
            return None
        _, meta = read_training_checkpoint(best)
        value = ((meta.get("lakd") or {}).get("train") or {}).get("eval", {}).get(name)
        return float(value) if isinstance(value, int | float) else None

    def _is_best(self) -> bool:
        name = self.cfg.checkpoint.best_metric
        value = (self.last_eval.get("eval") or {}).get(name) if name else None
        if value is None:
            return False
        better = self.best_value is None or (
            value > self.best_value if self.cfg.checkpoint.best_mode == "max" else value < self.best_value
        )
        if better:
            self.best_value = value
        return better

    def _finish(self, stop: int) -> None:
        """The final student: ``student.pt`` (with its heads) and ``student-local-dir``."""
        if self.context.is_main:
            student = self.setup.task.student
            save_checkpoint(student, self.run.student, extra={"train": self._summary(stop)})
            export_local_dir(unwrap(student), self.run.local_dir, overwrite=True)
            summary = self.last_eval.get("eval") or {}
            keys = [k for k in summary if k.endswith("recall@1") or k in ("zeroshot/acc1",)]
            self.echo(
                f"trained {stop} steps: {self.run.student}"
                + (f" ({', '.join(f'{k} {summary[k]:.3f}' for k in keys if summary[k] is not None)})" if keys else "")
            )


def _split(n: int, parts: int) -> list[slice]:
    """``parts`` contiguous slices of ``range(n)`` whose sizes differ by at most one."""
    bounds = [round(i * n / parts) for i in range(parts + 1)]
    return [slice(a, b) for a, b in zip(bounds, bounds[1:], strict=False)]
