# yolokd, AGPL-3.0 License
"""A semi-supervised view of a data set: a fraction of its training labels, the other images as unlabeled ones."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from ultralytics.data.utils import img2label_paths
from ultralytics.utils import YAML

from yolokd.unlabeled import list_images

_STAMP = ".yolokd_semi.json"


def _train_images(data: dict) -> list[Path]:
    """The training images of a data dict whose ``train`` is a folder relative to ``path`` (sorted)."""
    return [Path(f) for f in list_images(str(Path(data["path"]) / data["train"]))]


def view_stamp(data_yaml: str | Path) -> dict:
    """``{"view": stamp}`` for the data.yaml of a view `labeled_split` wrote, {} for any other data set."""
    try:
        return {"view": json.loads((Path(data_yaml).parent / _STAMP).read_text())}
    except (OSError, ValueError):
        return {}


def labeled_split(
    data_yaml: str | Path, out: str | Path, labeled_fraction: float, extra: list[Path] = (), repeat: bool = False
) -> Path:
    """Write (or reuse) the semi-supervised view of ``data_yaml`` in ``out`` and return its ``data.yaml``.

    The first ``labeled_fraction`` of the training images keep their labels, the others (and ``extra``) go to
    ``out/unlabeled`` (``unlabeled: unlabeled`` in the yaml); ``val``/``test`` are unchanged.

    Args:
        data_yaml (str | Path): A data set whose ``train`` is a folder of images with YOLO labels beside them.
        out (str | Path): The view's folder (its ``images``, ``labels`` and ``unlabeled`` folders are rewritten).
        labeled_fraction (float): In (0, 1]; at least one image keeps its labels.
        extra (list[Path]): More unlabeled images (their labels are not copied).
        repeat (bool): Train on ``out/train.txt``, which repeats the labelled images up to the source's image count.
    """
    if not 0 < labeled_fraction <= 1:
        raise ValueError(f"labeled_fraction must be in (0, 1], got {labeled_fraction!r}")
    data, out = YAML.load(Path(data_yaml)), Path(out).resolve()
    images = _train_images(data)
    n = max(1, round(labeled_fraction * len(images)))
    stamp = {"source": str(Path(data_yaml).resolve()), "fraction": labeled_fraction, "n": n, "extra": len(extra)}
    stamp.update({"repeat": True} if repeat else {})
    yaml_path = out / "data.yaml"
    try:
        if json.loads((out / _STAMP).read_text()) == stamp and yaml_path.is_file():
            return yaml_path
    except (OSError, ValueError):
        pass
    (out / _STAMP).unlink(missing_ok=True)
    for sub in ("images", "labels", "unlabeled"):
        shutil.rmtree(out / sub, ignore_errors=True)
    (out / "train.txt").unlink(missing_ok=True)
    (out / "images" / "train").mkdir(parents=True)
    (out / "labels" / "train").mkdir(parents=True)
    (out / "unlabeled").mkdir(parents=True)
    for img, label in zip(images[:n], img2label_paths([str(p) for p in images[:n]])):
        shutil.copy(img, out / "images" / "train" / img.name)
        if Path(label).is_file():
            shutil.copy(label, out / "labels" / "train" / Path(label).name)
    for i, img in enumerate([*images[n:], *map(Path, extra)]):
        shutil.copy(img, out / "unlabeled" / f"{i:06d}{img.suffix}")  # renamed: extra images may share names
    train = "images/train"
    if repeat:  # the same number of entries as the source's training split: an epoch of as many steps
        names = sorted(p.name for p in (out / "images" / "train").iterdir())
        lines = [str(out / "images" / "train" / names[i % len(names)]) for i in range(len(images))]
        (out / "train.txt").write_text("\n".join(lines) + "\n")
        train = "train.txt"
    root = Path(data["path"])
    view = {
        **{k: v for k, v in data.items() if k not in {"path", "train", "val", "test", "unlabeled"}},
        "path": str(out),
        "train": train,
        "unlabeled": "unlabeled",
        **{k: str((root / data[k]).resolve()) for k in ("val", "test") if data.get(k)},
    }
    YAML.save(yaml_path, view)
    (out / _STAMP).write_text(json.dumps(stamp))  # last: an interrupted view is rewritten next time
    return yaml_path
