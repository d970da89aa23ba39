# yolokd, AGPL-3.0 License
"""Writes a synthetic data set to disk: images, label files, ``data.yaml`` and the stamp (`make_dataset`)."""

from __future__ import annotations

import json
import os
import shutil
from functools import partial
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import yaml
from ultralytics.utils import LOGGER, TQDM

from yolokd.config import PREFIX
from yolokd.data.synthetic.labels import KPT_NAMES, LINES, TASKS
from yolokd.data.synthetic.looks import STYLES, Style, as_int, class_names
from yolokd.data.synthetic.scene import render

STAMP_NAME = ".yolokd_synthetic.json"
_VERSION = 3  # bump whenever the generated content changes, so stale data sets are regenerated
_SPLITS = ("train", "val", "test")  # the index is the split id mixed into the per-image seed


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

    Writes ``root/images/{train,val,test}/*.jpg``, ``root/labels/...`` (normalised coordinates), ``root/data.yaml``
    and, last, the stamp file. A stamp matching the arguments reuses the set; otherwise the stamp, ``data.yaml``,
    ``images`` and ``labels`` under ``root`` are removed and redrawn. Nothing else under ``root`` is touched.

    Args:
        root (str | Path): Output directory; created if missing.
        n_train (int): Number of training images, at least 1.
        n_val (int): Number of validation images (for choosing hyper-parameters), at least 1.
        n_test (int): Number of test images (for reporting), at least 0; with 0 the ``test`` key is omitted.
        imgsz (int): Side of the square images in pixels, at least 32.
        seed (int): Non-negative base seed.
        nc (int): Number of classes, 1 to 8 (the first ``nc`` names of the style, `class_names`).
        max_objects (int): Maximum number of objects drawn per image, at least 1.
        progress (bool): Show a progress bar per split and log where the data set was written.
        style (str): A key of ``STYLES``: ``shapes``, ``glyphs`` or ``aerial``.
        task (str): The label kind, one of ``TASKS``, every geometry from the object's full shape: ``detect``
            (``cls cx cy w h``), ``segment`` (the outer contour), ``pose`` (the box, then ``x y v`` for the 4
            extreme points of `KPT_NAMES`; ``kpt_shape: [4, 3]`` and ``flip_idx`` in ``data.yaml``) or ``obb`` (the
            minimum-area rectangle's corners).

    Returns:
        (Path): Path of the written ``data.yaml``.
    """
    names = class_names(nc, style)
    n_train, n_val, n_test, imgsz, seed, max_objects = _checked(task, n_train, n_val, n_test, imgsz, seed, max_objects)
    root = Path(root).expanduser().resolve()
    counts = {"train": n_train, "val": n_val, "test": n_test}
    stamp = _stamp(counts, imgsz, seed, max_objects, names, style, task)
    yaml_path, stamp_path = root / "data.yaml", root / STAMP_NAME
    data_yaml = _data_yaml(root, names, with_test=n_test > 0, task=task)

    if _read_json(stamp_path) == stamp and yaml_path.is_file() and _counts_ok(root, counts):
        if yaml_path.read_text(encoding="utf-8") != data_yaml:  # e.g. the folder was moved: fix the absolute path
            yaml_path.write_text(data_yaml, encoding="utf-8")
        if progress:
            LOGGER.info(f"{PREFIX}reusing synthetic data set in {root}")
        return yaml_path

    _clear(root)
    draw = partial(_labelled_image, s=imgsz, nc=len(names), max_objects=max_objects, style=STYLES[style], task=task)
    for split_id, split in enumerate(_SPLITS):
        _write_split(root, split, [[seed, split_id, i] for i in range(counts[split])], draw, progress)
    yaml_path.write_text(data_yaml, encoding="utf-8")
    _write_stamp(stamp_path, stamp)  # last: the stamp appears only once every file is in place
    if progress:
        total, nc = n_train + n_val + n_test, len(names)
        LOGGER.info(f"{PREFIX}wrote {total} synthetic images ({nc} classes, {imgsz} px) to {root}, config {yaml_path}")
    return yaml_path


_MINIMA = {"n_train": 1, "n_val": 1, "n_test": 0, "imgsz": 32, "seed": 0, "max_objects": 1}
"""The integer arguments of `make_dataset` besides ``nc``, in signature order, and their smallest values."""


def _checked(task: str, *values: int) -> list[int]:
    """Return ``values`` (those of `_MINIMA`, in its order) as ints; raise ValueError for a bad task or value."""
    if task not in LINES:
        raise ValueError(f"task must be one of {list(TASKS)}, got {task!r}")
    ints = [as_int(value, name) for value, name in zip(values, _MINIMA)]
    for value, (name, low) in zip(ints, _MINIMA.items()):
        if value < low:
            raise ValueError(f"{name} must be >= {low}, got {value}")
    return ints


def _stamp(
    counts: dict[str, int], imgsz: int, seed: int, max_objects: int, names: list[str], style: str, task: str
) -> dict:
    """Return the stamp of a data set: the generator, its version and the arguments that shape the files."""
    stamp = {"generator": "yolokd.data.synthetic", "version": _VERSION}
    stamp.update({f"n_{split}": n for split, n in counts.items()})
    stamp.update({"imgsz": imgsz, "seed": seed, "nc": len(names), "max_objects": max_objects, "names": names})
    if style != "shapes":  # the default's stamp is unchanged, so existing shapes data sets are reused
        stamp["style"] = style
    if task != "detect":  # likewise for the default task
        stamp["task"] = task
    return stamp


def _clear(root: Path) -> None:
    """Remove the stamp, ``data.yaml`` and the ``images`` and ``labels`` folders under ``root``; nothing else."""
    (root / STAMP_NAME).unlink(missing_ok=True)  # first: an interruption can never leave a stamp claiming a full set
    (root / "data.yaml").unlink(missing_ok=True)
    for sub in ("images", "labels"):
        if (root / sub).is_dir() and not (root / sub).is_symlink():
            shutil.rmtree(root / sub)
        elif (root / sub).exists():
            (root / sub).unlink()


def _labelled_image(
    rng: np.random.Generator, s: int, nc: int, max_objects: int, style: Style, task: str
) -> tuple[np.ndarray, str]:
    """Return one image drawn with ``rng`` (`render`) and the text of its label file for ``task``."""
    img, owner, labelled = render(rng, s, nc, max_objects, style)
    return img, "".join(f"{LINES[task](obj, owner)}\n" for obj in labelled)


def _write_split(root: Path, split: str, seeds: list[list[int]], draw: Callable, progress: bool) -> None:
    """Write one image and label file of ``split`` per seed, drawn by ``draw(default_rng(seed))``; none for no seeds."""
    if not seeds:
        return
    img_dir, lbl_dir = root / "images" / split, root / "labels" / split
    img_dir.mkdir(parents=True, exist_ok=True)
    lbl_dir.mkdir(parents=True, exist_ok=True)
    for i, seed in enumerate(TQDM(seeds, desc=f"{PREFIX}{split}", total=len(seeds), disable=not progress, unit="img")):
        img, lines = draw(np.random.default_rng(seed))
        stem = f"{split}_{i:06d}"
        if not cv2.imwrite(str(img_dir / f"{stem}.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 95]):
            raise OSError(f"could not write {img_dir / f'{stem}.jpg'}")
        (lbl_dir / f"{stem}.txt").write_text(lines, encoding="utf-8")


def _write_stamp(path: Path, stamp: dict) -> None:
    """Write ``stamp`` as JSON to ``path`` atomically (through a temporary file)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(stamp, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


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
