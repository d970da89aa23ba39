# yolokd, AGPL-3.0 License
"""Drawing primitives of the synthetic data set: object masks (shapes, glyphs), backgrounds, clutter and colours."""

from __future__ import annotations

import math

import cv2
import numpy as np

SHAPES = ("circle", "square", "triangle", "cross", "star", "ring", "diamond", "hexagon")
"""Class names of the ``shapes`` style, in class-index order; a data set with ``nc`` classes uses the first ``nc``."""
GLYPHS = ("A", "E", "H", "K", "R", "X", "Z", "4")
"""Class names of the ``glyphs`` style (letters and a digit with distinct outlines under small rotations)."""

_SHIFT = 4  # sub-pixel bits for cv2 drawing
_SCALE = 1 << _SHIFT


def _rot(pts: np.ndarray, theta: float) -> np.ndarray:
    """Rotate (N, 2) points about the origin by ``theta`` radians."""
    c, s = math.cos(theta), math.sin(theta)
    return pts @ np.array([[c, s], [-s, c]], dtype=np.float64)


def _regular(n: int, radius: float, theta: float) -> np.ndarray:
    """Return the vertices of a regular ``n``-gon of circumradius ``radius``, rotated by ``theta``."""
    a = theta + np.arange(n) * (2 * math.pi / n)
    return radius * np.stack([np.cos(a), np.sin(a)], 1)


def draw_shape(mask: np.ndarray, cls: int, size: float, cx: float, cy: float, rng: np.random.Generator) -> None:
    """Draw the filled shape of class ``cls`` of ``SHAPES`` (value 255) into the uint8 ``mask``, centred on (cx, cy)."""
    name, r = SHAPES[cls], size / 2
    theta = rng.uniform(0, 2 * math.pi)
    centre = (round(cx * _SCALE), round(cy * _SCALE))
    if name in {"circle", "ring"}:
        cv2.circle(mask, centre, round(r * _SCALE), 255, -1, cv2.LINE_8, _SHIFT)
        if name == "ring":
            cv2.circle(mask, centre, round(r * rng.uniform(0.45, 0.65) * _SCALE), 0, -1, cv2.LINE_8, _SHIFT)
        return
    if name == "square":  # axis-aligned, near 1:1, so that it never looks like a diamond
        w, h = r, r * rng.uniform(0.85, 1.15)
        pts = np.array([[-w, -h], [w, -h], [w, h], [-w, h]], dtype=np.float64)
    elif name == "triangle":  # near equilateral
        a = theta + np.arange(3) * (2 * math.pi / 3) + rng.uniform(-0.12, 0.12, 3)
        rad = r * 1.1 * rng.uniform(0.92, 1.08, 3)
        pts = np.stack([rad * np.cos(a), rad * np.sin(a)], 1)
    elif name == "cross":  # plus sign with arms of 28-40% of the size
        t = r * rng.uniform(0.28, 0.40)
        arm = np.array([[-t, -r], [t, -r], [t, -t]], dtype=np.float64)  # one arm; the others are 90-degree turns
        pts = _rot(np.concatenate([_rot(arm, q * math.pi / 2) for q in range(4)]), theta)
    elif name == "star":  # 5-point star
        outer = _regular(5, r * 1.05, theta)
        inner = _regular(5, r * 1.05 * rng.uniform(0.38, 0.50), theta + math.pi / 5)
        pts = np.stack([outer, inner], 1).reshape(-1, 2)
    elif name == "diamond":  # rhombus with a clearly non-square aspect, any rotation
        w = r * rng.uniform(0.50, 0.72)
        pts = _rot(np.array([[0, -r], [w, 0], [0, r], [-w, 0]], dtype=np.float64), theta)
    else:  # hexagon
        pts = _regular(6, r, theta)
    pts = np.round((pts + (cx, cy)) * _SCALE).astype(np.int32)
    cv2.fillPoly(mask, [pts], 255, cv2.LINE_8, _SHIFT)


def draw_glyph(mask: np.ndarray, cls: int, size: float, cx: float, cy: float, rng: np.random.Generator) -> None:
    """Draw the glyph of class ``cls`` of ``GLYPHS`` (value 255) into the uint8 ``mask``, centred on (cx, cy).

    A bold Hershey glyph about ``0.8 * size`` across, turned by at most 20 degrees (no glyph turns into another).
    """
    text = GLYPHS[cls]
    font = (cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX)[int(rng.integers(0, 2))]
    (w0, h0), _ = cv2.getTextSize(text, font, 1.0, 1)
    scale = 0.8 * size / max(w0, h0, 1)
    thick = max(1, round(size * rng.uniform(0.15, 0.22)))
    (w, h), base = cv2.getTextSize(text, font, scale, thick)
    tile = np.zeros_like(mask)
    org = (round(cx - w / 2), round(cy + h / 2))
    cv2.putText(tile, text, org, font, scale, 255, thick, cv2.LINE_8)
    turn = cv2.getRotationMatrix2D((cx, cy), float(rng.uniform(-20, 20)), 1.0)
    tile = cv2.warpAffine(tile, turn, tile.shape[::-1], flags=cv2.INTER_NEAREST)
    np.maximum(mask, tile, out=mask)


def gradient_background(rng: np.random.Generator, s: int) -> np.ndarray:
    """Return an (s, s, 3) float32 background: random two-colour gradient plus low-frequency colour blotches."""
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    theta = rng.uniform(0, 2 * math.pi)
    g = np.linspace(-0.5, 0.5, s, dtype=np.float32)
    t = g[None, :] * math.cos(theta) + g[:, None] * math.sin(theta)  # in [-0.71, 0.71]
    t = (t - t.min()) / (t.max() - t.min() + 1e-6)
    img = c0.astype(np.float32) + t[..., None] * (c1 - c0).astype(np.float32)
    k = int(rng.integers(3, 7))
    blotch = rng.standard_normal((k, k, 3)).astype(np.float32) * np.float32(rng.uniform(6, 30))
    blotch = cv2.resize(blotch, (max(8, s // 8),) * 2, interpolation=cv2.INTER_CUBIC)  # smooth, then cheap upscale
    img += cv2.resize(blotch, (s, s), interpolation=cv2.INTER_LINEAR)
    return img


def texture_background(rng: np.random.Generator, s: int) -> np.ndarray:
    """Return an (s, s, 3) float32 background: calm two-colour stripes or checks at a random period and angle."""
    a, b = rng.uniform(0, 255, 3).astype(np.float32), rng.uniform(0, 255, 3).astype(np.float32)
    mid = (a + b) / 2
    c0, c1 = mid + 0.4 * (a - mid), mid + 0.4 * (b - mid)
    theta, period = rng.uniform(0, math.pi), s * rng.uniform(0.06, 0.3)
    g = np.arange(s, dtype=np.float32)
    u = g[None, :] * math.cos(theta) + g[:, None] * math.sin(theta)
    wave = np.sin(2 * math.pi * u / period)
    if rng.random() < 0.5:  # checks: the product of two orthogonal waves
        v = -g[None, :] * math.sin(theta) + g[:, None] * math.cos(theta)
        wave = wave * np.sin(2 * math.pi * v / period)
    t = (0.5 + 0.5 * np.tanh(wave * rng.uniform(0.5, 4.0)))[..., None]  # soft to hard edges
    return c0 + t * (c1 - c0)


def natural_background(rng: np.random.Generator, s: int) -> np.ndarray:
    """Return an (s, s, 3) float32 ground texture: octaves of smooth noise between earthy/green colours, with grain."""

    def field(base: int) -> np.ndarray:
        out, amp = np.zeros((s, s), np.float32), 1.0
        for octave in range(4):
            k = base * 2**octave
            grid = rng.standard_normal((k, k)).astype(np.float32)
            out += amp * cv2.resize(grid, (s, s), interpolation=cv2.INTER_CUBIC)
            amp *= 0.5
        return (out - out.min()) / (out.max() - out.min() + 1e-6)

    soil, green, dry = (rng.uniform(lo, hi, 3).astype(np.float32) for lo, hi in ((40, 140), (30, 120), (90, 200)))
    green[1] = max(green[1], green[0] + 20)  # BGR: more green than blue
    t, patches = field(int(rng.integers(3, 6)))[..., None], field(int(rng.integers(2, 4)))[..., None]
    img = soil + t * (green - soil)
    img += np.clip(patches - 0.55, 0, 1) * 2 * (dry - img)
    return img + rng.normal(0, 6, (s, s, 1)).astype(np.float32)


def contrast_colour(local: np.ndarray, rng: np.random.Generator, low_contrast_p: float) -> np.ndarray:
    """Pick an object colour for a local background colour ``local`` (BGR, float), usually with good contrast."""
    if rng.random() < low_contrast_p:  # deliberately hard: a colour close to the background
        d = rng.standard_normal(3)
        return np.clip(local + d / (np.linalg.norm(d) + 1e-6) * rng.uniform(22, 45), 0, 255)
    best, best_d = None, -1.0
    for _ in range(12):
        c = rng.uniform(0, 255, 3)
        d = float(np.linalg.norm(c - local))
        if d > best_d:
            best, best_d = c, d
        if d >= 90:
            break
    return best


def draw_clutter(img: np.ndarray, rng: np.random.Generator, n: int, thin: bool = False) -> None:
    """Draw ``n`` unlabeled distractors (lines, elongated blobs, partial arcs, scribbles) onto the float image."""
    s = img.shape[0]
    for _ in range(n):
        colour = tuple(float(v) for v in rng.uniform(0, 255, 3))
        kind = 0 if thin else int(rng.integers(0, 4))
        th = 1 if thin else int(rng.integers(1, 4))
        if kind == 0:  # straight line
            p0, p1 = rng.integers(-s // 4, s + s // 4, (2, 2))
            cv2.line(img, tuple(map(int, p0)), tuple(map(int, p1)), colour, th, cv2.LINE_AA)
        elif kind == 1:  # elongated filled ellipse (aspect >= 2.5, unlike any class)
            a = rng.uniform(0.03, 0.14) * s
            axes = (max(2, round(a)), max(1, round(a * rng.uniform(0.12, 0.4))))
            c = tuple(map(int, rng.integers(0, s, 2)))
            cv2.ellipse(img, c, axes, float(rng.uniform(0, 180)), 0, 360, colour, -1, cv2.LINE_AA)
        elif kind == 2:  # partial arc (open, so never a ring)
            a = rng.uniform(0.05, 0.25) * s
            axes = (max(2, round(a)), max(2, round(a * rng.uniform(0.6, 1.0))))
            c = tuple(map(int, rng.integers(0, s, 2)))
            start = float(rng.uniform(0, 360))
            cv2.ellipse(img, c, axes, 0, start, start + float(rng.uniform(60, 220)), colour, th, cv2.LINE_AA)
        else:  # short scribble
            p = rng.integers(0, s, 2) + np.cumsum(rng.normal(0, 0.06 * s, (int(rng.integers(3, 6)), 2)), 0)
            cv2.polylines(img, [np.round(p).astype(np.int32)], False, colour, th, cv2.LINE_AA)
