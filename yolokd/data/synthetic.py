# yolokd, AGPL-3.0 License
"""Deterministic, offline generator of a synthetic YOLO-format data set for detection, segmentation, pose or OBB.

Nothing can be downloaded on the machines that run the yolokd demo, tests and benchmark, so this module draws a small
"shapes" data set with numpy and OpenCV. It is designed to be learnable within a few epochs at 128-192 px, yet hard
enough that a larger YOLOv8 model clearly beats a smaller one after short CPU training:

- Up to 8 classes of filled shapes (see ``SHAPES``): circle, square, triangle, cross, star, ring, diamond, hexagon.
- Textured backgrounds: a random two-colour gradient, low-frequency colour blotches, Gaussian noise, an occasional
  slight blur, and unlabeled clutter (lines, elongated blobs, partial arcs, scribbles) that is not any class.
- 1..``max_objects`` objects per image, sizes log-uniform from 12% to 50% of the image side, random colours (mostly
  with good contrast to the local background, sometimes deliberately low contrast), random rotation where a shape is
  not rotationally symmetric (a square stays axis-aligned so that it cannot become a diamond), per-object shading.
- Occlusion: objects may overlap, later ones drawn on top, and some are placed next to an earlier one on purpose.

A second look, ``style="glyphs"`` (`STYLES`), draws other objects (letters and a digit in Hershey fonts, turned by up
to 20 degrees), on other backgrounds (two-colour stripes or checks), at other sizes (glyph boxes about 16-60% of the
side), with less clutter; the same API, labelling rule and determinism. The benchmark reports its chosen defaults on
it (transfer); it is never used to choose anything.

A third look, ``style="aerial"``, is unlike both: many small objects (the shapes at 4-12% of the side, up to three
times ``max_objects`` per image) on cluttered natural-looking ground (multi-octave noise between earthy and green
colours, with grain) under many thin distractors, as in aerial or crowd scenes.

Labelling rule (amodal boxes): the visible pixels of every object are tracked. An object is labelled only if at least
40% of its full area is visible, i.e. neither hidden by objects drawn later nor cut off by the image border;
otherwise it stays in the image unlabeled (as a hard negative). A labelled object gets the tight box of its FULL,
un-occluded shape (the standard amodal box of COCO-style annotation), clipped to the image.

Tasks (``task=``): the same images and the same labelled objects, with Ultralytics-format labels of another kind, all
from the object's full (amodal) drawn shape: ``detect`` boxes (the default), ``segment`` polygons (the outer contour),
``pose`` boxes with 4 keypoints (the top-, right-, bottom- and left-most pixels, ``KPT_NAMES``; visibility 2 where the
object is visible there, 1 where a later object hides it) and ``obb`` rotated boxes (the minimum-area rectangle). The
extra geometry uses no random numbers, so the images are byte-identical across tasks.

Every image is drawn from its own ``numpy.random.default_rng([seed, split_id, index])``, so the same arguments give
byte-identical files, image ``i`` does not depend on how many images were generated before, and the train, val and
test splits come from disjoint seed streams. The val split is meant for choosing hyper-parameters, the test split for
reporting. A stamp file records the arguments and is written last, so a finished data set is reused at once and an
interrupted or different one is regenerated from scratch.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import yaml
from ultralytics.utils import LOGGER, TQDM

from yolokd.config import PREFIX

__all__ = ["GLYPHS", "KPT_NAMES", "SHAPES", "STYLES", "TASKS", "Style", "class_names", "make_dataset"]

SHAPES = ("circle", "square", "triangle", "cross", "star", "ring", "diamond", "hexagon")
"""Class names of the ``shapes`` style, in class-index order; a data set with ``nc`` classes uses the first ``nc``."""
GLYPHS = ("A", "E", "H", "K", "R", "X", "Z", "4")
"""Class names of the ``glyphs`` style (letters and a digit with distinct outlines under small rotations)."""

STAMP_NAME = ".yolokd_synthetic.json"
_VERSION = 3  # bump whenever the generated content changes, so stale data sets are regenerated
_SPLITS = ("train", "val", "test")  # the index is the split id mixed into the per-image seed
_MIN_VISIBLE = 0.40  # minimum visible fraction of an object's full area for it to be labelled
_SHIFT = 4  # sub-pixel bits for cv2 drawing
_SCALE = 1 << _SHIFT
_POLY_EPS = 0.7  # cv2.approxPolyDP tolerance (pixels) of segment polygons
KPT_NAMES = ("top", "right", "bottom", "left")
"""The pose task's keypoints, in label order: the extreme pixels of each object's full shape."""


def class_names(nc: int, style: str = "shapes") -> list[str]:
    """Return the class names of a synthetic data set with ``nc`` classes.

    Args:
        nc (int): Number of classes, 1 to the style's number of names (8 for both styles).
        style (str): A key of ``STYLES``.

    Returns:
        (list[str]): The first ``nc`` names of the style (``SHAPES`` or ``GLYPHS``).

    Raises:
        ValueError: If ``style`` is unknown or ``nc`` is outside 1..8.

    Examples:
        >>> class_names(3), class_names(2, style="glyphs")
        (['circle', 'square', 'triangle'], ['A', 'E'])
    """
    names = _style(style).names
    nc = _as_int(nc, "nc")
    if not 1 <= nc <= len(names):
        raise ValueError(f"nc must be between 1 and {len(names)}, got {nc}")
    return list(names[:nc])


def _style(name: str) -> Style:
    """Return ``STYLES[name]``, or raise a ValueError that lists the styles."""
    if name not in STYLES:
        raise ValueError(f"style must be one of {sorted(STYLES)}, got {name!r}")
    return STYLES[name]


def make_dataset(
    root: str | Path,
    n_train: int = 800,
    n_val: int = 200,
    n_test: int = 200,
    imgsz: int = 192,
    seed: int = 0,
    nc: int = 6,
    max_objects: int = 8,
    progress: bool = True,
    style: str = "shapes",
    task: str = "detect",
) -> Path:
    """Generate (or reuse) a synthetic data set in YOLO format, for detection or another Ultralytics task.

    Writes ``root/images/{train,val,test}/*.jpg``, ``root/labels/{train,val,test}/*.txt`` (one line per labelled
    object, see ``task``; coordinates normalised to [0, 1], 6 decimals), ``root/data.yaml`` and, last, the stamp file
    ``root/.yolokd_synthetic.json``.
    If the stamp matches the arguments the existing data set is returned without regenerating anything; otherwise the
    stamp, ``data.yaml`` and the ``images``/``labels`` folders under ``root`` are removed and everything is redrawn.
    Nothing else under ``root`` is touched.

    Args:
        root (str | Path): Output directory; created if missing.
        n_train (int): Number of training images, at least 1.
        n_val (int): Number of validation images (for choosing hyper-parameters), at least 1.
        n_test (int): Number of test images (for reporting), at least 0; with 0 the ``test`` key is omitted.
        imgsz (int): Side of the square images in pixels, at least 32.
        seed (int): Non-negative base seed; every image uses ``default_rng([seed, split_id, index])``.
        nc (int): Number of classes, 1 to 8 (the first ``nc`` names of ``SHAPES``).
        max_objects (int): Maximum number of objects drawn per image, at least 1.
        progress (bool): Show a progress bar per split and log where the data set was written.
        style (str): What the data set looks like, a key of ``STYLES``: ``shapes`` (the default: filled geometric
            shapes on gradients, 12-50% of the side) or ``glyphs`` (letters and a digit on striped or checked
            textures, boxes about 16-60% of the side), the second look kept for transfer checks.
        task (str): The label kind, one of ``TASKS``; the images and the labelled objects are the same for every task,
            and every geometry is that of the object's full (amodal) shape, clipped to the image:

            - ``detect`` (the default): ``cls cx cy w h``, the tight box.
            - ``segment``: ``cls x1 y1 x2 y2 ...``, the outer contour of the shape's largest part through its boundary
              pixels' centres, simplified to within 0.7 px (at least 3 points).
            - ``pose``: ``cls cx cy w h`` (the detect box) then ``x y v`` for 4 keypoints, ``KPT_NAMES``: the top-,
              right-, bottom- and left-most pixel centres of the shape (for tied pixels, the mean along the edge);
              ``v`` is 2 if the object is visible at that pixel, 1 if a later object hides it, and the keypoint is
              ``0 0 0`` if the pixel lies outside the image. ``data.yaml`` gets ``kpt_shape: [4, 3]``,
              ``flip_idx: [0, 3, 2, 1]`` (for horizontal flips; keep Ultralytics' ``flipud`` at its default 0, as it
              uses the same ``flip_idx``) and ``kpt_names``.
            - ``obb``: ``cls x1 y1 x2 y2 x3 y3 x4 y4``, the corners of the minimum-area rectangle around the shape's
              pixels (``cv2.minAreaRect``, pixels taken as unit squares).

            Other tasks than ``detect`` are recorded in the stamp, so switching task regenerates the set.

    Returns:
        (Path): Path of the written ``data.yaml``.

    Raises:
        ValueError: If an argument is out of range.
    """
    names = class_names(nc, style)
    nc = len(names)
    if task not in _LINES:
        raise ValueError(f"task must be one of {list(TASKS)}, got {task!r}")
    n_train, n_val, n_test = _as_int(n_train, "n_train"), _as_int(n_val, "n_val"), _as_int(n_test, "n_test")
    imgsz, seed, max_objects = _as_int(imgsz, "imgsz"), _as_int(seed, "seed"), _as_int(max_objects, "max_objects")
    if n_train < 1:
        raise ValueError(f"n_train must be >= 1, got {n_train}")
    if n_val < 1:
        raise ValueError(f"n_val must be >= 1, got {n_val}")
    if n_test < 0:
        raise ValueError(f"n_test must be >= 0, got {n_test}")
    if imgsz < 32:
        raise ValueError(f"imgsz must be >= 32, got {imgsz}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if max_objects < 1:
        raise ValueError(f"max_objects must be >= 1, got {max_objects}")

    root = Path(root).expanduser().resolve()
    counts = {"train": n_train, "val": n_val, "test": n_test}
    stamp = {
        "generator": "yolokd.data.synthetic",
        "version": _VERSION,
        "n_train": n_train,
        "n_val": n_val,
        "n_test": n_test,
        "imgsz": imgsz,
        "seed": seed,
        "nc": nc,
        "max_objects": max_objects,
        "names": names,
    }
    if style != "shapes":  # the default's stamp is unchanged, so existing shapes data sets are reused
        stamp["style"] = style
    if task != "detect":  # likewise for the default task
        stamp["task"] = task
    yaml_path, stamp_path = root / "data.yaml", root / STAMP_NAME
    data_yaml = _data_yaml(root, names, with_test=n_test > 0, task=task)

    if _read_json(stamp_path) == stamp and yaml_path.is_file() and _counts_ok(root, counts):
        if yaml_path.read_text(encoding="utf-8") != data_yaml:  # e.g. the folder was moved: fix the absolute path
            yaml_path.write_text(data_yaml, encoding="utf-8")
        if progress:
            LOGGER.info(f"{PREFIX}reusing synthetic data set in {root}")
        return yaml_path

    # (Re)generate cleanly: drop the stamp first so that an interruption can never leave a stamp claiming a full set.
    stamp_path.unlink(missing_ok=True)
    yaml_path.unlink(missing_ok=True)
    for sub in ("images", "labels"):
        if (root / sub).is_dir() and not (root / sub).is_symlink():
            shutil.rmtree(root / sub)
        elif (root / sub).exists():
            (root / sub).unlink()

    for split_id, split in enumerate(_SPLITS):
        n = counts[split]
        if n == 0:
            continue
        img_dir, lbl_dir = root / "images" / split, root / "labels" / split
        img_dir.mkdir(parents=True, exist_ok=True)
        lbl_dir.mkdir(parents=True, exist_ok=True)
        for i in TQDM(range(n), desc=f"{PREFIX}{split}", total=n, disable=not progress, unit="img"):
            rng = np.random.default_rng([seed, split_id, i])
            img, owner, labelled = _render(rng, imgsz, nc, max_objects, STYLES[style])
            stem = f"{split}_{i:06d}"
            if not cv2.imwrite(str(img_dir / f"{stem}.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 95]):
                raise OSError(f"could not write {img_dir / f'{stem}.jpg'}")
            lines = "".join(f"{_LINES[task](obj, owner)}\n" for obj in labelled)
            (lbl_dir / f"{stem}.txt").write_text(lines, encoding="utf-8")

    yaml_path.write_text(data_yaml, encoding="utf-8")
    tmp = stamp_path.with_name(stamp_path.name + ".tmp")
    tmp.write_text(json.dumps(stamp, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, stamp_path)  # atomic: the stamp appears only once every file is in place
    if progress:
        total = n_train + n_val + n_test
        LOGGER.info(f"{PREFIX}wrote {total} synthetic images ({nc} classes, {imgsz} px) to {root}, config {yaml_path}")
    return yaml_path


def _as_int(value: int, name: str) -> int:
    """Return ``value`` as a Python int, raising ValueError for non-integral values (bools included)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    return int(value)


def _read_json(path: Path) -> dict | None:
    """Return the JSON object stored at ``path``, or None if it is missing or unreadable."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _counts_ok(root: Path, counts: dict[str, int]) -> bool:
    """Return True if every split folder holds the expected number of images and label files."""
    for split, n in counts.items():
        for sub, ext in (("images", ".jpg"), ("labels", ".txt")):
            d = root / sub / split
            found = sum(1 for p in d.iterdir() if p.suffix == ext) if d.is_dir() else 0
            if found != n:
                return False
    return True


def _data_yaml(root: Path, names: list[str], with_test: bool, task: str = "detect") -> str:
    """Return the text of ``data.yaml`` for a data set in ``root``; a pose set adds its keypoint keys."""
    data = {"path": str(root), "train": "images/train", "val": "images/val"}
    if with_test:
        data["test"] = "images/test"
    data["names"] = dict(enumerate(names))
    data["nc"] = len(names)
    if task == "pose":
        data["kpt_shape"] = [len(KPT_NAMES), 3]
        data["flip_idx"] = [0, 3, 2, 1]  # a horizontal flip swaps right and left
        data["kpt_names"] = {i: list(KPT_NAMES) for i in range(len(names))}
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def _rot(pts: np.ndarray, theta: float) -> np.ndarray:
    """Rotate (N, 2) points about the origin by ``theta`` radians."""
    c, s = math.cos(theta), math.sin(theta)
    return pts @ np.array([[c, s], [-s, c]], dtype=np.float64)


def _regular(n: int, radius: float, theta: float) -> np.ndarray:
    """Return the vertices of a regular ``n``-gon of circumradius ``radius``, rotated by ``theta``."""
    a = theta + np.arange(n) * (2 * math.pi / n)
    return radius * np.stack([np.cos(a), np.sin(a)], 1)


def _draw_shape(mask: np.ndarray, cls: int, size: float, cx: float, cy: float, rng: np.random.Generator) -> None:
    """Draw the filled shape of class ``cls`` (value 255) into the uint8 ``mask``, centred on (cx, cy).

    Args:
        mask (np.ndarray): Zeroed (H, W) uint8 canvas to draw into.
        cls (int): Class index into ``SHAPES``.
        size (float): Nominal object size (extent) in pixels.
        cx (float): Centre x in canvas pixels.
        cy (float): Centre y in canvas pixels.
        rng (np.random.Generator): Random generator for the shape's rotation and proportions.
    """
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


def _contrast_colour(local: np.ndarray, rng: np.random.Generator, low_contrast_p: float) -> np.ndarray:
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


def _clutter(img: np.ndarray, rng: np.random.Generator, n: int, thin: bool = False) -> None:
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


def _background(rng: np.random.Generator, s: int) -> np.ndarray:
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


@dataclass(frozen=True)
class _Drawn:
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


def _render(rng: np.random.Generator, s: int, nc: int, max_objects: int, style: Style) -> tuple:
    """Draw one image and pick the objects to label.

    Args:
        rng (np.random.Generator): The image's own random generator.
        s (int): Image side in pixels.
        nc (int): Number of classes.
        max_objects (int): Maximum number of objects to draw.
        style (Style): What to draw: objects, background, sizes and clutter.

    Returns:
        img (np.ndarray): (s, s, 3) uint8 BGR image.
        owner (np.ndarray): (s, s) int16 index ``k`` of the object visible at each pixel, -1 for none.
        labelled (list[_Drawn]): The objects that get a label (see `_is_labelled`), in draw order.
    """
    for _ in range(100):  # redraw in the (rare) case that no object ends up labelled
        img = style.background(rng, s)
        _clutter(img, rng, int(rng.integers(*style.clutter)))
        if style.thin_clutter is not None:  # (the other looks draw none here, and their images stay as they were)
            _clutter(img, rng, int(rng.integers(*style.thin_clutter)), thin=True)
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
    """Draw ``n`` objects onto the float ``img``, later ones on top, recording in ``owner`` who is visible where.

    Returns:
        (list[_Drawn]): Every drawn object in draw order, also those entirely outside the image.
    """
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
        objects.append(_Drawn(k, cls, canvas, (ox, oy), (cx, cy), size))
        _paint(img, owner, objects[-1], rng, style.low_contrast_p)
    return objects


def _paint(img: np.ndarray, owner: np.ndarray, obj: _Drawn, rng: np.random.Generator, low_contrast_p: float) -> None:
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
    colour = _contrast_colour(roi[m].mean(0), rng, low_contrast_p)
    gx, gy = rng.uniform(-25, 25, 2) / obj.size  # gentle shading across the object
    (cx, cy) = obj.centre
    shade = (np.arange(x0, x1) - cx)[None, :] * gx + (np.arange(y0, y1) - cy)[:, None] * gy
    roi[m] = colour.astype(np.float32) + shade[m][:, None].astype(np.float32)


def _finish(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Add thin clutter on top, an occasional blur and noise to the float ``img``; return it as uint8."""
    _clutter(img, rng, int(rng.integers(0, 3)), thin=True)  # thin lines on top; ignored for visibility
    if rng.random() < 0.25:
        img = cv2.GaussianBlur(img, (3, 3), 0)
    img += rng.standard_normal(img.shape, dtype=np.float32) * np.float32(rng.uniform(2, 10))
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


def _box(obj: _Drawn, s: int) -> tuple[int, int, int, int]:
    """Return the tight box ``(x0, y0, x1, y1)`` of the object's full shape in image pixels, clipped to the image."""
    bx, by, bw, bh = cv2.boundingRect(obj.canvas)
    bx, by = bx + obj.origin[0], by + obj.origin[1]
    return max(bx, 0), max(by, 0), min(bx + bw, s), min(by + bh, s)


def _is_labelled(obj: _Drawn, visible: int, s: int) -> bool:
    """Return True if ``obj`` gets a label: >= 40% of its full area visible and a clipped box of >= 2 px a side."""
    area = cv2.countNonZero(obj.canvas)
    if area == 0 or visible < _MIN_VISIBLE * area:
        return False
    x0, y0, x1, y1 = _box(obj, s)
    return x1 - x0 >= 2 and y1 - y0 >= 2


def _polygon(canvas: np.ndarray) -> np.ndarray:
    """Return the outer contour of the shape's largest part as an (n >= 3, 2) float polygon in canvas pixels.

    The contour runs through the centres of the boundary pixels (pixel ``i`` covers ``[i, i + 1)``), simplified by
    ``cv2.approxPolyDP`` with ``_POLY_EPS`` pixels; a degenerate contour falls back to the shape's box corners.
    """
    contours, _ = cv2.findContours(canvas, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    contour = max(contours, key=lambda c: (cv2.contourArea(c), len(c)))
    for pts in (cv2.approxPolyDP(contour, _POLY_EPS, True), contour):
        if len(pts) >= 3:
            return pts.reshape(-1, 2) + 0.5
    x, y, w, h = cv2.boundingRect(contour)
    return np.array([[x, y], [x + w, y], [x + w, y + h], [x, y + h]], dtype=np.float64)


def _extreme_points(canvas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return the top-, right-, bottom- and left-most points of the shape, in canvas pixels.

    Returns:
        points (np.ndarray): (4, 2) float ``x, y`` pixel centres; among tied pixels (e.g. a flat top) the coordinate
            along the edge is their mean.
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


def _rotated_box(canvas: np.ndarray) -> np.ndarray:
    """Return the (4, 2) corners of the minimum-area rectangle around the shape's pixels (unit squares), canvas px."""
    contours, _ = cv2.findContours(canvas, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    pts = np.concatenate(contours).reshape(-1, 1, 2)  # the hull's vertices are among these pixels
    corners = (pts + np.array([[0, 0], [1, 0], [0, 1], [1, 1]])).reshape(-1, 2).astype(np.float32)
    return cv2.boxPoints(cv2.minAreaRect(corners)).astype(np.float64)


def _xy(points: np.ndarray, obj: _Drawn, s: int) -> str:
    """Format canvas points as ``x y ...`` in image coordinates, clipped to the image and normalised."""
    xy = np.clip((points + obj.origin) / s, 0.0, 1.0)
    return " ".join(f"{v:.6f}" for v in xy.ravel())


def _detect_line(obj: _Drawn, owner: np.ndarray) -> str:
    """Return ``cls cx cy w h``: the tight box of the full shape, clipped to the image and normalised."""
    s = owner.shape[0]
    x0, y0, x1, y1 = _box(obj, s)
    return f"{obj.cls} {(x0 + x1) / 2 / s:.6f} {(y0 + y1) / 2 / s:.6f} {(x1 - x0) / s:.6f} {(y1 - y0) / s:.6f}"


def _segment_line(obj: _Drawn, owner: np.ndarray) -> str:
    """Return ``cls x1 y1 x2 y2 ...``: the full shape's outer polygon (`_polygon`), clipped and normalised."""
    return f"{obj.cls} {_xy(_polygon(obj.canvas), obj, owner.shape[0])}"


def _pose_line(obj: _Drawn, owner: np.ndarray) -> str:
    """Return the detect line plus ``x y v`` for the top, right, bottom and left-most points (`_extreme_points`).

    ``v`` is 2 where ``owner`` says the object is visible at the point's pixel, 1 where a later object hides it; a
    point whose pixel is outside the image is ``0 0 0``.
    """
    s = owner.shape[0]
    points, pixels = _extreme_points(obj.canvas)
    fields = [_detect_line(obj, owner)]
    for point, (px, py) in zip(points, pixels + obj.origin):
        if not (0 <= px < s and 0 <= py < s):
            fields.append("0.000000 0.000000 0")
        else:
            fields.append(f"{_xy(point, obj, s)} {2 if owner[py, px] == obj.k else 1}")
    return " ".join(fields)


def _obb_line(obj: _Drawn, owner: np.ndarray) -> str:
    """Return ``cls x1 y1 ... x4 y4``: the corners of the full shape's `_rotated_box`, clipped and normalised."""
    return f"{obj.cls} {_xy(_rotated_box(obj.canvas), obj, owner.shape[0])}"


_LINES: dict[str, Callable[[_Drawn, np.ndarray], str]] = {
    "detect": _detect_line,
    "segment": _segment_line,
    "pose": _pose_line,
    "obb": _obb_line,
}
"""The label line of one object for each ``task``, without the newline."""
TASKS = tuple(_LINES)
"""The tasks ``make_dataset(task=...)`` writes labels for."""


def _draw_glyph(mask: np.ndarray, cls: int, size: float, cx: float, cy: float, rng: np.random.Generator) -> None:
    """Draw the glyph of class ``cls`` of ``GLYPHS`` (value 255) into the uint8 ``mask``, centred on (cx, cy).

    A bold Hershey font glyph (simplex or duplex face, strokes 15-22% of ``size``: thin strokes on busy textures made
    the look too hard to learn in the benchmark's budget, data version 3), scaled so that its larger side is about
    ``0.8 * size``, then turned by at most 20 degrees (so that the extent stays below ``0.6 * size`` from the centre,
    inside the caller's canvas, and no glyph turns into another).
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


def _texture_background(rng: np.random.Generator, s: int) -> np.ndarray:
    """Return an (s, s, 3) float32 background: two-colour stripes or checks at a random period and angle.

    The two colours are pulled to 40% of their distance around their mean, so the texture stays calmer than the glyphs
    drawn on it (full-contrast textures hid the glyphs from a small model, data version 2).
    """
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


def _natural_background(rng: np.random.Generator, s: int) -> np.ndarray:
    """Return an (s, s, 3) float32 ground texture: four octaves of smooth noise between two earthy/green colours.

    Each octave is a small random grid upscaled with cubic interpolation, at half the amplitude of the one before; a
    second field mixes in a third colour in patches (vegetation on soil), and a fine grain is added last.
    """

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


STYLES: dict[str, Style] = {
    "shapes": Style(SHAPES, _draw_shape, _background, 0.12, 0.50, (2, 7), 0.12, 0.3),
    "glyphs": Style(GLYPHS, _draw_glyph, _texture_background, 0.20, 0.75, (1, 4), 0.08, 0.2),
    "aerial": Style(SHAPES, _draw_shape, _natural_background, 0.04, 0.12, (4, 10), 0.15, 0.2, 3.0, (6, 16)),
}
"""The looks ``make_dataset(style=...)`` can draw; ``shapes`` is the default (benchmark and demo), ``glyphs`` and
``aerial`` are never used to choose anything on their own and serve the benchmark's transfer tables."""
