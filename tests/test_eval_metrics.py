"""Evaluation metrics on hand-built embeddings with known answers: retrieval, zero-shot, probes."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch

from lakd.data.shapes import ShapesWorld, export_shapes
from lakd.data.sources import open_source
from lakd.errors import LakdError
from lakd.eval.inputs import EvalInputs
from lakd.eval.probes import probe_choices, probe_conditions, probe_metrics
from lakd.eval.retrieval import retrieval_metrics, retrieval_ranks
from lakd.eval.tasks import agreement, run_retrieval
from lakd.eval.ties import text_keys
from lakd.eval.zeroshot import (
    embed_class_prompts,
    zeroshot_classifier,
    zeroshot_metrics,
    zeroshot_predictions,
)
from lakd.models import load_model


def unit(degrees: float) -> list[float]:
    """A 2-d unit vector at an angle: cosine similarity falls with the angle between two of them."""
    return [math.cos(math.radians(degrees)), math.sin(math.radians(degrees))]


# ---- retrieval ---------------------------------------------------------------------------------


def test_perfect_retrieval_has_recall_one_and_rank_one():
    basis = torch.linalg.qr(torch.randn(16, 16, generator=torch.Generator().manual_seed(0)))[0][:10]
    ranks = retrieval_ranks(basis * 3.0, basis * 0.5, torch.arange(10))
    metrics = retrieval_metrics(ranks)
    assert metrics and all(value == 1.0 for value in metrics.values()), metrics  # recalls and ranks
    assert torch.equal(ranks.image_to_text_top1, torch.arange(10))


# Images A, B, C at 0, 100 and 200 degrees. A has two captions: a poor one first (120 deg, closer to
# B) and a good one second (10 deg); B's caption at 140 deg, C's at 250 deg.
IMAGES = torch.tensor([unit(0), unit(100), unit(200)])
TEXTS = torch.tensor([unit(120), unit(10), unit(140), unit(250)])
TEXT_ITEM = torch.tensor([0, 0, 1, 2])


def test_known_arrangement_gives_known_ranks_and_picks():
    ranks = retrieval_ranks(IMAGES, TEXTS, TEXT_ITEM)
    # text -> image: t0's own image A is the farthest of three; the others find their image first
    assert ranks.text_to_image.tolist() == [3, 1, 1, 1]
    assert ranks.text_to_image_top1.tolist() == [1, 0, 1, 2]
    # image -> text: A's best caption is its second one (rank 1); B sees A's poor caption first
    assert ranks.image_to_text.tolist() == [1, 2, 1]
    assert ranks.image_to_text_top1.tolist() == [1, 0, 3]
    metrics = retrieval_metrics(ranks)
    assert metrics["image_retrieval_recall@1"] == pytest.approx(0.75)
    assert metrics["image_retrieval_recall@5"] == 1.0
    assert metrics["text_retrieval_recall@1"] == pytest.approx(2 / 3)
    assert metrics["text_retrieval_mean_rank"] == pytest.approx(4 / 3)
    assert metrics["text_retrieval_median_rank"] == 1.0
    assert metrics["image_retrieval_mean_rank"] == pytest.approx(1.5)


def test_every_caption_counts_as_a_positive():
    """With only A's first caption, a negative (C's caption, 110 deg from A) would beat it (120 deg)."""
    first_only = retrieval_ranks(IMAGES, TEXTS[[0, 2, 3]], torch.tensor([0, 1, 2]))
    assert first_only.image_to_text[0] == 2
    assert retrieval_ranks(IMAGES, TEXTS, TEXT_ITEM).image_to_text[0] == 1


def test_a_known_permutation_of_captions_gives_known_ranks():
    """Captions shuffled against their images: caption j describes image perm[j] exactly. Swapped
    images are 10 degrees apart and far from the rest, so the own image comes second."""
    angles = [0, 40, 50, 120, 180, 240, 300, 310]
    images = torch.tensor([unit(a) for a in angles])
    perm = [0, 2, 1, 3, 4, 5, 7, 6]
    ranks = retrieval_ranks(images, images[perm], torch.arange(8))
    expected = [1 if perm[j] == j else 2 for j in range(8)]
    assert ranks.text_to_image.tolist() == expected
    assert ranks.image_to_text.tolist() == expected  # a swap is symmetric
    assert ranks.text_to_image_top1.tolist() == perm
    assert ranks.image_to_text_top1.tolist() == perm
    metrics = retrieval_metrics(ranks)
    assert metrics["image_retrieval_recall@1"] == metrics["text_retrieval_recall@1"] == 0.5
    assert metrics["image_retrieval_mean_rank"] == 1.5 and metrics["image_retrieval_median_rank"] == 1.5


def reference_ranks(image, text, text_item):
    """Brute force: sort every row of the full similarity matrix, positives last among equal scores
    (the pessimistic tie rule), and take the position of the first positive."""
    img = torch.nn.functional.normalize(image, dim=-1)
    txt = torch.nn.functional.normalize(text, dim=-1)
    sims = (img @ txt.T).numpy()
    items = text_item.numpy()
    i2t = []
    for i in range(len(img)):
        order = np.lexsort((items == i, -sims[i]))  # by score, then non-positives first
        positive = (items == i)[order]
        if positive.any():
            i2t.append(int(np.argmax(positive)) + 1)
    t2i = []
    for j in range(len(txt)):
        own = np.arange(len(img)) == items[j]
        t2i.append(int(np.argmax(own[np.lexsort((own, -sims[:, j]))])) + 1)
    return i2t, t2i


def random_embeddings(seed):
    g = torch.Generator().manual_seed(seed)
    image = torch.randn(30, 12, generator=g)
    text_item = torch.randint(0, 30, (70,), generator=g)  # some images get no caption, some several
    text = image[text_item] + 1.5 * torch.randn(70, 12, generator=g)
    return image, text, text_item


def tied_embeddings(seed):
    """One-hot embeddings in 3 directions: cosines are exactly 0 or 1, so most scores tie."""
    g = torch.Generator().manual_seed(seed)
    eye = torch.eye(4)
    text_item = torch.randint(0, 20, (40,), generator=g)
    return (
        eye[torch.randint(0, 3, (20,), generator=g)],
        eye[torch.randint(0, 3, (40,), generator=g)],
        text_item,
    )


@pytest.mark.parametrize("make", [random_embeddings, tied_embeddings])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ranks_match_a_brute_force_reference(make, seed):
    image, text, text_item = make(seed)
    ranks = retrieval_ranks(image, text, text_item, chunk_size=7)
    i2t, t2i = reference_ranks(image, text, text_item)
    assert ranks.image_to_text.tolist() == i2t
    assert ranks.text_to_image.tolist() == t2i
    assert ranks.images_with_captions.tolist() == sorted(set(text_item.tolist()))


def test_retrieval_bad_input():
    with pytest.raises(LakdError, match="no captions"):
        retrieval_ranks(IMAGES, torch.empty(0, 2), torch.empty(0, dtype=torch.int64))
    with pytest.raises(LakdError, match="dim"):
        retrieval_ranks(IMAGES, torch.randn(4, 3), TEXT_ITEM)


def test_teacher_agreement_counts_equal_picks():
    assert agreement(torch.tensor([1, 0, 3, 2]), torch.tensor([1, 0, 3, 2])) == 1.0
    assert agreement(torch.tensor([1, 0, 3, 2]), torch.tensor([1, 2, 3, 0])) == 0.5
    assert agreement(torch.tensor([-1, -1, 3, 2]), torch.tensor([-1, 0, 3, 2])) == 0.5  # a tie never agrees


# ---- ties count against the model ------------------------------------------------------------------


def test_collapsed_embeddings_get_the_worst_ranks_and_no_picks():
    """Every score equal: each image's best caption ranks behind all 18 other captions, each
    caption's image behind all 9 other images, and no top-1 pick exists."""
    ranks = retrieval_ranks(torch.ones(10, 4), torch.ones(20, 4), torch.arange(20) % 10)
    assert ranks.image_to_text.tolist() == [19] * 10
    assert ranks.text_to_image.tolist() == [10] * 20
    assert ranks.image_to_text_top1.tolist() == [-1] * 10
    assert ranks.text_to_image_top1.tolist() == [-1] * 20
    metrics = retrieval_metrics(ranks)
    for k in (1, 5, 10):
        assert metrics[f"text_retrieval_recall@{k}"] == 0.0
    assert metrics["image_retrieval_recall@1"] == metrics["image_retrieval_recall@5"] == 0.0
    assert metrics["image_retrieval_recall@10"] == 1.0  # 10 images: every one is within the top 10
    assert metrics["text_retrieval_mean_rank"] == metrics["text_retrieval_median_rank"] == 19.0
    assert metrics["image_retrieval_mean_rank"] == metrics["image_retrieval_median_rank"] == 10.0
    assert agreement(ranks.image_to_text_top1, ranks.image_to_text_top1) == 0.0


# Images A=A'=e0 (a duplicate), C=e1, D=e2, E=e3; captions t0=e0 (A), t1=e1 (A'), t2=e1 (C), t3=e2 (D),
# t4=e0 (D), t5=e3 (E). t1 and t2 have the same text; t0 and t4 have different texts.
TIED_IMAGES = torch.eye(4)[[0, 0, 1, 2, 3]]
TIED_TEXTS = torch.eye(4)[[0, 1, 1, 2, 0, 3]]
TIED_TEXT_ITEM = torch.tensor([0, 1, 2, 3, 3, 4])
TIED_CAPTIONS = ["a dog", "a cat", "a cat", "a bird", "a puppy", "a fish"]


def test_partial_ties_give_hand_computed_pessimistic_ranks():
    ranks = retrieval_ranks(TIED_IMAGES, TIED_TEXTS, TIED_TEXT_ITEM, text_key=text_keys(TIED_CAPTIONS))
    # image -> text: A ties with D's t4; A' (score 0) trails t0, t4 and ties t2, t3, t5; C ties with
    # A''s t1; D's t3 and E's t5 are ahead of everything else
    assert ranks.image_to_text.tolist() == [2, 6, 2, 1, 1]
    # text -> image: t0 ties A with A'; t1 (score 0 with A') trails C, ties A, D, E; t4 likewise for D
    assert ranks.text_to_image.tolist() == [2, 5, 1, 1, 5, 1]
    # picks: A and A' tie t0 with t4 (two texts): none; C's tie t1/t2 is one text (key: its first caption)
    assert ranks.image_to_text_top1.tolist() == [-1, -1, 1, 3, 5]
    assert ranks.text_to_image_top1.tolist() == [-1, 2, 2, 3, -1, 4]
    metrics = retrieval_metrics(ranks)
    assert metrics["text_retrieval_recall@1"] == pytest.approx(2 / 5)
    assert metrics["image_retrieval_recall@1"] == pytest.approx(3 / 6)
    assert metrics["text_retrieval_mean_rank"] == pytest.approx(12 / 5)
    assert metrics["image_retrieval_mean_rank"] == pytest.approx(15 / 6)
    # without caption texts every caption is its own candidate: tied captions leave no pick
    plain = retrieval_ranks(TIED_IMAGES, TIED_TEXTS, TIED_TEXT_ITEM)
    assert plain.image_to_text_top1.tolist() == [-1, -1, -1, 3, 5]
    assert torch.equal(plain.image_to_text, ranks.image_to_text)


def retrieval_inputs(image, text, text_item, captions):
    return EvalInputs(
        model="m",
        source="s",
        path=Path("store"),
        image=image,
        text=text,
        text_item=text_item,
        ids=[str(i) for i in range(image.shape[0])],
        captions=captions,
        labels=None,
        classnames=None,
        class_prompts=None,
        conditions=None,
    )


def test_retrieval_teacher_agreement_ignores_ties_but_not_identical_captions():
    model = retrieval_inputs(TIED_IMAGES, TIED_TEXTS, TIED_TEXT_ITEM, TIED_CAPTIONS)
    itself = run_retrieval(model, model).metrics
    # the model agrees with itself wherever it has a pick: 3 of 5 images, 4 of 6 captions
    assert itself["teacher_agreement_text_retrieval"] == pytest.approx(3 / 5)
    assert itself["teacher_agreement_image_retrieval"] == pytest.approx(4 / 6)
    collapsed = retrieval_inputs(torch.ones(5, 4), torch.ones(6, 4), TIED_TEXT_ITEM, TIED_CAPTIONS)
    for teacher in (collapsed, model):
        metrics = run_retrieval(collapsed, teacher).metrics
        assert metrics["teacher_agreement_text_retrieval"] == 0.0
        assert metrics["teacher_agreement_image_retrieval"] == 0.0
    other = retrieval_inputs(TIED_IMAGES, TIED_TEXTS, TIED_TEXT_ITEM, ["x"] * 6)
    with pytest.raises(LakdError, match="teacher's captions differ"):
        run_retrieval(model, other)


# ---- zero-shot -----------------------------------------------------------------------------------


def test_classifier_averages_normalised_prompts():
    prompts = torch.tensor([[[3.0, 0.0], [0.0, 0.5]], [[-1.0, 0.0], [-2.0, 0.0]]])  # 2 classes x 2 templates
    weights = zeroshot_classifier(prompts)
    assert torch.allclose(weights[0], torch.tensor([1.0, 1.0]) / math.sqrt(2))
    assert torch.allclose(weights[1], torch.tensor([-1.0, 0.0]))


def test_classifier_matches_open_clip_zero_shot_classifier():
    model, _, tokenizer = load_model("lakd:tiny-vit")
    classnames, templates = ["circle", "red square", "star"], ["a {c}.", "a photo of a {c}."]
    ours = zeroshot_classifier(embed_class_prompts(model, tokenizer, classnames, templates))
    theirs = open_clip.build_zero_shot_classifier(
        model, tokenizer, classnames, [lambda c, t=t: t.format(c=c) for t in templates], device="cpu"
    )
    assert torch.allclose(ours, theirs.T, atol=1e-5)


def test_zeroshot_metrics_with_known_answers():
    eye = torch.eye(6)
    labels = torch.tensor([0, 0, 1, 2, 3, 5])
    images = torch.stack(
        [
            eye[0],  # correct
            eye[1] + 0.5 * eye[0],  # predicts 1, true class 0 is second: a top-5 hit only
            eye[1],  # correct
            eye[2],  # correct
            eye[3],  # correct
            -eye[5],  # class 5 scores lowest of six: outside the top 5
        ]
    )
    result = zeroshot_metrics(images, eye, labels)
    assert result.metrics["acc1"] == pytest.approx(4 / 6)
    assert result.metrics["acc5"] == pytest.approx(5 / 6)
    # recall per class present: 0 -> 1/2, 1 -> 1, 2 -> 1, 3 -> 1, 5 -> 0
    assert result.metrics["mean_per_class_recall"] == pytest.approx(0.7)
    assert result.predictions.tolist()[:5] == [0, 1, 1, 2, 3]
    assert result.notes == []


def test_zeroshot_fewer_than_five_classes_has_nan_top5_and_skips_unlabelled():
    eye = torch.eye(3)
    result = zeroshot_metrics(eye[[0, 1, 2, 2]], eye, torch.tensor([0, 1, 1, -1]))
    assert result.metrics["acc1"] == pytest.approx(2 / 3)
    assert math.isnan(result.metrics["acc5"])
    assert result.n_items == 3
    assert any("acc5 is null" in note for note in result.notes)
    assert any("1 unlabelled" in note for note in result.notes)


def test_zeroshot_ties_count_against_the_model():
    """Six classes. Image 0 ties its true class with one other (rank 2: a top-5 hit, not top-1);
    image 1 scores every class the same (rank 6: no hit); image 2 is right."""
    eye = torch.eye(6)
    images = torch.stack([eye[0] + eye[1], torch.ones(6), eye[2]])
    labels = torch.tensor([1, 3, 2])
    result = zeroshot_metrics(images, eye, labels)
    assert result.predictions.tolist() == [-1, -1, 2]
    assert result.metrics["acc1"] == pytest.approx(1 / 3)
    assert result.metrics["acc5"] == pytest.approx(2 / 3)
    assert result.metrics["mean_per_class_recall"] == pytest.approx(1 / 3)
    collapsed = zeroshot_metrics(torch.ones(12, 4), torch.ones(6, 4), torch.arange(12) % 6)
    assert collapsed.metrics == {"acc1": 0.0, "acc5": 0.0, "mean_per_class_recall": 0.0}
    teacher = zeroshot_predictions(torch.ones(12, 4), zeroshot_classifier(torch.ones(6, 1, 4)))
    assert teacher.tolist() == [-1] * 12
    assert agreement(collapsed.predictions, teacher) == 0.0


def test_zeroshot_bad_labels():
    eye = torch.eye(3)
    with pytest.raises(LakdError, match="no image has a class label"):
        zeroshot_metrics(eye, eye, torch.tensor([-1, -1, -1]))
    with pytest.raises(LakdError, match="label 7"):
        zeroshot_metrics(eye, eye, torch.tensor([0, 1, 7]))
    with pytest.raises(LakdError, match="dim"):
        zeroshot_metrics(torch.randn(3, 4), eye, torch.tensor([0, 1, 2]))


# ---- compositional probes -------------------------------------------------------------------------


class BagOfWords:
    """A text encoder that ignores word order: a caption is the count vector of its words."""

    def __init__(self):
        self.vocab: dict[str, int] = {}

    def __call__(self, captions: list[str]) -> torch.Tensor:
        rows = []
        for caption in captions:
            for word in caption.split():
                self.vocab.setdefault(word, len(self.vocab))
            rows.append([w for w in caption.split()])
        out = torch.zeros(len(captions), 64)
        for r, words in enumerate(rows):
            for word in words:
                out[r, self.vocab[word]] += 1
        return out


def bag_of_words_probe(groups: list[list[str]]):
    """Probe embeddings with a bag-of-words text encoder and an image encoder that sees exactly the
    true caption's content (its bag of words)."""
    encode = BagOfWords()
    captions = [caption for group in groups for caption in group]
    text = encode(captions)
    text_item = torch.tensor([i for i, group in enumerate(groups) for _ in group])
    image = encode([group[0] for group in groups])
    return image, text, text_item


def test_word_order_blind_model_is_at_chance_on_binding_and_relation_probes():
    groups = [
        ["a red circle", "a blue circle", "a red square"],
        [
            "a red circle and a blue square",
            "a blue circle and a red square",
            "a blue square and a red circle",
        ],
        ["a red circle left of a blue square", "a blue square left of a red circle"],
        ["a green star above a cyan cross", "a cyan cross above a green star"],
    ]
    conditions = ["basic", "binding", "spatial", "spatial"]
    choices = probe_choices(*bag_of_words_probe(groups))
    metrics = probe_metrics(choices, conditions)
    assert metrics["acc_basic"] == 1.0
    assert metrics["acc_binding"] == pytest.approx(1 / 3) == pytest.approx(metrics["chance_binding"])
    assert metrics["acc_spatial"] == pytest.approx(0.5) == pytest.approx(metrics["chance_spatial"])
    assert metrics["acc"] == pytest.approx((1 + 1 / 3 + 0.5 + 0.5) / 4)
    assert metrics["chance"] == pytest.approx((1 / 3 + 1 / 3 + 0.5 + 0.5) / 4)
    assert choices.choice.tolist() == [0, -1, -1, -1]  # tied captions leave no pick


def test_word_order_blind_model_on_shapes_binding_probes():
    probes = open_source("shapes:probes?n=16&k=1")
    items = [probes[i] for i in range(len(probes))]
    choices = probe_choices(*bag_of_words_probe([item.captions for item in items]))
    metrics = probe_metrics(choices, [item.meta["condition"] for item in items])
    assert metrics["acc_binding"] == pytest.approx(0.5) == metrics["chance_binding"]  # colours swapped
    assert metrics["acc_basic"] == 1.0  # a different word is visible to a bag of words


def test_collapsed_probes_score_chance_and_never_agree():
    choices = probe_choices(torch.ones(3, 4), torch.ones(9, 4), torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2]))
    assert choices.score.tolist() == pytest.approx([1 / 3] * 3)  # chance, never a perfect score
    assert choices.choice.tolist() == [-1, -1, -1]
    assert agreement(choices.choice, choices.choice) == 0.0


def test_probe_choices_position_and_errors():
    image = torch.tensor([unit(0), unit(90)])
    text = torch.tensor([unit(50), unit(5), unit(80), unit(20)])
    choices = probe_choices(image, text, torch.tensor([0, 0, 1, 1]))
    assert choices.choice.tolist() == [1, 0] and choices.score.tolist() == [0.0, 1.0]
    with pytest.raises(LakdError, match="fewer than 2 captions"):
        probe_choices(image, text[:3], torch.tensor([0, 0, 1]))
    with pytest.raises(LakdError, match="conditions"):
        probe_metrics(choices, ["basic"])


def test_probe_conditions_come_only_from_probe_sets():
    probes = open_source("shapes:probes?n=8")
    conditions = probe_conditions(probes)
    assert conditions[probes.item_id(1)] == probes[1].meta["condition"] == "binding"
    assert sorted(set(conditions.values())) == ["basic", "binding", "negation", "spatial"]
    assert probe_conditions(ShapesWorld("val", n=4)) is None
    assert probe_conditions(object()) is None


def test_probe_conditions_of_exported_folders(tmp_path):
    probes = export_shapes(tmp_path / "probes", split="probes", n=4, image_size=16, progress=False)
    folder = open_source(str(probes))
    assert list(probe_conditions(folder).values()) == ["basic", "binding", "spatial", "negation"]
    world = export_shapes(tmp_path / "val", split="val", n=2, image_size=16, progress=False)
    assert probe_conditions(open_source(str(world))) is None
