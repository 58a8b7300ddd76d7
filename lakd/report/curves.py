"""Training curves: one data view per figure of ``lakd train plot``, built from a run's metrics.jsonl
records and drawn by both renderers (:mod:`lakd.report.training`).

Figures, each drawn only when it has data: losses (total and every recipe term; vertical marks at
steps whose loss was not finite), optimisation (lr, samples/s, grad norm, logit scale, skipped
steps and images, evaluation time), retrieval, zero-shot, probes and any other evaluation task (a
panel per evaluation set and unit), the geometry of each modality and of the image-text pair (a
panel per metric) and the alignment with the teacher. Evaluation and geometry curves get the
teacher's value (its ``teacher`` record) as a horizontal reference line; probe panels show chance.
Null values are gaps. Everything is ordered deterministically (loss terms and evaluation metrics as
first logged, geometry in :data:`lakd.analysis.result.METRICS` order).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from lakd.analysis.result import METRICS
from lakd.report.points import model_colour
from lakd.report.views import FigureInfo

PANEL_WIDTH = 7.0  # inches, the width of every figure
PANEL_ROW = 2.1  # inches per row of panels
COLUMNS = 3


@dataclass
class Curve:
    """One metric against the step: ``values`` (None: a gap), the ``teacher``'s value (a reference
    line) where it has one."""

    name: str
    colour: str
    steps: list[int]
    values: list[float | None]
    teacher: float | None = None


@dataclass
class Guide:
    """A grey horizontal line (e.g. chance accuracy) with its label."""

    value: float
    label: str


@dataclass
class CurvePanel:
    """Curves sharing one axis; ``marks``: steps marked by a vertical line (``mark_label``)."""

    title: str
    curves: list[Curve]
    guides: list[Guide] = field(default_factory=list)
    marks: list[int] = field(default_factory=list)
    mark_label: str = ""

    @property
    def step_range(self) -> tuple[int, int]:
        steps = [s for curve in self.curves for s in curve.steps] + self.marks
        return min(steps), max(steps)


@dataclass
class CurvesView:
    panels: list[CurvePanel]
    x_title: str = "step"


FAMILIES: dict[str, tuple[str, str]] = {
    "losses": (
        "Losses",
        "Training loss, total and each recipe term, averaged over each logging window; dotted red lines "
        "mark steps whose loss was not finite.",
    ),
    "optimisation": (
        "Optimisation",
        "Learning rate and samples per second of each logging window, gradient norm (before clipping) and "
        "the student's logit scale, skipped steps and images (cumulative) and the time of each evaluation.",
    ),
    "retrieval": ("Retrieval", "Retrieval on the fixed evaluation sets; dotted lines: the teacher's values."),
    "zeroshot": ("Zero-shot classification", "Zero-shot top-k accuracy; dotted lines: the teacher's values."),
    "probes": (
        "Compositional probes",
        "Probe accuracy per condition; dotted lines: the teacher's values, grey dashed lines: chance.",
    ),
    "other": ("Other evaluation metrics", "Evaluation metrics of other tasks; dotted lines: the teacher's values."),
    "geometry_image": ("Geometry: image", "Geometry of the student's image embeddings on eval.data [DE]; dotted: the teacher's."),
    "geometry_text": ("Geometry: text", "Geometry of the student's text embeddings on eval.data [DE]; dotted: the teacher's."),
    "geometry_image_vs_text": (
        "Geometry: image vs text",
        "Modality gap and the other image-text metrics of the student; dotted: the teacher's.",
    ),
    "alignment": (
        "Alignment with the teacher",
        "Alignment of the student's embeddings with the teacher's on the same items (CKA, k-NN overlap, ...).",
    ),
}
TASKS = ("retrieval", "zeroshot", "probes")
LABELS: dict[str, str] = {}  # panel titles: the first (per-modality) label of each metric name
for _metric in METRICS:
    LABELS.setdefault(_metric.name, _metric.label)
GEOMETRY_ORDER = {name: k for k, name in enumerate(LABELS)}
GROUP_ORDER = {"image": 0, "text": 1, "image_vs_text": 2}
GROUP_NAMES = {"image_vs_text": "image-text"}
OPTIMISATION = (
    ("learning rate", ("lr",), "train"),
    ("samples / s", ("samples_per_s",), "train"),
    ("gradient norm", ("grad_norm",), "train"),
    ("logit scale", ("logit_scale",), "train"),
    ("skipped (cumulative)", ("skipped_steps", "skipped_images"), "train"),
    ("evaluation time (s)", ("seconds",), "eval"),
)


def number(value: object) -> float | None:
    """A finite float, else None (a gap)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def first_seen(records: Iterable[dict], keep: Callable[[str], bool]) -> list[str]:
    """Keys of ``records`` that ``keep`` accepts, in the order they first appear."""
    seen: dict[str, None] = {}
    for record in records:
        seen.update((key, None) for key in record if key not in seen and keep(key))
    return list(seen)


def make_curves(names: list[tuple[str, str]], records: list[dict], teacher: dict) -> list[Curve]:
    """One curve per ``(key, name)`` with at least one value, coloured in order."""
    curves = []
    for key, name in names:
        present = [r for r in records if key in r]
        values = [number(r[key]) for r in present]
        if any(v is not None for v in values):
            colour = model_colour(len(curves))
            curves.append(Curve(name, colour, [r["step"] for r in present], values, number(teacher.get(key))))
    return curves


def losses(train: list[dict], nan: list[dict]) -> list[CurvePanel]:
    keys = first_seen(train, lambda key: key.startswith("loss/"))
    keys.sort(key=lambda key: key != "loss/total")
    curves = make_curves([(key, key.removeprefix("loss/")) for key in keys], train, {})
    if not curves:
        return []
    marks = sorted({r["step"] for r in nan})
    return [CurvePanel("loss", curves, marks=marks, mark_label="non-finite loss")]


def optimisation(train: list[dict], evals: list[dict]) -> list[CurvePanel]:
    panels = []
    for title, keys, kind in OPTIMISATION:
        records = train if kind == "train" else evals
        curves = make_curves([(key, key.replace("_", " ")) for key in keys], records, {})
        if title.startswith("skipped") and not any(v for c in curves for v in c.values):
            continue  # nothing skipped: no panel
        if curves:
            panels.append(CurvePanel(title, curves))
    return panels


def split_key(key: str) -> tuple[str, str, str] | None:
    """``(set, task, metric)`` of an evaluation key (set "" for eval.data / the probe set), None for
    geometry keys and the other fields of a record."""
    parts = key.split("/")
    if len(parts) == 2 and parts[0] not in ("geometry", "loss"):
        return "", parts[0], parts[1]
    if len(parts) == 3:
        return parts[0], parts[1], parts[2]
    return None


def short_name(metric: str) -> str:
    """A legend name: ``image_retrieval_recall@5`` -> ``image R@5``, ``text_retrieval_mean_rank`` ->
    ``text mean rank``, ``acc_binding`` -> ``acc binding``."""
    return metric.replace("_retrieval_recall@", " R@").replace("_retrieval_", " ").replace("_", " ")


def unit(task: str, metric: str) -> str:
    """The panel a metric of ``task`` shares with others of the same scale."""
    if task == "retrieval":
        return "recall" if "recall" in metric else "rank" if "rank" in metric else metric
    return "accuracy" if task in ("zeroshot", "probes") else metric


def evaluation(evals: list[dict], teacher: dict) -> dict[str, list[CurvePanel]]:
    """Panels of every evaluation task, by family: one per (set, unit) in first-seen order."""
    groups: dict[tuple[str, str, str, str], list[str]] = {}
    for key in first_seen(evals, lambda key: split_key(key) is not None):
        set_name, task, metric = split_key(key)
        if task == "probes" and metric.startswith("chance"):
            continue
        family = task if task in TASKS else "other"
        groups.setdefault((family, set_name, task, unit(task, metric)), []).append(key)
    families: dict[str, list[CurvePanel]] = {}
    for (family, set_name, task, panel_unit), keys in groups.items():
        curves = make_curves([(key, short_name(key.rsplit("/", 1)[-1])) for key in keys], evals, teacher)
        if not curves:
            continue
        title = f"{set_name}: " if set_name else ""
        title += panel_unit if family != "other" else f"{task} {panel_unit}"
        guides = chance(evals, keys[0]) if family == "probes" else []
        families.setdefault(family, []).append(CurvePanel(title, curves, guides))
    return families


def chance(evals: list[dict], key: str) -> list[Guide]:
    """Chance levels of a probe set (its ``chance*`` keys in the last evaluation), one guide per value."""
    prefix = key.rsplit("/", 1)[0] + "/chance"
    last = next((r for r in reversed(evals) if any(k.startswith(prefix) for k in r)), {})
    found = (number(value) for name, value in last.items() if name.startswith(prefix))
    values = sorted({value for value in found if value is not None})
    return [Guide(value, f"chance {value:.3g}") for value in values]


def geometry(evals: list[dict], teacher: dict) -> dict[str, list[CurvePanel]]:
    """Per-modality (and image-text) figures with a panel per metric; the alignment figure with a
    panel per metric and a curve per modality."""
    names = first_seen(evals, lambda key: key.startswith("geometry/"))
    names = [key.removeprefix("geometry/") for key in names]

    def order(name: str) -> tuple:
        group, _, metric = name.removeprefix("alignment.").rpartition(".")
        return GEOMETRY_ORDER.get(metric, len(GEOMETRY_ORDER)), GROUP_ORDER.get(group, len(GROUP_ORDER)), name

    names.sort(key=order)
    families: dict[str, list[CurvePanel]] = {}
    alignment: dict[str, list[str]] = {}
    for name in names:
        group, _, metric = name.rpartition(".")
        if group.startswith("alignment."):
            alignment.setdefault(metric, []).append(name)
            continue
        curves = make_curves([(f"geometry/{name}", group)], evals, teacher)
        if curves:
            families.setdefault(f"geometry_{group}", []).append(CurvePanel(LABELS.get(metric, metric), curves))
    for metric, group_names in alignment.items():
        pairs = [(f"geometry/{name}", GROUP_NAMES.get(name.split(".")[1], name.split(".")[1])) for name in group_names]
        curves = make_curves(pairs, evals, teacher)
        if curves:
            families.setdefault("alignment", []).append(CurvePanel(LABELS.get(metric, metric), curves))
    return families


def figure_info(name: str, panels: int) -> FigureInfo:
    """The figure ``name`` sized for ``panels`` panels (rows of :data:`COLUMNS`)."""
    title, caption = FAMILIES.get(name) or (f"Geometry: {name.removeprefix('geometry_')}", "Geometry of the student.")
    rows = math.ceil(panels / COLUMNS)
    return FigureInfo(name, title, caption, size=(PANEL_WIDTH, round(0.6 + PANEL_ROW * rows, 2)))


def curve_views(records: list[dict]) -> dict[FigureInfo, CurvesView]:
    """The view of every figure with data, in :data:`FAMILIES` order (then any other geometry group)."""
    by_kind: dict[str, list[dict]] = {}
    for record in sorted(records, key=lambda r: r["step"]):
        by_kind.setdefault(record["kind"], []).append(record)
    train, evals, nan = by_kind.get("train", []), by_kind.get("eval", []), by_kind.get("nan", [])
    teacher = (by_kind.get("teacher") or [{}])[0]
    families = {"losses": losses(train, nan), "optimisation": optimisation(train, evals)}
    families.update(evaluation(evals, teacher))
    families.update(geometry(evals, teacher))
    order = [name for name in FAMILIES if name in families]
    order += sorted(name for name in families if name not in FAMILIES)
    return {figure_info(name, len(families[name])): CurvesView(families[name]) for name in order if families[name]}
