# yolokd, AGPL-3.0 License
"""Tests for the synthetic shapes data set generator ``yolokd.data.synthetic``."""

from __future__ import annotations

import hashlib
import json
import os

os.environ.setdefault("YOLO_OFFLINE", "1")  # before anything imports ultralytics

from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
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


# Tasks: the same images and objects labelled as segment polygons, pose keypoints or oriented boxes.

TASK_KW = {"n_train": 16, "n_val": 2, "n_test": 0, "imgsz": 128, "nc": 8, "seed": 1, "progress": False}
S = TASK_KW["imgsz"]


@pytest.fixture(scope="module")
def task_sets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same arguments written without ``task`` (``plain``) and with each of the four tasks."""
    root = tmp_path_factory.mktemp("tasks")
    sets = {"plain": make_dataset(root / "plain", **TASK_KW).parent}
    for task in ("detect", "segment", "pose", "obb"):
        sets[task] = make_dataset(root / task, task=task, **TASK_KW).parent
    return sets


def _by_suffix(root: Path, suffix: str) -> dict[str, bytes]:
    """Return {relative path: bytes} of the ``suffix`` files under ``root`` (not Ultralytics' ``*.cache`` files)."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob(f"*{suffix}"))}


def _rows(root: Path, split: str = "train") -> list[list[np.ndarray]]:
    """Return every label line of ``split`` as a float array, per image (in file order)."""
    files = sorted((root / "labels" / split).glob("*.txt"))
    return [[np.array(line.split(), dtype=np.float64) for line in f.read_text().splitlines()] for f in files]


def _pairs(task_sets: dict[str, Path], task: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """Return (detect row, ``task`` row) for every labelled object, matched by image and line order."""
    out = []
    for det, other in zip(_rows(task_sets["detect"]), _rows(task_sets[task])):
        assert len(det) == len(other)  # the same objects are labelled in every task
        out += list(zip(det, other))
    return out


def _xyxy(det: np.ndarray) -> np.ndarray:
    """Return a detect row's box as ``x0 y0 x1 y1`` in pixels."""
    cx, cy, w, h = det[1:5] * S
    return np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])


def _inside(det: np.ndarray, margin: float = 1.0) -> bool:
    """Return True if a detect row's box does not touch the image border (the object is not cut off)."""
    x0, y0, x1, y1 = _xyxy(det)
    return min(x0, y0) >= margin and max(x1, y1) <= S - margin


def _load(root: Path, task: str):
    """Build Ultralytics' own evaluation data set of ``task`` for the train split of ``root``."""
    from ultralytics.cfg import get_cfg
    from ultralytics.data.build import build_yolo_dataset
    from ultralytics.data.utils import check_det_dataset

    data = check_det_dataset(str(root / "data.yaml"))
    return build_yolo_dataset(get_cfg(overrides={"task": task, "imgsz": S}), data["train"], 4, data, mode="val")


def _check_loaded(ds, root: Path) -> None:
    """Every image was loaded (none dropped as corrupt) with as many labels as its file has lines."""
    files = sorted((root / "labels" / "train").glob("*.txt"))
    assert len(ds.labels) == len(files) == TASK_KW["n_train"]
    by_stem = {Path(lb["im_file"]).stem: lb for lb in ds.labels}
    for f in files:
        assert len(by_stem[f.stem]["cls"]) == len(f.read_text().splitlines())


def test_task_detect_unchanged_and_images_shared(task_sets: dict[str, Path]) -> None:
    """task='detect' writes today's labels and stamp; every task writes the same images and labels the same objects."""
    plain, detect = task_sets["plain"], task_sets["detect"]
    assert _by_suffix(detect, ".txt") == _by_suffix(plain, ".txt")
    assert (detect / STAMP_NAME).read_bytes() == (plain / STAMP_NAME).read_bytes()  # existing sets are reused
    assert "task" not in json.loads((plain / STAMP_NAME).read_text())
    assert (detect / "data.yaml").read_text().replace(str(detect), "") == (plain / "data.yaml").read_text().replace(
        str(plain), ""
    )
    images = _by_suffix(plain, ".jpg")
    assert len(images) == 18
    for task in ("segment", "pose", "obb"):
        assert _by_suffix(task_sets[task], ".jpg") == images
        assert _by_suffix(task_sets[task], ".txt") != _by_suffix(plain, ".txt")
        assert all(det[0] == row[0] for det, row in _pairs(task_sets, task))  # same class, line by line
        assert json.loads((task_sets[task] / STAMP_NAME).read_text())["task"] == task


def test_task_segment_polygons_match_boxes(task_sets: dict[str, Path]) -> None:
    """Each polygon has >= 3 points in [0, 1] and the bounding box of the detect label (within 1 px)."""
    pairs = _pairs(task_sets, "segment")
    assert len(pairs) > 30
    for det, row in pairs:
        assert len(row) % 2 == 1 and len(row) >= 7
        xy = row[1:].reshape(-1, 2)
        assert xy.min() >= 0 and xy.max() <= 1
        box = np.concatenate([xy.min(0), xy.max(0)]) * S
        np.testing.assert_allclose(box, _xyxy(det), atol=1.0)  # 0.5 px: the contour runs through pixel centres
    npoints = [(len(row) - 1) // 2 for _, row in pairs]
    assert max(npoints) <= 60  # simplified, not one point per boundary pixel


def test_task_segment_glyph_polygons_match_boxes(tmp_path: Path) -> None:
    """A glyph's outer contour also spans its whole box (within 1 px): no glyph part lies outside it."""
    kw = {**TASK_KW, "n_train": 10, "style": "glyphs"}
    sets = {task: make_dataset(tmp_path / task, task=task, **kw).parent for task in ("detect", "segment")}
    pairs = _pairs(sets, "segment")
    assert len(pairs) > 20
    for det, row in pairs:
        xy = row[1:].reshape(-1, 2)
        np.testing.assert_allclose(np.concatenate([xy.min(0), xy.max(0)]) * S, _xyxy(det), atol=1.0)


def test_task_segment_loads_with_ultralytics(task_sets: dict[str, Path]) -> None:
    """Ultralytics reads every segment label with a polygon and rasterises one mask per object."""
    ds = _load(task_sets["segment"], "segment")
    _check_loaded(ds, task_sets["segment"])
    assert all(len(lb["segments"]) == len(lb["cls"]) for lb in ds.labels)
    item = ds[0]
    n = len(item["cls"])
    assert set(item["masks"].unique().tolist()) == set(range(n + 1))  # overlap mask: 0 background, 1..n objects


def test_task_pose_keypoints_are_extreme_points(task_sets: dict[str, Path]) -> None:
    """4 keypoints per object on the detect box: top on the top edge with the least y, right on the right edge..."""
    pairs = _pairs(task_sets, "pose")
    checked, vis = 0, []
    for det, row in pairs:
        assert len(row) == 5 + 4 * 3
        np.testing.assert_array_equal(row[:5], det)  # the same box
        kpt = row[5:].reshape(4, 3)
        assert set(kpt[:, 2]) <= {0, 1, 2}
        assert (kpt[kpt[:, 2] == 0, :2] == 0).all()
        assert kpt[:, :2].min() >= 0 and kpt[:, :2].max() <= 1
        vis += kpt[:, 2].tolist()
        if not _inside(det) or (kpt[:, 2] != 2).any():
            continue
        (tx, ty), (rx, ry), (bx, by), (lx, ly) = kpt[:, :2] * S
        x0, y0, x1, y1 = _xyxy(det)
        assert abs(ty - y0) <= 1 and abs(rx - x1) <= 1 and abs(by - y1) <= 1 and abs(lx - x0) <= 1
        assert ty == min(ty, ry, by, ly) and by == max(ty, ry, by, ly)
        assert rx == max(tx, rx, bx, lx) and lx == min(tx, rx, bx, lx)
        assert x0 <= tx <= x1 and x0 <= bx <= x1 and y0 <= ry <= y1 and y0 <= ly <= y1
        checked += 1
    assert checked > 20
    assert {0, 1, 2} <= set(vis)  # cut off by the border, hidden by a later object, and visible all occur
    data = yaml.safe_load((task_sets["pose"] / "data.yaml").read_text())
    assert data["kpt_shape"] == [4, 3] and data["flip_idx"] == [0, 3, 2, 1]
    assert data["kpt_names"][0] == ["top", "right", "bottom", "left"] and len(data["kpt_names"]) == 8


def test_task_pose_visibility_from_owner() -> None:
    """v is 2 where the object owns the extreme pixel, 1 where a later object does, 0 0 0 outside the image."""
    from yolokd.data.synthetic import _Drawn, _extreme_points, _pose_line

    canvas = np.zeros((21, 21), np.uint8)
    canvas[5:16, 3:18] = 255  # rows 5..15, columns 3..17: a flat top, so the top keypoint is the row's mean x
    pts, pix = _extreme_points(canvas)
    np.testing.assert_allclose(pts, [[10.5, 5.5], [17.5, 10.5], [10.5, 15.5], [3.5, 10.5]])
    np.testing.assert_array_equal(pix, [[10, 5], [17, 10], [10, 15], [3, 10]])
    owner = np.full((40, 40), -1, np.int16)
    owner[15:26, 13:28] = 0  # origin (10, 10): the object fills image rows 15..25, columns 13..27
    owner[20:30, 25:40] = 1  # a later object hides its right-most pixel (27, 20)
    kpt = np.array(_pose_line(_Drawn(0, 3, canvas, (10, 10), (20.0, 20.0), 15.0), owner).split()[5:], float)
    np.testing.assert_array_equal(kpt[2::3], [2, 1, 2, 2])
    np.testing.assert_allclose(kpt[:2] * 40, [20.5, 15.5])
    kpt = np.array(_pose_line(_Drawn(0, 3, canvas, (-5, 10), (5.0, 20.0), 15.0), owner).split()[5:], float)
    np.testing.assert_array_equal(kpt[9:], [0, 0, 0])  # left-most pixel at x = -2


def test_task_pose_loads_with_ultralytics(task_sets: dict[str, Path]) -> None:
    """Ultralytics reads every pose label with 4 keypoints of 3 values."""
    ds = _load(task_sets["pose"], "pose")
    _check_loaded(ds, task_sets["pose"])
    assert all(lb["keypoints"].shape == (len(lb["cls"]), 4, 3) for lb in ds.labels)
    assert ds[0]["keypoints"].shape[1:] == (4, 3)


def test_task_obb_is_tight_rectangle(task_sets: dict[str, Path]) -> None:
    """Corners form a rectangle that holds the object's polygon and is no larger than its axis-aligned box."""
    segments = [row for _, row in _pairs(task_sets, "segment")]
    checked = 0
    for (det, row), seg in zip(_pairs(task_sets, "obb"), segments):
        assert len(row) == 9 and row[1:].min() >= 0 and row[1:].max() <= 1
        if not ((row[1:] > 0) & (row[1:] < 1)).all():  # a corner clipped to the border bends the rectangle
            continue
        c = row[1:].reshape(4, 2) * S
        sides = np.roll(c, -1, 0) - c
        lengths = np.linalg.norm(sides, axis=1)
        np.testing.assert_allclose(lengths[:2], lengths[2:], atol=0.01)  # opposite sides equal
        cos = (sides * np.roll(sides, -1, 0)).sum(1) / (lengths * np.roll(lengths, -1))
        assert np.abs(cos).max() < 1e-3  # right angles
        rect = cv2.contourArea(c.astype(np.float32))
        poly = seg[1:].reshape(-1, 2) * S
        assert all(cv2.pointPolygonTest(c.astype(np.float32), tuple(map(float, p)), True) >= -0.01 for p in poly)
        assert rect >= cv2.contourArea(poly.astype(np.float32))  # a convex set holding the polygon's vertices
        x0, y0, x1, y1 = _xyxy(det)
        assert rect <= (x1 - x0) * (y1 - y0) + 0.05  # the axis-aligned box is one candidate rectangle
        checked += 1
    assert checked > 20


def test_task_obb_of_rotated_rectangle() -> None:
    """A drawn rotated rectangle's obb is that rectangle, covering every pixel (as unit squares) of it."""
    from yolokd.data.synthetic import _rotated_box

    canvas = np.zeros((60, 60), np.uint8)
    drawn = cv2.boxPoints(((30.0, 30.0), (36.0, 14.0), 30.0))
    cv2.fillPoly(canvas, [np.round(drawn).astype(np.int32)], 255)
    corners = _rotated_box(canvas)
    (cx, cy), (w, h), _ = cv2.minAreaRect(corners.astype(np.float32))
    assert abs(cx - 30.5) < 1 and abs(cy - 30.5) < 1 and abs(max(w, h) - 37) < 1.5 and abs(min(w, h) - 15) < 1.5
    assert cv2.contourArea(corners.astype(np.float32)) >= cv2.countNonZero(canvas)
    square = np.zeros((20, 20), np.uint8)
    square[4:12, 6:16] = 255
    assert sorted(map(tuple, _rotated_box(square).tolist())) == [(6, 4), (6, 12), (16, 4), (16, 12)]


def test_task_obb_loads_with_ultralytics(task_sets: dict[str, Path]) -> None:
    """Ultralytics reads every obb label as a rotated box."""
    ds = _load(task_sets["obb"], "obb")
    _check_loaded(ds, task_sets["obb"])
    assert ds[0]["bboxes"].shape[1] == 5  # xywhr


def test_task_deterministic_and_switching_regenerates(tmp_path: Path) -> None:
    """A non-detect task gives the same files for the same arguments; another task in the same folder regenerates."""
    a = _files(make_dataset(tmp_path / "a", task="pose", **SMALL).parent)
    assert a == _files(make_dataset(tmp_path / "b", task="pose", **SMALL).parent)
    make_dataset(tmp_path / "a", task="obb", **SMALL)
    obb = _files(tmp_path / "a")
    assert json.loads((tmp_path / "a" / STAMP_NAME).read_text())["task"] == "obb"
    assert {k: v for k, v in obb.items() if k.startswith("images/")} == {
        k: v for k, v in a.items() if k.startswith("images/")
    }
    assert all(len(line.split()) == 9 for k, v in obb.items() if k.endswith(".txt") for line in v.decode().splitlines())
    assert "kpt_shape" not in yaml.safe_load((tmp_path / "a" / "data.yaml").read_text())
    make_dataset(tmp_path / "a", **SMALL)  # back to detect: regenerated, stamp without a task
    assert "task" not in json.loads((tmp_path / "a" / STAMP_NAME).read_text())
    assert _files(tmp_path / "a") == _files(make_dataset(tmp_path / "d", **SMALL).parent)


def test_task_unknown_raises(tmp_path: Path) -> None:
    """An unknown task is a ValueError naming the tasks, before anything is written."""
    with pytest.raises(ValueError, match="segment"):
        make_dataset(tmp_path / "ds", task="classify", **SMALL)
    assert not (tmp_path / "ds").exists()


def test_scaled_yaml_task_heads(tmp_path: Path) -> None:
    """scaled_yaml(task=...) ends each family in its task head; task='detect' writes what it wrote before."""
    from ultralytics.utils import YAML

    from yolokd.demo import scaled_yaml

    heads = {"detect": "Detect", "segment": "Segment", "pose": "Pose", "obb": "OBB"}
    for family in ("yolov8", "yolo11", "yolo26"):
        plain = scaled_yaml(tmp_path / f"{family}.yaml", family=family)
        detect = scaled_yaml(tmp_path / f"{family}-detect.yaml", family=family, task="detect")
        assert plain.read_bytes() == detect.read_bytes()
        for task, head in heads.items():
            d = YAML.load(scaled_yaml(tmp_path / f"{family}-{task}.yaml", family=family, task=task, width=0.25))
            assert d["head"][-1][2].removesuffix("26") == head
            assert d["width_multiple"] == 0.25 and "scales" not in d
    with pytest.raises(ValueError, match="obb"):
        scaled_yaml(tmp_path / "x.yaml", task="classify")


def test_make_dataset_aerial_style_has_many_small_objects(tmp_path: Path) -> None:
    """style='aerial': the shapes' classes, but small (4-12% of the side) and up to 3x max_objects per image."""
    kw = {**SMALL, "n_train": 30, "imgsz": 128, "nc": 8, "max_objects": 6}
    shapes, aerial = make_dataset(tmp_path / "s", **kw), make_dataset(tmp_path / "a", style="aerial", **kw)
    assert json.loads((aerial.parent / STAMP_NAME).read_text())["style"] == "aerial"
    a, b = _files(shapes.parent), _files(aerial.parent)
    assert all(a[k] != b[k] for k in a if k.startswith("images/"))
    boxes_s, boxes_a = _labels(shapes.parent), _labels(aerial.parent)
    sides = np.concatenate([np.maximum(x[:, 3], x[:, 4]) for x in boxes_a])
    assert sides.max() < 0.12 * 1.2 + 2 / 128  # the largest shape's extent is below 1.2 x its size (+ rounding)
    assert np.median(sides) < np.median(np.concatenate([np.maximum(x[:, 3], x[:, 4]) for x in boxes_s])) / 2
    assert max(len(x) for x in boxes_a) > 6 and np.mean([len(x) for x in boxes_a]) > np.mean([len(x) for x in boxes_s])
    assert _files(make_dataset(tmp_path / "a2", style="aerial", **kw).parent) == b  # deterministic
