"""Tables of a geometry report: the summary (reference vs others, deltas, towards/away verdicts),
``metrics.csv`` (every scalar, one row per model x modality, pandas) and the terminal text.

The summary lists the metrics of :data:`lakd.analysis.result.METRICS` (labels, paths and closeness
rules live there, beside the result they describe), read from each model's GeometryResult dict.
Each metric has its own closeness rule (:data:`~lakd.analysis.result.RULES`): relative for scale
metrics, percentage points for pass rates, absolute for cosines, and 1 - r on a log scale for the
conformity fit's Pearson r. Each value is compared with the reference's (the teacher):
``delta`` = value - reference, and the verdict says whether a model sits *towards* or *away from* it:

- a model without a baseline (the only other model, or the baseline itself) is *towards* when
  within the rule's tolerance of the reference value, else *away*;
- with two or more other models, the first is the baseline (e.g. the student before distillation);
  every later one is *towards* when within tolerance or closer (by the rule's distance) than the
  baseline, *away* when farther, and undecided when as far.

Alignment metrics (CKA, k-NN overlap, ...) compare a model with the reference, which has no value
of its own: with one other model they get no verdict; with two or more, each later model's delta is
taken against the baseline and it is *towards* when better aligned (higher CKA, lower Procrustes
residual). A cell without a delta never gets a verdict; dimension-dependent metrics (effective
rank, anisotropy) get no delta when the dimensions differ.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from lakd.analysis.result import BETTER, METRICS, RULES, MetricInfo
from lakd.report.inputs import MODALITIES


def verdict(
    value: float | None, target: float | None, baseline: float | None = None, rule: str = "relative"
) -> str | None:
    """``"towards"``, ``"away"`` or None (undecided) for a value compared with the reference ``target``
    by the :data:`RULES` entry ``rule`` (see the module doc): within its tolerance is towards; else,
    with a ``baseline``, closer than the baseline is towards and farther is away."""
    if value is None or target is None:
        return None
    closeness = RULES[rule]
    distance = closeness.distance(value, target)
    if distance <= closeness.tolerance:
        return "towards"
    if baseline is None:
        return "away"
    previous = closeness.distance(baseline, target)
    if math.isclose(distance, previous, rel_tol=1e-6, abs_tol=1e-12):
        return None
    return "towards" if distance < previous else "away"


def alignment_verdict(value: float | None, baseline: float | None, better: str) -> str | None:
    """``"towards"`` when ``value`` is better aligned than ``baseline`` (in the ``better`` direction),
    ``"away"`` when worse, None when equal or either is missing."""
    if value is None or baseline is None or math.isclose(value, baseline, rel_tol=1e-6, abs_tol=1e-12):
        return None
    return "towards" if BETTER[better] * (value - baseline) > 0 else "away"


def _row_verdicts(
    metric: MetricInfo, values: dict, reference: str, others: list[str], comparable: bool
) -> tuple[dict, dict]:
    """Deltas and verdicts of the non-reference models of one row (see the module doc)."""
    baseline = others[0] if len(others) >= 2 else None
    deltas, verdicts = {}, {}
    for name in others:
        value, delta, decided = values[name], None, None
        if metric.better is not None:
            base = values[baseline] if baseline and name != baseline else None
            if value is not None and base is not None:
                delta, decided = value - base, alignment_verdict(value, base, metric.better)
        elif comparable and value is not None and values[reference] is not None:
            target = values[reference]
            base = values[baseline] if baseline and name != baseline else None
            delta, decided = value - target, verdict(value, target, base, metric.rule)
        deltas[name], verdicts[name] = delta, decided if delta is not None else None
    return deltas, verdicts


def summary_rows(results: dict[str, dict], dims: dict[str, int]) -> list[dict]:
    """Summary rows from GeometryResult dicts by model name (reference first): ``name`` (as in
    :meth:`GeometryResult.scalars`, e.g. ``image.offset_ratio``), ``label``, ``modality``,
    ``percent``, ``values``, ``deltas`` and ``verdicts`` (dicts by model name; the reference has no
    delta or verdict; alignment rows take deltas against the baseline), ``rule`` and ``note`` (why
    models could not be compared, or what an alignment delta is taken against)."""
    names = list(results)
    reference, others = names[0], names[1:]
    baseline = others[0] if len(others) >= 2 else None
    rows = []
    for metric in METRICS:
        for modality in MODALITIES if metric.per_modality else (None,):
            values = {name: metric.value(results[name], modality) for name in names}
            if metric.better is not None:
                values[reference] = None
            if all(v is None for v in values.values()):
                continue
            comparable = metric.dim_free or len({dims[n] for n in names}) == 1
            deltas, verdicts = _row_verdicts(metric, values, reference, others, comparable)
            note = None if comparable else "depends on the dimension, which differs"
            if metric.better is not None and baseline:
                note = f"alignment with {reference}; delta against {baseline}, {metric.better} is better"
            rows.append(
                {
                    "name": metric.scalar_name(modality),
                    "label": metric.label,
                    "modality": modality or "",
                    "percent": metric.percent,
                    "key": metric.key,
                    "alignment": metric.better is not None,
                    "rule": metric.rule if metric.better is None else f"{metric.better} is better",
                    "values": values,
                    "deltas": deltas,
                    "verdicts": verdicts,
                    "note": note,
                }
            )
    return rows


def legend_text(names: list[str]) -> str:
    """The colour rules of the summary table in words, for a report of models ``names`` (reference first)."""
    if len(names) == 1:
        return "One model: no comparison, no colours."
    reference, others = names[0], names[1:]
    groups: dict[str, list[str]] = {}
    for metric in METRICS:
        if metric.better is None:
            groups.setdefault(metric.rule, []).append(metric.label)
    rules = "; ".join(f"{', '.join(labels)}: {RULES[rule].words}" for rule, labels in groups.items())
    if len(others) == 1:
        return (
            f"Green: {others[0]} matches {reference}'s value, red: it does not. Matching means, per metric: "
            f"{rules}. Alignment rows (CKA, k-NN, Procrustes, Spearman, top-1) have no reference value and "
            "stay uncoloured with one model; cells with delta '-' are never coloured."
        )
    baseline = others[0]
    return (
        f"{baseline} is the baseline. Green: a later model matches {reference}'s value or is closer to it "
        f"than {baseline}; red: it does not match and is farther; {baseline} itself is green when it "
        f"matches. Matching means, per metric: {rules}. Alignment rows (CKA, k-NN, Procrustes, Spearman, "
        f"top-1) show the delta against {baseline}: green when better aligned with {reference} than "
        f"{baseline} (higher, or lower for the Procrustes residual), red when worse; {baseline} itself "
        "is uncoloured. Cells with delta '-' are never coloured."
    )


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
