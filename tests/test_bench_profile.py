# yolokd, AGPL-3.0 License
"""The step profile: every part timed, the parts within the step, the model left as it was."""

from __future__ import annotations

import pytest
from helpers import kd_model, toy_batch

from yolokd.bench.profile import PARTS, format_profile, profile_step, random_batch


def test_profile_step_times_every_part_and_leaves_the_model_unchanged(pico_yaml):
    kd = kd_model(pico_yaml, "yolov8n.yaml", "tar+cwd")
    ms = profile_step(kd, toy_batch(), steps=2, warmup=1)
    assert set(ms) == {*PARTS, "step", "other"}
    assert all(ms[k] > 0 for k in (*PARTS, "step"))
    assert sum(ms[k] for k in PARTS) <= ms["step"] and ms["other"] >= 0
    assert "_teacher_forward" not in vars(kd) and "_detection_loss" not in vars(kd)  # the class's methods again
    assert not kd.student_model._forward_hooks and not any(t._forward_hooks for t in kd.terms)
    _, items = kd.loss(toy_batch())  # still trains
    assert items["cwd_loss"].item() > 0


def test_random_batch_and_format_profile():
    b = random_batch(2, 64, nc=3, device="cpu", boxes=4)
    assert b["img"].shape == (2, 3, 64, 64) and b["bboxes"].shape == (8, 4) and b["cls"].max() < 3
    assert ((b["bboxes"][:, :2] - b["bboxes"][:, 2:] / 2) >= 0).all()  # boxes inside the image
    p = {"method": "crosskd", "neck_only": False, "plain_teacher_ms": 9.0, "ms": dict.fromkeys((*PARTS, "other"), 1.0)}
    p["ms"]["step"] = 6.0
    row = "| crosskd | 1.0 (full) | 9.0 | 1.0 | 1.0 | 1.0 | 1.0 | 1.0 | 6.0 |"
    assert format_profile([p]).splitlines()[2] == row + " — | — | — | — |"  # no undistilled or built-in step
    p["plain_student_ms"] = 3.0
    assert format_profile([p]).splitlines()[2] == row + " 3.0 | 0.50 | — | — |"  # 6 / (3 + 9)
    p["builtin_ms"] = 4.0
    assert format_profile([p]).splitlines()[2] == row + " 3.0 | 0.50 | 4.0 | 1.50 |"  # 6 / 4


def test_plain_student_step_and_the_profile_command(pico_yaml, tmp_path, capsys):
    """The undistilled step is timed with its backward and leaves no gradients; the command prints the medians."""
    import torch
    from ultralytics.cfg import get_cfg
    from ultralytics.nn.tasks import DetectionModel
    from ultralytics.utils import DEFAULT_CFG

    from yolokd.bench.profile import main, plain_student_ms

    student = DetectionModel(pico_yaml, nc=3, verbose=False)
    student.args = get_cfg(DEFAULT_CFG)
    calls = []
    next(student.parameters()).register_hook(lambda g: calls.append(1))  # fires in every backward pass
    assert plain_student_ms(student.train(), random_batch(2, 64, nc=3, device="cpu"), steps=2, warmup=1) > 0
    assert len(calls) == 3 and all(p.grad is None for p in student.parameters())  # 3 backward passes, grads cleared
    teacher = tmp_path / "t.pt"
    m = DetectionModel("yolov8n.yaml", nc=3, verbose=False)
    m.names = {0: "a", 1: "b", 2: "c"}
    torch.save({"model": m, "train_args": {"task": "detect"}}, teacher)
    args = ["--teacher", str(teacher), "--student", str(pico_yaml), "--methods", "cwd", "bckd", "--rounds=2"]
    main([*args, "--imgsz=64"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].endswith("| step | undistilled step | x floor | built-in step | x built-in |") and len(lines) == 4
    assert lines[2].startswith("| cwd | ") and "(to the neck)" in lines[2] and "(full)" in lines[3]
    cells = [[c.strip() for c in line.split("|")[1:-1]] for line in lines[2:]]
    assert all(float(c[-1]) > 0 and float(c[-3]) > 0 for c in cells)  # x built-in and x floor
    # one pooled floor and one pooled built-in step for both methods
    assert cells[0][-4] == cells[1][-4] and cells[0][-2] == cells[1][-2]
    step, builtin = float(cells[0][-5]), float(cells[0][-2])
    assert float(cells[0][-1]) == pytest.approx(step / builtin, abs=0.006)
