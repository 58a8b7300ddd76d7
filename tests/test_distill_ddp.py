"""gather=True under torch.distributed: 2 gloo processes give the loss of one process on the whole batch.

MFD draws random masks on each rank; with a ``seed`` they are ``mask_seed(seed, rank, step)``, so
the reference is one process running rank r's masks on half r of the batch (the global loss is
the mean of the two halves' losses, the halves being equal).

A student wrapped in ``DistributedDataParallel`` (each rank a half of the batch, the recipe gathered)
gets the parameter gradients of one process on the whole batch: the gather's backward sums every
rank's gradient of the global loss into the local rows (a factor of the world size), and DDP's
average over ranks divides it out again.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import lakd.distill.feature
from lakd.analysis import fit_whitening
from lakd.distill import (
    MODALITIES,
    DistillBatch,
    ProjectionHeads,
    Recipe,
    StudentWithHeads,
    available_losses,
    build_loss,
)
from lakd.models import load_model

WORLD, N, STUDENT_DIM, TEACHER_DIM = 2, 12, 6, 10
# every loss except mfd, which re-encodes images (its own set-up below), and dense, which reads the
# token features of both models (per item, kept local like mfd's images: tests/test_dense_loss.py)
CONFIG = {name: 1.0 for name in available_losses() if name not in ("mfd", "dense")}
MFD_OPTIONS = {"seed": 7, "mask_ratio": 0.5}
DDP_ITEMS, DDP_RECIPES = 16, ("fd", "none")


def full_inputs() -> dict:
    """The same global batch in every process (seeded)."""
    generator = torch.Generator().manual_seed(0)
    scales = torch.linspace(2.0, 0.3, TEACHER_DIM)

    def teacher(n: int, offset: float) -> torch.Tensor:
        return offset + torch.randn(n, TEACHER_DIM, generator=generator) * scales

    return {
        "student_image": torch.randn(N, STUDENT_DIM, generator=generator),
        "student_text": torch.randn(N, STUDENT_DIM, generator=generator),
        "teacher_image": teacher(N, 2.0),
        "teacher_text": teacher(N, -1.0),
        "labels": torch.randint(0, 3, (N,), generator=generator),
        "text_anchors": torch.randn(3, 4, TEACHER_DIM, generator=generator),
        "whitening": {"image": fit_whitening(teacher(200, 2.0)), "text": fit_whitening(teacher(200, -1.0))},
    }


def losses_and_grads(rows: slice, gather: bool) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    """Term values and the gradients of the total w.r.t. the student features of ``rows``."""
    inputs = full_inputs()
    student = {m: inputs[f"student_{m}"][rows].clone().requires_grad_() for m in MODALITIES}
    torch.manual_seed(1)  # same heads and learned loss parts in every process
    heads = ProjectionHeads(STUDENT_DIM, TEACHER_DIM)
    recipe = Recipe.from_config(CONFIG, student_dim=STUDENT_DIM, teacher_dim=TEACHER_DIM, gather=gather)
    batch = DistillBatch(
        student_image=student["image"],
        student_text=student["text"],
        student_logit_scale=torch.tensor(math.exp(2.5)),
        teacher_image=inputs["teacher_image"][rows],
        teacher_text=inputs["teacher_text"][rows],
        teacher_logit_scale=100.0,
        heads=heads,
        whitening=inputs["whitening"],
        labels=inputs["labels"][rows],
        text_anchors=inputs["text_anchors"],
    )
    output = recipe(batch)
    output.total.backward()
    return {term: value.item() for term, value in output.terms.items()}, {
        m: student[m].grad for m in MODALITIES
    }


def mfd_setup(rows: slice) -> tuple[torch.nn.Module, ProjectionHeads, DistillBatch]:
    """The tiny ViT student (same weights in every process), heads, and the MFD batch of ``rows``."""
    torch.manual_seed(2)
    model = load_model("lakd:tiny-vit")[0]
    heads = ProjectionHeads(256, TEACHER_DIM)
    generator = torch.Generator().manual_seed(3)
    images = torch.randn(N, 3, 64, 64, generator=generator)
    student_text = torch.randn(N, 256, generator=generator)
    inputs = full_inputs()
    batch = DistillBatch(
        student_image=torch.randn(N, 256, generator=generator)[rows],
        student_text=student_text[rows].clone().requires_grad_(),
        student_logit_scale=torch.tensor(1.0),
        teacher_image=inputs["teacher_image"][rows],
        teacher_text=inputs["teacher_text"][rows],
        heads=heads,
        student_model=model,
        images=images[rows],
    )
    return model, heads, batch


def parameter_grads(*modules: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.grad.flatten() for m in modules for p in m.parameters() if p.grad is not None])


def ddp_inputs() -> dict[str, torch.Tensor]:
    """The fixed batch of the DDP test: images, tokenised captions and precomputed teacher features."""
    generator = torch.Generator().manual_seed(11)
    _, _, tokenizer = load_model("lakd:tiny-vit")
    return {
        "images": torch.randn(DDP_ITEMS, 3, 64, 64, generator=generator),
        "texts": tokenizer([f"a photo of item {i} in a row of {DDP_ITEMS}" for i in range(DDP_ITEMS)]),
        "teacher_image": 2.0 + torch.randn(DDP_ITEMS, TEACHER_DIM, generator=generator),
        "teacher_text": -1.0 + torch.randn(DDP_ITEMS, TEACHER_DIM, generator=generator),
    }


def ddp_student(recipe: str) -> StudentWithHeads:
    """lakd:tiny-vit (fixed random init) with heads to the teacher's dim for a distilling recipe,
    without heads for plain CLIP (``none``: no teacher); the same weights in every process."""
    model = load_model("lakd:tiny-vit")[0].train()
    torch.manual_seed(4)
    return StudentWithHeads.for_teacher(model, TEACHER_DIM) if recipe != "none" else StudentWithHeads(model)


def ddp_step(student: torch.nn.Module, wrapper: StudentWithHeads, recipe: str, rows: slice, gather: bool):
    """One forward and backward of ``recipe`` on ``rows`` of the DDP batch through ``student``
    (the wrapper, or DDP around it); returns the gradient of every parameter, by name."""
    inputs = ddp_inputs()
    outputs = student(inputs["images"][rows], inputs["texts"][rows])
    teacher = {} if recipe == "none" else {m: inputs[f"teacher_{m}"][rows] for m in ("image", "text")}
    batch = wrapper.distill_batch(
        outputs, teacher_image=teacher.get("image"), teacher_text=teacher.get("text")
    )
    Recipe.named(recipe, gather=gather)(batch).total.backward()
    return {name: p.grad.clone() for name, p in wrapper.named_parameters() if p.grad is not None}


def worker(rank: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        local = N // WORLD
        rows = slice(rank * local, (rank + 1) * local)
        values, grads = losses_and_grads(rows, gather=True)
        torch.save({"values": values, "grads": grads}, Path(out_dir) / f"rank{rank}.pt")

        model, heads, batch = mfd_setup(rows)
        value = Recipe.from_config({"mfd": MFD_OPTIONS}, gather=True)(batch).terms["mfd"]
        value.backward()
        mfd = {
            "value": value.item(),
            "text_grad": batch.student_text.grad,
            "params": parameter_grads(model, heads),
        }
        torch.save(mfd, Path(out_dir) / f"mfd{rank}.pt")

        local = DDP_ITEMS // WORLD
        for recipe in DDP_RECIPES:
            wrapper = ddp_student(recipe)
            ddp = torch.nn.parallel.DistributedDataParallel(wrapper)
            grads = ddp_step(ddp, wrapper, recipe, slice(rank * local, (rank + 1) * local), gather=True)
            torch.save(grads, Path(out_dir) / f"ddp-{recipe}{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks_out(tmp_path_factory):
    """Run both set-ups on 2 gloo ranks once; their results are files in the returned folder."""
    out = tmp_path_factory.mktemp("ddp")
    mp.spawn(worker, args=(str(out / "init"), str(out)), nprocs=WORLD, join=True)
    return out


def test_gathered_loss_on_two_ranks_equals_one_process_on_the_whole_batch(ranks_out):
    expected_values, expected_grads = losses_and_grads(slice(None), gather=False)
    local = N // WORLD
    for rank in range(WORLD):
        result = torch.load(ranks_out / f"rank{rank}.pt", weights_only=True)
        assert set(result["values"]) == set(CONFIG)
        for term, value in result["values"].items():
            assert math.isclose(value, expected_values[term], rel_tol=1e-4, abs_tol=1e-6), term
        # all_gather's backward sums the slices' gradients over ranks; DDP's averaging undoes the factor
        rows = slice(rank * local, (rank + 1) * local)
        for modality in MODALITIES:
            torch.testing.assert_close(
                result["grads"][modality], WORLD * expected_grads[modality][rows], rtol=1e-4, atol=1e-6
            )


def test_seeded_mfd_on_two_ranks_equals_one_process_with_each_ranks_masks_on_its_half(ranks_out, monkeypatch):
    local = N // WORLD
    model, heads, batch = mfd_setup(slice(None))
    halves = []
    for rank in range(WORLD):
        monkeypatch.setattr(lakd.distributed, "rank", lambda rank=rank: rank)
        rows = slice(rank * local, (rank + 1) * local)
        half = DistillBatch(
            student_image=batch.student_image[rows],
            student_text=batch.student_text[rows],
            student_logit_scale=batch.student_logit_scale,
            teacher_image=batch.teacher_image[rows],
            teacher_text=batch.teacher_text[rows],
            heads=heads,
            student_model=model,
            images=batch.images[rows],
        )
        halves.append(build_loss("mfd", MFD_OPTIONS)(half))  # a fresh loss: call 0, as on each rank
    expected = sum(halves) / WORLD
    expected.backward()
    assert not math.isclose(halves[0].item(), halves[1].item(), rel_tol=1e-3)

    results = [torch.load(ranks_out / f"mfd{rank}.pt", weights_only=True) for rank in range(WORLD)]
    for rank, result in enumerate(results):
        assert math.isclose(result["value"], expected.item(), rel_tol=1e-4), rank
        rows = slice(rank * local, (rank + 1) * local)
        torch.testing.assert_close(
            result["text_grad"], WORLD * batch.student_text.grad[rows], rtol=1e-4, atol=1e-6
        )
    # DDP averages parameter gradients over the ranks: that average is the gradient of the global loss
    averaged = sum(result["params"] for result in results) / WORLD
    torch.testing.assert_close(averaged, parameter_grads(model, heads), rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize("recipe", DDP_RECIPES)
def test_ddp_student_gets_the_gradients_of_one_process_on_the_whole_batch(ranks_out, recipe):
    wrapper = ddp_student(recipe)
    expected = ddp_step(wrapper, wrapper, recipe, slice(None), gather=False)
    assert ("heads.maps.image.weight" in expected) == (recipe != "none")
    assert len(expected) == len(list(wrapper.parameters()))  # every parameter gets a gradient
    for rank in range(WORLD):
        grads = torch.load(ranks_out / f"ddp-{recipe}{rank}.pt", weights_only=True)
        assert grads.keys() == expected.keys()
        for name, grad in grads.items():
            scale = expected[name].abs().max().item()
            torch.testing.assert_close(grad, expected[name], rtol=1e-3, atol=1e-5 * scale + 1e-12, msg=name)
