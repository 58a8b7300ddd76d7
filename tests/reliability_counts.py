"""Count the cases of docs/reliability.md from a real pytest run and write the counts into it.

    python tests/reliability_counts.py                     # run the listed tests, rewrite the counts
    python tests/reliability_counts.py --junit run.xml     # count from a run already made
    python tests/reliability_counts.py --junit a.xml b.xml # b.xml's outcomes replace a.xml's for its tests
    python tests/reliability_counts.py --check             # run them, fail if the written counts differ

A case is one test function named in the document (``tests/test_x.py::test_name``); it passes when
every one of its runs (one per parameter set) passed, and a test that did not run (skipped, or
absent from the run) does not pass. The counts go between the ``<!-- counts -->`` markers (one row
per area and a total, with the runs and the run's date) and into each area's heading. ``--junit``
reads the JUnit XML report of a pytest run that included the listed tests (``--junitxml=FILE``); of
several reports, a later one's outcomes replace an earlier one's for the tests it ran (a rerun of
some tests after a fix).
"""

from __future__ import annotations

import argparse
import datetime
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


def outcomes_of(report: Path) -> dict[str, list[bool]]:
    """``{tests/test_x.py::test_name: [passed, ...]}`` (one entry per run) from a JUnit XML report."""
    outcomes: dict[str, list[bool]] = defaultdict(list)
    for case in ElementTree.parse(report).getroot().iter("testcase"):
        path = case.get("classname", "").replace(".", "/") + ".py"
        name = case.get("name", "").split("[")[0]
        failed = any(child.tag in ("failure", "error", "skipped") for child in case)
        outcomes[f"{path}::{name}"].append(not failed)
    return outcomes


def run(tests: list[str]) -> dict[str, list[bool]]:
    """The outcomes of one pytest run of ``tests``."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.xml"
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={report}", *tests]
        subprocess.run(command, cwd=ROOT, check=False)
        return outcomes_of(report)


def render(text: str, areas: dict[str, list[str]], outcomes: dict[str, list[bool]], when: str) -> str:
    def passed(test: str) -> bool:
        return bool(outcomes.get(test)) and all(outcomes[test])

    def runs(tests: list[str]) -> tuple[int, int]:
        results = [ok for test in tests for ok in outcomes.get(test, [False])]
        return len(results), sum(results)

    rows = ["| area | cases | passing | runs (with parameters) | passing |", "|---|---|---|---|---|"]
    for area, tests in areas.items():
        rows.append(f"| {area} | {len(tests)} | {sum(map(passed, tests))} | {runs(tests)[0]} | {runs(tests)[1]} |")
    total = [t for tests in areas.values() for t in tests]
    n_runs, n_passed = runs(total)
    rows.append(f"| **total** | **{len(total)}** | **{sum(map(passed, total))}** | **{n_runs}** | **{n_passed}** |")
    rows += ["", f"Counted from {when}."]
    text = COUNTS.sub(lambda _: "<!-- counts -->\n" + "\n".join(rows) + "\n<!-- /counts -->", text)

    def heading(match: re.Match) -> str:
        name = match["name"].strip()
        if name not in areas:
            return match[0]
        tests = areas[name]
        return f"## {name} ({len(tests)} cases, {sum(map(passed, tests))} passing)"

    return AREA.sub(heading, text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail when the written counts differ")
    parser.add_argument(
        "--junit", type=Path, nargs="+", help="count from these JUnit XML reports (later ones win) instead of running pytest"
    )
    args = parser.parse_args()
    text = DOC.read_text(encoding="utf-8")
    areas = cases_by_area(text)
    tests = [t for listed in areas.values() for t in listed]
    if args.junit:
        outcomes = {}
        for report in args.junit:
            outcomes.update(outcomes_of(report))
        day = datetime.datetime.fromtimestamp(max(r.stat().st_mtime for r in args.junit)).strftime("%Y-%m-%d")
        when = f"the JUnit reports of {len(args.junit)} pytest run(s) of {day} (`python tests/reliability_counts.py --junit ...`)"
    else:
        outcomes = run(tests)
        when = f"the pytest run of {datetime.date.today().isoformat()} (`python tests/reliability_counts.py`)"
    new = render(text, areas, outcomes, when)
    failing = [t for t in tests if not (outcomes.get(t) and all(outcomes[t]))]
    if args.check:
        def undated(doc: str) -> str:
            return re.sub(r"^Counted from .*$", "", doc, flags=re.MULTILINE)

        if undated(new) != undated(text):
            print("docs/reliability.md: the counts differ from this run", file=sys.stderr)
            return 1
    else:
        DOC.write_text(new, encoding="utf-8")
    for test in failing:
        print(f"not passing: {test}", file=sys.stderr)
    return 1 if failing else 0


if __name__ == "__main__":
    sys.exit(main())
