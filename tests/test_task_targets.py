# yolokd, AGPL-3.0 License
"""Targets of every task: the assignment recorded from the loss's own assigner, OBB boxes in the anchors' frame."""

from __future__ import annotations

import math

import torch
from helpers import IMGSZ, build, toy_batch
from ultralytics.nn.tasks import OBBModel
from ultralytics.utils.ops import xywhr2xyxyxyxy
from ultralytics.utils.tal import dist2bbox, make_anchors, rbox2dist

from yolokd.config import build_config
from yolokd.distill_model import KDModel
from yolokd.targets import enclosing_xyxy, ground_truth, rotated_to_anchor_frame


def test_rotated_targets_in_the_anchor_frame_are_the_angle_free_decoding_of_their_distances():
    """Ultralytics' rbox2dist gives the ltrb a perfect OBB prediction has; decoded without the angle it is our box."""
    g = torch.Generator().manual_seed(0)
    n = 50
    xywhr = torch.cat(
        (
            torch.rand(1, n, 2, generator=g) * 64,
            torch.rand(1, n, 2, generator=g) * 30 + 2,
            (torch.rand(1, n, 1, generator=g) - 0.25) * math.pi,
        ),
        -1,
    )
    anchors = xywhr[0, :, :2] + torch.randn(n, 2, generator=g)  # anchors near (inside) the boxes
    ltrb = rbox2dist(xywhr[..., :4], anchors, xywhr[..., 4:])
    want = dist2bbox(ltrb, anchors, xywh=False)
    torch.testing.assert_close(rotated_to_anchor_frame(xywhr, anchors), want, rtol=1e-5, atol=1e-4)
    r0 = xywhr.clone()
    r0[..., 4] = 0  # unrotated: the plain xyxy box, wherever the anchor
    torch.testing.assert_close(
        rotated_to_anchor_frame(r0, anchors),
        torch.cat((r0[..., :2] - r0[..., 2:4] / 2, r0[..., :2] + r0[..., 2:4] / 2), -1),
    )


def test_obb_ground_truth_is_the_enclosing_box():
    boxes = torch.tensor([[0.5, 0.5, 0.25, 0.125, math.pi / 6]])
    batch = {
        "img": torch.zeros(1, 3, 64, 64),
        "batch_idx": torch.zeros(1),
        "cls": torch.tensor([[2.0]]),
        "bboxes": boxes,
    }
    gt = ground_truth(batch, (64, 64))
    px = torch.cat((boxes[:, :4] * 64, boxes[:, 4:]), -1)
    corners = xywhr2xyxyxyxy(px)[0]
    assert gt.boxes[0, 0].tolist() == torch.cat((corners.amin(0), corners.amax(0))).tolist()
    assert gt.boxes[0, 0].tolist() == enclosing_xyxy(px)[0].tolist() and gt.labels.tolist() == [[2]]


def test_recorded_assignment_is_the_losss_own(pico_yaml):
    """Detect: the recorded assignment equals Ultralytics' get_assigned_targets_and_loss on the same predictions."""
    student, teacher = build(pico_yaml), build("yolov8n.yaml")
    kd = KDModel(student, teacher, build_config({"method": "tar"}), imgsz=IMGSZ)
    kd.train()
    batch = toy_batch()
    preds = student(batch["img"])
    det, _, a, _ = kd._detection_loss(batch, preds)
    crit = student.criterion
    (fg, gt_idx, boxes, anchors, strides), loss, _ = crit.get_assigned_targets_and_loss(crit.parse_output(preds), batch)
    assert a.fg_mask.any() and torch.equal(a.fg_mask, fg.bool()) and torch.equal(a.target_gt_idx, gt_idx)
    torch.testing.assert_close(a.target_bboxes, boxes)
    torch.testing.assert_close(a.anchor_points, anchors)
    torch.testing.assert_close(a.stride_tensor, strides)
    torch.testing.assert_close(det, loss * batch["img"].shape[0])
    assert a.target_rboxes is None


def test_obb_assignment_carries_rotated_boxes_turned_into_the_anchor_frame():
    torch.manual_seed(0)
    student, teacher = (
        OBBModel("yolov8n-obb.yaml", nc=3, verbose=False),
        OBBModel("yolov8n-obb.yaml", nc=3, verbose=False),
    )
    from ultralytics.cfg import get_cfg
    from ultralytics.utils import DEFAULT_CFG

    student.args = teacher.args = get_cfg(DEFAULT_CFG)
    kd = KDModel(student, teacher, build_config({"method": "tar"}), imgsz=IMGSZ)
    kd.train()
    batch = {
        "img": torch.rand(2, 3, IMGSZ, IMGSZ),
        "cls": torch.tensor([[0.0], [1.0], [2.0]]),
        "bboxes": torch.tensor([[0.4, 0.4, 0.5, 0.2, 0.5], [0.6, 0.7, 0.3, 0.3, 0.0], [0.5, 0.5, 0.6, 0.25, -0.4]]),
        "batch_idx": torch.tensor([0.0, 0.0, 1.0]),
    }
    preds = student(batch["img"])
    _, items, a, gt = kd._detection_loss(batch, preds)
    assert "angle_loss" in items and a.fg_mask.any()
    assert a.target_rboxes.shape == (*a.fg_mask.shape, 5)
    anchors, strides = make_anchors(preds["feats"], [8.0, 16.0, 32.0], 0.5)
    torch.testing.assert_close(a.target_bboxes, rotated_to_anchor_frame(a.target_rboxes, anchors * strides))
    fg = a.fg_mask
    angles = a.target_rboxes[fg][:, 4].tolist()  # each positive's target is one of the batch's three boxes
    assert all(min(abs(v - c) for c in (0.5, 0.0, -0.4)) < 1e-5 for v in angles), angles
    assert gt.mask.sum().item() == 3
    loss, items = kd.loss(batch)  # the whole KD step runs on an OBB pair
    assert torch.isfinite(loss).all() and items["tar_box_loss"] >= 0
