"""Compositional probes with hard negatives, after the four conditions of Kang et al.,
"Is CLIP ideal? No. Can we fix it? Yes!" (ICCV 2025): basic content, attribute binding, spatial
relation and negation.

Each probe is one scene, one true caption and ``k`` distinct false captions that differ from the
true one only in the probed aspect. Every negative is checked with
:func:`~lakd.data.shapes.captions.clearly_false`, so it is false even under a lenient reading.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from lakd.data.shapes.captions import (
    OPPOSITE,
    RELATIONS,
    Caption,
    Conjunction,
    Ref,
    Relation,
    clear_relations,
    clearly_false,
    holds,
)
from lakd.data.shapes.world import COLOURS, SHAPES, Scene, sample_scene
from lakd.errors import LakdError

ProbeBuilder = Callable[[Scene, np.random.Generator], tuple[Caption, list[Caption]] | None]
MAX_SCENE_TRIES = 200


@dataclass(frozen=True)
class ProbeCaptions:
    """The true caption and the false ones for one probe scene."""

    condition: str
    true: Caption
    negatives: tuple[Caption, ...]


def _basic(scene: Scene, rng: np.random.Generator) -> tuple[Caption, list[Caption]]:
    """True "a red circle"; false: the same colour with another shape, or the same shape in another colour."""
    obj = scene.objects[0]
    candidates = [Ref(s, obj.colour) for s in SHAPES if s != obj.shape]
    candidates += [Ref(obj.shape, c) for c in COLOURS if c != obj.colour]
    return Conjunction.of(Ref.of(obj)), [
        Conjunction.of(candidates[i]) for i in rng.permutation(len(candidates))
    ]


def _binding(scene: Scene, rng: np.random.Generator) -> tuple[Caption, list[Caption]] | None:
    """True "a red circle and a blue square"; false: colours swapped between the two, then other misbindings
    that use only colours present in the scene."""
    a, b = scene.objects[:2]
    if a.colour == b.colour or a.shape == b.shape:
        return None
    colours = sorted({o.colour for o in scene.objects})
    others = [(ca, cb) for ca in colours for cb in colours if {ca, cb} != {a.colour, b.colour}]
    pairs = [(b.colour, a.colour)] + [others[i] for i in rng.permutation(len(others))]
    true = Conjunction.of(Ref.of(a), Ref.of(b))
    return true, [Conjunction.of(Ref(a.shape, ca), Ref(b.shape, cb)) for ca, cb in pairs]


def _spatial(scene: Scene, rng: np.random.Generator) -> tuple[Caption, list[Caption]] | None:
    """True "a red circle left of a blue square"; false: the opposite relation, swapped arguments, the
    perpendicular relations, then relations between other pairs."""
    relations = clear_relations(scene)
    if not relations:
        return None
    true = relations[int(rng.integers(len(relations)))]
    s, r, a = true.subject, true.relation, true.anchor
    perpendicular = [p for p in RELATIONS if p not in (r, OPPOSITE[r])]
    candidates = [Relation(s, OPPOSITE[r], a), Relation(a, r, s)]
    candidates += [Relation(s, p, a) for p in perpendicular] + [Relation(a, p, s) for p in perpendicular]
    refs = [Ref.of(o) for o in scene.objects]
    candidates += [Relation(x, p, y) for x in refs for y in refs if x != y for p in RELATIONS]
    return true, candidates


def _negation(scene: Scene, rng: np.random.Generator) -> tuple[Caption, list[Caption]]:
    """True "a red circle and no square"; false: "no" dropped, "no" added, both, then "no" on other
    present objects."""
    obj = scene.objects[0]
    present = Ref.of(obj)
    absent_shapes = [Ref(s) for s in SHAPES if all(o.shape != s for o in scene.objects)]
    absent_pairs = [
        Ref(o.shape, c)
        for o in scene.objects
        for c in COLOURS
        if not any(Ref(o.shape, c).matches(p) for p in scene.objects)
    ]
    pool = absent_shapes if rng.random() < 0.5 else absent_pairs
    absent = pool[int(rng.integers(len(pool)))]
    candidates = [
        Conjunction(((True, present), (True, absent))),
        Conjunction(((False, present), (False, absent))),
        Conjunction(((False, present), (True, absent))),
    ]
    for other in scene.objects[1:]:
        candidates += [
            Conjunction(((True, present), (False, Ref.of(other)))),
            Conjunction(((False, Ref.of(other)), (False, absent))),
        ]
    return Conjunction(((True, present), (False, absent))), candidates


PROBE_BUILDERS: dict[str, ProbeBuilder] = {
    "basic": _basic,
    "binding": _binding,
    "spatial": _spatial,
    "negation": _negation,
}
PROBE_CONDITIONS: tuple[str, ...] = tuple(PROBE_BUILDERS)
MIN_OBJECTS = {"basic": 1, "binding": 2, "spatial": 2, "negation": 1}


def pick_negatives(
    true: Caption, candidates: Iterable[Caption], scene: Scene, k: int
) -> tuple[Caption, ...] | None:
    """The first ``k`` candidates that are clearly false and textually distinct (None if too few)."""
    seen = {true.text()}
    chosen: list[Caption] = []
    for caption in candidates:
        text = caption.text()
        if text not in seen and clearly_false(caption, scene):
            seen.add(text)
            chosen.append(caption)
            if len(chosen) == k:
                return tuple(chosen)
    return None


def sample_probe(
    rng: np.random.Generator, condition: str, k: int, max_objects: int
) -> tuple[Scene, ProbeCaptions]:
    """Draw scenes until one supports ``condition`` with ``k`` hard negatives."""
    builder = PROBE_BUILDERS[condition]
    for _ in range(MAX_SCENE_TRIES):
        scene = sample_scene(rng, max_objects, min_objects=MIN_OBJECTS[condition])
        built = builder(scene, rng)
        if built is None:
            continue
        true, candidates = built
        negatives = pick_negatives(true, candidates, scene, k)
        if negatives is not None and holds(true, scene):
            return scene, ProbeCaptions(condition, true, negatives)
    raise LakdError(
        f"shapes probes: k={k} is too large for condition {condition!r} "
        f"(no scene with {k} false captions in {MAX_SCENE_TRIES} tries)"
    )
