"""Ties in ranked scores are resolved against the model (pessimistic), never by position.

A model whose embeddings have collapsed scores every candidate the same; breaking such ties by index
(``argmax`` returns the first) or counting only strictly higher scores would report it as perfect.
Here a positive's rank is ``1 +`` the number of *non-positive* candidates scoring ``>=`` its best
positive, and a top-1 pick exists only when one candidate holds the highest score alone (picks are
-1 otherwise, and a -1 pick never counts as agreeing with anything). :mod:`lakd.eval` ranks and
picks with these functions, and so do the alignment metrics of :mod:`lakd.analysis.alignment`
(top-1 retrieval agreement; k-NN overlap counts a neighbour tied with the best one left out of the
set as not shared).
"""

from __future__ import annotations

import torch

NO_PICK = -1


def pessimistic_rank(scores: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
    """Ranks [c] (1-based) of the best positive of each row of ``scores`` [c, K]; ``positive`` [c, K]
    bool marks each row's positives (at least one per row). Non-positives tied with it rank above it."""
    best = scores.masked_fill(~positive, -torch.inf).max(dim=1, keepdim=True).values
    return 1 + ((scores >= best) & ~positive).sum(dim=1)


def unique_top1(scores: torch.Tensor, keys: torch.Tensor | None = None) -> torch.Tensor:
    """Top-1 pick [c] of each row of ``scores`` [c, K], or :data:`NO_PICK` when the highest score is
    shared. ``keys`` [K] names the candidates (the pick is a key): candidates with equal keys are the
    same thing (e.g. identical caption texts), so a tie among them still leaves one pick."""
    keys = torch.arange(scores.shape[1], device=scores.device) if keys is None else keys.to(scores.device)
    top = scores.max(dim=1, keepdim=True).values
    pick = keys[scores.argmax(dim=1)]
    shared = ((scores >= top) & (keys[None, :] != pick[:, None])).any(dim=1)
    return torch.where(shared, torch.full_like(pick, NO_PICK), pick)


def text_keys(texts: list[str]) -> torch.Tensor:
    """[M] int64: for each text the index of its first occurrence (equal texts share a key)."""
    first: dict[str, int] = {}
    return torch.tensor([first.setdefault(text, i) for i, text in enumerate(texts)], dtype=torch.int64)


def agreement(student: torch.Tensor, teacher: torch.Tensor) -> float:
    """Fraction of positions where two top-1 picks agree; a :data:`NO_PICK` (a tie) never agrees, so
    a collapsed student scores 0 even against a collapsed teacher."""
    student, teacher = student.cpu(), teacher.cpu()
    return float(((student == teacher) & (student != NO_PICK)).double().mean())
