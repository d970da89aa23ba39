# yolokd, AGPL-3.0 License
"""BCKD terms: binary class KD over every anchor and IoU-based box KD on decoded boxes, both over the TAL positives."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from helpers import assigned, head_inputs, kd_model, np_giou, np_rotated_distance, np_sigmoid, toy_batch

from yolokd.config import resolve_method
from yolokd.losses import TERMS
from yolokd.losses.bckd import BCKDBox, BCKDCls

pytestmark = pytest.mark.usefixtures("seeded")


def _np_ltrb(boxes: np.ndarray, reg_max: int) -> np.ndarray:
    """(N, 4*R, A) box output -> (N, A, 4) ltrb distances: the DFL expectation, or the raw values for R = 1."""
    n, _, a = boxes.shape
    x = boxes.transpose(0, 2, 1).reshape(n, a, 4, reg_max)
    if reg_max == 1:
        return x[..., 0]
    p = np.exp(x - x.max(-1, keepdims=True))
    return (p / p.sum(-1, keepdims=True) * np.arange(reg_max)).sum(-1)


def _preds(n: int, nc: int, a: int, reg_max: int, box_scale: float = 1.0, cls_scale: float = 3.0) -> dict:
    boxes = torch.rand(n, 4 * reg_max, a) * box_scale + (0.3 if reg_max == 1 else 0.0)  # reg_max 1: positive sides
    return {"boxes": boxes, "scores": torch.randn(n, nc, a) * cls_scale}


POINTS = torch.tensor([[0.5, 0.5], [1.5, 0.5], [0.5, 1.5], [1.5, 1.5], [2.5, 2.5]])
FG = [[True, False, False, True, False], [False, False, True, False, False]]  # 3 positives


# ----------------------------------------------------------------------------------------------------------- bckd_cls
def test_bckd_cls_hand_computed_over_every_anchor_divided_by_positives() -> None:
    s, t = _preds(2, 3, 5, 1), _preds(2, 3, 5, 1)
    s["scores"].requires_grad_()
    value = BCKDCls()(head_inputs(s, t, assigned(FG, POINTS)), None)
    x, y = s["scores"].detach().double().numpy(), t["scores"].double().numpy()
    q = np_sigmoid(y)
    bce = np.logaddexp(0, x) - q * x  # BCE with logits against q
    expected = (bce * np.abs(np_sigmoid(x) - q)).sum() / 3  # every anchor (background too), 3 positives
    assert value.item() == pytest.approx(expected, rel=1e-5)
    value.backward()
    assert s["scores"].grad.abs().sum() > 0 and t["scores"].grad is None


def test_bckd_cls_zero_without_positives_still_in_graph() -> None:
    s, t = _preds(2, 3, 5, 1), _preds(2, 3, 5, 1)
    s["scores"].requires_grad_()
    value = BCKDCls()(head_inputs(s, t, assigned([[False] * 5, [False] * 5], POINTS)), None)
    assert value.item() == 0.0 and value.requires_grad
    value.backward()
    assert not s["scores"].grad.any()


# ----------------------------------------------------------------------------------------------------------- bckd_box
@pytest.mark.parametrize(("s_reg", "t_reg"), [(1, 1), (4, 4), (4, 1), (1, 8)])
def test_bckd_box_hand_computed_with_each_heads_own_reg_max(s_reg: int, t_reg: int) -> None:
    """Boxes decoded with each head's own reg_max (DFL expectation or raw sides), GIoU weighted by max |dp|, / P."""
    s, t = _preds(2, 3, 5, s_reg, box_scale=2.0), _preds(2, 3, 5, t_reg, box_scale=2.0)
    s["boxes"].requires_grad_()
    value = BCKDBox()(head_inputs(s, t, assigned(FG, POINTS), s_reg, t_reg), None)
    pts = POINTS.double().numpy()[None]  # (1, A, 2)

    def xyxy(preds, reg):
        d = _np_ltrb(preds["boxes"].detach().double().numpy(), reg)
        return np.concatenate([pts - d[..., :2], pts + d[..., 2:]], -1)

    w = np.abs(np_sigmoid(t["scores"].double().numpy()) - np_sigmoid(s["scores"].double().numpy())).max(1)  # (N, A)
    expected = (w * (1 - np_giou(xyxy(s, s_reg), xyxy(t, t_reg)))).sum() / 3
    assert value.item() == pytest.approx(expected, rel=1e-4)
    value.backward()
    assert s["boxes"].grad.abs().sum() > 0 and t["boxes"].grad is None
    assert s["scores"].grad is None  # the weight is detached


def _np_rboxes(preds: dict, reg: int) -> np.ndarray:
    """(N, A, 5) xywhr: ltrb in the box's own frame, the centre offset ((r - l) / 2, (b - t) / 2) turned by the
    angle about the anchor, sides (l + r, t + b)."""
    d = _np_ltrb(preds["boxes"].detach().double().numpy(), reg)
    theta = preds["angle"].detach().double().numpy()[:, 0]  # (N, A)
    fx, fy = (d[..., 2] - d[..., 0]) / 2, (d[..., 3] - d[..., 1]) / 2
    c, s = np.cos(theta), np.sin(theta)
    pts = POINTS.double().numpy()
    x, y = pts[:, 0] + fx * c - fy * s, pts[:, 1] + fx * s + fy * c
    return np.stack((x, y, d[..., 0] + d[..., 2], d[..., 1] + d[..., 3], theta), -1)


@pytest.mark.parametrize(("s_reg", "t_reg"), [(1, 1), (4, 8)])
def test_bckd_box_obb_compares_rotated_boxes_with_each_heads_angle(s_reg: int, t_reg: int) -> None:
    """OBB heads (an ``angle`` output): the boxes are rotated xywhr and compared by the Gaussian (Hellinger)
    distance, so that a student with the teacher's sides but another angle is still taught."""
    s, t = _preds(2, 3, 5, s_reg, box_scale=2.0), _preds(2, 3, 5, t_reg, box_scale=2.0)
    s["angle"], t["angle"] = (torch.rand(2, 1, 5) - 0.25) * math.pi, (torch.rand(2, 1, 5) - 0.25) * math.pi
    s["angle"].requires_grad_()
    value = BCKDBox()(head_inputs(s, t, assigned(FG, POINTS), s_reg, t_reg), None)
    w = np.abs(np_sigmoid(t["scores"].double().numpy()) - np_sigmoid(s["scores"].double().numpy())).max(1)  # (N, A)
    dist = np_rotated_distance(_np_rboxes(s, s_reg), _np_rboxes(t, t_reg)).reshape(w.shape)
    assert value.item() == pytest.approx((w * dist).sum() / 3, rel=1e-4)
    value.backward()
    assert s["angle"].grad.abs().sum() > 0 and t["angle"].grad is None  # the angle is distilled
    # equal sides and centres, another angle: GIoU of the angle-free boxes would be 0, this is not
    same_sides = {"boxes": s["boxes"].detach(), "scores": t["scores"], "angle": s["angle"].detach() + 0.5}
    moved = BCKDBox()(head_inputs(s, same_sides, assigned(FG, POINTS), s_reg, s_reg), None)
    assert moved.item() > 0.01
    same_sides["angle"] = s["angle"].detach()
    assert BCKDBox()(head_inputs(s, same_sides, assigned(FG, POINTS), s_reg, s_reg), None).item() < 1e-3


def test_bckd_box_exactly_zero_with_equal_scores_and_without_positives() -> None:
    s, t = _preds(2, 3, 5, 4), _preds(2, 3, 5, 1)
    s["boxes"].requires_grad_()
    same = {"boxes": t["boxes"], "scores": s["scores"].clone()}
    value = BCKDBox()(head_inputs(s, same, assigned(FG, POINTS), 4, 1), None)
    assert value.item() == 0.0 and value.requires_grad
    value.backward()
    assert not s["boxes"].grad.any()
    none = BCKDBox()(head_inputs(s, t, assigned([[False] * 5, [False] * 5], POINTS), 4, 1), None)
    assert none.item() == 0.0 and none.requires_grad


def test_bckd_box_inverted_raw_boxes_stay_bounded() -> None:
    """reg_max 1 sides may be negative (l + r < 0): the corners are sorted, so 1 - GIoU stays in [0, 2]."""
    s, t = _preds(1, 2, 5, 1), _preds(1, 2, 5, 1)
    s["boxes"] = -3.0 * torch.rand(1, 4, 5)  # every box inverted
    s["scores"], t["scores"] = torch.full((1, 2, 5), -50.0), torch.full((1, 2, 5), 50.0)  # w = 1 everywhere
    value = BCKDBox()(head_inputs(s, t, assigned([[True] * 5], POINTS)), None)
    assert 0.0 <= float(value) <= 2.0


def test_bckd_terms_need_the_assignment_and_reg_max() -> None:
    s, t = _preds(1, 2, 5, 1), _preds(1, 2, 5, 1)
    for term in (BCKDCls(), BCKDBox()):
        with pytest.raises(ValueError, match="TAL assignment"):
            term(head_inputs(s, t, None), None)
    inputs = head_inputs(s, t, assigned([[True] * 5], POINTS))
    inputs.teacher_reg_max = 0  # not given (hand-built inputs): the probe's value is required
    with pytest.raises(ValueError, match="reg_max"):
        BCKDBox()(inputs, None)


# ------------------------------------------------------------------------------------------------ real models, yaml
def test_bckd_kd_step_mixed_reg_max_reaches_the_student_head(pico_yamls) -> None:
    """YOLO26 student (reg_max 1, one-to-many branch) with a YOLOv8 teacher (DFL): each term reaches its branch."""
    model = kd_model(pico_yamls["yolo26"], "yolov8n.yaml", "bckd")
    assert int(model.student_model.model[-1].reg_max) == 1 and int(model.teacher_model.model[-1].reg_max) == 16
    loss, items = model.loss(toy_batch())
    names = list(items)
    assert names[-2:] == ["bckd_cls_loss", "bckd_box_loss"]
    assert all(0 < float(items[k]) < math.inf for k in names[-2:])
    assert len(model.projector) == 0  # no adapters
    head = model.student_model.model[-1]
    for i, branch in ((len(names) - 2, head.cv3), (len(names) - 1, head.cv2)):
        model.zero_grad(set_to_none=True)
        loss[i].backward(retain_graph=True)
        assert all(p.grad is None for p in model.teacher_model.parameters())
        assert sum(float(p.grad.abs().sum()) for p in branch.parameters() if p.grad is not None) > 0


def test_bckd_yaml_defaults() -> None:
    cls, box = resolve_method("bckd")
    # the paper's weights, used with balance=0; the shipped default is automatic weights (the sweep's choice)
    assert (cls.type, cls.weight, cls.params, cls.balance) == ("bckd_cls", 1.0, {"beta": 1.0, "gate": False}, 0.25)
    assert (box.type, box.weight, box.params, box.balance) == ("bckd_box", 4.0, {"gate": False}, 0.25)
    assert TERMS["bckd_cls"] is BCKDCls and TERMS["bckd_box"] is BCKDBox
    assert BCKDCls.needs_targets and BCKDBox.needs_targets


# ------------------------------------------------------------------------------------------------------ gate=True
def _np_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    iw = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    ih = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    area = lambda x: (x[..., 2] - x[..., 0]) * (x[..., 3] - x[..., 1])  # noqa: E731
    return iw * ih / (area(a) + area(b) - iw * ih)


def test_bckd_gate_keeps_the_anchors_where_the_teacher_is_nearer_the_labels_by_hand() -> None:
    """gate=True: background anchors open where sum_c softplus(t) < sum_c softplus(s); positives where the teacher's
    TAL quality 0.5 ln sigmoid(x_label) + 6 ln IoU(box, gt) is above the student's. Both terms share the gate, sum
    over the open anchors only and still divide by every positive."""
    s, t = _preds(2, 3, 5, 1, box_scale=2.0), _preds(2, 3, 5, 1, box_scale=2.0)
    gt = torch.tensor([[[-1.0, -1.0, 16.0, 16.0]] * 5, [[0.0, 0.0, 12.0, 24.0]] * 5])  # pixels, stride 8
    a = assigned(FG, POINTS, target_bboxes=gt)
    s["scores"].requires_grad_()
    s["boxes"].requires_grad_()
    inputs = head_inputs(s, t, a)
    cls_term, box_term = BCKDCls(gate=True), BCKDBox(gate=True)
    cls_value, box_value = cls_term(inputs, None), box_term(inputs, None)

    pts, fg = POINTS.double().numpy()[None], np.array(FG)

    def np_boxes(preds):  # (N, A, 4) grid units
        d = _np_ltrb(preds["boxes"].detach().double().numpy(), 1)
        return np.concatenate([pts - d[..., :2], pts + d[..., 2:]], -1)

    def np_log_q(preds):  # label 0 for every anchor (the helper's assignment)
        x0 = preds["scores"].detach().double().numpy()[:, 0]  # (N, A)
        with np.errstate(divide="ignore"):  # IoU 0: log quality -inf, as in log_quality
            iou_log = np.log(_np_iou(np_boxes(preds) * 8.0, gt.double().numpy()))
        return 0.5 * -np.logaddexp(0, -x0) + 6.0 * iou_log

    x, y = s["scores"].detach().double().numpy(), t["scores"].double().numpy()  # (N, C, A)
    bg_open = np.logaddexp(0, y).sum(1) < np.logaddexp(0, x).sum(1)
    gate = np.where(fg, np_log_q(t) > np_log_q(s), bg_open)  # (N, A)
    assert 0 < gate[fg].sum() < fg.sum() and 0 < gate[~fg].sum() < (~fg).sum()  # both kinds mixed: a real test

    q = np_sigmoid(y)
    per_anchor = ((np.logaddexp(0, x) - q * x) * np.abs(np_sigmoid(x) - q)).sum(1)  # (N, A)
    assert cls_value.item() == pytest.approx((per_anchor * gate).sum() / 3, rel=1e-5)
    w = np.abs(np_sigmoid(y) - np_sigmoid(x)).max(1)
    expected_box = (gate * w * (1 - np_giou(np_boxes(s), np_boxes(t)))).sum() / 3
    assert box_value.item() == pytest.approx(expected_box, rel=1e-4)
    assert cls_term.stats == {
        "teacher_nearer": pytest.approx(gate.mean()),
        "teacher_nearer_fg": pytest.approx(gate[fg].mean()),
    }
    assert box_term.stats == {}  # computed once per step, recorded by the term that asked first
    (cls_value + box_value).backward()
    assert s["scores"].grad.abs().sum() > 0 and s["boxes"].grad.abs().sum() > 0


def test_bckd_gate_closes_every_anchor_when_the_student_is_the_teacher() -> None:
    """A student that predicts exactly what the teacher does is nowhere farther from the labels: every anchor closes."""
    s = _preds(2, 3, 5, 1)
    t = {k: v.clone() for k, v in s.items()}
    a = assigned(FG, POINTS, target_bboxes=torch.tensor([[[0.0, 0.0, 16.0, 16.0]] * 5] * 2))
    term = BCKDCls(gate=True)
    term(head_inputs(s, t, a), None)
    assert term.stats == {"teacher_nearer": 0.0, "teacher_nearer_fg": 0.0}
