"""Result files in clip_benchmark's format, and one table from many result files.

A result is one JSON object per task, shaped like clip_benchmark's output so its ``build``
aggregation reads it: ``dataset``, ``model``, ``pretrained``, ``task`` (clip_benchmark's task name),
``metrics`` (flat name -> number; NaN is written as ``null``) and ``language``; lakd adds ``lakd``
(counts, notes, templates, the store that was read). ``out`` may contain ``{task}`` (like
clip_benchmark's ``--output`` template) to write one file per task; otherwise one task is written as
one object and several tasks as a JSON list of objects.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import pandas as pd

import lakd
from lakd.errors import LakdError
from lakd.io import atomic_path, write_json

LANGUAGE = "en"
REQUIRED_KEYS = ("dataset", "model", "task", "metrics")
LEADING_COLUMNS = ("file", "dataset", "model", "pretrained", "model_fullname", "task", "language")


def model_names(spec: str, arch: str | None = None) -> tuple[str, str]:
    """A model spec as clip_benchmark's ``(model, pretrained)`` (:meth:`ModelSpec.benchmark_names`);
    a store's model label that is no spec (e.g. ``"<spec> whitened by <stats>"``) -> ``(label, "")``."""
    from lakd.models.specs import ModelSpec  # light, but keeps `lakd eval table` free of lakd.models

    try:
        return ModelSpec.parse(spec).benchmark_names(arch)
    except LakdError:
        return spec, ""


def result_record(
    task: str, dataset: str, model: str, metrics: dict[str, float], details: dict, arch: str | None = None
) -> dict:
    """One task's result object (clip_benchmark keys plus ``lakd`` details)."""
    name, pretrained = model_names(model, arch)
    return {
        "dataset": dataset,
        "model": name,
        "pretrained": pretrained,
        "task": task,
        "metrics": metrics,
        "language": LANGUAGE,
        "lakd": {"model_spec": model, "lakd_version": lakd.__version__, **details},
    }


def json_safe(value: Any) -> Any:
    """``value`` with every NaN / inf float replaced by None (JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: json_safe(v) for key, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def write_results(out: str | os.PathLike, records: list[dict]) -> list[Path]:
    """Write result objects to ``out`` (see the module docstring); returns the files written."""
    out = str(out)
    if "{task}" in out:
        paths = []
        for record in records:
            path = Path(out.replace("{task}", record["task"]))
            write_json(path, json_safe(record))
            paths.append(path)
        return paths
    write_json(out, json_safe(records[0] if len(records) == 1 else records))
    return [Path(out)]


def read_results(path: str | os.PathLike) -> list[dict]:
    """Result objects of a lakd or clip_benchmark result file (one object or a list of them)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise LakdError(f"{path}: not a readable JSON result file ({err})") from None
    records = data if isinstance(data, list) else [data]
    if not records:
        raise LakdError(f"{path}: holds an empty list, no result")
    for index, record in enumerate(records):
        where = f"{path}" if len(records) == 1 else f"{path} [{index}]"
        if not isinstance(record, dict):
            raise LakdError(f"{where}: a result must be a JSON object")
        missing = [key for key in REQUIRED_KEYS if key not in record]
        if missing:
            raise LakdError(f"{where}: not a result (missing {', '.join(missing)})")
        if not isinstance(record["metrics"], dict):
            raise LakdError(f"{where}: field 'metrics' must be an object of name -> number")
    return records


def result_row(record: dict, file: str) -> dict[str, Any]:
    """A flat table row: metrics and the scalar top-level fields (clip_benchmark's ``build`` layout)."""
    row: dict[str, Any] = {"file": file}
    row.update({k: v for k, v in record["metrics"].items() if not isinstance(v, dict | list)})
    row.update({k: v for k, v in record.items() if k != "metrics" and not isinstance(v, dict | list)})
    row.setdefault("pretrained", "")
    row["model_fullname"] = f"{row['model']} {row['pretrained']}".strip()
    return row


def results_table(files: list[str | os.PathLike]) -> pd.DataFrame:
    """One row per result of every file; identity columns first, then metric columns."""
    if not files:
        raise LakdError("eval table: give at least one result file")
    rows = [result_row(record, str(file)) for file in files for record in read_results(file)]
    table = pd.DataFrame(rows)
    leading = [c for c in LEADING_COLUMNS if c in table.columns]
    return table[leading + [c for c in table.columns if c not in leading]]


def write_table(files: list[str | os.PathLike], out: str | os.PathLike) -> pd.DataFrame:
    """Write :func:`results_table` of ``files`` to the CSV ``out`` atomically; returns the table."""
    table = results_table(files)
    with atomic_path(out) as tmp:
        table.to_csv(tmp, index=False)
    return table


def format_summary(records: list[dict]) -> str:
    """A few terminal lines: one per task with its metrics (null for NaN)."""
    lines = []
    for record in records:
        metrics = "  ".join(
            f"{name} {'null' if value is None or (isinstance(value, float) and math.isnan(value)) else f'{value:.4g}'}"
            for name, value in record["metrics"].items()
        )
        lines.append(f"{record['task']:<24} {metrics}")
    return "\n".join(lines)
