# yolokd, AGPL-3.0 License
"""Shared fixtures: a tiny synthetic data set, tiny model yamls and a teacher trained once per session."""

from __future__ import annotations

import pytest
import torch
from helpers import IMGSZ

from yolokd.data.synthetic import make_dataset
from yolokd.demo import scaled_yaml


@pytest.fixture
def seeded() -> None:
    """Seed torch's global generator before the test (a file opts in with ``pytest.mark.usefixtures("seeded")``)."""
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def session_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("yolokd")


@pytest.fixture(scope="session")
def tiny_data(session_dir):
    """16 train / 8 val / 8 test synthetic images at 64 px."""
    return make_dataset(session_dir / "data", n_train=16, n_val=8, n_test=8, imgsz=IMGSZ, progress=False)


@pytest.fixture(scope="session")
def pico_yaml(session_dir):
    """A YOLOv8 at width 0.125 (student)."""
    return scaled_yaml(session_dir / "yolov8-pico.yaml", width=0.125)


@pytest.fixture(scope="session")
def pico_yamls(session_dir) -> dict[str, str]:
    """A width-0.125 student yaml per family (YOLOv8, YOLO11, YOLO26), keyed by family."""
    return {
        f: str(scaled_yaml(session_dir / f"{f}-pico-s.yaml", family=f, width=0.125))
        for f in ("yolov8", "yolo11", "yolo26")
    }


@pytest.fixture(scope="session")
def teachers(session_dir, tiny_data):
    """One teacher per family (YOLOv8n, YOLO11n, YOLO26n), trained 3 epochs on the tiny data set, keyed by family.

    Session-scoped: every method's end-to-end runs (test_methods_e2e.py) and the class-subset steps share them.
    """
    from ultralytics import YOLO

    out = {}
    for family in ("yolov8", "yolo11", "yolo26"):
        YOLO(f"{family}n.yaml").train(
            data=str(tiny_data),
            epochs=3,
            imgsz=IMGSZ,
            batch=8,
            workers=0,
            project=str(session_dir),
            name=f"teacher-{family}",
            exist_ok=True,
            plots=False,
            val=False,
        )
        out[family] = session_dir / f"teacher-{family}" / "weights" / "last.pt"
    return out


@pytest.fixture(scope="session")
def teacher_pt(session_dir, tiny_data):
    """A YOLOv8n teacher trained for one epoch on the tiny data set, saved to tmp."""
    from ultralytics import YOLO

    YOLO("yolov8n.yaml").train(
        data=str(tiny_data),
        epochs=1,
        imgsz=IMGSZ,
        batch=8,
        workers=0,
        project=str(session_dir),
        name="teacher",
        exist_ok=True,
        plots=False,
        verbose=False,
    )
    return session_dir / "teacher" / "weights" / "last.pt"
