"""The recipe sweep on the shapes world: the demo's teacher and students, over several seeds.

    python experiments/shapes/sweep.py                       # 3 seeds x 5 recipes (about an hour or more on 2 cores)
    python experiments/shapes/sweep.py --quick               # tiny budgets, a couple of minutes
    python experiments/shapes/sweep.py --seeds 0 1 2 --recipes none fd whitened_fd \\
        --cache-dir /tmp/lakdcache --work runs/shapes-sweep --results experiments/results
    python experiments/shapes/sweep.py --table               # the README table from the summary CSV

1. The teacher is exactly ``lakd demo``'s (:func:`lakd.demo.prepare_teacher` with seed 0), trained
   once and cached under ``--cache-dir`` (the demo's cache: a teacher the demo trained is reused),
   with its embeddings of the students' training data (beside the cached teacher) and its whitening
   statistics (into ``WORK/whitening``).
2. For each seed and recipe, a student with the demo's student settings and that seed
   (:func:`lakd.demo.student_config`; the same step budget for every run), trained by
   :func:`lakd.train.train` into ``WORK/<recipe>-seed<s>``. A finished run with the same
   configuration is reused; an unfinished one is resumed from its checkpoint or trained again.
3. The last ``eval`` line of each run's ``metrics.jsonl`` (and of the teacher's run) gives the
   numbers: retrieval R@1 both ways, zero-shot top-1, the four probe families and the key geometry
   metrics (:data:`KEY_METRICS`).
4. ``RESULTS/shapes_recipes.csv`` (one row per recipe and seed, plus the teacher),
   ``RESULTS/shapes_recipes_summary.csv`` (per recipe and metric: mean, std over seeds, n, and the
   paired difference against ``fd`` over the seeds with a 95% paired-t interval),
   ``RESULTS/shapes_recipes.png`` (each key metric per recipe: mean, std over seeds as error bars,
   the seeds as dots, the teacher as a dashed line, the probes' chance as a dotted line) and
   ``RESULTS/shapes_recipes.json`` (the command, date, machine, lakd version, timings and every
   number of every final evaluation line).
   Every file is written atomically (:mod:`lakd.io`).

``--quick`` uses the demo's quick budgets and, unless told otherwise, writes into
``runs/shapes-sweep-quick`` (runs and results), so the committed results are never replaced by a
quick run. With 3 seeds a paired-t interval has 2 degrees of freedom (t = 4.30): it is wide, and a
difference whose interval contains 0 is within the seed-to-seed noise.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(REPO))

import lakd  # noqa: E402
from experiments import common  # noqa: E402
from experiments.common import (  # noqa: E402
    LEVEL,
    ExperimentOptions,
    experiment_options,
    experiment_parser,
    git_state,
    machine_info,
    num,
    paired_interval,  # noqa: F401  (part of this script's interface: tests/test_sweep.py)
    train_or_reuse,
    write_csv,
)
from lakd.demo import RECIPES, DemoConfig, final_eval, prepare_teacher, student_config  # noqa: E402
from lakd.errors import LakdError  # noqa: E402
from lakd.io import atomic_path, write_json  # noqa: E402

BASELINE = "fd"
STEM = "shapes_recipes"
# label -> key of the final evaluation line, in the order of the tables and the plot
TASK_METRICS: dict[str, str] = {
    "R@1 i->t": "retrieval/text_retrieval_recall@1",
    "R@1 t->i": "retrieval/image_retrieval_recall@1",
    "zero-shot": "zeroshot/acc1",
    "probe basic": "probes/acc_basic",
    "probe binding": "probes/acc_binding",
    "probe spatial": "probes/acc_spatial",
    "probe negation": "probes/acc_negation",
}
GEOMETRY_METRICS: dict[str, str] = {
    "offset ratio img": "geometry/image.offset_ratio",
    "offset ratio txt": "geometry/text.offset_ratio",
    "gap norm": "geometry/image_vs_text.gap_norm",
    "conformity r img": "geometry/image.conformity_r",
    "conformity r txt": "geometry/text.conformity_r",
    "AD pass img": "geometry/image.ad_pass_rate",
    "CKA img": "geometry/alignment.image.cka",
    "CKA txt": "geometry/alignment.text.cka",
    "kNN overlap img": "geometry/alignment.image.knn_overlap",
    "kNN overlap txt": "geometry/alignment.text.knn_overlap",
}
KEY_METRICS: dict[str, str] = {**TASK_METRICS, **GEOMETRY_METRICS}
ID_COLUMNS = ("model", "recipe", "seed", "run", "step")


# ---- statistics (experiments/common.py, with this sweep's metrics and baseline) ------------------


def summarize(table: pd.DataFrame, metrics: dict[str, str] | None = None, *, baseline: str = BASELINE, level: float = LEVEL) -> pd.DataFrame:
    """:func:`experiments.common.summarize` over :data:`KEY_METRICS` against ``fd`` (the teacher unpaired)."""
    return common.summarize(table, metrics or KEY_METRICS, baseline=baseline, level=level)


def markdown_table(summary: pd.DataFrame, metrics: dict[str, str] | None = None, *, baseline: str = BASELINE) -> str:
    """:func:`experiments.common.markdown_table` over :data:`KEY_METRICS` against ``fd``."""
    return common.markdown_table(summary, metrics or KEY_METRICS, baseline=baseline)


# ---- files --------------------------------------------------------------------------------------


def plot(
    table: pd.DataFrame,
    summary: pd.DataFrame,
    path: Path,
    metrics: dict[str, str] | None = None,
    chance: dict[str, float | None] | None = None,
) -> None:
    """Each key metric per recipe: mean with std over seeds as error bars, the seeds as dots, the
    teacher as a dashed grey line (when it has the metric), chance (``chance``, by key) as a dotted
    red line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = {label: key for label, key in (metrics or KEY_METRICS).items() if key in table.columns}
    recipes = [m for m in dict.fromkeys(table["model"]) if m != "teacher"]
    cols = 4
    rows = math.ceil(len(metrics) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False)
    teacher = table[table["model"] == "teacher"]
    x = np.arange(len(recipes))
    for ax, (label, key) in zip(axes.flat, metrics.items(), strict=False):
        part = summary[summary["key"] == key].set_index("model")
        means = [part["mean"].get(r, math.nan) for r in recipes]
        stds = [part["std"].get(r, math.nan) for r in recipes]
        ax.errorbar(x, means, yerr=np.nan_to_num(stds), fmt="o", color="C0", capsize=4, zorder=3)
        for i, recipe in enumerate(recipes):
            seeds = pd.to_numeric(table[table["model"] == recipe][key], errors="coerce").dropna()
            ax.scatter(np.full(len(seeds), i + 0.15), seeds, s=10, color="C1", alpha=0.6, zorder=2)
        if len(teacher) and pd.notna(teacher[key].iloc[0]):
            ax.axhline(float(teacher[key].iloc[0]), color="0.4", linestyle="--", linewidth=1, label="teacher")
        if (chance or {}).get(key) is not None:
            ax.axhline(float(chance[key]), color="C3", linestyle=":", linewidth=1, label="chance")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="best")
        ax.set_title(label, fontsize=9)
        ax.set_xticks(x, recipes, rotation=30, fontsize=7)
        ax.tick_params(axis="y", labelsize=7)
        ax.grid(axis="y", alpha=0.3)
    for ax in list(axes.flat)[len(metrics):]:
        ax.axis("off")
    n = int(table[table["model"] != "teacher"].groupby("model")["seed"].nunique().max() or 0)
    fig.suptitle(f"shapes world: students per recipe (mean ± std over {n} seeds; dots: seeds; dashed: teacher)", fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


# ---- the sweep ----------------------------------------------------------------------------------


@dataclass
class SweepOptions(ExperimentOptions):
    """What to run and where (module docstring; the fields: :class:`ExperimentOptions`)."""

    WORK: ClassVar[str] = "shapes-sweep"

    recipes: tuple[str, ...] = RECIPES


def _row(model: str, recipe: str, seed: int | None, run: Path, evaluation: dict[str, Any]) -> dict[str, Any]:
    row = {"model": model, "recipe": recipe, "seed": seed, "run": str(run), "step": evaluation.get("step")}
    row.update({key: evaluation.get(key) for key in KEY_METRICS.values()})
    return row


def run_sweep(opts: SweepOptions, echo: Callable[[str], None] = print) -> dict[str, Path]:
    """Run the sweep (module docstring); returns the files written by kind."""
    unknown = [r for r in opts.recipes if r not in RECIPES]
    if unknown:
        raise LakdError(f"recipes: unknown {', '.join(unknown)} (choose from {', '.join(RECIPES)})")
    if not opts.seeds:
        raise LakdError("seeds: give at least one")
    started = time.time()
    date = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    machine_start = machine_info()
    work = opts.work_dir
    work.mkdir(parents=True, exist_ok=True)
    if not (work / ".gitignore").exists():  # run folders and checkpoints are never committed
        (work / ".gitignore").write_text("*\n", encoding="utf-8")

    def demo(seed: int) -> DemoConfig:
        return DemoConfig(seed=seed, cache_dir=opts.cache_dir, quick=opts.quick, device=opts.device)

    # 1. the teacher, its embeddings of the students' training data and its whitening statistics
    t0 = time.time()
    prepared = prepare_teacher(demo(0), work / "whitening" / "teacher.safetensors", echo)
    teacher, store, whitening = prepared.run, prepared.store, prepared.whitening
    teacher_seconds = time.time() - t0

    # 2. the students, seed by seed so that an interrupted sweep has whole seeds
    rows = [_row("teacher", "teacher", None, teacher, final_eval(teacher))]
    raw: dict[str, Any] = {"teacher": {"run": str(teacher), "final_eval": final_eval(teacher)}}
    runs: dict[str, Any] = {}
    for seed in opts.seeds:
        for recipe in opts.recipes:
            cfg = student_config(demo(seed), recipe, store=store.path, teacher=teacher / "student.pt", whitening=whitening)
            run = work / f"{recipe}-seed{seed}"
            echo(f"student {recipe} seed {seed}: {cfg.student.model}, {cfg.schedule.steps} steps -> {run}")
            t0 = time.time()
            done = train_or_reuse(cfg, run, echo)
            seconds = round(time.time() - t0, 1)
            evaluation = final_eval(run)
            echo(
                f"student {recipe} seed {seed}: {done} in {seconds:.0f} s; "
                + ", ".join(f"{label} {num(evaluation.get(key) or math.nan)}" for label, key in TASK_METRICS.items())
            )
            rows.append(_row(recipe, recipe, seed, run, evaluation))
            runs[run.name] = {"recipe": recipe, "seed": seed, "run": str(run), "action": done, "seconds": seconds,
                              "steps": cfg.schedule.steps, "load_average": [round(v, 2) for v in os.getloadavg()]}
            raw[run.name] = {"final_eval": evaluation, "teacher_line": _teacher_line(run)}

    # 3. the files; chance of each probe family (a property of the probe set) from the teacher's line
    chance = {key: final_eval(teacher).get(key.replace("/acc_", "/chance_")) for key in TASK_METRICS.values() if key.startswith("probes/")}
    table = pd.DataFrame(rows, columns=[*ID_COLUMNS, *KEY_METRICS.values()])
    summary = summarize(table)
    out = opts.results_dir
    files = {
        "table": out / f"{STEM}.csv",
        "summary": out / f"{STEM}_summary.csv",
        "plot": out / f"{STEM}.png",
        "record": out / f"{STEM}.json",
    }
    write_csv(table, files["table"])
    write_csv(summary, files["summary"])
    plot(table, summary, files["plot"], chance=chance)
    record = {
        "command": shlex.join(["python", "experiments/shapes/sweep.py", *opts.command[1:]]),
        "date": date,
        "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "wall_seconds": round(time.time() - started, 1),
        "lakd": lakd.__version__,
        "git": git_state(["lakd", "experiments/common.py", "experiments/shapes/sweep.py"]),
        "machine": {**machine_start, "load_average_end": [round(v, 2) for v in os.getloadavg()]},
        "settings": {
            "seeds": list(opts.seeds),
            "recipes": list(opts.recipes),
            "quick": opts.quick,
            "device": opts.device,
            "cache_dir": opts.cache_dir,
            "work": str(work),
            "teacher": str(teacher),
            "teacher_seconds": round(teacher_seconds, 1),
            "store": str(store.path),
            "whitening": str(whitening),
            "baseline": BASELINE,
            "interval": f"{LEVEL:.0%} paired t over seeds (scipy.stats.t, n - 1 degrees of freedom)",
        },
        "key_metrics": KEY_METRICS,
        "chance": chance,
        "runs": runs,
        "raw": raw,
        "summary": json.loads(summary.to_json(orient="records")),
    }
    write_json(files["record"], record)
    echo(markdown_table(summary))
    for kind, path in files.items():
        echo(f"{kind}: {path}")
    return files


def _teacher_line(run: Path) -> dict[str, Any] | None:
    """The run's ``teacher`` line: the teacher's values on the same evaluation, for reference."""
    for line in (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        if record.get("kind") == "teacher":
            return record
    return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = experiment_parser(
        __doc__.splitlines()[0], recipes=RECIPES, default_recipes=RECIPES, work="shapes-sweep",
        quick="the demo's quick budgets (a couple of minutes)",
    )
    args = parser.parse_args(argv)
    opts = SweepOptions(**experiment_options(args, "sweep.py", argv))
    if args.table:
        summary = pd.read_csv(opts.results_dir / f"{STEM}_summary.csv")
        print(markdown_table(summary), end="")
        return 0
    try:
        run_sweep(opts)
    except LakdError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
