# yolokd, AGPL-3.0 License
"""Keypoint term (pose models): the teacher's keypoints taught at the student's TAL positives.

Each model's keypoints are decoded with its own head's rule (`yolokd.head.decode_keypoints`) and compared with
`yolokd.losses.functional.keypoint_kd`.
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
    """Visibility-weighted L1 between student and teacher keypoints (+ visibility KL) at the TAL positives."""

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
