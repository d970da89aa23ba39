# yolokd, AGPL-3.0 License
"""The step profile: every part timed, the parts within the step, the model left as it was."""

from __future__ import annotations

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
    assert format_profile([p]).splitlines()[2] == "| crosskd | 1.0 (full) | 9.0 | 1.0 | 1.0 | 1.0 | 1.0 | 1.0 | 6.0 |"
