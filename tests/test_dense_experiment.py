"""``experiments/dense/run.py``: the statistics on a small synthetic table, bad input, and the quick
mode end to end (files, rows, numbers read back from the evaluations, reuse on a rerun)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
from scipy import stats

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "dense" / "run.py"


@pytest.fixture(scope="module")
def dense(load_script):
    return load_script(SCRIPT, "dense_experiment")


def test_the_student_config_shares_the_teachers_tokenizer_and_patch_grid():
    """lakd:micro-vit, the students' config: a ViT whose maps align with lakd:tiny-vit's (the teacher)
    position by position, with no resampling of the patch grid (docs/losses.md, ``dense``)."""
    import torch

    from lakd.models import load_model
    from lakd.models.tokens import check_dense_model, image_tokens
    from lakd.train.loop import same_tokenizer

    student, preprocess, tokenizer = load_model("lakd:micro-vit")
    teacher, _, teacher_tokenizer = load_model("lakd:tiny-vit")
    check_dense_model(student)
    assert same_tokenizer(tokenizer, teacher_tokenizer) and tokenizer.context_length == 32
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert image_tokens(student, images).grid == image_tokens(teacher, images).grid == (8, 8)
    visual = [sum(p.numel() for p in m.visual.parameters()) for m in (student, teacher)]
    assert visual[0] < visual[1] / 4  # 0.26 M against 1.29 M


def synthetic_long(dense) -> pd.DataFrame:
    """teacher (seeds 0-2), fd and dense (seeds 0-2, dense's rows out of seed order); head = pooled +
    a lift per model and seed, the same for every condition."""
    pooled = {("teacher", 0): 0.30, ("teacher", 1): 0.30, ("teacher", 2): 0.30,
              ("fd", 0): 0.20, ("fd", 1): 0.25, ("fd", 2): 0.30,
              ("dense", 2): 0.40, ("dense", 0): 0.30, ("dense", 1): 0.30}
    lift = {("teacher", 0): 0.10, ("teacher", 1): 0.20, ("teacher", 2): 0.30,
            ("fd", 0): 0.0, ("fd", 1): 0.0, ("fd", 2): 0.0,
            ("dense", 2): 0.06, ("dense", 0): 0.05, ("dense", 1): 0.04}
    rows = []
    for (model, seed), p in pooled.items():
        for condition in dense.CONDITIONS:
            for scorer, value in (("pooled", p), ("head", p + lift[model, seed])):
                rows.append({"model": model, "role": "student", "seed": seed, "head_seed": seed, "condition": condition,
                             "scorer": scorer, "accuracy": value, "chance": 0.25, "n": 5, "model_spec": "m", "eval_file": "f"})
    return pd.DataFrame(rows, columns=list(dense.COLUMNS))


def test_summary_lift_and_paired_difference_against_fd(dense):
    summary = dense.summary_of(synthetic_long(dense)).set_index(["model", "metric"])
    assert set(summary.index.get_level_values("model")) == {"teacher", "fd", "dense"}
    assert len(summary) == 3 * (len(dense.METRICS) - len(dense.MAP_METRICS))  # no map distances given

    lift = summary.loc[("teacher", "binding head − pooled")]
    half = stats.t.ppf(0.975, 2) * 0.1 / math.sqrt(3)  # lifts 0.1, 0.2, 0.3: sd 0.1
    assert lift["mean"] == pytest.approx(0.2) and lift["std"] == pytest.approx(0.1) and lift["n"] == 3
    assert (lift["low"], lift["high"]) == (pytest.approx(0.2 - half), pytest.approx(0.2 + half))
    assert math.isnan(lift["diff_mean"]) and lift["diff_n"] == 0  # the teacher is not paired with fd

    # dense - fd by seed: pooled 0.10, 0.05, 0.10; lift 0.05, 0.04, 0.06
    pooled = summary.loc[("dense", "spatial pooled")]
    diffs = pd.Series([0.10, 0.05, 0.10])
    assert pooled["diff_mean"] == pytest.approx(diffs.mean()) and pooled["diff_std"] == pytest.approx(diffs.std())
    dense_lift = summary.loc[("dense", "negation head − pooled")]
    half = stats.t.ppf(0.975, 2) * 0.01 / math.sqrt(3)
    assert dense_lift["diff_mean"] == pytest.approx(0.05) and dense_lift["diff_n"] == 3
    assert dense_lift["diff_low"] == pytest.approx(0.05 - half) and dense_lift["diff_low"] > 0
    assert math.isnan(summary.loc[("fd", "all head")]["diff_mean"])  # the baseline

    text = dense.tables(dense.summary_of(synthetic_long(dense)))
    assert "| metric | teacher (n=3) | fd (n=3) | dense (n=3) |" in text and "| metric | dense − fd |" in text
    assert "| basic pooled | 0.300 ± 0.000 | 0.250 ± 0.050 | 0.333 ± 0.058 |" in text
    t_half = stats.t.ppf(0.975, 2) * 0.1 / math.sqrt(3)
    assert f"| basic head − pooled | +0.200 [{0.2 - t_half:.3f}, {0.2 + t_half:.3f}] |" in text  # contains 0: no *


def test_bad_input_is_one_line(dense, tmp_path, capsys):
    assert dense.main(["--seeds", "-1"]) == 1
    assert capsys.readouterr().err == "error: seeds: must be >= 0, got [-1]\n"
    assert dense.main(["--threads", "0"]) == 1
    assert capsys.readouterr().err == "error: threads: must be positive, got 0\n"
    assert dense.main(["--table", "--results", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {tmp_path / 'dense_probes_summary.csv'}: no such file") and err.count("\n") == 1


def test_quick_experiment_writes_the_files(dense, tmp_path, capsys):
    args = ["--quick", "--seeds", "0", "1", "--cache-dir", str(tmp_path / "cache"), "--work", str(tmp_path / "work")]
    assert dense.main(args) == 0
    results = tmp_path / "work" / "results"
    assert sorted(p.name for p in results.iterdir()) == ["dense_probes.csv", "dense_probes.json", "dense_probes_summary.csv"]

    table = pd.read_csv(results / "dense_probes.csv")
    assert list(table.columns) == list(dense.COLUMNS)
    models = ["teacher", "init", "fd", "dense"]
    assert list(dict.fromkeys(table["model"])) == models
    assert len(table) == len(models) * 2 * 5 * 2  # models x seeds x (4 conditions + all) x scorers
    assert table.groupby(["model", "seed", "condition", "scorer"]).size().eq(1).all()
    assert set(table["condition"]) == {"basic", "binding", "spatial", "negation", "all"}
    assert table["accuracy"].between(0, 1).all() and (table["chance"] == 0.25).all()  # 3 negatives per probe
    assert (table[table["condition"] == "all"]["n"] == 24).all() and (table[table["condition"] != "all"]["n"] == 6).all()
    assert (table["head_seed"] == table["seed"]).all()
    for (_model, seed, scorer), part in table.groupby(["model", "seed", "scorer"]):
        conditions = part.set_index("condition")["accuracy"]  # balanced conditions: all = their mean
        assert conditions["all"] == pytest.approx(conditions.drop("all").mean())
        record = json.loads(Path(part["eval_file"].iloc[0]).read_text())
        assert record["task"] == "dense_image_caption_selection" and record["lakd"]["head"]["seed"] == seed
        key = "acc_binding" if scorer == "head" else "pooled_acc_binding"
        assert conditions["binding"] == pytest.approx(record["metrics"][key])
    # the pooled cosine does not depend on the head's seed; the controls are the teacher before training
    teacher = table[(table["model"] == "teacher") & (table["scorer"] == "pooled")].pivot(index="condition", columns="seed", values="accuracy")
    assert (teacher[0] == teacher[1]).all()
    assert set(table[table["model"] == "init"]["model_spec"]) == {"lakd:tiny-vit"}

    summary = pd.read_csv(results / "dense_probes_summary.csv")
    maps = summary["key"] == "maps/distance"
    assert len(summary) == len(models) * len(dense.METRICS) and (summary[~maps]["n"] == 2).all()
    assert summary[maps].set_index("model")["n"].to_dict() == {"teacher": 0, "init": 2, "fd": 2, "dense": 2}
    assert summary[maps]["mean"].dropna().between(0, 4).all()  # a mean squared difference of cosines
    assert summary[maps & (summary["model"] == "init")]["std"].iloc[0] == 0  # one value: the control has no seed
    row = summary[(summary["model"] == "dense") & (summary["metric"] == "spatial head")].iloc[0]
    head = table[(table["condition"] == "spatial") & (table["scorer"] == "head")].set_index(["model", "seed"])["accuracy"]
    assert row["diff_n"] == 2 and row["diff_mean"] == pytest.approx((head["dense"] - head["fd"]).mean())
    lift = summary[(summary["model"] == "teacher") & (summary["metric"] == "all head − pooled")].iloc[0]
    assert lift["low"] <= lift["mean"] <= lift["high"] and math.isnan(lift["diff_mean"])
    assert summary[summary["model"].isin(["teacher", "init", "fd"])]["diff_n"].eq(0).all()

    record = json.loads((results / "dense_probes.json").read_text())
    assert record["command"].startswith("python experiments/dense/run.py --quick")
    assert {"cpu_count", "torch_threads", "load_average"} <= set(record["machine"]) and record["lakd"]
    assert record["settings"]["threads"] == 1 and record["settings"]["probes"] == "shapes:probes?n=24"
    students = {f"student {r} seed {s}" for r in ("fd", "dense") for s in (0, 1)}
    assert set(record["runs"]) == {"teacher", *students}
    assert {run["action"] for run in record["runs"].values()} == {"trained"}
    assert record["runs"]["student dense seed 1"]["steps"] == 4 and record["runs"]["teacher"]["steps"] == 6
    assert {e["action"] for e in record["evals"].values()} == {"evaluated"} and len(record["evals"]) == 8
    assert set(record["maps"]) == {"init", "fd-seed0", "fd-seed1", "dense-seed0", "dense-seed1"}
    assert {m["pairs"] for m in record["maps"].values()} == {24 * 4}  # every probe image with each caption
    fd1 = summary[maps & (summary["model"] == "fd")]["mean"].iloc[0]
    assert fd1 == pytest.approx((record["maps"]["fd-seed0"]["distance"] + record["maps"]["fd-seed1"]["distance"]) / 2)
    assert record["wall_seconds"] >= record["train_seconds"] > 0
    assert record["made_seconds"]["runs"] == pytest.approx(record["train_seconds"]) and record["made_seconds"]["unknown"] == 0
    teacher_ckpt = str(Path(record["settings"]["teacher"]) / "student.pt")
    assert dense.map_distance(teacher_ckpt, teacher_ckpt, "shapes:probes?n=4", "cpu")["distance"] == pytest.approx(0, abs=1e-6)
    capsys.readouterr()

    assert dense.main(args) == 0  # again: every run and every evaluation is reused, the numbers are the same
    out = capsys.readouterr().out
    assert "student dense seed 1: reused" in out and "dense-probes init seed 0: reused" in out
    rerun = json.loads((results / "dense_probes.json").read_text())
    assert {run["action"] for run in rerun["runs"].values()} == {"reused"}
    assert {e["action"] for e in rerun["evals"].values()} == {"reused"}
    assert {m["action"] for m in rerun["maps"].values()} == {"reused"}
    # the time each reused piece took when it was made is carried over from the previous record
    assert rerun["runs"]["student fd seed 1"]["seconds_made"] == record["runs"]["student fd seed 1"]["seconds"]
    assert rerun["made_seconds"] == record["made_seconds"]
    pd.testing.assert_frame_equal(pd.read_csv(results / "dense_probes.csv"), table)

    assert dense.main(["--table", "--results", str(results)]) == 0
    printed = capsys.readouterr().out
    assert "| metric | teacher (n=2) | init (n=2) | fd (n=2) | dense (n=2) |" in printed and "R@1 i->t" in printed
