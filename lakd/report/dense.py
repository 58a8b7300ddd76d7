"""Example token-by-patch similarity maps of the report's teacher and first student, for the
``dense_maps`` figure: one shapes-world probe pair (an image and its true caption) per condition.

Computed in :func:`lakd.report.build.assemble` only when both entries are models (not embedding
stores) with ViT image towers and open_clip text transformers (:mod:`lakd.models.tokens`);
otherwise :class:`DenseExamples` holds no maps and says why, and the figure is skipped. Each model
reads the pair through its own preprocessing and tokenizer; the map is the same
:func:`lakd.models.tokens.similarity_maps` that ``dense-probes`` and the ``dense`` loss use.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from lakd.errors import LakdError
from lakd.report.inputs import ModelInput

PROBES = "shapes:probes?n=8&seed=0"  # the first item of each condition is shown


@dataclass
class DenseMap:
    """One model's map of one pair: ``values`` [n_tokens, P] (real tokens only, patches in raster
    order over ``grid``), ``tokens`` the token strings."""

    model: str
    condition: str
    caption: str
    tokens: list[str]
    grid: tuple[int, int]
    values: np.ndarray


@dataclass
class DenseExamples:
    """The maps (teacher and student per condition, in condition order) or, when empty, ``reason``."""

    maps: list[DenseMap] = field(default_factory=list)
    reason: str = ""


def _token_text(tokenizer, token: int) -> str:
    decode = getattr(tokenizer, "decode", None)
    text = decode([token]).strip() if decode is not None else str(token)
    return {"<start_of_text>": "<start>", "<end_of_text>": "<end>"}.get(text, text)


@torch.no_grad()
def dense_examples(inputs: list[ModelInput], device: str = "cpu") -> DenseExamples:
    """Maps of the first two entries (reference and first other model) on one probe pair per condition."""
    from lakd.data import open_source
    from lakd.data.sources import source_ids
    from lakd.eval.probes import probe_conditions
    from lakd.models import load_model
    from lakd.models.tokens import check_dense_model, image_tokens, similarity_maps, text_tokens

    if len(inputs) < 2:
        return DenseExamples(reason="needs a teacher and a student")
    pair = inputs[:2]
    stores = [entry.name for entry in pair if entry.kind != "model"]
    if stores:
        return DenseExamples(reason=f"needs the models themselves; {', '.join(stores)} given as embeddings")
    models = []
    for entry in pair:
        model, preprocess, tokenizer = load_model(entry.spec, device=device)
        try:
            check_dense_model(model)
        except LakdError as err:
            return DenseExamples(reason=f"{entry.name}: {err}")
        models.append((entry.name, model, preprocess, tokenizer))
    source = open_source(PROBES)
    conditions = probe_conditions(source)
    first: dict[str, int] = {}
    for index, item_id in enumerate(source_ids(source) or [source[i].id for i in range(len(source))]):
        first.setdefault(conditions[item_id], index)
    maps = []
    for condition, index in first.items():
        item = source[index]
        caption = item.captions[0]  # the true caption
        for name, model, preprocess, tokenizer in models:
            image = preprocess(item.image.convert("RGB"))[None].to(device)
            ids = tokenizer([caption]).to(device)
            patches, text = image_tokens(model, image), text_tokens(model, ids)
            values = similarity_maps(patches.patches, text.tokens, text.mask)[0]  # [P, L]
            n = int(text.mask[0].sum())
            tokens = [_token_text(tokenizer, int(t)) for t in ids[0, :n].tolist()]
            maps.append(DenseMap(name, condition, caption, tokens, patches.grid, values[:, :n].T.float().cpu().numpy()))
    return DenseExamples(maps)
