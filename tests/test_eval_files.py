"""Eval's files: class prompts beside a store, stores from arrays (real CIFAR-10 embeddings),
template files, clip_benchmark-format results and the results table."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import save_file

from lakd.data.store import (
    CLASSES_NAME,
    ClassPrompts,
    EmbeddingStore,
    read_class_prompts,
    write_class_prompts,
    write_store,
)
from lakd.errors import LakdError
from lakd.eval import EvalConfig, evaluate
from lakd.eval.results import model_names, read_results, results_table, write_results, write_table
from lakd.eval.templates import DEFAULT_TEMPLATES, load_templates, template_problem

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
CIFAR = SHARED / "realdata" / "cifar10_openclip_b32"


def small_store(path: Path, *, with_prompts: bool = True) -> EmbeddingStore:
    """Four labelled images of three classes, two captions each, in 4-d."""
    eye = torch.eye(4)
    return write_store(
        path,
        eye[[0, 1, 2, 0]] * 2.0,
        model="test:model",
        source="test:data",
        labels=torch.tensor([0, 1, 2, 0]),
        classnames=["a", "b", "c"],
        class_prompts=eye[:3, None, :].repeat(1, 2, 1) if with_prompts else None,
        templates=["{c}", "a {c}"] if with_prompts else None,
        text=eye[[0, 0, 1, 1, 2, 2, 0, 3]],
        text_item=torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]),
        captions=[f"caption {i}" for i in range(8)],
    )


# ---- class prompts beside a store ----------------------------------------------------------------


def test_class_prompts_round_trip(tmp_path):
    store = small_store(tmp_path / "store")
    prompts = store.class_prompts()
    assert prompts.classnames == ["a", "b", "c"] and prompts.templates == ["{c}", "a {c}"]
    assert prompts.embeddings.shape == (3, 2, 4) and prompts.model == "test:model"
    assert small_store(tmp_path / "bare", with_prompts=False).class_prompts() is None


def test_class_prompt_file_errors(tmp_path):
    store = small_store(tmp_path / "store")
    file = tmp_path / "store" / CLASSES_NAME
    file.write_bytes(file.read_bytes()[:40])
    with pytest.raises(LakdError, match="corrupt or truncated class-prompt file"):
        store.class_prompts()
    save_file({"prompts": torch.zeros(2, 2, 4)}, str(file), metadata={"format": "other"})
    with pytest.raises(LakdError, match="not a lakd class-prompt file"):
        store.class_prompts()
    meta = {"format": "lakd-class-prompts", "classnames": '["a", "b", "c"]', "templates": '["{c}"]'}
    save_file({"prompts": torch.zeros(2, 1, 4)}, str(file), metadata=meta)
    with pytest.raises(LakdError, match="does not match 3 classes x 1 templates"):
        store.class_prompts()
    save_file({"prompts": torch.zeros(3, 1, 5)}, str(file), metadata=meta)
    with pytest.raises(LakdError, match="prompt dim 5 differs from the store's text dim 4"):
        store.class_prompts()
    save_file({"prompts": torch.full((3, 1, 4), math.nan)}, str(file), metadata=meta)
    with pytest.raises(LakdError, match="NaN"):
        read_class_prompts(tmp_path / "store")
    with pytest.raises(ValueError):
        write_class_prompts(tmp_path / "store", ClassPrompts(torch.zeros(2, 1, 4), ["a"], ["{c}"]))


def test_write_store_bad_input(tmp_path):
    with pytest.raises(LakdError, match="class_prompts need templates"):
        write_store(
            tmp_path / "s", torch.eye(3), model="m", source="d", class_prompts=torch.zeros(3, 1, 3)
        )
    with pytest.raises(LakdError, match="for 3 classes x 1 templates"):
        write_store(
            tmp_path / "p",
            torch.eye(3),
            model="m",
            source="d",
            labels=torch.arange(3),
            classnames=["a", "b", "c"],
            class_prompts=torch.zeros(2, 1, 3),
            templates=["{c}"],
        )
    with pytest.raises(LakdError, match="captions"):
        write_store(
            tmp_path / "t",
            torch.eye(3),
            model="m",
            source="d",
            text=torch.eye(3),
            text_item=torch.arange(3),
            captions=["only one"],
        )


# ---- a store built from real embeddings ------------------------------------------------------------


@pytest.mark.skipif(  # never skipped in CI (CI=true), which has ../shared
    not CIFAR.is_dir() and not os.environ.get("CI"), reason=f"{CIFAR} (shared real data) is not present"
)
def test_real_cifar10_store_reproduces_zero_shot_top1(tmp_path):
    """open_clip ViT-B-32 (laion2b_s34b_b79k) CIFAR-10 embeddings; PROVENANCE.md: 70.28% (596/848)."""
    arrays = np.load(CIFAR / "cifar10_train_shard012_nopickle.npz", allow_pickle=False)
    meta = json.loads((CIFAR / "class_names.json").read_text())
    template = meta["text_template"].replace("{label}", "{c}")
    store = tmp_path / "cifar10_b32"
    write_store(
        store,
        torch.from_numpy(arrays["vision_emb"]),
        model="open_clip:ViT-B-32@laion2b_s34b_b79k",
        source="cifar10 train 49152..49999",
        labels=torch.from_numpy(arrays["label_ids"]),
        classnames=meta["class_names"],
        class_prompts=torch.from_numpy(arrays["class_text_emb"])[:, None, :],
        templates=[template],
        ids=[f"train_{i:08d}" for i in arrays["dataset_index"]],
    )
    out = tmp_path / "result.json"
    records = evaluate(EvalConfig(embeddings=str(store), out=str(out)))
    assert list(records) == ["zeroshot"]  # no captions: retrieval does not apply
    metrics = records["zeroshot"]["metrics"]
    assert metrics["acc1"] * 848 == pytest.approx(596)
    assert round(100 * metrics["acc1"], 2) == 70.28
    saved = json.loads(out.read_text())
    assert (saved["model"], saved["pretrained"]) == ("ViT-B-32", "laion2b_s34b_b79k")
    assert saved["task"] == "zeroshot_classification" and saved["lakd"]["n_items"] == 848


# ---- templates -----------------------------------------------------------------------------------


def test_default_templates_are_valid():
    assert DEFAULT_TEMPLATES and all(template_problem(t) is None for t in DEFAULT_TEMPLATES)
    from lakd.data import open_source
    from lakd.eval.templates import source_templates

    assert source_templates(object()) == list(DEFAULT_TEMPLATES)  # data without templates of its own
    shapes = source_templates(open_source("shapes:val?n=2"))
    assert shapes != list(DEFAULT_TEMPLATES) and all(template_problem(t) is None for t in shapes)


def test_template_file(tmp_path):
    file = tmp_path / "templates.txt"
    file.write_text("# shapes\na {c}\n\n  a photo of a {c}.  \n{c} next to {c}\n", encoding="utf-8")
    assert load_templates(file) == ["a {c}", "a photo of a {c}.", "{c} next to {c}"]


@pytest.mark.parametrize(
    "line, message",
    [
        ("a photo", "found no field"),
        ("a {label}", "found {label}"),
        ("a {c", "not a valid format"),
        ("{}", "found {}"),
    ],
)
def test_bad_template_names_file_and_line(tmp_path, line, message):
    file = tmp_path / "templates.txt"
    file.write_text(f"a {{c}}\n{line}\n", encoding="utf-8")
    with pytest.raises(LakdError, match=message) as err:
        load_templates(file)
    assert f"{file}:2" in str(err.value)


def test_empty_or_missing_template_file(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n\n", encoding="utf-8")
    with pytest.raises(LakdError, match="holds no template"):
        load_templates(empty)
    with pytest.raises(LakdError, match="cannot read"):
        load_templates(tmp_path / "missing.txt")


# ---- results -------------------------------------------------------------------------------------

CLIP_BENCHMARK_RESULT = {  # the example in clip_benchmark's README
    "dataset": "cifar10",
    "model": "ViT-B-32-quickgelu",
    "pretrained": "laion400m_e32",
    "task": "zeroshot_classification",
    "metrics": {"acc1": 0.9074, "acc5": 0.998},
}


def record(task: str, **metrics) -> dict:
    return {
        "dataset": "shapes:val",
        "model": "lakd:tiny-vit",
        "pretrained": "",
        "task": task,
        "metrics": metrics,
    }


def test_model_names_follow_clip_benchmark():
    assert model_names("open_clip:ViT-B-16@laion2b_s34b_b88k") == ("ViT-B-16", "laion2b_s34b_b88k")
    assert model_names("open_clip:ViT-B-16") == ("ViT-B-16", "")
    assert model_names("lakd:tiny-vit") == ("lakd:tiny-vit", "")
    assert model_names("ckpt.pt", arch="ViT-B-32") == ("ViT-B-32", "ckpt.pt")


def test_write_results_one_object_a_list_or_one_file_per_task(tmp_path):
    zeroshot = record("zeroshot_classification", acc1=0.5, acc5=math.nan)
    retrieval = record("zeroshot_retrieval", **{"image_retrieval_recall@1": 0.25})
    write_results(tmp_path / "one.json", [zeroshot])
    one = json.loads((tmp_path / "one.json").read_text())
    assert one["metrics"] == {"acc1": 0.5, "acc5": None}  # NaN is JSON null
    write_results(tmp_path / "both.json", [zeroshot, retrieval])
    assert [r["task"] for r in json.loads((tmp_path / "both.json").read_text())] == [
        "zeroshot_classification",
        "zeroshot_retrieval",
    ]
    paths = write_results(tmp_path / "res_{task}.json", [zeroshot, retrieval])
    assert [p.name for p in paths] == ["res_zeroshot_classification.json", "res_zeroshot_retrieval.json"]
    assert json.loads(paths[1].read_text())["metrics"]["image_retrieval_recall@1"] == 0.25


def test_table_reads_lakd_and_clip_benchmark_files(tmp_path):
    ours = tmp_path / "ours.json"
    write_results(ours, [record("zeroshot_classification", acc1=0.5, acc5=math.nan), record("x", acc=1.0)])
    theirs = tmp_path / "theirs.json"
    theirs.write_text(json.dumps(CLIP_BENCHMARK_RESULT))
    out = tmp_path / "table.csv"
    table = write_table([ours, theirs], out)
    read_back = pd.read_csv(out)
    assert len(table) == len(read_back) == 3
    assert list(read_back.columns[:6]) == ["file", "dataset", "model", "pretrained", "model_fullname", "task"]
    row = read_back[read_back["dataset"] == "cifar10"].iloc[0]
    assert row["model_fullname"] == "ViT-B-32-quickgelu laion400m_e32" and row["acc1"] == 0.9074
    assert math.isnan(read_back.iloc[0]["acc5"])


@pytest.mark.parametrize(
    "content, message",
    [
        ("not json", "not a readable JSON"),
        ("[]", "empty list"),
        ('{"dataset": "d", "model": "m", "task": "t"}', "missing metrics"),
        ('[{"dataset": "d", "model": "m", "task": "t", "metrics": 3}]', "'metrics' must be an object"),
        ('["text"]', "must be a JSON object"),
    ],
)
def test_bad_result_files(tmp_path, content, message):
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    with pytest.raises(LakdError, match=message) as err:
        read_results(bad)
    assert str(bad) in str(err.value)
    with pytest.raises(LakdError, match="at least one"):
        results_table([])
    assert not (tmp_path / "t.csv").exists()
