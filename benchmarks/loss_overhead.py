"""Cost of each distillation recipe: one training step of the tiny ViT student, relative to ``none``.

A step is forward + recipe loss + backward + AdamW, on CPU, at batch 64 with cached teacher
features (random CLIP-like tensors of the teacher dim, 512, with per-modality whitening statistics
fitted on 4096 such rows), so only the student and the losses cost time. The student
``lakd:tiny-vit`` (embed 256) is wrapped with projection heads 256 -> 512. Every recipe gets its
own copy of the same initial student and its own optimiser; repetitions are interleaved (a new
random recipe order each round) so drift in machine load hits all recipes alike, and medians are
reported for wall time and for this process's CPU time (the latter is less sensitive to other
work on a shared machine; the load average before and after is recorded). ``geometry_over_fd``
compares the ``geometry`` recipe with ``fd`` (target: at most ~5% more), as a ratio of medians
and as the median of per-round ratios; ``dense_over_fd`` compares ``dense`` with ``fd`` the same way.

``dense`` (token-by-patch maps) runs the student's token forward (one pass that also gives the
pooled features) and reads teacher token features: random unit vectors of the teacher dim on a
14 x 14 patch grid (a ViT-B-16 at 224 px) with the student's token ids, so the teacher's maps are
resampled onto the student's 8 x 8 grid every step, as in training with such a teacher. The online
teacher's own forward, which ``dense`` needs in training (a cached store cannot give token
features), is not counted: it is the teacher's cost, not the loss's.

    python benchmarks/loss_overhead.py                  # writes benchmarks/results/loss_overhead.json
    python benchmarks/loss_overhead.py --repeats 5      # quicker, noisier
"""

from __future__ import annotations

import argparse
import copy
import os
import random
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from machine import machine_info

from lakd.analysis import fit_whitening
from lakd.distill import MODALITIES, NAMED_RECIPES, DenseFeatures, Recipe, StudentWithHeads
from lakd.distill.heads import embed_dim_of
from lakd.io import write_json
from lakd.models import load_model
from lakd.models.tokens import text_mask

RESULTS = Path(__file__).resolve().parent / "results" / "loss_overhead.json"
STUDENT = "lakd:tiny-vit"
TEACHER_GRID = (14, 14)  # the teacher token features of ``dense``
# shipped recipes, plus MFD (one extra masked pass of the image tower) for reference
RECIPES: dict[str, Any] = dict(NAMED_RECIPES) | {"clip+mfd": {"clip": 1.0, "mfd": 1.0}}


def clip_like_features(n: int, dim: int, offset: float, generator: torch.Generator) -> torch.Tensor:
    """Raw features with a mean offset and a decaying spectrum, like CLIP's (docs/metrics.md, [DE])."""
    scales = torch.logspace(0, -1.5, dim)
    return offset / dim**0.5 + torch.randn(n, dim, generator=generator) * scales / scales.norm()


class Setup:
    """One recipe's student copy, heads, recipe and optimiser."""

    def __init__(self, name: str, model: torch.nn.Module, teacher_dim: int, seed: int):
        torch.manual_seed(seed)
        self.name = name
        self.wrapper = StudentWithHeads.for_teacher(copy.deepcopy(model), teacher_dim).train()
        student_dim = embed_dim_of(model)
        self.recipe = Recipe.from_config(
            RECIPES[name], student_dim=student_dim, teacher_dim=teacher_dim
        ).train()
        self.dense = "student_dense" in self.recipe.required_fields
        parameters = [*self.wrapper.parameters(), *self.recipe.parameters()]
        self.optimizer = torch.optim.AdamW(parameters, lr=1e-4, weight_decay=0.1)

    def step(self, images: torch.Tensor, texts: torch.Tensor, teacher: dict[str, Any]) -> tuple[float, float]:
        """One timed training step: (wall seconds, CPU seconds of this process)."""
        wall, cpu = time.perf_counter(), time.process_time()
        self.optimizer.zero_grad(set_to_none=True)
        fields = teacher if self.dense else {k: v for k, v in teacher.items() if k != "teacher_dense"}
        batch = self.wrapper.distill_batch(self.wrapper(images, texts, dense=self.dense), images, **fields)
        self.recipe(batch).total.backward()
        self.optimizer.step()
        return time.perf_counter() - wall, time.process_time() - cpu


def teacher_tokens(ids: torch.Tensor, dim: int, generator: torch.Generator) -> DenseFeatures:
    """Random unit teacher token features of ``ids`` on :data:`TEACHER_GRID` (for ``dense``)."""
    n, length = ids.shape
    mask = text_mask(ids, "argmax", None)
    patches = torch.nn.functional.normalize(torch.randn(n, TEACHER_GRID[0] * TEACHER_GRID[1], dim, generator=generator), dim=-1)
    text = torch.nn.functional.normalize(torch.randn(n, length, dim, generator=generator), dim=-1) * mask[..., None]
    return DenseFeatures(patches, TEACHER_GRID, text, mask, ids)


def quartiles(times: list[float]) -> dict[str, float]:
    q1, median, q3 = np.percentile(times, [25, 50, 75])
    return {"median_s": float(median), "q1_s": float(q1), "q3_s": float(q3)}


def run(batch_size: int, teacher_dim: int, repeats: int, warmup: int, seed: int) -> dict[str, Any]:
    generator = torch.Generator().manual_seed(seed)
    model, _, tokenizer = load_model(STUDENT)
    images = torch.randn(batch_size, 3, 64, 64, generator=generator)
    texts = tokenizer(["a red circle left of a blue square"] * batch_size)
    offsets = {"image": 0.9, "text": -0.9}
    teacher = {
        "teacher_image": clip_like_features(batch_size, teacher_dim, offsets["image"], generator),
        "teacher_text": clip_like_features(batch_size, teacher_dim, offsets["text"], generator),
        "teacher_logit_scale": 100.0,
        "whitening": {
            m: fit_whitening(clip_like_features(4096, teacher_dim, offsets[m], generator)) for m in MODALITIES
        },
        "teacher_dense": teacher_tokens(texts, teacher_dim, generator),
    }
    setups = [Setup(name, model, teacher_dim, seed) for name in RECIPES]
    for setup in setups:
        for _ in range(warmup):
            setup.step(images, texts, teacher)
    clocks = ("wall", "cpu")
    times: dict[str, dict[str, list[float]]] = {
        clock: {setup.name: [] for setup in setups} for clock in clocks
    }
    order = random.Random(seed)
    for _ in range(repeats):
        for setup in order.sample(setups, len(setups)):
            for clock, seconds in zip(clocks, setup.step(images, texts, teacher), strict=True):
                times[clock][setup.name].append(seconds)
    return {
        "student_dim": embed_dim_of(model),
        **{f"{clock}_clock": summarise(times[clock]) for clock in clocks},
        "raw_times_s": times,
    }


def summarise(times: dict[str, list[float]]) -> dict[str, Any]:
    """Quartiles and ratio to ``none`` per recipe, and geometry vs fd, for one clock's step times."""
    baseline = statistics.median(times["none"])
    recipes = {
        name: {**quartiles(values), "ratio_to_none": statistics.median(values) / baseline}
        for name, values in times.items()
    }
    geometry = over_fd(times, "geometry")
    return {
        "recipes": recipes,
        "geometry_over_fd": {
            **geometry,
            "target": "at most ~1.05",
            "within_target": geometry["ratio_of_medians"] <= 1.05,
        },
        "dense_over_fd": over_fd(times, "dense"),
    }


def over_fd(times: dict[str, list[float]], name: str) -> dict[str, float]:
    """Recipe ``name``'s step time relative to ``fd``'s: ratio of medians, median of paired ratios."""
    paired = [a / b for a, b in zip(times[name], times["fd"], strict=True)]
    return {
        "ratio_of_medians": statistics.median(times[name]) / statistics.median(times["fd"]),
        "median_paired_ratio": statistics.median(paired),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--teacher-dim", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load_before = round(os.getloadavg()[0], 2)
    result = run(args.batch_size, args.teacher_dim, args.repeats, args.warmup, args.seed)
    settings = {
        "student": STUDENT,
        "student_dim": result.pop("student_dim"),
        "teacher_dim": args.teacher_dim,
        "batch_size": args.batch_size,
        "repeats": args.repeats,
        "warmup": args.warmup,
        "device": "cpu",
        "optimizer": "AdamW",
        "teacher_features": "cached (random CLIP-like tensors), whitening fitted on 4096 rows per modality",
        "teacher_tokens": f"dense: random unit token features on a {TEACHER_GRID[0]} x {TEACHER_GRID[1]} grid",
        "recipes": RECIPES,
    }
    machine = machine_info() | {"load_average_1min_before": load_before}
    write_json(args.out, {"settings": settings, "machine": machine, **result})
    for clock in ("wall", "cpu"):
        summary = result[f"{clock}_clock"]
        for name, row in summary["recipes"].items():
            print(
                f"{clock} {name:12s} median {row['median_s'] * 1000:7.1f} ms  x{row['ratio_to_none']:.3f} of none"
            )
        for name in ("geometry", "dense"):
            ratio = summary[f"{name}_over_fd"]
            print(
                f"{clock} {name} / fd: {ratio['ratio_of_medians']:.3f} "
                f"(median of paired ratios {ratio['median_paired_ratio']:.3f})"
            )
    print(f"load average before / after: {load_before} / {machine['load_average_1_5_15min'][0]}; wrote {args.out}")


if __name__ == "__main__":
    main()
