# yolokd, AGPL-3.0 License
"""The semi-supervised view of a data set: a fraction of the labels, the other training images unlabeled."""

from __future__ import annotations

import pytest
from ultralytics.utils import YAML

from yolokd.data.semi import labeled_split
from yolokd.unlabeled import check_unlabeled, resolve_unlabeled


def test_labeled_split_keeps_a_fraction_of_the_labels_and_lists_the_rest_unlabeled(tmp_path, tiny_data):
    extra = sorted((tiny_data.parent / "images" / "test").glob("*.jpg"))[:3]
    yaml_path = labeled_split(tiny_data, tmp_path / "semi", 0.25, extra=extra)
    view, full = YAML.load(yaml_path), YAML.load(tiny_data)
    root = tmp_path / "semi"
    train = sorted(p.name for p in (root / "images" / "train").iterdir())
    assert train == [f"train_{i:06d}.jpg" for i in range(4)]  # the first quarter of the 16 training images
    assert sorted(p.name for p in (root / "labels" / "train").iterdir()) == [f"train_{i:06d}.txt" for i in range(4)]
    for name in ("train_000000", "train_000003"):
        src = tiny_data.parent / "labels" / "train" / f"{name}.txt"
        assert (root / "labels" / "train" / f"{name}.txt").read_text() == src.read_text()
    assert len(list((root / "unlabeled").iterdir())) == 12 + 3 and not (root / "labels" / "unlabeled").exists()
    assert view["names"] == full["names"] and view["val"] == str(tiny_data.parent / "images" / "val")
    source = resolve_unlabeled(None, view)
    assert source == str(root / "unlabeled") and len(check_unlabeled(source, "detect")) == 15
    mtime = yaml_path.stat().st_mtime_ns
    assert labeled_split(tiny_data, tmp_path / "semi", 0.25, extra=extra).stat().st_mtime_ns == mtime  # reused
    assert len(list((root / "images" / "train").iterdir())) == 4
    labeled_split(tiny_data, tmp_path / "semi", 1.0)
    assert len(list((root / "images" / "train").iterdir())) == 16 and not list((root / "unlabeled").iterdir())
    with pytest.raises(ValueError, match="labeled_fraction must be in"):
        labeled_split(tiny_data, tmp_path / "x", 0)


def test_labeled_split_repeat_lists_the_labelled_images_as_often_as_the_source_has_images(tmp_path, tiny_data):
    yaml_path = labeled_split(tiny_data, tmp_path / "semi", 0.25, repeat=True)
    view, root = YAML.load(yaml_path), tmp_path / "semi"
    lines = (root / "train.txt").read_text().split()
    assert view["train"] == "train.txt" and len(lines) == 16  # as many steps per epoch as over all 16 images
    names = [f"train_{i:06d}.jpg" for i in range(4)]
    assert [line.rsplit("/", 1)[-1] for line in lines] == names * 4  # each of the 4 labelled images 4 times
    labeled_split(tiny_data, tmp_path / "semi", 0.25)  # without repeat: the folder again, the list gone
    assert YAML.load(yaml_path)["train"] == "images/train" and not (root / "train.txt").exists()
