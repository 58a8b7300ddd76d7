"""Zero-shot classification: class-prompt classifier, top-1 / top-5 accuracy, mean per-class recall.

The classifier is open_clip's (``open_clip.build_zero_shot_classifier``, also clip_benchmark's):
each prompt embedding is L2-normalised, the prompts of a class are averaged, and the mean is
renormalised. Images are L2-normalised and classified by cosine similarity. Metric names follow
clip_benchmark: ``acc1``, ``acc5`` (NaN when there are fewer than 5 classes, as in clip_benchmark)
and ``mean_per_class_recall`` (scikit-learn's balanced accuracy).

Ties count against the model (:mod:`lakd.eval.ties`): an image is a top-k hit when fewer than k
other classes score >= its true class, and its top-1 prediction is -1 (no class, never correct)
when the highest score is shared, so a collapsed model scores 0, not the share of class 0.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from sklearn.metrics import balanced_accuracy_score

from lakd.data.store import ClassPrompts, EmbeddingStore, write_class_prompts
from lakd.errors import LakdError
from lakd.eval.templates import class_prompts_text
from lakd.eval.ties import pessimistic_rank, unique_top1
from lakd.models.encode import encode_texts
from lakd.models.factory import load_model

TOP_K = 5


def embed_class_prompts(
    model, tokenizer, classnames: list[str], templates: list[str], *, batch_size: int = 256, device="cpu"
) -> torch.Tensor:
    """Raw prompt embeddings [C, T, d] of ``templates[t].format(c=classnames[c])`` (float32, CPU)."""
    texts = class_prompts_text(classnames, templates)
    flat = encode_texts(model, tokenizer, texts, batch_size=batch_size, device=device)
    return flat.reshape(len(classnames), len(templates), -1)


def ensure_class_prompts(
    store: EmbeddingStore,
    templates: list[str],
    model: str,
    *,
    arch: str | None = None,
    batch_size: int = 256,
    device: str = "cpu",
) -> ClassPrompts:
    """The store's class prompts for ``templates``, embedded with ``model`` and written beside the store
    unless ones with the same class names and templates are already there."""
    classnames = store.meta.get("classnames")
    if not classnames:
        raise LakdError(f"{store.path}: the data has no class names, so there are no class prompts")
    try:
        prompts = store.class_prompts()
    except LakdError:
        prompts = None  # a damaged cache file is rebuilt below
    if prompts is not None and prompts.classnames == classnames and prompts.templates == list(templates):
        return prompts
    net, _, tokenizer = load_model(model, device=device, arch=arch)
    embeddings = embed_class_prompts(
        net, tokenizer, classnames, list(templates), batch_size=batch_size, device=device
    )
    prompts = ClassPrompts(embeddings, list(classnames), list(templates), model)
    write_class_prompts(store.path, prompts)
    return prompts


def zeroshot_classifier(prompts: torch.Tensor) -> torch.Tensor:
    """Class weights [C, d] from raw prompt embeddings [C, T, d]: mean of normalised prompts, renormalised."""
    return F.normalize(F.normalize(prompts.float(), dim=-1).mean(dim=1), dim=-1)


@dataclass
class ZeroShotResult:
    """``metrics`` (clip_benchmark names), ``predictions`` [n] top-1 class of each labelled image
    (-1 on a tie) and ``n_items`` / ``n_classes`` / ``notes`` describing what was measured."""

    metrics: dict[str, float]
    predictions: torch.Tensor
    n_items: int
    n_classes: int
    notes: list[str]


def zeroshot_logits(image: torch.Tensor, classifier: torch.Tensor) -> torch.Tensor:
    """Cosine similarities [N, C] of ``image`` [N, d] to the class weights ``classifier`` [C, d]."""
    return F.normalize(image.float(), dim=-1) @ classifier.to(image.device).T


def zeroshot_predictions(image: torch.Tensor, classifier: torch.Tensor) -> torch.Tensor:
    """Top-1 class [N] of each image, -1 where the highest score is shared by several classes."""
    return unique_top1(zeroshot_logits(image, classifier))


def zeroshot_metrics(
    image: torch.Tensor, classifier: torch.Tensor, labels: torch.Tensor, truth: torch.Tensor | None = None
) -> ZeroShotResult:
    """Top-1, top-5 and mean per-class recall of ``image`` [N, d] under ``classifier`` [C, d].

    ``labels`` [N] int64 indexes the classes; -1 marks an unlabelled image (left out). ``truth``
    [N, C] bool (default: the label's class only) marks every class whose prediction counts as correct
    for an image (:mod:`lakd.eval.truth`); per-class recall groups images by their label.
    """
    n_classes = classifier.shape[0]
    labelled = labels >= 0
    if not bool(labelled.any()):
        raise LakdError("zero-shot classification: no image has a class label")
    if int(labels.max()) >= n_classes:
        raise LakdError(f"zero-shot classification: label {int(labels.max())} but only {n_classes} classes")
    if image.shape[1] != classifier.shape[1]:
        raise LakdError(
            f"zero-shot classification: image dim {image.shape[1]} differs from class-prompt dim {classifier.shape[1]}"
        )
    target = labels[labelled].to(image.device)
    logits = zeroshot_logits(image[labelled], classifier)
    positive = F.one_hot(target, n_classes).bool()
    if truth is not None:
        positive = truth.to(image.device)[labelled] | positive
    rank = pessimistic_rank(logits, positive)
    notes = []
    if n_classes >= TOP_K:
        acc5 = float((rank <= TOP_K).double().mean())
    else:
        acc5 = math.nan
        notes.append(f"acc5 is null: only {n_classes} classes (fewer than {TOP_K})")
    pred = unique_top1(logits).cpu()
    if truth is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "y_pred contains classes not in y_true"
            recall = float(balanced_accuracy_score(target.cpu().numpy(), pred.numpy()))
    else:  # mean over label classes of the share of their images whose top-1 is true of them
        hit = (rank == 1).cpu().double()
        target_cpu = target.cpu()
        recall = float(torch.stack([hit[target_cpu == c].mean() for c in target_cpu.unique()]).mean())
    metrics = {"acc1": float((rank == 1).double().mean()), "acc5": acc5, "mean_per_class_recall": recall}
    n_unlabelled = int((~labelled).sum())
    if n_unlabelled:
        notes.append(f"{n_unlabelled} unlabelled image(s) left out")
    return ZeroShotResult(metrics, pred, int(labelled.sum()), n_classes, notes)
