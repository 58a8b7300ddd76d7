"""``lakd train``: config, run folder, cached and online teachers, tracking, checkpoints, resume, NaN
handling. Runs are tiny (a few steps of ``lakd:tiny-vit`` on 32-pixel shapes scenes); the data order,
captions and schedules are still the real ones."""

from __future__ import annotations

import json
import math
from pathlib import Path

import open_clip
import pytest
import torch

from lakd.cli import main
from lakd.config import load_yaml
from lakd.distill import Recipe
from lakd.errors import LakdError
from lakd.models import load_checkpoint, load_model
from lakd.models.embed import EmbedConfig, embed
from lakd.models.safe_load import read_checkpoint
from lakd.train import TrainConfig, load_train_config, train
from lakd.train.checkpoint import RunFolder, newest_checkpoint
from lakd.train.data import StepSampler, epoch_order
from lakd.train.loop import lr_factor, no_weight_decay, param_groups

TRAIN = "shapes:train?n=48&image_size=32"
VAL = "shapes:val?n=24&image_size=32"
PROBES = "shapes:probes?n=12&image_size=32"


def tiny(**sections) -> TrainConfig:
    """A config of a few steps; ``sections`` override (``{"optim": {"lr": 1e-3}}`` merges)."""
    base = {
        "data": {"train": TRAIN, "batch_size": 8},
        "student": {"model": "lakd:tiny-vit"},
        "recipe": "none",
        "schedule": {"steps": 6, "warmup": 2},
        "eval": {"data": VAL, "probes": PROBES, "every": 3, "batch_size": 32},
        "track": {"sample_size": 24},
        "checkpoint": {"every": 3, "keep_last": 1},
        "log_every": 2,
    }
    for key, value in sections.items():
        base[key] = {**base[key], **value} if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return load_train_config(mapping=base)


def lines(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def weights(path: Path) -> dict[str, torch.Tensor]:
    return read_checkpoint(path)[0]


@pytest.fixture(scope="module")
def plain_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("plain") / "run"
    train(tiny(), out=str(out), echo=lambda _: None)
    return out


@pytest.fixture(scope="module")
def teacher_store(tmp_path_factory) -> Path:
    """lakd:tiny-resnet (embed dim 128; the student's is 256) embedded on the training data."""
    out = tmp_path_factory.mktemp("teacher") / "store"
    embed(EmbedConfig(model="lakd:tiny-resnet", data=TRAIN, out=str(out), batch_size=16))
    return out


# ---- config --------------------------------------------------------------------------------


def test_unknown_keys_and_wrong_types_name_the_key(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("optim:\n  lr: fast\n")
    with pytest.raises(LakdError, match=r"c.yaml: optim.lr: expected a number, got 'fast'"):
        load_train_config(path)
    with pytest.raises(LakdError, match=r"unknown key 'optim.weight_dcay' \(did you mean 'optim.weight_decay'\?\)"):
        load_train_config(mapping={}, overrides=["optim.weight_dcay=1"])
    with pytest.raises(LakdError, match="teacher.store: a cached teacher needs the embedding store"):
        load_train_config(mapping={"teacher": {"kind": "cached"}})
    with pytest.raises(LakdError, match=r"schedule.warmup: must be in \[0, steps=10\]"):
        load_train_config(mapping={"schedule": {"steps": 10, "warmup": 11}})


@pytest.mark.parametrize("config", sorted(Path("experiments").rglob("*.yaml")), ids=str)
def test_shipped_configs_load(config):
    overrides = ["teacher.store=emb/teacher"] if "distill" in config.name or "coco" in str(config) else []
    cfg = load_train_config(config, overrides if load_yaml(config).get("teacher", {}).get("kind") == "cached" else [])
    Recipe.from_config(cfg.recipe, student_dim=256, teacher_dim=512)  # the recipe builds


def test_schedule_and_parameter_groups():
    cfg = tiny(schedule={"steps": 10, "warmup": 4, "min_lr_ratio": 0.1})
    factor = lr_factor(cfg)
    assert [factor(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert factor(4) == pytest.approx(1.0) and factor(10) == pytest.approx(0.1)
    assert factor(7) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    model, _, _ = load_model("lakd:tiny-vit")
    decay, no_decay = param_groups(model, 0.2)
    names = {id(p): n for n, p in model.named_parameters()}
    assert {names[id(p)] for p in no_decay["params"]} >= {"logit_scale", "positional_embedding", "ln_final.weight"}
    assert all(p.ndim >= 2 and not no_weight_decay(names[id(p)], p) for p in decay["params"])
    assert "token_embedding.weight" not in {names[id(p)] for p in decay["params"]}


def test_data_order_is_a_function_of_seed_and_step():
    sampler = StepSampler(20, 8, seed=3, start=0, stop=5)
    assert sampler.steps_per_epoch == 2
    order0, order1 = epoch_order(20, 3, 0), epoch_order(20, 3, 1)
    assert [i for _, i in sampler.step_items(1)] == order0[8:16].tolist()
    assert sampler.step_items(2) == [(1, int(i)) for i in order1[:8]]
    halves = [StepSampler(20, 8, seed=3, start=0, stop=5, rank=r, world=2).step_items(3) for r in (0, 1)]
    assert halves[0] + halves[1] == sampler.step_items(3)
    assert list(StepSampler(20, 8, seed=3, start=3, stop=5)) == [sampler.step_items(3), sampler.step_items(4)]
    with pytest.raises(LakdError, match="not divisible by the 3 ranks"):
        StepSampler(20, 8, seed=0, start=0, stop=1, world=3)
    with pytest.raises(LakdError, match="more than the 6 training items"):
        StepSampler(6, 8, seed=0, start=0, stop=1)


# ---- a plain run ------------------------------------------------------------------------------


def test_run_folder(plain_run):
    run = RunFolder(plain_run)
    assert run.is_run() and run.student.is_file() and (run.local_dir / "open_clip_config.json").is_file()
    assert load_train_config(run.config_file) == tiny()
    records = lines(plain_run)
    recall = {r["step"]: r["retrieval/text_retrieval_recall@1"] for r in records if r["kind"] == "eval"}
    best = 6 if recall[6] > recall[3] else 3  # the first of equals stays the best
    assert run.pointer("latest") == run.checkpoint(6) and run.pointer("best") == run.checkpoint(best)
    assert run.steps() == sorted({best, 6})  # keep_last 1, and the best
    train_lines = [r for r in records if r["kind"] == "train"]
    assert [r["step"] for r in train_lines] == [2, 4, 6]
    for record in train_lines:
        assert record["loss/total"] == pytest.approx(record["loss/clip"])
        assert record["samples_per_s"] > 0 and 1 <= record["logit_scale"] <= 100
    assert train_lines[0]["lr"] == pytest.approx(5e-4 * lr_factor(tiny())(2))
    evals = [r for r in records if r["kind"] == "eval"]
    assert [r["step"] for r in evals] == [3, 6]
    for key in (
        "retrieval/text_retrieval_recall@1",
        "retrieval/image_retrieval_recall@5",
        "zeroshot/acc1",
        "probes/acc_binding",
        "geometry/image.offset_ratio",
        "geometry/image_vs_text.gap_norm",
        "geometry/image.conformity_r",
    ):
        assert key in evals[-1], key
    assert 0 <= evals[-1]["retrieval/text_retrieval_recall@1"] <= 1
    assert not any(r["kind"] == "teacher" for r in records)  # no teacher: no reference line


def test_checkpoints_are_model_specs_with_their_evaluation(plain_run):
    run = RunFolder(plain_run)
    final = run.checkpoint(6)
    _, meta = read_checkpoint(final)
    summary = meta["lakd"]["train"]
    assert summary["step"] == 6 and summary["eval_step"] == 6
    evals = [r for r in lines(plain_run) if r["kind"] == "eval"]
    assert summary["eval"]["zeroshot/acc1"] == evals[-1]["zeroshot/acc1"]
    model, _, _ = load_model(str(final))
    student, _, _ = load_checkpoint(run.student)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), student.state_dict().values(), strict=True))
    oc_model = open_clip.create_model(f"local-dir:{run.local_dir}")
    assert torch.equal(oc_model.state_dict()["logit_scale"], student.state_dict()["logit_scale"])


def test_existing_out_needs_resume_or_overwrite(plain_run, tmp_path):
    with pytest.raises(LakdError, match="already exists .*--resume.*--overwrite"):
        train(tiny(), out=str(plain_run))
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(LakdError, match=r"not a lakd training run \(no run.json.*\); not replacing it, even with --overwrite"):
        train(tiny(), out=str(mine), overwrite=True)
    with pytest.raises(LakdError, match="not a lakd training run .*nothing to resume"):
        train(tiny(), out=str(mine), resume=True)
    assert (mine / "notes.txt").read_text() == "keep me"


def test_resume_continues_bit_exactly(plain_run, tmp_path):
    out = tmp_path / "run"
    train(tiny(), out=str(out), max_steps=4, echo=lambda _: None)
    assert RunFolder(out).steps() == [3, 4]
    with pytest.raises(LakdError, match="another schedule section"):
        train(tiny(schedule={"steps": 7}), out=str(out), resume=True)
    train(tiny(), out=str(out), resume=True, echo=lambda _: None)
    resumed, uninterrupted = weights(out / "student.pt"), weights(plain_run / "student.pt")
    assert resumed.keys() == uninterrupted.keys()
    assert all(torch.equal(resumed[k], uninterrupted[k]) for k in resumed)
    assert [r["step"] for r in lines(out) if r["kind"] == "train"] == [2, 4, 6]
    # the best checkpoint is chosen over the whole run, across the resume
    recall = {r["step"]: r["retrieval/text_retrieval_recall@1"] for r in lines(out) if r["kind"] == "eval"}
    best = max(sorted(recall), key=lambda step: (recall[step], -step))
    assert RunFolder(out).pointer("best") == RunFolder(out).checkpoint(best)


def test_a_run_saved_before_new_config_fields_resumes(plain_run, tmp_path):
    """A run folder whose config.yaml predates a field (here data.cache, student.mask_ratio) resumes:
    missing fields take their defaults."""
    import yaml

    out = tmp_path / "run"
    train(tiny(), out=str(out), max_steps=4, echo=lambda _: None)
    saved = yaml.safe_load((out / "config.yaml").read_text())
    del saved["data"]["cache"], saved["student"]["mask_ratio"]
    (out / "config.yaml").write_text(yaml.safe_dump(saved))
    train(tiny(), out=str(out), resume=True, echo=lambda _: None)
    resumed, uninterrupted = weights(out / "student.pt"), weights(plain_run / "student.pt")
    assert all(torch.equal(resumed[k], uninterrupted[k]) for k in resumed)


def test_a_resumed_optimizer_keeps_its_kernel():
    from lakd.train.loop import load_optimizer_state

    weight = torch.nn.Parameter(torch.ones(3))
    plain = torch.optim.AdamW([weight], lr=0.1)
    weight.sum().backward()
    plain.step()
    fused = torch.optim.AdamW([weight], lr=0.1, fused=True)
    load_optimizer_state(fused, plain.state_dict())
    assert fused.param_groups[0]["fused"] is True and fused.state[weight]["exp_avg"].shape == (3,)
    fused.step()  # the fused kernel runs on the loaded state


def test_cuda_device_without_cuda_is_one_line(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(LakdError, match="device: cuda is not available on this machine"):
        train(tiny(device="cuda"), out=str(tmp_path / "r"))


def poison_clip_loss(patch: pytest.MonkeyPatch, call: int) -> dict[str, int]:
    """Make the CLIP task loss NaN on its ``call``-th evaluation; returns the call counter
    (reset ``["n"]`` to 0 to poison a new run)."""
    import lakd.distill.contrastive as contrastive

    real = contrastive.ClipTaskLoss.forward
    calls = {"n": 0}

    def poisoned(self, batch):
        calls["n"] += 1
        value = real(self, batch)
        return value * float("nan") if calls["n"] == call else value

    patch.setattr(contrastive.ClipTaskLoss, "forward", poisoned)
    return calls


def test_nan_loss_stops_or_skips(tmp_path, monkeypatch):
    calls = poison_clip_loss(monkeypatch, 5)
    out = tmp_path / "stop"
    with pytest.raises(LakdError, match=r"step 5: the loss is not finite \(loss/total=nan.*last good checkpoint is .*step_000003.pt"):
        train(tiny(), out=str(out), echo=lambda _: None)
    nan_line = [r for r in lines(out) if r["kind"] == "nan"]
    assert nan_line[0]["step"] == 5 and len(nan_line[0]["item_ids"]) == 8
    assert newest_checkpoint(RunFolder(out)) == RunFolder(out).checkpoint(3)
    calls["n"] = 0
    skip = tmp_path / "skip"
    train(tiny(on_nan="skip"), out=str(skip), echo=lambda _: None)
    last = [r for r in lines(skip) if r["kind"] == "train"][-1]
    assert last["skipped_steps"] == 1 and math.isfinite(last["loss/total"])


# ---- teachers ------------------------------------------------------------------------------


def test_cached_teacher_distils_with_heads(teacher_store, tmp_path):
    out = tmp_path / "fd"
    cfg = tiny(teacher={"kind": "cached", "store": str(teacher_store)}, recipe="fd")
    train(cfg, out=str(out), echo=lambda _: None)
    record = [r for r in lines(out) if r["kind"] == "train"][-1]
    assert {"loss/clip", "loss/fd"} <= set(record)
    _, meta = read_checkpoint(out / "student.pt")
    assert meta["lakd"]["heads"]["teacher_dim"] == 128 and "heads_state_dict" in meta


def test_cached_teacher_fits_whitening_into_the_run(teacher_store, tmp_path):
    from lakd.analysis.whitening import fit_whitening, load_stats_set
    from lakd.data.store import EmbeddingStore

    out = tmp_path / "wfd"
    train(
        tiny(teacher={"kind": "cached", "store": str(teacher_store)}, recipe="whitened_fd", eval={"data": None, "probes": None}),
        out=str(out),
        echo=lambda _: None,
    )
    saved = load_stats_set(RunFolder(out).whitening)
    store = EmbeddingStore(teacher_store)
    expected = fit_whitening(store.load("text").double())
    assert torch.allclose(torch.as_tensor(saved["text"].W), torch.as_tensor(expected.W))


def test_store_of_other_items_is_refused(tmp_path):
    short = tmp_path / "short"
    embed(EmbedConfig(model="lakd:tiny-resnet", data="shapes:train?n=20&image_size=32", out=str(short)))
    cfg = tiny(teacher={"kind": "cached", "store": str(short)}, recipe="fd")
    with pytest.raises(LakdError, match=r"lacks 28 of the 48 training items .*\(first: shapes-train-s0-000020"):
        train(cfg, out=str(tmp_path / "run"))
    # another seed: other items, whose ids name the seed
    seeded = tmp_path / "seeded"
    embed(EmbedConfig(model="lakd:tiny-resnet", data="shapes:train?n=48&image_size=32&seed=5", out=str(seeded)))
    cfg = tiny(teacher={"kind": "cached", "store": str(seeded)}, recipe="fd")
    with pytest.raises(LakdError, match=r"lacks 48 of the 48 training items .*\(first: shapes-train-s0-000000"):
        train(cfg, out=str(tmp_path / "run2"), overwrite=True)
    # the same ids with other scenes (one object at most): the captions tell them apart
    other = tmp_path / "other"
    embed(EmbedConfig(model="lakd:tiny-resnet", data="shapes:train?n=48&image_size=32&max_objects=1", out=str(other)))
    cfg = tiny(teacher={"kind": "cached", "store": str(other)}, recipe="fd")
    with pytest.raises(LakdError, match="in the store but .* in the training data; embed the training data again"):
        train(cfg, out=str(tmp_path / "run3"), overwrite=True)


def test_teacher_requirements_are_checked_before_training(teacher_store, tmp_path):
    with pytest.raises(LakdError, match="recipe: 'fd' needs a teacher"):
        train(tiny(recipe="fd"), out=str(tmp_path / "a"))
    cached_crop = tiny(teacher={"kind": "cached", "store": str(teacher_store)}, recipe="fd", data={"augment": "crop"})
    with pytest.raises(LakdError, match="data.augment needs the teacher's features .*use teacher.kind=online"):
        train(cached_crop, out=str(tmp_path / "b"))
    no_scale = tiny(teacher={"kind": "cached", "store": str(teacher_store)}, recipe={"clip": 1, "crd": 1})
    train(no_scale, out=str(tmp_path / "c"), max_steps=1, echo=lambda _: None)  # the store records the scale


def test_online_teacher_with_augmentation(tmp_path):
    cfg = tiny(
        teacher={"kind": "online", "model": "lakd:tiny-resnet"},
        recipe={"clip": 1, "fd": 1, "crd": 1},
        data={"augment": "crop"},
        eval={"probes": None},
    )
    out = tmp_path / "online"
    train(cfg, out=str(out), echo=lambda _: None)
    records = lines(out)
    teacher = [r for r in records if r["kind"] == "teacher"]
    assert len(teacher) == 1 and "geometry/image.offset_ratio" in teacher[0]
    last_eval = [r for r in records if r["kind"] == "eval"][-1]
    assert 0 <= last_eval["geometry/alignment.image.cka"] <= 1  # alignment to the teacher's embeddings


def test_teacher_reference_is_kept_between_runs(teacher_store, tmp_path, monkeypatch):
    """track.reference_cache: the first run measures the teacher and keeps it; a second run reads it
    (the teacher is not measured again) and logs the same teacher line and evaluations as a run
    without the cache; another evaluation setting, or a damaged file, is measured again."""
    from lakd.train.track import Tracker

    measured: list[str] = []
    measure = Tracker.measure
    monkeypatch.setattr(Tracker, "measure", lambda self, enc, *, name, **kw: measured.append(name) or measure(self, enc, name=name, **kw))
    cache = tmp_path / "refs"

    def run(name: str, **track) -> list[dict]:
        measured.clear()
        cfg = tiny(
            teacher={"kind": "cached", "store": str(teacher_store), "model": "lakd:tiny-resnet"},
            recipe="fd",
            schedule={"steps": 3, "warmup": 1},
            checkpoint={"every": 3},
            track={"sample_size": 24, **track},
        )
        train(cfg, out=str(tmp_path / name), echo=lambda _: None)
        return [{k: v for k, v in r.items() if k != "seconds"} for r in lines(tmp_path / name) if r["kind"] in ("teacher", "eval")]

    plain = run("plain")
    assert measured == ["lakd:tiny-resnet", "step 3"] and not cache.exists()
    first = run("first", reference_cache=str(cache))
    (kept,) = cache.rglob("reference.safetensors")
    assert measured == ["lakd:tiny-resnet", "step 3"] and first == plain
    second = run("second", reference_cache=str(cache))
    assert measured == ["step 3"] and second == plain  # read back: the same reference, no teacher pass
    other = run("other", reference_cache=str(cache), sample_size=20)
    assert measured == ["lakd:tiny-resnet", "step 3"] and len(list(cache.rglob("reference.safetensors"))) == 2
    assert other[0] != plain[0]
    kept.write_bytes(b"not a safetensors file")
    assert run("damaged", reference_cache=str(cache)) == plain and measured == ["lakd:tiny-resnet", "step 3"]
    assert run("again", reference_cache=str(cache)) == plain and measured == ["step 3"]


def test_a_changed_teacher_replaces_its_kept_reference_and_an_unwritable_cache_only_costs_time(
    teacher_store, tmp_path
):
    """The kept reference of a teacher checkpoint is measured again once the checkpoint's file
    changes (the same file replaced, not a second one); a cache folder that cannot be written is
    reported in one line and the run completes."""
    import os

    from lakd.models import save_checkpoint

    checkpoint = save_checkpoint(load_model("lakd:tiny-resnet")[0], tmp_path / "teacher.pt")
    cache, messages = tmp_path / "refs", []

    def run(name: str, reference_cache: Path) -> list[dict]:
        cfg = tiny(
            teacher={"kind": "cached", "store": str(teacher_store), "model": str(checkpoint)},
            recipe="fd",
            schedule={"steps": 2, "warmup": 1},
            eval={"every": 2, "probes": None},
            checkpoint={"every": 2},
            track={"reference_cache": str(reference_cache)},
        )
        train(cfg, out=str(tmp_path / name), echo=messages.append)
        return [r for r in lines(tmp_path / name) if r["kind"] == "teacher"]

    run("a", cache)
    (kept,) = cache.rglob("reference.safetensors")
    before = kept.stat().st_mtime_ns
    stamp = checkpoint.stat().st_mtime_ns + 10**9
    os.utime(checkpoint, ns=(stamp, stamp))  # a retrained (here: touched) teacher
    run("b", cache)
    assert list(cache.rglob("reference.safetensors")) == [kept] and kept.stat().st_mtime_ns != before
    (tmp_path / "blocked").write_text("a file where the cache folder would be")
    assert len(run("c", tmp_path / "blocked" / "refs")) == 1 and (tmp_path / "c" / "student.pt").is_file()
    assert any(m.startswith("track.reference_cache: cannot keep the teacher's reference at ") for m in messages)


def test_a_kept_reference_reads_back_and_a_damaged_one_is_refused(tmp_path):
    from lakd.train.reference import TeacherReference, read_reference, write_reference

    path, identity = tmp_path / "reference.safetensors", {"model": "x", "data": "y"}
    image, text = torch.randn(3, 4), torch.randn(3, 4)
    write_reference(path, identity, TeacherReference(image, text, ["a", "b", "c"], {"m": 1.0, "n": float("nan")}))
    kept = read_reference(path, identity)
    assert torch.equal(kept.image, image) and torch.equal(kept.text, text) and kept.ids == ["a", "b", "c"]
    assert kept.metrics == {"m": 1.0, "n": None}  # NaN kept as null, as metrics.jsonl writes it
    assert read_reference(path, {"model": "x", "data": "z"}) is None  # another identity
    for ids, values in ((5, image), (["a"], image), (["a", "b", "c"], torch.full((3, 4), float("nan")))):
        write_reference(path, identity, TeacherReference(values, text, ids, {}))
        assert read_reference(path, identity) is None
    write_reference(path, identity, TeacherReference(None, None, None, {"probes/acc": 0.5}))  # probes only
    assert read_reference(path, identity).metrics == {"probes/acc": 0.5}


def test_cached_items_are_read_once_and_train_the_same(tmp_path, monkeypatch):
    """data.cache: 6 steps of 8 over 16 items (three epochs, other captions each epoch) read each item
    once, and train exactly as reading it every time."""
    from lakd.data.shapes.dataset import ShapesWorld

    reads: list[int] = []
    render = ShapesWorld.__getitem__
    monkeypatch.setattr(ShapesWorld, "__getitem__", lambda self, i: reads.append(i) or render(self, i))
    runs = {}
    for cache in (False, True):
        reads.clear()
        cfg = tiny(data={"train": "shapes:train?n=16&image_size=32", "cache": cache}, eval={"data": None, "probes": None})
        train(cfg, out=str(tmp_path / str(cache)), echo=lambda _: None)
        runs[cache] = (weights(tmp_path / str(cache) / "student.pt"), sorted(reads))
    assert runs[False][1] == sorted(list(range(16)) * 3)
    assert runs[True][1] == list(range(16))
    assert all(torch.equal(runs[True][0][k], runs[False][0][k]) for k in runs[False][0])


def test_single_pass_masked_distillation(teacher_store, tmp_path, monkeypatch):
    """student.mask_ratio: [KD]'s masked distillation in one pass. In training mode every term sees
    the student's features of a masked view (patch dropout, seeded per rank and micro-batch); in eval
    mode the full images; a resumed run repeats the masks."""
    from lakd.distill.masking import mask_seed
    from lakd.train.data import TrainItems
    from lakd.train.loop import build
    from lakd.train.task import DistillTask

    masked = tiny(teacher={"kind": "cached", "store": str(teacher_store)}, recipe="fd", student={"mask_ratio": 0.5})
    setup = build(masked, "cpu", RunFolder(tmp_path / "setup"), is_main=True)
    items = TrainItems(setup.source, seed=0, caption="first", augment="none")
    batch = setup.collate([items[(0, i)] for i in range(8)])
    task, wrapper = setup.task.train(), setup.task.student
    seed = mask_seed(0, 0, 3)
    outputs = wrapper(batch.images, batch.tokens, mask_ratio=0.5, mask_seed=seed)
    by_hand = task.recipe(wrapper.distill_batch(outputs, images=batch.images, **task.teacher_fields(batch)))
    in_task = task(batch, mask_seed=seed).terms
    assert torch.equal(in_task["fd"], by_hand.terms["fd"]) and torch.equal(in_task["clip"], by_hand.terms["clip"])
    assert not torch.equal(task(batch, mask_seed=mask_seed(0, 0, 4)).terms["fd"], in_task["fd"])
    task.eval()
    unmasked = task(batch, mask_seed=seed).terms["fd"]
    assert torch.equal(unmasked, task(batch).terms["fd"]) and not torch.equal(unmasked, in_task["fd"])

    out, resumed = tmp_path / "masked", tmp_path / "resumed"
    train(masked, out=str(out), echo=lambda _: None)
    train(masked, out=str(resumed), max_steps=4, echo=lambda _: None)
    seeds: list[int | None] = []
    forward = DistillTask.forward
    monkeypatch.setattr(DistillTask, "forward", lambda self, b, mask_seed=None: seeds.append(mask_seed) or forward(self, b, mask_seed))
    train(masked, out=str(resumed), resume=True, echo=lambda _: None)
    assert seeds == [mask_seed(0, 0, step) for step in (4, 5)]  # steps 5 and 6 (0-based 4, 5), accum 1
    plain = tmp_path / "plain"
    train(tiny(teacher={"kind": "cached", "store": str(teacher_store)}, recipe="fd"), out=str(plain), echo=lambda _: None)
    a, b, c = (weights(run / "student.pt") for run in (out, resumed, plain))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_mask_ratio_is_checked(teacher_store, tmp_path):
    with pytest.raises(LakdError, match=r"student.mask_ratio: must be in \(0, 1\), got 1.0"):
        tiny(student={"mask_ratio": 1.0})
    cached = {"kind": "cached", "store": str(teacher_store)}
    with pytest.raises(LakdError, match="student.mask_ratio: the recipe's term 'mfd' \\(mfd\\) masks in an extra pass"):
        train(tiny(teacher=cached, recipe={"clip": 1, "mfd": 1}, student={"mask_ratio": 0.5}), out=str(tmp_path / "a"))
    online = {"kind": "online", "model": "lakd:tiny-vit"}
    with pytest.raises(LakdError, match="student.mask_ratio: the recipe's term 'dense' needs token maps"):
        train(tiny(teacher=online, recipe="dense", student={"mask_ratio": 0.5}), out=str(tmp_path / "b"))


# ---- command line -------------------------------------------------------------------------


def test_cli_trains_and_reports_errors_in_one_line(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text(
        "data:\n  train: 'shapes:train?n=16&image_size=32'\n  batch_size: 8\n"
        "schedule:\n  steps: 2\n  warmup: 1\neval:\n  data: null\n  probes: null\n"
    )
    assert main(["train", str(config), "optim.lr=1e-3", "--out", str(tmp_path / "r"), "--max-steps", "1"]) == 0
    assert (tmp_path / "r" / "student.pt").is_file()
    assert "optim:\n  lr: 0.001" in (tmp_path / "r" / "config.yaml").read_text()
    capsys.readouterr()
    assert main(["train", str(config), "optim.lr=fast", "--out", str(tmp_path / "s")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "optim.lr" in err and "\n" not in err
