"""What is true of each image, where the data knows: the shapes world.

On most data a caption is a positive for the one image it was written for, and an image's class is
its label (clip_benchmark's protocol). The shapes world knows every scene, so a generic caption
("three shapes", "one triangle") is a positive for every scene it is true of (the caption checker,
:func:`lakd.data.shapes.holds`, decides), and a zero-shot prediction is correct when the predicted
shape is in the scene. :func:`source_truth` returns that truth for the items of a source, or None
for sources that do not know it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from lakd.data.shapes import SHAPES, Scene, ShapesFolder, ShapesWorld, holds, parse_caption
from lakd.errors import LakdError

SHAPES_PROTOCOL = (
    "shapes world: a caption is a positive for every scene it is true of (caption checker); a "
    "zero-shot prediction is correct when the predicted shape is in the scene"
)


@dataclass
class Truth:
    """``captions`` [M, N] bool: caption j is true of image i; ``classes`` [N, C] bool: class c is
    true of image i; ``protocol`` says how they were decided."""

    captions: torch.Tensor
    classes: torch.Tensor
    protocol: str


ScenesReader = Callable[[Any, list[str]], list[Scene]]
SCENE_READERS: dict[type, ScenesReader] = {}


def register_scenes_reader(source_type: type) -> Callable[[ScenesReader], ScenesReader]:
    """Register ``reader(source, ids) -> scenes`` for a source type whose items are shapes-world scenes."""

    def deco(fn: ScenesReader) -> ScenesReader:
        SCENE_READERS[source_type] = fn
        return fn

    return deco


@register_scenes_reader(ShapesWorld)
def _world_scenes(source: ShapesWorld, ids: list[str]) -> list[Scene]:
    index = {source.item_id(i): i for i in range(len(source))}
    missing = [item_id for item_id in ids if item_id not in index]
    if missing:
        raise LakdError(f"shapes:{source.split}: no item {missing[0]!r} ({len(missing)} of {len(ids)} unknown)")
    return [source.scene(index[item_id])[0] for item_id in ids]


@register_scenes_reader(ShapesFolder)
def _folder_scenes(source: ShapesFolder, ids: list[str]) -> list[Scene]:
    records = {record["id"]: record for record in source.records}
    missing = [item_id for item_id in ids if item_id not in records]
    if missing:
        raise LakdError(f"{source.root}: no item {missing[0]!r} ({len(missing)} of {len(ids)} unknown)")
    return [Scene.from_dict(records[item_id]) for item_id in ids]


def scene_truth(scenes: list[Scene], captions: list[str], classnames: list[str]) -> Truth:
    """The truth of ``captions`` and ``classnames`` (shape names) for ``scenes`` (each caption parsed once)."""
    parsed = {text: parse_caption(text) for text in dict.fromkeys(captions)}
    true_of = {text: [holds(caption, scene) for scene in scenes] for text, caption in parsed.items()}
    caption_truth = torch.tensor([true_of[text] for text in captions], dtype=torch.bool).reshape(len(captions), len(scenes))
    shapes = [{obj.shape for obj in scene.objects} for scene in scenes]
    class_truth = torch.tensor([[name in present for name in classnames] for present in shapes], dtype=torch.bool)
    return Truth(caption_truth, class_truth.reshape(len(scenes), len(classnames)), SHAPES_PROTOCOL)


def source_truth(source: Any, ids: list[str], captions: list[str]) -> Truth | None:
    """The truth for the items ``ids`` (image rows) and ``captions`` (text rows) of ``source``, or None
    when the source does not know it (any data but the shapes world)."""
    reader = SCENE_READERS.get(type(source))
    if reader is None or list(getattr(source, "classnames", None) or []) != list(SHAPES):
        return None
    return scene_truth(reader(source, ids), captions, list(SHAPES))
