# yolokd, AGPL-3.0 License
"""A teacher trained on more classes (6) than the student's data set (3): every method, alone and combined with
CrossKD, takes a training step on every head family; CrossKD's cross predictions are reduced to the matched classes
exactly as the teacher's own scores are."""

from __future__ import annotations

import pytest
import torch
from helpers import build, toy_batch

from yolokd.config import available_methods, build_config, resolve_method
from yolokd.distill_model import KDModel
from yolokd.losses.crosskd import cross_head_predictions
from yolokd.teacher import load_teacher

CLASSES = [4, 1, 2]  # the teacher class that feeds student class 0, 1, 2
DETECT_METHODS = available_methods("detect")
FAMILIES = ("yolov8", "yolo11", "yolo26")


def _subset_model(student_yaml: str, teacher_pt, method: str) -> KDModel:
    """A 3-class student and a trained 6-class teacher (an untrained one predicts its class bias everywhere)."""
    student, teacher = build(student_yaml, nc=3), load_teacher(str(teacher_pt))
    assert teacher.nc == 6
    config = build_config({"teacher": "t.pt", "method": method, "balance": 0})  # fixed weights: values from step 1
    return KDModel(student, teacher, config, imgsz=64, teacher_classes=CLASSES).train()


def _step(model: KDModel) -> dict[str, float]:
    loss, items = model.loss(toy_batch())
    loss.sum().backward()
    grads = [p.grad for p in model.student_model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    return {k: float(v) for k, v in items.items()}


def test_the_detect_methods_are_all_here():
    assert set(DETECT_METHODS) == {"bckd", "crosskd", "cwd", "fgbg", "hint", "mgd", "pkd", "tar"}


@pytest.mark.parametrize("method", DETECT_METHODS + [f"{m}+crosskd" for m in DETECT_METHODS if m != "crosskd"])
def test_every_method_steps_with_a_teacher_of_more_classes(method, pico_yaml, teachers):
    items = _step(_subset_model(pico_yaml, teachers["yolov8"], method))
    values = {spec.name: items[f"{spec.name}_loss"] for spec in resolve_method(method)}
    assert all(abs(v) < float("inf") for v in values.values()), values  # finite (NaN fails too)
    # distillation is on: some term is non-zero (a gated term such as fgbg_fg is 0 where the teacher is not better)
    assert any(v != 0 for v in values.values()), values


@pytest.mark.parametrize("family", FAMILIES)
def test_crosskd_cross_scores_are_the_matched_teacher_classes(family, pico_yamls, teachers):
    """The cross predictions of the class branch equal the full (6-class) cross-head output at CLASSES, and have the
    shape of the teacher's reduced scores; the box branch is untouched."""
    model = _subset_model(pico_yamls[family], teachers[family], "crosskd")
    seen = {}
    cls_term, box_term = model.terms
    forward = cls_term.forward

    def spy(inputs, adapters):
        seen["full"] = cross_head_predictions(inputs, "cv3", cls_term.stage, adapters)
        seen["cross"], seen["teacher"] = cls_term.cross(inputs, adapters)
        seen["box"], seen["box_teacher"] = box_term.cross(inputs, model.projector["crosskd_box"])
        return forward(inputs, adapters)

    cls_term.forward = spy
    items = _step(model)
    assert seen["full"].shape[1] == 6
    assert seen["cross"].shape == seen["teacher"].shape == (2, 3, seen["full"].shape[-1])
    torch.testing.assert_close(seen["cross"], seen["full"][:, CLASSES])
    assert seen["box"].shape == seen["box_teacher"].shape
    # both finite; a barely trained teacher's cross-head outputs sit within float rounding of its own (KL ~ +-1e-8)
    assert abs(items["crosskd_cls_loss"]) < float("inf") and abs(items["crosskd_box_loss"]) < float("inf")
