# yolokd, AGPL-3.0 License
"""A teacher still improving fast when its training stopped: measured from its checkpoint's curve, warned once."""

from __future__ import annotations

import logging

import pytest
import torch
from helpers import IMGSZ, captured_logs

from yolokd.teacher import LATE_GAIN, late_gain, read_teacher, undertrained_warning
from yolokd.trainer import KDTrainer

KEY = "metrics/mAP50-95(B)"
# val mAP50-95 after each epoch of yolokd's benchmark teachers (their checkpoints' train_results): the 10-epoch one a
# converged student outgrows, and the last 16 of the 80-epoch shapes teacher's 80 (its first 64 reached 0.621)
WEAK = [0.001, 0.005, 0.041, 0.068, 0.118, 0.157, 0.153, 0.185, 0.203, 0.226]
STRONG_TAIL = [0.611, 0.619, 0.621, 0.617, 0.626, 0.628, 0.632, 0.63, 0.625, 0.628, 0.629, 0.635, 0.637, 0.642, 0.643]


def test_late_gain_hand_computed_on_the_weak_teacher() -> None:
    share, before, n_tail = late_gain(WEAK)
    assert (before, n_tail) == (0.185, 2)  # the last fifth of 10 epochs; the best of the first 8
    assert share == pytest.approx((0.226 - 0.185) / 0.226)  # 0.181


def test_late_gain_tail_is_at_least_one_epoch_and_never_all() -> None:
    assert late_gain([0.2, 0.5]) == (pytest.approx(0.6), 0.2, 1)
    assert late_gain([0.5, 0.4, 0.3]) == (0.0, 0.5, 1)  # falling: nothing came late
    assert late_gain([0.4]) is None and late_gain([]) is None and late_gain(None) is None
    assert late_gain([0.0, 0.0]) is None  # no positive best


def test_warning_fires_on_the_weak_teacher_only() -> None:
    strong = [0.3] * 63 + [0.621] + STRONG_TAIL + [0.645]  # 80 epochs, the first 64 at most 0.621
    share, before, n_tail = late_gain(strong)
    assert (before, n_tail) == (0.621, 16) and share == pytest.approx((0.645 - 0.621) / 0.645)  # 0.037
    assert share < LATE_GAIN
    assert undertrained_warning({KEY: strong}) is None
    text = undertrained_warning({KEY: WEAK})
    assert text == (
        "the teacher was still improving fast when its training stopped (val mAP50-95 0.185 -> 0.226 in its last 2 "
        "of 10 epochs, 18% of its best): a student that outgrows it loses accuracy to distillation (docs/methods.md "
        "'Catch-up'); train the teacher longer"
    )
    assert undertrained_warning({}) is None and undertrained_warning(None) is None  # trained without validation
    assert undertrained_warning({KEY: [float("nan"), *WEAK]}) == text  # a non-finite epoch is passed over


def test_training_warns_once_before_the_data_with_the_checkpoints_curve(tmp_path, tiny_data, pico_yaml, teacher_pt):
    ckpt = torch.load(teacher_pt, map_location="cpu", weights_only=False)
    ckpt["train_results"] = {**(ckpt.get("train_results") or {}), KEY: WEAK}
    weak = tmp_path / "weak.pt"
    torch.save(ckpt, weak)
    assert read_teacher(weak)[1][KEY] == WEAK
    args = dict(model=str(pico_yaml), data=str(tiny_data), epochs=1, project=str(tmp_path), imgsz=IMGSZ, workers=0)
    for teacher, expected in ((weak, 1), (teacher_pt, 0)):
        with captured_logs(logging.WARNING) as records:
            KDTrainer(overrides={**args, "teacher": str(teacher), "name": teacher.stem})
        assert sum("still improving fast" in r.getMessage() for r in records) == expected, teacher


def test_a_teacher_trained_without_validation_has_no_curve_and_no_warning(tmp_path, teacher_pt) -> None:
    """With ``val=False`` Ultralytics validates after the last epoch only and records zeros before it: read as a
    curve, that is a 100% late gain on every such teacher. It is no curve; the same values validated are one."""
    ckpt = torch.load(teacher_pt, map_location="cpu", weights_only=False)
    zeros_then_last = [0.0] * 19 + [0.627]  # what a 20-epoch val=False teacher's checkpoint holds
    ckpt["train_results"] = {**(ckpt.get("train_results") or {}), KEY: zeros_then_last}
    for val, expected in ((False, {}), (True, zeros_then_last)):
        ckpt["train_args"] = {**ckpt["train_args"], "val": val}
        path = tmp_path / f"val-{val}.pt"
        torch.save(ckpt, path)
        curves = read_teacher(path)[1]
        assert curves.get(KEY, {}) == expected
        assert (undertrained_warning(curves) is None) is (not val)
