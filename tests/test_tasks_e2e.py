# yolokd, AGPL-3.0 License
"""Segment, pose and OBB distillation end to end: one epoch per task, the task's own loss items next to the
distillation items, a bare checkpoint that plain Ultralytics loads, predicts with and exports; a teacher trained on
more classes matched by name; one-line errors for a teacher of another task and a term of another task."""

from __future__ import annotations

import pytest
from helpers import IMGSZ, captured_logs, check_loss_items, plain_python

from yolokd import YOLOKD
from yolokd.config import KDError
from yolokd.data.synthetic import make_dataset
from yolokd.demo import scaled_yaml

pytestmark = pytest.mark.slow

TRAIN = {"imgsz": IMGSZ, "batch": 8, "workers": 0, "plots": False, "seed": 0, "val": False, "epochs": 1}
SUFFIX = {"segment": "-seg", "pose": "-pose", "obb": "-obb"}
# per task: the method, the task's own loss items, the task-specific KD item, the results attribute and model class
CASES = {
    "segment": ("tar+cwd+mask", ("seg_loss",), "mask_kd_loss", "masks", "SegmentationModel"),
    "pose": ("tar+cwd+keypoint", ("pose_loss", "kobj_loss"), "kpt_kd_loss", "keypoints", "PoseModel"),
    "obb": ("tar+cwd+bckd", ("angle_loss",), "bckd_box_loss", "obb", "OBBModel"),
}


@pytest.fixture(scope="module")
def task_setup(tmp_path_factory):
    """Per task: a tiny synthetic data set, a YOLOv8n teacher trained one epoch on it, and a pico student yaml."""
    from ultralytics import YOLO

    root = tmp_path_factory.mktemp("tasks")
    out = {}
    for task, suffix in SUFFIX.items():
        data = make_dataset(root / task, n_train=16, n_val=4, n_test=4, imgsz=IMGSZ, task=task, progress=False)
        YOLO(f"yolov8n{suffix}.yaml").train(data=str(data), project=str(root), name=f"teacher-{task}", **TRAIN)
        student = scaled_yaml(root / f"yolov8-pico{suffix}.yaml", width=0.125, task=task)
        out[task] = (data, root / f"teacher-{task}" / "weights" / "last.pt", student, root)
    return out


def _plain_ultralytics(weights, task: str, attr: str, model_cls: str) -> str:
    """In a process that never imports yolokd: load, predict the task's outputs, export ONNX; return the output."""
    code = f"""
        import sys, torch
        from ultralytics import YOLO
        m = YOLO({str(weights)!r})
        assert m.task == {task!r} and type(m.model).__name__ == {model_cls!r}, (m.task, type(m.model))
        keys = list(m.model.state_dict())
        assert not any("teacher" in k or "projector" in k for k in keys), keys[:5]
        r = m.predict(torch.rand(1, 3, {IMGSZ}, {IMGSZ}), imgsz={IMGSZ}, conf=0.0, verbose=False)[0]
        out = getattr(r, {attr!r})
        assert out is not None and len(out) > 0, "no " + {attr!r}
        print("PREDICTED", {attr!r}, len(out))
        f = m.export(format="onnx", imgsz={IMGSZ}, simplify=False)
        print("EXPORTED", f)
        assert "yolokd" not in sys.modules
        print("PLAIN-ULTRALYTICS-OK")
    """
    return plain_python(code, weights.parent)


@pytest.mark.parametrize("task", list(CASES))
def test_task_distils_one_epoch_into_a_bare_checkpoint(task, task_setup):
    data, teacher, student, root = task_setup[task]
    method, task_items, kd_item, attr, model_cls = CASES[task]
    model = YOLOKD(str(student), teacher=str(teacher), method=method, teacher_val=False)
    assert model.task == task
    model.train(data=str(data), project=str(root), name=f"student-{task}", **TRAIN)
    run = root / f"student-{task}"
    header, row = (run / "results.csv").read_text().splitlines()[:2]
    values = {k.strip(): float(v) for k, v in zip(header.split(","), row.split(","))}
    for item in (*task_items, "box_loss", "cls_loss"):
        assert f"train/{item}" in values, (item, header)
    assert values[f"train/{kd_item}"] > 0 and values["train/cwd_loss"] > 0
    out = _plain_ultralytics(run / "weights" / "best.pt", task, attr, model_cls)
    assert "PLAIN-ULTRALYTICS-OK" in out and "EXPORTED" in out


def test_teacher_with_more_classes_is_matched_by_name(tmp_path, teacher_pt, pico_yaml):
    """A 6-class teacher (circle ... ring) distils into a 3-class student (circle, square, triangle) by name, with a
    head term that runs the teacher's class layers itself (crosskd) and one that reads its scores (bckd)."""
    data = make_dataset(tmp_path / "data3", n_train=16, n_val=4, n_test=4, imgsz=IMGSZ, nc=3, progress=False)
    model = YOLOKD(str(pico_yaml), teacher=str(teacher_pt), method="crosskd+bckd", teacher_val=True)
    with captured_logs() as logs:
        model.train(data=str(data), project=str(tmp_path), name="three", **TRAIN)
    lines = [r.getMessage() for r in logs]
    assert any(
        "teacher classes: teacher 0 'circle' -> student 0 'circle', teacher 1 'square' -> student 1 'square', "
        "teacher 2 'triangle' -> student 2 'triangle'" in m
        for m in lines
    ), [m for m in lines if "teacher" in m]
    assert any("its mAP here is not measured" in m for m in lines)  # a 6-class teacher is not validated on 3 classes
    header, row = (tmp_path / "three" / "results.csv").read_text().splitlines()[:2]
    values = {k.strip(): float(v) for k, v in zip(header.split(","), row.split(","))}
    assert values["train/bckd_cls_loss"] > 0 and values["train/bckd_box_loss"] > 0
    assert all(f"train/crosskd_{b}_loss" in values for b in ("cls", "box"))


@pytest.mark.parametrize("task", list(CASES))
def test_task_teacher_with_more_classes_distils_with_crosskd(task, task_setup, tmp_path):
    """Each task's 6-class teacher distils into a 3-class student of its task with the task's method plus crosskd:
    the cross-head class predictions are reduced to the matched classes like the teacher's own scores."""
    _, teacher, student, _ = task_setup[task]
    data = make_dataset(tmp_path / "data3", n_train=16, n_val=4, n_test=4, imgsz=IMGSZ, nc=3, task=task, progress=False)
    method, _, kd_item, _, _ = CASES[task]
    YOLOKD(str(student), teacher=str(teacher), method=f"{method}+crosskd", teacher_val=False).train(
        data=str(data), project=str(tmp_path), name="three", **TRAIN
    )
    header, row = (tmp_path / "three" / "results.csv").read_text().splitlines()[:2]
    values = {k.strip(): float(v) for k, v in zip(header.split(","), row.split(","))}
    assert values[f"train/{kd_item}"] > 0
    assert all(f"train/crosskd_{b}_loss" in values for b in ("cls", "box"))


def test_teacher_of_another_task_and_term_of_another_task_are_one_line_errors(task_setup, teacher_pt, tmp_path):
    data, seg_teacher, seg_student, _ = task_setup["segment"]
    with pytest.raises(
        KDError,
        match=r"teacher is a 'detect' model but the student is a 'segment' model; pass a "
        r"segment teacher",
    ):
        YOLOKD(str(seg_student), teacher=str(teacher_pt), method="cwd").train(
            data=str(data), project=str(tmp_path), name="mismatch", **TRAIN
        )
    pose_data, pose_teacher, pose_student, _ = task_setup["pose"]
    with pytest.raises(
        KDError,
        match=r"term 'mask_kd' \(mask\) distils segment models but the student is a "
        r"'pose' model",
    ):
        YOLOKD(str(pose_student), teacher=str(pose_teacher), method="cwd+mask").train(
            data=str(pose_data), project=str(tmp_path), name="wrong-term", **TRAIN
        )


@pytest.mark.parametrize("task", ["segment", "pose", "obb"])
def test_yolo26_task_heads_distil(task, task_setup, tmp_path):
    """YOLO26's Segment26 (prototypes with a semantic map), Pose26 (its own keypoint decoding) and OBB26 heads, with
    the end-to-end loss's one-to-many assignment: one epoch with every term of the task's method above zero."""
    import torch
    from ultralytics.nn.tasks import OBBModel, PoseModel, SegmentationModel
    from ultralytics.utils import YAML

    data, _, _, _ = task_setup[task]
    names = YAML.load(data)["names"]
    cfg = f"yolo26n{SUFFIX[task]}.yaml"
    model = {
        "segment": lambda: SegmentationModel(cfg, nc=len(names), verbose=False),
        "pose": lambda: PoseModel(cfg, nc=len(names), data_kpt_shape=(4, 3), verbose=False),
        "obb": lambda: OBBModel(cfg, nc=len(names), verbose=False),
    }[task]()
    model.names = names
    teacher = tmp_path / "teacher26.pt"  # untrained: the plumbing is what is tested here
    torch.save({"model": model, "train_args": {"task": task}}, teacher)
    student = scaled_yaml(tmp_path / f"yolo26-pico{SUFFIX[task]}.yaml", family="yolo26", width=0.125, task=task)
    method, task_items, kd_item, _, _ = CASES[task]
    YOLOKD(str(student), teacher=str(teacher), method=method, teacher_val=False).train(
        data=str(data), project=str(tmp_path), name="run", **TRAIN
    )
    header, row = (tmp_path / "run" / "results.csv").read_text().splitlines()[:2]
    values = {k.strip(): float(v) for k, v in zip(header.split(","), row.split(","))}
    assert all(f"train/{item}" in values for item in task_items), header
    assert values[f"train/{kd_item}"] > 0 and values["train/tar_feat_loss"] > 0


@pytest.mark.parametrize("task", ["segment", "pose", "obb"])
def test_every_detection_method_distils_every_task(task, task_setup, tmp_path):
    """All eight detection methods at once (every neck and head term, each its own item) on a task's student."""
    from yolokd.config import available_methods, resolve_method

    data, teacher, student, _ = task_setup[task]
    methods = available_methods("detect")
    assert set(methods) == {"bckd", "crosskd", "cwd", "fgbg", "hint", "mgd", "pkd", "tar"}
    method = "+".join(methods)
    model = YOLOKD(str(student), teacher=str(teacher), method=method, teacher_val=False)
    values: dict = {}  # epoch means, before results.csv rounds CrossKD's ~1e-8 (barely trained teacher) to 0
    model.add_callback("on_train_epoch_end", lambda tr: values.update({k: float(v) for k, v in tr.tloss.items()}))
    model.train(data=str(data), project=str(tmp_path), name="all", **TRAIN)
    names = [s.name for s in resolve_method(method)]
    assert len(names) == 15  # bckd 2, crosskd 2, cwd 1, fgbg 2, hint 3, mgd 1, pkd 1, tar 3
    # non-zero and finite; a divergence >= -1e-6 (with a barely trained teacher CrossKD's LD can be -1e-8), the rest > 0
    check_loss_items(values, resolve_method(method))
