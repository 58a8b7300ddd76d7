"""Library messages name config fields; the CLI prints them as the flags of the command that ran.

Every command is run on bad input through ``lakd.cli.main``; every flag its error suggests must be
a flag that command accepts, and a field the command has no flag for stays a field.
"""

from __future__ import annotations

import errno
import json
import logging
import re
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import typer.main
from PIL import Image

import lakd.cli as cli
from lakd.cli import DATA_FLAGS, FIELD_FLAGS, app, config_fields, field_flag, main
from lakd.data.shapes.export import export_shapes
from lakd.data.store import write_store
from lakd.data.store.whitening import WhitenApplyConfig, WhitenFitConfig
from lakd.demo import DemoConfig
from lakd.eval import EvalConfig
from lakd.models.embed import EmbedConfig
from lakd.report import ReportConfig
from lakd.report.inputs import REPORT_FORMAT

FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
N, DIM, BAD_ROWS = 40, 6, (3, 17)


def _command(path: tuple[str, ...]):
    command = typer.main.get_command(app)
    for name in path:
        command = command.commands[name]
    return command


def _options(path: tuple[str, ...]) -> set[str]:
    return {opt for param in _command(path).params for opt in (*param.opts, *param.secondary_opts)}


# ---- the table ---------------------------------------------------------------------------------

CONFIG_COMMANDS = {
    ("embed",): EmbedConfig,
    ("eval",): EvalConfig,
    ("whiten", "fit"): WhitenFitConfig,
    ("whiten", "apply"): WhitenApplyConfig,
    ("geometry", "report"): ReportConfig,
    ("demo",): DemoConfig,
}
SPEC_ALIAS_FLAGS = {"--image-root", "--csv-img-key", "--csv-caption-key", "--csv-separator"}


@pytest.mark.parametrize("path", list(CONFIG_COMMANDS), ids=" ".join)
def test_every_flag_of_a_command_is_the_flag_of_one_of_its_config_fields(path):
    """The table is complete: each option of a command that builds a config is a config field's
    flag (or a data-spec alias, or --help), so the printer can name any of them."""
    options = _options(path)
    from_fields = {field_flag(name) for name in config_fields(CONFIG_COMMANDS[path])}
    aliases = SPEC_ALIAS_FLAGS if {p.name for p in DATA_FLAGS} <= {p.name for p in _command(path).params} else set()
    assert options - {"--help"} - aliases <= from_fields
    assert set(FIELD_FLAGS.values()) <= {opt for p in CONFIG_COMMANDS for opt in _options(p)}


def test_field_flag_rule_and_exceptions():
    assert field_flag("allow_nonfinite") == "--allow-nonfinite"
    assert field_flag("num_workers") == "--workers"
    assert field_flag("models") == "--model" and field_flag("students") == "--student"
    assert field_flag("source_options.allow_outside_root") == "--allow-outside-root"


def test_printer_rewrites_only_the_fields_the_command_has():
    running = cli._RunningCommand({"overwrite": "--overwrite", "out": "--out", "batch_size": "--batch-size"})
    assert running.show("x: already exists (use `overwrite` to replace it)") == (
        "x: already exists (use --overwrite to replace it)"
    )
    assert running.show("batch_size: must be positive, got 0") == "--batch-size: must be positive, got 0"
    assert running.show("`out` /r: contains the input /r/a") == "--out /r: contains the input /r/a"
    # a field without a flag here stays a field; a command name is not a field
    assert running.show("rerun with `allow_nonfinite` to drop them") == "rerun with `allow_nonfinite` to drop them"
    assert running.show("written by `lakd embed`") == "written by `lakd embed`"
    # only a leading prefix is a field; a path or spec that merely starts the message is not
    assert running.show("s.csv: out: no") == "s.csv: out: no"
    assert running.show("shapes:val: no items") == "shapes:val: no items"
    given = cli._RunningCommand({"out": "--out"}, frozenset({"out"}))  # lakd ... --out out
    assert given.show("out: already exists (use `out`)") == "out: already exists (use --out)"


def test_a_value_that_starts_a_message_is_not_taken_for_a_field(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mine.txt").write_text("keep")
    assert main(["data", "shapes", "--out", "out", "--n", "2"]) == 1
    assert capsys.readouterr().err == (
        "error: out: exists and is not a shapes folder (no lakd_shapes.json); not replacing it; choose another --out\n"
    )


def test_warnings_name_flags_too(monkeypatch):
    monkeypatch.setattr(cli, "_running", cli._RunningCommand({"allow_nonfinite": "--allow-nonfinite"}))
    record = logging.LogRecord("lakd.data.store", logging.WARNING, __file__, 1, "s: dropped 2 (`allow_nonfinite`)", None, None)
    assert cli._LevelPrefixFormatter().format(record) == "warning: s: dropped 2 (--allow-nonfinite)"
    monkeypatch.setattr(cli, "_running", None)  # outside a command (Python callers): as written
    assert cli._LevelPrefixFormatter().format(record) == "warning: s: dropped 2 (`allow_nonfinite`)"


# ---- every command on bad input -------------------------------------------------------------


def _store(path: Path, *, nonfinite: bool = False, model: str = "synthetic", singular: bool = False) -> Path:
    rng = np.random.default_rng(0)
    image = torch.tensor(rng.normal(size=(N, DIM)) + 1.0, dtype=torch.float32)
    text = torch.tensor(rng.normal(size=(N, DIM)) - 1.0, dtype=torch.float32)
    if nonfinite:
        image[list(BAD_ROWS)] = float("nan")
    if singular:  # one coordinate constant: a covariance of rank DIM - 1
        image[:, 0] = 1.0
        text[:, 0] = 1.0
    write_store(
        path,
        image,
        model=model,
        source="synthetic",
        text=text,
        text_item=torch.arange(N),
        captions=[f"caption {i}" for i in range(N)],
        ids=[f"item-{i:02d}" for i in range(N)],
    )
    return path


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("inputs")
    paths = {"root": root, "good": _store(root / "good"), "nan": _store(root / "nan", nonfinite=True)}
    paths["singular"] = _store(root / "singular", singular=True)
    (root / "foreign").mkdir()
    (root / "foreign" / "meta.json").write_text('{"mine": true}')  # a folder that is not a store
    paths["foreign"] = root / "foreign"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "epoch": 1}, root / "bare.pt")  # an open_clip checkpoint
    paths["bare"] = root / "bare.pt"
    folder = root / "taken"
    folder.mkdir()
    (folder / "mine.txt").write_text("keep")
    paths["taken"] = folder
    (root / "file.txt").write_text("a file")
    paths["file"] = root / "file.txt"
    (root / "images").mkdir()
    Image.new("RGB", (8, 8)).save(root / "secret.png")  # readable once --allow-outside-root lets it in
    (root / "images" / "c.csv").write_text("filepath,title\n../secret.png,a caption\n")
    paths["csv"] = root / "images" / "c.csv"
    (root / "cifar").mkdir()
    paths["cifar"] = root / "cifar"
    assert main(["whiten", "fit", "--embeddings", str(paths["good"]), "--out", str(root / "w.safetensors")]) == 0
    paths["stats"] = root / "w.safetensors"
    (root / "train.yaml").write_text("{}\n")  # every default
    paths["train"] = root / "train.yaml"
    # folders lakd wrote, which `overwrite` replaces (so an error may advise it)
    paths["shapes"] = export_shapes(root / "shapes", split="val", n=2, image_size=32, progress=False)
    (root / "report").mkdir()
    (root / "report" / "metrics.json").write_text(json.dumps({"format": REPORT_FORMAT}))
    paths["report"] = root / "report"
    tiny = {  # two steps of the smallest model: cheap enough to run when an error's advice is followed
        "data": {"train": "shapes:train?n=8&image_size=32", "batch_size": 4, "workers": 0},
        "student": {"model": "lakd:tiny-vit"},
        "recipe": "none",
        "schedule": {"steps": 2, "warmup": 1},
        "eval": {"data": None, "probes": None},
        "checkpoint": {"every": 2},
    }
    (root / "tiny.yaml").write_text(json.dumps(tiny))
    paths["tiny_train"] = root / "tiny.yaml"
    assert main(["train", str(paths["tiny_train"]), "--out", str(root / "run")]) == 0  # a finished run
    paths["run"] = root / "run"
    return paths


# (command path, arguments, text the error must contain); {name} is filled from ``inputs``,
# {tmp} is a fresh folder of the test
CASES = [
    (("data", "shapes"), ["--out", "{shapes}", "--n", "2"], "(use --overwrite to replace it)"),
    (
        ("data", "shapes"),
        ["--out", "{taken}", "--n", "2"],
        "is not a shapes folder (no lakd_shapes.json); not replacing it; choose another --out",
    ),
    (
        ("embed",),
        ["--model", "lakd:tiny-vit", "--arch", "ViT-B-32", "--data", "shapes:val?n=2", "--out", "{tmp}/e"],
        "lakd:tiny-vit: --arch applies only to checkpoint files",
    ),
    (
        ("embed",),
        ["--model", "lakd:tiny-vit", "--data", "shapes:val?n=2", "--out", "{file}"],
        "exists and is not a folder; choose another --out",
    ),
    (
        ("embed",),
        ["--model", "lakd:tiny-vit", "--data", "shapes:val?n=2", "--out", "{good}"],
        "made with model='synthetic', not 'lakd:tiny-vit'; use --overwrite to replace it or choose another --out",
    ),
    (
        ("embed",),
        ["--model", "lakd:tiny-vit", "--data", "{csv}", "--out", "{tmp}/e"],
        "(use --allow-outside-root to allow it)",
    ),
    (
        ("embed",),
        ["--model", "lakd:tiny-vit", "--data", "tv:CIFAR10?root={cifar}", "--out", "{tmp}/e"],
        "use --download to fetch it",
    ),
    (
        ("embed",),
        ["--model", "lakd:tiny-vit", "--data", "shapes:val?n=2", "--out", "{foreign}", "--overwrite"],
        "not replacing it, even with --overwrite; choose another --out",
    ),
    (("data", "shapes"), ["--out", "{taken}", "--n", "2", "--overwrite"], "not replacing it, even with --overwrite"),
    (("eval",), ["--model", "lakd:tiny-vit", "--out", "{tmp}/r.json"], "error: --data: needed with --model"),
    (
        ("eval",),
        ["--model", "lakd:tiny-vit", "--data", "shapes:val?n=2", "--teacher", "{bare}", "--out", "{tmp}/r.json"],
        "give that store as --teacher-embeddings",
    ),
    (
        ("eval",),
        ["--model", "lakd:tiny-vit", "--embeddings", "{good}", "--out", "{tmp}/r.json"],
        "give either --model (with --data) or --embeddings",
    ),
    (
        ("eval",),
        ["--embeddings", "{good}", "--data", "shapes:val", "--out", "{tmp}/r.json"],
        "error: --data: not used with --embeddings",
    ),
    (
        ("eval",),
        ["--embeddings", "{good}", "--teacher", "lakd:tiny-vit", "--teacher-embeddings", "{good}", "--out", "{tmp}/r.json"],
        "give either --teacher or --teacher-embeddings, not both",
    ),
    (("eval",), ["--embeddings", "{good}", "--task", "nope", "--out", "{tmp}/r.json"], "error: --task: unknown task 'nope'"),
    (("eval",), ["--embeddings", "{nan}", "--out", "{tmp}/r.json"], "rerun with --allow-nonfinite to drop them"),
    (
        ("whiten", "fit"),
        ["--embeddings", "{nan}", "--out", "{tmp}/w.safetensors"],
        "2 of 40 image rows contain NaN/Inf; rerun with --allow-nonfinite to drop them",
    ),
    (
        ("whiten", "fit"),
        ["--embeddings", "{good}", "--out", "{tmp}/w.safetensors", "--modality", "audio"],
        "error: --modality: expected some of image, text, got audio",
    ),
    (
        ("whiten", "fit"),
        ["--embeddings", "{singular}", "--out", "{tmp}/w.safetensors", "--eps", "0"],
        "use --eps > 0, --shrinkage, or --rank <= 5",
    ),
    (
        ("whiten", "apply"),
        ["--embeddings", "{good}", "--stats", "{stats}", "--out", "{singular}"],
        "(use --overwrite to replace it)",
    ),
    (
        ("whiten", "apply"),
        ["--embeddings", "{good}", "--stats", "{stats}", "--out", "{taken}"],
        "is not a lakd embedding store (no meta.json with format 'lakd-embeddings'); not replacing it; choose "
        "another --out",
    ),
    (
        ("whiten", "apply"),
        ["--embeddings", "{good}", "--stats", "{stats}", "--out", "{foreign}", "--overwrite"],
        "not replacing it, even with --overwrite; choose another --out",
    ),
    (
        ("whiten", "apply"),
        ["--embeddings", "{nan}", "--stats", "{stats}", "--out", "{tmp}/white"],
        "rerun with --allow-nonfinite to drop them",
    ),
    (
        ("geometry", "report"),
        ["--out", "{tmp}/r"],
        "give at least one of --model, --teacher, --student or --embeddings",
    ),
    (
        ("geometry", "report"),
        ["--embeddings", "{good}", "--out", "{tmp}/r", "--text-view", "some"],
        "error: --text-view: unknown 'some' (choose from paired, all)",
    ),
    (("geometry", "report"), ["--embeddings", "{good}", "--out", "{report}"], "(use --overwrite to replace it)"),
    (
        ("geometry", "report"),
        ["--embeddings", "{good}", "--out", "{taken}"],
        "is not a lakd geometry report (no metrics.json with format lakd-geometry-report/1); not replacing it; "
        "choose another --out",
    ),
    (
        ("geometry", "report"),
        ["--model", "{bare}", "--data", "shapes:val?n=2", "--out", "{tmp}/r"],
        "give that store as one of the --embeddings",
    ),
    (("geometry", "report"), ["--embeddings", "{good}", "--out", "{root}"], "error: --out {root}: contains the input"),
    (
        ("geometry", "report"),
        ["--embeddings", "{nan}", "--out", "{tmp}/r"],
        "2 of 40 image rows contain NaN/Inf; rerun with --allow-nonfinite to drop them",
    ),
    (("demo",), ["--out", "{taken}", "--quick"], "was not written by `lakd demo`; choose another --out"),
    (("train",), ["{train}", "--out", "{tmp}/run", "--resume", "--overwrite"], "give --resume or --overwrite, not both"),
    (("train",), ["{tiny_train}", "--out", "{run}"], "(use --resume to continue the run or --overwrite to replace it)"),
    (("train",), ["{train}", "--out", "{taken}"], "not a lakd training run (no run.json with format"),
    (("train",), ["{train}", "--out", "{taken}", "--overwrite"], "not replacing it, even with --overwrite"),
]


@pytest.mark.parametrize("path, args, expected", CASES, ids=[" ".join(c[0]) + f" {i}" for i, c in enumerate(CASES)])
def test_every_flag_an_error_suggests_is_a_flag_of_the_command(path, args, expected, inputs, tmp_path, capsys):
    names = {**{key: str(value) for key, value in inputs.items()}, "tmp": str(tmp_path)}
    argv = [*path, *(arg.format(**names) for arg in args)]
    assert main(argv) == 1
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if not line.startswith("embedding ")]  # progress bars
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert expected.format(**names) in lines[0]
    suggested = set(FLAG.findall(lines[0]))
    assert suggested <= _options(path), f"{' '.join(path)} has no {suggested - _options(path)}: {lines[0]}"
    # a field stays a field only where the command has no flag for it
    for name in re.findall(r"`([a-z_][a-z0-9_.]*)`", lines[0]):
        assert field_flag(name) not in _options(path), lines[0]


def _switches(path: tuple[str, ...]) -> set[str]:
    """The command's on/off flags (``--overwrite``, ``--allow-nonfinite``, ...): advice one can follow as is."""
    return {opt for param in _command(path).params if getattr(param, "is_flag", False) for opt in param.opts}


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    lines = [line for line in err if not line.startswith(("embedding ", "warning: ", "training"))]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


# the cases whose error advises a switch the command line does not have yet
ADVISED = [case for case in CASES if any(f in case[2] and f not in case[1] for f in _switches(case[0]))]


@pytest.mark.parametrize("path, args, expected", ADVISED, ids=[" ".join(c[0]) + f" {i}" for i, c in enumerate(ADVISED)])
def test_following_an_errors_advice_gets_past_it(path, args, expected, inputs, tmp_path, capsys, monkeypatch):
    """Each switch an error advises is run, on a fresh copy of the inputs: the command then succeeds,
    or stops at another problem (never the same error, never "not ..., even with" the switch). The
    network is blocked, so --download fails at once, with an error of its own."""

    def unreachable(*args, **kwargs):
        raise OSError(errno.ENETUNREACH, "Network is unreachable (blocked by the test)")

    for name in ("create_connection", "getaddrinfo"):
        monkeypatch.setattr(socket, name, unreachable)
    monkeypatch.setattr(socket.socket, "connect", unreachable)
    root = inputs["root"]

    def fresh(copy: Path) -> list[str]:
        shutil.copytree(root, copy, symlinks=True)
        names = {key: str(value).replace(str(root), str(copy)) for key, value in inputs.items()}
        return [*path, *(arg.format(**names, tmp=str(copy / "new")) for arg in args)]

    argv = fresh(tmp_path / "first")
    assert main(argv) == 1
    first = _error_line(capsys)
    advised = {flag for flag in FLAG.findall(first) if flag in _switches(path) and flag not in argv}
    assert advised, first
    for i, switch in enumerate(sorted(advised)):
        argv = fresh(tmp_path / f"with-{i}")
        if main([*argv, switch]) == 0:
            capsys.readouterr()
            continue
        line = _error_line(capsys)
        assert line != first.replace(str(tmp_path / "first"), str(tmp_path / f"with-{i}")), (switch, line)
        assert f"even with {switch}" not in line, (switch, line)


def test_report_allow_nonfinite_drops_the_rows_and_records_the_count(inputs, tmp_path, capsys):
    out = tmp_path / "r"
    args = ["geometry", "report", "--embeddings", str(inputs["nan"]), "--out", str(out), "--tsne-items", "10"]
    assert main([*args, "--allow-nonfinite"]) == 0
    capsys.readouterr()
    metrics = json.loads((out / "metrics.json").read_text())
    (model,) = metrics["models"]
    assert model["dropped_nonfinite"] == {"items": len(BAD_ROWS), "texts": len(BAD_ROWS)}
    assert metrics["n_items"] == N - len(BAD_ROWS)
