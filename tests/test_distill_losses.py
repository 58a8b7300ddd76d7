"""Distillation losses on random feature batches: values, gradients, minima, invariances, recipes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.stats import special_ortho_group

import lakd.analysis as analysis
from lakd.analysis import fit_whitening
from lakd.analysis.alignment import linear_cka_torch
from lakd.analysis.conformity import conformity_torch
from lakd.analysis.shell import shell_statistics_torch
from lakd.analysis.whitening import load_stats_set
from lakd.data.store import ShardData, StoreSpec, StoreWriter
from lakd.data.store.whitening import WhitenFitConfig, fit_store_whitening
from lakd.distill import (
    MODALITIES,
    NAMED_RECIPES,
    DistillBatch,
    FeatureDims,
    ProjectionHeads,
    Recipe,
    available_losses,
    build_loss,
    infonce_gradients,
)
from lakd.distill.geometry import SHELL_EPS
from lakd.errors import LakdError

SHIPPED_LOSSES = {
    "clip",
    "crd",
    "fd",
    "fd_clipkd",
    "mfd",
    "gd",
    "icl",
    "afd",
    "whitened_fd",
    "conformity",
    "shell",
    "gap",
    "relational",
    "rise_relative",
    "dense",
}
# mfd re-encodes images (tests/test_distill_mfd.py); dense reads token features (tests/test_dense_loss.py)
FEATURE_ONLY_LOSSES = sorted(SHIPPED_LOSSES - {"mfd", "dense"})
STUDENT_DIM, TEACHER_DIM, N = 8, 12, 16


def teacher_features(n: int, dim: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """CLIP-like raw teacher features: an offset mean per modality plus anisotropic noise."""
    scales = torch.linspace(2.0, 0.2, dim)
    return {
        "image": 3.0 + torch.randn(n, dim, generator=generator) * scales,
        "text": -1.0 + torch.randn(n, dim, generator=generator) * scales.flip(0),
    }


def whitening_for(features: dict[str, torch.Tensor], method: str = "zca"):
    return {m: fit_whitening(features[m], method=method) for m in MODALITIES}


def random_batch(
    student_dim: int = STUDENT_DIM, teacher_dim: int = TEACHER_DIM, n: int = N, seed: int = 0
) -> DistillBatch:
    """Student leaf features (requires_grad), teacher features, heads when dims differ, whitening, anchors."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    teacher = teacher_features(n, teacher_dim, generator)
    fit_on = teacher_features(256, teacher_dim, generator)
    return DistillBatch(
        student_image=torch.randn(n, student_dim, generator=generator).requires_grad_(),
        student_text=torch.randn(n, student_dim, generator=generator).requires_grad_(),
        student_logit_scale=torch.tensor(math.exp(2.0), requires_grad=True),
        teacher_image=teacher["image"],
        teacher_text=teacher["text"],
        teacher_logit_scale=100.0,
        heads=ProjectionHeads.between(student_dim, teacher_dim),
        whitening=whitening_for(fit_on),
        labels=torch.randint(0, 3, (n,), generator=generator),
        text_anchors=torch.randn(3, 4, teacher_dim, generator=generator),
    )


def student_equals_teacher(seed: int = 0, n: int = N, perturb: float = 0.0) -> DistillBatch:
    """Student features = teacher features (+ optional noise), same dim, same logit scale."""
    generator = torch.Generator().manual_seed(seed)
    teacher = teacher_features(n, TEACHER_DIM, generator)
    fit_on = teacher_features(256, TEACHER_DIM, generator)
    student = {
        m: (teacher[m] + perturb * torch.randn(n, TEACHER_DIM, generator=generator)) for m in MODALITIES
    }
    return DistillBatch(
        student_image=student["image"].requires_grad_(),
        student_text=student["text"].requires_grad_(),
        student_logit_scale=torch.tensor(50.0),
        teacher_image=teacher["image"],
        teacher_text=teacher["text"],
        teacher_logit_scale=50.0,
        whitening=whitening_for(fit_on),
        labels=torch.randint(0, 3, (n,), generator=generator),
        text_anchors=torch.randn(3, 4, TEACHER_DIM, generator=generator),
    )


def build(name: str, **options):
    return build_loss(name, options, FeatureDims(STUDENT_DIM, TEACHER_DIM))


def test_registry_holds_every_shipped_loss():
    assert set(available_losses()) == SHIPPED_LOSSES


@pytest.mark.parametrize("name", FEATURE_ONLY_LOSSES)
def test_loss_is_finite_with_finite_gradients(name):
    batch = random_batch()
    loss = build(name)
    value = loss(batch)
    assert value.ndim == 0 and torch.isfinite(value)
    value.backward()
    grads = [g for g in (batch.student_image.grad, batch.student_text.grad) if g is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0, "no gradient reaches the student's features"
    for parameter in [*loss.parameters(), *batch.heads.parameters()]:
        assert parameter.grad is None or torch.isfinite(parameter.grad).all()


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("fd", {}),
        ("fd_clipkd", {}),
        ("whitened_fd", {}),
        ("crd", {}),
        ("gd", {}),
        ("conformity", {}),
        ("shell", {}),
        ("gap", {}),
        ("relational", {"method": "kl"}),
        ("relational", {"method": "cka"}),
        ("rise_relative", {}),
    ],
)
def test_zero_when_student_equals_teacher_and_positive_otherwise(name, options):
    loss = build(name, **options)
    assert loss(student_equals_teacher()).item() == pytest.approx(0.0, abs=1e-5)
    assert loss(student_equals_teacher(perturb=1.0)).item() > 1e-4


@pytest.mark.parametrize("method", ["zca", "pca"])
def test_whitened_fd_is_unchanged_by_a_rotation_of_both_raw_spaces(method):
    generator = torch.Generator().manual_seed(3)
    teacher = teacher_features(N, TEACHER_DIM, generator)
    fit_on = teacher_features(512, TEACHER_DIM, generator)
    student = {m: teacher[m] + 0.5 * torch.randn(N, TEACHER_DIM, generator=generator) for m in MODALITIES}
    rotation = torch.as_tensor(special_ortho_group.rvs(TEACHER_DIM, random_state=0), dtype=torch.float32)

    def loss_in(transform):
        stats = {m: fit_whitening(transform(fit_on[m]), method=method) for m in MODALITIES}
        batch = DistillBatch(
            transform(student["image"]),
            transform(student["text"]),
            torch.tensor(1.0),
            transform(teacher["image"]),
            transform(teacher["text"]),
            whitening=stats,
        )
        return build("whitened_fd")(batch).item()

    plain = loss_in(lambda x: x)
    assert plain > 0.1
    assert loss_in(lambda x: x @ rotation) == pytest.approx(plain, rel=1e-4)
    # the plain feature distance of these raw features is a different number: whitening did something
    raw = DistillBatch(
        student["image"], student["text"], torch.tensor(1.0), teacher["image"], teacher["text"]
    )
    assert build("fd")(raw).item() != pytest.approx(plain, rel=0.05)


@pytest.fixture()
def saved_whitening(tmp_path):
    """Teacher features in a one-shard embedding store, their statistics fitted and saved by
    ``lakd whiten fit`` (lakd.data.store.whitening) as the set ``whiten.safetensors``, and the features themselves."""
    generator = torch.Generator().manual_seed(5)
    features = teacher_features(300, TEACHER_DIM, generator)
    spec = StoreSpec(model="teacher", source="synthetic", n_source_items=300, shard_size=300)
    writer = StoreWriter(tmp_path / "emb", spec)
    writer.write(
        0,
        ShardData(
            image=features["image"],
            text=features["text"],
            text_item=torch.arange(300),
            ids=[f"item{i}" for i in range(300)],
            captions=[f"caption {i}" for i in range(300)],
        ),
    )
    writer.finish()
    out = tmp_path / "whiten.safetensors"
    files = fit_store_whitening(WhitenFitConfig(str(tmp_path / "emb"), str(out), chunk_size=128))
    assert set(files) == set(MODALITIES) and all(f.is_file() for f in files.values())
    return out, features


def test_whitened_fd_from_saved_statistics_equals_the_in_memory_statistics(saved_whitening, monkeypatch):
    out, features = saved_whitening
    loss = build("whitened_fd", stats=str(out))
    batch = random_batch()
    batch.whitening = whitening_for(features)  # fitted in memory on the same features
    expected = build("whitened_fd")(batch)
    assert expected.item() > 0

    def no_reading(*args, **kwargs):
        raise AssertionError("statistics re-read after construction")

    monkeypatch.setattr("lakd.analysis.whitening.WhiteningStats.load", no_reading)
    batch.whitening = None  # the loss's own statistics need none from the batch
    value = loss(batch)
    torch.testing.assert_close(value, expected, rtol=1e-5, atol=1e-7)
    students = (batch.student_image, batch.student_text)
    expected_grads = torch.autograd.grad(expected, students, retain_graph=True)
    for grad, expected_grad in zip(torch.autograd.grad(value, students), expected_grads, strict=True):
        torch.testing.assert_close(grad, expected_grad, rtol=1e-4, atol=1e-7)


def test_recipe_names_the_saved_whitening_set(saved_whitening):
    out, _ = saved_whitening
    recipe = Recipe.from_config(
        {"clip": 1, "whitened_fd": {"weight": 1, "stats": str(out)}},
        student_dim=STUDENT_DIM,
        teacher_dim=TEACHER_DIM,
    )
    batch = random_batch()
    batch.whitening = None
    output = recipe(batch)
    saved = load_stats_set(out)

    def by_hand(x, modality):  # y = (x - mu) W with the saved set's arrays
        stats = saved[modality]
        return (x.double() - torch.from_numpy(stats.mu)) @ torch.from_numpy(stats.W)

    whitened = {
        who: {m: by_hand(features(m), m) for m in MODALITIES}
        for who, features in (("student", batch.projected), ("teacher", batch.teacher))
    }
    hand = DistillBatch(
        whitened["student"]["image"],
        whitened["student"]["text"],
        torch.tensor(1.0),
        whitened["teacher"]["image"],
        whitened["teacher"]["text"],
    )
    expected = build_loss("fd", {}, FeatureDims())(hand)
    assert expected.item() > 0.1
    torch.testing.assert_close(output.terms["whitened_fd"].double(), expected, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(output.total, output.terms["clip"] + output.terms["whitened_fd"])


def test_whitened_fd_saved_statistics_errors(saved_whitening, tmp_path):
    out, _ = saved_whitening
    with pytest.raises(
        LakdError, match=r"whitened_fd.*missing\.image\.safetensors: whitening file not found"
    ):
        build("whitened_fd", stats=str(tmp_path / "missing.safetensors"))
    with pytest.raises(LakdError, match="whitened_fd.*NAME.safetensors"):
        build("whitened_fd", stats=str(tmp_path / "whiten.pt"))
    with pytest.raises(LakdError, match="fitted on dimension 12, but the teacher's features have 7"):
        build_loss("whitened_fd", {"stats": str(out)}, FeatureDims(STUDENT_DIM, 7))
    with pytest.raises(LakdError, match="stats must name a saved set"):
        build("whitened_fd", stats=3)


def test_whitened_fd_needs_statistics_of_the_teacher_dim():
    batch = random_batch()
    batch.whitening = None
    with pytest.raises(LakdError, match="whitening"):
        build("whitened_fd")(batch)
    batch = random_batch()
    batch.whitening = {m: fit_whitening(torch.randn(64, 5)) for m in MODALITIES}
    with pytest.raises(LakdError, match="dimension"):
        build("whitened_fd")(batch)


@pytest.mark.parametrize("scale", [1.0, 14.3, 100.0])
def test_infonce_gradients_equal_autograd(scale):
    generator = torch.Generator().manual_seed(1)
    anchors = F.normalize(
        torch.randn(10, 6, generator=generator, dtype=torch.float64), dim=-1
    ).requires_grad_()
    keys = F.normalize(torch.randn(10, 6, generator=generator, dtype=torch.float64), dim=-1).requires_grad_()
    logit_scale = torch.tensor(scale, dtype=torch.float64)
    loss = F.cross_entropy(logit_scale * anchors @ keys.T, torch.arange(10))
    expected_anchor_grad, expected_key_grad = torch.autograd.grad(loss, (anchors, keys))
    anchor_grad, key_grad = infonce_gradients(anchors.detach(), keys.detach(), logit_scale)
    torch.testing.assert_close(anchor_grad, expected_anchor_grad)
    torch.testing.assert_close(key_grad, expected_key_grad)


def test_gd_depends_on_the_true_temperature():
    """Same features, different student scale: GD > 0 (the scale enters P = softmax(scale * A K^T))."""
    batch = student_equals_teacher()
    batch.student_logit_scale = torch.tensor(5.0)
    assert build("gd")(batch).item() > 1e-3


def test_afd_with_different_dims_and_its_learned_parts():
    loss = build("afd", init_logit_scale=math.log(20.0))
    assert all(layer.in_features == STUDENT_DIM + TEACHER_DIM for layer in loss.fusion.values())
    batch = random_batch()
    value = loss(batch)
    # by hand: fuse [s_hat, t_hat] per modality, normalise, symmetric InfoNCE at scale 20
    fused = {
        m: F.normalize(
            loss.fusion[m](torch.cat([F.normalize(batch.student(m), dim=-1), F.normalize(batch.teacher(m), dim=-1)], 1)),
            dim=-1,
        )
        for m in MODALITIES
    }
    logits, targets = 20.0 * fused["image"] @ fused["text"].T, torch.arange(N)
    expected = (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2
    torch.testing.assert_close(value, expected)
    fusion = list(loss.fusion.parameters())
    expected_grads = torch.autograd.grad(expected, fusion)
    value.backward()
    for parameter, expected_grad in zip(fusion, expected_grads, strict=True):
        torch.testing.assert_close(parameter.grad, expected_grad)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in loss.parameters())
    with pytest.raises(LakdError, match="dims"):
        build_loss("afd")


def test_icl_is_the_mean_of_two_one_way_infonce_terms_against_the_teacher():
    batch = random_batch()
    loss = build("icl", init_logit_scale=math.log(20.0))
    targets = torch.arange(N)

    def one_way(anchors, keys):
        return F.cross_entropy(20.0 * anchors @ keys.T, targets)

    expected = (
        one_way(batch.projected_hat("image"), batch.teacher_hat("text"))
        + one_way(batch.projected_hat("text"), batch.teacher_hat("image"))
    ) / 2
    torch.testing.assert_close(loss(batch), expected)


def test_learned_logit_scales_are_capped_at_100():
    loss = build("icl", init_logit_scale=10.0)
    assert loss.logit_scale().item() == pytest.approx(100.0)


def test_torch_conformity_matches_the_analysis_implementation():
    x = torch.randn(20, 7, dtype=torch.float64) + 1.0
    expected = analysis.conformity(x.numpy())
    np.testing.assert_allclose(conformity_torch(F.normalize(x, dim=-1)).numpy(), expected, rtol=1e-10)


def test_shell_statistics_match_the_analysis_definitions():
    x = torch.randn(50, 6, dtype=torch.float64) * torch.linspace(1, 3, 6) + 2.0
    ratio, centred_cv, raw_cv = shell_statistics_torch(x, eps=0.0).tolist()
    shell = analysis.thin_shell(x.numpy())
    assert ratio == pytest.approx(analysis.offset_ratio(x.numpy()), rel=1e-10)
    assert centred_cv == pytest.approx(shell["centred"]["cv"], rel=1e-10)
    assert raw_cv == pytest.approx(shell["raw"]["cv"], rel=1e-10)
    # the loss's epsilon barely moves them on real (non-collapsed) features
    np.testing.assert_allclose(
        shell_statistics_torch(x, SHELL_EPS).numpy(), [ratio, centred_cv, raw_cv], rtol=1e-2
    )


@pytest.mark.parametrize("row", [torch.linspace(-1.0, 2.0, TEACHER_DIM), torch.zeros(TEACHER_DIM)])
@pytest.mark.parametrize("collapsed", ["student", "teacher"])
def test_shell_is_finite_on_a_collapsed_batch_of_identical_rows(row, collapsed):
    batch = student_equals_teacher(perturb=1.0)
    same = row.expand(N, -1).clone()
    if collapsed == "student":
        batch.student_image = same.clone().requires_grad_()
        batch.student_text = (same + 1.0).requires_grad_()
    else:
        batch.teacher_image, batch.teacher_text = same, same - 1.0
    assert torch.isfinite(shell_statistics_torch(same, SHELL_EPS)).all()
    value = build("shell")(batch)
    assert torch.isfinite(value) and value.item() > 0
    value.backward()
    for grad in (batch.student_image.grad, batch.student_text.grad):
        assert grad is not None and torch.isfinite(grad).all()


def test_shell_collapse_bound_and_bad_eps():
    ratio, centred_cv, raw_cv = shell_statistics_torch(torch.ones(8, 5) * 3.0, eps=1e-6).tolist()
    assert ratio == pytest.approx(1e3, rel=1e-3) and centred_cv == pytest.approx(1e-6, rel=1e-2)
    assert raw_cv == pytest.approx(1e-6, rel=1e-2)
    with pytest.raises(LakdError, match="eps"):
        build("shell", eps=0.0)


def test_torch_cka_matches_the_analysis_metric_and_is_differentiable():
    x, y = torch.randn(30, 5, dtype=torch.float64), torch.randn(30, 9, dtype=torch.float64)
    y[:, :5] += x
    x.requires_grad_(True)
    value = linear_cka_torch(x, y)
    assert value.item() == pytest.approx(analysis.linear_cka(x.detach().numpy(), y.numpy()), rel=1e-10)
    assert analysis.linear_cka(x, y) == pytest.approx(value.item(), rel=1e-12)  # tensors in: a float
    # the gradient equals central finite differences (float64)
    assert torch.autograd.gradcheck(lambda a: linear_cka_torch(a, y), (x,), eps=1e-6, atol=1e-6)


def test_conformity_against_running_means_keeps_buffers_in_the_state_dict():
    loss = build("conformity", reference="running", momentum=0.5)
    batch = random_batch()
    value = loss(batch)
    # first use: each running mean is the batch's mean unit row, conformity x_hat . m
    expected = 0.0
    for m in MODALITIES:
        student = F.normalize(batch.student(m).detach(), dim=-1)
        teacher = F.normalize(batch.teacher(m), dim=-1)
        expected += ((student @ student.mean(0)) - (teacher @ teacher.mean(0))).pow(2).mean()
    torch.testing.assert_close(value.detach(), expected)
    state = loss.state_dict()
    assert {"running.student_image.value", "running.teacher_text.value"} <= set(state)
    first = state["running.student_image.value"].clone()
    np.testing.assert_allclose(first.numpy(), batch.student_hat("image").detach().mean(0).numpy(), rtol=1e-6)
    loss(random_batch(seed=1))
    assert not torch.equal(loss.state_dict()["running.student_image.value"], first)
    with pytest.raises(LakdError, match="dims"):
        build_loss("conformity", {"reference": "running"})


def test_rise_relative_shared_anchors_and_bad_labels():
    batch = random_batch()
    batch.text_anchors = torch.randn(5, TEACHER_DIM)
    anchors = F.normalize(batch.text_anchors, dim=-1)  # [K, d]: the same anchors for every item

    def distribution(x):
        return torch.softmax(F.normalize(x, dim=-1) @ anchors.T, dim=1)

    expected = (distribution(batch.projected("image")) - distribution(batch.teacher("image"))).pow(2).mean()
    torch.testing.assert_close(build("rise_relative")(batch), expected)
    batch = random_batch()
    batch.labels = torch.full((N,), 7)
    with pytest.raises(LakdError, match="labels"):
        build("rise_relative")(batch)
    batch = random_batch()
    batch.text_anchors = None
    with pytest.raises(LakdError, match="text_anchors"):
        build("rise_relative")(batch)


@pytest.mark.parametrize("anchors", [4, 7])
def test_rise_relative_is_rises_mse_of_anchor_distributions(anchors):
    """RISE: F.mse_loss(softmax(cos(student, anchors)), softmax(cos(teacher, anchors))), i.e. the
    mean over items and anchors, times 10 (which is the recipe weight here), whatever K."""
    batch = random_batch()
    batch.text_anchors = torch.randn(3, anchors, TEACHER_DIM)
    per_item = F.normalize(batch.text_anchors, dim=-1)[batch.labels]  # [N, K, d]

    def distribution(x):
        cosines = torch.stack([F.cosine_similarity(x[i].expand(anchors, -1), per_item[i]) for i in range(N)])
        return torch.softmax(cosines, dim=1)

    student = distribution(batch.projected("image"))
    teacher = distribution(batch.teacher("image"))
    rise = 10.0 * F.mse_loss(student, teacher)
    torch.testing.assert_close(10.0 * build("rise_relative")(batch), rise)
    recipe = Recipe.from_config({"rise_relative": 10.0}, student_dim=STUDENT_DIM, teacher_dim=TEACHER_DIM)
    torch.testing.assert_close(recipe(batch).total, rise)


def collapsing_batch(spread: float) -> tuple[DistillBatch, dict[str, float]]:
    """Student rows c_m + spread * s_m * noise (s_m = ||c_m||, noise of unit RMS norm) against CLIP-like
    teacher features: spread 0 is a collapsed student. Returns the batch and s per modality."""
    generator = torch.Generator().manual_seed(7)
    teacher = teacher_features(N, TEACHER_DIM, generator)
    student, scale = {}, {}
    for m in MODALITIES:
        centre = torch.randn(TEACHER_DIM, generator=generator) + 1.0
        noise = torch.randn(N, TEACHER_DIM, generator=generator) / math.sqrt(TEACHER_DIM)
        scale[m] = centre.norm().item()
        student[m] = (centre + spread * scale[m] * noise).requires_grad_()
    return (
        DistillBatch(student["image"], student["text"], torch.tensor(1.0), teacher["image"], teacher["text"]),
        scale,
    )


@pytest.mark.parametrize("spread", [0.0, 1e-5, 1e-4, 1e-3, 1e-2, 3e-2, 0.1])
def test_shell_near_a_collapsed_student_is_bounded_and_spreads_it(spread):
    """Near collapse the value stays below 2 (each arctan term is at most (pi/2)^2) and the gradient
    below 3 / s, where the unbounded offset ratio gave about 2e6 and gradients up to about 3e7 on
    this batch; the descent direction increases the batch's spread (its total variance)."""
    batch, scale = collapsing_batch(spread)
    value = build("shell")(batch)
    value.backward()
    assert 0.1 < value.item() < 2.0
    for m in MODALITIES:
        x, grad = batch.student(m), batch.student(m).grad
        assert torch.isfinite(grad).all() and grad.norm().item() * scale[m] < 3.0
        if spread > 0:
            # (N - 1) / 2 times the rate of change of tr(Sigma) along -grad
            assert (-grad * (x - x.mean(dim=0))).sum().item() > 0, m


def test_feature_losses_need_heads_when_dims_differ():
    batch = random_batch()
    batch.heads = None
    with pytest.raises(LakdError, match="projection heads"):
        build("fd")(batch)


def test_batch_rejects_mismatched_rows_and_shapes():
    with pytest.raises(LakdError, match="same items"):
        DistillBatch(
            torch.randn(4, 3), torch.randn(4, 3), torch.tensor(1.0), torch.randn(5, 6), torch.randn(5, 6)
        )
    with pytest.raises(LakdError, match="differ in shape"):
        DistillBatch(torch.randn(4, 3), torch.randn(4, 2), torch.tensor(1.0))
    with pytest.raises(LakdError, match="both image and text"):
        DistillBatch(torch.randn(4, 3), torch.randn(4, 3), torch.tensor(1.0), teacher_image=torch.randn(4, 3))


# --- recipes ---------------------------------------------------------------------------------------


def test_recipe_total_is_the_weighted_sum_of_logged_terms():
    recipe = Recipe.from_config({"clip": 1, "fd": 0.5, "gap": {"weight": 2}}, student_dim=STUDENT_DIM)
    output = recipe(random_batch())
    assert set(output.terms) == {"clip", "fd", "gap"}
    expected = output.terms["clip"] + 0.5 * output.terms["fd"] + 2 * output.terms["gap"]
    torch.testing.assert_close(output.total, expected)
    scalars = output.scalars()
    assert set(scalars) == {"loss/total", "loss/clip", "loss/fd", "loss/gap"}
    assert scalars["loss/fd"] == pytest.approx(output.terms["fd"].item())


def test_named_recipes():
    assert set(NAMED_RECIPES) == {"none", "clip_kd", "fd", "whitened_fd", "geometry", "dense"}
    assert NAMED_RECIPES["clip_kd"] == {"clip": 1.0, "crd": 1.0, "icl": 1.0, "fd_clipkd": 2000.0}
    assert set(NAMED_RECIPES["geometry"]) == {"clip", "whitened_fd", "conformity", "gap"}
    assert NAMED_RECIPES["dense"] == {"clip": 1.0, "fd": 1.0, "dense": 1.0}  # its batch: tests/test_dense_loss.py
    for name in set(NAMED_RECIPES) - {"dense"}:
        batch = random_batch()
        output = Recipe.named(name, student_dim=STUDENT_DIM, teacher_dim=TEACHER_DIM)(batch)
        assert set(output.terms) == set(NAMED_RECIPES[name])
        alone = {term: build(term)(batch) for term in NAMED_RECIPES[name]}
        for term, value in alone.items():
            torch.testing.assert_close(output.terms[term], value)
        expected = sum(weight * alone[term] for term, weight in NAMED_RECIPES[name].items())
        torch.testing.assert_close(output.total, expected)


def test_plain_clip_recipe_needs_no_teacher_but_distillation_does():
    batch = DistillBatch(torch.randn(6, 4), torch.randn(6, 4), torch.tensor(10.0))
    logits = 10.0 * F.normalize(batch.student_image, dim=-1) @ F.normalize(batch.student_text, dim=-1).T
    targets = torch.arange(6)
    clip = (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2
    torch.testing.assert_close(Recipe.named("none")(batch).total, clip)
    with pytest.raises(LakdError, match="teacher"):
        Recipe.named("fd")(batch)


def test_recipe_terms_can_reuse_a_loss_with_different_options():
    recipe = Recipe.from_config(
        {"rel_kl": {"loss": "relational", "method": "kl"}, "rel_cka": {"loss": "relational", "method": "cka"}}
    )
    output = recipe(random_batch())
    assert set(output.terms) == {"rel_kl", "rel_cka"}
    assert output.terms["rel_kl"].item() != pytest.approx(output.terms["rel_cka"].item())


def test_zero_weight_terms_are_dropped():
    recipe = Recipe.from_config({"clip": 1, "fd": 0})
    assert list(recipe.losses) == ["clip"]


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"clip": 1, "fdd": 1}, r"unknown \(available: afd, clip,"),
        ({"fd": {"weight": 1, "temperature": 2}}, "unknown option"),
        ({"fd": -1}, "weight must be"),
        ({"fd": float("nan")}, "weight must be"),
        ({"fd": "much"}, "weight must be"),
        ({"fd": 0}, "no terms"),
        ({"a.b": 1}, "without '.'"),
        ("clip-kd", "shipped recipes: clip_kd"),
        (["fd"], "expected a mapping"),
        ({"mfd": {"mask_ratio": 1.0}}, "mask_ratio"),
        ({"relational": {"method": "mse"}}, "method must be one of"),
    ],
)
def test_bad_recipe_configs_are_one_line_errors(config, message):
    with pytest.raises(LakdError, match=message) as err:
        Recipe.from_config(config)
    assert "\n" not in str(err.value)
