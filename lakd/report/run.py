"""A ``lakd train`` run folder as the report reads it: its marker, ``config.yaml`` (as plain YAML),
``metrics.jsonl`` and the ``checkpoints/step_NNNNNN.pt`` files.

The layout is :mod:`lakd.train.checkpoint`'s (the report reads what training wrote and imports
nothing of the trainer; tests check that both agree). :func:`run_entries` turns a run into the
entries of a geometry report: the teacher (``teacher.model``, else ``teacher.eval_store``), then the
chosen checkpoints, named ``step N``, on ``eval.data``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lakd.config import load_yaml
from lakd.errors import LakdError
from lakd.report.inputs import ModelInput, display_name, is_store

RUN_FORMAT = "lakd-train-run/1"  # lakd.train.checkpoint.RUN_FORMAT
STEP_FILE = re.compile(r"step_(\d{6,})\.pt")  # lakd.train.checkpoint.STEP_FILE
KINDS = ("train", "eval", "teacher", "nan")  # the record kinds of metrics.jsonl


@dataclass(frozen=True)
class Run:
    """A training run folder (``path``); :meth:`check` refuses any other folder."""

    path: Path

    @property
    def marker(self) -> Path:
        return self.path / "run.json"

    @property
    def config_file(self) -> Path:
        return self.path / "config.yaml"

    @property
    def metrics_file(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    def is_run(self) -> bool:
        """Whether the folder holds a lakd training run (its ``run.json`` says so)."""
        try:
            marker = json.loads(self.marker.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return False
        return isinstance(marker, dict) and marker.get("format") == RUN_FORMAT

    def check(self) -> Run:
        if not self.is_run():
            raise LakdError(
                f"{self.path}: not a lakd training run (no {self.marker.name} with format {RUN_FORMAT})"
            )
        return self

    def config(self) -> dict[str, Any]:
        """The run's resolved configuration, as a mapping."""
        return load_yaml(self.config_file)

    def setting(self, dotted: str) -> Any:
        """One value of the configuration (``teacher.model``), None when absent."""
        value: Any = self.config()
        for key in dotted.split("."):
            value = value.get(key) if isinstance(value, dict) else None
        return value

    def steps(self) -> list[int]:
        """Steps of the checkpoint files present, ascending."""
        if not self.checkpoints.is_dir():
            return []
        return sorted(int(m[1]) for p in self.checkpoints.iterdir() if (m := STEP_FILE.fullmatch(p.name)))

    def checkpoint(self, step: int) -> Path:
        return self.checkpoints / f"step_{step:06d}.pt"

    def records(self) -> list[dict[str, Any]]:
        """The lines of ``metrics.jsonl`` (a cut last line, from a run still writing, is left out)."""
        try:
            lines = self.metrics_file.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            raise LakdError(f"{self.metrics_file}: no such file; the run has logged no metrics") from None
        except (OSError, UnicodeDecodeError) as err:
            raise LakdError(f"{self.metrics_file}: cannot read ({err})") from None
        records = []
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                record = None
            if not (isinstance(record, dict) and record.get("kind") in KINDS and isinstance(record.get("step"), int)):
                if number == len(lines):
                    break
                raise LakdError(
                    f"{self.metrics_file}: line {number} is not a metrics record (a JSON object with kind and step)"
                )
            records.append(record)
        return records


def select_steps(run: Run, choice: str | None) -> list[int]:
    """The checkpoint steps a report compares: ``None`` first, middle and last; ``"all"``; or steps
    written ``"100,300"`` (each must have its checkpoint)."""
    steps = run.steps()
    if not steps:
        raise LakdError(f"{run.checkpoints}: no checkpoint files (step_NNNNNN.pt) in the run")
    if choice is None:
        return sorted({steps[0], steps[(len(steps) - 1) // 2], steps[-1]})
    if choice.strip() == "all":
        return steps
    try:
        chosen = [int(part) for part in choice.split(",")]
    except ValueError:
        raise LakdError(f"checkpoints: expected all or steps such as 100,300, got {choice!r}") from None
    missing = [step for step in chosen if step not in steps]
    if missing:
        raise LakdError(
            f"{run.checkpoints}: no checkpoint of step {missing[0]} (there are {', '.join(map(str, steps))})"
        )
    return sorted(set(chosen))


@dataclass
class RunEntries:
    """What a geometry report of a run compares: ``inputs`` (teacher first when there is one),
    ``data`` to embed them on, and ``description`` (for metrics.json)."""

    inputs: list[ModelInput]
    data: str
    description: dict[str, Any]


def run_teacher(run: Run) -> tuple[str | None, str | None]:
    """``(spec, source)`` of the run's teacher for the report: ``teacher.model`` (a model spec), else
    ``teacher.eval_store`` (its embeddings of eval.data), else ``(None, None)``."""
    model, arch, store = (run.setting(f"teacher.{key}") for key in ("model", "arch", "eval_store"))
    if model and not arch:
        return str(model), "teacher.model"
    if store:
        if not is_store(str(store)):
            raise LakdError(f"{run.config_file}: teacher.eval_store {store} is not an embedding store folder")
        return str(store), "teacher.eval_store"
    if model:
        raise LakdError(
            f"{run.config_file}: teacher.model {model} needs teacher.arch {arch}, which a report cannot pass; "
            "give the teacher (a local-dir export or an embedding store of eval.data) explicitly"
        )
    return None, None


def run_entries(path: str, checkpoints: str | None, data: str | None, teacher: str | None) -> RunEntries:
    """The entries of a report of the run at ``path`` (:func:`select_steps` picks the checkpoints);
    ``data`` and ``teacher``, when given, replace the run's eval.data and teacher."""
    run = Run(Path(path)).check()
    data = data or run.setting("eval.data")
    if not data:
        raise LakdError(f"{run.config_file}: eval.data is not set; give the data to embed the checkpoints on")
    source = "given" if teacher else None
    if not teacher:
        teacher, source = run_teacher(run)
    steps = select_steps(run, checkpoints)
    inputs = []
    if teacher:
        kind = "embeddings" if is_store(teacher) else "model"
        inputs.append(ModelInput(f"teacher ({display_name(teacher)})", "teacher", teacher, kind))
    inputs += [ModelInput(f"step {step}", "student", str(run.checkpoint(step)), "model") for step in steps]
    description = {
        "path": str(run.path),
        "student": run.setting("student.model"),
        "teacher": teacher,
        "teacher_from": source,
        "steps": steps,
    }
    return RunEntries(inputs, str(data), description)
