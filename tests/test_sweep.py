"""``experiments/shapes/sweep.py``: the statistics on a small synthetic table, and the quick mode end to end
(files written, rows from the runs' final evaluations, finished runs reused)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
from scipy import stats

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "shapes" / "sweep.py"


@pytest.fixture(scope="module")
def sweep(load_script):
    return load_script(SCRIPT, "shapes_sweep")


def synthetic_table() -> pd.DataFrame:
    key = "zeroshot/acc1"
    rows = [
        {"model": "teacher", "seed": None, key: 0.9, "geometry/image.offset_ratio": 2.0},
        # rows out of seed order: pairing goes by seed, not by position
        {"model": "fd", "seed": 2, key: 0.60, "geometry/image.offset_ratio": 5.0},
        {"model": "fd", "seed": 0, key: 0.50, "geometry/image.offset_ratio": 4.0},
        {"model": "fd", "seed": 1, key: 0.40, "geometry/image.offset_ratio": 6.0},
        {"model": "whitened_fd", "seed": 0, key: 0.59, "geometry/image.offset_ratio": 3.0},
        {"model": "whitened_fd", "seed": 1, key: 0.50, "geometry/image.offset_ratio": 3.0},
        {"model": "whitened_fd", "seed": 2, key: 0.71, "geometry/image.offset_ratio": 3.0},
        {"model": "none", "seed": 0, key: 0.30, "geometry/image.offset_ratio": None},  # one seed only
    ]
    return pd.DataFrame(rows)


def test_summary_means_stds_and_paired_intervals(sweep):
    metrics = {"zero-shot": "zeroshot/acc1", "offset ratio img": "geometry/image.offset_ratio"}
    summary = sweep.summarize(synthetic_table(), metrics).set_index(["model", "metric"])

    fd = summary.loc[("fd", "zero-shot")]
    assert fd["mean"] == pytest.approx(0.5) and fd["std"] == pytest.approx(0.1) and fd["n"] == 3
    assert math.isnan(fd["diff_mean"]) and fd["diff_n"] == 0  # the baseline has no difference to itself

    wfd = summary.loc[("whitened_fd", "zero-shot")]
    diffs = [0.09, 0.10, 0.11]  # seeds 0, 1, 2
    half = stats.t.ppf(0.975, 2) * 0.01 / math.sqrt(3)
    assert wfd["diff_mean"] == pytest.approx(0.10) and wfd["diff_std"] == pytest.approx(pd.Series(diffs).std())
    assert wfd["diff_n"] == 3
    assert (wfd["diff_low"], wfd["diff_high"]) == (pytest.approx(0.10 - half), pytest.approx(0.10 + half))
    assert wfd["diff_low"] > 0  # the pairs agree closely; with differences 0.05, 0.10, 0.15 it would not be
    loose = sweep.paired_interval([0.55, 0.50, 0.75], [0.50, 0.40, 0.60])
    assert loose["diff_mean"] == pytest.approx(0.10) and loose["diff_low"] < 0 < loose["diff_high"]

    offset = summary.loc[("whitened_fd", "offset ratio img")]
    assert offset["diff_mean"] == pytest.approx(-2.0) and offset["diff_std"] == pytest.approx(1.0)

    teacher = summary.loc[("teacher", "zero-shot")]
    assert teacher["mean"] == 0.9 and teacher["n"] == 1 and math.isnan(teacher["std"])

    none = summary.loc[("none", "zero-shot")]  # one pair: a difference, no interval
    assert none["diff_mean"] == pytest.approx(-0.2) and none["diff_n"] == 1 and math.isnan(none["diff_low"])
    assert summary.loc[("none", "offset ratio img")]["n"] == 0

    table = sweep.markdown_table(sweep.summarize(synthetic_table(), metrics), metrics)
    assert "| zero-shot | 0.900 | 0.500 ± 0.100 | 0.600 ± 0.105 | 0.300 |" in table
    assert f"+0.100 [{0.10 - half:.3f}, {0.10 + half:.3f}] *" in table


def test_paired_interval_widens_with_fewer_seeds(sweep):
    three = sweep.paired_interval([1.0, 2.0, 3.5], [0.0, 1.0, 2.0])
    two = sweep.paired_interval([1.0, 2.0], [0.0, 1.0])
    assert three["diff_n"] == 3 and two["diff_n"] == 2
    assert two["diff_low"] == two["diff_high"] == 1.0  # identical differences: a zero-width interval
    wide = sweep.paired_interval([1.0, 2.5], [0.0, 1.0])
    assert wide["diff_high"] - wide["diff_low"] > three["diff_high"] - three["diff_low"]


@pytest.mark.slow
def test_quick_sweep_writes_the_files(sweep, tmp_path, capsys):
    args = ["--quick", "--seeds", "0", "1", "--recipes", "fd", "whitened_fd"]
    args += ["--cache-dir", str(tmp_path / "cache"), "--work", str(tmp_path / "work")]
    assert sweep.main(args) == 0
    results = tmp_path / "work" / "results"
    names = ["shapes_recipes.csv", "shapes_recipes_summary.csv", "shapes_recipes.png", "shapes_recipes.json"]
    assert sorted(p.name for p in results.iterdir()) == sorted(names)  # no temporary file left

    table = pd.read_csv(results / "shapes_recipes.csv")
    assert list(table["model"]) == ["teacher", "fd", "whitened_fd", "fd", "whitened_fd"]
    for row in table[table["model"] != "teacher"].itertuples():
        run = tmp_path / "work" / f"{row.model}-seed{int(row.seed)}"
        lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        last = [line for line in lines if line["kind"] == "eval"][-1]
        assert row.step == last["step"] == 12
        assert table.loc[row.Index, "retrieval/text_retrieval_recall@1"] == pytest.approx(
            last["retrieval/text_retrieval_recall@1"]
        )
        assert table.loc[row.Index, "zeroshot/acc1"] == pytest.approx(last["zeroshot/acc1"])
    teacher = table.iloc[0]
    assert pd.isna(teacher["geometry/alignment.image.cka"]) and pd.notna(teacher["geometry/image.offset_ratio"])

    summary = pd.read_csv(results / "shapes_recipes_summary.csv")
    wfd = summary[(summary["model"] == "whitened_fd") & (summary["metric"] == "zero-shot")].iloc[0]
    assert wfd["n"] == 2 and wfd["diff_n"] == 2
    assert (results / "shapes_recipes.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    record = json.loads((results / "shapes_recipes.json").read_text())
    assert record["command"].startswith("python experiments/shapes/sweep.py --quick")
    assert {"cpu_count", "torch_threads", "load_average"} <= set(record["machine"]) and record["lakd"]
    assert set(record["runs"]) == {"fd-seed0", "whitened_fd-seed0", "fd-seed1", "whitened_fd-seed1"}
    assert {run["action"] for run in record["runs"].values()} == {"trained"}
    assert record["raw"]["fd-seed1"]["final_eval"]["zeroshot/acc1"] == pytest.approx(
        table[(table["model"] == "fd") & (table["seed"] == 1)]["zeroshot/acc1"].iloc[0]
    )
    capsys.readouterr()

    assert sweep.main([*args[:6], *args[7:]]) == 0  # fd only, again: the finished runs are reused
    out = capsys.readouterr().out
    assert "teacher: reusing the cached teacher" in out and "student fd seed 1: reused" in out
    record = json.loads((results / "shapes_recipes.json").read_text())
    assert {run["action"] for run in record["runs"].values()} == {"reused"}
