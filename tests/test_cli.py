"""The command line: thin commands, one-line errors, nothing half-written."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from lakd.cli import app, main
from lakd.errors import LakdError

# Commands that exist today; a command that is not built yet must not appear in --help.
BUILT_COMMANDS = {"data", "embed", "demo", "eval", "whiten", "geometry", "train"}


def _command_names() -> set[str]:
    import typer.main

    return set(typer.main.get_command(app).commands)


def test_help_lists_exactly_the_built_commands(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert _command_names() == BUILT_COMMANDS
    for name in BUILT_COMMANDS:
        assert name in out
    assert "not implemented" not in out.lower()


@pytest.mark.parametrize("args", [["data", "shapes", "--help"], ["embed", "--help"], ["demo", "--help"]])
def test_every_command_has_help(args, capsys):
    assert main(args) == 0
    assert "Usage" in capsys.readouterr().out


def test_usage_error_exit_status(capsys):
    assert main(["embed", "--model", "lakd:tiny-vit"]) == 2
    assert "--data" in capsys.readouterr().err


def test_bad_model_is_one_line_error_without_traceback(tmp_path, capsys):
    missing = tmp_path / "nope.pt"
    rc = main(["embed", "--model", str(missing), "--data", "shapes:val?n=4", "--out", str(tmp_path / "emb")])
    err = capsys.readouterr().err
    assert rc == 1
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and "nope.pt" in lines[0]
    assert "Traceback" not in err
    assert not (tmp_path / "emb").exists()


def test_debug_shows_the_exception(tmp_path):
    with pytest.raises(LakdError):
        main(
            [
                "--debug",
                "embed",
                "--model",
                str(tmp_path / "nope.pt"),
                "--data",
                "shapes:val?n=4",
                "--out",
                str(tmp_path / "emb"),
            ]
        )


def test_unknown_data_source_is_one_line_error(tmp_path, capsys):
    rc = main(
        [
            "embed",
            "--model",
            "lakd:tiny-vit",
            "--data",
            str(tmp_path / "missing.csv"),
            "--out",
            str(tmp_path / "emb"),
        ]
    )
    err = capsys.readouterr().err
    assert rc == 1 and "missing.csv" in err and len(err.strip().splitlines()) == 1


def test_python_dash_m_lakd():
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    res = subprocess.run([sys.executable, "-m", "lakd", "--help"], capture_output=True, text=True, env=env)
    assert res.returncode == 0 and "embed" in res.stdout


def test_data_shapes_then_embed(tmp_path, capsys):
    data = tmp_path / "shapes"
    assert main(["data", "shapes", "--out", str(data), "--n", "12", "--split", "val"]) == 0
    assert (data / "captions.csv").is_file()
    assert len(list((data / "images").glob("*.png"))) == 12
    # the folder is not overwritten without --overwrite
    assert main(["data", "shapes", "--out", str(data), "--n", "12"]) == 1
    assert "--overwrite" in capsys.readouterr().err

    emb = tmp_path / "emb"
    assert (
        main(
            [
                "embed",
                "--model",
                "lakd:tiny-vit",
                "--data",
                str(data),
                "--out",
                str(emb),
                "--batch-size",
                "8",
                "--shard-size",
                "5",
            ]
        )
        == 0
    )
    meta = json.loads((emb / "meta.json").read_text())
    assert meta["n_items"] == 12
    assert "12 items" in capsys.readouterr().out


def test_no_half_written_output_on_failure(tmp_path, capsys):
    # every image of the data set is missing: the store is started, then removed when nothing is usable
    (tmp_path / "c.csv").write_text("filepath\ttitle\nnope.png\ta thing\nnada.png\tanother\n")
    out = tmp_path / "emb"
    rc = main(["embed", "--model", "lakd:tiny-vit", "--data", str(tmp_path / "c.csv"), "--out", str(out)])
    assert rc == 1
    assert "no readable image" in capsys.readouterr().err
    assert not out.exists()


def test_unwritable_output_is_one_line_error(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    rc = main(["data", "shapes", "--out", str(blocker / "sub"), "--n", "4"])
    err = capsys.readouterr().err
    assert rc == 1 and len(err.strip().splitlines()) == 1 and str(blocker) in err
