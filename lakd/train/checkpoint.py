"""The run folder and its checkpoints: atomic, durable writes; ``latest`` moved only after a complete
checkpoint; the last K and the best kept; everything a bit-exact resume needs.

The run folder's layout is :mod:`lakd.runs`.

A checkpoint is a lakd checkpoint of the student (with its projection heads), loadable wherever a
model spec is taken, plus ``training_state``: recipe state, optimizer, scheduler, RNG states of
python / numpy / torch / CUDA, the step (the data position is a function of it,
:mod:`lakd.train.data`) and the configuration; its ``lakd.train`` metadata holds the step and the
latest evaluation.
"""

from __future__ import annotations

import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

import lakd
from lakd import runs
from lakd.errors import LakdError
from lakd.io import write_json, write_text
from lakd.models.checkpoint import save_checkpoint
from lakd.models.safe_load import read_checkpoint


@dataclass(frozen=True)
class RunFolder(runs.RunFolder):
    """A run folder (:mod:`lakd.runs`) with the write side: :meth:`prepare`."""

    def prepare(self, *, resume: bool, overwrite: bool) -> None:
        """Check and create the folder: an existing one needs ``resume`` (a lakd run to continue) or
        ``overwrite`` (replaces a lakd run, never any other folder)."""
        if resume and overwrite:
            raise LakdError("give --resume or --overwrite, not both")
        exists = self.path.exists() and (not self.path.is_dir() or any(self.path.iterdir()))
        if resume:
            if not self.is_run():
                raise LakdError(f"{self.path}: not a lakd training run (no {self.marker.name}); nothing to resume")
            for leftover in self.path.rglob(".*.tmp"):  # temp files of a killed run, never renamed
                if leftover.is_file():
                    leftover.unlink()
            return
        if exists and not self.is_run():  # neither --resume nor --overwrite would take it: advise neither
            even = ", even with --overwrite" if overwrite else ""
            raise LakdError(
                f"{self.path}: exists and is not a lakd training run (no {self.marker.name} with format "
                f"{runs.RUN_FORMAT}); not replacing it{even}; choose another --out"
            )
        if exists and not overwrite:
            raise LakdError(
                f"{self.path}: already exists (use --resume to continue the run or --overwrite to replace it)"
            )
        if exists:
            shutil.rmtree(self.path)
        self.path.mkdir(parents=True, exist_ok=True)
        write_json(self.marker, {"format": runs.RUN_FORMAT, "lakd_version": lakd.__version__})


def rng_state() -> dict[str, Any]:
    """The RNG states of python, numpy, torch (CPU) and CUDA as weights_only-safe values."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": _plain(random.getstate()),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos,
                  "has_gauss": has_gauss, "cached_gaussian": cached},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    random.setstate(_tuples(state["python"]))
    numpy = state["numpy"]
    np.random.set_state(
        (numpy["kind"], numpy["keys"].numpy().astype(np.uint32), numpy["pos"], numpy["has_gauss"],
         numpy["cached_gaussian"])
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _plain(value: Any) -> Any:
    return [_plain(v) for v in value] if isinstance(value, tuple | list) else value


def _tuples(value: Any) -> Any:
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def save_training_checkpoint(
    run: RunFolder,
    step: int,
    student: torch.nn.Module,
    training_state: dict[str, Any],
    *,
    summary: dict[str, Any],
    keep_last: int,
    best: Path | None,
) -> Path:
    """Write ``checkpoints/step_<step>.pt`` (temp name, fsync, rename), then point ``latest`` at it,
    then remove older checkpoints beyond the last ``keep_last`` (never ``best``)."""
    path = run.checkpoint(step)
    save_checkpoint(
        student,
        path,
        extra={"train": summary},
        state={"training_state": training_state},
        durable=True,
    )
    write_text(run.checkpoints / "latest", path.name + "\n", durable=True)
    keep = set(run.steps()[-keep_last:]) | {step}
    for old in run.steps():
        if old not in keep and (best is None or run.checkpoint(old) != best):
            run.checkpoint(old).unlink(missing_ok=True)
    return path


def set_best(run: RunFolder, path: Path) -> None:
    """Point ``checkpoints/best`` at ``path``."""
    write_text(run.checkpoints / "best", path.name + "\n", durable=True)


def read_training_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(student state dict, everything else) of a training checkpoint; LakdError when it lacks the
    training state (a plain model checkpoint cannot be resumed)."""
    state_dict, meta = read_checkpoint(path)
    if not isinstance(meta.get("training_state"), dict):
        raise LakdError(f"{path}: not a training checkpoint (no training_state)")
    return state_dict, meta


def newest_checkpoint(run: RunFolder) -> Path | None:
    """The checkpoint to resume from: the newest step file that reads as a training checkpoint (files
    appear only complete, by rename; one written just before a kill may be newer than ``latest``)."""
    for path in (run.checkpoint(step) for step in reversed(run.steps())):
        try:
            read_training_checkpoint(path)
        except LakdError:
            continue
        return path
    return None
