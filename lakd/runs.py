"""The layout of a training run folder, read side: what ``lakd train`` writes (:mod:`lakd.train.checkpoint`
adds the write side) and what the reports read (:mod:`lakd.report.run`, :mod:`lakd.report.training`).

    RUN/run.json            marker (format ``lakd-train-run/1``): --overwrite replaces only such a folder
    RUN/config.yaml         the resolved configuration
    RUN/metrics.jsonl       one JSON object a line: train logs, evaluations, the teacher's reference
    RUN/checkpoints/step_NNNNNN.pt, latest, best
    RUN/whitening/          the teacher's whitening statistics the run used (whitened_fd)
    RUN/student.pt, RUN/student-local-dir/   the final student (lakd checkpoint; open_clip local-dir)
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lakd.config import load_yaml
from lakd.errors import LakdError

RUN_FORMAT = "lakd-train-run/1"
STEP_FILE = re.compile(r"step_(\d{6,})\.pt")
KINDS = ("train", "eval", "teacher", "nan")  # the record kinds of metrics.jsonl


@dataclass(frozen=True)
class RunFolder:
    """The paths of one run folder (module docstring) and reading them; :meth:`check` refuses any
    folder that is not a lakd run."""

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

    @property
    def whitening(self) -> Path:
        return self.path / "whitening" / "teacher.safetensors"

    @property
    def student(self) -> Path:
        return self.path / "student.pt"

    @property
    def local_dir(self) -> Path:
        return self.path / "student-local-dir"

    def checkpoint(self, step: int) -> Path:
        return self.checkpoints / f"step_{step:06d}.pt"

    def is_run(self) -> bool:
        """Whether the folder holds a lakd training run (its ``run.json`` says so)."""
        try:
            marker = json.loads(self.marker.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return False
        return isinstance(marker, dict) and marker.get("format") == RUN_FORMAT

    def check(self):
        """``self`` when the folder is a lakd run, else one error line."""
        if not self.is_run():
            raise LakdError(f"{self.path}: not a lakd training run (no {self.marker.name} with format {RUN_FORMAT})")
        return self

    def steps(self) -> list[int]:
        """Steps of the checkpoint files present, ascending."""
        if not self.checkpoints.is_dir():
            return []
        return sorted(int(m[1]) for p in self.checkpoints.iterdir() if (m := STEP_FILE.fullmatch(p.name)))

    def pointer(self, name: str) -> Path | None:
        """The checkpoint named by ``checkpoints/<name>`` (``latest`` or ``best``), if it exists."""
        try:
            target = (self.checkpoints / name).read_text(encoding="utf-8").strip()
        except OSError:
            return None
        path = self.checkpoints / target
        return path if STEP_FILE.fullmatch(target) and path.is_file() else None

    def settings(self) -> dict[str, Any]:
        """The run's resolved configuration, as a mapping."""
        return load_yaml(self.config_file)

    def setting(self, dotted: str) -> Any:
        """One value of the configuration (``teacher.model``), None when absent."""
        value: Any = self.settings()
        for key in dotted.split("."):
            value = value.get(key) if isinstance(value, dict) else None
        return value

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
