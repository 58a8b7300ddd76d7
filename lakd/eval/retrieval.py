"""Image-text retrieval with every caption of an image counted as a positive.

The standard multi-caption protocol (CLIP, clip_benchmark): text -> image ("image retrieval") has
one positive image per caption; image -> text ("text retrieval") counts a hit when any of the
image's captions is retrieved. Similarities are cosines; the score matrix is built in chunks of rows.

Ranks are 1-based and ties count against the model (:mod:`lakd.eval.ties`): for image -> text, the
rank of the image's best positive caption is 1 + the number of NON-positive captions scoring >= that
caption; for text -> image, 1 + the number of other images scoring >= the caption's own image. So a
collapsed model (every score equal) gets the worst ranks, not perfect recall: with N images and M
captions each image ranks M - (its captions) + 1 and each caption ranks N. Top-1 picks are -1 when
the highest score is shared (with ``text_key``, captions of identical text count as one), so ties never count
as teacher agreement.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from lakd.errors import LakdError
from lakd.eval.ties import pessimistic_rank, unique_top1

RECALL_KS: tuple[int, ...] = (1, 5, 10)


@dataclass
class RetrievalRanks:
    """Ranks and top-1 picks of both directions.

    ``image_to_text`` [N'] rank of the best positive caption of each image that has captions
    (``images_with_captions`` [N'] their rows); ``text_to_image`` [M] rank of each caption's image;
    ``image_to_text_top1`` [N'] and ``text_to_image_top1`` [M] the top-scoring caption (its key, see
    :func:`retrieval_ranks`) / image, -1 where the highest score is shared.
    """

    image_to_text: torch.Tensor
    text_to_image: torch.Tensor
    image_to_text_top1: torch.Tensor
    text_to_image_top1: torch.Tensor
    images_with_captions: torch.Tensor


def retrieval_ranks(
    image: torch.Tensor,
    text: torch.Tensor,
    text_item: torch.Tensor,
    chunk_size: int = 1024,
    text_key: torch.Tensor | None = None,
    truth: torch.Tensor | None = None,
) -> RetrievalRanks:
    """Ranks of ``image`` [N, d] against ``text`` [M, d]; ``text_item`` [M] is each caption's image row.

    ``text_key`` [M] (default: every caption its own row) names the captions for top-1 picks; captions
    of identical text share one (:func:`~lakd.eval.ties.text_keys`), so their tie leaves one pick.
    ``truth`` [M, N] bool (default: caption j is a positive of image ``text_item[j]`` only) marks
    every caption-image pair that counts as a positive (:mod:`lakd.eval.truth`).
    """
    if image.shape[1] != text.shape[1]:
        raise LakdError(f"retrieval: image dim {image.shape[1]} differs from text dim {text.shape[1]}")
    if text.shape[0] == 0:
        raise LakdError("retrieval: the data has no captions")
    images = F.normalize(image.float(), dim=-1)
    texts = F.normalize(text.float(), dim=-1)
    text_item = text_item.to(images.device)
    n_images = images.shape[0]
    if truth is not None:
        truth = truth.to(images.device)
        if tuple(truth.shape) != (texts.shape[0], n_images):
            raise LakdError(f"retrieval: truth of shape {tuple(truth.shape)} for {texts.shape[0]} captions x {n_images} images")
    has_caption = torch.zeros(n_images, dtype=torch.bool, device=images.device)
    has_caption[text_item] = True
    rows = torch.nonzero(has_caption).squeeze(1)

    t2i_rank, t2i_top1 = [], []
    for start in range(0, texts.shape[0], chunk_size):
        scores = texts[start : start + chunk_size] @ images.T  # [c, N]
        own = (
            truth[start : start + chunk_size]
            if truth is not None
            else F.one_hot(text_item[start : start + chunk_size], n_images).bool()
        )
        t2i_rank.append(pessimistic_rank(scores, own))
        t2i_top1.append(unique_top1(scores))

    i2t_rank, i2t_top1 = [], []
    for start in range(0, rows.shape[0], chunk_size):
        chunk = rows[start : start + chunk_size]
        scores = images[chunk] @ texts.T  # [c, M]
        positive = truth[:, chunk].T if truth is not None else text_item[None, :] == chunk[:, None]
        i2t_rank.append(pessimistic_rank(scores, positive))
        i2t_top1.append(unique_top1(scores, text_key))

    return RetrievalRanks(
        image_to_text=torch.cat(i2t_rank).cpu(),
        text_to_image=torch.cat(t2i_rank).cpu(),
        image_to_text_top1=torch.cat(i2t_top1).cpu(),
        text_to_image_top1=torch.cat(t2i_top1).cpu(),
        images_with_captions=rows.cpu(),
    )


def retrieval_metrics(ranks: RetrievalRanks, ks: tuple[int, ...] = RECALL_KS) -> dict[str, float]:
    """clip_benchmark's ``image_retrieval_recall@k`` (text -> image) and ``text_retrieval_recall@k``
    (image -> text) for each k, plus mean and median ranks of both directions."""
    metrics: dict[str, float] = {}
    directions = {"image_retrieval": ranks.text_to_image, "text_retrieval": ranks.image_to_text}
    for name, rank in directions.items():
        for k in ks:
            metrics[f"{name}_recall@{k}"] = float((rank <= k).double().mean())
    for name, rank in directions.items():
        metrics[f"{name}_mean_rank"] = float(rank.double().mean())
        metrics[f"{name}_median_rank"] = float(np.median(rank.numpy()))
    return metrics
