# yolokd, AGPL-3.0 License
"""Keypoint term (pose models): the teacher's keypoints taught at the student's positives.

A YOLO ``Pose`` head predicts, per anchor, ``K`` keypoints as offsets from the anchor (``kpts``, (N, K * ndim, A);
with ``ndim == 3`` the third value is a visibility logit). Each model's offsets are decoded with its own head's rule
(`yolokd.head.decode_keypoints`: Ultralytics' ``v8PoseLoss.kpts_decode`` or ``PoseLoss26.kpts_decode``, both to grid
units of the anchor's level), and
at every TAL positive of the student the student's keypoints are pulled to the teacher's with an L1 distance
weighted by the teacher's visibility, plus the binary KL of the visibilities (`yolokd.losses.functional.keypoint_kd`):
the pose counterpart of the box-regression imitation of Chen et al. (2017) and LD, with the teacher's prediction as the
target where the student is assigned an object.
"""

from __future__ import annotations

import torch
from torch import nn

from yolokd.head import decode_keypoints
from yolokd.losses import functional as kdf
from yolokd.losses import register
from yolokd.losses.base import DistillInputs, Term

__all__ = ["KeypointKD"]


@register
class KeypointKD(Term):
    """Visibility-weighted L1 between student and teacher keypoints (+ visibility KL) at the TAL positives.

    Examples:
        >>> KeypointKD().tasks
        ('pose',)
    """

    type = "keypoint"
    aliases = ("kpt_kd",)  # its type before it took the method's name
    needs_targets = True
    tasks = ("pose",)

    def forward(self, inputs: DistillInputs, adapters: nn.Module | None) -> torch.Tensor:
        """Return the unweighted keypoint distillation loss."""
        a = self.assigned(inputs)
        s = decode_keypoints(inputs.student.head, inputs.student.preds["kpts"], a.anchor_points)
        t = decode_keypoints(inputs.teacher.head, inputs.teacher.preds["kpts"].detach(), a.anchor_points)
        n, anchors, k, ndim = s.shape
        vis = (s[..., 2].reshape(-1, k), t[..., 2].reshape(-1, k)) if ndim == 3 else (None, None)
        weight = a.fg_mask.float().reshape(-1)
        self.record("positives", a.fg_mask.sum(), n)
        return kdf.keypoint_kd(s[..., :2].reshape(-1, k, 2), t[..., :2].reshape(-1, k, 2), weight, *vis)
