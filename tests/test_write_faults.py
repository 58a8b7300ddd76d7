"""A full disk while lakd writes: every writer (a store, a report, whitening statistics, a checkpoint)
ends with one error line and leaves the previous output as it was. The disk is simulated by a writer
patched to raise ``OSError(ENOSPC)`` part way."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import lakd.analysis.whitening as whitening_module
import lakd.data.store.format as store_format
import lakd.models.checkpoint as model_checkpoint
import lakd.report.build as report_build
from lakd.analysis.whitening import WhiteningStats
from lakd.cli import main
from lakd.data.store import EmbeddingStore, write_store
from lakd.models import load_model, save_checkpoint
from lakd.models.safe_load import read_checkpoint


def no_space(path) -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


def error_line(capsys) -> str:
    """The one line stderr holds besides progress bars."""
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if line.strip() and not line.startswith(("embedding ", "training"))]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (hidden ones too) with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def fail_on_call(monkeypatch, module, name: str, call: int) -> list:
    """Make ``module.name`` raise ENOSPC (naming its file argument) from its ``call``-th call on."""
    real, calls = getattr(module, name), []

    def writer(*args, **kwargs):
        calls.append(args)
        if len(calls) >= call:
            path = next((a for a in args if isinstance(a, str | os.PathLike)), "file")
            raise no_space(path)
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
    calls = fail_on_call(monkeypatch, store_format, "save_file", 2)
    assert main([*EMBED, "--out", str(out)]) == 1
    assert error_line(capsys).endswith(": No space left on device")
    assert sorted(p.name for p in out.iterdir()) == ["meta.json", "shard-00000.safetensors"]  # no temporaries
    assert json.loads((out / "meta.json").read_text())["complete"] is False
    monkeypatch.undo()
    first = (out / "shard-00000.safetensors").read_bytes()
    assert main([*EMBED, "--out", str(out)]) == 0
    assert len(calls) == 2 and (out / "shard-00000.safetensors").read_bytes() == first  # resumed
    assert EmbeddingStore(out).n_items == 12


def test_embed_overwrite_on_a_full_disk_leaves_the_old_store_whole(tmp_path, capsys, monkeypatch):
    out = _store(tmp_path / "e", seed=1, n=12)
    before = snapshot(out)
    fail_on_call(monkeypatch, store_format, "save_file", 3)
    assert main([*EMBED, "--out", str(out), "--overwrite"]) == 1
    assert error_line(capsys).endswith(": No space left on device")
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
    fail_on_call(monkeypatch, store_format, "save_file", 1)
    args = ["whiten", "apply", "--embeddings", str(source), "--stats", str(stats), "--out", str(out), "--overwrite"]
    assert main(args) == 1
    assert error_line(capsys).endswith(": No space left on device")
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
    fail_on_call(monkeypatch, report_build, "write_json", 1)
    assert main([*args, "--overwrite", "--seed", "1"]) == 1
    assert error_line(capsys).endswith("metrics.json: No space left on device")
    assert snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r", "s"]  # no temporary folder left


# ---- whitening statistics ------------------------------------------------------------------------


def test_whiten_fit_on_a_full_disk_leaves_the_previous_set(tmp_path, capsys, monkeypatch):
    first, second = _store(tmp_path / "a", seed=5), _store(tmp_path / "b", seed=6)
    out = tmp_path / "w.safetensors"
    assert main(["whiten", "fit", "--embeddings", str(first), "--out", str(out)]) == 0
    capsys.readouterr()
    before = {p.name: p.read_bytes() for p in tmp_path.glob("w.*")}
    fail_on_call(monkeypatch, whitening_module, "save_file", 2)  # the image file is written, the text one is not
    assert main(["whiten", "fit", "--embeddings", str(second), "--out", str(out)]) == 1
    assert error_line(capsys).endswith(": No space left on device")
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
        if self.name.startswith("ckpt.safetensors.json") or self.name.startswith(".ckpt.safetensors.json."):
            raise no_space(self)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", write_text)
    with pytest.raises(OSError) as err:
        save_checkpoint(tiny, path, epoch=2)
    assert err.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert snapshot(tmp_path) == before
    assert read_checkpoint(path)[1]["epoch"] == 1


def test_pt_checkpoint_on_a_full_disk_keeps_the_previous_file(tmp_path, tiny, monkeypatch):
    path = tmp_path / "ckpt.pt"
    save_checkpoint(tiny, path, epoch=1)
    before = snapshot(tmp_path)
    fail_on_call(monkeypatch, model_checkpoint.torch, "save", 1)
    with pytest.raises(OSError):
        save_checkpoint(tiny, path, epoch=2)
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
    fail_on_call(monkeypatch, model_checkpoint.torch, "save", 2)  # step 2's checkpoint is written, step 4's is not
    assert main(["train", str(tmp_path / "t.yaml"), "--out", str(run)]) == 1
    assert error_line(capsys).endswith(": No space left on device")
    checkpoints = run / "checkpoints"
    assert (checkpoints / "latest").read_text().strip() == "step_000002.pt"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["latest", "step_000002.pt"]
    assert read_checkpoint(checkpoints / "step_000002.pt")[1]["training_state"]["step"] == 2
