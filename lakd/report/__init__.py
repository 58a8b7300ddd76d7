"""The geometry report: metrics.json, metrics.csv, figures/*.png and a self-contained report.html
for one or more models (or embedding stores) on the same items.

- :mod:`~lakd.report.inputs`: entries (model specs or stores), cheap checks, embedding cache.
- :mod:`~lakd.report.points`: per-point data behind the figures (projections, t-SNE, ...).
- :mod:`~lakd.report.table`: summary rows, metrics.csv, the terminal summary.
- :mod:`~lakd.report.figures`: matplotlib PNGs; :mod:`~lakd.report.html`: the page.
- :mod:`~lakd.report.build`: :func:`geometry_report`, which runs it all.
"""

from lakd.report.build import ReportConfig, geometry_report, report_summary

__all__ = ["ReportConfig", "geometry_report", "report_summary"]
