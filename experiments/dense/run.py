"""Dense alignment on the shapes world: does the DCSM head read more than the pooled cosine, and
does a student distilled with ``dense`` keep more of it than one distilled with ``fd``?

    python experiments/dense/run.py                          # teacher + 2 recipes x 3 seeds (about 50 min, 1 thread)
    python experiments/dense/run.py --quick                  # tiny budgets, about 20 s (what the test runs)
    python experiments/dense/run.py --recipes none fd dense --seeds 0 1 2 \\
        --cache-dir /tmp/lakdcache --work runs/dense-exp --results experiments/results
    python experiments/dense/run.py --table                  # the README tables from the result files

1. The teacher: ``experiments/dense/teacher.yaml`` (the demo teacher's settings with a ViT image
   tower, ``lakd:tiny-vit``, whose patch tokens the maps read), trained by :func:`lakd.train.train`
   once and cached under ``--cache-dir`` (default ``~/.cache/lakd``) as ``dense-teacher-<key>``, the
   key naming its configuration and lakd's version (:func:`lakd.demo.teacher_key`).
2. The students: ``experiments/dense/student.yaml`` (``lakd:micro-vit``: the teacher's 8 x 8 patch
   grid and tokenizer) distilled online from the teacher with each recipe (default ``fd`` and
   ``dense``; ``dense`` = ``fd`` + the token-by-patch map term, docs/losses.md) and seed, the same
   step budget for every run, into ``WORK/<recipe>-seed<s>``. Finished runs of the same configuration
   are reused, unfinished ones resumed (:func:`experiments.common.train_or_reuse`).
3. The evaluation: ``lakd eval --task dense-probes`` as a library call
   (:func:`lakd.eval.evaluate`) of every model on :data:`PROBES` (2,000 probe scenes, 500 per
   condition): probe accuracy per condition with the pooled cosine and with the DCSM head
   (:mod:`lakd.eval.dense`, its default options: width 128, 300 steps on 1,000 other probe scenes),
   the head's seed being the row's seed. Models: the teacher and, as a control, ``init``: the
   teacher's architecture at the initialisation it was trained from (what the head reads from a
   model that has learned nothing: the captions' form), each with head seeds = ``--seeds``; each
   student with its own seed. Result files: ``WORK/evals/<model>-seed<s>.json``, reused when newer
   than the model and made with the same options.
4. The map distance of each student and of ``init`` to the teacher (:func:`map_distance`: the
   ``dense`` loss on every evaluated probe image with each of its captions), into
   ``WORK/evals/<model>[-seed<s>].maps.json``, reused likewise: did ``dense`` bring the maps closer?
5. ``RESULTS/dense_probes.csv`` (one row per model, seed, condition and scorer),
   ``RESULTS/dense_probes_summary.csv`` (per model and metric: mean, std over seeds, n, the t interval
   of the mean; for a student other than ``fd``, the paired difference against ``fd`` over the seeds
   with its 95% paired-t interval; metrics: each scorer's accuracy and the head's lift, head minus
   pooled, per condition, and the map distance) and ``RESULTS/dense_probes.json`` (command, date,
   machine, timings, the training runs' final evaluations, every evaluation result, the map
   distances). A reused run or result keeps, as ``seconds_made``, the seconds it took when it was
   made (from the previous record; ``made_seconds`` sums them). Every file is written atomically
   (:mod:`lakd.io`).

``--quick`` shrinks every budget and, unless told otherwise, writes into ``runs/dense-exp-quick``
(runs and results), so the committed results are never replaced by a quick run. With 3 seeds a t
interval has 2 degrees of freedom (t = 4.30): it is wide, and a difference whose interval contains 0
is within the seed-to-seed noise. The method: Kang et al., "Is CLIP ideal? No. Can we fix it? Yes!"
(ICCV 2025, arXiv 2503.08723), as implemented in docs/dense.md.
"""

from __future__ import annotations

import datetime
import json
import os
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
if str(REPO) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(REPO))

import lakd  # noqa: E402
from experiments.common import (  # noqa: E402
    ExperimentOptions,
    experiment_options,
    experiment_parser,
    git_state,
    machine_info,
    markdown_table,
    num,
    summarize,
    train_or_reuse,
    write_csv,
)
from lakd.data.shapes import PROBE_CONDITIONS  # noqa: E402
from lakd.errors import LakdError  # noqa: E402
from lakd.io import write_json  # noqa: E402

STEM = "dense_probes"
TEACHER_CONFIG = HERE / "teacher.yaml"
STUDENT_CONFIG = HERE / "student.yaml"
RECIPES = ("none", "fd", "dense")
DEFAULT_RECIPES = ("fd", "dense")
BASELINE = "fd"
CONTROLS = ("teacher", "init")  # not students: no paired difference against fd
PROBES = "shapes:probes?n=2000"  # seed 0; the head trains on shapes:probes?n=1000&seed=1 (other scenes)
CONDITIONS = (*PROBE_CONDITIONS, "all")
SCORERS = {"pooled": "pooled_acc", "head": "acc"}  # scorer -> metric prefix of dense-probes
COLUMNS = ("model", "role", "seed", "head_seed", "condition", "scorer", "accuracy", "chance", "n", "model_spec", "eval_file")

QUICK: dict[str, str] = {  # overrides of both training configs for --quick
    "data.train": "shapes:train?n=64",
    "data.batch_size": "16",
    "data.workers": "0",
    "eval.data": "shapes:val?n=48",
    "eval.probes": "shapes:probes?n=16",
    "track.sample_size": "48",
    "schedule.warmup": "1",
    "log_every": "2",
}
QUICK_STEPS = {"teacher": 6, "student": 4}
QUICK_PROBES = "shapes:probes?n=24"
QUICK_HEAD = {"head_steps": 3, "head_batch": 8, "head_data": "shapes:probes?n=32&seed=1"}

# label -> metric key of the wide table (one row per model and seed)
ACCURACY_METRICS = {f"{c} {s}": f"{s}/{c}" for c in CONDITIONS for s in SCORERS}
LIFT_METRICS = {f"{c} head − pooled": f"lift/{c}" for c in CONDITIONS}
MAP_METRICS = {"map distance to the teacher": "maps/distance"}  # map_distance on the evaluated probes
METRICS = {**ACCURACY_METRICS, **LIFT_METRICS, **MAP_METRICS}
TRAINING_METRICS = {  # the training runs' own final evaluation (the JSON record; --table)
    "R@1 i->t": "retrieval/text_retrieval_recall@1",
    "R@1 t->i": "retrieval/image_retrieval_recall@1",
    "zero-shot": "zeroshot/acc1",
}


@dataclass
class DenseExperiment(ExperimentOptions):
    """What to run and where (module docstring; the shared fields: :class:`ExperimentOptions`),
    and ``threads``: torch's CPU threads."""

    WORK: ClassVar[str] = "dense-exp"

    recipes: tuple[str, ...] = DEFAULT_RECIPES
    threads: int = 1
    command: list[str] = field(default_factory=lambda: ["run.py", *sys.argv[1:]])

    def __post_init__(self) -> None:
        unknown = [r for r in self.recipes if r not in RECIPES]
        if unknown:
            raise LakdError(f"recipes: unknown {', '.join(unknown)} (choose from {', '.join(RECIPES)})")
        if not self.recipes:
            raise LakdError("recipes: give at least one")
        if not self.seeds:
            raise LakdError("seeds: give at least one")
        if any(s < 0 for s in self.seeds):
            raise LakdError(f"seeds: must be >= 0, got {list(self.seeds)}")
        if self.threads < 1:
            raise LakdError(f"threads: must be positive, got {self.threads}")

    @property
    def probes(self) -> str:
        return QUICK_PROBES if self.quick else PROBES

    def overrides(self, role: str) -> list[str]:
        values = {"device": self.device, "precision.threads": str(self.threads)}
        if self.quick:
            steps = str(QUICK_STEPS[role])
            values |= QUICK | {"schedule.steps": steps, "eval.every": steps, "checkpoint.every": steps}
        return [f"{key}={value}" for key, value in values.items()]

    def head_options(self, seed: int):
        from lakd.eval.dense import DenseOptions

        return DenseOptions(head_seed=seed, **(QUICK_HEAD if self.quick else {}))


def teacher_config(opts: DenseExperiment):
    from lakd.train import load_train_config

    return load_train_config(str(TEACHER_CONFIG), opts.overrides("teacher"))


def student_config(opts: DenseExperiment, recipe: str, seed: int, teacher: Path):
    from lakd.train import load_train_config

    extra = [f"teacher.model={teacher}", f"recipe={recipe}", f"seed={seed}"]
    return load_train_config(str(STUDENT_CONFIG), [*opts.overrides("student"), *extra])


# ---- evaluation ---------------------------------------------------------------------------------


def _reusable(path: Path, spec: str, data: str, options, checkpoint: Path | None) -> bool:
    """A result file of ``dense-probes`` on ``data`` with these head options, newer than ``checkpoint``."""
    if not path.is_file() or (checkpoint is not None and path.stat().st_mtime < checkpoint.stat().st_mtime):
        return False
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    head = record.get("lakd", {}).get("head", {})
    wanted = {"width": options.head_width, "steps": options.head_steps, "batch": options.head_batch,
              "lr": options.head_lr, "seed": options.head_seed, "data": options.head_data}
    return (
        record.get("dataset") == data
        and record.get("lakd", {}).get("model_spec") == spec
        and {key: head.get(key) for key in wanted} == wanted
    )


def evaluate_model(opts: DenseExperiment, spec: str, seed: int, out: Path, checkpoint: Path | None) -> tuple[dict, str]:
    """The ``dense-probes`` result of model ``spec`` with head seed ``seed`` (reused or computed)."""
    from lakd.eval import EvalConfig, evaluate

    options = opts.head_options(seed)
    if _reusable(out, spec, opts.probes, options, checkpoint):
        return json.loads(out.read_text(encoding="utf-8")), "reused"
    cfg = EvalConfig(model=spec, data=opts.probes, task="dense-probes", out=str(out), device=opts.device, dense=options)
    return evaluate(cfg)["dense-probes"], "evaluated"


def map_distance(spec: str, teacher: str, data: str, device: str, batch_size: int = 64) -> dict[str, Any]:
    """How far model ``spec``'s token-by-patch maps are from the teacher's on ``data``: the ``dense``
    loss (:func:`lakd.distill.dense.dense_map_loss`, the mean over pairs, real tokens and the model's
    patches of the squared difference of cosines) over every probe image with each of its captions,
    each model reading the images through its own preprocessing and the captions through its own
    tokenizer (which the loss checks are the same)."""
    import torch

    from lakd.data import open_source
    from lakd.distill.dense import DenseFeatures, dense_map_loss
    from lakd.models.encode import collate_source
    from lakd.models.factory import load_model
    from lakd.models.tokens import image_tokens, text_tokens

    source = open_source(data)
    models = [load_model(name, device=device) for name in (spec, teacher)]
    batches = [collate_source(source, preprocess, tokenizer, batch_size) for _, preprocess, tokenizer in models]
    total, weight = 0.0, 0
    for pair in zip(*batches, strict=True):
        features = []
        for (model, _, _), batch in zip(models, pair, strict=True):
            with torch.no_grad():
                image = image_tokens(model.eval(), batch.images.to(device))
                text = text_tokens(model, batch.tokens.to(device))
            rows = torch.tensor(batch.text_item, device=image.patches.device)
            features.append(DenseFeatures(image.patches[rows], image.grid, text.tokens, text.mask, batch.tokens))
        count = int((features[0].mask & features[1].mask).sum())
        total += float(dense_map_loss(*features)) * count
        weight += count
    return {"distance": total / weight, "pairs": sum(len(b.text_item) for b in batches[0]), "tokens": weight}


def map_distance_cached(opts: DenseExperiment, spec: str, teacher: Path, out: Path, checkpoint: Path | None) -> tuple[dict, str]:
    """:func:`map_distance` of ``spec`` to the teacher on the evaluated probes, reused from ``out`` when
    it is newer than both models and was made with the same models and data."""
    wanted = {"model_spec": spec, "teacher": str(teacher), "data": opts.probes}
    newest = max(p.stat().st_mtime for p in (teacher, checkpoint) if p is not None)
    if out.is_file() and out.stat().st_mtime >= newest:
        try:
            record = json.loads(out.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            record = {}
        if {key: record.get(key) for key in wanted} == wanted:
            return record, "reused"
    record = {**wanted, **map_distance(spec, str(teacher), opts.probes, opts.device)}
    write_json(out, record)
    return record, "computed"


def long_rows(model: str, role: str, seed: int, record: dict, out: Path) -> list[dict[str, Any]]:
    """One row per condition (and ``all``) and scorer of one ``dense-probes`` result."""
    metrics, details = record["metrics"], record["lakd"]
    rows = []
    for condition in CONDITIONS:
        suffix = "" if condition == "all" else f"_{condition}"
        n = details["n_items"] if condition == "all" else details["n_per_condition"].get(condition, 0)
        for scorer, prefix in SCORERS.items():
            rows.append({
                "model": model, "role": role, "seed": seed, "head_seed": details["head"]["seed"],
                "condition": condition, "scorer": scorer, "accuracy": metrics.get(f"{prefix}{suffix}"),
                "chance": metrics.get(f"chance{suffix}"), "n": n, "model_spec": details["model_spec"],
                "eval_file": str(out),
            })
    return rows


def wide_table(long: pd.DataFrame, distances: dict[str, float] | None = None) -> pd.DataFrame:
    """One row per model and seed: ``<scorer>/<condition>`` accuracies, ``lift/<condition>`` (head
    minus pooled) and, given ``distances`` (``"<model>-seed<s>"`` -> :func:`map_distance`),
    ``maps/distance``; in the models' order of ``long``."""
    frame = long.assign(key=long["scorer"] + "/" + long["condition"])
    wide = frame.pivot_table(index=["model", "seed"], columns="key", values="accuracy", sort=False).reset_index()
    for condition in CONDITIONS:
        wide[f"lift/{condition}"] = wide[f"head/{condition}"] - wide[f"pooled/{condition}"]
    if distances is not None:
        wide["maps/distance"] = [distances.get(f"{m}-seed{s}") for m, s in zip(wide["model"], wide["seed"], strict=True)]
    order = {m: i for i, m in enumerate(dict.fromkeys(long["model"]))}
    return wide.sort_values(["model", "seed"], key=lambda c: c.map(order) if c.name == "model" else c).reset_index(drop=True)


def summary_of(long: pd.DataFrame, distances: dict[str, float] | None = None) -> pd.DataFrame:
    """Per model and metric (:data:`METRICS`): mean, std, n, t interval of the mean; paired against ``fd``."""
    return summarize(wide_table(long, distances), METRICS, baseline=BASELINE, unpaired=CONTROLS, mean_interval=True)


def tables(summary: pd.DataFrame, training: pd.DataFrame | None = None) -> str:
    """The README's tables: accuracy per condition and scorer (mean ± std; students against ``fd``),
    the head's lift (mean and 95% t interval; students against ``fd``), the map distance to the
    teacher and, given the training runs' final evaluations, their retrieval and zero-shot."""
    parts = [
        markdown_table(summary, ACCURACY_METRICS, baseline=BASELINE, unpaired=CONTROLS),
        markdown_table(summary, LIFT_METRICS, baseline=BASELINE, unpaired=CONTROLS, cell="interval"),
    ]
    if "maps/distance" in set(summary["key"]):
        parts.append(markdown_table(summary[summary["model"] != "teacher"], MAP_METRICS, baseline=BASELINE, unpaired=CONTROLS))
    if training is not None and len(training):
        parts.append(markdown_table(summarize(training, TRAINING_METRICS, baseline=BASELINE), TRAINING_METRICS, baseline=BASELINE))
    return "\n".join(parts)


def training_table(record: dict) -> pd.DataFrame:
    """The training runs' final evaluations (``record["runs"]``): one row per run."""
    rows = [{"model": r["model"], "seed": r["seed"], **{k: r["final_eval"].get(k) for k in TRAINING_METRICS.values()}}
            for r in record["runs"].values()]
    return pd.DataFrame(rows)


# ---- the experiment -----------------------------------------------------------------------------


def run_experiment(opts: DenseExperiment, echo: Callable[[str], None] = print) -> dict[str, Path]:
    """Run the experiment (module docstring); returns the files written by kind."""
    import torch

    from lakd.demo import DemoConfig, cache_root, final_eval, teacher_key

    torch.set_num_threads(opts.threads)
    started = time.time()
    date = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    machine_start = machine_info()
    work = opts.work_dir
    work.mkdir(parents=True, exist_ok=True)
    if not (work / ".gitignore").exists():  # run folders and checkpoints are never committed
        (work / ".gitignore").write_text("*\n", encoding="utf-8")
    runs: dict[str, dict[str, Any]] = {}

    def train(name: str, model: str, seed: int | None, cfg, run: Path) -> None:
        echo(f"{name}: {cfg.student.model}, recipe {cfg.recipe if isinstance(cfg.recipe, str) else 'custom'}, "
             f"{cfg.schedule.steps} steps -> {run}")
        t0 = time.time()
        action = train_or_reuse(cfg, run, echo)
        seconds = round(time.time() - t0, 1)
        evaluation = final_eval(run)
        echo(f"{name}: {action} in {seconds:.0f} s; "
             + ", ".join(f"{label} {num(evaluation.get(key))}" for label, key in TRAINING_METRICS.items()))
        runs[name] = {"model": model, "seed": seed, "run": str(run), "action": action, "seconds": seconds,
                      "steps": cfg.schedule.steps, "load_average": [round(v, 2) for v in os.getloadavg()],
                      "final_eval": evaluation}

    # 1. the teacher (cached), 2. the students, seed by seed so that an interrupted run has whole seeds
    t_cfg = teacher_config(opts)
    teacher_dir = cache_root(DemoConfig(cache_dir=opts.cache_dir)) / f"dense-teacher-{teacher_key(t_cfg)}"
    train("teacher", "teacher", None, t_cfg, teacher_dir)
    teacher = teacher_dir / "student.pt"
    students: list[tuple[str, int, Path]] = []
    for seed in opts.seeds:
        for recipe in opts.recipes:
            run = work / f"{recipe}-seed{seed}"
            train(f"student {recipe} seed {seed}", recipe, seed, student_config(opts, recipe, seed, teacher), run)
            students.append((recipe, seed, run))

    # 3. dense-probes of every model
    jobs = [("teacher", "teacher", s, str(teacher), teacher) for s in opts.seeds]
    jobs += [("init", "control", s, t_cfg.student.model, None) for s in opts.seeds]
    jobs += [(recipe, "student", s, str(run / "student.pt"), run / "student.pt") for recipe, s, run in students]
    rows, evals, raw = [], {}, {}
    for model, role, seed, spec, checkpoint in jobs:
        out = work / "evals" / f"{model}-seed{seed}.json"
        t0 = time.time()
        record, action = evaluate_model(opts, spec, seed, out, checkpoint)
        seconds = round(time.time() - t0, 1)
        new = long_rows(model, role, seed, record, out)
        echo(f"dense-probes {model} seed {seed}: {action} in {seconds:.0f} s; "
             + ", ".join(f"{r['condition']} {r['scorer']} {num(r['accuracy'])}" for r in new if r["condition"] != "all"))
        rows += new
        evals[out.stem] = {"model": model, "seed": seed, "model_spec": spec, "action": action, "seconds": seconds,
                           "load_average": [round(v, 2) for v in os.getloadavg()]}
        raw[out.stem] = record

    # the map distance to the teacher of each student and of the control (once: it has no head)
    maps, distances = {}, {}
    for model, _, seed, spec, checkpoint in jobs:
        if model == "teacher":
            continue
        name = "init" if model == "init" else f"{model}-seed{seed}"
        if name not in maps:
            t0 = time.time()
            record, action = map_distance_cached(opts, spec, teacher, work / "evals" / f"{name}.maps.json", checkpoint)
            seconds = round(time.time() - t0, 1)
            echo(f"map distance {name}: {action} in {seconds:.0f} s; {num(record['distance'], 4)} over {record['pairs']} pairs")
            maps[name] = {**record, "action": action, "seconds": seconds}
        distances[f"{model}-seed{seed}"] = maps[name]["distance"]

    # 4. the files; a reused entry keeps the seconds it took when it was made (the previous record)
    long = pd.DataFrame(rows, columns=list(COLUMNS))
    summary = summary_of(long, distances)
    out_dir = opts.results_dir
    files = {"table": out_dir / f"{STEM}.csv", "summary": out_dir / f"{STEM}_summary.csv", "record": out_dir / f"{STEM}.json"}
    made = _carry_seconds(files["record"], {"runs": runs, "evals": evals, "maps": maps})
    write_csv(long, files["table"])
    write_csv(summary, files["summary"])
    record = {
        "command": shlex.join(["python", "experiments/dense/run.py", *opts.command[1:]]),
        "date": date,
        "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "wall_seconds": round(time.time() - started, 1),
        "train_seconds": round(sum(r["seconds"] for r in runs.values()), 1),
        "eval_seconds": round(sum(e["seconds"] for e in evals.values()), 1),
        "maps_seconds": round(sum(m["seconds"] for m in maps.values()), 1),
        "made_seconds": made,
        "lakd": lakd.__version__,
        "git": git_state(["lakd", "experiments/common.py", "experiments/dense"]),
        "machine": {**machine_start, "load_average_end": [round(v, 2) for v in os.getloadavg()]},
        "settings": {
            "seeds": list(opts.seeds),
            "recipes": list(opts.recipes),
            "quick": opts.quick,
            "device": opts.device,
            "threads": opts.threads,
            "cache_dir": opts.cache_dir,
            "work": str(work),
            "teacher": str(teacher_dir),
            "teacher_config": str(TEACHER_CONFIG.relative_to(REPO)),
            "student_config": str(STUDENT_CONFIG.relative_to(REPO)),
            "overrides": {"teacher": opts.overrides("teacher"), "student": opts.overrides("student")},
            "probes": opts.probes,
            "head": {k: v for k, v in asdict(opts.head_options(0)).items() if k != "head_seed"},
            "head_seed": "the row's seed",
            "baseline": BASELINE,
            "interval": "95% t over seeds (scipy.stats.t, n - 1 degrees of freedom); paired by seed against fd",
        },
        "metrics": METRICS,
        "runs": runs,
        "evals": evals,
        "maps": maps,
        "raw": raw,
        "summary": json.loads(summary.to_json(orient="records")),
    }
    write_json(files["record"], record)
    echo(tables(summary, training_table(record)))
    for kind, path in files.items():
        echo(f"{kind}: {path}")
    return files


def _carry_seconds(previous_file: Path, sections: dict[str, dict[str, dict]]) -> dict[str, Any]:
    """Give every entry ``seconds_made``: its ``seconds`` when this run made it, else what the previous
    record (``previous_file``) says it took (None when unknown, e.g. a teacher trained outside the
    script); returns the sums per section and the count of unknown entries."""
    try:
        previous = json.loads(previous_file.read_text(encoding="utf-8")) if previous_file.is_file() else {}
    except (OSError, json.JSONDecodeError):
        previous = {}
    totals: dict[str, Any] = {"unknown": 0}
    for section, entries in sections.items():
        total = 0.0
        for name, entry in entries.items():
            if entry["action"] != "reused":
                entry["seconds_made"] = entry["seconds"]
            else:
                old = previous.get(section, {}).get(name, {}) if isinstance(previous, dict) else {}
                entry["seconds_made"] = old.get("seconds_made", old.get("seconds") if old.get("action", "reused") != "reused" else None)
            if entry["seconds_made"] is None:
                totals["unknown"] += 1
            else:
                total += entry["seconds_made"]
        totals[section] = round(total, 1)
    return totals


def main(argv: Sequence[str] | None = None) -> int:
    parser = experiment_parser(
        __doc__.splitlines()[0], recipes=RECIPES, default_recipes=DEFAULT_RECIPES, work="dense-exp",
        quick="tiny budgets (seconds)",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    args = parser.parse_args(argv)
    try:
        opts = DenseExperiment(**experiment_options(args, "run.py", argv), threads=args.threads)
        if args.table:
            return print_tables(opts.results_dir)
        run_experiment(opts)
    except LakdError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


def print_tables(results: Path) -> int:
    summary_file, record_file = results / f"{STEM}_summary.csv", results / f"{STEM}.json"
    if not summary_file.is_file():
        raise LakdError(f"{summary_file}: no such file (run the experiment first, or give --results)")
    training = training_table(json.loads(record_file.read_text(encoding="utf-8"))) if record_file.is_file() else None
    print(tables(pd.read_csv(summary_file), training), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
