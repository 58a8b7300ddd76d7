"""The shapes world's truth in evaluation: a caption is a positive for every scene it is true of,
and a zero-shot prediction counts when the predicted shape is in the scene."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lakd.data import open_source
from lakd.data.shapes import SHAPES, Obj, Scene, holds
from lakd.eval.retrieval import retrieval_metrics, retrieval_ranks
from lakd.eval.truth import scene_truth, source_truth
from lakd.eval.zeroshot import zeroshot_metrics

RED_CIRCLE = Obj("circle", "red", "small", 0.2, 0.2)
BLUE_SQUARE = Obj("square", "blue", "large", 0.7, 0.7)
GREEN_STAR = Obj("star", "green", "small", 0.2, 0.8)
SCENES = [Scene((RED_CIRCLE,)), Scene((BLUE_SQUARE, RED_CIRCLE)), Scene((GREEN_STAR, BLUE_SQUARE, RED_CIRCLE))]


def test_scene_truth_follows_the_checker():
    captions = ["a red circle", "two shapes", "a blue square", "three shapes", "a green star and no circle"]
    truth = scene_truth(SCENES, captions, list(SHAPES))
    expected = [[holds(c, s) for s in SCENES] for c in captions]
    assert truth.captions.tolist() == expected
    assert truth.captions.tolist()[0] == [True, True, True] and truth.captions.tolist()[3] == [False, False, True]
    assert truth.classes[:, SHAPES.index("circle")].tolist() == [True, True, True]
    assert truth.classes[2].sum() == 3 and truth.classes[0].sum() == 1


def test_generic_caption_counts_for_every_scene_it_is_true_of():
    # captions 0..2 are each scene's own; caption 3, "a red circle", is true of all three scenes
    captions = ["one circle", "two shapes", "three shapes", "a red circle"]
    text_item = torch.tensor([0, 1, 2, 0])
    texts = F.normalize(torch.randn(4, 8, generator=torch.Generator().manual_seed(0)), dim=-1)
    images = texts[[3, 3, 3]] + 0.01 * torch.arange(3.0)[:, None]  # every image closest to "a red circle"
    plain = retrieval_metrics(retrieval_ranks(images, texts, text_item))
    truth = scene_truth(SCENES, captions, list(SHAPES))
    counted = retrieval_metrics(retrieval_ranks(images, texts, text_item, truth=truth.captions))
    assert plain["text_retrieval_recall@1"] == 1 / 3  # only image 0 owns "a red circle"
    assert counted["text_retrieval_recall@1"] == 1.0  # it is true of all three


def test_zeroshot_counts_any_shape_in_the_scene():
    classifier = F.normalize(torch.eye(len(SHAPES), 8), dim=-1)
    circle, square = SHAPES.index("circle"), SHAPES.index("square")
    image = classifier[[circle, circle, circle]]  # always predicts "circle"
    labels = torch.tensor([circle, square, SHAPES.index("star")])  # primary objects
    truth = scene_truth(SCENES, [], list(SHAPES)).classes
    assert zeroshot_metrics(image, classifier, labels).metrics["acc1"] == 1 / 3
    counted = zeroshot_metrics(image, classifier, labels, truth).metrics
    assert counted["acc1"] == 1.0 and counted["mean_per_class_recall"] == 1.0


def test_source_truth_only_where_the_data_knows(tmp_path):
    world = open_source("shapes:val?n=6")
    items = [world[i] for i in range(6)]
    ids = [item.id for item in items]
    captions = [c for item in items for c in item.captions]
    truth = source_truth(world, ids, captions)
    assert truth.captions.shape == (len(captions), 6) and truth.classes.shape == (6, len(SHAPES))
    own = torch.tensor([i for i, item in enumerate(items) for _ in item.captions])
    assert truth.captions[torch.arange(len(captions)), own].all()  # every caption is true of its own scene
    csv = tmp_path / "c.csv"
    csv.write_text("filepath,title\na.png,x\n")
    assert source_truth(open_source(str(csv)), ["a.png"], ["x"]) is None
