"""``lakd demo``: the whole loop, for real, offline, on the shapes world.

1. The shapes world: training, validation and probe scenes, generated on the fly from the seed.
2. A teacher CLIP trained by :func:`lakd.train.train` with the settings of
   ``experiments/shapes/teacher.yaml`` (:data:`TEACHER`), or reused from the cache
   (``~/.cache/lakd`` or ``cache_dir``; keyed by its configuration and lakd's version; a reused
   teacher is printed as such, a killed one resumed).
3. The teacher's embeddings of the students' training data, once (an embedding store beside the cached
   teacher), and its whitening statistics.
4. Students of a smaller config (``lakd:micro-mobilenet``) distilled from the cached embeddings with the
   same seed and step budget for each recipe (``none``, ``fd``, ``whitened_fd``, ``clip_kd``,
   ``geometry``; the settings of ``experiments/shapes/distill.yaml``, :data:`STUDENT`), ``jobs`` at
   a time (on CPU one per core, each in its own process with one torch thread: small models use
   a core each better than two threads share one model; a student left over at the end, such as
   the fifth of five on two cores, gets the cores to itself), each embedded for the report by its
   worker.
5. Every model evaluated on the fixed sets at the end of its run (retrieval and zero-shot on the
   shapes world's truth, the four probe conditions), and one geometry report of the teacher against
   every student, with its diagnosis of what each student did not inherit.
6. A table (one row per model) and the path of report.html.

``quick`` shrinks every budget (about a minute; what the test suite runs).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import multiprocessing
import os
import shutil
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

import lakd
from lakd.errors import LakdError

if TYPE_CHECKING:
    from lakd.report import ReportConfig

MARKER = ".lakd_demo"
RECIPES = ("none", "fd", "whitened_fd", "clip_kd", "geometry")

# experiments/shapes/teacher.yaml (a test keeps the two equal)
TEACHER: dict[str, Any] = {
    "data": {"train": "shapes:train?n=20000", "batch_size": 64, "caption": "random", "workers": 1, "cache": True},
    "student": {"model": "lakd:tiny-resnet"},
    "recipe": "none",
    "optim": {"lr": 1.0e-3, "weight_decay": 0.1},
    "schedule": {"steps": 800, "warmup": 80},
    "eval": {"data": "shapes:val?n=512", "probes": "shapes:probes?n=200", "every": 400},
    "track": {"sample_size": 512},
    "checkpoint": {"every": 400, "keep_last": 2},
    "log_every": 20,
    "seed": 0,
}
# experiments/shapes/distill.yaml without its teacher section (filled in by the demo)
STUDENT: dict[str, Any] = {
    "data": {"train": "shapes:train?n=4000", "batch_size": 64, "caption": "random", "workers": 0, "cache": True},
    "student": {"model": "lakd:micro-mobilenet"},
    "recipe": "fd",
    "optim": {"lr": 5.0e-3, "weight_decay": 0.1},
    "schedule": {"steps": 300, "warmup": 30},
    "eval": {"data": "shapes:val?n=512", "probes": "shapes:probes?n=200", "every": 300},
    "track": {"sample_size": 512},
    "checkpoint": {"every": 300, "keep_last": 1},
    "log_every": 20,
    "seed": 0,
}
QUICK: dict[str, str] = {  # overrides of both for --quick
    "data.train": "shapes:train?n=256&image_size=32",
    "data.batch_size": "32",
    "data.workers": "0",
    "eval.data": "shapes:val?n=48&image_size=32",
    "eval.probes": "shapes:probes?n=24&image_size=32",
    "track.sample_size": "48",
}
QUICK_STEPS = {"teacher": 30, "student": 12}


@dataclass
class DemoConfig:
    """Where the demo writes (``out``, replaced on the next run), where the teacher is cached
    (``cache_dir``, default ``~/.cache/lakd``), the recipes, ``quick`` budgets, seed, device and
    ``jobs``: students trained at once (None: the CPU cores this process may use, on CPU; 1 on CUDA)."""

    out: str = "lakd_demo"
    cache_dir: str | None = None
    recipes: tuple[str, ...] = RECIPES
    quick: bool = False
    seed: int = 0
    device: str = "cpu"
    jobs: int | None = None

    def __post_init__(self) -> None:
        if self.jobs is not None and self.jobs < 1:
            raise LakdError(f"jobs: must be positive, got {self.jobs}")

    def student_jobs(self) -> int:
        """How many students train at once."""
        if self.jobs is not None:
            return min(self.jobs, len(self.recipes))
        if self.device != "cpu":
            return 1
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        return max(1, min(cores, len(self.recipes)))


def _fresh_output(out: Path) -> None:
    """Replace a previous demo folder; refuse to touch a folder the demo did not make."""
    if out.exists():
        if not (out / MARKER).exists():
            raise LakdError(f"{out}: exists and was not written by `lakd demo`; choose another `out`")
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / MARKER).write_text("written by lakd demo; replaced on the next run\n")


def _overrides(cfg: DemoConfig, role: str) -> list[str]:
    values = {"seed": str(cfg.seed), "device": cfg.device}
    if cfg.quick:
        steps = QUICK_STEPS[role]
        values.update(QUICK)
        values.update({"schedule.steps": str(steps), "schedule.warmup": "2", "eval.every": str(steps)})
        values.update({"checkpoint.every": str(steps), "log_every": "5"})
    return [f"{key}={value}" for key, value in values.items()]


def teacher_config(cfg: DemoConfig):
    """The teacher's :class:`~lakd.train.TrainConfig` for this demo."""
    from lakd.train import load_train_config

    return load_train_config(mapping=TEACHER, overrides=_overrides(cfg, "teacher"))


def student_config(cfg: DemoConfig, recipe: str, *, store: Path, teacher: Path, whitening: Path):
    """A student's :class:`~lakd.train.TrainConfig`: the cached teacher ``store``, the teacher
    checkpoint (its reference geometry, measured once and kept in ``reference/`` beside it) and
    whitening statistics, ``recipe``."""
    from lakd.train import load_train_config

    teacher_section = {
        "kind": "cached",
        "store": str(store),
        "model": str(teacher),
        "whitening": str(whitening),
    }
    track = {**STUDENT["track"], "reference_cache": str(teacher.parent / "reference")}
    mapping = {**STUDENT, "teacher": teacher_section, "recipe": recipe, "track": track}
    return load_train_config(mapping=mapping, overrides=_overrides(cfg, "student"))


def cache_root(cfg: DemoConfig) -> Path:
    if cfg.cache_dir:
        return Path(cfg.cache_dir)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "lakd"


def teacher_key(train_cfg) -> str:
    """What names a cached teacher: its configuration and the lakd version that trained it."""
    from lakd.config import to_mapping

    text = yaml.safe_dump(to_mapping(train_cfg), sort_keys=True) + lakd.__version__
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def teacher_run(cfg: DemoConfig, echo: Callable[[str], None]) -> Path:
    """The cached teacher's run folder, trained (or resumed) when it is not complete."""
    from lakd.train import train
    from lakd.train.checkpoint import RunFolder

    train_cfg = teacher_config(cfg)
    run = RunFolder(cache_root(cfg) / f"demo-teacher-{teacher_key(train_cfg)}")
    if run.student.is_file() and run.is_run():
        echo(f"teacher: reusing the cached teacher {run.path} (delete it to train again)")
        return run.path
    resume = run.is_run() and bool(run.steps())
    echo(f"teacher: {'resuming' if resume else 'training'} {train_cfg.student.model} on {train_cfg.data.train} -> {run.path}")
    train(train_cfg, out=str(run.path), resume=resume, overwrite=run.is_run() and not resume, echo=echo)
    return run.path


def final_eval(run: Path) -> dict[str, Any]:
    """The last evaluation line of a run's metrics.jsonl."""
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    evals = [line for line in lines if line.get("kind") == "eval"]
    if not evals:
        raise LakdError(f"{run / 'metrics.jsonl'}: the run has no evaluation")
    return evals[-1]


@dataclass
class DemoResult:
    """What the demo wrote: the teacher's run, each student's run by recipe, the report folder and
    the table (a pandas DataFrame, also ``summary.csv``)."""

    teacher: Path
    students: dict[str, Path]
    report: Path
    table: Any


@dataclass
class DemoTeacher:
    """The cached teacher: its run folder and final checkpoint, its embedding store of the students'
    training data (beside it in the cache) and its whitening statistics."""

    run: Path
    checkpoint: Path
    store: Any
    whitening: Path


def prepare_teacher(cfg: DemoConfig, whitening: Path, echo: Callable[[str], None] = print) -> DemoTeacher:
    """The teacher (:func:`teacher_run`), its cached store of the students' training data and its
    whitening statistics fitted into ``whitening`` (cheap; fitted on every call)."""
    from lakd.data.store.whitening import WhitenFitConfig, fit_store_whitening
    from lakd.models.embed import cached_embed
    from lakd.train import load_train_config

    run = teacher_run(cfg, echo)
    checkpoint = run / "student.pt"
    data = load_train_config(mapping={**STUDENT, "recipe": "none"}, overrides=_overrides(cfg, "student")).data.train
    store = cached_embed(str(checkpoint), data, run / "embeddings", device=cfg.device)
    fit_store_whitening(WhitenFitConfig(str(store.path), str(whitening)))
    echo(f"teacher embeddings: {store.path} ({store.n_items} images, {store.n_texts} captions); whitening {whitening.parent}")
    return DemoTeacher(run, checkpoint, store, whitening)


def run_demo(cfg: DemoConfig, echo: Callable[[str], None] = print) -> DemoResult:
    """Run the demo (module docstring) and return what it wrote."""
    from lakd.report import ReportConfig, geometry_report
    from lakd.report.diagnosis import format_diagnosis

    unknown = [r for r in cfg.recipes if r not in RECIPES]
    if unknown:
        raise LakdError(f"recipes: unknown {', '.join(unknown)} (choose from {', '.join(RECIPES)})")
    out = Path(cfg.out)
    _fresh_output(out)
    clock = Stopwatch()
    teacher_cfg = teacher_config(cfg)
    echo(
        f"shapes world: training {teacher_cfg.data.train}, evaluation {teacher_cfg.eval.data}, "
        f"probes {teacher_cfg.eval.probes} (generated on the fly, seed {cfg.seed})"
    )
    prepared = prepare_teacher(cfg, out / "whitening" / "teacher.safetensors", echo)
    run, teacher = prepared.run, prepared.checkpoint
    clock.lap("teacher")

    configs = {
        recipe: student_config(cfg, recipe, store=prepared.store.path, teacher=teacher, whitening=prepared.whitening)
        for recipe in cfg.recipes
    }
    runs = out / "runs"
    report_cfg = ReportConfig(
        out=str(out / "report"),
        teacher=str(teacher),
        students=tuple(str(runs / recipe / "student.pt") for recipe in configs),
        names=("teacher", *configs),
        data=teacher_cfg.eval.data,
        seed=cfg.seed,
        sample_size=teacher_cfg.track.sample_size,
        device=cfg.device,
        cache_dir=str(out / "embeddings"),
    )
    students = train_students(configs, runs, cfg.student_jobs(), echo, report=report_cfg)
    clock.lap("students")

    report = geometry_report(report_cfg)
    table = summary_table(run, students, report)
    table.to_csv(out / "summary.csv")
    clock.lap("report")
    echo(table.to_string(float_format=lambda v: f"{v:.3f}"))
    echo(format_diagnosis(report))
    echo(f"report: {report / 'report.html'}")
    echo(f"time: {clock}")
    return DemoResult(run, students, report, table)


class Stopwatch:
    """Wall time per stage: ``lap(name)`` closes a stage; ``str()`` is the one-line account."""

    def __init__(self) -> None:
        self.start = self.last = time.perf_counter()
        self.laps: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name], self.last = now - self.last, now

    def __str__(self) -> str:
        stages = ", ".join(f"{name} {_minutes(seconds)}" for name, seconds in self.laps.items())
        return f"{_minutes(time.perf_counter() - self.start)} ({stages})"


def _minutes(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    return f"{whole // 60} min {whole % 60:02d} s"


def train_students(
    configs: Mapping[str, Any],
    runs: Path,
    jobs: int,
    echo: Callable[[str], None] = print,
    *,
    report: ReportConfig | None = None,
) -> dict[str, Path]:
    """Each recipe's student (``configs``: recipe -> TrainConfig) into ``runs/<recipe>``: one after
    another with the trainer's progress bar (``jobs`` 1), or ``jobs`` at a time, each in a spawned
    process with one torch thread, under one progress bar over the students; the students left over
    when the others are done, when they are at most ``jobs // 2`` (e.g. the fifth of five on two
    cores), then share the cores, ``jobs // left`` threads each, instead of leaving cores idle. With ``jobs`` > 1 and
    ``report`` (a :class:`~lakd.report.ReportConfig` with a ``cache_dir``), each worker then embeds
    its student when ``report`` holds it (``runs/<recipe>/student.pt``), and ``report.teacher`` is
    embedded by the first worker free after the one-thread students, so the report only reads them.
    Returns the run folders in the order of ``configs``; a failed student raises its error once the
    running ones end."""
    from tqdm import tqdm

    from lakd.train import train

    if jobs <= 1:
        paths = {}
        for recipe, train_cfg in configs.items():
            echo(f"student {recipe}: {train_cfg.student.model}, {train_cfg.schedule.steps} steps")
            paths[recipe] = train(train_cfg, out=str(runs / recipe), echo=echo)
        return paths
    recipes = list(configs)
    jobs = min(jobs, len(recipes))
    tail = recipes[len(recipes) - len(recipes) % jobs :] if jobs // max(len(recipes) % jobs, 1) >= 2 else []
    threads = {recipe: jobs // len(tail) if recipe in tail else 1 for recipe in recipes}
    model, steps = configs[recipes[0]].student.model, configs[recipes[0]].schedule.steps
    plan = f"students: {model}, {steps} steps each, {jobs} at a time (one thread each)"
    if tail:
        plan += f"; then {', '.join(tail)} with {threads[tail[0]]} threads" + (" each" if len(tail) > 1 else "")
    echo(plan)
    done: dict[str, Path] = {}
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context, initializer=_die_with_parent) as pool:

        def submit(recipe: str):
            train_cfg = configs[recipe]
            precision = dataclasses.replace(train_cfg.precision, threads=threads[recipe])
            return pool.submit(
                _train_quietly, dataclasses.replace(train_cfg, precision=precision), str(runs / recipe), report
            )

        def collect(wave: dict) -> None:
            for future in as_completed(wave):
                recipe = wave[future]
                try:
                    done[recipe], summary = future.result()
                except Exception as err:  # a LakdError's message, or a worker that died
                    raise LakdError(f"student {recipe}: {err or type(err).__name__}") from err
                with tqdm.external_write_mode():
                    echo(f"student {recipe}: {summary}")
                bar.update()

        teacher = report.teacher if report is not None else None
        with tqdm(total=len(recipes), desc="students", unit=" runs") as bar:
            try:
                first = {submit(recipe): recipe for recipe in recipes if recipe not in tail}
                embedding = pool.submit(_embed_quietly, report, teacher) if teacher else None
                collect(first)
                if embedding is not None:  # done before the tail takes every core
                    try:
                        embedding.result()
                    except Exception as err:
                        raise LakdError(f"teacher {teacher}: {err or type(err).__name__}") from err
                try:
                    tail_wave = {submit(recipe): recipe for recipe in tail}
                except BrokenProcessPool as err:  # a worker died between the waves
                    raise LakdError(f"student {tail[0]}: the worker processes ended ({err})") from err
                collect(tail_wave)
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)
                raise
    return {recipe: done[recipe] for recipe in configs}


def _die_with_parent() -> None:
    """In a worker process: ask Linux to end it when the demo's process ends (killed, not only
    interrupted), so no orphaned student keeps training; elsewhere a no-op."""
    import ctypes
    import signal

    try:
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (AttributeError, OSError):
        pass


def _train_quietly(train_cfg, out: str, report: ReportConfig | None = None) -> tuple[Path, str]:
    """One student in a worker process (then embedded ahead of ``report`` when it holds it): the
    trainer's bar and messages kept out of the terminal; its last message (what it trained, its
    final metrics) returned."""
    from lakd.report.build import embed_ahead
    from lakd.train import train

    messages: list[str] = []
    with contextlib.redirect_stderr(io.StringIO()):
        path = train(train_cfg, out=out, echo=messages.append)
        checkpoint = str(Path(out) / "student.pt")
        if report is not None and checkpoint in report.students:
            embed_ahead(report, checkpoint)
    return path, messages[-1] if messages else f"trained into {out}"


def _embed_quietly(report: ReportConfig, model: str) -> None:
    """``model`` embedded ahead of ``report`` in a worker process, one torch thread, no progress bar."""
    import torch

    from lakd.report.build import embed_ahead

    torch.set_num_threads(1)
    with contextlib.redirect_stderr(io.StringIO()):
        embed_ahead(report, model)


TABLE_COLUMNS = {
    "R@1 i->t": "retrieval/text_retrieval_recall@1",
    "R@1 t->i": "retrieval/image_retrieval_recall@1",
    "zero-shot": "zeroshot/acc1",
    "basic": "probes/acc_basic",
    "binding": "probes/acc_binding",
    "spatial": "probes/acc_spatial",
    "negation": "probes/acc_negation",
}
GEOMETRY_COLUMNS = {
    "offset img": "image.offset_ratio",
    "offset txt": "text.offset_ratio",
    "gap": "image_vs_text.gap_norm",
    "conformity r img": "image.conformity_r",
    "CKA img": "alignment.image.cka",
}


def summary_table(teacher: Path, students: dict[str, Path], report: Path):
    """One row per model: the final evaluation of its run and its geometry in the report."""
    import pandas as pd

    from lakd.analysis.result import GeometryResult

    metrics = json.loads((report / "metrics.json").read_text(encoding="utf-8"))
    geometry = {name: GeometryResult.from_dict(result).scalars() for name, result in metrics["results"].items()}
    rows = {}
    for name, run in {"teacher": teacher, **students}.items():
        evaluation = final_eval(run)
        row = {column: evaluation.get(key) for column, key in TABLE_COLUMNS.items()}
        row.update({column: geometry.get(name, {}).get(key) for column, key in GEOMETRY_COLUMNS.items()})
        rows[name] = row
    return pd.DataFrame.from_dict(rows, orient="index")
