# yolokd, AGPL-3.0 License
"""Keypoint term (pose models): the teacher's keypoints taught at the student's positives.

A YOLO ``Pose`` head predicts, per anchor, ``K`` keypoints as offsets from the anchor (``kpts``, (N, K * ndim, A);
with ``ndim == 3`` the third value is a visibility logit). Each model's offsets are decoded with its own head's rule
(Ultralytics' ``v8PoseLoss.kpts_decode`` or ``PoseLoss26.kpts_decode``, both to grid units of the anchor's level), and
at every TAL positive of the student the student's keypoints are pulled to the teacher's with an L1 distance
weighted by the teacher's visibility, plus the binary KL of the visibilities (`yolokd.losses.functional.keypoint_kd`):
the pose counterpart of the box-regression imitation of Chen et al. (2017) and LD, with the teacher's prediction as the
target where the student is assigned an object.
"""

from __future__ import annotations

import torch
from torch import nn
from ultralytics.nn.modules.head import Pose26
from ultralytics.utils.loss import PoseLoss26, v8PoseLoss

from yolokd.losses import functional as kdf
from yolokd.losses import register
from yolokd.losses.base import DistillInputs, Term

__all__ = ["KeypointKD", "decode_keypoints"]


def decode_keypoints(head: nn.Module, kpts: torch.Tensor, anchor_points: torch.Tensor) -> torch.Tensor:
    """A Pose head's raw keypoints decoded to grid units with that head's own rule.

    Args:
        head (nn.Module): The model's Pose head (``kpt_shape``; YOLO26's ``Pose26`` decodes without the x2 offset).
        kpts (torch.Tensor): (N, K * ndim, A) raw head output.
        anchor_points (torch.Tensor): (A, 2) anchor centres in grid units.

    Returns:
        (torch.Tensor): (N, A, K, ndim): x, y in grid units of the anchor's level (and the raw visibility logit).
    """
    n, _, a = kpts.shape
    raw = kpts.float().permute(0, 2, 1).reshape(n, a, *head.kpt_shape)
    decode = PoseLoss26.kpts_decode if isinstance(head, Pose26) else v8PoseLoss.kpts_decode
    return decode(anchor_points.float(), raw)


@register
class KeypointKD(Term):
    """Visibility-weighted L1 between student and teacher keypoints (+ visibility KL) at the TAL positives.

    Examples:
        >>> KeypointKD().tasks
        ('pose',)
    """

    type = "kpt_kd"
    needs_targets = True
    tasks = ("pose",)

    def forward(self, inputs: DistillInputs, adapters: nn.Module | None) -> torch.Tensor:
        """Return the unweighted keypoint distillation loss."""
        a = self.assigned(inputs)
        s = decode_keypoints(inputs.student_head, inputs.student_preds["kpts"], a.anchor_points)
        t = decode_keypoints(inputs.teacher_head, inputs.teacher_preds["kpts"].detach(), a.anchor_points)
        n, anchors, k, ndim = s.shape
        vis = (s[..., 2].reshape(-1, k), t[..., 2].reshape(-1, k)) if ndim == 3 else (None, None)
        weight = a.fg_mask.float().reshape(-1)
        self.record("positives", a.fg_mask.sum(), n)
        return kdf.keypoint_kd(s[..., :2].reshape(-1, k, 2), t[..., :2].reshape(-1, k, 2), weight, *vis)
