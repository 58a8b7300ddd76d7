"""The ``dense`` distillation loss: token-by-patch maps of the student matched to the teacher's, patch
grids resampled, token maps aligned through the shared tokenizer, an online teacher required, and
a few steps of ``lakd train`` with it. Tiny models and a few steps only."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import open_clip
import pytest
import torch
import torch.nn.functional as F

from lakd.distill import DenseFeatures, Recipe, StudentWithHeads, available_recipes, encode_dense
from lakd.distill.dense import dense_map_loss
from lakd.errors import LakdError
from lakd.models import load_model
from lakd.models.embed import EmbedConfig, embed
from lakd.models.tokens import resample_maps, similarity_maps
from lakd.train import load_train_config, train

TRAIN = "shapes:train?n=24&image_size=32"
TEXT_CFG = {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1, "mlp_ratio": 2.0}


def _config(tmp: Path, name: str, patch_size: int, text_cfg: dict) -> str:
    path = tmp / f"{name}.json"
    vision = {"image_size": 64, "patch_size": patch_size, "width": 64, "layers": 1, "head_width": 32, "mlp_ratio": 2.0}
    path.write_text(json.dumps({"embed_dim": 128, "vision_cfg": vision, "text_cfg": text_cfg}))
    open_clip.add_model_config(path)
    return f"open_clip:{name}"


@pytest.fixture(scope="module")
def configs(tmp_path_factory) -> dict[str, str]:
    """Small open_clip ViTs registered from temporary JSON configs: the student's tokenizer (context 32)
    with a 4 x 4 grid (patch 16) and a 16 x 16 grid (patch 4); and one with another context length."""
    tmp = tmp_path_factory.mktemp("configs")
    return {
        "grid4": _config(tmp, "lakd-test-dense-p16", 16, TEXT_CFG),
        "grid16": _config(tmp, "lakd-test-dense-p4", 4, TEXT_CFG),
        "context24": _config(tmp, "lakd-test-dense-c24", 16, {**TEXT_CFG, "context_length": 24}),
    }


@pytest.fixture(scope="module")
def student():
    return load_model("lakd:tiny-vit")


def _pairs(preprocess, tokenizer, n=4):
    from lakd.data.shapes import ShapesWorld

    world = ShapesWorld("val", n=n, image_size=32)
    images = torch.stack([preprocess(world[i].image) for i in range(n)])
    return images, tokenizer([world[i].captions[0] for i in range(n)])


def _teacher(model, images, ids) -> DenseFeatures:
    with torch.no_grad():
        return encode_dense(model, images, ids)[2]


# ---- the loss ----------------------------------------------------------------------------------


def test_zero_when_the_student_is_the_teacher(student):
    model, preprocess, tokenizer = student
    images, ids = _pairs(preprocess, tokenizer)
    wrapper = StudentWithHeads(model)
    outputs = wrapper(images, ids, dense=True)
    batch = wrapper.distill_batch(
        outputs, images, teacher_image=outputs["image_features"].detach(),
        teacher_text=outputs["text_features"].detach(), teacher_dense=_teacher(model, images, ids),
    )
    recipe = Recipe.from_config({"dense": 1})
    assert recipe.needs_online_teacher and recipe.required_fields == {"student_dense", "teacher_dense"}
    assert float(recipe(batch).total.detach()) == 0.0
    assert "dense" in available_recipes() and Recipe.named("dense", student_dim=256, teacher_dim=256).needs_online_teacher
    # the single forward gives open_clip's pooled features
    torch.testing.assert_close(outputs["image_features"], model.encode_image(images), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(outputs["text_features"], model.encode_text(ids), rtol=1e-5, atol=1e-6)


def test_positive_and_reaches_both_student_towers(student):
    model, preprocess, tokenizer = student
    images, ids = _pairs(preprocess, tokenizer)
    teacher, _, _ = load_model("lakd:tiny-vit", seed=1)  # another initialisation, the same grid
    wrapper = StudentWithHeads(copy.deepcopy(model)).train()
    batch = wrapper.distill_batch(wrapper(images, ids, dense=True), images, teacher_dense=_teacher(teacher, images, ids))
    loss = Recipe.from_config({"dense": 1}).losses["dense"](batch)
    assert loss.item() > 0
    loss.backward()
    student_model = wrapper.student
    for name in ("visual.conv1.weight", "visual.proj", "visual.ln_post.weight", "token_embedding.weight",
                 "text_projection", "ln_final.weight", "transformer.resblocks.0.attn.in_proj_weight",
                 "visual.transformer.resblocks.0.attn.in_proj_weight"):
        grad = dict(student_model.named_parameters())[name].grad
        assert grad is not None and bool(grad.abs().sum() > 0), name
    # the class token and the logit scale are not read by the maps
    assert student_model.logit_scale.grad is None


def test_teacher_grid_is_resampled_to_the_students(student, configs):
    model, preprocess, tokenizer = student
    images, ids = _pairs(preprocess, tokenizer)
    for key, grid in (("grid4", (4, 4)), ("grid16", (16, 16))):
        teacher_model, teacher_pre, teacher_tok = load_model(configs[key])
        assert teacher_tok(["a red circle"]).tolist() == tokenizer(["a red circle"]).tolist()
        teacher = _teacher(teacher_model, images, ids)
        assert teacher.grid == grid and teacher.patches.shape[1] == grid[0] * grid[1]
        mine = _teacher(model, images, ids)
        expected_maps = F.interpolate(
            teacher.maps().transpose(1, 2).reshape(4, 32, *grid), size=(8, 8), mode="bilinear",
            align_corners=False, antialias=grid[0] > 8,
        ).reshape(4, 32, 64).transpose(1, 2)
        mask = mine.mask[:, None, :]
        expected = ((mine.maps() - expected_maps) ** 2 * mask).sum() / (mask.sum() * 64)
        torch.testing.assert_close(dense_map_loss(mine, teacher), expected)
        assert float(expected) > 0


def test_resampling_keeps_constant_maps_and_where_things_are():
    gen = torch.Generator().manual_seed(0)
    text = F.normalize(torch.randn(2, 5, 16, generator=gen), dim=-1)
    mask = torch.ones(2, 5, dtype=torch.bool)
    ids = torch.arange(5).expand(2, 5)
    vector = F.normalize(torch.randn(2, 1, 16, generator=gen), dim=-1)
    # every patch is the same vector, on any grid: every token's map is constant, so the loss is 0
    for grid in ((4, 4), (16, 16), (3, 5)):
        teacher = DenseFeatures(vector.expand(2, grid[0] * grid[1], 16), grid, text, mask, ids)
        student = DenseFeatures(vector.expand(2, 64, 16), (8, 8), text, mask, ids)
        assert float(dense_map_loss(student, teacher)) == pytest.approx(0.0, abs=1e-6)
    # a bright top-left quadrant stays the top-left quadrant, up or down
    for size in ((8, 8), (2, 2)):
        maps = torch.zeros(1, 16, 1)
        maps[0, [0, 1, 4, 5], 0] = 1.0
        out = resample_maps(maps, (4, 4), size).reshape(*size)
        half = (size[0] // 2, size[1] // 2)
        assert float(out[: half[0], : half[1]].min()) > float(out[half[0] :, half[1] :].max())
    with pytest.raises(LakdError, match="do not fill"):
        resample_maps(torch.zeros(1, 15, 1), (4, 4), (8, 8))


def test_padding_tokens_do_not_count():
    gen = torch.Generator().manual_seed(1)
    patches = F.normalize(torch.randn(2, 4, 8, generator=gen), dim=-1)
    text = F.normalize(torch.randn(2, 3, 8, generator=gen), dim=-1)
    mask = torch.tensor([[True, True, False], [True, False, False]])
    other = text.clone()
    other[:, 2] = -other[:, 2]  # differs only at masked positions
    other[1, 1] = -other[1, 1]
    ids = torch.zeros(2, 3, dtype=torch.int64)
    a = DenseFeatures(patches, (2, 2), text * mask[..., None], mask, ids)
    b = DenseFeatures(patches, (2, 2), other * mask[..., None], mask, ids)
    assert float(dense_map_loss(a, b)) == pytest.approx(0.0, abs=1e-7)
    maps = similarity_maps(patches, text, mask)
    assert torch.equal(maps[:, :, 2], torch.zeros(2, 4))


def test_different_token_ids_are_refused(student):
    model, preprocess, tokenizer = student
    images, ids = _pairs(preprocess, tokenizer, 2)
    mine = _teacher(model, images, ids)
    shifted = _teacher(model, images, ids.roll(1, dims=0))
    with pytest.raises(LakdError, match="shared tokenizer"):
        dense_map_loss(mine, shifted)


def test_a_resnet_student_is_a_clear_error():
    model, preprocess, tokenizer = load_model("lakd:tiny-resnet")
    images = torch.zeros(2, 3, 64, 64)
    with pytest.raises(LakdError, match="lakd:tiny-resnet.*ViT"):
        StudentWithHeads(model)(images, tokenizer(["a", "b"]), dense=True)


# ---- lakd train --------------------------------------------------------------------------------


def tiny(**sections):
    base = {
        "data": {"train": TRAIN, "batch_size": 8},
        "student": {"model": "lakd:tiny-vit"},
        "teacher": {"kind": "online", "model": "lakd:tiny-vit"},
        "recipe": "dense",
        "schedule": {"steps": 3, "warmup": 1},
        "eval": {"data": None, "probes": None, "every": 3},
        "track": {"geometry": False},
        "checkpoint": {"every": 3, "keep_last": 1},
        "log_every": 1,
    }
    for key, value in sections.items():
        base[key] = {**base[key], **value} if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return load_train_config(mapping=base)


def test_three_steps_with_an_online_teacher_of_another_grid(configs, tmp_path):
    out = tmp_path / "run"
    train(tiny(teacher={"model": configs["grid4"]}), out=str(out), echo=lambda _: None)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if r["kind"] == "train"]
    assert [r["step"] for r in steps] == [1, 2, 3]
    assert all(r["loss/dense"] > 0 and r["loss/fd"] >= 0 for r in steps)
    assert (out / "student.pt").is_file()


def test_the_task_computes_token_features_only_for_dense(monkeypatch, tmp_path):
    from lakd.distill import dense

    calls = []
    original = dense.image_tokens
    monkeypatch.setattr(dense, "image_tokens", lambda *a, **k: calls.append(1) or original(*a, **k))
    train(tiny(recipe="fd"), out=str(tmp_path / "fd"), max_steps=1, echo=lambda _: None)
    assert calls == []
    train(tiny(), out=str(tmp_path / "dense"), max_steps=1, echo=lambda _: None)
    assert len(calls) == 2  # the student's forward and the teacher's, once each


def test_config_errors_before_the_first_step(configs, tmp_path):
    store = tmp_path / "store"
    embed(EmbedConfig(model="lakd:tiny-vit", data=TRAIN, out=str(store), batch_size=24))
    with pytest.raises(LakdError, match=r"teacher.kind: the recipe's term\(s\) 'dense' needs .*teacher.kind=online"):
        train(tiny(teacher={"kind": "cached", "store": str(store), "model": None}), out=str(tmp_path / "a"))
    with pytest.raises(LakdError, match="teacher.model: .*'dense' align token maps through the shared tokenizer"):
        train(tiny(teacher={"model": configs["context24"]}), out=str(tmp_path / "b"))
    with pytest.raises(LakdError, match="student.model: .*'dense' need token features: lakd:tiny-resnet.*ViT"):
        train(tiny(student={"model": "lakd:tiny-resnet"}), out=str(tmp_path / "c"))
