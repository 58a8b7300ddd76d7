"""Token features of open_clip models: image patch tokens and text tokens in the joint space.

open_clip pools a tower's last-layer tokens into one vector (the class token, or the mean of the
patch tokens, for images; the end-of-text token for text), applies the tower's final norm
(``ln_post`` / ``ln_final``) and its projection. Here the same norm and projection are applied to
every token, and each token is then L2-normalised, so a patch and a word can be compared by one
dot product, as the pooled vectors are. The pooled feature open_clip returns is kept beside the
tokens (raw, as ``encode_image`` / ``encode_text`` give it); for a class-token or end-of-text pool
it is exactly the projected token at the pooled position.

Supported towers: open_clip's ``VisionTransformer`` (class-token or average pool, without an
attentional pooler) and its text transformer (the ``CLIP`` class or a ``TextTransformer`` of
``CustomTextCLIP``, without an appended class token). Any other tower (timm, ResNet, Hugging Face
text) is a one-line :class:`LakdError` naming the model: it has no patch tokens to project.

The text mask marks the tokenizer's tokens up to and including the end-of-text token (the pooled
position), from the token ids: never from whitespace, so a word split into several sub-word tokens
has several positions.

Maps (pure functions on token features, shared by ``lakd eval --task dense-probes`` and the
``dense`` distillation loss): :func:`similarity_maps` / :func:`pairwise_maps`, the cosine of every
patch with every text token, and :func:`resample_maps`, a map moved onto another patch grid.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from open_clip.transformer import TextTransformer, VisionTransformer, text_global_pool
from torch import nn

from lakd.errors import LakdError


@dataclass
class ImageTokens:
    """``patches`` [B, P, d] unit patch tokens in raster order over ``grid`` (gh, gw), P = gh * gw;
    ``pooled`` [B, d] the raw pooled feature (what ``model.encode_image`` returns)."""

    patches: torch.Tensor
    pooled: torch.Tensor
    grid: tuple[int, int]


@dataclass
class TextTokens:
    """``tokens`` [B, L, d] unit token features (zero where ``mask`` is False); ``mask``
    [B, L] bool, True from the start token through the end-of-text token; ``pooled_index`` [B] the
    position open_clip pools; ``pooled`` [B, d] the raw pooled feature (``model.encode_text``)."""

    tokens: torch.Tensor
    mask: torch.Tensor
    pooled_index: torch.Tensor
    pooled: torch.Tensor


def _name(model) -> str:
    return str(getattr(model, "lakd_spec", None) or type(model).__name__)


def vision_tower(model) -> VisionTransformer:
    """The model's ViT image tower; LakdError for a tower without patch tokens in the joint space."""
    visual = getattr(model, "visual", None)
    if not isinstance(visual, VisionTransformer):
        raise LakdError(
            f"{_name(model)}: dense features need a ViT image tower (open_clip VisionTransformer), "
            f"this one is {type(visual).__name__} (no patch tokens to project)"
        )
    if visual.attn_pool is not None or visual.pool_type not in ("tok", "avg"):
        raise LakdError(
            f"{_name(model)}: dense features need a class-token or average pool, this tower pools "
            f"with {'an attentional pooler' if visual.attn_pool is not None else repr(visual.pool_type)}"
        )
    return visual


def _project(x: torch.Tensor, projection) -> torch.Tensor:
    if projection is None:
        return x
    if isinstance(projection, nn.Linear):
        return projection(x)
    return x @ projection


def image_tokens(model, images: torch.Tensor) -> ImageTokens:
    """Patch tokens of ``images`` [B, 3, H, W] (preprocessed, on the model's device)."""
    visual = vision_tower(model)
    out = visual.forward_intermediates(
        images, indices=1, intermediates_only=True, output_fmt="NLC", output_extra_tokens=True
    )
    patches = out["image_intermediates"][-1]  # [B, P, width]: the last block, before ln_post
    cls = out["image_intermediates_prefix"][-1][:, 0]  # [B, width]: the class token
    projected = _project(visual.ln_post(patches), visual.proj)
    if visual.final_ln_after_pool:  # open_clip pools first, then normalises the pooled vector
        pooled = _project(visual.ln_post(cls if visual.pool_type == "tok" else patches.mean(dim=1)), visual.proj)
    elif visual.pool_type == "tok":
        pooled = _project(visual.ln_post(cls), visual.proj)
    else:  # the mean of the normalised patch tokens, projected: the mean of the projections
        pooled = projected.mean(dim=1)
    grid = (images.shape[-2] // visual.patch_size[0], images.shape[-1] // visual.patch_size[1])
    return ImageTokens(F.normalize(projected, dim=-1), pooled, grid)


def _text_tower(model):
    """(run: ids -> last-block tokens, final norm, projection, pool type, end-of-text id, pad id)."""
    text = getattr(model, "text", None)
    if isinstance(text, TextTransformer):
        if text.cls_emb is not None:
            raise LakdError(f"{_name(model)}: dense features do not support a text tower with an appended class token")

        def run(ids):
            return text.forward_intermediates(ids, indices=1, intermediates_only=True)["text_intermediates"][-1]

        return run, text.ln_final, text.text_projection, text.pool_type, text.eos_id, text.pad_id
    if text is None and all(hasattr(model, a) for a in ("token_embedding", "ln_final", "text_pool_type")):

        def run(ids):
            out = model.forward_intermediates(text=ids, text_indices=1, intermediates_only=True)
            return out["text_intermediates"][-1]

        return run, model.ln_final, model.text_projection, model.text_pool_type, getattr(model, "text_eos_id", None), 0
    raise LakdError(
        f"{_name(model)}: dense features need an open_clip text transformer, this text tower is "
        f"{type(text).__name__} (no token features to project)"
    )


def pooled_positions(ids: torch.Tensor, pool_type: str, eos_id: int | None) -> torch.Tensor:
    """The position open_clip pools in each row of token ids [B, L] (``text_global_pool``'s rule)."""
    if pool_type == "argmax":  # the end-of-text token has the highest id (open_clip's tokenizer)
        return ids.argmax(dim=-1)
    if pool_type == "eos":
        return (ids == eos_id).int().argmax(dim=-1)
    if pool_type == "first":
        return torch.zeros(ids.shape[0], dtype=torch.int64, device=ids.device)
    if pool_type == "last":
        return torch.full((ids.shape[0],), ids.shape[1] - 1, dtype=torch.int64, device=ids.device)
    raise LakdError(f"dense features: text pool type {pool_type!r} has no pooled token position")


def text_mask(ids: torch.Tensor, pool_type: str, eos_id: int | None, pad_id: int = 0) -> torch.Tensor:
    """[B, L] bool: the real tokens of each row of token ids. With an end-of-text pool (``argmax``,
    ``eos``) every position up to and including that token (so a word piece that shares the pad
    id, id 0 being "!" in CLIP's vocabulary, stays in); otherwise every position whose id is not
    ``pad_id``."""
    positions = torch.arange(ids.shape[1], device=ids.device)
    if pool_type in ("argmax", "eos"):
        return positions[None, :] <= pooled_positions(ids, pool_type, eos_id)[:, None]
    return ids != pad_id


def text_tokens(model, ids: torch.Tensor) -> TextTokens:
    """Token features of token ids [B, L] (from the model's tokenizer, on the model's device)."""
    run, ln_final, projection, pool_type, eos_id, pad_id = _text_tower(model)
    normed = ln_final(run(ids))  # [B, L, width]
    projected = _project(normed, projection)
    pooled = _project(text_global_pool(normed, ids, pool_type, eos_token_id=eos_id), projection)
    mask = text_mask(ids, pool_type, eos_id, pad_id)
    tokens = F.normalize(projected, dim=-1) * mask[..., None]
    return TextTokens(tokens, mask, pooled_positions(ids, pool_type, eos_id), pooled)


# ---- maps ------------------------------------------------------------------------------------


def similarity_maps(patches: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Paired maps: ``patches`` [K, P, d], ``tokens`` [K, L, d], ``mask`` [K, L] -> [K, P, L],
    S[k, p, t] = <patches[k, p], tokens[k, t]>, 0 where ``mask[k, t]`` is False."""
    if patches.shape[0] != tokens.shape[0] or patches.shape[-1] != tokens.shape[-1]:
        raise LakdError(f"dense maps: patches {tuple(patches.shape)} do not pair with tokens {tuple(tokens.shape)}")
    maps = torch.einsum("kpd,ktd->kpt", patches, tokens)
    return maps * mask[:, None, :].to(maps.dtype)


def pairwise_maps(patches: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Every image with every text: ``patches`` [N, P, d], ``tokens`` [M, L, d], ``mask`` [M, L]
    -> [N, M, P, L] (row n, column m: image n with text m)."""
    if patches.shape[-1] != tokens.shape[-1]:
        raise LakdError(f"dense maps: patch dim {patches.shape[-1]} differs from token dim {tokens.shape[-1]}")
    maps = torch.einsum("npd,mtd->nmpt", patches, tokens)
    return maps * mask[None, :, None, :].to(maps.dtype)


def resample_maps(maps: torch.Tensor, grid: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
    """Maps [K, P, L] over the patch grid ``grid`` (raster order, P = gh * gw) -> [K, P', L] over
    the grid ``size``: each token's map is an image of gh x gw values, resized by bilinear
    interpolation (half-pixel centres, ``align_corners=False``; antialiased when shrinking: the
    triangle filter widens with the scale, so every cell of the larger grid counts). Unchanged when
    the grids are equal."""
    k, p, t = maps.shape
    if p != grid[0] * grid[1]:
        raise LakdError(f"dense maps: {p} patches do not fill a {grid[0]} x {grid[1]} grid")
    if tuple(grid) == tuple(size):
        return maps
    image = maps.transpose(1, 2).reshape(k, t, *grid)
    shrinking = size[0] < grid[0] or size[1] < grid[1]
    image = F.interpolate(image, size=tuple(size), mode="bilinear", align_corners=False, antialias=shrinking)
    return image.reshape(k, t, size[0] * size[1]).transpose(1, 2)


def check_dense_model(model) -> None:
    """LakdError (one line, naming the model) unless both towers give token features."""
    vision_tower(model)
    _text_tower(model)


@dataclass
class TokenSet:
    """A data source's token features, in memory on CPU: ``patches`` [N, P, d] and ``image_pooled``
    [N, d] of the readable items, ``text`` [M, L, d], ``mask`` [M, L] and ``text_pooled`` [M, d] of
    all their captions, ``text_item`` [M] each caption's image row, ``grid`` the patch grid, ``ids``
    (N) and ``captions`` (M)."""

    patches: torch.Tensor
    image_pooled: torch.Tensor
    text: torch.Tensor
    mask: torch.Tensor
    text_pooled: torch.Tensor
    text_item: torch.Tensor
    grid: tuple[int, int]
    ids: list[str]
    captions: list[str]


@torch.no_grad()
def encode_tokens(model, batches: list, device) -> TokenSet:
    """Token features of collated batches (:func:`lakd.models.encode.collate_source`), float32 on CPU."""
    check_dense_model(model)
    parts: dict[str, list[torch.Tensor]] = {k: [] for k in ("patches", "image_pooled", "text", "mask", "text_pooled")}
    text_item, ids, captions, grid = [], [], [], None
    for batch in batches:
        if batch.images is not None:
            image = image_tokens(model, batch.images.to(device))
            parts["patches"].append(image.patches.float().cpu())
            parts["image_pooled"].append(image.pooled.float().cpu())
            grid = image.grid
        if batch.tokens is not None:
            text = text_tokens(model, batch.tokens.to(device))
            parts["text"].append(text.tokens.float().cpu())
            parts["mask"].append(text.mask.cpu())
            parts["text_pooled"].append(text.pooled.float().cpu())
        text_item += [len(ids) + row for row in batch.text_item]
        ids += batch.ids
        captions += batch.captions
    if grid is None or not parts["text"]:
        raise LakdError("dense features: no readable image with a caption in the data")
    return TokenSet(
        **{key: torch.cat(values) for key, values in parts.items()},
        text_item=torch.tensor(text_item, dtype=torch.int64),
        grid=grid,
        ids=ids,
        captions=captions,
    )
