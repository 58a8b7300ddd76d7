"""The plain, JSON-serialisable result of :func:`lakd.analysis.analyze`."""

from __future__ import annotations

import math
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

    def check_finite(self, source: str = "geometry result") -> None:
        """Refuse NaN or Inf anywhere (undefined values must be None)."""
        bad = find_nonfinite(self.to_dict())
        if bad:
            raise LakdError(f"{source}: {bad} is not finite; the input data is degenerate for this metric")
