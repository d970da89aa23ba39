# yolokd, AGPL-3.0 License
"""Hint terms: Chen et al., "Learning Efficient Object Detection Models with Knowledge Distillation", NeurIPS 2017.

``hint`` (adapted neck MSE), ``hint_soft`` (soft per-class BCE, background anchors weighted more) and
``hint_bounded`` (teacher-bounded regression at the TAL positives), each its own loss item. See docs/methods.md.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from ultralytics.utils.tal import bbox2dist

from yolokd.adapters import per_level
from yolokd.head import anchor_distances
from yolokd.losses import functional as kdf
from yolokd.losses import register
from yolokd.losses.base import DistillInputs, Probe, Term

__all__ = ["Hint", "HintBounded", "HintSoft"]

_DFL_MARGIN = 0.01  # Ultralytics' DFL targets stop 0.01 below the last bin: bbox2dist(..., reg_max - 1), DFLoss


@register
class Hint(Term):
    """Hint learning: sum over neck levels of ``mse(adapter(student), teacher)`` (1x1 adapters even at equal widths)."""

    type = "hint"
    reads_teacher_head = False  # neck features only

    def make_adapters(self, probe: Probe) -> nn.Module:
        """One 1x1 adapter per neck level, student -> teacher channels."""
        return per_level(probe.student_channels, probe.teacher_channels)

    def forward(self, inputs: DistillInputs, adapters: nn.Module | None) -> torch.Tensor:
        """Return the unweighted hint loss summed over levels."""
        if adapters is None or len(adapters) != len(inputs.student.feats):
            raise ValueError("hint: needs one adapter per neck level")
        total = None
        for a, s, t in zip(adapters, inputs.student.feats, inputs.teacher.feats):
            s = a(s)
            if s.shape != t.shape:
                raise ValueError(f"hint: adapted student {tuple(s.shape)} and teacher {tuple(t.shape)} shapes differ")
            v = F.mse_loss(s.float(), t.float())
            total = v if total is None else total + v
        return total


@register
class HintSoft(Term):
    """Class-imbalance-weighted soft targets: `functional.weighted_soft_bce` of student vs teacher logits, all anchors.

    Divided by the TAL target-score sum, the normaliser of Ultralytics' classification loss, so the term weight plays
    the paper's ``1 - mu``.

    Args:
        w_bg (float): Weight of TAL background anchors (the paper's background-class weight, 1.5).
        w_fg (float): Weight of TAL foreground anchors.
    """

    type = "hint_soft"
    needs_targets = True

    def __init__(self, w_bg: float = 1.5, w_fg: float = 1.0) -> None:
        """Store the anchor weights."""
        super().__init__()
        if w_bg < 0 or w_fg < 0:
            raise ValueError(f"hint_soft: weights must be >= 0, got w_bg={w_bg}, w_fg={w_fg}")
        self.w_bg, self.w_fg = float(w_bg), float(w_fg)

    def extra_repr(self) -> str:
        """Show the hyper-parameters."""
        return f"w_bg={self.w_bg}, w_fg={self.w_fg}"

    def forward(self, inputs: DistillInputs, adapters: nn.Module | None) -> torch.Tensor:
        """Return the unweighted, anchor-weighted soft BCE over the TAL target-score sum."""
        asg = self.assigned(inputs)
        fg = asg.fg_mask.bool()
        s, t = inputs.student.preds["scores"].float(), inputs.teacher.preds["scores"].float()
        weight = torch.where(fg, torch.full_like(s[:, 0], self.w_fg), torch.full_like(s[:, 0], self.w_bg))
        return kdf.weighted_soft_bce(s, t, weight, avg_factor=asg.score_sum)


@register
class HintBounded(Term):
    """Teacher-bounded regression at the TAL positives (`yolokd.losses.functional.bounded_regression`).

    On decoded ltrb distances in grid units, each model with its own ``reg_max``; for a DFL student the target and the
    teacher are clamped to ``[0, reg_max - 1.01]`` as Ultralytics clamps its DFL targets. Records ``stats["open"]``.

    Args:
        margin (float): Margin ``m`` of the gate ``d_s + m > d_t`` (squared grid units).
    """

    type = "hint_bounded"
    needs_targets = True

    def __init__(self, margin: float = 0.0) -> None:
        """Store the margin."""
        super().__init__()
        self.margin = float(margin)

    def extra_repr(self) -> str:
        """Show the hyper-parameters."""
        return f"margin={self.margin}"

    def forward(self, inputs: DistillInputs, adapters: nn.Module | None) -> torch.Tensor:
        """Return the unweighted bounded regression loss (mean over positives) and record the open fraction."""
        asg = self.assigned(inputs)
        fg = asg.fg_mask.bool()
        s_reg, t_reg = inputs.reg_max()
        r_s = anchor_distances(inputs.student.preds["boxes"], s_reg, asg.anchor_points)  # (N, A, 4)
        r_t = anchor_distances(inputs.teacher.preds["boxes"], t_reg, asg.anchor_points)
        points = asg.anchor_points.float()
        target = asg.target_bboxes.float() / asg.stride_tensor.float()  # (N, A, 4) xyxy, grid units
        if s_reg > 1:  # the student's DFL range, as Ultralytics' BboxLoss: bbox2dist clamps to [0, reg_max - 1.01]
            y = bbox2dist(points, target, s_reg - 1)
            r_t = r_t.clamp(0, s_reg - 1 - _DFL_MARGIN)
        else:
            y = bbox2dist(points, target)
        r_s, r_t, y = r_s.reshape(-1, 4), r_t.detach().reshape(-1, 4), y.reshape(-1, 4)
        w = fg.reshape(-1).float()
        with torch.no_grad():
            d_s, d_t = (r_s - y).pow(2).sum(-1), (r_t - y).pow(2).sum(-1)
            self.record("open", ((d_s + self.margin > d_t).float() * w).sum(), w.sum())
        return kdf.bounded_regression(r_s, r_t, y, self.margin, weight=w, avg_factor=asg.num_pos)
