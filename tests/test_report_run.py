"""``lakd geometry report --run RUN``: the teacher of a real tiny run (checkpoints every 2 of 6 steps)
against its first, middle and last checkpoints, ``--checkpoints`` selections, the teacher taken from
teacher.model, teacher.eval_store or none, and one-line errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from lakd.cli import main
from lakd.config import load_yaml
from lakd.errors import LakdError
from lakd.models.embed import EmbedConfig, embed
from lakd.report import ReportConfig, geometry_report
from lakd.report.run import run_entries, select_steps
from lakd.runs import RunFolder
from lakd.train import checkpoint as train_checkpoint
from lakd.train import load_train_config, train

TRAIN = "shapes:train?n=48&image_size=32"
VAL = "shapes:val?n=24&image_size=32"


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """Online teacher lakd:tiny-resnet; checkpoints at steps 2, 4 and 6, evaluated at the end."""
    cfg = load_train_config(
        mapping={
            "data": {"train": TRAIN, "batch_size": 8},
            "student": {"model": "lakd:tiny-vit"},
            "teacher": {"kind": "online", "model": "lakd:tiny-resnet"},
            "recipe": {"clip": 1, "fd": 1},
            "schedule": {"steps": 6, "warmup": 2},
            "eval": {"data": VAL, "probes": None, "every": 6, "batch_size": 32},
            "track": {"sample_size": 24},
            "checkpoint": {"every": 2, "keep_last": 3},
            "log_every": 2,
        }
    )
    out = tmp_path_factory.mktemp("run") / "run"
    train(cfg, out=str(out), echo=lambda _: None)
    return out


def variant(run: Path, folder: Path, **teacher) -> Path:
    """A copy of ``run`` (marker, config, checkpoint files) whose config has another teacher section."""
    shutil.copytree(run, folder, ignore=shutil.ignore_patterns("student*"))
    config = load_yaml(folder / "config.yaml")
    config["teacher"] = {**config["teacher"], **teacher}
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    return folder


def metrics_of(report: Path) -> dict:
    return json.loads((report / "metrics.json").read_text())


def test_the_layout_is_the_trainers(run, tmp_path):
    assert issubclass(train_checkpoint.RunFolder, RunFolder)  # one layout, the trainer adds the write side
    made = train_checkpoint.RunFolder(tmp_path / "made")
    assert not RunFolder(made.path).is_run()
    made.prepare(resume=False, overwrite=False)
    assert RunFolder(made.path).check().steps() == [] and RunFolder(run).steps() == [2, 4, 6]


def test_report_of_a_run(run, tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["geometry", "report", "--run", str(run), "--out", str(out), "--tsne-items", "12"]) == 0
    printed = capsys.readouterr().out
    assert "teacher (tiny-resnet)  step 2  step 4  step 6" in printed
    metrics = metrics_of(out)
    names = ["teacher (tiny-resnet)", "step 2", "step 4", "step 6"]
    assert [m["name"] for m in metrics["models"]] == names and metrics["reference"] == names[0]
    assert [m["role"] for m in metrics["models"]] == ["teacher", "student", "student", "student"]
    assert [m["spec"] for m in metrics["models"][1:]] == [str(run / f"checkpoints/step_00000{s}.pt") for s in (2, 4, 6)]
    assert metrics["models"][0]["spec"] == "lakd:tiny-resnet" and metrics["models"][0]["dims"]["image"] == 128
    assert metrics["models"][1]["dims"]["image"] == 256  # the student's own space, not its heads'
    assert metrics["data"] == VAL and metrics["n_items"] == 24
    assert metrics["run"] == {
        "path": str(run), "student": "lakd:tiny-vit", "teacher": "lakd:tiny-resnet",
        "teacher_from": "teacher.model", "steps": [2, 4, 6],
    }
    assert list(metrics["results"]) == names
    assert 0 <= metrics["results"]["step 6"]["alignment"]["image"]["linear_cka"] <= 1
    assert metrics["verdict_rule"].startswith("step 2 is the baseline")
    csv = pd.read_csv(out / "metrics.csv")
    assert csv["model"].drop_duplicates().tolist() == names
    page = (out / "report.html").read_text()
    assert f"training run {run} (student lakd:tiny-vit): checkpoints of steps 2, 4, 6" in page
    assert "<th>step 4</th>" in page

    # chosen checkpoints, over the same report (its cached embeddings are reused)
    again = ["geometry", "report", "--run", str(run), "--out", str(out), "--overwrite", "--checkpoints", "2,6"]
    assert main([*again, "--tsne-items", "12"]) == 0
    metrics = metrics_of(out)
    assert [m["name"] for m in metrics["models"]] == ["teacher (tiny-resnet)", "step 2", "step 6"]
    assert metrics["run"]["steps"] == [2, 6]


def test_checkpoint_selection(run, tmp_path):
    folder = RunFolder(run)
    assert select_steps(folder, None) == [2, 4, 6]
    assert select_steps(folder, "all") == [2, 4, 6]
    assert select_steps(folder, "6,2") == [2, 6]
    with pytest.raises(LakdError, match=r"checkpoints: no checkpoint of step 3 \(there are 2, 4, 6\)"):
        select_steps(folder, "2,3")
    with pytest.raises(LakdError, match=r"checkpoints: expected all or steps such as 100,300, got 'last'"):
        select_steps(folder, "last")
    two = variant(run, tmp_path / "two")
    (two / "checkpoints" / "step_000004.pt").unlink()
    assert select_steps(RunFolder(two), None) == [2, 6]  # first and last: the middle of two is the first
    shutil.rmtree(two / "checkpoints")
    with pytest.raises(LakdError, match=r"two/checkpoints: no checkpoint files \(step_NNNNNN.pt\) in the run"):
        select_steps(RunFolder(two), None)


def test_teacher_from_the_eval_store_or_none(run, tmp_path):
    store = tmp_path / "teacher-val"
    embed(EmbedConfig(model="lakd:tiny-resnet", data=VAL, out=str(store), batch_size=32))
    cached = variant(run, tmp_path / "cached", kind="cached", model=None, store="unused", eval_store=str(store))
    entries = run_entries(str(cached), None, None, None)
    assert [(e.name, e.role, e.kind, e.spec) for e in entries.inputs][0] == (
        "teacher (teacher-val)", "teacher", "embeddings", str(store)
    )
    assert entries.description["teacher_from"] == "teacher.eval_store" and entries.data == VAL

    plain = variant(run, tmp_path / "plain", kind="none", model=None)
    entries = run_entries(str(plain), "all", "shapes:val?n=30&image_size=32", None)
    assert [e.name for e in entries.inputs] == ["step 2", "step 4", "step 6"]  # the first is the reference
    assert entries.data == "shapes:val?n=30&image_size=32" and entries.description["teacher"] is None
    given = run_entries(str(plain), "6", None, "lakd:tiny-vit")
    assert [e.name for e in given.inputs] == ["teacher (tiny-vit)", "step 6"]
    assert given.description["teacher_from"] == "given"

    arch = variant(run, tmp_path / "arch", model="teacher.pt", arch="ViT-B-32")
    with pytest.raises(LakdError, match=r"config.yaml: teacher.model teacher.pt needs teacher.arch ViT-B-32"):
        run_entries(str(arch), None, None, None)
    config = load_yaml(plain / "config.yaml")
    config["eval"]["data"] = None
    (plain / "config.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(LakdError, match=r"config.yaml: eval.data is not set; give the data"):
        run_entries(str(plain), None, None, None)


def test_a_run_report_refuses_other_entries_and_non_runs(run, tmp_path, capsys):
    with pytest.raises(LakdError, match=r"run: compares the run's teacher and checkpoints \(named step N\); give no `models`"):
        geometry_report(ReportConfig(out=str(tmp_path / "a"), run=str(run), students=("lakd:tiny-vit",)))
    with pytest.raises(LakdError, match="checkpoints: only used with `run`"):
        geometry_report(ReportConfig(out=str(tmp_path / "b"), models=("lakd:tiny-vit",), checkpoints="all"))
    with pytest.raises(LakdError, match=r"`out` .*: contains the input .*step_000002.pt"):
        geometry_report(ReportConfig(out=str(run / "checkpoints"), run=str(run), overwrite=True))
    assert main(["geometry", "report", "--model", "lakd:tiny-vit", "--checkpoints", "all", "--out", str(tmp_path / "c")]) == 1
    assert capsys.readouterr().err == "error: --checkpoints: only used with --run\n"  # as the command's flags
    mine = tmp_path / "mine"
    mine.mkdir()
    assert main(["geometry", "report", "--run", str(mine), "--out", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err
    assert err == f"error: {mine}: not a lakd training run (no run.json with format lakd-train-run/1)\n"
    assert not (tmp_path / "r").exists()
