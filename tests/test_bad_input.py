# yolokd, AGPL-3.0 License
"""Bad input through the CLI: each gives one error line naming the fix, exit code 2, and no traceback."""

from __future__ import annotations

import logging
import shutil

import pytest
import torch
from helpers import IMGSZ, build, captured_logs
from ultralytics.nn.tasks import ClassificationModel
from ultralytics.utils import YAML

from yolokd.cli import main
from yolokd.data.synthetic import make_dataset

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def bad(session_dir, tiny_data, teacher_pt):
    """Paths of bad inputs, built once."""
    d = session_dir / "bad"
    d.mkdir(exist_ok=True)
    names = YAML.load(tiny_data)["names"]

    def save(model, name):
        model.names = dict(names)
        torch.save({"model": model.half(), "train_args": {}}, d / name)
        return d / name

    (d / "corrupt.pt").write_bytes(b"\x00not a checkpoint")
    data = teacher_pt.read_bytes()
    (d / "truncated.pt").write_bytes(data[: len(data) // 3])  # what a kill mid-write used to leave
    cls = ClassificationModel("yolov8n-cls.yaml", nc=6, verbose=False)
    p2 = build("yolov8n-p2.yaml")
    strides = build("yolov8n.yaml")
    strides.stride = torch.tensor([8.0, 16.0, 64.0])
    renamed = dict(YAML.load(tiny_data))
    renamed["names"] = {**renamed["names"], 1: "lemon"}
    YAML.save(d / "renamed.yaml", renamed)
    unlabeled = d / "unlabeled"
    shutil.copytree(tiny_data.parent / "images", unlabeled / "images", dirs_exist_ok=True)
    YAML.save(unlabeled / "data.yaml", {**YAML.load(tiny_data), "path": str(unlabeled)})
    (d / "unknown_key.yaml").write_text("terms:\n  - {type: cwd, wieght: 2}\n")
    (d / "bad_type.yaml").write_text("terms:\n  - {type: cwd, params: {tau: warm}}\n")
    data3 = make_dataset(d / "nc3", n_train=8, n_val=4, n_test=0, imgsz=IMGSZ, nc=3, progress=False)
    YAML.save(d / "foreign.yaml", {**YAML.load(data3), "names": {0: "apple", 1: "pear", 2: "plum"}})
    return {
        "dir": d,
        "data": tiny_data,
        "teacher": teacher_pt,
        "data3": data3,
        "foreign": d / "foreign.yaml",
        "renamed": d / "renamed.yaml",
        "unlabeled": unlabeled / "data.yaml",
        "cls": save(cls, "cls.pt"),
        "p2": save(p2, "p2.pt"),
        "strides": save(strides, "strides.pt"),
        "truncated": d / "truncated.pt",
    }


CASES = {  # id: (argument overrides, text the single error line must contain)
    "teacher missing": ({"teacher": "{dir}/missing/t.pt"}, "does not exist; check the path"),
    "teacher corrupt": ({"teacher": "{dir}/corrupt.pt"}, "is not a readable Ultralytics checkpoint"),
    "teacher offline name": ({"teacher": "yolov8x"}, "could not be downloaded"),
    "teacher yaml": ({"teacher": "yolov8x.yaml"}, "the teacher must be a trained checkpoint (.pt)"),
    "teacher not detect": (
        {"teacher": "{cls}"},
        "(ClassificationModel) has no Detect head, so it cannot be distilled here",
    ),
    "class names none": ({"data": "{foreign}"}, "no class name of the data set is among the teacher's 6 class names"),
    "class names": ({"data": "{renamed}"}, "class name(s) ['lemon'] are not among the teacher's 6 class names"),
    "levels": ({"teacher": "{p2}"}, "teacher has 4 detection levels but the student has 3"),
    "strides": ({"teacher": "{strides}"}, "teacher strides [8, 16, 64] differ from student strides [8, 16, 32]"),
    "unknown method": ({"method": "cdw"}, "unknown method 'cdw'. Did you mean 'cwd'?"),
    "unknown term key": ({"method": "{dir}/unknown_key.yaml"}, "unknown key 'wieght'. Did you mean 'weight'?"),
    "wrong value type": ({"method": "{dir}/bad_type.yaml"}, "parameter 'tau' of term 'cwd' must be float, got 'warm'"),
    "misspelt key": ({"techer": "t.pt"}, "'techer' is not a valid YOLO argument"),
    "data missing": ({"data": "{dir}/none.yaml"}, "does not exist; pass data=path/to/data.yaml"),
    "data without labels": ({"data": "{unlabeled}"}, "has no labels; put one YOLO-format .txt per image"),
    "student offline name": ({"model": "yolov8s"}, "could not be downloaded; pass a local .pt, or a .yaml"),
    "student corrupt": ({"model": "{dir}/corrupt.pt"}, "corrupt.pt' is not a readable Ultralytics checkpoint"),
    "student truncated": ({"model": "{truncated}"}, "truncated.pt' is not a readable Ultralytics checkpoint"),
}


def _errors_of(argv):
    with captured_logs() as records:
        code = main(argv)
    return code, [r.getMessage() for r in records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_gives_one_line_error_and_exit_2(case, bad, pico_yaml, tmp_path):
    changes, expected = CASES[case]
    args = {
        "model": str(pico_yaml),
        "teacher": str(bad["teacher"]),
        "method": "cwd",
        "data": str(bad["data"]),
        "epochs": 1,
        "imgsz": IMGSZ,
        "batch": 8,
        "workers": 0,
        "plots": False,
        "project": str(tmp_path),
    }
    args.update({k: v.format(**bad) for k, v in changes.items()})
    code, errors = _errors_of(["train"] + [f"{k}={v}" for k, v in args.items()])
    assert code == 2
    assert len(errors) == 1, errors
    assert "\n" not in errors[0] and "Traceback" not in errors[0]
    assert expected in errors[0], errors[0]
    print(f"\nBAD-INPUT | {case} | {errors[0]}")  # shown with pytest -s: the table of messages


def test_teacher_equal_to_student_is_a_warning(bad, tmp_path):
    t = str(bad["teacher"])
    argv = [
        "train",
        f"model={t}",
        f"teacher={t}",
        f"data={bad['data']}",
        "epochs=1",
        f"imgsz={IMGSZ}",
        "batch=8",
        "workers=0",
        "plots=False",
        f"project={tmp_path}",
        "teacher_val=False",
    ]
    with captured_logs() as records:
        code = main(argv)
    assert code == 0
    warnings = [r.getMessage() for r in records if r.levelno == logging.WARNING]
    assert len([w for w in warnings if "student's architecture" in w]) == 1


def test_resume_errors_name_the_fix(tmp_path, teacher_pt):
    missing = tmp_path / "nope" / "last.pt"
    # a finished checkpoint is not resumable: Ultralytics starts a new run, which then needs a teacher
    code, errors = _errors_of(["train", "resume", f"model={teacher_pt}"])
    assert code == 2 and len(errors) == 1 and "no teacher given" in errors[0], errors
    from yolokd.config import KDError
    from yolokd.trainer import KDTrainer

    with pytest.raises(KDError, match="resume checkpoint '.*nope/last.pt' not found"):
        KDTrainer(overrides={"resume": str(missing), "model": str(missing)})


@pytest.mark.parametrize("name", ["corrupt.pt", "truncated.pt"])
def test_resume_from_a_corrupt_checkpoint_is_one_line(name, bad):
    path = bad["dir"] / name
    code, errors = _errors_of(["train", "resume", f"model={path}"])
    assert code == 2 and len(errors) == 1, errors
    assert "\n" not in errors[0] and "Traceback" not in errors[0]
    assert f"'{path}' is not a readable Ultralytics checkpoint" in errors[0] and "intact .pt" in errors[0], errors[0]
    from yolokd.config import KDError
    from yolokd.trainer import KDTrainer

    with pytest.raises(KDError, match=f"resume checkpoint '.*{name}' is not readable .*truncated by a crash"):
        KDTrainer(overrides={"resume": str(path), "model": str(path)})
