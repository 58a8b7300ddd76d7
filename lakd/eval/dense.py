"""Dense alignment: token-by-patch similarity maps and a learned head that scores them (DCSM).

Kang et al., "Is CLIP ideal? No. Can we fix it? Yes!" (ICCV 2025, arXiv 2503.08723) prove that one
cosine between pooled vectors cannot represent basic content, attribute binding, spatial relations
and negation together, and score an image-text pair instead from its dense cosine similarity map
(DCSM): the cosine of every image patch with every text token, read by a small CNN.

- :func:`~lakd.models.tokens.similarity_maps` / :func:`~lakd.models.tokens.pairwise_maps`
  (defined beside the token features, so the ``dense`` distillation loss shares them): the map
  S[p, t] = <patch_p, token_t> of unit token features, [P, L] per pair, zero at masked tokens.
- :class:`DenseHead`: the map as an image of L channels (one per token position) over the patch grid
  (gh x gw), two 3x3 convolutions of ``width`` channels with ReLU, an average pool to at most 4 x 4
  cells, then an MLP (``width * cells`` -> ``width`` -> 1): one score per pair.
- :func:`train_head`: the head trained on frozen token features of probe items (one true caption,
  hard-negative captions) with a symmetric contrastive loss over the batch (images x true captions;
  a caption of identical text is no negative) plus the cross-entropy of each item's true caption
  against its own hard negatives. Seeded: the same seed gives the same head.
- :func:`dense_probe_metrics`: probe accuracy per condition with the head's scores and with the
  pooled cosine (``lakd eval --task dense-probes``).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lakd.data import SourceOptions
from lakd.errors import LakdError
from lakd.eval.probes import probe_choices, probe_conditions, probe_metrics, score_choices
from lakd.models.tokens import pairwise_maps, similarity_maps

MAX_CELLS = 4  # the pooled grid is at most MAX_CELLS x MAX_CELLS


# ---- the head --------------------------------------------------------------------------------


class DenseHead(nn.Module):
    """Scores maps [K, P, L] -> [K] (module docstring). ``n_tokens`` = L, ``grid`` = (gh, gw) with
    gh * gw = P (raster order, as :func:`lakd.models.tokens.image_tokens` gives patches)."""

    def __init__(self, n_tokens: int, grid: tuple[int, int], width: int = 128):
        super().__init__()
        if n_tokens < 1 or width < 1 or min(grid) < 1:
            raise LakdError(f"dense head: n_tokens={n_tokens}, grid={grid}, width={width} must be positive")
        self.n_tokens, self.grid, self.width = int(n_tokens), (int(grid[0]), int(grid[1])), int(width)
        cells = (min(MAX_CELLS, self.grid[0]), min(MAX_CELLS, self.grid[1]))
        self.conv = nn.Sequential(
            nn.Conv2d(self.n_tokens, width, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, width, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(cells),
        )
        self.mlp = nn.Sequential(
            nn.Flatten(), nn.Linear(width * cells[0] * cells[1], width), nn.ReLU(), nn.Linear(width, 1)
        )

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        k, p, t = maps.shape
        if (p, t) != (self.grid[0] * self.grid[1], self.n_tokens):
            raise LakdError(
                f"dense head: maps of {p} patches x {t} tokens, the head reads "
                f"{self.grid[0] * self.grid[1]} x {self.n_tokens}"
            )
        image = maps.transpose(1, 2).reshape(k, t, *self.grid)
        return self.mlp(self.conv(image)).squeeze(-1)


# ---- training on probe items -----------------------------------------------------------------


@dataclass
class ProbeFeatures:
    """Frozen token features of probe items: ``patches`` [N, P, d]; ``text`` [M, L, d] and ``mask``
    [M, L] of all captions; ``text_item`` [M] each caption's item, its true caption first among its
    rows; ``captions`` (M) the texts (for identical-caption masking). ``grid``: the patch grid."""

    patches: torch.Tensor
    text: torch.Tensor
    mask: torch.Tensor
    text_item: torch.Tensor
    captions: list[str]
    grid: tuple[int, int]

    @classmethod
    def of(cls, tokens) -> ProbeFeatures:
        """From a :class:`lakd.models.tokens.TokenSet`."""
        return cls(tokens.patches, tokens.text, tokens.mask, tokens.text_item, tokens.captions, tokens.grid)

    def layout(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(true [N] each item's true caption row, negatives [N, k] its other rows, -1 padded)."""
        n, m = self.patches.shape[0], self.text.shape[0]
        counts = torch.bincount(self.text_item, minlength=n)
        if bool((counts < 2).any()):
            raise LakdError("dense head: every probe item needs a true caption and a false one")
        order = torch.argsort(self.text_item * m + torch.arange(m), stable=True)
        start = torch.cumsum(counts, 0) - counts
        true = order[start]
        k = int(counts.max()) - 1
        offsets = torch.arange(1, k + 1)
        slots = start[:, None] + offsets[None, :]
        valid = offsets[None, :] < counts[:, None]
        negatives = torch.where(valid, order[slots.clamp(max=m - 1)], torch.full_like(slots, -1))
        return true, negatives


def head_loss(head: DenseHead, features: ProbeFeatures, items: torch.Tensor, true, negatives) -> torch.Tensor:
    """The training loss of one batch of item rows ``items`` [B] (module docstring)."""
    patches = features.patches[items]
    rows = true[items]
    keys = [features.captions[int(r)] for r in rows]
    # in-batch: every image against every true caption; identical texts are not negatives
    b = items.shape[0]
    logits = head(pairwise_maps(patches, features.text[rows], features.mask[rows]).flatten(0, 1)).view(b, b)
    same = torch.tensor([[a == c for c in keys] for a in keys], device=logits.device)
    same.fill_diagonal_(False)
    logits = logits.masked_fill(same, -torch.inf)
    target = torch.arange(b, device=logits.device)
    contrastive = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
    # hard negatives: each image against its own true and false captions, the true one at column 0
    columns = torch.cat([rows[:, None], negatives[items]], dim=1)  # [B, 1 + k]
    valid = columns >= 0
    flat = columns.clamp(min=0).flatten()
    own = patches.repeat_interleave(columns.shape[1], dim=0)
    scores = head(similarity_maps(own, features.text[flat], features.mask[flat])).view(columns.shape)
    scores = scores.masked_fill(~valid, -torch.inf)
    hard = F.cross_entropy(scores, torch.zeros(b, dtype=torch.int64, device=scores.device))
    return contrastive + hard


def head_optimizer(head: DenseHead, lr: float) -> torch.optim.Optimizer:
    """AdamW over every parameter of the head."""
    return torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=0.0)


@dataclass
class DenseOptions:
    """The dense head of ``lakd eval --task dense-probes``: ``head_width`` hidden channels,
    ``head_steps`` optimiser steps of ``head_batch`` probe items at learning rate ``head_lr``, on
    the probe items of ``head_data`` (a probe set other than the evaluated one), ``head_seed`` for
    the head's initial weights and the order of its batches."""

    head_width: int = 128
    head_steps: int = 300
    head_batch: int = 16
    head_lr: float = 1e-3
    head_data: str = "shapes:probes?n=1000&seed=1"
    head_seed: int = 0

    def __post_init__(self) -> None:
        for name in ("head_width", "head_steps", "head_batch"):
            if getattr(self, name) < 1:
                raise LakdError(f"{name}: must be positive, got {getattr(self, name)}")
        if not self.head_lr > 0:
            raise LakdError(f"head_lr: must be positive, got {self.head_lr}")
        if self.head_seed < 0:
            raise LakdError(f"head_seed: must be >= 0, got {self.head_seed}")


@dataclass
class TrainedHead:
    head: DenseHead
    losses: list[float]


def train_head(features: ProbeFeatures, options: DenseOptions, device: str | torch.device = "cpu") -> TrainedHead:
    """Train a :class:`DenseHead` on frozen probe features; deterministic for a given ``head_seed``
    (the caller's random state is left as it was)."""
    true, negatives = features.layout()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(options.head_seed)
        head = DenseHead(features.text.shape[1], features.grid, options.head_width)
    head.to(device).train()
    features = dataclasses.replace(
        features,
        patches=features.patches.to(device),
        text=features.text.to(device),
        mask=features.mask.to(device),
    )
    true, negatives = true.to(device), negatives.to(device)
    optimizer = head_optimizer(head, options.head_lr)
    generator = torch.Generator().manual_seed(options.head_seed)
    n = features.patches.shape[0]
    batch = min(options.head_batch, n)
    order, losses = torch.randperm(n, generator=generator), []
    for step in range(options.head_steps):
        start = (step * batch) % n
        if start + batch > n:  # a new epoch: a new order
            order, start = torch.randperm(n, generator=generator), 0
        items = order[start : start + batch].to(device)
        loss = head_loss(head, features, items, true, negatives)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    return TrainedHead(head.eval(), losses)


@torch.no_grad()
def head_scores(head: DenseHead, features: ProbeFeatures, batch_size: int = 256) -> torch.Tensor:
    """[M] the head's score of every caption against its own image."""
    device = next(head.parameters()).device
    parts = []
    for start in range(0, features.text.shape[0], batch_size):
        rows = torch.arange(start, min(start + batch_size, features.text.shape[0]))
        maps = similarity_maps(
            features.patches[features.text_item[rows]].to(device),
            features.text[rows].to(device),
            features.mask[rows].to(device),
        )
        parts.append(head(maps).float().cpu())
    return torch.cat(parts)


def dense_probe_metrics(
    scores: torch.Tensor,
    text_item: torch.Tensor,
    conditions: list[str],
    image_pooled: torch.Tensor,
    text_pooled: torch.Tensor,
) -> dict[str, float]:
    """Probe ``acc``, ``acc_<condition>`` (and chance) from the head's ``scores``; the same
    accuracies from the pooled cosine as ``pooled_acc`` and ``pooled_acc_<condition>``."""
    dense = probe_metrics(score_choices(scores, text_item, len(conditions)), conditions)
    pooled = probe_metrics(probe_choices(image_pooled, text_pooled, text_item), conditions)
    return dense | {f"pooled_{key}": value for key, value in pooled.items() if key.startswith("acc")}


# ---- the evaluation task ---------------------------------------------------------------------


@dataclass
class DenseContext:
    """What ``dense-probes`` needs beyond the pooled embeddings: the model spec (and ``arch``), the
    evaluated ``data`` spec, where and how to run, the head's options."""

    model: str
    data: str
    options: DenseOptions
    arch: str | None = None
    device: str = "cpu"
    batch_size: int = 64
    source_options: SourceOptions = dataclasses.field(default_factory=SourceOptions)


def run_dense_probes(context: DenseContext) -> tuple[dict[str, float], dict]:
    """Metrics and details of ``dense-probes``: the model is loaded (and its towers checked) first,
    then the token features of the evaluated probes and of the head's training probes are computed
    once; the pooled cosine comes from the same forward (open_clip's pooled features)."""
    from lakd.data import open_source
    from lakd.models.encode import collate_source
    from lakd.models.factory import load_model
    from lakd.models.tokens import check_dense_model, encode_tokens

    options = context.options
    if options.head_data == context.data:
        raise LakdError(f"head_data: {options.head_data!r} is the evaluated data; train the head on other probes")
    sources = {}
    for name, spec in (("data", context.data), ("head_data", options.head_data)):
        sources[name] = open_source(spec, context.source_options)
        if probe_conditions(sources[name]) is None:
            raise LakdError(f"{name}: {spec!r} is not a probe set (use shapes:probes or a folder exported from it)")
    model, preprocess, tokenizer = load_model(context.model, device=context.device, arch=context.arch)
    check_dense_model(model)

    def tokens_of(source):
        batches = collate_source(source, preprocess, tokenizer, context.batch_size)
        return encode_tokens(model, batches, context.device)

    evaluated = tokens_of(sources["data"])
    by_id = probe_conditions(sources["data"])
    conditions = [by_id[i] for i in evaluated.ids]
    trained = train_head(ProbeFeatures.of(tokens_of(sources["head_data"])), options, context.device)
    scores = head_scores(trained.head, ProbeFeatures.of(evaluated))
    metrics = dense_probe_metrics(
        scores, evaluated.text_item, conditions, evaluated.image_pooled, evaluated.text_pooled
    )
    details = {
        "n_items": len(evaluated.ids),
        "n_per_condition": dict(Counter(conditions)),
        "head": {
            "width": options.head_width,
            "steps": options.head_steps,
            "batch": options.head_batch,
            "lr": options.head_lr,
            "seed": options.head_seed,
            "data": options.head_data,
            "n_train_items": len(sources["head_data"]),
            "loss_first": trained.losses[0],
            "loss_last": trained.losses[-1],
        },
        "grid": list(evaluated.grid),
        "n_tokens": evaluated.text.shape[1],
    }
    return metrics, details
