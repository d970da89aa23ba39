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
import torch.nn.functional as TF
from torch import nn
from ultralytics.utils.tal import bbox2dist

from yolokd.adapters import per_level
from yolokd.losses import functional as F
from yolokd.losses import register
from yolokd.losses.base import DistillInputs, Probe, Term
from yolokd.targets import Assigned, decode_boxes

__all__ = ["Hint", "HintBounded", "HintSoft", "anchor_distances", "positive_distances", "weighted_soft_bce"]

_DFL_MARGIN = 0.01  # Ultralytics' DFL targets stop 0.01 below the last bin: bbox2dist(..., reg_max - 1), DFLoss


def weighted_soft_bce(
    s: torch.Tensor, t: torch.Tensor, weight: torch.Tensor, avg_factor: float | torch.Tensor | None = None
) -> torch.Tensor:
    r"""Anchor-weighted soft binary cross-entropy of student logits against the teacher's sigmoid probabilities.

    .. math::

        L = \frac{1}{Z} \sum_{n,a} w_{n,a} \sum_c \mathrm{BCE}\left(s_{n,c,a}, \sigma(t_{n,c,a})\right), \qquad
        \mathrm{BCE}(x, q) = -q \log \sigma(x) - (1 - q) \log (1 - \sigma(x))

    summed over classes and anchors and divided by ``Z = avg_factor`` when given, else by the ``N * A`` anchors (the
    weights are not renormalised). `HintSoft` passes Ultralytics' classification normaliser (the TAL target-score
    sum), so the soft loss has the hard classification loss's scale. With soft targets the loss is not zero at
    ``s == t``: its minimum over ``s`` is the binary entropy of ``sigmoid(t)``. Computed with
    ``binary_cross_entropy_with_logits`` (log-sigmoid form, finite for large logits); float64 inputs stay float64,
    everything else runs in float32. Teacher logits are not detached here.

    Shape:
        - s: :math:`(N, C, A)` student logits
        - t: :math:`(N, C, A)` teacher logits
        - weight: :math:`(N, A)` per-anchor weight
        - avg_factor: scalar
        - output: :math:`()`

    Args:
        s (torch.Tensor): Student class logits.
        t (torch.Tensor): Teacher class logits.
        weight (torch.Tensor): Weight of each anchor (broadcast over classes).
        avg_factor (float | torch.Tensor | None): Normaliser ``Z`` (callers clamp it to ``>= 1``); None: ``N * A``.

    Returns:
        (torch.Tensor): Scalar loss; a zero connected to the graph when there are no anchors.

    Raises:
        ValueError: If the shapes do not match.

    Examples:
        >>> s = t = torch.zeros(1, 2, 2)  # BCE(0, 0.5) = ln 2 per class and anchor, two classes
        >>> round(float(weighted_soft_bce(s, t, torch.ones(1, 2))), 4)  # 2 anchors x 2 ln 2 / (N * A = 2)
        1.3863
        >>> round(float(weighted_soft_bce(s, t, torch.tensor([[1.0, 1.5]]), avg_factor=0.5)), 4)  # 2.5 x 2 ln 2 / 0.5
        6.9315
    """
    if s.dim() != 3 or s.shape != t.shape:
        raise ValueError(
            f"weighted_soft_bce: s and t must share one (N, C, A) shape, got {tuple(s.shape)}, {tuple(t.shape)}"
        )
    if weight.shape != (s.shape[0], s.shape[2]):
        raise ValueError(
            f"weighted_soft_bce: weight must have shape {(s.shape[0], s.shape[2])}, got {tuple(weight.shape)}"
        )
    up = (lambda x: x) if s.dtype == torch.float64 else (lambda x: x.float())
    s, t = up(s), up(t)
    if s.numel() == 0:
        return s.sum() * 0.0
    bce = TF.binary_cross_entropy_with_logits(s, t.sigmoid(), reduction="none")  # (N, C, A)
    total = (bce.sum(1) * weight.to(bce.dtype)).sum()
    if avg_factor is None:
        return total / (s.shape[0] * s.shape[2])
    if isinstance(avg_factor, torch.Tensor):
        avg_factor = avg_factor.to(dtype=total.dtype, device=total.device).reshape(())
    return total / avg_factor


def anchor_distances(boxes: torch.Tensor, reg_max: int, anchor_points: torch.Tensor) -> torch.Tensor:
    """Decoded ltrb distances (grid units of each anchor's level) of a Detect head's box output at every anchor.

    DFL expectation ``softmax over bins @ arange(reg_max)`` when ``reg_max > 1``, raw values when ``reg_max == 1``
    (`yolokd.targets.decode_boxes`), then back from xyxy to ltrb with Ultralytics' ``bbox2dist``. Output is float32
    (``decode_boxes`` computes in float32; autocast is off here).

    Args:
        boxes (torch.Tensor): (N, 4 * reg_max, A) head box output.
        reg_max (int): DFL bins per side of that head.
        anchor_points (torch.Tensor): (A, 2) anchor centres in grid units.

    Returns:
        (torch.Tensor): (N, A, 4) ltrb distances.

    Raises:
        ValueError: If ``boxes`` does not have ``4 * reg_max`` channels or ``A`` anchors.

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
    with torch.autocast(boxes.device.type, enabled=False):  # keep the DFL expectation in float32 under AMP
        xyxy = decode_boxes(boxes, points, reg_max)  # (N, A, 4)
    return bbox2dist(points, xyxy)


def positive_distances(
    boxes: torch.Tensor, reg_max: int, anchor_points: torch.Tensor, fg_mask: torch.Tensor
) -> torch.Tensor:
    """`anchor_distances` at the positives only: (P, 4), positives in (image, anchor) row-major order.

    Selecting the positives by a boolean mask waits for the device (the count decides the shape); the terms use
    `anchor_distances` with a 0/1 weight instead.

    Args:
        boxes (torch.Tensor): (N, 4 * reg_max, A) head box output.
        reg_max (int): DFL bins per side of that head.
        anchor_points (torch.Tensor): (A, 2) anchor centres in grid units.
        fg_mask (torch.Tensor): (N, A) bool, the positives.

    Returns:
        (torch.Tensor): (P, 4) ltrb distances.

    Raises:
        ValueError: If ``boxes`` does not have ``4 * reg_max`` channels or its anchors differ from ``fg_mask``'s.

    Examples:
        >>> b = torch.tensor([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0986]).view(1, 8, 1)  # reg_max 2; last: 1/4, 3/4
        >>> r = positive_distances(b, 2, torch.tensor([[0.5, 0.5]]), torch.ones(1, 1, dtype=torch.bool))
        >>> [round(v, 2) for v in r[0].tolist()]
        [0.5, 0.5, 0.5, 0.75]
    """
    n, _, a = boxes.shape
    if fg_mask.shape != (n, a):
        raise ValueError(f"positive_distances: fg_mask shape {tuple(fg_mask.shape)} differs from (N, A) = {(n, a)}")
    return anchor_distances(boxes, reg_max, anchor_points)[fg_mask]


def _assigned(inputs: DistillInputs, name: str) -> Assigned:
    """Return ``inputs.assigned`` or raise a clear error if the model did not compute the TAL assignment."""
    if inputs.assigned is None:
        raise ValueError(f"{name}: needs the TAL assignment (inputs.assigned), which is None")
    return inputs.assigned


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
        if adapters is None or len(adapters) != len(inputs.student_feats):
            raise ValueError("hint: needs one adapter per neck level")
        total = None
        for a, s, t in zip(adapters, inputs.student_feats, inputs.teacher_feats):
            s = a(s)
            if s.shape != t.shape:
                raise ValueError(f"hint: adapted student {tuple(s.shape)} and teacher {tuple(t.shape)} shapes differ")
            v = TF.mse_loss(s.float(), t.float())
            total = v if total is None else total + v
        return total


@register
class HintSoft(Term):
    """Class-imbalance-weighted soft targets: `weighted_soft_bce` of student vs teacher class logits at all anchors.

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
        asg = _assigned(inputs, self.type)
        fg = asg.fg_mask.bool()
        s, t = inputs.student_preds["scores"].float(), inputs.teacher_preds["scores"].float()
        weight = torch.where(fg, torch.full_like(s[:, 0], self.w_fg), torch.full_like(s[:, 0], self.w_bg))
        return weighted_soft_bce(s, t, weight, avg_factor=asg.score_sum)


@register
class HintBounded(Term):
    """Teacher-bounded regression at the TAL positives (`yolokd.losses.functional.bounded_regression`).

    ``R_s``, ``R_t``: decoded ltrb distances (grid units) of student and teacher, each with its own head's
    ``reg_max`` (`positive_distances`); ``y``: the assigned ground-truth box as ltrb distances from the anchor in the
    same units. When the student has DFL bins (``reg_max > 1``) it cannot predict beyond ``reg_max - 1``, so ``y``
    is clamped to ``[0, reg_max - 1.01]`` exactly as Ultralytics clamps its DFL targets (``bbox2dist(anchor_points,
    bbox, reg_max - 1)``), and ``R_t`` to the same range, so that the gate compares the teacher with what the student
    can reach (``R_s`` lies in ``[0, reg_max - 1]`` by construction and is not clamped, keeping its gradient). A
    ``reg_max == 1`` student regresses plain distances: nothing is clamped, as in Ultralytics.

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
        asg = _assigned(inputs, self.type)
        fg = asg.fg_mask.bool()
        if inputs.student_head is None or inputs.teacher_head is None:
            raise ValueError("hint_bounded: needs student_head and teacher_head (for their reg_max)")
        s_reg = int(inputs.student_head.reg_max)
        r_s = anchor_distances(inputs.student_preds["boxes"], s_reg, asg.anchor_points)  # (N, A, 4)
        r_t = anchor_distances(inputs.teacher_preds["boxes"], int(inputs.teacher_head.reg_max), asg.anchor_points)
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
        return F.bounded_regression(r_s, r_t, y, self.margin, weight=w, avg_factor=asg.num_pos)
