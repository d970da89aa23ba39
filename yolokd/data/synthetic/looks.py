# yolokd, AGPL-3.0 License
"""The looks of a synthetic data set (`Style`, `STYLES`) and their class names."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from yolokd.data.synthetic.drawing import (
    GLYPHS,
    SHAPES,
    draw_glyph,
    draw_shape,
    gradient_background,
    natural_background,
    texture_background,
)


@dataclass(frozen=True)
class Style:
    """What a synthetic data set looks like.

    Attributes:
        names (tuple[str, ...]): Class names in class-index order.
        draw (Callable): ``draw(mask, cls, size, cx, cy, rng)`` fills one object of class ``cls`` with 255.
        background (Callable): ``background(rng, s)`` returns an (s, s, 3) float32 image.
        min_size (float): Smallest object size, a fraction of the image side (sizes are log-uniform).
        max_size (float): Largest object size, likewise.
        clutter (tuple[int, int]): ``rng.integers`` bounds of the number of thick distractors under the objects.
        low_contrast_p (float): Probability of a deliberately low-contrast object.
        near_p (float): Probability of placing an object next to an earlier one (forces overlap).
        crowd (float): Factor on ``max_objects``: the most objects drawn per image.
        thin_clutter (tuple[int, int] | None): ``rng.integers`` bounds of the number of thin distractor lines under
            the objects (None: none).
    """

    names: tuple[str, ...]
    draw: Callable[..., None]
    background: Callable[[np.random.Generator, int], np.ndarray]
    min_size: float
    max_size: float
    clutter: tuple[int, int]
    low_contrast_p: float
    near_p: float
    crowd: float = 1.0
    thin_clutter: tuple[int, int] | None = None


STYLES: dict[str, Style] = {
    "shapes": Style(SHAPES, draw_shape, gradient_background, 0.12, 0.50, (2, 7), 0.12, 0.3),
    "glyphs": Style(GLYPHS, draw_glyph, texture_background, 0.20, 0.75, (1, 4), 0.08, 0.2),
    "aerial": Style(SHAPES, draw_shape, natural_background, 0.04, 0.12, (4, 10), 0.15, 0.2, 3.0, (6, 16)),
}
"""The looks ``make_dataset(style=...)`` can draw; ``shapes`` is the default (benchmark and demo), ``glyphs`` and
``aerial`` are never used to choose anything on their own and serve the benchmark's transfer tables."""


def class_names(nc: int, style: str = "shapes") -> list[str]:
    """Return the first ``nc`` (1 to 8) class names of a synthetic data set of ``style`` (a key of ``STYLES``).

    Examples:
        >>> class_names(3)
        ['circle', 'square', 'triangle']
    """
    names = _style(style).names
    nc = as_int(nc, "nc")
    if not 1 <= nc <= len(names):
        raise ValueError(f"nc must be between 1 and {len(names)}, got {nc}")
    return list(names[:nc])


def _style(name: str) -> Style:
    """Return ``STYLES[name]``, or raise a ValueError that lists the styles."""
    if name not in STYLES:
        raise ValueError(f"style must be one of {sorted(STYLES)}, got {name!r}")
    return STYLES[name]


def as_int(value: int, name: str) -> int:
    """Return ``value`` as a Python int, raising ValueError for non-integral values (bools included)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    return int(value)
