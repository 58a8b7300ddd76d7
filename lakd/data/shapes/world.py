"""Scenes of the shapes world: vocabulary, seeded sampling and rendering.

A scene is 1-3 non-overlapping objects, each with a shape, a named colour, a size and a centre
``(x, y)`` in normalised image coordinates (0..1, ``y`` grows downwards). Object 0 is the
primary object: it is drawn last, so it is never occluded. Everything is a pure function of a
``numpy.random.Generator``, so an item depends only on ``(seed, split, index)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image, ImageDraw

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 40, 40),
    "orange": (240, 140, 20),
    "yellow": (235, 215, 40),
    "green": (40, 165, 60),
    "cyan": (30, 200, 210),
    "blue": (40, 90, 220),
    "purple": (145, 60, 190),
}
SIZES: dict[str, float] = {"small": 0.10, "large": 0.16}  # radius of the bounding circle / image side
PLURALS: dict[str, str] = {
    "circle": "circles",
    "square": "squares",
    "triangle": "triangles",
    "star": "stars",
    "cross": "crosses",
    "diamond": "diamonds",
    "hexagon": "hexagons",
}
SHAPES: tuple[str, ...] = tuple(PLURALS)
MAX_OBJECTS = 3
SUPERSAMPLE = 4  # shapes are drawn at 4x and box-downsampled: cheap anti-aliasing
GAP = 0.02  # minimum free space between the bounding circles of two objects


@dataclass(frozen=True)
class Obj:
    """One object: ``shape`` in SHAPES, ``colour`` in COLOURS, ``size`` in SIZES, centre ``(x, y)``."""

    shape: str
    colour: str
    size: str
    x: float
    y: float

    @property
    def radius(self) -> float:
        return SIZES[self.size]


@dataclass(frozen=True)
class Scene:
    """An ordered tuple of objects; ``objects[0]`` is the primary object."""

    objects: tuple[Obj, ...]

    def to_dict(self) -> dict:
        return {"objects": [asdict(o) for o in self.objects]}

    @classmethod
    def from_dict(cls, data: dict) -> Scene:
        return cls(tuple(Obj(**o) for o in data["objects"]))


def sample_scene(rng: np.random.Generator, max_objects: int = MAX_OBJECTS, min_objects: int = 1) -> Scene:
    """Draw min..max_objects objects: distinct (colour, shape) pairs, non-overlapping bounding circles."""
    n = int(rng.integers(min_objects, max_objects + 1))
    combos = rng.choice(len(SHAPES) * len(COLOURS), size=n, replace=False)
    kinds = [(SHAPES[c % len(SHAPES)], list(COLOURS)[c // len(SHAPES)]) for c in combos]
    sizes = [list(SIZES)[s] for s in rng.integers(0, len(SIZES), size=n)]
    for _ in range(1000):  # three large objects fit easily: a layout succeeds within a few tries
        objects = _place(rng, kinds, sizes)
        if objects is not None:
            return Scene(tuple(objects))
    raise RuntimeError(f"could not place {n} objects without overlap")


def _place(rng: np.random.Generator, kinds: list[tuple[str, str]], sizes: list[str]) -> list[Obj] | None:
    """Rejection-sample centres so that no two bounding circles come closer than GAP."""
    placed: list[Obj] = []
    for (shape, colour), size in zip(kinds, sizes, strict=True):
        r = SIZES[size]
        for _ in range(50):
            x, y = (round(float(v), 3) for v in rng.uniform(r, 1 - r, size=2))
            if all(math.hypot(x - o.x, y - o.y) >= r + o.radius + GAP for o in placed):
                placed.append(Obj(shape, colour, size, x, y))
                break
        else:
            return None
    return placed


def _regular(cx: float, cy: float, r: float, n: int, phase: float) -> list[tuple[float, float]]:
    return [
        (cx + r * math.cos(phase + 2 * math.pi * i / n), cy + r * math.sin(phase + 2 * math.pi * i / n))
        for i in range(n)
    ]


def _star(cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    outer = _regular(cx, cy, r, 5, -math.pi / 2)
    inner = _regular(cx, cy, 0.45 * r, 5, -math.pi / 2 + math.pi / 5)
    return [p for pair in zip(outer, inner, strict=True) for p in pair]


def _cross(cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    arm, half_width = 0.95 * r, 0.34 * r
    corner = [complex(half_width, -arm), complex(half_width, -half_width), complex(arm, -half_width)]
    turned = [p * 1j**quarter for quarter in range(4) for p in corner]  # rotate the corner by 90 degrees
    return [(cx + p.real, cy + p.imag) for p in turned]


def _draw_polygon(points: Callable[[float, float, float], list[tuple[float, float]]]):
    def draw(canvas: ImageDraw.ImageDraw, cx: float, cy: float, r: float, fill: tuple[int, int, int]) -> None:
        canvas.polygon(points(cx, cy, r), fill=fill)

    return draw


def _draw_circle(
    canvas: ImageDraw.ImageDraw, cx: float, cy: float, r: float, fill: tuple[int, int, int]
) -> None:
    r = 0.9 * r
    canvas.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)


# Every outline lies inside the bounding circle of radius r and contains the centre.
SHAPE_DRAWERS: dict[str, Callable] = {
    "circle": _draw_circle,
    "square": _draw_polygon(lambda cx, cy, r: _regular(cx, cy, r * 0.95, 4, math.pi / 4)),
    "triangle": _draw_polygon(lambda cx, cy, r: _regular(cx, cy, r, 3, -math.pi / 2)),
    "star": _draw_polygon(_star),
    "cross": _draw_polygon(_cross),
    "diamond": _draw_polygon(
        lambda cx, cy, r: [(cx, cy - r), (cx + 0.7 * r, cy), (cx, cy + r), (cx - 0.7 * r, cy)]
    ),
    "hexagon": _draw_polygon(lambda cx, cy, r: _regular(cx, cy, r, 6, 0.0)),
}
assert set(SHAPE_DRAWERS) == set(SHAPES)


def _background(rng: np.random.Generator, size: int, noise: bool) -> np.ndarray:
    """A muted grey background (uint8, size x size x 3): smooth blotches and a tint when ``noise``."""
    if not noise:
        return np.full((size, size, 3), 128, dtype=np.uint8)
    grey = rng.uniform(70, 180)
    tint = rng.uniform(-12, 12, size=3)
    blotches = Image.fromarray(rng.uniform(0, 255, size=(6, 6)).astype(np.uint8))
    smooth = (
        np.asarray(blotches.resize((size, size), Image.Resampling.BICUBIC), dtype=np.float32) / 255.0 - 0.5
    )
    img = grey + tint[None, None, :] + 50.0 * smooth[:, :, None]
    return np.clip(img, 0, 255).astype(np.uint8)


def render_scene(
    scene: Scene, rng: np.random.Generator, image_size: int = 64, noise: bool = True
) -> Image.Image:
    """Draw ``scene`` as an RGB image of side ``image_size``.

    With ``noise``: textured background, a small per-object colour jitter and per-pixel Gaussian noise,
    all drawn from ``rng``. Shapes are drawn at SUPERSAMPLE x resolution and box-downsampled.
    """
    side = image_size * SUPERSAMPLE
    background = Image.fromarray(_background(rng, image_size, noise)).resize(
        (side, side), Image.Resampling.NEAREST
    )
    canvas = ImageDraw.Draw(background)
    for obj in reversed(scene.objects):  # object 0 last: never occluded
        rgb = np.array(COLOURS[obj.colour], dtype=np.float64)
        if noise:
            rgb = np.clip(rgb + rng.uniform(-10, 10, size=3), 0, 255)
        fill = tuple(int(v) for v in rgb)
        SHAPE_DRAWERS[obj.shape](canvas, obj.x * side, obj.y * side, obj.radius * side, fill)
    image = background.reduce(SUPERSAMPLE)
    if noise:
        pixels = np.asarray(image, dtype=np.float32) + 6.0 * rng.standard_normal(
            (image_size, image_size, 3), np.float32
        )
        image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    return image
