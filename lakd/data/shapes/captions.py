"""Captions of shapes-world scenes: a structured form, its text, a parser and a truth checker.

Three caption forms cover every template:

* :class:`Conjunction` - clauses joined by "and": "a red circle" (plain), "a red circle and a blue
  square" (binding), "a red circle and no square" (negation). Present clauses name distinct objects;
  absent clauses ("no square") match no object.
* :class:`Relation` - "a red circle left of a blue square"; holds when some matching pair has centres
  more than ``margin`` apart along the relation's axis.
* :class:`Count` - "two circles", "three shapes": exactly that many matching objects.

:func:`holds` checks a caption (structured or text) against a scene; :func:`clearly_false` checks
that it is false even when relations are read leniently (used for hard negatives).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from itertools import permutations

import numpy as np

from lakd.data.shapes.world import COLOURS, PLURALS, SHAPES, SIZES, Obj, Scene
from lakd.errors import LakdError

RELATION_MARGIN = 0.15  # centres must differ by more than this (image side = 1) for a relation to be stated
RELATIONS: dict[str, Callable[[Obj, Obj], float]] = {  # positive when "a <relation> b" holds
    "left of": lambda a, b: b.x - a.x,
    "right of": lambda a, b: a.x - b.x,
    "above": lambda a, b: b.y - a.y,
    "below": lambda a, b: a.y - b.y,
}
OPPOSITE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six")


@dataclass(frozen=True)
class Ref:
    """Describes an object by any of shape, colour and size; ``None`` leaves that attribute open."""

    shape: str | None = None
    colour: str | None = None
    size: str | None = None

    @classmethod
    def of(cls, obj: Obj, size: bool = False) -> Ref:
        return cls(obj.shape, obj.colour, obj.size if size else None)

    def matches(self, obj: Obj) -> bool:
        return (
            (self.shape is None or self.shape == obj.shape)
            and (self.colour is None or self.colour == obj.colour)
            and (self.size is None or self.size == obj.size)
        )

    def words(self, plural: bool = False) -> str:
        noun = self.shape or "shape"
        noun = (PLURALS.get(noun) or "shapes") if plural else noun
        return " ".join(w for w in (self.size, self.colour, noun) if w)

    def with_article(self) -> str:
        words = self.words()
        return f"{'an' if words[0] in 'aeiou' else 'a'} {words}"


@dataclass(frozen=True)
class Conjunction:
    """Clauses ``(present, ref)``: "a red circle", "a red circle and a blue square", "... and no square"."""

    clauses: tuple[tuple[bool, Ref], ...]

    @classmethod
    def of(cls, *refs: Ref, absent: tuple[Ref, ...] = ()) -> Conjunction:
        return cls(tuple((True, r) for r in refs) + tuple((False, r) for r in absent))

    @property
    def kind(self) -> str:
        if not all(present for present, _ in self.clauses):
            return "negation"
        return "binding" if len(self.clauses) > 1 else "plain"

    def text(self) -> str:
        parts = [ref.with_article() if present else f"no {ref.words()}" for present, ref in self.clauses]
        return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]

    def holds(self, scene: Scene, margin: float = RELATION_MARGIN) -> bool:
        present = [ref for is_present, ref in self.clauses if is_present]
        absent = [ref for is_present, ref in self.clauses if not is_present]
        objects = scene.objects
        if any(ref.matches(o) for ref in absent for o in objects):
            return False
        if len(present) > len(objects) or not all(any(ref.matches(o) for o in objects) for ref in present):
            return False  # the common case, decided without trying assignments
        return any(
            all(ref.matches(o) for ref, o in zip(present, chosen, strict=True))
            for chosen in permutations(objects, len(present))
        )


@dataclass(frozen=True)
class Relation:
    """``subject relation anchor`` with relation in RELATIONS: "a red circle left of a blue square"."""

    subject: Ref
    relation: str
    anchor: Ref

    kind = "relation"

    def text(self) -> str:
        return f"{self.subject.with_article()} {self.relation} {self.anchor.with_article()}"

    def holds(self, scene: Scene, margin: float = RELATION_MARGIN) -> bool:
        offset = RELATIONS[self.relation]
        return any(
            self.subject.matches(a) and self.anchor.matches(b) and offset(a, b) > margin
            for a, b in permutations(scene.objects, 2)
        )


@dataclass(frozen=True)
class Count:
    """Exactly ``number`` objects match ``ref``: "two circles", "three shapes", "one red shape"."""

    number: int
    ref: Ref

    kind = "count"

    def text(self) -> str:
        return f"{NUMBER_WORDS[self.number]} {self.ref.words(plural=self.number != 1)}"

    def holds(self, scene: Scene, margin: float = RELATION_MARGIN) -> bool:
        return sum(self.ref.matches(o) for o in scene.objects) == self.number


Caption = Conjunction | Relation | Count


def holds(caption: Caption | str, scene: Scene, margin: float = RELATION_MARGIN) -> bool:
    """True when every claim of ``caption`` (structured or text) is true of ``scene``."""
    if isinstance(caption, str):
        caption = parse_caption(caption)
    return caption.holds(scene, margin)


def clearly_false(caption: Caption | str, scene: Scene) -> bool:
    """False even when relations are read leniently (centres may be up to the margin the wrong way)."""
    return not holds(caption, scene, margin=-RELATION_MARGIN)


def clear_relations(scene: Scene, margin: float = RELATION_MARGIN) -> list[Relation]:
    """Every relation between two objects (named by colour and shape) that holds with ``margin``."""
    return [
        Relation(Ref.of(a), name, Ref.of(b))
        for a, b in permutations(scene.objects, 2)
        for name, offset in RELATIONS.items()
        if offset(a, b) > margin
    ]


def describe_scene(scene: Scene, rng: np.random.Generator) -> list[Caption]:
    """The captions of a scene, primary first; every one is true of the scene.

    primary (all objects with sizes), plain (object 0), binding (all objects, shuffled), one spatial
    relation (when a clear one exists), counts (all objects; object 0's shape) and a negation
    (object 0 and a shape that is absent).
    """
    objs = scene.objects
    captions: list[Caption] = [
        Conjunction.of(*(Ref.of(o, size=True) for o in objs)),
        Conjunction.of(Ref.of(objs[0])),
    ]
    if len(objs) > 1:
        captions.append(Conjunction.of(*(Ref.of(objs[i]) for i in rng.permutation(len(objs)))))
        relations = clear_relations(scene)
        if relations:
            captions.append(relations[int(rng.integers(len(relations)))])
    captions.append(Count(len(objs), Ref()))
    if len(objs) > 1:
        captions.append(Count(sum(o.shape == objs[0].shape for o in objs), Ref(objs[0].shape)))
    absent = [s for s in SHAPES if all(o.shape != s for o in objs)]
    captions.append(Conjunction.of(Ref.of(objs[0]), absent=(Ref(absent[int(rng.integers(len(absent)))]),)))
    return captions


_RELATION_RE = re.compile(r"^(an? .+?) (" + "|".join(RELATIONS) + r") (an? .+)$")
_SINGULAR = {plural: shape for shape, plural in PLURALS.items()} | {"shapes": None}


def parse_caption(text: str) -> Caption:
    """Parse a caption written by :meth:`text` back into its structured form (LakdError if it is not one)."""
    words = text.split()
    if words and words[0] in NUMBER_WORDS:
        number = NUMBER_WORDS.index(words[0])
        noun = words[-1]
        if number != 1 and noun not in _SINGULAR:
            raise LakdError(f"caption {text!r}: expected a plural shape noun after {words[0]!r}")
        singular = (_SINGULAR[noun] or "shape") if number != 1 else noun
        return Count(number, _parse_ref(" ".join([*words[1:-1], singular]), text))
    match = _RELATION_RE.match(text)
    if match:
        subject, relation, anchor = match.groups()
        return Relation(
            _parse_ref(subject.split(" ", 1)[1], text), relation, _parse_ref(anchor.split(" ", 1)[1], text)
        )
    clauses = []
    for clause in re.split(r", | and ", text):
        article, _, rest = clause.partition(" ")
        if article not in ("a", "an", "no"):
            raise LakdError(f"caption {text!r}: clause {clause!r} does not start with 'a', 'an' or 'no'")
        clauses.append((article != "no", _parse_ref(rest, text)))
    return Conjunction(tuple(clauses))


def _parse_ref(phrase: str, text: str) -> Ref:
    """Parse "large red circle" to Ref("circle", "red", "large"); the noun "shape" leaves the shape open."""
    *modifiers, noun = phrase.split() or [""]
    if noun != "shape" and noun not in SHAPES:
        raise LakdError(
            f"caption {text!r}: {noun!r} is not a shape (expected one of {', '.join(SHAPES)} or 'shape')"
        )
    size = modifiers.pop(0) if modifiers and modifiers[0] in SIZES else None
    colour = modifiers.pop(0) if modifiers and modifiers[0] in COLOURS else None
    if modifiers:
        raise LakdError(f"caption {text!r}: unexpected words {' '.join(modifiers)!r} in {phrase!r}")
    return Ref(None if noun == "shape" else noun, colour, size)
