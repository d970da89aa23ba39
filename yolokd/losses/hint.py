# yolokd, AGPL-3.0 License
"""Hint terms: Chen et al., "Learning Efficient Object Detection Models with Knowledge Distillation" (NeurIPS 2017).

The paper distils a Faster R-CNN three ways; each is one term here, with its own loss item:

- ``hint``: hint learning, ``mse(adapter(student neck), teacher neck)`` per level, summed over levels. The 1x1
  adaptation layer is kept even when channel counts match (the paper found it essential).
- ``hint_soft``: soft targets with class-imbalance weights. YOLO's classifier is per-class sigmoid with no background
  class, so the paper's weighted soft cross-entropy becomes a per-class soft BCE against the teacher's sigmoid
  probabilities at every anchor, weighted more at the TAL background anchors (1.5) than at the foreground ones (1.0).
  The paper's hard part (``mu * L_hard``) is Ultralytics' own classification loss, a BCE summed over anchors and
  classes and divided by the TAL target-score sum; the soft part is summed and divided by the same sum, so the two
  share one scale and the term weight plays ``1 - mu``.
- ``hint_bounded``: teacher-bounded regression at the TAL positives: the student's squared ltrb error (grid units)
  counts only while it is not below the teacher's by the margin (`yolokd.losses.functional.bounded_regression`).
  For a DFL student the targets are clamped to its bin range as Ultralytics' DFL target is.
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
    """Hint learning: sum over neck levels of ``mse(adapter(student), teacher)`` (mean over all elements).

    The paper's L2 hint loss with its adaptation layer (a 1x1 conv per level, kept even when channels match).
    """

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

    The weight is ``w_bg`` at TAL background anchors (``~fg_mask``) and ``w_fg`` at TAL foreground anchors; the loss
    is summed over classes and anchors and divided by the TAL target-score sum (`Assigned.score_sum`, at least 1),
    the normaliser of Ultralytics' classification loss ``L_hard``: the term weight is then the paper's ``1 - mu``
    against ``L_hard`` (which Ultralytics multiplies by its ``cls`` gain, 0.5 by default). Temperature 1, as in the
    paper.

    Args:
        w_bg (float): Weight of background anchors (the paper's background-class weight, 1.5).
        w_fg (float): Weight of foreground anchors (1.0 in the paper).
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

    ``R_s``, ``R_t``: decoded ltrb distances (grid units) of student and teacher, each with its own head's
    ``reg_max`` (`yolokd.head.anchor_distances`); ``y``: the assigned ground-truth box as ltrb distances from the
    anchor in the same units. When the student has DFL bins (``reg_max > 1``) it cannot predict beyond
    ``reg_max - 1``, so ``y`` is clamped to ``[0, reg_max - 1.01]`` exactly as Ultralytics clamps its DFL targets
    (``bbox2dist(anchor_points, bbox, reg_max - 1)``), and ``R_t`` to the same range, so that the gate compares the
    teacher with what the student can reach (``R_s`` lies in ``[0, reg_max - 1]`` by construction and is not
    clamped, keeping its gradient). A ``reg_max == 1`` student regresses plain distances: nothing is clamped, as in
    Ultralytics.

    Records ``stats["open"]``: the fraction of positives where the bound is active (``d_s + margin > d_t``), over
    all the positives since the last reset (0 without positives).

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
        """Return the unweighted bounded regression loss (mean over positives) and record the open fraction.

        Every anchor is decoded and the positives are selected by a 0/1 weight (no boolean indexing, no host sync).
        """
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
