# yolokd, AGPL-3.0 License
"""Tests for the synthetic shapes data set generator ``yolokd.data.synthetic``."""

from __future__ import annotations

import hashlib
import json
import os

os.environ.setdefault("YOLO_OFFLINE", "1")  # before anything imports ultralytics

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import yaml  # noqa: E402

from yolokd.data.synthetic import SHAPES, STAMP_NAME, class_names, make_dataset  # noqa: E402

SMALL = {"n_train": 6, "n_val": 3, "n_test": 3, "imgsz": 64, "progress": False}


def _files(root: Path) -> dict[str, bytes]:
    """Return {relative path: bytes} of every image and label file under ``root``."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for sub in ("images", "labels")
        for p in sorted((root / sub).rglob("*"))
        if p.is_file()
    }


def _labels(root: Path, split: str = "train") -> list[np.ndarray]:
    """Return the labels of every image of ``split`` as (n, 5) float arrays."""
    files = sorted((root / "labels" / split).glob("*.txt"))
    return [np.loadtxt(f, ndmin=2).reshape(-1, 5) for f in files]


@pytest.fixture(scope="module")
def content_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 50-image, 8-class training set (shared by the content tests)."""
    root = tmp_path_factory.mktemp("content")
    return make_dataset(root, n_train=50, n_val=5, n_test=5, imgsz=128, nc=8, seed=3, progress=False).parent


def test_make_dataset_is_deterministic(tmp_path: Path) -> None:
    """The same arguments give byte-identical files in different folders; another seed gives different ones."""
    a = _files(make_dataset(tmp_path / "a", **SMALL).parent)
    b = _files(make_dataset(tmp_path / "b", **SMALL).parent)
    c = _files(make_dataset(tmp_path / "c", seed=1, **SMALL).parent)
    assert len(a) == 2 * (6 + 3 + 3)
    assert a == b
    assert a.keys() == c.keys()
    assert all(a[k] != c[k] for k in a if k.startswith("images/"))


def test_make_dataset_image_independent_of_count(tmp_path: Path) -> None:
    """Image i is the same whether 3 or 6 training images are generated."""
    few = _files(make_dataset(tmp_path / "few", **{**SMALL, "n_train": 3}).parent)
    many = _files(make_dataset(tmp_path / "many", **SMALL).parent)
    assert few.items() <= many.items()


def test_make_dataset_label_format(tmp_path: Path) -> None:
    """Every label line has 5 fields, a valid class, 6 decimals, normalised coordinates and a box inside the image."""
    root = make_dataset(tmp_path, n_train=20, n_val=2, n_test=2, imgsz=96, nc=5, progress=False).parent
    for split in ("train", "val", "test"):
        images = sorted(p.stem for p in (root / "images" / split).glob("*.jpg"))
        labels = sorted(p.stem for p in (root / "labels" / split).glob("*.txt"))
        assert images == labels
        for f in (root / "labels" / split).glob("*.txt"):
            lines = f.read_text().splitlines()
            assert lines, f"{f} has no objects"
            for line in lines:
                fields = line.split()
                assert len(fields) == 5
                assert fields[0].isdigit() and 0 <= int(fields[0]) < 5
                assert all(len(v.split(".")[1]) == 6 for v in fields[1:])
                cx, cy, w, h = map(float, fields[1:])
                assert all(0 < v <= 1 for v in (cx, cy, w, h))
                assert cx - w / 2 >= -1e-6 and cx + w / 2 <= 1 + 1e-6
                assert cy - h / 2 >= -1e-6 and cy + h / 2 <= 1 + 1e-6


def test_make_dataset_yaml_loads_with_ultralytics(tmp_path: Path) -> None:
    """data.yaml passes Ultralytics' check_det_dataset with the right nc, names and split paths."""
    from ultralytics.data.utils import check_det_dataset

    yaml_path = make_dataset(tmp_path, nc=4, **SMALL)
    data = check_det_dataset(str(yaml_path))
    assert data["nc"] == 4
    assert data["names"] == dict(enumerate(["circle", "square", "triangle", "cross"]))
    assert Path(data["path"]) == tmp_path.resolve()
    for split in ("train", "val", "test"):
        assert Path(data[split]) == tmp_path.resolve() / "images" / split


def test_make_dataset_without_test_split(tmp_path: Path) -> None:
    """With n_test=0 no test images are written and data.yaml has no test key."""
    from ultralytics.data.utils import check_det_dataset

    root = make_dataset(tmp_path, **{**SMALL, "n_test": 0}).parent
    assert not (root / "images" / "test").exists()
    assert "test" not in yaml.safe_load((root / "data.yaml").read_text())
    assert check_det_dataset(str(root / "data.yaml")).get("test") is None


def test_make_dataset_sizes_span_small_to_large(content_set: Path) -> None:
    """Box sides range from small (< 15% of the image: objects are 12-50%, some cut by the border) to large (> 30%)."""
    boxes = np.concatenate(_labels(content_set))
    sides = np.concatenate([boxes[:, 3], boxes[:, 4]])
    assert sides.min() < 0.15
    assert sides.max() > 0.3


def test_make_dataset_every_class_appears(content_set: Path) -> None:
    """All 8 classes occur in a 50-image set, and images hold several objects on average."""
    labels = _labels(content_set)
    classes = np.concatenate(labels)[:, 0].astype(int)
    assert set(classes) == set(range(8))
    assert 2 <= np.mean([len(x) for x in labels]) <= 8


def test_make_dataset_has_overlapping_boxes(content_set: Path) -> None:
    """Some images contain overlapping boxes (occlusion)."""

    def overlaps(b: np.ndarray) -> bool:
        xy0, xy1 = b[:, 1:3] - b[:, 3:5] / 2, b[:, 1:3] + b[:, 3:5] / 2
        inter = np.clip(np.minimum(xy1[:, None], xy1[None]) - np.maximum(xy0[:, None], xy0[None]), 0, None).prod(2)
        np.fill_diagonal(inter, 0)
        return bool((inter > 0).any())

    assert sum(overlaps(b) for b in _labels(content_set)) >= 5


def test_make_dataset_splits_are_disjoint(content_set: Path) -> None:
    """No image is identical across the train, val and test splits."""
    hashes = {
        split: {hashlib.sha256(p.read_bytes()).hexdigest() for p in (content_set / "images" / split).glob("*.jpg")}
        for split in ("train", "val", "test")
    }
    assert len(hashes["train"]) == 50 and len(hashes["val"]) == 5 and len(hashes["test"]) == 5
    assert not hashes["train"] & hashes["val"]
    assert not hashes["train"] & hashes["test"]
    assert not hashes["val"] & hashes["test"]


def test_make_dataset_reuses_existing(tmp_path: Path) -> None:
    """A second call with the same arguments returns at once and leaves every file untouched."""
    yaml_path = make_dataset(tmp_path, **SMALL)
    stamp = json.loads((tmp_path / STAMP_NAME).read_text())
    assert stamp["seed"] == 0 and stamp["n_train"] == 6 and "version" in stamp
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    before = {p: p.stat().st_mtime_ns for p in files}
    assert make_dataset(tmp_path, **SMALL) == yaml_path
    assert {p: p.stat().st_mtime_ns for p in files} == before
    assert sorted(p for p in tmp_path.rglob("*") if p.is_file()) == sorted(files)


def test_make_dataset_regenerates_on_changed_args(tmp_path: Path) -> None:
    """Changed arguments regenerate cleanly: new content, no left-over files from the old set."""
    make_dataset(tmp_path, **SMALL)
    old = _files(tmp_path)
    make_dataset(tmp_path, **{**SMALL, "n_train": 4, "seed": 5})
    new = _files(tmp_path)
    assert len(new) == 2 * (4 + 3 + 3)
    assert new == _files(make_dataset(tmp_path / "ref", **{**SMALL, "n_train": 4, "seed": 5}).parent)
    assert new != {k: v for k, v in old.items() if k in new}
    assert json.loads((tmp_path / STAMP_NAME).read_text())["seed"] == 5


def test_make_dataset_regenerates_interrupted(tmp_path: Path) -> None:
    """A folder without a stamp (an interrupted run) is wiped and regenerated."""
    make_dataset(tmp_path / "ref", **SMALL)
    make_dataset(tmp_path / "run", **SMALL)
    run = tmp_path / "run"
    (run / STAMP_NAME).unlink()
    (run / "labels" / "train" / "train_000000.txt").write_text("junk\n")
    (run / "images" / "train" / "stray.jpg").write_bytes(b"")
    make_dataset(run, **SMALL)
    assert _files(run) == _files(tmp_path / "ref")
    assert (run / STAMP_NAME).is_file()


def test_make_dataset_regenerates_missing_files(tmp_path: Path) -> None:
    """A stamped set with a deleted image is regenerated rather than reused."""
    make_dataset(tmp_path, **SMALL)
    (tmp_path / "images" / "val" / "val_000001.jpg").unlink()
    make_dataset(tmp_path, **SMALL)
    assert (tmp_path / "images" / "val" / "val_000001.jpg").is_file()


def test_make_dataset_with_progress(tmp_path: Path) -> None:
    """progress=True (progress bars and a log line) works and writes the same files."""
    a = _files(make_dataset(tmp_path / "a", **{**SMALL, "progress": True}).parent)
    assert a == _files(make_dataset(tmp_path / "b", **SMALL).parent)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"nc": 0},
        {"nc": 9},
        {"n_train": 0},
        {"n_val": 0},
        {"n_test": -1},
        {"imgsz": 31},
        {"max_objects": 0},
        {"seed": -1},
        {"imgsz": 64.5},
    ],
)
def test_make_dataset_invalid_args_raise(tmp_path: Path, kwargs: dict) -> None:
    """Out-of-range arguments raise ValueError before anything is written."""
    with pytest.raises(ValueError):
        make_dataset(tmp_path / "ds", **{**SMALL, **kwargs})
    assert not (tmp_path / "ds").exists()


def test_class_names_prefix_of_shapes() -> None:
    """class_names(nc) gives the first nc shape names and rejects nc outside 1..8."""
    assert class_names(1) == ["circle"]
    assert class_names(8) == list(SHAPES)
    assert len(set(SHAPES)) == 8
    for nc in (0, 9):
        with pytest.raises(ValueError):
            class_names(nc)


def test_make_dataset_glyphs_style_differs_and_labels(tmp_path: Path) -> None:
    """style='glyphs' draws other classes, backgrounds and sizes with the same API; 'shapes' stays the default."""
    from yolokd.data.synthetic import GLYPHS

    kw = {**SMALL, "n_train": 30, "imgsz": 128, "nc": 8}
    shapes = make_dataset(tmp_path / "s", **kw)
    glyphs = make_dataset(tmp_path / "g", style="glyphs", **kw)
    assert yaml.safe_load(glyphs.read_text())["names"] == dict(enumerate(GLYPHS))
    assert yaml.safe_load(shapes.read_text())["names"] == dict(enumerate(SHAPES))
    assert json.loads((glyphs.parent / STAMP_NAME).read_text())["style"] == "glyphs"
    assert "style" not in json.loads((shapes.parent / STAMP_NAME).read_text())  # shapes stamps stay as they were
    a, b = _files(shapes.parent), _files(glyphs.parent)
    assert all(a[k] != b[k] for k in a if k.startswith("images/"))
    def sides(root: Path) -> np.ndarray:
        return np.concatenate([np.concatenate([x[:, 3], x[:, 4]]) for x in _labels(root)])

    assert sides(glyphs.parent).min() > 0.04  # glyph boxes are about 16-60% of the side (some cut by the border)
    assert np.median(sides(glyphs.parent)) > np.median(sides(shapes.parent))
    assert set(np.concatenate(_labels(glyphs.parent))[:, 0].astype(int)) == set(range(8))
    assert _files(make_dataset(tmp_path / "g2", style="glyphs", **kw).parent) == b  # deterministic


def test_make_dataset_glyph_boxes_are_tight(tmp_path: Path) -> None:
    """A lone glyph's label is the tight box of its drawn pixels (within a pixel)."""
    import cv2

    from yolokd.data.synthetic import STYLES

    rng = np.random.default_rng(0)
    for cls in range(8):
        mask = np.zeros((101, 101), np.uint8)
        STYLES["glyphs"].draw(mask, cls, 60.0, 50.0, 50.0, rng)
        x, y, w, h = cv2.boundingRect(mask)
        assert 20 <= max(w, h) <= 70 and x > 0 and y > 0 and x + w < 101 and y + h < 101  # inside the canvas


def test_make_dataset_unknown_style_raises(tmp_path: Path) -> None:
    """An unknown style is a ValueError naming the styles, before anything is written."""
    with pytest.raises(ValueError, match="glyphs"):
        make_dataset(tmp_path / "ds", style="dots", **SMALL)
    assert not (tmp_path / "ds").exists()
    assert class_names(2, style="glyphs") == ["A", "E"]
