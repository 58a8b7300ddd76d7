"""Dense alignment: token features of open_clip models, token-by-patch maps, the DCSM head and
``lakd eval --task dense-probes``."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from lakd.cli import main
from lakd.errors import LakdError
from lakd.eval import EvalConfig, evaluate
from lakd.eval.dense import (
    DenseHead,
    DenseOptions,
    ProbeFeatures,
    head_loss,
    head_optimizer,
    head_scores,
    pairwise_maps,
    similarity_maps,
    train_head,
)
from lakd.eval.probes import score_choices
from lakd.models import load_model
from lakd.models.tokens import image_tokens, text_tokens

CAPTIONS = ["a red circle", "a small blue square left of a large green triangle", "zebracornish xylophones"]


@pytest.fixture(scope="module")
def tiny_vit():
    return load_model("lakd:tiny-vit")


def _images(preprocess, n=3):
    from lakd.data.shapes import ShapesWorld

    world = ShapesWorld("val", n=n)
    return torch.stack([preprocess(world[i].image) for i in range(n)])


# ---- token features --------------------------------------------------------------------------


def test_pooled_token_of_the_per_token_path_is_open_clips_pooled_feature(tiny_vit):
    model, preprocess, tokenizer = tiny_vit
    ids = tokenizer(CAPTIONS)
    with torch.no_grad():
        text = text_tokens(model, ids)
        reference = model.encode_text(ids)
        at_pool = text.tokens[torch.arange(len(CAPTIONS)), text.pooled_index]
        assert torch.equal(text.pooled_index, ids.argmax(dim=-1))  # the end-of-text token
        torch.testing.assert_close(text.pooled, reference, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(at_pool, F.normalize(reference, dim=-1), rtol=1e-5, atol=1e-6)

        images = _images(preprocess)
        image = image_tokens(model, images)
        torch.testing.assert_close(image.pooled, model.encode_image(images), rtol=1e-5, atol=1e-6)
        assert image.grid == (8, 8) and image.patches.shape == (3, 64, 256)
        torch.testing.assert_close(image.patches.norm(dim=-1), torch.ones(3, 64))


def test_average_pool_equals_the_mean_of_the_projected_patch_tokens(tiny_vit, monkeypatch):
    """With open_clip's average pool the pooled feature is the mean of exactly the (unnormalised)
    patch tokens the per-token path projects, so this checks every patch token, not only one."""
    model, preprocess, _ = tiny_vit
    monkeypatch.setattr(model.visual, "pool_type", "avg")
    images = _images(preprocess, 2)
    with torch.no_grad():
        ours = image_tokens(model, images).pooled
        torch.testing.assert_close(ours, model.encode_image(images), rtol=1e-5, atol=1e-6)


def test_text_mask_counts_tokenizer_tokens_not_words(tiny_vit):
    model, _, tokenizer = tiny_vit
    ids = tokenizer(CAPTIONS)
    with torch.no_grad():
        text = text_tokens(model, ids)
    inner = tokenizer.tokenizer if hasattr(tokenizer, "tokenizer") else tokenizer
    expected = [len(inner.encode(c)) + 2 for c in CAPTIONS]  # start and end-of-text tokens
    assert text.mask.sum(dim=1).tolist() == expected
    assert expected[2] > len(CAPTIONS[2].split()) + 2  # rare words are several tokens
    assert text.mask[:, 0].all() and text.tokens.shape == (3, 32, 256)
    norms = text.tokens.norm(dim=-1)
    torch.testing.assert_close(norms[text.mask], torch.ones(int(text.mask.sum())))
    assert torch.equal(norms[~text.mask], torch.zeros(int((~text.mask).sum())))


def test_a_resnet_tower_is_a_one_line_error_naming_the_model():
    model, preprocess, tokenizer = load_model("lakd:tiny-resnet")
    with pytest.raises(LakdError) as err:
        image_tokens(model, torch.zeros(1, 3, 64, 64))
    message = str(err.value)
    assert "lakd:tiny-resnet" in message and "ViT" in message and "\n" not in message


# ---- maps and the head -----------------------------------------------------------------------


def test_maps_are_dot_products_with_masked_tokens_zero():
    gen = torch.Generator().manual_seed(0)
    patches = F.normalize(torch.randn(3, 6, 5, generator=gen), dim=-1)
    tokens = F.normalize(torch.randn(4, 7, 5, generator=gen), dim=-1)
    mask = torch.arange(7)[None, :] < torch.tensor([[2], [7], [3], [5]])
    every = pairwise_maps(patches, tokens, mask)
    assert every.shape == (3, 4, 6, 7)
    torch.testing.assert_close(every[1, 2, 4, 1], patches[1, 4] @ tokens[2, 1])
    assert torch.equal(every[:, 0, :, 2:], torch.zeros(3, 6, 5))
    paired = similarity_maps(patches[[0, 1, 2]], tokens[[3, 1, 0]], mask[[3, 1, 0]])
    torch.testing.assert_close(paired, every[[0, 1, 2], [3, 1, 0]])
    with pytest.raises(LakdError):
        similarity_maps(patches, tokens, mask)  # 3 images, 4 texts: no pairing


def _toy(n: int, seed: int, grid=(2, 3), n_tokens=6, dim=16) -> ProbeFeatures:
    """Items whose true caption lists the image's patch features in patch order and whose three
    false captions list the same features in other orders: the pooled (mean) features of every
    caption are equal, so a pooled cosine ties, and only the map tells them apart."""
    gen = torch.Generator().manual_seed(seed)
    p = grid[0] * grid[1]
    patches = F.normalize(torch.randn(n, p, dim, generator=gen), dim=-1)
    orders = [torch.arange(p), torch.arange(p).roll(1), torch.arange(p).flip(0), torch.arange(p).roll(3)]
    text = torch.zeros(n * 4, n_tokens, dim)
    for i in range(n):
        for j, order in enumerate(orders):
            text[4 * i + j, :p] = patches[i, order]
    mask = (torch.arange(n_tokens) < p).expand(n * 4, n_tokens).clone()
    captions = [f"item {i} order {j}" for i in range(n) for j in range(4)]
    return ProbeFeatures(patches, text, mask, torch.arange(n).repeat_interleave(4), captions, grid)


def test_every_head_parameter_reaches_the_optimiser_and_gets_a_gradient():
    features = _toy(8, seed=0)
    head = DenseHead(6, (2, 3), width=8)
    optimizer = head_optimizer(head, 1e-3)
    optimised = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert optimised == {id(p) for p in head.parameters()} and len(optimised) == 8  # 2 conv + 2 linear
    true, negatives = features.layout()
    head_loss(head, features, torch.arange(8), true, negatives).backward()
    for name, param in head.named_parameters():
        assert param.grad is not None and bool(param.grad.abs().sum() > 0), name


def test_the_head_learns_a_problem_the_pooled_cosine_cannot_solve():
    options = DenseOptions(head_width=16, head_steps=60, head_batch=16, head_lr=3e-3, head_seed=0)
    trained = train_head(_toy(64, seed=1), options)
    assert trained.losses[-1] < 0.5 * trained.losses[0]
    test = _toy(32, seed=2)
    dense = score_choices(head_scores(trained.head, test), test.text_item, 32)
    assert float(dense.score.mean()) > 0.9
    pooled_image = test.patches.mean(dim=1)
    pooled_text = test.text.sum(dim=1) / test.mask.sum(dim=1, keepdim=True)
    cosine = (F.normalize(pooled_image, dim=-1)[test.text_item] * F.normalize(pooled_text, dim=-1)).sum(1)
    pooled = score_choices(cosine.round(decimals=5), test.text_item, 32)
    assert float(pooled.score.mean()) == pytest.approx(0.25)  # four captions tie


def test_training_is_seeded():
    features = _toy(16, seed=3)
    a = train_head(features, DenseOptions(head_width=8, head_steps=5, head_batch=8, head_seed=4))
    b = train_head(features, DenseOptions(head_width=8, head_steps=5, head_batch=8, head_seed=4))
    c = train_head(features, DenseOptions(head_width=8, head_steps=5, head_batch=8, head_seed=5))
    assert a.losses == b.losses and a.losses != c.losses
    for (name, x), y in zip(a.head.state_dict().items(), b.head.state_dict().values(), strict=True):
        assert torch.equal(x, y), name


def test_head_rejects_maps_of_another_shape():
    with pytest.raises(LakdError, match="head reads"):
        DenseHead(6, (2, 3), width=4)(torch.zeros(2, 6, 5))
    with pytest.raises(LakdError, match="head_steps"):
        DenseOptions(head_steps=0)


# ---- lakd eval --task dense-probes -----------------------------------------------------------

HEAD = ["--head-width", "8", "--head-steps", "4", "--head-data", "shapes:probes?n=16&seed=1"]


def test_cli_writes_dense_and_pooled_probe_accuracy(tmp_path, capsys):
    data = "shapes:probes?n=24"
    out = tmp_path / "dense.json"
    common = ["eval", "--model", "lakd:tiny-vit", "--data", data, "--batch-size", "16"]
    assert main([*common, "--task", "dense-probes", "--out", str(out), *HEAD]) == 0
    assert main([*common, "--task", "probes", "--out", str(tmp_path / "probes.json")]) == 0
    capsys.readouterr()
    record = json.loads(out.read_text())
    probes = json.loads((tmp_path / "probes.json").read_text())
    assert record["task"] == "dense_image_caption_selection" and record["lakd"]["model_spec"] == "lakd:tiny-vit"
    metrics = record["metrics"]
    for condition in ("basic", "binding", "spatial", "negation"):
        assert 0 <= metrics[f"acc_{condition}"] <= 1
        assert metrics[f"pooled_acc_{condition}"] == probes["metrics"][f"acc_{condition}"]
    assert metrics["pooled_acc"] == probes["metrics"]["acc"]
    head = record["lakd"]["head"]
    assert (head["width"], head["steps"], head["n_train_items"]) == (8, 4, 16)
    assert record["lakd"]["grid"] == [8, 8] and record["lakd"]["n_per_condition"]["spatial"] == 6


def test_dense_probes_needs_a_model_and_other_training_probes(tmp_path):
    with pytest.raises(LakdError, match="needs `model`"):
        evaluate(EvalConfig(embeddings=str(tmp_path), task="dense-probes", out=str(tmp_path / "r.json")))
    same = DenseOptions(head_data="shapes:probes?n=8", head_steps=1)
    with pytest.raises(LakdError, match="head_data"):
        evaluate(
            EvalConfig(
                model="lakd:tiny-vit", data="shapes:probes?n=8", task="dense-probes",
                out=str(tmp_path / "r.json"), dense=same,
            )
        )


def test_cli_dense_probes_on_a_resnet_is_one_line(tmp_path, capsys):
    rc = main(
        ["eval", "--model", "lakd:tiny-resnet", "--data", "shapes:probes?n=8", "--task", "dense-probes",
         "--out", str(tmp_path / "r.json"), *HEAD]
    )
    err = capsys.readouterr().err
    assert rc == 1
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "lakd:tiny-resnet" in lines[0] and "ViT" in lines[0], err
    assert not (tmp_path / "r.json").exists()
