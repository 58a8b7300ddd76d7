"""What a student did not inherit: its geometry ranked by how far it is from the teacher's, each of
the worst properties with the recipe term that targets it and the evidence of the report's other
students: which of them moved that property towards the teacher, and by how much.

Distances are scale-free: a property with a reference value (offset ratio, gap, conformity, shell
CVs, normality pass rates, ...) is measured by its own closeness rule (:data:`lakd.analysis.result.RULES`)
in units of the rule's tolerance, so 1 means "at the edge of matching the teacher"; an alignment
property (CKA, k-NN overlap, ...) by its shortfall from perfect alignment in units of
:data:`ALIGNMENT_TOLERANCE`. Dimension-dependent properties are left out when the dims differ. The
baseline of the evidence is the student trained without a teacher (recipe ``none``) when the report
holds one, else the first student. Which term targets which property, and why: docs/losses.md.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lakd.analysis.result import METRICS, RULES, MetricInfo
from lakd.errors import LakdError

ALIGNMENT_TOLERANCE = 0.1  # an alignment shortfall of 0.1 (e.g. CKA 0.9) counts as one tolerance
TOP = 3
# property name (MetricInfo.name) -> the recipe term that targets it (docs/losses.md)
TARGETS: dict[str, str] = {
    "offset_ratio": "shell",
    "shell_cv": "shell",
    "norm_cv": "shell",
    "gap_norm": "gap",
    "mean_cosine": "gap",
    "conformity_mean": "conformity",
    "conformity_r": "conformity",
    "conformity_kl": "conformity",
    "effective_rank_fraction": "whitened_fd",
    "tilt": "whitened_fd",
    "ad_pass_rate": "whitened_fd",
    "dp_pass_rate": "whitened_fd",
    "separability": "gap",
    "cka": "relational",
    "knn_overlap": "relational",
    "similarity_spearman": "relational",
    "procrustes_residual": "fd",
    "top1_agreement": "fd",
}


@dataclass(frozen=True)
class Property:
    """One metric of one modality (or of the image-text pair)."""

    info: MetricInfo
    modality: str | None

    @property
    def key(self) -> str:
        return self.info.scalar_name(self.modality)

    @property
    def label(self) -> str:
        return self.info.label + (f" ({self.modality})" if self.modality else "")


def properties(teacher: dict, student: dict) -> list[Property]:
    """The properties both results have (alignment ones from the student's), comparable across dims."""
    same_dim = {
        m: (teacher.get("modalities", {}).get(m, {}).get("dim") == student.get("modalities", {}).get(m, {}).get("dim"))
        for m in student.get("modalities", {})
    }
    found = []
    for info in METRICS:
        if info.name not in TARGETS:
            continue
        for modality in info.modalities(student):
            if not info.dim_free and not same_dim.get(modality or "", True):
                continue
            found.append(Property(info, modality))
    return found


def distance(prop: Property, teacher: dict, student: dict) -> float | None:
    """How far the student is from the teacher on ``prop``, in tolerance units (module docstring)."""
    value = prop.info.value(student, prop.modality)
    if value is None:
        return None
    if prop.info.better is not None:
        shortfall = 1.0 - value if prop.info.better == "higher" else value
        return max(0.0, shortfall) / ALIGNMENT_TOLERANCE
    target = prop.info.value(teacher, prop.modality)
    if target is None:
        return None
    rule = RULES[prop.info.rule]
    return rule.distance(value, target) / rule.tolerance


def diagnose(results: dict[str, dict], reference: str, recipes: dict[str, Any]) -> dict[str, Any]:
    """``{student: {"recipe", "properties": [...]}}`` for every model but the ``reference`` (the
    teacher): its :data:`TOP` most distant properties outside tolerance, each with the targeting term
    and the other students' distances against the baseline's (module docstring)."""
    teacher = results[reference]
    students = [name for name in results if name != reference]
    baseline = next((s for s in students if recipes.get(s) == "none"), students[0] if students else None)
    diagnosis: dict[str, Any] = {}
    for name in students:
        scored = [
            (d, prop) for prop in properties(teacher, results[name]) if (d := distance(prop, teacher, results[name])) is not None
        ]
        scored.sort(key=lambda pair: -pair[0])
        worst = [(d, prop) for d, prop in scored if d > 1.0][:TOP]
        diagnosis[name] = {
            "recipe": recipes.get(name),
            "baseline": baseline,
            "properties": [_entry(prop, d, name, teacher, results, baseline, recipes) for d, prop in worst],
            "n_properties": len(scored),
            "n_outside_tolerance": sum(d > 1.0 for d, _ in scored),
        }
    return diagnosis


def _entry(prop, d, name, teacher, results, baseline, recipes) -> dict[str, Any]:
    base = distance(prop, teacher, results[baseline]) if baseline is not None else None
    evidence = []
    for other, result in results.items():
        if other == next(iter(results)) or result is teacher:
            continue
        other_d = distance(prop, teacher, result)
        evidence.append(
            {
                "model": other,
                "recipe": recipes.get(other),
                "value": prop.info.value(result, prop.modality),
                "distance": other_d,
                "closer_than_baseline_by": (
                    None if other_d is None or not base else (base - other_d) / base
                ),
            }
        )
    return {
        "property": prop.key,
        "label": prop.label,
        "value": prop.info.value(results[name], prop.modality),
        "teacher": None if prop.info.better else prop.info.value(teacher, prop.modality),
        "distance": d,
        "rule": "alignment shortfall" if prop.info.better else RULES[prop.info.rule].words,
        "term": TARGETS[prop.info.name],
        "term_in_recipe": _uses(recipes.get(name), TARGETS[prop.info.name]),
        "evidence": evidence,
    }


def _uses(recipe: Any, term: str) -> bool | None:
    """Whether a recipe (a shipped name or a mapping of terms) has the term; None when unknown."""
    from lakd.distill.recipe import NAMED_RECIPES

    terms = NAMED_RECIPES.get(recipe) if isinstance(recipe, str) else recipe
    if not isinstance(terms, dict):
        return None
    return any(name == term or (isinstance(spec, dict) and spec.get("loss") == term) for name, spec in terms.items())


def describe(diagnosis: dict[str, Any]) -> list[str]:
    """The diagnosis as lines of text (terminal, report page): every claim with its number."""
    lines = []
    for name, entry in diagnosis.items():
        recipe = f" (recipe {_recipe_text(entry['recipe'])})" if entry["recipe"] else ""
        if not entry["properties"]:
            lines.append(f"{name}{recipe}: every one of {entry['n_properties']} properties within tolerance of the teacher")
            continue
        lines.append(
            f"{name}{recipe}: {entry['n_outside_tolerance']} of {entry['n_properties']} properties outside "
            "tolerance; the farthest:"
        )
        for prop in entry["properties"]:
            against = f" vs teacher {prop['teacher']:.3g}" if prop["teacher"] is not None else ""
            moved = [
                f"{e['model']} {e['closer_than_baseline_by']:+.0%}"
                for e in prop["evidence"]
                if e["closer_than_baseline_by"] is not None and e["model"] != entry["baseline"]
            ]
            evidence = (
                f"; vs {entry['baseline']}'s distance: {', '.join(moved)}" if moved and entry["baseline"] else ""
            )
            lines.append(
                f"  {prop['label']}: {prop['value']:.3g}{against} ({prop['distance']:.1f}x tolerance, {prop['rule']}); "
                f"term: {prop['term']}{evidence}"
            )
    return lines


def _recipe_text(recipe: Any) -> str:
    return recipe if isinstance(recipe, str) else " + ".join(recipe) if isinstance(recipe, dict) else str(recipe)


def format_diagnosis(report: str | Path) -> str:
    """The diagnosis of a finished report folder (its metrics.json), as text."""
    path = Path(report) / "metrics.json"
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise LakdError(f"{path}: cannot read the report's metrics ({err})") from None
    diagnosis = metrics.get("diagnosis") or {}
    return "\n".join(["what the students did not inherit:", *describe(diagnosis)]) if diagnosis else ""
