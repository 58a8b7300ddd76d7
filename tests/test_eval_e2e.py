"""``lakd eval`` end to end on lakd:tiny-vit and the shapes world: tasks, cache, teacher, CLI, bad input."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

import lakd.eval.zeroshot
import lakd.models.embed
from lakd.cli import main
from lakd.data.shapes.dataset import TEMPLATES as SHAPES_TEMPLATES
from lakd.errors import LakdError
from lakd.eval import EvalConfig, evaluate
from lakd.models import load_model, save_checkpoint
from lakd.models.embed import EmbedConfig, embed

VAL = "shapes:val?n=12"
PROBES = "shapes:probes?n=8"
CLIP_BENCHMARK_KEYS = {"dataset", "model", "pretrained", "task", "metrics"}


@pytest.fixture(scope="module")
def val_run(tmp_path_factory):
    """One evaluation of the tiny ViT on shapes:val (its cache is reused by later tests)."""
    root = tmp_path_factory.mktemp("val")
    cfg = EvalConfig(model="lakd:tiny-vit", data=VAL, out=str(root / "results.json"))
    return cfg, evaluate(cfg)


def forbid_embedding(monkeypatch):
    """Make any new embedding (store or class prompts) fail, to prove the cache is used."""

    def refuse(*args, **kwargs):
        raise AssertionError("embedded again instead of using the cache")

    monkeypatch.setattr(lakd.models.embed, "embed", refuse)
    monkeypatch.setattr(lakd.eval.zeroshot, "load_model", refuse)


def test_all_tasks_on_shapes_val(val_run):
    cfg, records = val_run
    assert list(records) == ["zeroshot", "retrieval"]  # shapes:val has labels and captions, no probes
    saved = json.loads(open(cfg.out).read())
    assert isinstance(saved, list) and [r["task"] for r in saved] == [
        "zeroshot_classification",
        "zeroshot_retrieval",
    ]
    for result in saved:
        assert CLIP_BENCHMARK_KEYS <= set(result)
        assert result["dataset"] == VAL and result["model"] == "lakd:tiny-vit"
        assert all(v is None or 0.0 <= v for v in result["metrics"].values())
    zeroshot = saved[0]["metrics"]
    assert set(zeroshot) == {"acc1", "acc5", "mean_per_class_recall"}
    assert 0 <= zeroshot["acc1"] <= zeroshot["acc5"] <= 1  # 7 shape classes: top-5 exists
    retrieval = saved[1]["metrics"]
    assert retrieval["image_retrieval_recall@1"] <= retrieval["image_retrieval_recall@5"] <= 1
    assert retrieval["text_retrieval_median_rank"] >= 1
    assert saved[1]["lakd"]["n_texts"] > saved[1]["lakd"]["n_items"] == 12  # several captions per image


def test_second_run_reuses_the_cache(val_run, monkeypatch):
    cfg, first = val_run
    forbid_embedding(monkeypatch)
    again = evaluate(EvalConfig(model=cfg.model, data=cfg.data, out=cfg.out))
    assert again["zeroshot"]["metrics"] == first["zeroshot"]["metrics"]
    assert again["retrieval"]["metrics"] == first["retrieval"]["metrics"]


def test_embeddings_of_the_cache_store_give_the_same_results(val_run, tmp_path):
    cfg, first = val_run
    store = first["zeroshot"]["lakd"]["embeddings"]
    records = evaluate(EvalConfig(embeddings=store, out=str(tmp_path / "r.json")))
    assert records["zeroshot"]["metrics"] == first["zeroshot"]["metrics"]
    assert records["retrieval"]["metrics"] == first["retrieval"]["metrics"]


def test_new_templates_re_embed_only_the_class_prompts(val_run, tmp_path, monkeypatch):
    cfg, _ = val_run
    cache = tmp_path / "cache"
    shutil.copytree(Path(cfg.out).parent / "eval-cache", cache)  # leave the shared cache as it is
    templates = tmp_path / "templates.txt"
    templates.write_text("a {c}\na picture of a {c}\n")
    monkeypatch.setattr(lakd.models.embed, "embed", lambda *a, **k: pytest.fail("images embedded again"))
    records = evaluate(
        EvalConfig(
            model=cfg.model,
            data=cfg.data,
            out=str(tmp_path / "r.json"),
            cache_dir=str(cache),
            task="zeroshot",
            templates=str(templates),
        )
    )
    assert records["zeroshot"]["lakd"]["templates"] == ["a {c}", "a picture of a {c}"]
    store = records["zeroshot"]["lakd"]["embeddings"]
    assert store.startswith(str(cache))
    # a store keeps the prompts it has; other templates cannot be embedded without the model
    same = evaluate(EvalConfig(embeddings=store, task="zeroshot", templates=str(templates)))
    assert same["zeroshot"]["metrics"] == records["zeroshot"]["metrics"]
    templates.write_text("another {c}\n")
    with pytest.raises(LakdError, match="`templates`: .* holds class prompts of other templates"):
        evaluate(EvalConfig(embeddings=store, task="zeroshot", templates=str(templates)))
    # a damaged cached prompt file is embedded again
    (Path(store) / "classes.safetensors").write_bytes(b"garbage")
    again = evaluate(EvalConfig(model=cfg.model, data=cfg.data, cache_dir=str(cache), task="zeroshot"))
    assert again["zeroshot"]["lakd"]["templates"] == list(SHAPES_TEMPLATES)  # the shapes world's own


def test_same_teacher_agrees_completely(val_run, monkeypatch):
    cfg, _ = val_run
    forbid_embedding(monkeypatch)  # the teacher is the same spec on the same data: its cache too
    records = evaluate(EvalConfig(model=cfg.model, data=cfg.data, out=cfg.out, teacher=cfg.model))
    assert records["zeroshot"]["metrics"]["teacher_agreement"] == 1.0
    assert records["retrieval"]["metrics"]["teacher_agreement_image_retrieval"] == 1.0
    assert records["retrieval"]["metrics"]["teacher_agreement_text_retrieval"] == 1.0
    assert records["zeroshot"]["lakd"]["teacher"] == cfg.model


def test_store_with_a_teacher_spec_embeds_the_teacher_on_the_store_data(val_run, tmp_path, monkeypatch):
    cfg, first = val_run
    forbid_embedding(monkeypatch)  # the teacher on shapes:val is already in the cache
    records = evaluate(
        EvalConfig(
            embeddings=first["zeroshot"]["lakd"]["embeddings"],
            teacher=cfg.model,
            cache_dir=str(Path(cfg.out).parent / "eval-cache"),
        )
    )
    assert records["zeroshot"]["metrics"]["teacher_agreement"] == 1.0
    assert records["retrieval"]["metrics"]["teacher_agreement_text_retrieval"] == 1.0


def test_teacher_of_other_items_is_an_error(val_run, tmp_path):
    cfg, first = val_run
    other = evaluate(EvalConfig(model=cfg.model, data="shapes:val?n=6", out=str(tmp_path / "o.json")))
    with pytest.raises(LakdError, match="teacher's items differ"):
        evaluate(
            EvalConfig(
                model=cfg.model,
                data=cfg.data,
                out=cfg.out,
                teacher_embeddings=other["zeroshot"]["lakd"]["embeddings"],
            )
        )


def test_probes_on_shapes_probes(tmp_path):
    out = tmp_path / "probes_{task}.json"
    records = evaluate(EvalConfig(model="lakd:tiny-vit", data=PROBES, out=str(out), teacher="lakd:tiny-vit"))
    assert list(records) == ["zeroshot", "probes"]  # false captions: no retrieval on a probe set
    saved = json.loads((tmp_path / "probes_image_caption_selection.json").read_text())
    metrics = saved["metrics"]
    for condition in ("basic", "binding", "spatial", "negation"):
        assert 0 <= metrics[f"acc_{condition}"] <= 1
        assert metrics[f"chance_{condition}"] == pytest.approx(0.25)  # k = 3 false captions
    assert metrics["teacher_agreement"] == 1.0
    assert saved["lakd"]["n_per_condition"] == {"basic": 2, "binding": 2, "spatial": 2, "negation": 2}
    with pytest.raises(LakdError, match="is a probe set"):
        evaluate(
            EvalConfig(model="lakd:tiny-vit", data=PROBES, out=str(tmp_path / "r.json"), task="retrieval")
        )


def class_image_folder(root: Path) -> Path:
    """3 classes x 4 images, one colour per class; ``red_fox`` checks that underscores become spaces."""
    colours = {"blue_whale": (20, 40, 200), "red_fox": (200, 60, 20), "tree": (30, 160, 40)}
    for c, (name, colour) in enumerate(colours.items()):
        (root / name).mkdir(parents=True)
        for i in range(4):
            image = Image.new("RGB", (40, 32), colour)
            image.paste((255, 255, 255), (4 * i, 4 * c, 4 * i + 10, 4 * c + 10))
            image.save(root / name / f"{i}.png")
    return root


def test_zeroshot_on_an_image_folder(tmp_path):
    folder = class_image_folder(tmp_path / "images")
    out = tmp_path / "folder.json"
    records = evaluate(EvalConfig(model="lakd:tiny-vit", data=str(folder), out=str(out)))
    assert list(records) == ["zeroshot"]  # captions are the class prompts: no retrieval benchmark
    saved = json.loads(out.read_text())
    assert CLIP_BENCHMARK_KEYS <= set(saved) and saved["task"] == "zeroshot_classification"
    assert saved["dataset"] == str(folder)
    metrics = saved["metrics"]
    assert 0.0 <= metrics["acc1"] <= 1.0 and 0.0 <= metrics["mean_per_class_recall"] <= 1.0
    assert metrics["acc5"] is None  # 3 classes: fewer than 5
    details = saved["lakd"]
    assert details["classnames"] == ["blue whale", "red fox", "tree"]
    assert details["n_items"] == 12 and details["n_classes"] == 3
    assert any("acc5 is null" in note for note in details["notes"])


def test_changed_checkpoint_is_embedded_again(tmp_path, monkeypatch):
    model, _, _ = load_model("lakd:tiny-vit")
    ckpt = save_checkpoint(model, tmp_path / "student.pt")
    cfg = EvalConfig(model=str(ckpt), data="shapes:val?n=4", out=str(tmp_path / "r.json"), task="retrieval")
    evaluate(cfg)
    calls = []
    real_embed = lakd.models.embed.embed
    monkeypatch.setattr(lakd.models.embed, "embed", lambda c: calls.append(c) or real_embed(c))
    evaluate(cfg)
    assert calls == []
    stat = ckpt.stat()
    os.utime(ckpt, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    evaluate(cfg)
    assert len(calls) == 1 and calls[0].overwrite


# ---- bad input -----------------------------------------------------------------------------------


def captioned_csv_without_labels(folder):
    folder.mkdir()
    for i in range(3):
        Image.new("RGB", (32, 32), (80 * i, 0, 0)).save(folder / f"{i}.png")
    pd.DataFrame({"filepath": [f"{i}.png" for i in range(3)], "title": ["red", "dark", "black"]}).to_csv(
        folder / "captions.csv", sep="\t", index=False
    )
    return folder / "captions.csv"


def test_zeroshot_on_data_without_labels_is_an_error(tmp_path):
    csv = captioned_csv_without_labels(tmp_path / "csv")
    with pytest.raises(LakdError, match="has no class labels"):
        evaluate(
            EvalConfig(model="lakd:tiny-vit", data=str(csv), out=str(tmp_path / "r.json"), task="zeroshot")
        )
    assert not (tmp_path / "r.json").exists()
    records = evaluate(EvalConfig(model="lakd:tiny-vit", data=str(csv), out=str(tmp_path / "r.json")))
    assert list(records) == ["retrieval"]


def test_store_without_class_prompts(tmp_path):
    store = tmp_path / "emb"
    embed(EmbedConfig(model="lakd:tiny-vit", data="shapes:val?n=4", out=str(store)))
    with pytest.raises(LakdError, match="classes.safetensors"):
        evaluate(EvalConfig(embeddings=str(store), out=str(tmp_path / "r.json"), task="zeroshot"))
    records = evaluate(EvalConfig(embeddings=str(store), out=str(tmp_path / "r.json")))
    assert list(records) == ["retrieval"]  # --task all runs what the store supports


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"model": "lakd:tiny-vit", "data": VAL, "task": "captioning"}, "unknown task 'captioning'"),
        ({"model": "lakd:tiny-vit", "embeddings": "x", "data": VAL}, "either `model`"),
        ({}, "either `model`"),
        ({"model": "lakd:tiny-vit"}, "^data: needed"),
        ({"embeddings": "x", "data": VAL}, "^data: not used"),
        ({"embeddings": "x", "teacher": "a", "teacher_embeddings": "b"}, "not both"),
        ({"model": "lakd:tiny-vit", "data": VAL, "batch_size": 0}, "^batch_size: must be positive, got 0"),
    ],
)
def test_bad_config(tmp_path, kwargs, message):
    with pytest.raises(LakdError, match=message):
        evaluate(EvalConfig(out=str(tmp_path / "r.json"), **kwargs))


def test_missing_store_is_an_error(tmp_path):
    with pytest.raises(LakdError, match="no such embedding store"):
        evaluate(EvalConfig(embeddings=str(tmp_path / "nope"), out=str(tmp_path / "r.json")))


# ---- command line --------------------------------------------------------------------------------


def test_cli_eval_and_table(val_run, tmp_path, capsys):
    cfg, _ = val_run
    out = tmp_path / "cli.json"
    rc = main(
        [
            "eval",
            "--model",
            cfg.model,
            "--data",
            cfg.data,
            "--out",
            str(out),
            "--cache-dir",
            str(tmp_path / "c"),
        ]
    )
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "zeroshot_classification" in text and "image_retrieval_recall@1" in text and str(out) in text
    clip_benchmark = tmp_path / "cb.json"
    clip_benchmark.write_text(
        json.dumps(
            {
                "dataset": "cifar10",
                "model": "ViT-B-32",
                "pretrained": "openai",
                "task": "zeroshot_classification",
                "metrics": {"acc1": 0.9},
            }
        )
    )
    table = tmp_path / "table.csv"
    assert main(["eval", "table", str(out), str(clip_benchmark), "--out", str(table)]) == 0
    rows = pd.read_csv(table)
    assert sorted(rows["dataset"]) == sorted([VAL, VAL, "cifar10"])
    assert "3 result row(s)" in capsys.readouterr().out


def test_cli_eval_help_shows_both_uses(capsys):
    assert main(["eval", "--help"]) == 0
    text = capsys.readouterr().out
    for word in ("--model", "--embeddings", "--task", "--templates", "--teacher", "table"):
        assert word in text


def test_cli_errors_are_one_line(tmp_path, capsys):
    rc = main(
        [
            "eval",
            "--model",
            "lakd:tiny-vit",
            "--data",
            VAL,
            "--task",
            "bogus",
            "--out",
            str(tmp_path / "r.json"),
        ]
    )
    err = capsys.readouterr().err
    assert rc == 1 and err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert main(["eval", "--model", "lakd:tiny-vit", "--data", VAL]) == 1
    assert "--out" in capsys.readouterr().err
    assert main(["eval", "table", str(tmp_path / "missing.json"), "--out", str(tmp_path / "t.csv")]) == 1
    assert "missing.json" in capsys.readouterr().err
    assert not (tmp_path / "t.csv").exists()
