"""Speed and memory of ``lakd.analysis`` side by side with the common approaches.

Measurements (each runs in a fresh process so its peak RSS is its own; registered in MEASUREMENTS):

- ``conformity``: exact O(N d) conformity vs the naive pairwise-cosine mean (N x N, chunked),
  N = 50,000 x d = 512, float64 both: time ratio and max abs difference.
- ``whitening``: ``fit_whitening`` (float64 streaming moments + eigh, ZCA) vs the notebook recipe
  ``np.cov`` + ``np.linalg.svd`` on the same 100,000 x 768 rows and the same ridge (medians of 3
  interleaved repetitions after a warm-up of each): time ratio,
  max relative difference of W, and how close each whitened covariance is to the identity.
- ``analyze_in_memory``: full ``analyze()`` (every group, alignment to a 768-d reference) on
  100,000 rows per modality of a 768-d student (a rotated, noisier copy of the teacher), in memory:
  wall time and peak RSS.
- ``analyze_streaming``: ``analyze()`` on 1,000,000 rows per modality x 768 read through the
  streaming path from an embedding store on disk (written here with lakd's StoreWriter, 10k-row
  shards; read twice through ``EmbeddingStore.iter_chunks``): wall time, peak RSS, and peak RSS /
  data size. The baseline RSS (before analyze) is mostly ``import torch`` (~0.7 GiB here).

Data are synthetic with CLIP-like statistics: a power-law spectrum under a random rotation and a
mean offset with ||mu|| / sqrt(tr Sigma) about 1.0 (image) and 0.75 (text), the ViT-L/14 values.

    python benchmarks/analysis_speed.py                       # all measurements
    python benchmarks/analysis_speed.py --only conformity --only whitening
    python benchmarks/analysis_speed.py --streaming-rows 200000   # smaller streaming case
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from machine import machine_info

RESULTS = Path(__file__).resolve().parent / "results" / "analysis_speed.json"


# ---- synthetic CLIP-like embeddings -----------------------------------------------------------


class ClipLike:
    """Gaussian embeddings mu + z diag(sqrt(lam)) V^T with a power-law spectrum lam (trace
    ``total``), a random rotation V and a mean of norm ``offset * sqrt(total)``."""

    def __init__(
        self, dim: int, seed: int, total: float, offset: float, mean_direction: np.ndarray | None = None
    ):
        rng = np.random.default_rng(seed)
        lam = (np.arange(1, dim + 1) + 5.0) ** -1.3
        self.eigenvalues = lam * total / lam.sum()
        self.axes = np.linalg.qr(rng.standard_normal((dim, dim)))[0]
        direction = rng.standard_normal(dim) if mean_direction is None else mean_direction
        self.mean = direction / np.linalg.norm(direction) * offset * np.sqrt(total)
        self.dim = dim

    def rows(self, n: int, seed: int) -> np.ndarray:
        z = np.random.default_rng(seed).standard_normal((n, self.dim), dtype=np.float32)
        scale = (self.axes * np.sqrt(self.eigenvalues)).T.astype(np.float32)
        return z @ scale + self.mean.astype(np.float32)


def image_and_text_models(dim: int) -> tuple[ClipLike, ClipLike]:
    """Image and text distributions whose means have cosine about 0.2 (the ViT-L/14 value)."""
    rng = np.random.default_rng(12345)
    a, b = rng.standard_normal(dim), rng.standard_normal(dim)
    b -= a * (a @ b) / (a @ a)
    text_direction = 0.2 * a / np.linalg.norm(a) + np.sqrt(1 - 0.04) * b / np.linalg.norm(b)
    return ClipLike(dim, 1, 173.7, 1.0, a), ClipLike(dim, 2, 113.0, 0.75, text_direction)


# ---- memory ---------------------------------------------------------------------------------


def reset_peak_rss() -> None:
    """Reset the kernel's peak-RSS counter (VmHWM) of this process (Linux >= 4.0)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def rss_mib(field: str = "VmHWM") -> float:
    """VmHWM (peak) or VmRSS (current) of this process in MiB, from /proc/self/status."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


# ---- measurements -----------------------------------------------------------------------------


def naive_conformity(x: np.ndarray, chunk: int = 2048) -> np.ndarray:
    """Mean cosine to every other row from explicit N x N similarity blocks (the notebook way)."""
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    out = np.empty(len(x))
    for start in range(0, len(x), chunk):
        block = unit[start : start + chunk] @ unit.T
        out[start : start + chunk] = (block.sum(axis=1) - np.diag(block[:, start : start + chunk])) / (
            len(x) - 1
        )
    return out


def measure_conformity(args: argparse.Namespace) -> dict[str, Any]:
    from lakd.analysis import conformity

    x = ClipLike(512, 7, 100.0, 1.0).rows(args.conformity_rows, seed=0).astype(np.float64)
    start = time.perf_counter()
    fast = conformity(x)
    lakd_s = time.perf_counter() - start
    start = time.perf_counter()
    slow = naive_conformity(x)
    naive_s = time.perf_counter() - start
    return {
        "rows": len(x),
        "dim": x.shape[1],
        "dtype": "float64",
        "lakd_s": lakd_s,
        "naive_chunked_nxn_s": naive_s,
        "speedup": naive_s / lakd_s,
        "max_abs_diff": float(np.abs(fast - slow).max()),
    }


def measure_whitening(args: argparse.Namespace) -> dict[str, Any]:
    from lakd.analysis import fit_whitening, whiten

    x = image_and_text_models(768)[0].rows(args.whitening_rows, seed=3).astype(np.float64)

    def fit_lakd():
        return fit_whitening(x, method="zca", eps=1e-6)

    def fit_notebook(ridge: float):  # the common notebook recipe, same ridge
        mu = x.mean(axis=0)
        cov = np.cov(x, rowvar=False)
        u, s, _ = np.linalg.svd(cov)
        return mu, u @ np.diag(1.0 / np.sqrt(s + ridge)) @ u.T

    # interleaved repetitions after one warm-up of each (the first large BLAS call pays start-up costs)
    stats = fit_lakd()
    mu, w_notebook = fit_notebook(stats.ridge)
    lakd_times, notebook_times = [], []
    for _ in range(3):
        start = time.perf_counter()
        stats = fit_lakd()
        lakd_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        mu, w_notebook = fit_notebook(stats.ridge)
        notebook_times.append(time.perf_counter() - start)
    lakd_s, notebook_s = float(np.median(lakd_times)), float(np.median(notebook_times))

    def identity_error(y: np.ndarray) -> float:
        return float(np.abs(np.cov(y, rowvar=False) - np.eye(y.shape[1])).max())

    return {
        "rows": len(x),
        "dim": x.shape[1],
        "method": "zca",
        "ridge": stats.ridge,
        "lakd_s": lakd_s,
        "numpy_cov_svd_s": notebook_s,
        "speedup": notebook_s / lakd_s,
        "max_rel_diff_W": float(np.abs(stats.W - w_notebook).max() / np.abs(w_notebook).max()),
        "lakd_whitened_cov_max_error": identity_error(whiten(x, stats)),
        "notebook_whitened_cov_max_error": identity_error((x - mu) @ w_notebook),
        "condition_number": float(stats.kept_eigenvalues[0] / stats.kept_eigenvalues[-1]),
    }


def measure_analyze_in_memory(args: argparse.Namespace) -> dict[str, Any]:
    from lakd.analysis import AnalysisConfig, analyze

    image_model, text_model = image_and_text_models(768)
    n = args.analyze_rows
    teacher = {"image": image_model.rows(n, seed=4), "text": text_model.rows(n, seed=5)}
    # the student: a rotated, noisier copy of the teacher in the same 768-d space
    rng = np.random.default_rng(6)
    rotation = np.linalg.qr(rng.standard_normal((768, 768)))[0].astype(np.float32)
    student = {
        name: rows @ rotation + 0.1 * rows.std() * rng.standard_normal(rows.shape, dtype=np.float32)
        for name, rows in teacher.items()
    }
    config = AnalysisConfig()
    baseline = rss_mib("VmRSS")
    reset_peak_rss()
    start = time.perf_counter()
    result = analyze(student, reference=teacher, config=config)
    wall = time.perf_counter() - start
    peak = rss_mib()
    return {
        "rows_per_modality": n,
        "student_dim": 768,
        "reference_dim": 768,
        "groups": list(config.groups),
        "sample_size": config.sample_size,
        "wall_s": wall,
        "rss_before_mib": baseline,
        "peak_rss_mib": peak,
        "peak_rss_above_baseline_mib": peak - baseline,
        "input_size_mib": sum(a.nbytes for a in (*student.values(), *teacher.values())) / 2**20,
        "offset_ratio": {k: result.modalities[k]["ellipsoid"]["offset_ratio"] for k in ("image", "text")},
        "cka_image": result.alignment["image"]["linear_cka"],
    }


def write_store(path: Path, n: int, dim: int, shard_size: int) -> float:
    """Write an embedding store of ``n`` synthetic items with lakd's StoreWriter; returns its MiB."""
    import torch

    from lakd.data.store import ShardData, StoreSpec, StoreWriter

    image_model, text_model = image_and_text_models(dim)
    writer = StoreWriter(
        path, StoreSpec(model="synthetic", source="clip-like", n_source_items=n, shard_size=shard_size)
    )
    for index in writer.pending():
        start, stop = writer.ranges[index]
        rows = stop - start
        writer.write(
            index,
            ShardData(
                image=torch.from_numpy(image_model.rows(rows, seed=10 + index)),
                text=torch.from_numpy(text_model.rows(rows, seed=100_000 + index)),
                text_item=torch.arange(rows),
                ids=[str(i) for i in range(start, stop)],
                captions=["c"] * rows,
            ),
        )
    writer.finish()
    return sum(f.stat().st_size for f in path.iterdir()) / 2**20


def measure_analyze_streaming(args: argparse.Namespace) -> dict[str, Any]:
    from lakd.analysis import AnalysisConfig, analyze
    from lakd.data.store import EmbeddingStore

    root = Path(tempfile.mkdtemp(prefix="lakd-bench-store-", dir=args.scratch))
    try:
        start = time.perf_counter()
        store_mib = write_store(root / "store", args.streaming_rows, 768, shard_size=10_000)
        write_s = time.perf_counter() - start
        store = EmbeddingStore(root / "store")
        config = AnalysisConfig()  # chunks of 8192 rows: each float64 copy of a chunk is 48 MiB
        sources = {
            name: (lambda name=name: store.iter_chunks(name, config.chunk_size)) for name in ("image", "text")
        }
        baseline = rss_mib("VmRSS")
        reset_peak_rss()
        start = time.perf_counter()
        result = analyze(sources, config=config)
        wall = time.perf_counter() - start
        peak = rss_mib()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    data_mib = 2 * args.streaming_rows * 768 * 4 / 2**20
    return {
        "rows_per_modality": args.streaming_rows,
        "dim": 768,
        "source": "lakd embedding store on disk (StoreWriter, float32, 10k-row shards), read with iter_chunks",
        "passes": "2 (callables: exact per-item distributions)",
        "store_write_s": write_s,
        "store_size_mib": store_mib,
        "embedding_data_mib": data_mib,
        "wall_s": wall,
        "rss_before_mib": baseline,
        "peak_rss_mib": peak,
        "peak_rss_over_data": peak / data_mib,
        "peak_rss_above_baseline_mib": peak - baseline,
        "peak_rss_above_baseline_over_data": (peak - baseline) / data_mib,
        "per_item_rows": result.sampling["per_item_rows"],
        "offset_ratio": {k: result.modalities[k]["ellipsoid"]["offset_ratio"] for k in ("image", "text")},
    }


MEASUREMENTS: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "conformity": measure_conformity,
    "whitening": measure_whitening,
    "analyze_in_memory": measure_analyze_in_memory,
    "analyze_streaming": measure_analyze_streaming,
}


def _child(name: str, args: argparse.Namespace, queue) -> None:
    queue.put(MEASUREMENTS[name](args))


def run_isolated(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Run one measurement in a fresh (spawned) process so its peak RSS is its own."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_child, args=(name, args, queue))
    process.start()
    result = queue.get()
    process.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only", action="append", choices=sorted(MEASUREMENTS), help="run only these (repeatable)"
    )
    parser.add_argument("--conformity-rows", type=int, default=50_000)
    parser.add_argument("--whitening-rows", type=int, default=100_000)
    parser.add_argument("--analyze-rows", type=int, default=100_000)
    parser.add_argument("--streaming-rows", type=int, default=1_000_000)
    parser.add_argument(
        "--scratch", default=None, help="folder for the temporary store (default: system temp)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    results = json.loads(args.out.read_text()) if args.out.is_file() else {}
    for name in args.only or list(MEASUREMENTS):
        print(f"running {name} ...", flush=True)
        results[name] = {**run_isolated(name, args), "machine": machine_info()}  # each run's own conditions
        print(json.dumps(results[name], indent=2), flush=True)

    from lakd.io import write_json

    write_json(args.out, results)
    print(f"results: {args.out}")


if __name__ == "__main__":
    main()
