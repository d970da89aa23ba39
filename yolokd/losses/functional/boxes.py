# yolokd, AGPL-3.0 License
"""Box formulas: bounded regression, teacher gates, ``1 - GIoU`` and rotated distances, BCKD's localisation, quality."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from ultralytics.utils.metrics import bbox_iou

from yolokd.head import decode_boxes
from yolokd.losses.functional._shared import check_shapes, graph_zero, reduce_rows, upcast

if TYPE_CHECKING:
    from yolokd.targets import Assigned

__all__ = [
    "bckd_loc",
    "bounded_regression",
    "giou_distance",
    "giou_loss",
    "log_quality",
    "rotated_distance",
    "teacher_better",
]


def bounded_regression(
    rs: torch.Tensor,
    rt: torch.Tensor,
    y: torch.Tensor,
    margin: float = 0.0,
    weight: torch.Tensor | None = None,
    avg_factor: float | torch.Tensor | None = None,
) -> torch.Tensor:
    r"""Teacher-bounded regression loss: penalise the student only where it is not clearly better than the teacher.

    .. math::

        d^S_i = \sum_{k=1}^{4} (r^S_{i,k} - y_{i,k})^2, \qquad d^T_i = \sum_{k=1}^{4} (r^T_{i,k} - y_{i,k})^2, \qquad
        l_i = d^S_i \, [d^S_i + m > d^T_i]

    reduced as :math:`\sum_i l_i w_i / \text{avg\_factor}` if ``avg_factor`` is given, else
    :math:`\operatorname{mean}_i(l_i w_i)`. The gate carries no gradient.

    Args:
        rs (torch.Tensor): Student box regression, ``(n, 4)``.
        rt (torch.Tensor): Teacher box regression, ``(n, 4)``; only enters the gate.
        y (torch.Tensor): Ground-truth boxes in the same encoding, ``(n, 4)``.
        margin (float): Margin ``m`` of the gate.
        weight (torch.Tensor | None): Optional per-row weight, ``(n,)``.
        avg_factor (float | torch.Tensor | None): Optional normaliser (callers clamp it to ``>= 1``).

    Returns:
        (torch.Tensor): Scalar loss, float32 (float64 for float64 inputs); a graph-connected zero if ``n == 0``.

    Examples:
        >>> rs = torch.tensor([[1.0, 1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]])  # d_S = [2, 1]
        >>> rt = torch.tensor([[1.0, 0.0, 0.0, 0.0], [2.0, 0.0, 0.0, 0.0]])  # d_T = [1, 4]
        >>> float(bounded_regression(rs, rt, torch.zeros(2, 4)))  # (2 + 0) / 2
        1.0
    """
    check_shapes("bounded_regression", rs, rt, 2, "(n, 4)")
    if rs.shape[-1] != 4:
        raise ValueError(f"bounded_regression: inputs must have shape (n, 4), got {tuple(rs.shape)}")
    if y.shape != rs.shape:
        raise ValueError(f"bounded_regression: y shape {tuple(y.shape)} differs from student shape {tuple(rs.shape)}")
    if rs.shape[0] == 0:
        return graph_zero(rs)
    rs, rt, y = upcast(rs), upcast(rt), upcast(y)
    d_s = (rs - y).pow(2).sum(dim=-1)
    d_t = (rt - y).pow(2).sum(dim=-1)
    gate = (d_s + margin > d_t).to(d_s.dtype)
    return reduce_rows(d_s * gate, weight, avg_factor, "bounded_regression")


def teacher_better(s_boxes: torch.Tensor, t_boxes: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    r"""TAR's regression gate: True where IoU(teacher box, GT) > IoU(student box, GT) (strict, no gradient).

    .. math::

        g_i = \left[\operatorname{IoU}(b^T_i, y_i) > \operatorname{IoU}(b^S_i, y_i)\right]

    Args:
        s_boxes (torch.Tensor): Student boxes, xyxy, ``(n, 4)``.
        t_boxes (torch.Tensor): Teacher boxes, same shape and units.
        gt (torch.Tensor): Assigned ground-truth boxes, same shape and units.

    Returns:
        (torch.Tensor): ``(n,)`` bool gate.

    Examples:
        >>> gt = torch.tensor([[0.0, 0.0, 4.0, 4.0], [0.0, 0.0, 4.0, 4.0]])
        >>> s = torch.tensor([[0.0, 0.0, 2.0, 4.0], [0.0, 0.0, 4.0, 4.0]])
        >>> teacher_better(s, gt.flip(0), gt).tolist()  # teacher == GT beats a half box; a tie is not strict
        [True, False]
    """
    with torch.no_grad():
        s_boxes, t_boxes, gt = upcast(s_boxes), upcast(t_boxes), upcast(gt)
        iou_t = bbox_iou(t_boxes, gt, xywh=False).squeeze(-1)
        iou_s = bbox_iou(s_boxes, gt, xywh=False).squeeze(-1)
        return iou_t > iou_s


def giou_distance(a: torch.Tensor, b: torch.Tensor, eps: float | None = None) -> torch.Tensor:
    r"""``1 - GIoU`` of paired xyxy boxes, box by box: in ``[0, 2]``, 0 for equal boxes.

    .. math::

        1 - \operatorname{GIoU}(a, b) = 1 - \frac{|a \cap b|}{U} + \frac{C - U}{C}, \qquad U = |a| + |b| - |a \cap b|

    with :math:`C` the area of the smallest box enclosing both.

    Args:
        a (torch.Tensor): Boxes, xyxy, ``(*, 4)``.
        b (torch.Tensor): Boxes, same shape and units.
        eps (float | None): None for Ultralytics' ``bbox_iou(..., GIoU=True)``; a number clamps :math:`U` and
            :math:`C` at ``eps`` (mmdetection's form, as BCKD's official code).

    Returns:
        (torch.Tensor): ``1 - GIoU`` per box pair, ``(*)``, float32 (float64 for float64 inputs).

    Examples:
        >>> a, b = torch.tensor([[0.0, 0.0, 2.0, 2.0]]), torch.tensor([[1.0, 0.0, 3.0, 2.0]])  # IoU 1/3, hull = union
        >>> round(float(giou_distance(a, b)), 4)
        0.6667
    """
    a, b = upcast(a), upcast(b)
    if eps is None:
        return 1.0 - bbox_iou(a, b, xywh=False, GIoU=True).squeeze(-1)
    wh = (torch.minimum(a[..., 2:], b[..., 2:]) - torch.maximum(a[..., :2], b[..., :2])).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    union = (area_a + area_b - inter).clamp(min=eps)
    ewh = (torch.maximum(a[..., 2:], b[..., 2:]) - torch.minimum(a[..., :2], b[..., :2])).clamp(min=0)
    enclose = (ewh[..., 0] * ewh[..., 1]).clamp(min=eps)
    return 1.0 - (inter / union - (enclose - union) / enclose)


def rotated_distance(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    r"""Hellinger distance of paired rotated boxes as Gaussians (``1 - ProbIoU``, Llerena et al. 2021): in ``[0, 1]``.

    Each box ``(x, y, w, h, r)`` is the Gaussian :math:`\mathcal{N}(\mu, \Sigma)`, :math:`\mu = (x, y)`,
    :math:`\Sigma = R(r) \operatorname{diag}(w^2, h^2) R(r)^\top / 12`. With :math:`\bar\Sigma = (\Sigma_a +
    \Sigma_b) / 2` and :math:`\delta = \mu_a - \mu_b`:

    .. math::

        B = \tfrac{1}{8} \delta^\top \bar\Sigma^{-1} \delta
            + \tfrac{1}{2} \ln \frac{\det \bar\Sigma}{\sqrt{\det \Sigma_a \det \Sigma_b}}, \qquad
        d = \sqrt{1 - e^{-B} + \epsilon}

    with :math:`B` clamped to ``[eps, 100]`` and ``eps`` in the denominators, as Ultralytics' ``probiou`` (the OBB
    box loss's similarity). It compares centre, size and angle at once; it is periodic in the angle with period
    :math:`\pi` and equal for ``(w, h, r)`` and ``(h, w, r + pi / 2)``, the same rectangle.

    Args:
        a (torch.Tensor): Rotated boxes, xywhr (angle in radians), ``(*, 5)``.
        b (torch.Tensor): Rotated boxes, same shape and units.
        eps (float): Floor of :math:`B`, and added to the denominators and under the square root.

    Returns:
        (torch.Tensor): The distance per box pair, ``(*)``, float32 (float64 for float64 inputs).

    Examples:
        >>> a = torch.tensor([[0.0, 0.0, 12**0.5, 12**0.5, 0.0]])  # Sigma = I
        >>> b = torch.tensor([[2.0, 0.0, 12**0.5, 12**0.5, 0.0]])  # B = 4 / 8 = 0.5
        >>> round(float(rotated_distance(a, b)), 4)  # sqrt(1 - exp(-0.5))
        0.6273
    """
    if a.shape != b.shape or a.shape[-1] != 5:
        raise ValueError(f"rotated_distance: boxes must share one shape (*, 5), got {tuple(a.shape)}, {tuple(b.shape)}")
    a, b = upcast(a), upcast(b)

    def cov(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The entries (s_xx, s_yy, s_xy) of each box's covariance."""
        vw, vh = x[..., 2].square() / 12, x[..., 3].square() / 12
        c, s = torch.cos(x[..., 4]), torch.sin(x[..., 4])
        return vw * c * c + vh * s * s, vw * s * s + vh * c * c, (vw - vh) * c * s

    (pa, qa, ra), (pb, qb, rb) = cov(a), cov(b)
    p, q, r = (pa + pb) / 2, (qa + qb) / 2, (ra + rb) / 2  # the mean covariance
    det = (p * q - r * r).clamp(min=0)  # >= 0 in exact arithmetic; float rounding may go below
    dx, dy = a[..., 0] - b[..., 0], a[..., 1] - b[..., 1]
    mahalanobis = (q * dx * dx - 2 * r * dx * dy + p * dy * dy) / (det + eps)
    # sqrt(det S_a det S_b) = |w_a h_a w_b h_b| / 144 exactly: no square root, so a side of 0 has a finite gradient
    root = (a[..., 2] * a[..., 3] * b[..., 2] * b[..., 3]).abs() / 144
    log_ratio = torch.log(det / (root + eps) + eps)
    bd = (mahalanobis / 8 + log_ratio / 2).clamp(eps, 100.0)
    return (1.0 - torch.exp(-bd) + eps).sqrt()


def giou_loss(
    s_boxes: torch.Tensor, t_boxes: torch.Tensor, gate: torch.Tensor, avg_factor: float | torch.Tensor | None = None
) -> torch.Tensor:
    r"""Gated (or weighted) ``1 - GIoU(student box, teacher box)`` (`giou_distance`, Ultralytics' form) over the rows.

    .. math::

        L = \frac{1}{Z} \sum_i g_i \left(1 - \operatorname{GIoU}(b^S_i, b^T_i)\right), \qquad
        Z = \text{avg\_factor} \text{ if given, else } \max(n, 1)

    ``Z`` counts the candidates, not the open gates, so the loss per open row does not swing with their fraction.

    Args:
        s_boxes (torch.Tensor): Student boxes, xyxy, ``(n, 4)``.
        t_boxes (torch.Tensor): Teacher boxes, xyxy, ``(n, 4)``; the target, not detached here.
        gate (torch.Tensor): Rows that count, bool ``(n,)``, or each row's weight ``g_i``, float ``(n,)``.
        avg_factor (float | torch.Tensor | None): Number of candidates ``Z`` (callers clamp it to ``>= 1``).

    Returns:
        (torch.Tensor): Scalar loss, float32 (float64 for float64 inputs).

    Examples:
        >>> s = torch.tensor([[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 1.0, 1.0]])
        >>> t = torch.tensor([[0.0, 0.0, 2.0, 4.0], [5.0, 5.0, 6.0, 6.0]])
        >>> round(float(giou_loss(s, t, torch.tensor([True, False]))), 4)  # IoU 1/2, hull = union: (1 - 0.5) / 2
        0.25
        >>> round(float(giou_loss(s, t, torch.tensor([0.5, 0.0]), avg_factor=0.5)), 4)  # weighted: 0.5 x 0.5 / 0.5
        0.5
    """
    dist = giou_distance(s_boxes, t_boxes)
    total = (dist * gate).sum() if gate.is_floating_point() else torch.where(gate, dist, torch.zeros_like(dist)).sum()
    if avg_factor is None:
        return total / max(dist.shape[0], 1)
    if isinstance(avg_factor, torch.Tensor):
        avg_factor = avg_factor.to(dtype=total.dtype, device=total.device).reshape(())
    return total / avg_factor


@torch.no_grad()
def log_quality(scores: torch.Tensor, boxes: torch.Tensor, reg_max: int, assigned: Assigned) -> torch.Tensor:
    r"""Log of the TAL alignment quality of one model's predictions against the assigned ground truth, per anchor.

    .. math::

        \log q = \alpha \log \sigma(x_{\text{label}}) + \beta \log \operatorname{IoU}(\hat b, b_{\text{gt}})

    with :math:`x_{\text{label}}` the logit of the assigned class and :math:`\hat b` the decoded box in pixels. The log
    form avoids float32 underflow (IoU 0 gives ``-inf``). Meaningful only where ``assigned.fg_mask``; no gradient.

    Args:
        scores (torch.Tensor): Class logits, ``(N, nc, A)``.
        boxes (torch.Tensor): Box output, ``(N, 4 * reg_max, A)`` (DFL logits, or distances when ``reg_max == 1``).
        reg_max (int): The model's own DFL bins per side.
        assigned (Assigned): The TAL assignment.

    Returns:
        (torch.Tensor): Log quality per anchor, ``(N, A)``, float32.

    Examples:
        >>> from yolokd.targets import Assigned
        >>> fg, idx = torch.ones(1, 1, dtype=torch.bool), torch.zeros(1, 1, dtype=torch.long)
        >>> gt = torch.tensor([[[0.0, 0.0, 8.0, 8.0]]])  # pixels; anchor (0.5, 0.5), stride 8
        >>> a = Assigned(fg, idx, gt, torch.tensor([[0.5, 0.5]]), torch.full((1, 1), 8.0), idx, alpha=0.5, beta=6.0)
        >>> box = torch.full((1, 4, 1), 0.5)  # reg_max 1: ltrb 0.5 grid units, exactly the GT box
        >>> round(float(log_quality(torch.zeros(1, 2, 1), box, 1, a)), 4)  # 0.5 ln sigma(0) + 6 ln 1
        -0.3466
    """
    scores = scores.float()
    labels = assigned.target_labels.long().clamp(0, scores.shape[1] - 1)
    log_score = F.logsigmoid(scores.gather(1, labels.unsqueeze(1)).squeeze(1))  # (N, A)
    boxes = decode_boxes(boxes, assigned.anchor_points, reg_max) * assigned.stride_tensor.float()
    iou = bbox_iou(boxes, assigned.target_bboxes.float(), xywh=False).squeeze(-1).clamp(0, 1)  # (N, A)
    out = assigned.alpha * log_score
    if assigned.beta != 0:
        out = out + assigned.beta * iou.log()
    return out


def bckd_loc(
    sb: torch.Tensor,
    tb: torch.Tensor,
    s: torch.Tensor,
    t: torch.Tensor,
    weight: torch.Tensor | None = None,
    avg_factor: float | torch.Tensor | None = None,
    eps: float = 1e-6,
) -> torch.Tensor:
    r"""BCKD's IoU-based localisation distillation (Yang et al., ICCV 2023), weighted by the score disagreement.

    .. math::

        w_i = v_i \max_c \left|\sigma(t_{i,c}) - \sigma(s_{i,c})\right|, \qquad
        L = \frac{1}{Z} \sum_i w_i \, D(b^S_i, b^T_i)

    with the scores detached, :math:`v` the optional ``weight`` and :math:`Z` = ``avg_factor`` if given, else ``n``.
    For xyxy boxes ``(n, 4)``, :math:`D = 1 - \operatorname{GIoU}` in `giou_distance`'s mmdetection form
    (``eps``); for rotated xywhr boxes ``(n, 5)`` (OBB heads), :math:`D` = `rotated_distance`, which also compares
    the angles.

    Args:
        sb (torch.Tensor): Student boxes, xyxy ``(n, 4)`` or xywhr ``(n, 5)``.
        tb (torch.Tensor): Teacher boxes, the same layout; the target, not detached here.
        s (torch.Tensor): Student class logits, ``(n, C)``.
        t (torch.Tensor): Teacher class logits, ``(n, C)``.
        weight (torch.Tensor | None): Optional extra per-row weight, ``(n,)``.
        avg_factor (float | torch.Tensor | None): Optional normaliser (callers clamp it to ``>= 1``).
        eps (float): Floor of the union and the enclosing area.

    Returns:
        (torch.Tensor): Scalar loss, float32 (float64 for float64 inputs); a graph-connected zero if no weight > 0.

    Examples:
        >>> sb = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
        >>> tb = torch.tensor([[1.0, 0.0, 3.0, 2.0]])  # IoU 2/6, enclosing box 6 = union: GIoU 1/3
        >>> s, t = torch.zeros(1, 2), torch.tensor([[0.0, 1e4]])  # max |sigmoid(t) - sigmoid(s)| = 0.5
        >>> round(float(bckd_loc(sb, tb, s, t)), 6)  # 0.5 * (1 - 1/3)
        0.333333
    """
    check_shapes("bckd_loc", sb, tb, 2, "(n, 4) or (n, 5)")
    if sb.shape[-1] not in (4, 5):
        raise ValueError(f"bckd_loc: boxes must have shape (n, 4) or (n, 5), got {tuple(sb.shape)}")
    check_shapes("bckd_loc", s, t, 2, "(n, C)")
    if s.shape[0] != sb.shape[0]:
        raise ValueError(f"bckd_loc: {sb.shape[0]} boxes but {s.shape[0]} rows of logits")
    if sb.shape[0] == 0:
        return graph_zero(sb)
    sb, tb = upcast(sb), upcast(tb)
    w = (upcast(t.detach()).sigmoid() - upcast(s.detach()).sigmoid()).abs().amax(dim=-1).to(sb.dtype)
    loss = w * (giou_distance(sb, tb, eps) if sb.shape[-1] == 4 else rotated_distance(sb, tb))
    return reduce_rows(loss, weight, avg_factor, "bckd_loc")
