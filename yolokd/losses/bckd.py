# yolokd, AGPL-3.0 License
"""BCKD terms: binary classification and IoU-based localisation distillation (Yang et al., ICCV 2023).

"Bridging Cross-task Protocol Inconsistency for Distillation in Dense Object Detection", arXiv:2308.14286.

The student's own head outputs are distilled in the protocol of the detection losses, each its own loss item:

- `BCKDCls` (``bckd_cls``): per-class *binary* distillation of the class logits, ``kd_qfl(s, t, beta=1)`` over every
  anchor (background included), instead of a softmax KL over classes that a sigmoid classifier does not model.
- `BCKDBox` (``bckd_box``): IoU-based localisation distillation on *decoded* boxes, ``bckd_loc``: ``1 - GIoU`` between
  the student's and the teacher's box at every anchor, weighted by the anchor's largest per-class score disagreement
  ``max_c |sigmoid(t) - sigmoid(s)|`` (detached).

Both are divided by the number of TAL positives (at least 1) and are 0 on a batch without positives. Each model's
boxes are decoded from its own box output with its own ``reg_max`` (`yolokd.head.head_boxes`: the DFL expectation
when ``reg_max > 1``, plain distances for YOLO26's ``reg_max == 1``, whose corners are then sorted); the boxes are
in grid units of their level (GIoU is scale invariant, and both boxes of an anchor share its stride). For YOLO26 heads
the one-to-many branch is used, as by every head term (`DistillInputs`).
"""

from __future__ import annotations

import torch
from torch import nn

from yolokd.head import head_boxes, rows
from yolokd.losses import functional as kdf
from yolokd.losses import register
from yolokd.losses.base import DistillInputs, Term
from yolokd.targets import Assigned

__all__ = ["BCKDBox", "BCKDCls"]


def _zero_without_positives(loss: torch.Tensor, assigned: Assigned) -> torch.Tensor:
    """``loss``, or 0 when the batch has no TAL positive (still a graph output: zero gradient); no host sync."""
    return torch.where(assigned.fg_mask.any(), loss, torch.zeros_like(loss))


@register
class BCKDCls(Term):
    """Binary classification distillation: ``kd_qfl(s, t, beta)`` over every anchor / number of TAL positives.

    Args:
        beta (float): Exponent of the ``|sigmoid(s) - sigmoid(t)|`` modulating factor (the official 1).

    Examples:
        >>> BCKDCls()
        BCKDCls(beta=1.0)
    """

    type = "bckd_cls"
    needs_targets = True

    def __init__(self, beta: float = 1.0) -> None:
        """Store the modulating exponent."""
        super().__init__()
        if beta < 0:
            raise ValueError(f"bckd_cls: beta must be >= 0, got {beta}")
        self.beta = float(beta)

    def extra_repr(self) -> str:
        """Show the hyper-parameters."""
        return f"beta={self.beta}"

    def forward(self, inputs: DistillInputs, adapters: nn.Module | None) -> torch.Tensor:
        """Return the unweighted binary class distillation loss."""
        a = self.assigned(inputs)
        s, t = rows(inputs.student.preds["scores"]), rows(inputs.teacher.preds["scores"]).detach()
        return _zero_without_positives(kdf.kd_qfl(s, t, beta=self.beta, avg_factor=a.num_pos), a)


@register
class BCKDBox(Term):
    """IoU-based localisation distillation: ``bckd_loc`` on decoded boxes over every anchor / number of positives.

    Examples:
        >>> BCKDBox().needs_targets
        True
    """

    type = "bckd_box"
    needs_targets = True

    def forward(self, inputs: DistillInputs, adapters: nn.Module | None) -> torch.Tensor:
        """Return the unweighted localisation distillation loss."""
        a = self.assigned(inputs)
        r_s, r_t = inputs.reg_max()
        sb = head_boxes(inputs.student.preds["boxes"], a.anchor_points, r_s).reshape(-1, 4)
        tb = head_boxes(inputs.teacher.preds["boxes"], a.anchor_points, r_t).detach().reshape(-1, 4)
        s, t = rows(inputs.student.preds["scores"]), rows(inputs.teacher.preds["scores"])
        return _zero_without_positives(kdf.bckd_loc(sb, tb, s, t, avg_factor=a.num_pos), a)
