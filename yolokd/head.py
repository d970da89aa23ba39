# yolokd, AGPL-3.0 License
"""Reading a Detect head's outputs: rows at anchors, confidences, decoded boxes and keypoints, prototypes, suffixes.

Outputs hold, per anchor of every level (levels concatenated, row-major): ``boxes`` (N, 4 * reg_max, A) DFL logits
(distances when ``reg_max == 1``), ``scores`` (N, nc, A) class logits, and ``mask_coefficient``/``proto``, ``kpts``
or ``angle`` (N, 1, A, OBB: rotated boxes) for the task heads. Decoding follows Ultralytics' rules and runs in
float32 with autocast off.
"""

from __future__ import annotations

import torch
from torch import nn
from ultralytics.nn.modules.head import Pose26
from ultralytics.utils.loss import PoseLoss26, v8PoseLoss
from ultralytics.utils.tal import bbox2dist, dist2bbox, dist2rbox

from yolokd.taps import detect_head

__all__ = [
    "TASK_SUFFIX",
    "anchor_distances",
    "confidence",
    "decode_boxes",
    "decode_keypoints",
    "head_boxes",
    "head_rboxes",
    "num_classes",
    "prototypes",
    "rows",
    "sort_corners",
]

TASK_SUFFIX = {"detect": "", "segment": "-seg", "pose": "-pose", "obb": "-obb"}
"""The suffix of each task's Ultralytics model and checkpoint names (``yolov8n-seg.yaml``, ``yolo11s-pose.pt``)."""


def num_classes(model: nn.Module) -> int:
    """The number of classes a model's Detect head predicts."""
    return int(detect_head(model).nc)


def rows(x: torch.Tensor) -> torch.Tensor:
    """(N, K, A) head output -> (N * A, K) rows, one per anchor in (image, anchor) order.

    Examples:
        >>> rows(torch.arange(6.0).view(1, 2, 3)).tolist()
        [[0.0, 3.0], [1.0, 4.0], [2.0, 5.0]]
    """
    return x.permute(0, 2, 1).reshape(-1, x.shape[1])


def confidence(preds: dict) -> torch.Tensor:
    """(N, A) each anchor's highest class probability ``sigmoid(max_c logit)``, float32, without gradient.

    Examples:
        >>> confidence({"scores": torch.tensor([[[0.0, -1.0], [-2.0, 1.0]]])}).tolist()  # nc 2, A 2
        [[0.5, 0.7310585975646973]]
    """
    return preds["scores"].detach().float().amax(1).sigmoid()


def decode_boxes(boxes: torch.Tensor, anchor_points: torch.Tensor, reg_max: int) -> torch.Tensor:
    """Decode a Detect head's box output into xyxy boxes in grid units (Ultralytics' ``bbox_decode``), float32.

    Args:
        boxes (torch.Tensor): (N, 4 * reg_max, A) head output (DFL logits, or distances when ``reg_max == 1``).
        anchor_points (torch.Tensor): (A, 2) anchor centres in grid units.
        reg_max (int): DFL bins per side of the head that produced ``boxes``.

    Returns:
        (torch.Tensor): (N, A, 4) xyxy boxes in grid units (multiply by the stride for pixels).

    Examples:
        >>> d = torch.zeros(1, 4, 1)  # reg_max 1: distances 0
        >>> decode_boxes(d, torch.tensor([[2.5, 3.5]]), 1).tolist()
        [[[2.5, 3.5, 2.5, 3.5]]]
    """
    n, c, a = boxes.shape
    with torch.autocast(boxes.device.type, enabled=False):  # keep the DFL expectation in float32 under AMP
        dist = boxes.permute(0, 2, 1).float()
        if reg_max > 1:
            proj = torch.arange(reg_max, device=boxes.device, dtype=torch.float32)
            dist = dist.view(n, a, 4, reg_max).softmax(3).matmul(proj)
        return dist2bbox(dist, anchor_points.float(), xywh=False)


def sort_corners(boxes: torch.Tensor) -> torch.Tensor:
    r"""Sort the corners of xyxy boxes, ``(*, 4)``, so that ``x1 <= x2`` and ``y1 <= y2``.

    .. math::

        (x_1, y_1, x_2, y_2) \mapsto (\min(x_1, x_2), \min(y_1, y_2), \max(x_1, x_2), \max(y_1, y_2))

    Raw YOLO26 distances may give inverted boxes, whose GIoU is unbounded; sorted, it stays in ``[-1, 1]``.

    Examples:
        >>> sort_corners(torch.tensor([[3.0, 0.0, 1.0, 2.0]])).tolist()  # x inverted, y in order
        [[1.0, 0.0, 3.0, 2.0]]
    """
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack((torch.minimum(x1, x2), torch.minimum(y1, y2), torch.maximum(x1, x2), torch.maximum(y1, y2)), -1)


def head_boxes(boxes: torch.Tensor, anchor_points: torch.Tensor, reg_max: int) -> torch.Tensor:
    """Boxes (N, A, 4), xyxy in grid units, float32: `decode_boxes`, corners sorted when ``reg_max == 1``.

    Examples:
        >>> head_boxes(torch.tensor([-2.0, 0.0, 1.0, 0.0]).view(1, 4, 1), torch.zeros(1, 2), 1).tolist()  # x1 2, x2 1
        [[[1.0, 0.0, 2.0, 0.0]]]
    """
    xyxy = decode_boxes(boxes, anchor_points, reg_max)
    return sort_corners(xyxy) if reg_max == 1 else xyxy


def anchor_distances(boxes: torch.Tensor, reg_max: int, anchor_points: torch.Tensor) -> torch.Tensor:
    r"""Decoded ltrb distances (grid units of each anchor's level) of a Detect head's box output at every anchor.

    .. math::

        d_{n,a,k} = \sum_{b=0}^{R-1} b \, \operatorname{softmax}_b(x_{n,k,b,a}) \quad (R > 1), \qquad
        d_{n,a,k} = x_{n,k,a} \quad (R = 1)

    for the sides :math:`k \in` (left, top, right, bottom), ``R = reg_max``.

    Args:
        boxes (torch.Tensor): (N, 4 * reg_max, A) head box output.
        reg_max (int): DFL bins per side of that head.
        anchor_points (torch.Tensor): (A, 2) anchor centres in grid units.

    Returns:
        (torch.Tensor): (N, A, 4) ltrb distances, float32.

    Examples:
        >>> b = torch.tensor([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0986]).view(1, 8, 1)  # reg_max 2; last: 1/4, 3/4
        >>> [round(v, 2) for v in anchor_distances(b, 2, torch.tensor([[0.5, 0.5]]))[0, 0].tolist()]
        [0.5, 0.5, 0.5, 0.75]
    """
    n, c, a = boxes.shape
    if c != 4 * reg_max:
        raise ValueError(f"anchor_distances: boxes have {c} channels, expected 4 * reg_max = {4 * reg_max}")
    if anchor_points.shape != (a, 2):
        raise ValueError(f"anchor_distances: anchor_points shape {tuple(anchor_points.shape)}, expected {(a, 2)}")
    points = anchor_points.float()
    return bbox2dist(points, decode_boxes(boxes, points, reg_max))


def head_rboxes(boxes: torch.Tensor, angle: torch.Tensor, anchor_points: torch.Tensor, reg_max: int) -> torch.Tensor:
    """An OBB head's rotated boxes (N, A, 5), xywhr in grid units, float32 (Ultralytics' OBB ``bbox_decode``).

    The ltrb distances (`anchor_distances`) lie in the box's own frame, turned by its angle about the anchor.

    Args:
        boxes (torch.Tensor): (N, 4 * reg_max, A) head box output.
        angle (torch.Tensor): (N, 1, A) the head's angle output in radians (``preds["angle"]``).
        anchor_points (torch.Tensor): (A, 2) anchor centres in grid units.
        reg_max (int): DFL bins per side of that head.

    Examples:
        >>> d = torch.tensor([0.0, 0.0, 2.0, 0.0]).view(1, 4, 1)  # reg_max 1: right 2, the box centre 1 to the right
        >>> quarter = torch.full((1, 1, 1), torch.pi / 2)  # turned a quarter: the centre 1 below the anchor
        >>> [round(v, 4) + 0.0 for v in head_rboxes(d, quarter, torch.zeros(1, 2), 1)[0, 0].tolist()]  # no -0.0
        [0.0, 1.0, 2.0, 0.0, 1.5708]
    """
    theta = angle.float().permute(0, 2, 1)
    d = anchor_distances(boxes, reg_max, anchor_points)
    return torch.cat((dist2rbox(d, theta, anchor_points.float()), theta), -1)


def decode_keypoints(head: nn.Module, kpts: torch.Tensor, anchor_points: torch.Tensor) -> torch.Tensor:
    """A Pose head's raw keypoints (N, K * ndim, A) decoded with that head's own rule to (N, A, K, ndim), grid units."""
    n, _, a = kpts.shape
    raw = kpts.float().permute(0, 2, 1).reshape(n, a, *head.kpt_shape)
    decode = PoseLoss26.kpts_decode if isinstance(head, Pose26) else v8PoseLoss.kpts_decode
    return decode(anchor_points.float(), raw)


def prototypes(preds: dict) -> torch.Tensor:
    """The mask prototypes (N, nm, H, W) of a Segment head's outputs (YOLO26's ``Proto26`` adds a semantic map)."""
    proto = preds["proto"]
    return proto[0] if isinstance(proto, (tuple, list)) else proto
