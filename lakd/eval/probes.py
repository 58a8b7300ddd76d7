"""Compositional probes: pick the true caption of an image among hard negatives.

Each probe item holds its true caption first and ``k`` false ones after it (the shapes world's
``shapes:probes``: basic content, attribute binding, spatial relation, negation; Kang et al.,
"Is CLIP ideal?", ICCV 2025). A probe scores 1 when the true caption has the highest cosine with
the image; when ``t`` captions tie for the highest score and the true one is among them it scores
``1/t`` (the expected accuracy of a random tie-break), so a model that cannot tell the captions
apart, e.g. one that ignores word order on a word-order probe, scores exactly chance,
``1/(k+1)`` (a collapsed model too: never more). The pick compared with a teacher's is -1 on such
a tie, and a -1 pick never agrees (:mod:`lakd.eval.ties`). Metric names: clip_benchmark's ``acc``
(its ``image_caption_selection`` task), plus ``acc_<condition>``, ``chance`` and
``chance_<condition>``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from lakd.data.shapes import ShapesFolder, ShapesProbes
from lakd.errors import LakdError
from lakd.eval.ties import NO_PICK


@dataclass
class ProbeChoices:
    """Per probe item: ``score`` [N] (1, 0 or 1/t on ties), ``choice`` [N] the position of the
    top-scoring caption within the item's captions (0 = the true one; -1 when several captions share
    the highest score, so ties never count as teacher agreement), ``n_captions`` [N]."""

    score: torch.Tensor
    choice: torch.Tensor
    n_captions: torch.Tensor


def probe_choices(image: torch.Tensor, text: torch.Tensor, text_item: torch.Tensor) -> ProbeChoices:
    """Score probes: ``image`` [N, d]; ``text`` [M, d] all captions, each item's true caption first
    among its rows; ``text_item`` [M] each caption's image row. Every item needs >= 2 captions."""
    if image.shape[1] != text.shape[1]:
        raise LakdError(f"probes: image dim {image.shape[1]} differs from text dim {text.shape[1]}")
    text_item = text_item.to(image.device)
    sims = (F.normalize(image.float(), dim=-1)[text_item] * F.normalize(text.float(), dim=-1)).sum(dim=1)
    return score_choices(sims, text_item, image.shape[0])


def score_choices(scores: torch.Tensor, text_item: torch.Tensor, n: int) -> ProbeChoices:
    """Score probes from any per-caption score (the cosine, a learned head's score): ``scores`` [M]
    each caption's score against its own image, ``text_item`` [M] that image's row among ``n``,
    each item's true caption first among its rows. Every item needs >= 2 captions."""
    device = scores.device
    text_item = text_item.to(device)
    rows = torch.arange(scores.shape[0], device=device)
    n_captions = torch.zeros(n, dtype=torch.int64, device=device).index_add_(
        0, text_item, torch.ones_like(text_item)
    )
    if bool((n_captions < 2).any()):
        bad = int((n_captions < 2).sum())
        raise LakdError(f"probes: {bad} item(s) have fewer than 2 captions (a true one and a false one)")
    sims = scores.float()
    best = torch.full((n,), -torch.inf, device=device).scatter_reduce(0, text_item, sims, reduce="amax")
    first = torch.full((n,), scores.shape[0], device=device).scatter_reduce(
        0, text_item, rows, reduce="amin"
    )
    at_best = sims == best[text_item]
    n_tied = torch.zeros(n, device=device).index_add_(0, text_item, at_best.float())
    chosen = torch.full((n,), scores.shape[0], device=device).scatter_reduce(
        0, text_item, torch.where(at_best, rows, scores.shape[0]), reduce="amin"
    )
    true_wins = sims[first] == best
    score = torch.where(true_wins, 1.0 / n_tied, torch.zeros_like(n_tied))
    choice = torch.where(n_tied > 1, NO_PICK, chosen - first)
    return ProbeChoices(score.cpu(), choice.cpu(), n_captions.cpu())


def probe_metrics(choices: ProbeChoices, conditions: list[str]) -> dict[str, float]:
    """``acc`` and ``chance`` overall and per condition (conditions in first-seen order)."""
    if len(conditions) != choices.score.shape[0]:
        raise LakdError(f"probes: {len(conditions)} conditions for {choices.score.shape[0]} items")
    chance = 1.0 / choices.n_captions.double()
    metrics = {"acc": float(choices.score.double().mean()), "chance": float(chance.mean())}
    for condition in dict.fromkeys(conditions):
        mask = torch.tensor([c == condition for c in conditions])
        metrics[f"acc_{condition}"] = float(choices.score[mask].double().mean())
        metrics[f"chance_{condition}"] = float(chance[mask].mean())
    return metrics


# ---- which items are probes: condition readers per data-source type --------------------------

ConditionReader = Callable[[Any], dict[str, str] | None]
CONDITION_READERS: dict[type, ConditionReader] = {}


def register_condition_reader(source_type: type) -> Callable[[ConditionReader], ConditionReader]:
    """Register ``reader(source) -> {item id: condition}`` (None: not a probe set) for a source type."""

    def deco(fn: ConditionReader) -> ConditionReader:
        CONDITION_READERS[source_type] = fn
        return fn

    return deco


@register_condition_reader(ShapesProbes)
def _shapes_probes(source: ShapesProbes) -> dict[str, str]:
    return {source.item_id(i): source.condition(i) for i in range(len(source))}


@register_condition_reader(ShapesFolder)
def _shapes_folder(source: ShapesFolder) -> dict[str, str] | None:
    if source.marker.get("kind") != "probes":
        return None
    return {record["id"]: record["condition"] for record in source.records if "condition" in record}


def probe_conditions(source: Any) -> dict[str, str] | None:
    """``{item id: probe condition}`` of a probe data source, None for any other source."""
    reader = CONDITION_READERS.get(type(source))
    return None if reader is None else reader(source)
