"""Deterministic synthetic image-caption pairs: coloured shapes on plain backgrounds.

No machine here can download CLIP weights or real images, so the tiny CLIP checkpoint is
trained on these pictures, and the demo and the tests score freshly rendered ones. Every
random choice (position, size, rotation, background, a little colour jitter) comes from the
``random.Random`` the caller passes in, so a seed fully determines the pictures.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Iterator
from typing import NamedTuple

from PIL import Image, ImageDraw

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross")

# Saturated, well-separated hues; backgrounds are neutral, so the colour word always means
# the shape's colour.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (30, 70, 225),
    "yellow": (245, 215, 30),
    "orange": (245, 130, 20),
    "purple": (135, 45, 180),
    "pink": (250, 125, 195),
    "cyan": (30, 205, 215),
}

DEFAULT_SIZE_RANGE: tuple[int, int] = (48, 112)  # side of the square canvas, in pixels
_SUPERSAMPLE = 2  # draw at 2x and downsample: smooth edges, like a real photo's
_COLOUR_JITTER = 14
_MAX_ROTATION_DEGREES = 20.0
_RADIUS_RANGE = (0.25, 0.42)  # shape radius relative to the canvas side


class ShapeExample(NamedTuple):
    """One rendered picture with the caption that describes it."""

    image: Image.Image
    caption: str
    shape: str
    colour: str


def caption_for(shape: str, colour: str) -> str:
    """The caption of a ``colour`` ``shape``: ``caption_for("circle", "red") == "a red circle"``."""
    _check(shape, colour)
    article = "an" if colour[0] in "aeiou" else "a"
    return f"{article} {colour} {shape}"


def all_classes() -> list[tuple[str, str]]:
    """Every (shape, colour) combination, in a fixed order."""
    return list(itertools.product(SHAPES, COLOURS))


def render_shape(shape: str, colour: str, size: int, rng: random.Random) -> Image.Image:
    """A ``size`` x ``size`` RGB picture of one ``colour`` ``shape`` on a neutral background."""
    _check(shape, colour)
    if size < 8:
        raise ValueError(f"size {size} is too small to draw a shape")
    side = size * _SUPERSAMPLE
    canvas = Image.new("RGB", (side, side), _background(rng))
    radius = side * rng.uniform(*_RADIUS_RANGE)
    margin = radius * 1.05
    centre = (rng.uniform(margin, side - margin), rng.uniform(margin, side - margin))
    rotation = math.radians(rng.uniform(-_MAX_ROTATION_DEGREES, _MAX_ROTATION_DEGREES))
    fill = _jitter(COLOURS[colour], rng)
    draw = ImageDraw.Draw(canvas)
    if shape == "circle":
        cx, cy = centre
        draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=fill)
    else:
        draw.polygon(_outline(shape, centre, radius, rotation), fill=fill)
    return canvas.resize((size, size), Image.Resampling.LANCZOS)


def iter_examples(
    seed: int,
    count: int | None = None,
    size_range: tuple[int, int] = DEFAULT_SIZE_RANGE,
) -> Iterator[ShapeExample]:
    """Rendered examples in shuffled rounds that each cover every (shape, colour) once.

    Balanced rounds mean any window of ``len(all_classes())`` consecutive examples holds
    each caption exactly once, which is what a contrastive batch without duplicate captions
    needs. ``count=None`` yields forever.
    """
    rng = random.Random(seed)
    classes = all_classes()
    produced = 0
    while count is None or produced < count:
        round_ = classes[:]
        rng.shuffle(round_)
        for shape, colour in round_:
            if count is not None and produced >= count:
                return
            size = rng.randint(*size_range)
            yield ShapeExample(render_shape(shape, colour, size, rng), caption_for(shape, colour), shape, colour)
            produced += 1


def _check(shape: str, colour: str) -> None:
    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")
    if colour not in COLOURS:
        raise ValueError(f"unknown colour {colour!r}; expected one of {tuple(COLOURS)}")


def _background(rng: random.Random) -> tuple[int, int, int]:
    """A light, mid or dark grey with a faint tint: never one of the shape colours."""
    level = rng.choice((rng.randint(200, 250), rng.randint(105, 150), rng.randint(15, 60)))
    return tuple(max(0, min(255, level + rng.randint(-8, 8))) for _ in range(3))  # type: ignore[return-value]


def _jitter(rgb: tuple[int, int, int], rng: random.Random) -> tuple[int, int, int]:
    return tuple(max(0, min(255, c + rng.randint(-_COLOUR_JITTER, _COLOUR_JITTER))) for c in rgb)  # type: ignore[return-value]


def _outline(shape: str, centre: tuple[float, float], radius: float, rotation: float) -> list[tuple[float, float]]:
    """Polygon vertices of ``shape`` inside the circle of ``radius`` around ``centre``."""
    if shape == "square":
        polar = [(radius, math.pi / 4 + k * math.pi / 2) for k in range(4)]
    elif shape == "triangle":
        polar = [(radius, -math.pi / 2 + k * 2 * math.pi / 3) for k in range(3)]
    elif shape == "star":
        polar = [(radius if k % 2 == 0 else radius * 0.45, -math.pi / 2 + k * math.pi / 5) for k in range(10)]
    elif shape == "cross":
        arm = 0.34  # half the arm's thickness, relative to the radius
        corners = [(arm, 1.0), (arm, arm), (1.0, arm), (1.0, -arm), (arm, -arm), (arm, -1.0),
                   (-arm, -1.0), (-arm, -arm), (-1.0, -arm), (-1.0, arm), (-arm, arm), (-arm, 1.0)]
        scale = radius / math.hypot(1.0, arm)
        polar = [(math.hypot(x, y) * scale, math.atan2(y, x)) for x, y in corners]
    else:
        raise ValueError(f"no outline for {shape!r}")
    cx, cy = centre
    return [(cx + r * math.cos(a + rotation), cy + r * math.sin(a + rotation)) for r, a in polar]
