"""The report sits outside the analysis: ``lakd.analysis`` imports none of the report's plotting and
table libraries nor ``lakd.report`` / ``lakd.models`` / ``lakd.eval``, so code that only logs
geometry (a trainer) runs ``analyze`` without them."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import lakd.analysis

ANALYSIS = Path(lakd.analysis.__file__).parent


def test_the_report_left_the_analysis_package():
    assert not (ANALYSIS / "report").exists()  # what analysis may import: tests/test_layers.py


def test_analysis_runs_without_the_report_libraries():
    """In a fresh interpreter where pandas, matplotlib and plotly cannot be imported."""
    script = textwrap.dedent(
        """
        import importlib.abc, sys

        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("pandas", "matplotlib", "plotly"):
                    raise ImportError(f"{name} is blocked")

        sys.meta_path.insert(0, Block())
        import numpy as np
        from lakd.analysis import AnalysisConfig, analyze

        rng = np.random.default_rng(0)
        data = lambda shift: {m: rng.normal(size=(60, 6)) + shift for m in ("image", "text")}
        result = analyze(data(1.0), reference=data(0.0), config=AnalysisConfig(sample_size=60))
        assert result.alignment["image"]["linear_cka"] is not None
        print(" ".join(sorted(m for m in sys.modules if m.startswith("lakd"))))
        """
    )
    root = str(ANALYSIS.parent.parent)  # this checkout's lakd, not another installed one
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env)
    assert run.returncode == 0, run.stderr
    loaded = run.stdout.split()
    assert "lakd.analysis" in loaded
    assert not [m for m in loaded if m.startswith(("lakd.report", "lakd.models", "lakd.eval"))]
