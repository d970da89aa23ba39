# yolokd, AGPL-3.0 License
"""Unlabeled images: where they come from, their data set (Ultralytics' augmentation, no labels) and their stream.

``unlabeled=`` names a folder or a ``.txt`` list of images (else the data yaml's ``unlabeled:`` key). Each step
draws ``round(unlabeled_ratio x batch)`` of them from an endless shuffled stream; their label files are never read.
"""

from __future__ import annotations

from copy import copy
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from ultralytics.data.build import build_dataloader
from ultralytics.data.dataset import YOLODataset
from ultralytics.data.utils import IMG_FORMATS, exif_size, img2label_paths
from ultralytics.utils import LOGGER, RANK

from yolokd.config import PREFIX, KDError

__all__ = ["UnlabeledDataset", "UnlabeledStream", "check_unlabeled", "resolve_unlabeled"]


def resolve_unlabeled(value: Any, data: dict | None) -> str | list[str] | None:
    """The unlabeled source of a run: ``unlabeled=`` as given, else the data yaml's ``unlabeled:`` key (or None).

    Examples:
        >>> Path(resolve_unlabeled(None, {"path": "/data/set", "unlabeled": "images/raw"})).as_posix()
        '/data/set/images/raw'
    """
    if value is False:  # unlabeled=False: none, whatever the data yaml says
        return None
    if value not in (None, ""):
        return [str(v) for v in value] if isinstance(value, (list, tuple)) else str(value)
    raw = (data or {}).get("unlabeled")
    if raw in (None, ""):
        return None
    root = Path(str((data or {}).get("path") or ""))

    def rooted(p: Any) -> str:
        p = Path(str(p))
        return str(p if p.is_absolute() or p.exists() or not str(root) else root / p)

    return [rooted(p) for p in raw] if isinstance(raw, (list, tuple)) else rooted(raw)


def list_images(source: str | list[str]) -> list[str]:
    """The image files of a source (folders searched recursively, ``.txt`` lists read), sorted; a `KDError` if none."""
    files: list[str] = []
    for p in [Path(s) for s in (source if isinstance(source, list) else [source])]:
        if p.is_dir():
            files += [str(f) for f in p.rglob("*.*")]
        elif p.is_file() and p.suffix.lower() == ".txt":
            base = str(p.parent) + "/"
            lines = [x.strip() for x in p.read_text(encoding="utf-8-sig").splitlines() if x.strip()]
            files += [x.replace("./", base, 1) if x.startswith("./") else x for x in lines]
        elif p.is_file() and p.suffix[1:].lower() in IMG_FORMATS:
            raise KDError(f"unlabeled={p} is one image; pass its folder or a .txt list of image paths")
        else:
            raise KDError(f"unlabeled={p} does not exist; pass a folder of images or a .txt list of image paths")
    images = sorted({f for f in files if f.rpartition(".")[-1].lower() in IMG_FORMATS})
    if not images:
        raise KDError(
            f"unlabeled={source} holds no images ({', '.join(sorted(IMG_FORMATS)[:6])}...); pass a folder "
            f"of images or a .txt list of image paths"
        )
    return images


def label_files_beside(images: list[str]) -> int:
    """How many of ``images`` have a YOLO label file where Ultralytics would look for one (they are not used)."""
    return sum(Path(f).is_file() for f in img2label_paths(images))


def check_unlabeled(source: str | list[str], task: str) -> list[str]:
    """Check an unlabeled source before training (a detection student, images there); return the image files."""
    if task != "detect":
        raise KDError(
            f"unlabeled= trains detection students only (the student is a '{task}' model): leave it out, or train "
            f"a detection model"
        )
    images = list_images(source)
    n_labels = label_files_beside(images)
    if n_labels and RANK in {-1, 0}:
        LOGGER.warning(
            f"{PREFIX}{n_labels} of the {len(images)} unlabeled images have label files beside them; they are not "
            f"used (unlabeled images learn from the teacher alone): put labelled images in the data yaml's train split"
        )
    return images


def _image_shape(path: str) -> tuple[int, int] | None:
    """``(height, width)`` of a readable image file, None when it cannot be read."""
    try:
        with Image.open(path) as im:
            im.verify()
        with Image.open(path) as im:
            w, h = exif_size(im)
        return (h, w) if h > 9 and w > 9 else None
    except Exception:  # any decoder error: the image is skipped and counted
        return None


class UnlabeledDataset(YOLODataset):
    """Ultralytics' detection data set over images without labels: the same augmentation, empty label arrays."""

    def get_labels(self) -> list[dict]:
        """One empty label per readable image (``cls`` (0, 1), ``bboxes`` (0, 4)) with its shape."""
        labels, bad = [], []
        for f in self.im_files:
            shape = _image_shape(f)
            if shape is None:
                bad.append(f)
                continue
            labels.append(
                {
                    "im_file": f,
                    "shape": shape,
                    "cls": np.zeros((0, 1), dtype=np.float32),
                    "bboxes": np.zeros((0, 4), dtype=np.float32),
                    "segments": [],
                    "keypoints": None,
                    "normalized": True,
                    "bbox_format": "xywh",
                }
            )
        if not labels:
            raise KDError(f"unlabeled={self.img_path}: none of its {len(self.im_files)} images can be read")
        if bad and RANK in {-1, 0}:
            LOGGER.warning(f"{PREFIX}unlabeled: {len(bad)} unreadable image(s) left out, e.g. {bad[0]}")
        self.im_files = [lb["im_file"] for lb in labels]
        return labels


class UnlabeledStream:
    """An endless stream of unlabeled batches, built on first use in each (DDP) process.

    Args:
        source (str | list[str]): The unlabeled folder(s) or ``.txt`` list(s).
        args (IterableSimpleNamespace): The trainer's arguments (augmentation, ``imgsz``, ``workers``...).
        data (dict): The data set's dict.
        batch (int): Unlabeled images per batch on this process.
        stride (int): The model's largest stride.
        rank (int): The local rank (-1 without DDP).
    """

    def __init__(self, source: str | list[str], args: Any, data: dict, batch: int, stride: int, rank: int = -1):
        """Build the data set and its loader (Ultralytics' ``build_dataloader``: a DistributedSampler under DDP)."""
        self.dataset = UnlabeledDataset(
            img_path=source,
            imgsz=args.imgsz,
            batch_size=batch,
            augment=True,
            hyp=args,
            rect=False,
            cache=None,
            single_cls=args.single_cls or False,
            stride=int(stride),
            pad=0.0,
            prefix="unlabeled: ",
            task="detect",
            classes=None,
            data=data,
            fraction=1.0,
        )
        self.loader = build_dataloader(self.dataset, batch=batch, workers=args.workers, shuffle=True, rank=rank)
        self.passes = 0
        self.mosaic_closed = False
        self._it = None

    def __len__(self) -> int:
        """Unlabeled images in the stream (on every rank together)."""
        return len(self.dataset)

    def next(self) -> dict:
        """The next collated batch; a pass over the images ends, the next one starts reshuffled."""
        while True:
            if self._it is None:
                sampler = getattr(self.loader, "sampler", None)
                if hasattr(sampler, "set_epoch"):  # DDP: another order each pass, the same on every rank
                    sampler.set_epoch(self.passes)
                self._it = iter(self.loader)
            try:
                return next(self._it)
            except StopIteration:
                self._it, self.passes = None, self.passes + 1

    def close_mosaic(self, args: Any) -> None:
        """Turn mosaic off as Ultralytics does for its training loader in the last ``close_mosaic`` epochs."""
        self.dataset.mosaic = False
        self.dataset.close_mosaic(hyp=copy(args))
        self.loader.reset()
        self._it, self.mosaic_closed = None, True
