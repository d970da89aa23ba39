# yolokd, AGPL-3.0 License
"""The label line of one drawn object for each task: box, polygon, keypoints or rotated box."""

from __future__ import annotations

from typing import Callable

import cv2
import numpy as np

from yolokd.data.synthetic.scene import Drawn, clipped_box

_POLY_EPS = 0.7  # cv2.approxPolyDP tolerance (pixels) of segment polygons
KPT_NAMES = ("top", "right", "bottom", "left")
"""The pose task's keypoints, in label order: the extreme pixels of each object's full shape."""


def polygon(canvas: np.ndarray) -> np.ndarray:
    """The outer contour of the shape's largest part, simplified, as an (n >= 3, 2) float polygon in canvas pixels."""
    contours, _ = cv2.findContours(canvas, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    contour = max(contours, key=lambda c: (cv2.contourArea(c), len(c)))
    for pts in (cv2.approxPolyDP(contour, _POLY_EPS, True), contour):
        if len(pts) >= 3:
            return pts.reshape(-1, 2) + 0.5
    x, y, w, h = cv2.boundingRect(contour)
    return np.array([[x, y], [x + w, y], [x + w, y + h], [x, y + h]], dtype=np.float64)


def extreme_points(canvas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return the top-, right-, bottom- and left-most points of the shape, in canvas pixels.

    Returns:
        points (np.ndarray): (4, 2) float ``x, y``; among tied pixels the coordinate along the edge is their mean.
        pixels (np.ndarray): (4, 2) int ``x, y`` of the tied pixel nearest each point (the one whose visibility counts).
    """
    ys, xs = np.nonzero(canvas)
    points, pixels = [], []
    for along, other, pick in ((ys, xs, np.min), (xs, ys, np.max), (ys, xs, np.max), (xs, ys, np.min)):
        edge = pick(along)
        tied = other[along == edge]
        mean = float(tied.mean())
        near = int(tied[np.argmin(np.abs(tied - mean))])
        on_y = along is ys  # top and bottom: the extreme is a y value, the mean an x value
        points.append((mean, edge) if on_y else (edge, mean))
        pixels.append((near, edge) if on_y else (edge, near))
    return np.array(points, dtype=np.float64) + 0.5, np.array(pixels, dtype=np.int64)


def rotated_box(canvas: np.ndarray) -> np.ndarray:
    """Return the (4, 2) corners of the minimum-area rectangle around the shape's pixels (unit squares), canvas px."""
    contours, _ = cv2.findContours(canvas, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    pts = np.concatenate(contours).reshape(-1, 1, 2)  # the hull's vertices are among these pixels
    corners = (pts + np.array([[0, 0], [1, 0], [0, 1], [1, 1]])).reshape(-1, 2).astype(np.float32)
    return cv2.boxPoints(cv2.minAreaRect(corners)).astype(np.float64)


def _xy(points: np.ndarray, obj: Drawn, s: int) -> str:
    """Format canvas points as ``x y ...`` in image coordinates, clipped to the image and normalised."""
    xy = np.clip((points + obj.origin) / s, 0.0, 1.0)
    return " ".join(f"{v:.6f}" for v in xy.ravel())


def detect_line(obj: Drawn, owner: np.ndarray) -> str:
    """Return ``cls cx cy w h``: the tight box of the full shape, clipped to the image and normalised."""
    s = owner.shape[0]
    x0, y0, x1, y1 = clipped_box(obj, s)
    return f"{obj.cls} {(x0 + x1) / 2 / s:.6f} {(y0 + y1) / 2 / s:.6f} {(x1 - x0) / s:.6f} {(y1 - y0) / s:.6f}"


def segment_line(obj: Drawn, owner: np.ndarray) -> str:
    """Return ``cls x1 y1 x2 y2 ...``: the full shape's outer polygon (`polygon`), clipped and normalised."""
    return f"{obj.cls} {_xy(polygon(obj.canvas), obj, owner.shape[0])}"


def pose_line(obj: Drawn, owner: np.ndarray) -> str:
    """Return the detect line plus ``x y v`` for the top, right, bottom and left-most points (`extreme_points`).

    ``v`` is 2 where ``owner`` says the object is visible at the point's pixel, 1 where a later object hides it; a
    point whose pixel is outside the image is ``0 0 0``.
    """
    s = owner.shape[0]
    points, pixels = extreme_points(obj.canvas)
    fields = [detect_line(obj, owner)]
    for point, (px, py) in zip(points, pixels + obj.origin):
        if not (0 <= px < s and 0 <= py < s):
            fields.append("0.000000 0.000000 0")
        else:
            fields.append(f"{_xy(point, obj, s)} {2 if owner[py, px] == obj.k else 1}")
    return " ".join(fields)


def obb_line(obj: Drawn, owner: np.ndarray) -> str:
    """Return ``cls x1 y1 ... x4 y4``: the corners of the full shape's `rotated_box`, clipped and normalised."""
    return f"{obj.cls} {_xy(rotated_box(obj.canvas), obj, owner.shape[0])}"


LINES: dict[str, Callable[[Drawn, np.ndarray], str]] = {
    "detect": detect_line,
    "segment": segment_line,
    "pose": pose_line,
    "obb": obb_line,
}
"""The label line of one object for each ``task``, without the newline."""
TASKS = tuple(LINES)
"""The tasks ``make_dataset(task=...)`` writes labels for."""
