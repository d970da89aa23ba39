# yolokd, AGPL-3.0 License
"""BCKD terms: binary classification and IoU-based localisation distillation (Yang et al., ICCV 2023).

`BCKDCls` (``kd_qfl`` over every anchor) and `BCKDBox` (``bckd_loc`` on boxes decoded with each model's own
``reg_max``; for OBB heads rotated boxes with each model's angle), both divided by the number of TAL positives.
With ``gate=True`` both count only the anchors where the teacher is nearer the labels than the student
(`functional.anchor_gate`), so that a teacher the student has caught up with pulls it less, anchor by anchor. See
docs/methods.md.
"""

from __future__ import annotations

import torch
from torch import nn

from yolokd.head import head_boxes, head_rboxes, rows
from yolokd.losses import functional as kdf
from yolokd.losses import register
from yolokd.losses.base import DistillInputs, Term
from yolokd.targets import Assigned

__all__ = ["BCKDBox", "BCKDCls"]


def _open_anchors(term: Term, inputs: DistillInputs, assigned: Assigned) -> torch.Tensor:
    """(N * A,) float weights: 1 where the teacher is nearer the labels (`functional.anchor_gate`), once per step.

    Records ``stats["teacher_nearer"]`` (the open fraction of every anchor) and ``stats["teacher_nearer_fg"]`` (of
    the positives) on the term that computes it first in a step.
    """

    def make() -> torch.Tensor:
        lq_s, lq_t = inputs.log_qualities()
        fg = assigned.fg_mask.bool().reshape(-1)
        s, t = rows(inputs.student.preds["scores"]), rows(inputs.teacher.preds["scores"])
        gate = kdf.anchor_gate(s, t, lq_s.reshape(-1), lq_t.reshape(-1), fg)
        term.record("teacher_nearer", gate.sum(), gate.numel())
        term.record("teacher_nearer_fg", (gate & fg).sum(), fg.sum())
        return gate.float()

    return inputs.memo("bckd_anchor_gate", make)


def _boxes(inputs: DistillInputs, assigned: Assigned) -> tuple[torch.Tensor, torch.Tensor]:
    """Student and teacher boxes at every anchor, grid units, each decoded with its own ``reg_max``; teacher detached.

    xyxy ``(N * A, 4)``, or for OBB heads (an ``angle`` output) rotated xywhr ``(N * A, 5)``, so that the angle is
    distilled with the box.
    """
    (r_s, r_t), s, t, p = inputs.reg_max(), inputs.student.preds, inputs.teacher.preds, assigned.anchor_points
    if "angle" in s and "angle" in t:
        sb, tb = head_rboxes(s["boxes"], s["angle"], p, r_s), head_rboxes(t["boxes"], t["angle"], p, r_t)
    else:
        sb, tb = head_boxes(s["boxes"], p, r_s), head_boxes(t["boxes"], p, r_t)
    return sb.reshape(-1, sb.shape[-1]), tb.detach().reshape(-1, tb.shape[-1])


def _zero_without_positives(loss: torch.Tensor, assigned: Assigned) -> torch.Tensor:
    """``loss``, or 0 when the batch has no TAL positive (still a graph output: zero gradient); no host sync."""
    return torch.where(assigned.fg_mask.any(), loss, torch.zeros_like(loss))


@register
class BCKDCls(Term):
    """Binary classification distillation: ``kd_qfl(s, t, beta)`` over every anchor / number of TAL positives.

    ``gate=True`` keeps only the anchors where the teacher is nearer the labels (`functional.anchor_gate`).

    Examples:
        >>> BCKDCls()
        BCKDCls(beta=1.0, gate=False)
    """

    type = "bckd_cls"
    needs_targets = True

    def __init__(self, beta: float = 1.0, gate: bool = False) -> None:
        """Store the modulating exponent and whether the anchors are gated."""
        super().__init__()
        if beta < 0:
            raise ValueError(f"bckd_cls: beta must be >= 0, got {beta}")
        self.beta, self.gate = float(beta), bool(gate)

    def extra_repr(self) -> str:
        """Show the hyper-parameters."""
        return f"beta={self.beta}, gate={self.gate}"

    def forward(self, inputs: DistillInputs, adapters: nn.Module | None) -> torch.Tensor:
        """Return the unweighted binary class distillation loss."""
        a = self.assigned(inputs)
        s, t = rows(inputs.student.preds["scores"]), rows(inputs.teacher.preds["scores"]).detach()
        weight = _open_anchors(self, inputs, a) if self.gate else None
        return _zero_without_positives(kdf.kd_qfl(s, t, beta=self.beta, weight=weight, avg_factor=a.num_pos), a)


@register
class BCKDBox(Term):
    """IoU-based localisation distillation: ``bckd_loc`` on decoded boxes over every anchor / number of positives.

    OBB heads: the rotated boxes with each model's angle, compared by `functional.rotated_distance`.

    ``gate=True`` keeps only the anchors where the teacher is nearer the labels (`functional.anchor_gate`).

    Examples:
        >>> BCKDBox(gate=True)
        BCKDBox(gate=True)
    """

    type = "bckd_box"
    needs_targets = True

    def __init__(self, gate: bool = False) -> None:
        """Store whether the anchors are gated."""
        super().__init__()
        self.gate = bool(gate)

    def extra_repr(self) -> str:
        """Show the hyper-parameters."""
        return f"gate={self.gate}"

    def forward(self, inputs: DistillInputs, adapters: nn.Module | None) -> torch.Tensor:
        """Return the unweighted localisation distillation loss."""
        a = self.assigned(inputs)
        sb, tb = _boxes(inputs, a)
        s, t = rows(inputs.student.preds["scores"]), rows(inputs.teacher.preds["scores"])
        weight = _open_anchors(self, inputs, a) if self.gate else None
        return _zero_without_positives(kdf.bckd_loc(sb, tb, s, t, weight=weight, avg_factor=a.num_pos), a)
