"""The plain, JSON-serialisable result of :func:`lakd.analysis.analyze`, and what its metrics mean.

:data:`METRICS` lists the scalar metrics worth logging and comparing (one :class:`MetricInfo`
each: name, label, where it sits in the result, how to compare it with a reference's).
:meth:`GeometryResult.scalars` flattens a result through it, and the geometry report's summary
table (:mod:`lakd.report.table`) reads the same list, so a logged name and a report row are the same
metric. Scalar names are ``<modality>.<name>`` (``image.offset_ratio``), ``<pair>.<name>``
(``image_vs_text.gap_norm``) and ``alignment.<modality or pair>.<name>`` (``alignment.image.cka``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np

from lakd import __version__
from lakd.errors import LakdError


def to_plain(value: Any) -> Any:
    """Recursively turn numpy scalars/arrays and tuples into Python floats, ints and lists."""
    if isinstance(value, dict):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_plain(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    return value


def find_nonfinite(value: Any, path: str = "") -> str | None:
    """Dotted path of the first NaN or Inf float inside nested dicts/lists, else None."""
    if isinstance(value, float) and not math.isfinite(value):
        return path or "<root>"
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list):
        items = ((str(i), v) for i, v in enumerate(value))
    else:
        return None
    for key, item in items:
        found = find_nonfinite(item, f"{path}.{key}" if path else str(key))
        if found:
            return found
    return None


PAIR = "image_vs_text"


def _relative(value: float, target: float) -> float:
    if value == target:
        return 0.0
    return abs(value - target) / abs(target) if target else math.inf


def _absolute(value: float, target: float) -> float:
    return abs(value - target)


def _log_one_minus(value: float, target: float, floor: float = 1e-9) -> float:
    """|log10((1 - value) / (1 - target))|: how many decades apart two correlations near 1 are."""
    return abs(math.log10(max(1.0 - value, floor)) - math.log10(max(1.0 - target, floor)))


@dataclass(frozen=True)
class Closeness:
    """How far a value is from the reference's (``distance(value, target)``), how far still matches
    (``tolerance``), and the rule in words."""

    words: str
    distance: Callable[[float, float], float]
    tolerance: float


RULES: dict[str, Closeness] = {
    "relative": Closeness("within 10% of the reference value", _relative, 0.10),
    "points": Closeness("within 5 percentage points", _absolute, 0.05),
    "cosine": Closeness("within 0.05 (absolute)", _absolute, 0.05),
    "pearson_r": Closeness(
        "1 - r within a factor of 2 of the reference's (compared on a log scale)",
        _log_one_minus,
        math.log10(2.0),
    ),
}
# alignment metrics: which direction is better aligned with the reference (the sign of a gain)
BETTER = {"higher": 1.0, "lower": -1.0}


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


@dataclass(frozen=True)
class MetricInfo:
    """One scalar metric: ``name`` (snake_case, for :meth:`GeometryResult.scalars`), ``label`` (for
    tables), ``path`` into a GeometryResult dict (``{m}`` = modality), per modality when
    ``per_modality``. ``percent`` formats it as %, ``dim_free`` says whether models of different
    dimension can be compared, ``rule`` names its :data:`RULES` entry; alignment metrics have no
    reference value and say which direction is ``better`` (a :data:`BETTER` key) instead; ``key``
    marks the few metrics a short summary shows."""

    name: str
    label: str
    path: tuple[str, ...]
    per_modality: bool = True
    percent: bool = False
    dim_free: bool = True
    rule: str = "relative"
    better: str | None = None
    key: bool = False

    def resolve(self, modality: str | None = None) -> tuple[str, ...]:
        """``path`` with ``{m}`` replaced by ``modality``."""
        return tuple(part.replace("{m}", modality or "") for part in self.path)

    def value(self, result: dict, modality: str | None = None) -> float | None:
        """The metric of ``modality`` (None for pair metrics) in a GeometryResult dict, or None."""
        return lookup(result, self.resolve(modality))

    def scalar_name(self, modality: str | None = None) -> str:
        """``<group>.<name>``, with ``alignment.`` in front for alignment metrics; the group is the
        modality, or the pair for pair metrics."""
        section, group = self.resolve(modality)[:2]
        return f"{section}.{group}.{self.name}" if section == "alignment" else f"{group}.{self.name}"

    def modalities(self, result: dict) -> list[str | None]:
        """The modalities this metric has an entry for in ``result`` (``[None]`` for a pair metric
        whose pair is there; ``[]`` when absent, e.g. alignment metrics without a reference)."""
        section = result.get(self.path[0]) or {}
        if not self.per_modality:
            return [None] if self.path[1] in section else []
        return [m for m in result.get("modalities", {}) if m in section]


SPECTRUM = ("modalities", "{m}", "ellipsoid", "spectrum")
METRICS: tuple[MetricInfo, ...] = (
    MetricInfo("offset_ratio", "offset ratio", ("modalities", "{m}", "ellipsoid", "offset_ratio"), key=True),
    MetricInfo("effective_rank", "eff. rank", (*SPECTRUM, "effective_rank"), dim_free=False, key=True),
    MetricInfo("effective_rank_fraction", "eff. rank / dim", (*SPECTRUM, "effective_rank_fraction")),
    MetricInfo("anisotropy", "anisotropy", (*SPECTRUM, "anisotropy"), dim_free=False),
    MetricInfo(
        "tilt", "tilt (off-diag. mass)", ("modalities", "{m}", "ellipsoid", "tilt", "off_diagonal_mass")
    ),
    MetricInfo("shell_cv", "shell CV ||x - mu||", ("modalities", "{m}", "shell", "centred", "cv")),
    MetricInfo("norm_cv", "norm CV ||x||", ("modalities", "{m}", "shell", "raw", "cv")),
    MetricInfo(
        "conformity_mean",
        "conformity mean",
        ("modalities", "{m}", "conformity", "distribution", "mean"),
        rule="cosine",
    ),
    MetricInfo(
        "conformity_r",
        "conformity r",
        ("modalities", "{m}", "conformity", "fit_vs_cosine_to_mean", "pearson_r"),
        rule="pearson_r",
        key=True,
    ),
    MetricInfo(
        "ad_pass_rate",
        "AD pass (whitened)",
        ("modalities", "{m}", "normality", "anderson_darling", "pass_rate"),
        percent=True,
        rule="points",
        key=True,
    ),
    MetricInfo(
        "dp_pass_rate",
        "DP pass (whitened)",
        ("modalities", "{m}", "normality", "dagostino_pearson", "pass_rate"),
        percent=True,
        rule="points",
    ),
    MetricInfo(
        "gap_norm", "modality gap", ("cross_modal", PAIR, "gap", "gap_norm"), per_modality=False, key=True
    ),
    MetricInfo(
        "mean_cosine",
        "cos(mu_img, mu_txt)",
        ("cross_modal", PAIR, "ellipsoid", "mean_cosine"),
        per_modality=False,
        rule="cosine",
    ),
    MetricInfo(
        "conformity_kl",
        "conformity KL img||txt",
        ("cross_modal", PAIR, "conformity", "kl_within_conformity", "kl"),
        per_modality=False,
    ),
    MetricInfo(
        "separability",
        "img/txt separability",
        ("cross_modal", PAIR, "separability", "cv_accuracy"),
        per_modality=False,
        percent=True,
        rule="points",
    ),
    MetricInfo("cka", "CKA to reference", ("alignment", "{m}", "linear_cka"), better="higher", key=True),
    MetricInfo("knn_overlap", "k-NN overlap", ("alignment", "{m}", "knn_overlap"), better="higher"),
    MetricInfo(
        "procrustes_residual",
        "Procrustes residual",
        ("alignment", "{m}", "procrustes_residual"),
        better="lower",
    ),
    MetricInfo(
        "similarity_spearman",
        "similarity Spearman",
        ("alignment", "{m}", "similarity_spearman", "rho"),
        better="higher",
    ),
    MetricInfo(
        "top1_agreement", "top-1 agreement", ("alignment", "{m}", "retrieval_agreement"), better="higher"
    ),
    MetricInfo(
        "top1_agreement",
        "img->txt top-1 agreement",
        ("alignment", PAIR, "retrieval_agreement"),
        per_modality=False,
        better="higher",
    ),
)


@dataclass
class GeometryResult:
    """Geometry metrics of one model's embeddings.

    ``modalities``: per modality name, the metric groups (``ellipsoid``, ``shell``,
    ``conformity``, ``whitening``, ``normality``) plus ``rows`` and ``dim``.
    ``cross_modal``: per pair ``"<a>_vs_<b>"`` (e.g. ``image_vs_text``), groups ``ellipsoid``,
    ``gap``, ``conformity``, ``separability``.
    ``alignment``: per modality (and ``image_vs_text`` for cross-modal retrieval) metrics against
    the reference embeddings (empty without a reference).
    ``sampling``: seed, sample sizes and which metrics used the seeded sample instead of all rows.
    ``config``: the :class:`AnalysisConfig` as a dict. Undefined values are None, never NaN.
    A group that could not run on this data holds ``{"skipped": reason}``.
    """

    modalities: dict[str, dict] = field(default_factory=dict)
    cross_modal: dict[str, dict] = field(default_factory=dict)
    alignment: dict[str, dict] = field(default_factory=dict)
    sampling: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    lakd_version: str = __version__

    def to_dict(self) -> dict[str, Any]:
        return to_plain(asdict(self))

    @classmethod
    def from_dict(cls, data: Any, source: str = "geometry result") -> GeometryResult:
        """Rebuild from :meth:`to_dict` output (e.g. a parsed metrics.json); bad input is a LakdError."""
        if not isinstance(data, dict):
            raise LakdError(f"{source}: expected a JSON object, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise LakdError(f"{source}: unknown field(s) {', '.join(unknown)}")
        for name in known - {"lakd_version"}:
            if name in data and not isinstance(data[name], dict):
                raise LakdError(f"{source}: field {name} must be an object")
        result = cls(**data)
        result.check_finite(source)
        return result

    def scalars(self, prefix: str = "") -> dict[str, float | None]:
        """Every metric of :data:`METRICS` this result has an entry for, as ``{prefix + name: value}``
        (names: :meth:`MetricInfo.scalar_name`, e.g. ``image.offset_ratio``, ``image_vs_text.gap_norm``,
        ``alignment.image.cka``; ``prefix`` is prepended as given, e.g. ``"geometry/"``).

        A name is present when its modality, pair or alignment entry is in the result, so the keys
        depend only on the modalities and on whether a reference was given; the value is None when
        the metric was skipped (too few sampled rows), not computed (group not in the config) or
        is undefined, and is never NaN.
        """
        data = self.to_dict()
        return {
            prefix + metric.scalar_name(modality): metric.value(data, modality)
            for metric in METRICS
            for modality in metric.modalities(data)
        }

    def check_finite(self, source: str = "geometry result") -> None:
        """Refuse NaN or Inf anywhere (undefined values must be None)."""
        bad = find_nonfinite(self.to_dict())
        if bad:
            raise LakdError(f"{source}: {bad} is not finite; the input data is degenerate for this metric")
