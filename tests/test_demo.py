"""``lakd demo --quick``: the whole loop with tiny budgets: a cached teacher, students per recipe,
their final evaluations, one geometry report with its diagnosis, and the table."""

from __future__ import annotations

import html
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lakd.cli import main
from lakd.config import to_mapping
from lakd.demo import RECIPES, STUDENT, TEACHER, DemoConfig, student_config, teacher_config
from lakd.train import load_train_config


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    out, cache = root / "out", root / "cache"
    args = ["demo", "--quick", "--out", str(out), "--cache-dir", str(cache)]
    import contextlib
    import io

    first, second = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(first):
        assert main([*args, "--jobs", "2"]) == 0  # students in two worker processes
    import lakd.models.embed

    def refuse(*args, **kwargs):
        raise AssertionError("the demo's own process embedded a model")

    # the second run reuses the cached teacher, and its workers embed every model for the report
    with contextlib.redirect_stdout(second), pytest.MonkeyPatch.context() as patch:
        patch.setattr(lakd.models.embed, "embed", refuse)
        assert main([*args, "--recipe", "none", "--recipe", "fd", "--jobs", "2"]) == 0
    return out, cache, first.getvalue(), second.getvalue()


def test_shipped_experiment_configs_are_the_demos():
    teacher = load_train_config("experiments/shapes/teacher.yaml")
    assert to_mapping(teacher) == to_mapping(load_train_config(mapping=TEACHER))
    distill = to_mapping(load_train_config("experiments/shapes/distill.yaml"))
    mine = to_mapping(load_train_config(mapping={**STUDENT, "teacher": distill["teacher"]}))
    assert distill == mine


def test_demo_trains_evaluates_and_reports(demo):
    out, cache, first, second = demo
    (teacher_run,) = cache.glob("demo-teacher-*")
    assert (teacher_run / "student.pt").is_file()
    assert f"teacher: training {TEACHER['student']['model']}" in first
    assert f"teacher: reusing the cached teacher {teacher_run}" in second and "teacher: training" not in second
    assert len(list((teacher_run / "reference").rglob("reference.safetensors"))) == 1  # measured once, kept
    teacher_lines = [
        [json.loads(line) for line in (out / "runs" / r / "metrics.jsonl").read_text().splitlines() if '"teacher"' in line]
        for r in ("none", "fd")
    ]
    assert len(teacher_lines[0]) == 1 and teacher_lines[0] == teacher_lines[1]
    report = json.loads((out / "report" / "metrics.json").read_text())
    assert [m["name"] for m in report["models"]] == ["teacher", "none", "fd"]  # the second run's
    assert [m["recipe"] for m in report["models"]] == ["none", "none", "fd"]
    for model in report["models"]:  # embedded by the worker processes (see the fixture), read by the report
        assert Path(model["embeddings"]).parent == (out / "embeddings").resolve()
    diagnosis = report["diagnosis"]
    assert set(diagnosis) == {"none", "fd"} and diagnosis["fd"]["baseline"] == "none"
    for entry in diagnosis["fd"]["properties"]:
        assert entry["distance"] > 1 and entry["term"] and len(entry["evidence"]) == 2
    assert "what the students did not inherit:" in second and f"report: {out / 'report' / 'report.html'}" in second
    assert re.search(r"^time: .* \(teacher .*, students .*, report .*\)$", second, re.MULTILINE)
    assert "2 at a time (one thread each)" in first and all(f"student {r}: trained" in first for r in RECIPES)
    assert "; then geometry with 2 threads" in first  # the fifth of five does not leave a core idle
    assert "then" not in re.search(r"^students: .*$", second, re.MULTILINE)[0]  # two of two: no tail
    threads = {r: load_train_config(out / "runs" / r / "config.yaml").precision.threads for r in ("none", "fd")}
    assert threads == {"none": 1, "fd": 1}
    page = (out / "report" / "report.html").read_text()
    assert page.index("What the students did not inherit") < page.index("<h2>Summary</h2>")  # at the top
    for entry in diagnosis["fd"]["properties"]:
        assert html.escape(entry["label"]) in page


def test_table_rows_come_from_the_runs_and_the_report(demo):
    import pandas as pd

    out, _, _, second = demo
    table = pd.read_csv(out / "summary.csv", index_col=0)
    assert list(table.index) == ["teacher", "none", "fd"]
    assert {"R@1 i->t", "zero-shot", "binding", "offset img", "gap", "conformity r img", "CKA img"} <= set(table.columns)
    final = [json.loads(line) for line in (out / "runs" / "fd" / "metrics.jsonl").read_text().splitlines()]
    last_eval = [r for r in final if r["kind"] == "eval"][-1]
    assert table.loc["fd", "zero-shot"] == pytest.approx(last_eval["zeroshot/acc1"])
    assert pd.isna(table.loc["teacher", "CKA img"]) and 0 <= table.loc["fd", "CKA img"] <= 1


def test_student_configs_use_the_cached_teacher(tmp_path):
    cfg = DemoConfig(quick=True)
    student = student_config(cfg, "whitened_fd", store=tmp_path / "s", teacher=tmp_path / "t.pt", whitening=tmp_path / "w.safetensors")
    assert student.teacher.kind == "cached" and student.recipe == "whitened_fd"
    assert student.schedule.steps < teacher_config(cfg).schedule.steps
    assert set(RECIPES) == {"none", "fd", "whitened_fd", "clip_kd", "geometry"}


def test_demo_refuses_a_foreign_folder(tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("x")
    assert main(["demo", "--quick", "--out", str(foreign), "--cache-dir", str(tmp_path / "c")]) == 1
    assert (foreign / "keep.txt").read_text() == "x"
    assert not Path(tmp_path / "c").exists() or not any(Path(tmp_path / "c").iterdir())


def test_a_failing_student_is_named(tmp_path):
    from lakd.demo import train_students
    from lakd.errors import LakdError

    cfg = DemoConfig(quick=True)
    bad = student_config(cfg, "fd", store=tmp_path / "s", teacher=tmp_path / "t.pt", whitening=tmp_path / "w")
    with pytest.raises(LakdError, match=r"^student fd: .*t\.pt: no such checkpoint file"):
        train_students({"fd": bad}, tmp_path / "runs", jobs=2, echo=lambda _: None)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_worker_ends_when_the_demo_is_killed():
    """A student worker asks to end with the demo's process: killing the demo leaves no orphan training."""
    worker = "from lakd.demo import _die_with_parent; import os, time; _die_with_parent(); print(os.getpid(), flush=True); time.sleep(60)"
    demo = f"import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', {worker!r}]); time.sleep(60)"
    parent = subprocess.Popen([sys.executable, "-c", demo], stdout=subprocess.PIPE, text=True)
    pid = int(parent.stdout.readline())  # the worker is ready
    parent.kill()
    parent.wait()
    status = Path(f"/proc/{pid}/status")
    deadline = time.monotonic() + 10
    while status.exists() and "\nState:\tZ" not in status.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not status.exists() or "\nState:\tZ" in status.read_text()
