# yolokd, AGPL-3.0 License
"""Draws one image of a look (background, clutter, overlapping objects, noise) and picks the objects to label."""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from yolokd.data.synthetic.drawing import contrast_colour, draw_clutter
from yolokd.data.synthetic.looks import Style

_MIN_VISIBLE = 0.40  # minimum visible fraction of an object's full area for it to be labelled


@dataclass(frozen=True)
class Drawn:
    """One object as drawn: its full (amodal) shape on a local canvas that may reach outside the image.

    Attributes:
        k (int): Draw order in the image, the value of its pixels in the ``owner`` map.
        cls (int): Class index.
        canvas (np.ndarray): (H, W) uint8 mask of the full shape (255 inside).
        origin (tuple[int, int]): Image position (x, y) of the canvas' top-left pixel.
        centre (tuple[float, float]): Nominal centre in image pixels.
        size (float): Nominal size in pixels.
    """

    k: int
    cls: int
    canvas: np.ndarray
    origin: tuple[int, int]
    centre: tuple[float, float]
    size: float


def render(rng: np.random.Generator, s: int, nc: int, max_objects: int, style: Style) -> tuple:
    """Draw one (s, s) image with ``style`` and pick the objects to label.

    Returns:
        img (np.ndarray): (s, s, 3) uint8 BGR image.
        owner (np.ndarray): (s, s) int16 index ``k`` of the object visible at each pixel, -1 for none.
        labelled (list[Drawn]): The objects that get a label (see `_is_labelled`), in draw order.
    """
    for _ in range(100):  # redraw in the (rare) case that no object ends up labelled
        img = style.background(rng, s)
        draw_clutter(img, rng, int(rng.integers(*style.clutter)))
        if style.thin_clutter is not None:  # (the other looks draw none here, and their images stay as they were)
            draw_clutter(img, rng, int(rng.integers(*style.thin_clutter)), thin=True)
        owner = np.full((s, s), -1, dtype=np.int16)  # index of the object visible at each pixel
        crowd = max(1, round(max_objects * style.crowd))
        objects = _draw_objects(img, owner, rng, int(rng.integers(1, crowd + 1)), nc, style)
        img = _finish(img, rng)
        visible = np.bincount(owner.ravel().astype(np.int64) + 1, minlength=len(objects) + 1)[1:]
        labelled = [o for o in objects if _is_labelled(o, int(visible[o.k]), s)]
        if labelled:
            return img, owner, labelled
    raise RuntimeError("could not draw an image with a labelled object")  # unreachable in practice


def _draw_objects(img: np.ndarray, owner: np.ndarray, rng: np.random.Generator, n: int, nc: int, style: Style) -> list:
    """Draw ``n`` objects onto ``img``, later ones on top, recording in ``owner`` who is visible where."""
    s, objects = img.shape[0], []
    for k in range(n):
        cls = int(rng.integers(0, nc))
        size = s * math.exp(rng.uniform(math.log(style.min_size), math.log(style.max_size)))
        if objects and rng.random() < style.near_p:  # next to an earlier object: provokes partial occlusion
            near = objects[int(rng.integers(0, len(objects)))]
            (px, py), psize = near.centre, near.size
            a, d = rng.uniform(0, 2 * math.pi), rng.uniform(0.45, 0.9) * (psize + size) / 2
            cx, cy = np.clip((px + d * math.cos(a), py + d * math.sin(a)), 0.05 * s, 0.95 * s)
        else:
            cx, cy = rng.uniform(0.05 * s, 0.95 * s, 2)
        # Draw the full shape on a local canvas (which may reach outside the image) to know its full area and box.
        half = math.ceil(0.65 * size) + 2  # every shape's extent is below 1.2 * size / 2
        ox, oy = math.floor(cx) - half, math.floor(cy) - half  # canvas origin in image pixels
        canvas = np.zeros((2 * half + 1, 2 * half + 1), dtype=np.uint8)
        style.draw(canvas, cls, size, cx - ox, cy - oy, rng)
        objects.append(Drawn(k, cls, canvas, (ox, oy), (cx, cy), size))
        _paint(img, owner, objects[-1], rng, style.low_contrast_p)
    return objects


def _paint(img: np.ndarray, owner: np.ndarray, obj: Drawn, rng: np.random.Generator, low_contrast_p: float) -> None:
    """Paint the part of ``obj`` inside the image in a shaded colour and mark its pixels as its own in ``owner``."""
    s, (ox, oy), side = img.shape[0], obj.origin, obj.canvas.shape[0]
    x0, y0, x1, y1 = max(ox, 0), max(oy, 0), min(ox + side, s), min(oy + side, s)
    if x1 <= x0 or y1 <= y0:
        return
    m = obj.canvas[y0 - oy : y1 - oy, x0 - ox : x1 - ox] > 0  # the part inside the image
    if not m.any():
        return
    roi = img[y0:y1, x0:x1]  # views: writes go to img / owner
    owner[y0:y1, x0:x1][m] = obj.k
    colour = contrast_colour(roi[m].mean(0), rng, low_contrast_p)
    gx, gy = rng.uniform(-25, 25, 2) / obj.size  # gentle shading across the object
    (cx, cy) = obj.centre
    shade = (np.arange(x0, x1) - cx)[None, :] * gx + (np.arange(y0, y1) - cy)[:, None] * gy
    roi[m] = colour.astype(np.float32) + shade[m][:, None].astype(np.float32)


def _finish(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Add thin clutter on top, an occasional blur and noise to the float ``img``; return it as uint8."""
    draw_clutter(img, rng, int(rng.integers(0, 3)), thin=True)  # thin lines on top; ignored for visibility
    if rng.random() < 0.25:
        img = cv2.GaussianBlur(img, (3, 3), 0)
    img += rng.standard_normal(img.shape, dtype=np.float32) * np.float32(rng.uniform(2, 10))
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


def clipped_box(obj: Drawn, s: int) -> tuple[int, int, int, int]:
    """Return the tight box ``(x0, y0, x1, y1)`` of the object's full shape in image pixels, clipped to the image."""
    bx, by, bw, bh = cv2.boundingRect(obj.canvas)
    bx, by = bx + obj.origin[0], by + obj.origin[1]
    return max(bx, 0), max(by, 0), min(bx + bw, s), min(by + bh, s)


def _is_labelled(obj: Drawn, visible: int, s: int) -> bool:
    """Return True if ``obj`` gets a label: >= 40% of its full area visible and a clipped box of >= 2 px a side."""
    area = cv2.countNonZero(obj.canvas)
    if area == 0 or visible < _MIN_VISIBLE * area:
        return False
    x0, y0, x1, y1 = clipped_box(obj, s)
    return x1 - x0 >= 2 and y1 - y0 >= 2
