"""Gather per-rank feature rows into the global batch, keeping gradients for the local slice.

Every rank computes the loss of the whole (gathered) batch, as open_clip does with
``gather_with_grad=True`` and ``local_loss=False``. The backward of
:func:`torch.distributed.nn.functional.all_gather` sums the gradients that all ranks send to a
slice, so each rank's local features receive ``world_size`` times the gradient of the global
loss; DDP then averages parameter gradients over the ranks, which gives exactly the gradient of
the global loss.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn


def distributed_world_size() -> int:
    """Number of ranks of the default process group; 1 when torch.distributed is not initialised."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def distributed_rank() -> int:
    """This process's rank in the default process group; 0 when torch.distributed is not initialised."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def gather_rows(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` [n, ...] from every rank in rank order -> [world * n, ...].

    Differentiable for the local slice. Returns ``x`` itself on a single process.
    """
    if distributed_world_size() == 1:
        return x
    return torch.cat(dist_fn.all_gather(x.contiguous()), dim=0)


def keep_rows(x: torch.Tensor) -> torch.Tensor:
    """The single-process counterpart of :func:`gather_rows`: the rows unchanged."""
    return x
