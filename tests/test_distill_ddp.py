"""gather=True under torch.distributed: 2 gloo processes give the loss of one process on the whole batch."""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from lakd.analysis import fit_whitening
from lakd.distill import MODALITIES, DistillBatch, ProjectionHeads, Recipe, available_losses

WORLD, N, STUDENT_DIM, TEACHER_DIM = 2, 12, 6, 10
# every loss except mfd, whose random masks differ between the two set-ups
CONFIG = {name: 1.0 for name in available_losses() if name != "mfd"}


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


def worker(rank: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        local = N // WORLD
        values, grads = losses_and_grads(slice(rank * local, (rank + 1) * local), gather=True)
        torch.save({"values": values, "grads": grads}, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_gathered_loss_on_two_ranks_equals_one_process_on_the_whole_batch(tmp_path):
    mp.spawn(worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD, join=True)
    expected_values, expected_grads = losses_and_grads(slice(None), gather=False)
    local = N // WORLD
    for rank in range(WORLD):
        result = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        assert set(result["values"]) == set(CONFIG)
        for term, value in result["values"].items():
            assert math.isclose(value, expected_values[term], rel_tol=1e-4, abs_tol=1e-6), term
        # all_gather's backward sums the slices' gradients over ranks; DDP's averaging undoes the factor
        rows = slice(rank * local, (rank + 1) * local)
        for modality in MODALITIES:
            torch.testing.assert_close(
                result["grads"][modality], WORLD * expected_grads[modality][rows], rtol=1e-4, atol=1e-6
            )
