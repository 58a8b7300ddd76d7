"""A ``lakd train`` run folder as the report reads it: its marker, ``config.yaml`` (as plain YAML),
``metrics.jsonl`` and the ``checkpoints/step_NNNNNN.pt`` files.

The layout is :mod:`lakd.runs` (shared with the trainer, whose modules the report does not import).
:func:`run_entries` turns a run into the
entries of a geometry report: the teacher (``teacher.model``, else ``teacher.eval_store``), then the
chosen checkpoints, named ``step N``, on ``eval.data``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lakd.errors import LakdError
from lakd.report.inputs import ModelInput, display_name, is_store
from lakd.runs import RunFolder


def select_steps(run: RunFolder, choice: str | None) -> list[int]:
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


def run_teacher(run: RunFolder) -> tuple[str | None, str | None]:
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
    run = RunFolder(Path(path)).check()
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
