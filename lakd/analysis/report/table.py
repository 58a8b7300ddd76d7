"""Tables of a geometry report: the summary (reference vs others, deltas, towards/away verdicts),
``metrics.csv`` (every scalar, one row per model x modality, pandas) and the terminal text.

The summary lists the metrics of :data:`SUMMARY_METRICS`, read from each model's GeometryResult
dict. Each value is compared with the reference's (the teacher): ``delta`` = value - reference.
The verdict says whether a model sits *towards* or *away from* the reference:

- with two or more other models, the first is the baseline (e.g. the student before distillation)
  and every later one is *towards* when it is closer to the reference than the baseline, *away*
  when farther;
- a model without a baseline (the baseline itself, or the only student) is *towards* when within
  :func:`tolerance` of the reference value, else *away*.

Alignment metrics (CKA, k-NN overlap, ...) compare a model with the reference, so the reference's
own value is the ideal one (CKA 1, Procrustes residual 0). Dimension-dependent metrics (effective
rank, anisotropy) get no delta when the dimensions differ.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pandas as pd

MODALITIES = ("image", "text")
PAIR = "image_vs_text"


@dataclass(frozen=True)
class SummaryMetric:
    """One row family of the summary: ``path`` into a GeometryResult dict (``{m}`` = modality),
    per modality when ``per_modality``; ``percent`` formats as %, ``dim_free`` says whether models of
    different dimension can be compared, ``ideal`` is the reference's value for alignment metrics,
    ``key`` puts it in the terminal summary."""

    label: str
    path: tuple[str, ...]
    per_modality: bool = True
    percent: bool = False
    dim_free: bool = True
    ideal: float | None = None
    key: bool = False


SUMMARY_METRICS: tuple[SummaryMetric, ...] = (
    SummaryMetric("offset ratio", ("modalities", "{m}", "ellipsoid", "offset_ratio"), key=True),
    SummaryMetric(
        "eff. rank",
        ("modalities", "{m}", "ellipsoid", "spectrum", "effective_rank"),
        dim_free=False,
        key=True,
    ),
    SummaryMetric(
        "eff. rank / dim", ("modalities", "{m}", "ellipsoid", "spectrum", "effective_rank_fraction")
    ),
    SummaryMetric("anisotropy", ("modalities", "{m}", "ellipsoid", "spectrum", "anisotropy"), dim_free=False),
    SummaryMetric("tilt (off-diag. mass)", ("modalities", "{m}", "ellipsoid", "tilt", "off_diagonal_mass")),
    SummaryMetric("shell CV ||x - mu||", ("modalities", "{m}", "shell", "centred", "cv")),
    SummaryMetric("norm CV ||x||", ("modalities", "{m}", "shell", "raw", "cv")),
    SummaryMetric("conformity mean", ("modalities", "{m}", "conformity", "distribution", "mean")),
    SummaryMetric(
        "conformity r", ("modalities", "{m}", "conformity", "fit_vs_cosine_to_mean", "pearson_r"), key=True
    ),
    SummaryMetric(
        "AD pass (whitened)",
        ("modalities", "{m}", "normality", "anderson_darling", "pass_rate"),
        percent=True,
        key=True,
    ),
    SummaryMetric(
        "DP pass (whitened)",
        ("modalities", "{m}", "normality", "dagostino_pearson", "pass_rate"),
        percent=True,
    ),
    SummaryMetric("modality gap", ("cross_modal", PAIR, "gap", "gap_norm"), per_modality=False, key=True),
    SummaryMetric(
        "cos(mu_img, mu_txt)", ("cross_modal", PAIR, "ellipsoid", "mean_cosine"), per_modality=False
    ),
    SummaryMetric(
        "conformity KL img||txt",
        ("cross_modal", PAIR, "conformity", "kl_within_conformity", "kl"),
        per_modality=False,
    ),
    SummaryMetric(
        "img/txt separability",
        ("cross_modal", PAIR, "separability", "cv_accuracy"),
        per_modality=False,
        percent=True,
    ),
    SummaryMetric("CKA to reference", ("alignment", "{m}", "linear_cka"), ideal=1.0, key=True),
    SummaryMetric("k-NN overlap", ("alignment", "{m}", "knn_overlap"), ideal=1.0),
    SummaryMetric("Procrustes residual", ("alignment", "{m}", "procrustes_residual"), ideal=0.0),
    SummaryMetric("similarity Spearman", ("alignment", "{m}", "similarity_spearman", "rho"), ideal=1.0),
    SummaryMetric("top-1 agreement", ("alignment", "{m}", "retrieval_agreement"), ideal=1.0),
    SummaryMetric(
        "img->txt top-1 agreement", ("alignment", PAIR, "retrieval_agreement"), per_modality=False, ideal=1.0
    ),
)


def lookup(result: dict, path: tuple[str, ...]) -> float | None:
    """The number at ``path`` in a GeometryResult dict; None when absent, skipped or not a number.
    ``effective_rank_fraction`` is derived: effective rank / dimension."""
    if path[-1] == "effective_rank_fraction":
        rank = lookup(result, (*path[:-1], "effective_rank"))
        dim = lookup(result, ("modalities", path[1], "dim"))
        return None if rank is None or not dim else rank / dim
    value: Any = result
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def tolerance(target: float) -> float:
    """How close counts as matching the reference: 10% of its magnitude, at least 0.02."""
    return max(0.1 * abs(target), 0.02)


def verdict(value: float | None, target: float | None, baseline: float | None = None) -> str | None:
    """``"towards"``, ``"away"`` or None (undecided) for a value compared with the reference ``target``
    (see the module doc): against ``baseline`` when given, else by :func:`tolerance`."""
    if value is None or target is None:
        return None
    distance = abs(value - target)
    if baseline is None:
        return "towards" if distance <= tolerance(target) else "away"
    previous = abs(baseline - target)
    if math.isclose(distance, previous, rel_tol=1e-6, abs_tol=1e-12):
        return None
    return "towards" if distance < previous else "away"


def summary_rows(results: dict[str, dict], dims: dict[str, int]) -> list[dict]:
    """Summary rows from GeometryResult dicts by model name (reference first): ``label``, ``modality``,
    ``percent``, ``values``, ``deltas`` and ``verdicts`` (dicts by model name; the reference has no
    delta or verdict), and ``note`` when models could not be compared."""
    names = list(results)
    reference, others = names[0], names[1:]
    baseline = others[0] if len(others) >= 2 else None
    rows = []
    for metric in SUMMARY_METRICS:
        for modality in MODALITIES if metric.per_modality else (None,):
            path = tuple(part.replace("{m}", modality or "") for part in metric.path)
            values = {name: lookup(results[name], path) for name in names}
            if metric.ideal is not None:
                values[reference] = None
            if all(v is None for v in values.values()):
                continue
            target = metric.ideal if metric.ideal is not None else values[reference]
            comparable = metric.dim_free or len({dims[n] for n in names}) == 1
            deltas, verdicts = {}, {}
            for name in others:
                value = values[name]
                if not comparable or value is None or target is None:
                    deltas[name] = verdicts[name] = None
                    continue
                deltas[name] = value - target if metric.ideal is None else None
                base = values[baseline] if baseline and name != baseline else None
                verdicts[name] = verdict(value, target, base)
            rows.append(
                {
                    "label": metric.label,
                    "modality": modality or "",
                    "percent": metric.percent,
                    "key": metric.key,
                    "alignment": metric.ideal is not None,
                    "values": values,
                    "deltas": deltas,
                    "verdicts": verdicts,
                    "note": None if comparable else "depends on the dimension, which differs",
                }
            )
    return rows


def format_value(value: float | None, percent: bool = False, signed: bool = False) -> str:
    """Short human form: ``96.1%``, ``41.2``, ``0.9734`` (4 significant digits; 3 with a sign for
    deltas: ``-0.562``); ``-`` for None."""
    if value is None:
        return "-"
    sign, digits = ("+", 3) if signed else ("", 4)
    if percent:
        return f"{100 * value:{sign}.1f}%"
    if abs(value) >= 10:
        return f"{value:{sign}.1f}"
    return f"{value:{sign}.{digits}g}"


def _scalars(prefix: str, entry: Any) -> dict[str, Any]:
    """Flatten nested dicts to dotted keys, keeping scalars (numbers, strings, None) and dropping lists."""
    if not isinstance(entry, dict):
        return {}
    flat = pd.json_normalize(entry, sep=".").to_dict(orient="records")[0] if entry else {}
    return {
        f"{prefix}{key}": value
        for key, value in flat.items()
        if value is None or isinstance(value, (bool, int, float, str))
    }


def metrics_frame(results: dict[str, dict], roles: dict[str, str]) -> pd.DataFrame:
    """One row per model x modality (``image``, ``text``, and the pair ``image_vs_text`` for the
    cross-modal metrics), one column per scalar metric (dotted GeometryResult paths; alignment
    columns prefixed ``alignment.``)."""
    rows = []
    for name, result in results.items():
        groups = {**result.get("modalities", {}), **result.get("cross_modal", {})}
        for modality, entry in groups.items():
            row = {"model": name, "role": roles[name], "modality": modality}
            row.update(_scalars("", entry))
            row.update(_scalars("alignment.", result.get("alignment", {}).get(modality)))
            rows.append(row)
    return pd.DataFrame(rows)


def text_table(rows: list[list[str]], left: int = 2) -> str:
    """Rows of cells as aligned text: the first ``left`` columns left-aligned, the rest right-aligned."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(
            cell.ljust(w) if i < left else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    ]
    return "\n".join(line.rstrip() for line in lines)


def terminal_summary(metrics: dict, report: str) -> str:
    """The key summary rows as a text table, then where the files went (from a metrics.json dict)."""
    names = [model["name"] for model in metrics["models"]]
    others = names[1:]
    delta_heads = ["delta"] if len(others) == 1 else [f"delta {name}" for name in others]
    rows = [["", "", *names, *delta_heads]]
    for row in metrics["summary"]:
        if row["key"]:
            rows.append(
                [
                    row["label"],
                    row["modality"],
                    *(format_value(row["values"][name], row["percent"]) for name in names),
                    *(format_value(row["deltas"].get(name), row["percent"], signed=True) for name in others),
                ]
            )
    figures = len(metrics.get("figures", []))
    return f"{text_table(rows)}\nreport: {report}  (figures/: {figures} PNG, metrics.json, metrics.csv)"
