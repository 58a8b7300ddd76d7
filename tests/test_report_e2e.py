"""``lakd geometry report`` from tiny checkpoints on the shapes world: teacher (ViT, 256-d) vs student
(ResNet, 128-d) through the CLI, embeddings cached under the report, reused by an --overwrite rerun."""

from __future__ import annotations

import json

import pytest

import lakd.models.embed
from lakd.cli import main
from lakd.models import load_model, save_checkpoint

DATA = "shapes:val?n=24"


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpt")
    return {
        name: save_checkpoint(load_model(f"lakd:{name}")[0], root / f"{name}.pt")
        for name in ("tiny-vit", "tiny-resnet")
    }


def test_teacher_vs_student_from_checkpoints_then_one_model_from_the_cache(
    checkpoints, tmp_path, capsys, monkeypatch
):
    out = tmp_path / "report"
    teacher, student = str(checkpoints["tiny-vit"]), str(checkpoints["tiny-resnet"])
    args = ["geometry", "report", "--teacher", teacher, "--student", student, "--data", DATA]
    assert main([*args, "--out", str(out), "--tsne-items", "12"]) == 0
    captured = capsys.readouterr()
    assert "embedding" in captured.err  # progress bars while embedding
    assert f"report: {out / 'report.html'}" in captured.out and "tiny-resnet" in captured.out

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["data"] == DATA and metrics["n_items"] == 24
    models = {m["name"]: m for m in metrics["models"]}
    assert (models["tiny-vit"]["role"], models["tiny-vit"]["dims"]["image"]) == ("teacher", 256)
    assert (models["tiny-resnet"]["role"], models["tiny-resnet"]["dims"]["text"]) == ("student", 128)
    assert models["tiny-vit"]["model"] == teacher
    for model in models.values():  # cached under the report, recorded relative to it
        assert model["embeddings"].startswith("embeddings/")
        assert json.loads((out / model["embeddings"] / "meta.json").read_text())["n_items"] == 24
    assert (
        metrics["alignment"]["dims_differ"]
        and "tiny-vit: 256, tiny-resnet: 128" in metrics["alignment"]["note"]
    )
    assert 0 <= metrics["results"]["tiny-resnet"]["alignment"]["image"]["linear_cka"] <= 1
    assert len(list((out / "figures").glob("*.png"))) == 8

    # a rerun over the same folder needs --overwrite, and reuses the cached embeddings
    def refuse(*args, **kwargs):
        raise AssertionError("embedded again instead of using the cache")

    monkeypatch.setattr(lakd.models.embed, "embed", refuse)
    one = ["geometry", "report", "--model", teacher, "--data", DATA, "--out", str(out), "--tsne-items", "12"]
    assert main(one) == 1
    assert "--overwrite" in capsys.readouterr().err
    assert main([*one, "--overwrite"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert [m["name"] for m in metrics["models"]] == ["tiny-vit"]
    assert len(list((out / "figures").glob("*.png"))) == 7  # no alignment figure for one model


def test_a_shared_cache_dir_serves_later_reports(checkpoints, tmp_path, capsys, monkeypatch):
    """--cache-dir: the embeddings live there (recorded by their path) and a report into another
    folder reads them instead of embedding again; a cache inside --out is refused."""
    cache = tmp_path / "cache"
    teacher, student = str(checkpoints["tiny-vit"]), str(checkpoints["tiny-resnet"])
    args = ["geometry", "report", "--teacher", teacher, "--student", student, "--data", DATA, "--tsne-items", "12"]
    assert main([*args, "--out", str(tmp_path / "a"), "--cache-dir", str(cache)]) == 0
    first = json.loads((tmp_path / "a" / "metrics.json").read_text())
    for model in first["models"]:
        assert model["embeddings"].startswith(str(cache.resolve()))
    assert not (tmp_path / "a" / "embeddings").exists()

    def refuse(*args, **kwargs):
        raise AssertionError("embedded again instead of using the shared cache")

    monkeypatch.setattr(lakd.models.embed, "embed", refuse)
    assert main([*args, "--out", str(tmp_path / "b"), "--cache-dir", str(cache)]) == 0
    second = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert second["results"] == first["results"]
    capsys.readouterr()
    assert main([*args, "--out", str(tmp_path / "c"), "--cache-dir", str(tmp_path / "c" / "cache")]) == 1
    assert "--cache-dir" in (err := capsys.readouterr().err) and "is inside --out" in err and not (tmp_path / "c").exists()
