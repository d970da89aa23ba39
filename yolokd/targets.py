# yolokd, AGPL-3.0 License
"""Targets shared by the terms: TAL assignment, ground-truth boxes, foreground and Gaussian masks.

The assignment is recorded from the student criterion's own assigner (`recording_assignment`); OBB boxes reach the
box terms in each anchor's frame (`rotated_to_anchor_frame`) and the feature masks as enclosing boxes.
"""

from __future__ import annotations

import contextlib
import math  # noqa: F401  (doctests)
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn
from ultralytics.utils.ops import xywh2xyxy, xywhr2xyxyxyxy
from ultralytics.utils.tal import make_anchors


@dataclass
class Assigned:
    """Ultralytics' task-aligned assignment of the student's (one-to-many) predictions at one step.

    Attributes:
        fg_mask (torch.Tensor): (N, A) bool, anchors assigned to a ground truth (TAL positives).
        target_gt_idx (torch.Tensor): (N, A) long, index of the assigned ground truth within its image.
        target_bboxes (torch.Tensor): (N, A, 4) assigned boxes, xyxy, input pixels (OBB: in the anchor's frame).
        target_rboxes (torch.Tensor | None): (N, A, 5) the assigned rotated boxes (xywhr, pixels) of an OBB model.
        anchor_points (torch.Tensor): (A, 2) anchor centres in grid units of their level.
        stride_tensor (torch.Tensor): (A, 1) stride of each anchor.
        target_labels (torch.Tensor): (N, A) long, class of the assigned ground truth (meaningful where fg_mask).
        alpha (float): The assigner's classification exponent (alignment metric score^alpha * IoU^beta).
        beta (float): The assigner's IoU exponent.
        target_scores_sum (torch.Tensor | None): 0-dim ``max(sum of target scores, 1)``, Ultralytics' classification
            loss normaliser; None when built without it.
    """

    fg_mask: torch.Tensor
    target_gt_idx: torch.Tensor
    target_bboxes: torch.Tensor
    anchor_points: torch.Tensor
    stride_tensor: torch.Tensor
    target_labels: torch.Tensor
    alpha: float = 0.5
    beta: float = 6.0
    target_scores_sum: torch.Tensor | None = None
    target_rboxes: torch.Tensor | None = None

    @property
    def num_pos(self) -> torch.Tensor:
        """Number of positives, at least 1 (an ``avg_factor``), as a float tensor (no host sync)."""
        return self.fg_mask.sum().float().clamp(min=1)

    @property
    def score_sum(self) -> torch.Tensor:
        """Ultralytics' classification-loss normaliser ``max(sum of target scores, 1)``, else `num_pos`."""
        if self.target_scores_sum is None:
            return self.num_pos
        return self.target_scores_sum.float().reshape(())


@contextlib.contextmanager
def recording_assignment(assigner: nn.Module) -> Iterator[dict[str, torch.Tensor]]:
    """Within the block, record the outputs of each call of an Ultralytics TAL assigner (the last call wins).

    A forward hook (removed on exit) records the assignment the criterion makes for the student's loss, on the device;
    the target scores are kept only as ``max(sum, 1)``.

    Yields:
        (dict[str, torch.Tensor]): ``labels``, ``bboxes``, ``fg_mask``, ``gt_idx`` and ``scores_sum``; empty for an
            ``assigner`` without ``register_forward_hook``.
    """
    record: dict[str, torch.Tensor] = {}

    def hook(module: nn.Module, args: tuple, output: tuple) -> None:
        labels, bboxes, scores, fg_mask, gt_idx = output[:5]
        record.update(
            labels=labels.detach(),
            bboxes=bboxes.detach(),
            fg_mask=fg_mask.detach(),
            gt_idx=gt_idx.detach(),
            scores_sum=scores.detach().sum().float().clamp(min=1),
        )

    handle = assigner.register_forward_hook(hook) if hasattr(assigner, "register_forward_hook") else None
    try:
        yield record
    finally:
        if handle is not None:
            handle.remove()


def recorded_assignment(record: dict, feats: list[torch.Tensor], strides: list, assigner: nn.Module) -> Assigned:
    """`recording_assignment`'s record as `Assigned`, with the anchors of the student's neck levels ``feats``."""
    anchor_points, stride_tensor = make_anchors(feats, [float(s) for s in strides], 0.5)  # host strides: no sync
    bboxes, rboxes = record["bboxes"], None
    if bboxes.shape[-1] == 5:  # OBB: xywhr in pixels
        rboxes, bboxes = bboxes, rotated_to_anchor_frame(bboxes, anchor_points * stride_tensor)
    return Assigned(
        fg_mask=record["fg_mask"].bool(),
        target_gt_idx=record["gt_idx"],
        target_bboxes=bboxes,
        anchor_points=anchor_points,
        stride_tensor=stride_tensor,
        target_labels=record["labels"].long(),
        alpha=float(assigner.alpha),
        beta=float(assigner.beta),
        target_scores_sum=record["scores_sum"],
        target_rboxes=rboxes,
    )


def rotated_to_anchor_frame(xywhr: torch.Tensor, anchors_px: torch.Tensor) -> torch.Tensor:
    """Rotated boxes as axis-aligned xyxy boxes in each anchor's rotated frame (OBB targets for the box terms).

    A box ``(x, y, w, h, r)`` becomes ``(anchor + R(-r) (centre - anchor), w, h)``, as an OBB prediction decoded
    without its angle; their IoU is the rotated IoU when the angles agree.

    Args:
        xywhr (torch.Tensor): (..., A, 5) rotated boxes in pixels (centre, size, angle in radians).
        anchors_px (torch.Tensor): (A, 2) anchor centres in pixels.

    Returns:
        (torch.Tensor): (..., A, 4) xyxy boxes in pixels.

    Examples:
        >>> box = torch.tensor([[[10.0, 0.0, 4.0, 2.0, math.pi / 2]]])  # 10 px right of the anchor, turned 90 deg
        >>> [round(v, 4) for v in rotated_to_anchor_frame(box, torch.zeros(1, 2))[0, 0].tolist()]
        [-2.0, -11.0, 2.0, -9.0]
    """
    d = xywhr[..., :2] - anchors_px
    c, s = torch.cos(xywhr[..., 4]), torch.sin(xywhr[..., 4])
    centre = anchors_px + torch.stack((c * d[..., 0] + s * d[..., 1], -s * d[..., 0] + c * d[..., 1]), -1)
    half = xywhr[..., 2:4] / 2
    return torch.cat((centre - half, centre + half), -1)


def enclosing_xyxy(xywhr: torch.Tensor) -> torch.Tensor:
    """The axis-aligned box enclosing each rotated box (``xywhr`` -> ``xyxy``, same units).

    Examples:
        >>> [round(v, 4) for v in enclosing_xyxy(torch.tensor([[0.0, 0.0, 4.0, 2.0, math.pi / 2]]))[0].tolist()]
        [-1.0, -2.0, 1.0, 2.0]
    """
    corners = xywhr2xyxyxyxy(xywhr)  # (..., 4, 2)
    return torch.cat((corners.amin(-2), corners.amax(-2)), -1)


@dataclass
class GroundTruth:
    """The batch's boxes padded per image.

    Attributes:
        boxes (torch.Tensor): (N, M, 4) xyxy boxes in input-image pixels (zeros where padded).
        labels (torch.Tensor): (N, M) long class ids.
        mask (torch.Tensor): (N, M) bool, True for real boxes.
    """

    boxes: torch.Tensor
    labels: torch.Tensor
    mask: torch.Tensor


def ground_truth(batch: dict, img_hw: tuple[int, int]) -> GroundTruth:
    """Pad the batch's normalised xywh (OBB: the box enclosing xywhr) boxes into per-image xyxy pixel boxes.

    Examples:
        >>> b = {"img": torch.zeros(2, 3, 64, 64), "batch_idx": torch.tensor([1.0]), "cls": torch.tensor([[3.0]]),
        ...      "bboxes": torch.tensor([[0.5, 0.5, 0.25, 0.5]])}
        >>> gt = ground_truth(b, (64, 64))
        >>> gt.boxes[1, 0].tolist(), gt.labels[1, 0].item(), gt.mask.tolist()
        ([24.0, 16.0, 40.0, 48.0], 3, [[False], [True]])
    """
    img = batch["img"]
    n, device = img.shape[0], img.device
    idx = batch["batch_idx"].view(-1).long().to(device)
    counts = torch.bincount(idx, minlength=n) if idx.numel() else torch.zeros(n, dtype=torch.long, device=device)
    m = max(int(counts.max()) if n else 0, 1)
    boxes = torch.zeros(n, m, 4, device=device)
    labels = torch.zeros(n, m, dtype=torch.long, device=device)
    mask = torch.zeros(n, m, dtype=torch.bool, device=device)
    if idx.numel():
        order = torch.argsort(idx, stable=True)
        idx_sorted = idx[order]
        starts = torch.cumsum(counts, 0) - counts
        pos = torch.arange(idx.numel(), device=device) - starts[idx_sorted]
        h, w = img_hw
        scale = torch.tensor([w, h, w, h], device=device, dtype=torch.float32)
        b = batch["bboxes"].to(device).float()[order]
        if b.shape[-1] == 5:  # OBB: normalised xywh + angle; the box terms' masks use the enclosing box
            boxes[idx_sorted, pos] = enclosing_xyxy(torch.cat((b[:, :4] * scale, b[:, 4:]), -1))
        else:
            boxes[idx_sorted, pos] = xywh2xyxy(b * scale)
        labels[idx_sorted, pos] = batch["cls"].view(-1).long().to(device)[order]
        mask[idx_sorted, pos] = True
    return GroundTruth(boxes=boxes, labels=labels, mask=mask)


def level_sizes(feats: list[torch.Tensor]) -> list[int]:
    """Number of anchors (H * W) of each level."""
    return [f.shape[-2] * f.shape[-1] for f in feats]


def _cell_centres(h: int, w: int, stride: float, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel x and y of the cell centres of an (h, w) level, each (h, w)."""
    ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) * stride
    xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) * stride
    return torch.meshgrid(xs, ys, indexing="xy")


def foreground_masks(
    gt: GroundTruth, feats: list[torch.Tensor], strides: list[float], box_mask: torch.Tensor | None = None
) -> list[torch.Tensor]:
    """Per level, (N, H, W) bool: True where the cell centre lies inside a ground-truth box of its image.

    ``box_mask`` (N, M) bool limits the boxes that count; a cell inside several boxes is True if any of them counts.
    """
    keep = gt.mask if box_mask is None else gt.mask & box_mask.bool()
    out = []
    for f, s in zip(feats, strides):
        h, w = f.shape[-2:]
        x, y = _cell_centres(h, w, float(s), gt.boxes.device)
        b = gt.boxes[:, :, None, None, :]  # (N, M, 1, 1, 4)
        inside = (x > b[..., 0]) & (x < b[..., 2]) & (y > b[..., 1]) & (y < b[..., 3])  # (N, M, H, W)
        out.append((inside & keep[:, :, None, None]).any(1))
    return out


def gaussian_masks(
    gt: GroundTruth, feats: list[torch.Tensor], strides: list[int], sigma_scale: float = 0.5
) -> list[torch.Tensor]:
    """Per level, (N, H, W): ``M(x, y) = max over boxes of exp(-((x-cx)^2 / (2 sx^2) + (y-cy)^2 / (2 sy^2)))``.

    ``sx = sigma_scale * box width / 2`` and ``sy`` likewise (TAR's Gaussian mask), at cell centres in pixels.

    Examples:
        >>> gt = GroundTruth(torch.tensor([[[0.0, 0.0, 16.0, 16.0]]]), torch.zeros(1, 1, dtype=torch.long),
        ...                  torch.ones(1, 1, dtype=torch.bool))
        >>> round(gaussian_masks(gt, [torch.zeros(1, 1, 2, 2)], [8])[0][0, 0, 0].item(), 4)  # centre (4, 4), 1 sigma
        0.3679
    """
    out = []
    b = gt.boxes
    cx, cy = (b[..., 0] + b[..., 2]) / 2, (b[..., 1] + b[..., 3]) / 2
    sx = ((b[..., 2] - b[..., 0]) / 2 * sigma_scale).clamp(min=1e-3)
    sy = ((b[..., 3] - b[..., 1]) / 2 * sigma_scale).clamp(min=1e-3)
    for f, s in zip(feats, strides):
        h, w = f.shape[-2:]
        x, y = _cell_centres(h, w, float(s), b.device)
        e = (x - cx[..., None, None]) ** 2 / (2 * sx[..., None, None] ** 2) + (y - cy[..., None, None]) ** 2 / (
            2 * sy[..., None, None] ** 2
        )
        g = torch.exp(-e) * gt.mask[:, :, None, None]
        out.append(g.amax(1) if g.shape[1] else torch.zeros(b.shape[0], h, w, device=b.device))
    return out
