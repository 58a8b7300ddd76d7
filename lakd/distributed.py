"""torch.distributed in one place: process-group setup under torchrun, rank helpers, barrier, gather.

Every function works in a single process too (rank 0 of a world of 1, barrier and gather no-ops),
so callers never branch on whether they run under torchrun. Used by ``lakd embed`` (ranks embed
their own shards), the embedding-store writer (rank 0 writes ``meta.json`` after a barrier), the
distillation losses (features gathered across ranks) and the trainer.

Gathering with gradients: :func:`gather_rows` concatenates every rank's rows in rank order, as
open_clip does with ``gather_with_grad=True`` and ``local_loss=False``, so every rank computes
the loss of the global batch. The backward of :func:`torch.distributed.nn.functional.all_gather`
sums the gradients that all ranks send to a slice, so each rank's local features receive
``world_size`` times the gradient of the global loss; DDP then averages parameter gradients over
the ranks, which gives exactly the gradient of the global loss.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist


def is_initialized() -> bool:
    """Whether a default process group exists."""
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    """Number of ranks of the default process group; 1 when torch.distributed is not initialised."""
    return dist.get_world_size() if is_initialized() else 1


def rank() -> int:
    """This process's rank in the default process group; 0 when torch.distributed is not initialised."""
    return dist.get_rank() if is_initialized() else 0


def is_main_process() -> bool:
    """Rank 0 (or the only process): the one that writes shared files and shows progress bars."""
    return rank() == 0


def barrier() -> None:
    """Synchronise ranks under torch.distributed; a no-op in a single process."""
    if is_initialized():
        dist.barrier()


def gather_rows(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` [n, ...] from every rank in rank order -> [world * n, ...].

    Differentiable for the local slice (module docstring). Returns ``x`` itself on a single process.
    """
    if world_size() == 1:
        return x
    import torch.distributed.nn.functional as dist_fn

    return torch.cat(dist_fn.all_gather(x.contiguous()), dim=0)


def keep_rows(x: torch.Tensor) -> torch.Tensor:
    """The single-process counterpart of :func:`gather_rows`: the rows unchanged."""
    return x


def all_reduce_mean(values: dict[str, float]) -> dict[str, float]:
    """The mean over ranks of each float in ``values`` (as given on a single process)."""
    if world_size() == 1 or not values:
        return dict(values)
    keys = sorted(values)
    device = "cuda" if dist.get_backend() == "nccl" else "cpu"
    tensor = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    tensor /= world_size()
    return dict(zip(keys, tensor.tolist(), strict=True))


@dataclass(frozen=True)
class DistributedContext:
    """Where this process runs: ``rank`` of ``world_size``, its ``device`` (``cuda`` becomes
    ``cuda:LOCAL_RANK`` under torchrun) and whether it created the process group (``owns_group``)."""

    rank: int
    world_size: int
    device: str
    owns_group: bool

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup(device: str) -> DistributedContext:
    """Join torchrun's process group when its environment is set (NCCL on CUDA, gloo on CPU).

    Returns the context of this process; a plain run is rank 0 of 1 on ``device``. A group that the
    caller already initialised is used as it is (``owns_group`` False).
    """
    joined = is_initialized()
    size = dist.get_world_size() if joined else int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return DistributedContext(0, 1, device, False)
    if device == "cuda":
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    if device.startswith("cuda"):
        torch.cuda.set_device(device)
    if not joined:
        dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
    return DistributedContext(dist.get_rank(), dist.get_world_size(), device, not joined)


def teardown(context: DistributedContext) -> None:
    """Destroy the process group if :func:`setup` created it."""
    if context.owns_group and is_initialized():
        dist.destroy_process_group()


@contextlib.contextmanager
def distributed(device: str) -> Iterator[DistributedContext]:
    """``with distributed(device) as ctx:``: :func:`setup` on entry, :func:`teardown` on exit."""
    context = setup(device)
    try:
        yield context
    finally:
        teardown(context)
