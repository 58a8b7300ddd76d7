"""Count the cases of docs/reliability.md from a real pytest run and write the counts into it.

    python tests/reliability_counts.py            # run the listed tests, rewrite the counts
    python tests/reliability_counts.py --check    # run them, fail if the written counts differ

A case is one test function named in the document (``tests/test_x.py::test_name``, with all its
parameters); it passes when every one of its parameters passes. The counts go between the
``<!-- counts -->`` markers (one row per area and a total) and into each area's heading.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ElementTree
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "reliability.md"
TEST = re.compile(r"`(tests/test_[a-z0-9_]+\.py::test_[A-Za-z0-9_]+)`")
AREA = re.compile(r"^## (?P<name>[^(\n]+?)(?: \(\d+ cases, \d+ passing\))?$", re.MULTILINE)
COUNTS = re.compile(r"<!-- counts -->.*?<!-- /counts -->", re.DOTALL)


def cases_by_area(text: str) -> dict[str, list[str]]:
    """Each area (a ``## `` heading) with the test functions named under it, in order, once each."""
    areas: dict[str, list[str]] = {}
    headings = list(AREA.finditer(text))
    for heading, following in zip(headings, [*headings[1:], None], strict=True):
        body = text[heading.end() : following.start() if following else len(text)]
        tests = list(dict.fromkeys(TEST.findall(body)))
        if tests:
            areas[heading["name"].strip()] = tests
    return areas


def run(tests: list[str]) -> dict[str, bool]:
    """``{test: passed}`` for each test function, from one pytest run (JUnit XML report)."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.xml"
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={report}", *tests]
        subprocess.run(command, cwd=ROOT, check=False)
        outcomes: dict[str, list[bool]] = defaultdict(list)
        for case in ElementTree.parse(report).getroot().iter("testcase"):
            path = case.get("classname", "").replace(".", "/") + ".py"
            name = case.get("name", "").split("[")[0]
            failed = any(child.tag in ("failure", "error", "skipped") for child in case)
            outcomes[f"{path}::{name}"].append(not failed)
    return {test: bool(outcomes.get(test)) and all(outcomes[test]) for test in tests}


def render(text: str, areas: dict[str, list[str]], passed: dict[str, bool]) -> str:
    rows = ["| area | cases | passing |", "|---|---|---|"]
    for area, tests in areas.items():
        rows.append(f"| {area} | {len(tests)} | {sum(passed[t] for t in tests)} |")
    total = [t for tests in areas.values() for t in tests]
    rows.append(f"| **total** | **{len(total)}** | **{sum(passed[t] for t in total)}** |")
    text = COUNTS.sub(lambda _: "<!-- counts -->\n" + "\n".join(rows) + "\n<!-- /counts -->", text)

    def heading(match: re.Match) -> str:
        name = match["name"].strip()
        if name not in areas:
            return match[0]
        tests = areas[name]
        return f"## {name} ({len(tests)} cases, {sum(passed[t] for t in tests)} passing)"

    return AREA.sub(heading, text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail when the written counts differ")
    args = parser.parse_args()
    text = DOC.read_text(encoding="utf-8")
    areas = cases_by_area(text)
    passed = run([t for tests in areas.values() for t in tests])
    failing = [t for t, ok in passed.items() if not ok]
    new = render(text, areas, passed)
    if args.check:
        if new != text:
            print("docs/reliability.md: the counts differ from this run", file=sys.stderr)
            return 1
    else:
        DOC.write_text(new, encoding="utf-8")
    for test in failing:
        print(f"not passing: {test}", file=sys.stderr)
    return 1 if failing else 0


if __name__ == "__main__":
    sys.exit(main())
