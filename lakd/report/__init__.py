"""The geometry report: metrics.json, metrics.csv, figures/*.png and a self-contained report.html
for one or more models (or embedding stores) on the same items.

- :mod:`~lakd.report.inputs`: entries (model specs or stores), cheap checks, embedding cache.
- :mod:`~lakd.report.points`: per-point data behind the figures (projections, t-SNE, ...).
- :mod:`~lakd.report.views`: one data view per figure (series, labels, axis titles; building blocks
  in :mod:`~lakd.report.series`, the alignment figure's in :mod:`~lakd.report.pairwise`), drawn by
  :mod:`~lakd.report.figures` (matplotlib PNGs) and by :mod:`~lakd.report.html` (plotly, the page).
- :mod:`~lakd.report.table`: summary rows, metrics.csv, the terminal summary; the metrics it lists
  and their closeness rules are :data:`lakd.analysis.result.METRICS`.
- :mod:`~lakd.report.build`: :func:`geometry_report`, which runs it all (``run``: a training run's
  teacher against its checkpoints, read by :mod:`~lakd.report.run`).

Training curves (``lakd train plot RUN``): :mod:`~lakd.report.curves` builds one view per figure
from a run's metrics.jsonl, :mod:`~lakd.report.training` draws them (PNGs and training.html).
"""

from lakd.report.build import ReportConfig, geometry_report, report_summary

__all__ = ["ReportConfig", "geometry_report", "report_summary"]
