"""Map-style datasets of the shapes world, generated on the fly, and the ``shapes:`` data spec.

Item ``i`` of a split is a pure function of ``(seed, split, i)``: its random streams come from
``numpy.random.SeedSequence([seed, split code, i, stream])``, so items are random-access and the
splits (train, val, test, probes) draw from independent streams. Its id names all three
(``shapes-val-s0-000012``); a split holds at most :data:`MAX_N` items.
"""

from __future__ import annotations

import urllib.parse

import numpy as np

from lakd.data.base import Item, SourceOptions
from lakd.data.shapes.captions import Caption, describe_scene
from lakd.data.shapes.probes import MIN_OBJECTS, PROBE_CONDITIONS, ProbeCaptions, sample_probe
from lakd.data.shapes.world import MAX_OBJECTS, SHAPES, Scene, render_scene, sample_scene
from lakd.errors import LakdError

SPLITS: tuple[str, ...] = ("train", "val", "test", "probes")
DEFAULT_N: dict[str, int] = {"train": 10000, "val": 2000, "test": 2000, "probes": 1000}
WORLD_STREAM, PROBE_STREAM = 0, 1
MIN_IMAGE_SIZE = 16
# the most items a split may have: far beyond any run (10,000 train items take 5 s to draw), and
# small enough that nothing sized by n (a store's shard list, a progress bar) gets out of hand
MAX_N = 100_000_000
# zero-shot prompt templates in the world's own caption language (its captions never say "photo")
TEMPLATES: tuple[str, ...] = ("a {c}", "a small {c}", "a large {c}", "one {c}")


def item_id(split: str, seed: int, index: int) -> str:
    """The id of item ``index`` of ``split`` in the world of ``seed``: ``shapes-val-s0-000012``."""
    return f"shapes-{split}-s{seed}-{index:06d}"


def item_rngs(seed: int, split: str, index: int, stream: int) -> tuple[np.random.Generator, ...]:
    """Independent generators (scene, captions, rendering) for one item of one split."""
    root = np.random.SeedSequence([seed, SPLITS.index(split), index, stream])
    return tuple(np.random.default_rng(child) for child in root.spawn(3))


def check_options(split: str, n: int, seed: int, image_size: int, max_objects: int) -> None:
    """Raise LakdError naming the first option that is out of range."""
    if split not in SPLITS:
        raise LakdError(f"shapes world: split {split!r} is not one of {', '.join(SPLITS)}")
    for name, value, low, high in (
        ("n", n, 1, MAX_N),
        ("seed", seed, 0, 2**63 - 1),
        ("image_size", image_size, MIN_IMAGE_SIZE, 4096),
        ("max_objects", max_objects, 1, MAX_OBJECTS),
    ):
        if (
            isinstance(value, bool)
            or not isinstance(value, int | np.integer)
            or value < low
            or (high and value > high)
        ):
            allowed = f"an integer >= {low}" if high is None else f"an integer in {low}..{high}"
            raise LakdError(f"shapes world: {name}={value!r} is not valid (expected {allowed})")


class _Split:
    """Shared indexing, ids and classes of the on-the-fly datasets."""

    def __init__(self, split: str, n: int | None, seed: int, image_size: int, max_objects: int, noise: bool):
        n = DEFAULT_N.get(split, 1) if n is None else n
        check_options(split, n, seed, image_size, max_objects)
        self.split, self.n, self.seed = split, int(n), int(seed)
        self.image_size, self.max_objects, self.noise = int(image_size), int(max_objects), bool(noise)
        self.classnames: list[str] = list(SHAPES)
        self.templates: tuple[str, ...] = TEMPLATES

    def __len__(self) -> int:
        return self.n

    def _index(self, i: int) -> int:
        i = int(i)
        if not -self.n <= i < self.n:
            raise IndexError(f"index {i} out of range for {self.n} items")
        return i % self.n

    def item_id(self, i: int) -> str:
        """``shapes-val-s0-000012``: split, seed and index, so items of other seeds never share an id."""
        return item_id(self.split, self.seed, i)


class ShapesWorld(_Split):
    """Scenes with all their captions: ``Item(id, image, captions, label, meta)``.

    ``captions[0]`` is the primary caption (every object with its size); ``label`` indexes
    ``classnames`` (the shape of object 0); ``meta`` is the scene as a JSON-able dict plus
    ``caption_kinds`` (plain, binding, relation, count, negation) aligned with ``captions``.
    """

    def __init__(
        self,
        split: str = "train",
        n: int | None = None,
        seed: int = 0,
        image_size: int = 64,
        max_objects: int = MAX_OBJECTS,
        noise: bool = True,
    ):
        super().__init__(split, n, seed, image_size, max_objects, noise)

    def scene(self, i: int) -> tuple[Scene, list[Caption]]:
        """Scene and structured captions of item ``i``, without rendering."""
        return self._sample(self._index(i))[:2]

    def _sample(self, i: int) -> tuple[Scene, list[Caption], np.random.Generator]:
        scene_rng, caption_rng, render_rng = item_rngs(self.seed, self.split, i, WORLD_STREAM)
        scene = sample_scene(scene_rng, self.max_objects)
        return scene, describe_scene(scene, caption_rng), render_rng

    def __getitem__(self, i: int) -> Item:
        i = self._index(i)
        scene, captions, render_rng = self._sample(i)
        return Item(
            id=self.item_id(i),
            image=render_scene(scene, render_rng, self.image_size, self.noise),
            captions=[c.text() for c in captions],
            label=SHAPES.index(scene.objects[0].shape),
            meta={**scene.to_dict(), "caption_kinds": [c.kind for c in captions]},
        )


class ShapesProbes(_Split):
    """Probe ``i`` has condition ``PROBE_CONDITIONS[i % 4]`` (balanced), one true caption and ``k``
    false ones: ``Item.captions = [true, *false]``, ``meta`` = scene + ``condition`` + ``n_true`` (1)."""

    def __init__(
        self,
        split: str = "probes",
        n: int | None = None,
        seed: int = 0,
        k: int = 3,
        image_size: int = 64,
        max_objects: int = MAX_OBJECTS,
        noise: bool = True,
    ):
        super().__init__(split, n, seed, image_size, max_objects, noise)
        needed = max(MIN_OBJECTS.values())
        if self.max_objects < needed:
            raise LakdError(
                f"shapes probes: max_objects={max_objects} is too small (probes need >= {needed})"
            )
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise LakdError(f"shapes probes: k={k!r} is not valid (expected an integer >= 1)")
        self.k = int(k)
        for i in range(min(self.n, len(PROBE_CONDITIONS))):
            self.probe(i)  # fail now, not mid-run, when k is too large for a condition

    def condition(self, i: int) -> str:
        return PROBE_CONDITIONS[self._index(i) % len(PROBE_CONDITIONS)]

    def probe(self, i: int) -> tuple[Scene, ProbeCaptions]:
        """Scene and structured captions of probe ``i``, without rendering."""
        return self._sample(self._index(i))[:2]

    def _sample(self, i: int) -> tuple[Scene, ProbeCaptions, np.random.Generator]:
        scene_rng, _, render_rng = item_rngs(self.seed, self.split, i, PROBE_STREAM)
        scene, captions = sample_probe(scene_rng, self.condition(i), self.k, self.max_objects)
        return scene, captions, render_rng

    def __getitem__(self, i: int) -> Item:
        i = self._index(i)
        scene, captions, render_rng = self._sample(i)
        return Item(
            id=self.item_id(i),
            image=render_scene(scene, render_rng, self.image_size, self.noise),
            captions=[captions.true.text(), *(c.text() for c in captions.negatives)],
            label=SHAPES.index(scene.objects[0].shape),
            meta={**scene.to_dict(), "condition": captions.condition, "n_true": 1},
        )


SPEC_INTS = ("n", "seed", "image_size", "max_objects")
SPEC_BOOLS = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}


def open_shapes(rest: str, query: dict[str, str], options: SourceOptions) -> ShapesWorld | ShapesProbes:
    """``shapes:SPLIT?n=N&seed=S&image_size=64&max_objects=3&noise=1`` (probes also ``k=3``)."""
    spec = f"shapes:{rest}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
    if rest not in SPLITS:
        raise LakdError(f"{spec}: unknown split {rest!r} (allowed: {', '.join(SPLITS)})")
    ints = SPEC_INTS + (("k",) if rest == "probes" else ())
    kwargs: dict[str, int | bool] = {}
    for key, value in query.items():
        if key in ints:
            if not value.strip().lstrip("-").isdigit():
                raise LakdError(f"{spec}: option {key}={value!r} is not an integer")
            kwargs[key] = int(value)
        elif key == "noise":
            if value.lower() not in SPEC_BOOLS:
                raise LakdError(
                    f"{spec}: option noise={value!r} is not valid (allowed: {', '.join(SPEC_BOOLS)})"
                )
            kwargs[key] = SPEC_BOOLS[value.lower()]
        else:
            raise LakdError(f"{spec}: unknown option {key!r} (allowed: {', '.join((*ints, 'noise'))})")
    try:
        return ShapesProbes(rest, **kwargs) if rest == "probes" else ShapesWorld(rest, **kwargs)
    except LakdError as err:
        raise LakdError(f"{spec}: {err}") from None
