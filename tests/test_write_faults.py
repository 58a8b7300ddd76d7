"""A full disk (or a folder that cannot be written) while lakd writes: every writer (a store, a report,
whitening statistics, a checkpoint, a training run) ends with one error line naming the file and
leaves the previous output as it was.

Two ways of making a write fail. Patched writers raise what the real ones raise on a full disk:
Python's own writes an ``OSError`` that names no file, safetensors a ``SafetensorError`` with the
error number in its message, and ``torch.save`` a ``RuntimeError`` of its own when its file's write
fails. And one test sets a real limit on the size of the files a process may write
(``RLIMIT_FSIZE``), so the operating system itself refuses the writes (``EFBIG``), as a full disk
does with ``ENOSPC``."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors import SafetensorError

import lakd.analysis.whitening as whitening_module
import lakd.data.store.format as store_format
import lakd.models.checkpoint as model_checkpoint
from lakd.analysis.whitening import WhiteningStats
from lakd.cli import main
from lakd.data.store import EmbeddingStore, write_store
from lakd.models import load_model, save_checkpoint
from lakd.models.safe_load import read_checkpoint

ROOT = Path(__file__).resolve().parents[1]
FAULTS = [errno.ENOSPC, errno.EACCES]  # a full disk; a folder that cannot be written
FAULT_IDS = ["full-disk", "unwritable"]


def os_error(code: int) -> OSError:
    """What a failed write of Python's raises: the error number, no file name."""
    return OSError(code, os.strerror(code))


def safetensors_error(code: int) -> SafetensorError:
    """What safetensors' ``save_file`` raises when the operating system refuses a write."""
    return SafetensorError(f"Error while serializing: I/O error: {os.strerror(code)} (os error {code})")


def error_line(capsys) -> str:
    """The one line stderr holds besides progress bars and warnings."""
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if line.strip() and not line.startswith(("embedding ", "training"))]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (hidden ones too) with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def fail_on_call(monkeypatch, module, name: str, call: int, error: Exception) -> list:
    """Make ``module.name`` raise ``error`` from its ``call``-th call on (the earlier calls write)."""
    real, calls = getattr(module, name), []

    def writer(*args, **kwargs):
        calls.append(args)
        if len(calls) >= call:
            raise error
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, writer)
    return calls


def _store(path: Path, seed: int, n: int = 30) -> Path:
    rng = np.random.default_rng(seed)
    write_store(
        path,
        torch.tensor(rng.normal(size=(n, 6)) + 2, dtype=torch.float32),
        model=f"synthetic-{seed}",
        source="synthetic",
        text=torch.tensor(rng.normal(size=(n, 6)) - 2, dtype=torch.float32),
        text_item=torch.arange(n),
        captions=[f"caption {i}" for i in range(n)],
        ids=[f"item-{i:02d}" for i in range(n)],
        overwrite=True,
    )
    return path


# ---- stores --------------------------------------------------------------------------------------


EMBED = ["embed", "--model", "lakd:tiny-vit", "--data", "shapes:val?n=12&image_size=32", "--shard-size", "4", "--batch-size", "4"]


def test_embed_on_a_full_disk_keeps_the_finished_shards_and_resumes(tmp_path, capsys, monkeypatch):
    out = tmp_path / "e"
    calls = fail_on_call(monkeypatch, store_format, "save_file", 2, safetensors_error(errno.ENOSPC))
    assert main([*EMBED, "--out", str(out)]) == 1
    assert error_line(capsys) == f"error: {out / 'shard-00001.safetensors'}: No space left on device"
    assert sorted(p.name for p in out.iterdir()) == ["meta.json", "shard-00000.safetensors"]  # no temporaries
    assert json.loads((out / "meta.json").read_text())["complete"] is False
    monkeypatch.undo()
    first = (out / "shard-00000.safetensors").read_bytes()
    assert main([*EMBED, "--out", str(out)]) == 0
    assert len(calls) == 2 and (out / "shard-00000.safetensors").read_bytes() == first  # resumed
    assert EmbeddingStore(out).n_items == 12


@pytest.mark.parametrize("code", FAULTS, ids=FAULT_IDS)
def test_embed_overwrite_on_a_full_disk_leaves_the_old_store_whole(tmp_path, capsys, monkeypatch, code):
    out = _store(tmp_path / "e", seed=1, n=12)
    before = snapshot(out)
    fail_on_call(monkeypatch, store_format, "save_file", 3, safetensors_error(code))
    assert main([*EMBED, "--out", str(out), "--overwrite"]) == 1
    # the replacement is written inside the old store (.lakd-overwrite/) and moved in when complete
    assert error_line(capsys) == f"error: {out / '.lakd-overwrite' / 'shard-00002.safetensors'}: {os.strerror(code)}"
    monkeypatch.undo()
    assert snapshot(out) == before
    assert EmbeddingStore(out).meta["model"] == "synthetic-1"
    assert main([*EMBED, "--out", str(out), "--overwrite"]) == 0
    assert EmbeddingStore(out).meta["model"] == "lakd:tiny-vit"
    assert sorted(p.name for p in out.iterdir()) == ["meta.json"] + [f"shard-0000{i}.safetensors" for i in range(3)]


def test_whiten_apply_on_a_full_disk_leaves_the_old_store_whole(tmp_path, capsys, monkeypatch):
    source = _store(tmp_path / "s", seed=2)
    stats = tmp_path / "w.safetensors"
    assert main(["whiten", "fit", "--embeddings", str(source), "--out", str(stats)]) == 0
    out = _store(tmp_path / "white", seed=3)
    before = snapshot(out)
    capsys.readouterr()
    fail_on_call(monkeypatch, store_format, "save_file", 1, safetensors_error(errno.ENOSPC))
    args = ["whiten", "apply", "--embeddings", str(source), "--stats", str(stats), "--out", str(out), "--overwrite"]
    assert main(args) == 1
    # written in a folder beside `out` and renamed: the error names the file it was to become
    assert error_line(capsys) == f"error: {out / 'shard-00000.safetensors'}: No space left on device"
    assert snapshot(out) == before and sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["s", "white", "w.image.safetensors", "w.image.json", "w.text.safetensors", "w.text.json"]
    )


# ---- reports -------------------------------------------------------------------------------------


def test_report_on_a_full_disk_leaves_the_previous_report(tmp_path, capsys, monkeypatch):
    store = _store(tmp_path / "s", seed=4)
    out = tmp_path / "r"
    args = ["geometry", "report", "--embeddings", str(store), "--out", str(out), "--tsne-items", "10"]
    assert main(args) == 0
    capsys.readouterr()
    before = snapshot(out)
    real = Path.write_text

    def write_text(self, *args, **kwargs):  # the disk is full when metrics.json is written
        if self.name.startswith(".metrics.json."):
            raise os_error(errno.ENOSPC)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", write_text)
    assert main([*args, "--overwrite", "--seed", "1"]) == 1
    assert error_line(capsys) == f"error: {out / 'metrics.json'}: No space left on device"
    assert snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r", "s"]  # no temporary folder left


# ---- whitening statistics ------------------------------------------------------------------------


@pytest.mark.parametrize("code", FAULTS, ids=FAULT_IDS)
def test_whiten_fit_on_a_full_disk_leaves_the_previous_set(tmp_path, capsys, monkeypatch, code):
    first, second = _store(tmp_path / "a", seed=5), _store(tmp_path / "b", seed=6)
    out = tmp_path / "w.safetensors"
    assert main(["whiten", "fit", "--embeddings", str(first), "--out", str(out)]) == 0
    capsys.readouterr()
    before = {p.name: p.read_bytes() for p in tmp_path.glob("w.*")}
    # the image file is written, the text one is not
    fail_on_call(monkeypatch, whitening_module, "save_file", 2, safetensors_error(code))
    assert main(["whiten", "fit", "--embeddings", str(second), "--out", str(out)]) == 1
    assert error_line(capsys) == f"error: {tmp_path / 'w.text.safetensors'}: {os.strerror(code)}"
    assert {p.name: p.read_bytes() for p in tmp_path.glob("w.*")} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["a", "b", *before])
    for modality in ("image", "text"):
        assert WhiteningStats.load(tmp_path / f"w.{modality}.safetensors").n == 30


# ---- checkpoints ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny():
    return load_model("lakd:tiny-vit")[0]


def test_safetensors_checkpoint_on_a_full_disk_keeps_the_previous_pair(tmp_path, tiny, monkeypatch):
    path = tmp_path / "ckpt.safetensors"
    save_checkpoint(tiny, path, epoch=1)
    before = snapshot(tmp_path)
    real = Path.write_text

    def write_text(self, *args, **kwargs):  # the disk fills up when the sidecar is written
        if self.name.startswith(".ckpt.safetensors.json."):
            raise os_error(errno.ENOSPC)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", write_text)
    with pytest.raises(OSError) as err:
        save_checkpoint(tiny, path, epoch=2)
    assert (err.value.errno, err.value.filename) == (errno.ENOSPC, str(tmp_path / "ckpt.safetensors.json"))
    monkeypatch.undo()
    assert snapshot(tmp_path) == before
    assert read_checkpoint(path)[1]["epoch"] == 1


class FullDiskFile:
    """A binary file whose writes fail once ``room`` bytes are written, as on a full disk."""

    def __init__(self, file, room: int):
        self.file, self.room = file, room

    def write(self, data) -> int:
        if len(data) > self.room:
            raise os_error(errno.ENOSPC)
        self.room -= len(data)
        return self.file.write(data)

    def __getattr__(self, name):
        return getattr(self.file, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.file.close()


def full_disk_open(room: int, calls: int = 1):
    """An ``open`` whose ``calls``-th binary file for writing (and every later one) fills up after ``room`` bytes."""
    opened = []

    def fake_open(path, mode="r", *args, **kwargs):
        file = open(path, mode, *args, **kwargs)  # noqa: SIM115
        if "w" not in mode or "b" not in mode:
            return file
        opened.append(path)
        return FullDiskFile(file, room) if len(opened) >= calls else file

    return fake_open


def test_pt_checkpoint_on_a_full_disk_keeps_the_previous_file(tmp_path, tiny, monkeypatch):
    path = tmp_path / "ckpt.pt"
    save_checkpoint(tiny, path, epoch=1)
    before = snapshot(tmp_path)
    # torch.save meets the failed write and raises a RuntimeError of its own; lakd reports the disk
    monkeypatch.setattr(model_checkpoint, "open", full_disk_open(room=10_000), raising=False)
    with pytest.raises(OSError) as err:
        save_checkpoint(tiny, path, epoch=2)
    assert (err.value.errno, err.value.filename) == (errno.ENOSPC, str(path))
    monkeypatch.undo()
    assert snapshot(tmp_path) == before


def test_training_on_a_full_disk_stops_with_one_line_and_the_last_checkpoint(tmp_path, capsys, monkeypatch):
    config = {
        "data": {"train": "shapes:train?n=16&image_size=32", "batch_size": 8},
        "student": {"model": "lakd:tiny-vit"},
        "recipe": "none",
        "schedule": {"steps": 4, "warmup": 1},
        "eval": {"data": None, "probes": None},
        "checkpoint": {"every": 2, "keep_last": 2},
        "log_every": 1,
    }
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(config))
    run = tmp_path / "run"
    # step 2's checkpoint is written, step 4's is not
    monkeypatch.setattr(model_checkpoint, "open", full_disk_open(room=10_000, calls=2), raising=False)
    assert main(["train", str(tmp_path / "t.yaml"), "--out", str(run)]) == 1
    checkpoints = run / "checkpoints"
    assert error_line(capsys) == f"error: {checkpoints / 'step_000004.pt'}: No space left on device"
    assert (checkpoints / "latest").read_text().strip() == "step_000002.pt"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["latest", "step_000002.pt"]
    assert read_checkpoint(checkpoints / "step_000002.pt")[1]["training_state"]["step"] == 2


# ---- the operating system refuses the writes -----------------------------------------------------

LIMITED = textwrap.dedent(
    """
    import contextlib, io, json, resource, signal, sys

    from lakd.cli import main
    from lakd.models import load_model, save_checkpoint

    commands, checkpoints, limit = json.loads(sys.argv[1])
    model = load_model("lakd:tiny-vit")[0]
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
    results = []
    for args in commands:
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            code = main(args)
        results.append([code, err.getvalue()])
    for path in checkpoints:
        try:
            save_checkpoint(model, path, epoch=2)
            results.append([0, ""])
        except Exception as exc:
            results.append([1, f"{type(exc).__name__}: {exc}"])
    print(json.dumps(results))
    """
)


@pytest.mark.skipif(not hasattr(os, "fork") or sys.platform == "win32", reason="RLIMIT_FSIZE is POSIX")
def test_every_writer_on_writes_the_system_refuses(tmp_path, tiny):
    """Each writer in a process that may not write files over 200 bytes: one line (the file and
    "File too large"), and the previous output untouched."""
    store, other = _store(tmp_path / "s", seed=7), _store(tmp_path / "other", seed=8)
    stats = tmp_path / "w.safetensors"
    assert main(["whiten", "fit", "--embeddings", str(store), "--out", str(stats)]) == 0
    report = ["geometry", "report", "--embeddings", str(store), "--out", str(tmp_path / "r"), "--tsne-items", "10"]
    assert main(report) == 0
    white = tmp_path / "white"
    assert main(["whiten", "apply", "--embeddings", str(store), "--stats", str(stats), "--out", str(white)]) == 0
    for name in ("c.pt", "c.safetensors"):
        save_checkpoint(tiny, tmp_path / name, epoch=1)
    before = snapshot(tmp_path)
    commands = [
        ["whiten", "fit", "--embeddings", str(other), "--out", str(stats)],
        [*report, "--overwrite", "--seed", "1"],
        [*EMBED, "--out", str(store), "--overwrite"],
        ["whiten", "apply", "--embeddings", str(other), "--stats", str(stats), "--out", str(white), "--overwrite"],
    ]
    checkpoints = [str(tmp_path / "c.pt"), str(tmp_path / "c.safetensors")]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1"}
    result = subprocess.run(
        [sys.executable, "-c", LIMITED, json.dumps([commands, checkpoints, 200])],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    outcomes = json.loads(result.stdout.strip().splitlines()[-1])
    too_large = os.strerror(errno.EFBIG)
    for (code, err), args in zip(outcomes[: len(commands)], commands, strict=True):
        lines = [line for line in err.strip().splitlines() if line and not line.startswith(("embedding ", "warning: "))]
        assert code == 1 and len(lines) == 1, (args, err)
        assert lines[0].startswith(f"error: {tmp_path}") and lines[0].endswith(f": {too_large}"), lines[0]
    for (code, message), path in zip(outcomes[len(commands) :], checkpoints, strict=True):
        assert (code, message) == (1, f"OSError: [Errno {errno.EFBIG}] {too_large}: '{path}'")
    assert snapshot(tmp_path) == before
