"""What the experiment scripts share (``experiments/shapes/sweep.py``, ``experiments/dense/run.py``).

- Statistics over seeds: :func:`paired_interval` (a paired difference and its Student-t interval) and
  :func:`summarize` (per model and metric: mean, std over seeds, n, optionally the t interval of the
  mean, and the paired difference against a baseline model over the seeds both have).
- :func:`markdown_table`: the README tables from a summary.
- Files: :func:`write_csv` (atomic, full precision, :mod:`lakd.io`), :func:`machine_info` and
  :func:`git_state` for the JSON record of a run.
- :class:`ExperimentOptions`: what a script runs and where (seeds, recipes, quick budgets, folders),
  the base of each script's options; :func:`experiment_parser` and :func:`experiment_options` read
  them from the command line.
- Training runs: :func:`train_or_reuse` trains a configuration into a run folder, resumes an unfinished
  run of the same configuration, or reuses a finished one.

The scripts add the repository root to ``sys.path`` and import this file as ``experiments.common``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from lakd.errors import LakdError
from lakd.io import atomic_path

REPO = Path(__file__).resolve().parents[1]
LEVEL = 0.95
NO_DIFF = {"diff_mean": math.nan, "diff_std": math.nan, "diff_n": 0, "diff_low": math.nan, "diff_high": math.nan}


# ---- statistics ---------------------------------------------------------------------------------


def paired_interval(values: Sequence[float], baseline: Sequence[float], level: float = LEVEL) -> dict[str, float]:
    """The paired difference ``values - baseline`` (same seeds, same order): its mean, its standard
    deviation over the pairs, n, and the two-sided ``level`` interval of the mean from Student's t
    with n - 1 degrees of freedom (NaN bounds with fewer than 2 pairs)."""
    from scipy import stats

    diff = np.asarray(values, dtype=float) - np.asarray(baseline, dtype=float)
    diff = diff[np.isfinite(diff)]
    n = int(diff.size)
    if n == 0:
        return dict(NO_DIFF)
    mean = float(diff.mean())
    if n < 2:
        return {"diff_mean": mean, "diff_std": math.nan, "diff_n": n, "diff_low": math.nan, "diff_high": math.nan}
    sd = float(diff.std(ddof=1))
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)
    return {"diff_mean": mean, "diff_std": sd, "diff_n": n, "diff_low": mean - half, "diff_high": mean + half}


def summarize(
    table: pd.DataFrame,
    metrics: dict[str, str],
    *,
    baseline: str,
    level: float = LEVEL,
    unpaired: Sequence[str] = ("teacher",),
    mean_interval: bool = False,
) -> pd.DataFrame:
    """Per model (in the table's order) and metric: mean, std over seeds (ddof 1), n, and for a model
    other than ``baseline`` and those in ``unpaired`` the paired difference against ``baseline`` over
    the seeds both have (:func:`paired_interval`). ``table`` has a ``model`` and a ``seed`` column and
    one column per metric key; ``metrics`` maps labels to keys. ``mean_interval`` adds ``low`` and
    ``high``, the ``level`` t interval of the mean over seeds (for a column that is itself a paired
    difference, e.g. one scorer minus another on the same models, this is its paired-t interval)."""
    rows = []
    base = table[table["model"] == baseline].set_index("seed")
    for model in dict.fromkeys(table["model"]):
        part = table[table["model"] == model].set_index("seed")
        for label, key in metrics.items():
            if key not in part.columns:
                continue
            values = pd.to_numeric(part[key], errors="coerce").dropna()
            row: dict[str, Any] = {
                "model": model,
                "metric": label,
                "key": key,
                "mean": float(values.mean()) if len(values) else math.nan,
                "std": float(values.std(ddof=1)) if len(values) > 1 else math.nan,
                "n": int(len(values)),
            }
            if mean_interval:
                own = paired_interval(values.to_numpy(), np.zeros(len(values)), level)
                row.update({"low": own["diff_low"], "high": own["diff_high"]})
            if model != baseline and model not in unpaired and key in base.columns:
                both = pd.concat([pd.to_numeric(part[key], errors="coerce"), pd.to_numeric(base[key], errors="coerce")], axis=1, join="inner").dropna()
                row.update(paired_interval(both.iloc[:, 0].to_numpy(), both.iloc[:, 1].to_numpy(), level))
            else:
                row.update(NO_DIFF)
            rows.append(row)
    return pd.DataFrame(rows)


def num(value: float | None, digits: int = 3) -> str:
    """``value`` with ``digits`` decimals; empty for None and non-finite values."""
    return "" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def markdown_table(
    summary: pd.DataFrame,
    metrics: dict[str, str],
    *,
    baseline: str,
    unpaired: Sequence[str] = ("teacher",),
    cell: str = "std",
) -> str:
    """Two markdown tables, one row per metric: the values per model, and the paired difference of
    each other model (not ``baseline``, not in ``unpaired``) against ``baseline`` with its interval
    (``*``: the interval excludes 0). A value cell is ``mean ± std`` over seeds (``cell="std"``) or
    ``mean [low, high]`` (``cell="interval"``: the summary's t interval of the mean, ``mean_interval``
    of :func:`summarize`); a single value is printed alone."""
    if cell not in ("std", "interval"):
        raise LakdError(f"cell: {cell!r} is not std or interval")
    models = list(dict.fromkeys(summary["model"]))
    others = [m for m in models if m != baseline and m not in unpaired]
    cells = {(r.model, r.metric): r for r in summary.itertuples(index=False)}
    n_seeds = {m: int(summary[summary["model"] == m]["n"].max()) for m in models}

    def table(header: list[str], rows: list[list[str]]) -> list[str]:
        return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(r) + " |" for r in rows)]

    def interval(mean: float, low: float, high: float) -> str:
        mark = " *" if low > 0 or high < 0 else ""
        return f"{mean:+.3f} [{num(low)}, {num(high)}]{mark}"

    values, diffs = [], []
    for label in metrics:
        row = [label]
        for model in models:
            c = cells.get((model, label))
            if c is None or not math.isfinite(c.mean):
                row.append("")
            elif c.n <= 1:
                row.append(f"{c.mean:.3f}")
            elif cell == "interval":
                row.append(interval(c.mean, c.low, c.high))
            else:
                row.append(f"{c.mean:.3f} ± {c.std:.3f}")
        values.append(row)
        row = [label]
        for model in others:
            c = cells.get((model, label))
            row.append("" if c is None or not math.isfinite(c.diff_mean) else interval(c.diff_mean, c.diff_low, c.diff_high))
        diffs.append(row)
    lines = table(["metric", *(f"{m} (n={n_seeds[m]})" for m in models)], values)
    if others and baseline in models:
        lines += ["", *table(["metric", *(f"{m} − {baseline}" for m in others)], diffs)]
    return "\n".join(lines) + "\n"


# ---- files and the record of a run --------------------------------------------------------------


def write_csv(frame: pd.DataFrame, path: Path) -> None:
    """``frame`` as CSV, atomically; full precision, so the numbers read back equal the runs' own."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def machine_info() -> dict[str, Any]:
    """CPU count and affinity, torch threads, load average, library and platform versions."""
    import torch

    return {
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average": [round(v, 2) for v in os.getloadavg()],
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
    }


def git_state(paths: Sequence[str]) -> dict[str, Any]:
    """The checkout's commit, and whether ``paths`` (relative to the repository) have uncommitted changes."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False).stdout.strip()

    return {"commit": git("rev-parse", "HEAD") or None, "dirty": bool(git("status", "--porcelain", "--", *paths))}


# ---- training runs ------------------------------------------------------------------------------


def same_config(folder, cfg) -> bool:
    """Whether ``folder`` (a :class:`~lakd.train.checkpoint.RunFolder`) holds a run made with the
    sections of ``cfg`` that a resume keeps."""
    from lakd.train.loop import resume_mismatch

    return folder.is_run() and folder.config_file.is_file() and resume_mismatch(folder, cfg) is None


def finished_run(run: Path, cfg) -> bool:
    """A run folder that holds a finished run of exactly this configuration."""
    from lakd.demo import final_eval
    from lakd.train.checkpoint import RunFolder

    folder = RunFolder(run)
    if not (same_config(folder, cfg) and folder.student.is_file() and folder.metrics_file.is_file()):
        return False
    try:
        return final_eval(run).get("step") == cfg.schedule.steps
    except (LakdError, json.JSONDecodeError):
        return False


def train_or_reuse(cfg, run: Path, echo: Callable[[str], None]) -> str:
    """Train ``cfg`` into ``run`` (:func:`lakd.train.train`), resume an unfinished run of the same
    configuration from its checkpoint, or reuse a finished one; returns ``"trained"``,
    ``"resumed"`` or ``"reused"``. A folder holding another configuration is replaced."""
    from lakd.train import train
    from lakd.train.checkpoint import RunFolder

    if finished_run(run, cfg):
        return "reused"
    folder = RunFolder(run)
    resume = same_config(folder, cfg) and bool(folder.steps())
    train(cfg, out=str(run), resume=resume, overwrite=folder.is_run() and not resume, echo=echo)
    return "resumed" if resume else "trained"


def experiment_parser(
    description: str, *, recipes: Sequence[str], default_recipes: Sequence[str], work: str, quick: str
) -> argparse.ArgumentParser:
    """The options every experiment script shares: ``--quick`` (help ``quick``), ``--seeds``,
    ``--recipes`` (from ``recipes``), ``--cache-dir``, ``--work`` (default ``runs/<work>``),
    ``--results``, ``--device`` and ``--table``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help=quick)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds (default 0 1 2)")
    parser.add_argument("--recipes", nargs="+", default=list(default_recipes), choices=list(recipes),
                        help=f"student recipes (default {' '.join(default_recipes)})")
    parser.add_argument("--cache-dir", help="the teacher cache (default the demo's, ~/.cache/lakd)")
    parser.add_argument("--work", help=f"run folders (default runs/{work}, quick: runs/{work}-quick)")
    parser.add_argument("--results", help="result files (default experiments/results, quick: WORK/results)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--table", action="store_true", help="print the markdown tables of RESULTS and exit")
    return parser


def experiment_options(args: argparse.Namespace, script: str, argv: Sequence[str] | None) -> dict[str, Any]:
    """The options dataclass fields of :func:`experiment_parser`'s arguments (seeds and recipes
    de-duplicated in order; ``command``: the script and its arguments, for the record)."""
    return {
        "seeds": tuple(dict.fromkeys(args.seeds)),
        "recipes": tuple(dict.fromkeys(args.recipes)),
        "quick": args.quick,
        "cache_dir": args.cache_dir,
        "work": args.work,
        "results": args.results,
        "device": args.device,
        "command": [script, *(sys.argv[1:] if argv is None else argv)],
    }


@dataclass
class ExperimentOptions:
    """What an experiment runs and where: ``seeds``, ``recipes``, ``quick`` budgets, the teacher
    ``cache_dir``, run folders under ``work`` (default ``runs/<WORK>``, with ``--quick``
    ``runs/<WORK>-quick``), result files under ``results`` (default ``experiments/results``, with
    ``--quick`` ``WORK/results``, so a quick run never replaces committed results), the ``device`` and
    the ``command`` (for the record). Each script subclasses it and names its ``WORK``."""

    WORK: ClassVar[str] = "experiment"

    seeds: tuple[int, ...] = (0, 1, 2)
    recipes: tuple[str, ...] = ()
    quick: bool = False
    cache_dir: str | None = None
    work: str | None = None
    results: str | None = None
    device: str = "cpu"
    command: list[str] = field(default_factory=lambda: [Path(sys.argv[0]).name, *sys.argv[1:]])

    @property
    def work_dir(self) -> Path:
        return Path(self.work or (f"runs/{self.WORK}-quick" if self.quick else f"runs/{self.WORK}"))

    @property
    def results_dir(self) -> Path:
        if self.results:
            return Path(self.results)
        return self.work_dir / "results" if self.quick else REPO / "experiments" / "results"
