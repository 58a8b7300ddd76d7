"""Throughput of the shapes world and of ``lakd embed`` on this machine.

Each measurement is a function returning a JSON-able dict, registered in ``MEASUREMENTS`` under the
key it writes. ``main()`` runs the selected measurements and merges them into
``benchmarks/results/shapes_throughput.json``, each with the ``machine`` info (load average
included) of its own run; keys written by other measurements are kept. To add one, write a function and add it to ``MEASUREMENTS``.

    python benchmarks/shapes_throughput.py                 # all measurements
    python benchmarks/shapes_throughput.py --only shapes_single_process
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from machine import machine_info
from torch.utils.data import DataLoader

from lakd.data.base import Item
from lakd.data.shapes import ShapesWorld
from lakd.io import write_json

RESULTS = Path(__file__).resolve().parent / "results" / "shapes_throughput.json"


def collate_items(items: list[Item]) -> tuple[torch.Tensor, list[str]]:
    """Stack item images into a uint8 (B, 3, H, W) tensor and keep the primary captions."""
    images = torch.from_numpy(np.stack([np.asarray(item.image) for item in items])).permute(0, 3, 1, 2)
    return images, [item.captions[0] for item in items]


def shapes_single_process(n: int = 3000, image_size: int = 64) -> dict[str, Any]:
    """Items (scene, captions, rendered image) per second, generated in this process."""
    world = ShapesWorld("train", n=n, image_size=image_size)
    for i in range(20):  # warm-up
        world[i]
    start = time.perf_counter()
    for i in range(n):
        world[i]
    seconds = time.perf_counter() - start
    return {
        "images_per_s": round(n / seconds, 1),
        "n": n,
        "image_size": image_size,
        "seconds": round(seconds, 3),
    }


def shapes_dataloader(
    n: int = 6000, image_size: int = 64, workers: int = 2, batch_size: int = 64
) -> dict[str, Any]:
    """Items per second through a torch DataLoader (``workers`` processes, batches collated to tensors),
    timed from the first ``iter()`` (worker start-up included) to the last batch."""
    world = ShapesWorld("train", n=n, image_size=image_size)
    loader = DataLoader(world, batch_size=batch_size, num_workers=workers, collate_fn=collate_items)
    start = time.perf_counter()
    seen = sum(images.shape[0] for images, _ in loader)
    seconds = time.perf_counter() - start
    assert seen == n
    return {
        "images_per_s": round(n / seconds, 1),
        "n": n,
        "image_size": image_size,
        "workers": workers,
        "batch_size": batch_size,
        "seconds": round(seconds, 3),
    }


def embed_tiny_vit(n: int = 1024, batch_size: int = 64) -> dict[str, Any]:
    """``lakd embed`` items/s for ``lakd:tiny-vit`` on ``shapes:val`` (images generated on the fly, every
    caption of every scene embedded: about six per image), store written to a temporary folder."""
    import tempfile

    from lakd.models.embed import EmbedConfig, embed

    with tempfile.TemporaryDirectory() as tmp:
        cfg = EmbedConfig(
            model="lakd:tiny-vit", data=f"shapes:val?n={n}", out=f"{tmp}/store", batch_size=batch_size
        )
        start = time.perf_counter()
        store = embed(cfg)
        seconds = time.perf_counter() - start
        n_texts = store.n_texts
    return {
        "items_per_s": round(n / seconds, 1),
        "captions_per_s": round(n_texts / seconds, 1),
        "n": n,
        "n_captions": n_texts,
        "batch_size": batch_size,
        "seconds": round(seconds, 3),
    }


def train_step(spec: str, batch_size: int = 64, steps: int = 10) -> dict[str, Any]:
    """Median seconds of one CLIP training step (both towers forward, symmetric InfoNCE via
    open_clip's ClipLoss, backward, AdamW) of a shipped tiny model on shapes-world batches."""
    import open_clip

    from lakd.models import load_model

    model, preprocess, tokenizer = load_model(spec)
    model.train()
    world = ShapesWorld("train", n=batch_size)
    items = [world[i] for i in range(batch_size)]
    images = torch.stack([preprocess(item.image) for item in items])
    tokens = tokenizer([item.captions[0] for item in items])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    loss_fn = open_clip.ClipLoss()
    times = []
    for step in range(steps + 2):  # two warm-up steps
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        image_features, text_features, logit_scale = model(images, tokens)[:3]
        loss_fn(image_features, text_features, logit_scale).backward()
        optimizer.step()
        if step >= 2:
            times.append(time.perf_counter() - start)
    return {
        "median_step_s": round(float(np.median(times)), 4),
        "batch_size": batch_size,
        "steps": steps,
        "params_millions": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
    }


MEASUREMENTS: dict[str, Callable[[], dict[str, Any]]] = {
    "shapes_single_process": shapes_single_process,
    "shapes_dataloader_2_workers": shapes_dataloader,
    "embed_tiny_vit": embed_tiny_vit,
    "train_step_tiny_vit": lambda: train_step("lakd:tiny-vit"),
    "train_step_tiny_resnet": lambda: train_step("lakd:tiny-resnet"),
}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only", action="append", choices=sorted(MEASUREMENTS), help="run only these (repeatable)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="JSON file to merge results into")
    args = parser.parse_args(argv)
    results: dict[str, Any] = {}
    if args.out.is_file():
        results = json.loads(args.out.read_text(encoding="utf-8"))
    for name in args.only or MEASUREMENTS:
        machine = machine_info()  # before running, so the load average describes the conditions
        results[name] = {**MEASUREMENTS[name](), "machine": machine}
        print(f"{name}: {results[name]}")
    results.pop("machine", None)  # older files kept one record for all measurements
    write_json(args.out, results)
    print(f"wrote {args.out}")
    return results


if __name__ == "__main__":
    main()
