"""The package layers, enforced on every ``import`` in lakd's source (module level and inside
functions alike).

Data flows one way: ``data`` -> ``models`` -> embedding store -> ``analysis`` -> ``report``, and
``data`` + ``models`` -> ``distill`` + ``train`` -> checkpoints -> ``eval`` / ``analysis``.
``analysis`` is pure metrics on tensors and arrays; the CLI and the demo are entry points that no
library module imports.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import lakd

ROOT = Path(lakd.__file__).parent
ENTRY_POINTS = ("lakd.cli", "lakd.demo")
BASE = ("lakd.errors", "lakd.io", "lakd.config", "lakd.distributed", "lakd.runs")
# package -> what its modules never import
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "lakd.analysis": (
        "lakd.data",
        "lakd.models",
        "lakd.eval",
        "lakd.report",
        "lakd.distill",
        "lakd.train",
        "open_clip",
        "pandas",
        "matplotlib",
        "plotly",
    ),
    "lakd.data": ("lakd.models", "lakd.eval", "lakd.report", "lakd.distill", "lakd.train"),
    "lakd.models": ("lakd.eval", "lakd.report", "lakd.distill", "lakd.train"),
    "lakd.distill": ("lakd.data", "lakd.eval", "lakd.report", "lakd.train"),
    "lakd.eval": ("lakd.report", "lakd.distill", "lakd.train"),
    "lakd.report": ("lakd.train",),  # the diagnosis reads the recipes of lakd.distill
    "lakd.train": ("lakd.report",),
    **{base: ("lakd.data", "lakd.models", "lakd.analysis", "lakd.eval", "lakd.report", "lakd.distill", "lakd.train") for base in BASE},
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every module an import statement in ``path`` names (``from a import b`` counts as ``a`` and
    ``a.b``, since ``b`` may be a module)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def within(name: str, package: str) -> bool:
    return name == package or name.startswith(f"{package}.")


MODULES = {module_name(path): path for path in sorted(ROOT.rglob("*.py"))}


def test_every_package_has_a_rule():
    packages = {name.rsplit(".", 1)[0] if name.count(".") > 1 else name for name in MODULES}
    top = {".".join(name.split(".")[:2]) for name in packages if name != "lakd"}
    assert top - set(FORBIDDEN) - set(ENTRY_POINTS) - {"lakd.__main__"} == set()


@pytest.mark.parametrize("module", sorted(MODULES))
def test_layers(module):
    found = imports(MODULES[module])
    rules = [bad for package, forbidden in FORBIDDEN.items() if within(module, package) for bad in forbidden]
    broken = sorted(name for name in found for bad in rules if within(name, bad))
    assert not broken, f"{module} imports {broken}"
    if module not in ("lakd.cli", "lakd.__main__"):
        entry = sorted(name for name in found for e in ENTRY_POINTS if within(name, e) and e != module)
        assert not entry, f"{module} imports the entry point(s) {entry} as a library"


def test_the_rules_catch_a_violation(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from lakd.report import build\n    import pandas\n")
    assert {"lakd.report", "lakd.report.build", "pandas"} <= imports(bad)
