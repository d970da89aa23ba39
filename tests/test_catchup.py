# yolokd, AGPL-3.0 License
"""Never worse than training alone: distillation fades once the student's val score nears the teacher's, is off once
it reaches it, stays off, travels with the checkpoint, and logs each change once."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from helpers import captured_logs, kd_model, toy_batch

from yolokd.callbacks import KDCallbacks
from yolokd.checkpoint import kd_state, restore_kd_state
from yolokd.config import KDError, build_config
from yolokd.schedules import catchup_factor, outpaces

KEY = "metrics/mAP50-95(B)"


@pytest.mark.parametrize(
    ("student", "teacher", "margin", "previous", "want"),
    [
        (0.30, 0.50, 0.1, 1.0, 1.0),  # far below (1 - 0.1) x 0.50 = 0.45
        (0.45, 0.50, 0.1, 1.0, 1.0),  # at the start of the fade
        (0.49, 0.50, 0.1, 1.0, 0.2),  # (0.50 - 0.49) / 0.05
        (0.50, 0.50, 0.1, 1.0, 0.0),  # reached
        (0.60, 0.50, 0.1, 1.0, 0.0),  # passed
        (0.30, 0.50, 0.1, 0.2, 0.2),  # never comes back
        (0.49, 0.50, 0.0, 1.0, 1.0),  # margin 0: on until the teacher's score ...
        (0.50, 0.50, 0.0, 1.0, 0.0),  # ... then off
        (0.90, 0.00, 0.1, 1.0, 1.0),  # the teacher's score was not measured
    ],
)
def test_catchup_factor_hand_values(student, teacher, margin, previous, want):
    assert catchup_factor(student, teacher, margin, previous) == pytest.approx(want)


def _trainer(model, metrics, epoch, epochs=100):
    return SimpleNamespace(
        model=model,
        metrics=metrics,
        args=SimpleNamespace(task="detect"),
        epoch=epoch,
        epochs=epochs,
        device=torch.device("cpu"),
    )


def test_callback_fades_then_stops_logs_once_each_and_the_terms_follow(pico_yaml):
    model = kd_model(pico_yaml, "yolov8n.yaml", "cwd", balance=0)  # fixed weight 5
    cb = KDCallbacks(build_config({"method": "cwd", "catchup_pace": 0}))  # the fading rule alone
    cb.teacher_metrics = {KEY: 0.50}
    with captured_logs() as records:
        for epoch, score in enumerate([0.20, 0.4875, 0.49, 0.30]):  # far, fading (x0.25), fading (x0.2), lower again
            cb._catch_up(_trainer(model, {KEY: score}, epoch))
        fading = model.catchup
        cb._catch_up(_trainer(model, {KEY: 0.51}, 4))  # reached
        cb._catch_up(_trainer(model, {KEY: 0.40}, 5))  # and it stays off
    lines = [r.getMessage() for r in records if "distillation" in r.getMessage()]
    assert fading == pytest.approx(0.2) and model.catchup == 0.0
    assert len(lines) == 2, lines
    assert (
        "val mAP50-95(B) 0.4875 is within 10% of the teacher's 0.5000 (epoch 2): distillation fades (x0.25)" in lines[0]
    )
    assert "0.5100 reached the teacher's 0.5000 (epoch 5): distillation is off for the rest of the run" in lines[1]
    assert model.term_weights() == {"cwd": 0.0}
    loss, items = model.loss(toy_batch())
    assert items["cwd_loss"] == 0.0  # the term is not even computed


def test_catchup_scales_the_weights_and_travels_with_the_checkpoint(pico_yaml):
    model = kd_model(pico_yaml, "yolov8n.yaml", "cwd", balance=0)
    model.catchup = 0.5
    assert model.term_weights() == {"cwd": 2.5}
    state = kd_state(model)
    again = kd_model(pico_yaml, "yolov8n.yaml", "cwd", balance=0)
    assert again.catchup == 1.0 and restore_kd_state(again, {"yolokd": state}) and again.catchup == 0.5


def test_catchup_off_or_unmeasured_teacher_leaves_distillation_on(pico_yaml):
    model = kd_model(pico_yaml, "yolov8n.yaml", "cwd", balance=0)
    never = KDCallbacks(build_config({"method": "cwd", "catchup": -1}))
    never.teacher_metrics = {KEY: 0.5}
    never._catch_up(_trainer(model, {KEY: 0.9}, 0))
    unmeasured = KDCallbacks(model.kd_config)  # teacher_val=False, or a teacher of other classes: no score
    unmeasured._catch_up(_trainer(model, {KEY: 0.9}, 0))
    assert model.catchup == 1.0
    with pytest.raises(KDError, match="catchup must be a fraction >= 0"):
        build_config({"catchup": -0.5})


@pytest.mark.parametrize(
    ("student", "first", "teacher", "epoch", "epochs", "pace", "want"),
    [
        (0.044, 0.001, 0.225, 3, 60, 0.25, True),  # progress 0.193 >= 2 / 15 = 0.133: a weak teacher, outgrown early
        (0.030, 0.001, 0.225, 3, 60, 0.25, False),  # progress 0.129 < 0.133
        (0.163, 0.000, 0.645, 7, 60, 0.25, False),  # progress 0.253 < 6 / 15 = 0.4: a strong teacher
        (0.163, 0.000, 0.645, 7, 60, 0.50, True),  # ... yet ahead of a line reaching it at half the run (6 / 30)
        (0.420, 0.400, 0.539, 5, 100, 0.25, False),  # a pretrained student: progress from its first score, 0.144 < 0.16
        (0.400, 0.380, 0.539, 2, 100, 0.25, False),  # 0.126 >= 1 / 25, but a first score >= 0.25 x 0.539: no pace
        (0.100, 0.130, 0.539, 2, 100, 0.25, False),  # below its first score
        (0.150, 0.130, 0.539, 2, 100, 0.25, True),  # a first score under 0.25 x 0.539 = 0.135: 0.049 >= 0.04
        (0.300, 0.290, 0.500, 1, 60, 0.25, False),  # the first epoch only sets the start of the line
        (0.600, 0.000, 0.500, 5, 60, 0.00, False),  # pace 0: never
        (0.600, 0.600, 0.500, 5, 60, 0.25, False),  # a teacher at or below the first score: the fading rule decides
    ],
)
def test_outpaces_hand_values(student, first, teacher, epoch, epochs, pace, want):
    assert outpaces(student, first, teacher, epoch, epochs, pace) is want


def test_callback_stops_at_once_when_the_student_outpaces_and_the_start_travels_with_the_checkpoint(pico_yaml):
    model = kd_model(pico_yaml, "yolov8n.yaml", "cwd", balance=0)
    cb = KDCallbacks(build_config({"method": "cwd", "catchup_pace": 0.25}))
    cb.teacher_metrics = {KEY: 0.225}
    with captured_logs() as records:
        cb._catch_up(_trainer(model, {KEY: 0.001}, 0, epochs=60))  # sets the start of the line
        first = kd_state(model)["catchup_first"]
        cb._catch_up(_trainer(model, {KEY: 0.011}, 1, epochs=60))  # 0.045 < 1 / 15
        on = model.catchup
        cb._catch_up(_trainer(model, {KEY: 0.044}, 2, epochs=60))  # 0.193 >= 2 / 15: off
        cb._catch_up(_trainer(model, {KEY: 0.010}, 3, epochs=60))  # and it stays off
    lines = [r.getMessage() for r in records if "distillation" in r.getMessage()]
    assert first == pytest.approx(0.001) and on == 1.0 and model.catchup == 0.0
    assert len(lines) == 1
    assert "0.0440 after epoch 3 of 60 is on course to reach the teacher's 0.2250 within 25%" in lines[0]
    again = kd_model(pico_yaml, "yolov8n.yaml", "cwd", balance=0)
    assert again.catchup_first is None and restore_kd_state(again, {"yolokd": kd_state(model)})
    assert again.catchup_first == pytest.approx(0.001) and again.catchup == 0.0


@pytest.mark.parametrize("bad", [-0.1, 1.0, 2, True, "a"])
def test_catchup_pace_bad_values_one_line(bad):
    with pytest.raises(KDError, match="catchup_pace must be a number >= 0 and < 1"):
        build_config({"catchup_pace": bad})


def test_the_pace_rule_is_off_by_default(pico_yaml):
    """The default never stops early: the student of the first example above keeps its teacher."""
    model = kd_model(pico_yaml, "yolov8n.yaml", "cwd", balance=0)
    cb = KDCallbacks(build_config({"method": "cwd"}))
    assert cb.config.catchup_pace == 0.0
    cb.teacher_metrics = {KEY: 0.225}
    for epoch, score in enumerate([0.001, 0.011, 0.044]):  # outpaces at 0.25 (above)
        cb._catch_up(_trainer(model, {KEY: score}, epoch, epochs=60))
    assert model.catchup == 1.0
