# yolokd, AGPL-3.0 License
"""Pure functional core of the distillation losses.

Every function takes tensors and returns a tensor; there is no state, no module and no hidden ``detach``. Teacher
inputs are treated as targets but are *not* detached here: callers decide whether gradients may reach the teacher.

Precision policy: float16/bfloat16 (and other non-float64) inputs are upcast with ``.float()`` and the computation runs
in float32; float64 inputs are kept in float64 (so ``torch.autograd.gradcheck`` works). Loss functions return a 0-dim
tensor. Empty inputs (no rows, empty mask) give a zero that is still connected to the autograd graph.

Imported as ``from yolokd.losses import functional as kdf`` (in yolokd and its tests ``F`` always means
``torch.nn.functional``, as here).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from ultralytics.utils.metrics import bbox_iou
from ultralytics.utils.tal import bbox2dist

from yolokd.targets import decode_boxes

if TYPE_CHECKING:
    from yolokd.targets import Assigned

__all__ = [
    "align_scale",
    "anchor_distances",
    "balance_weights",
    "binary_kl",
    "bounded_regression",
    "cosine_fg",
    "cwd",
    "gaussian_imitation",
    "giou_loss",
    "kd_qfl",
    "keypoint_kd",
    "ld",
    "log_quality",
    "mask_kd",
    "mask_logits",
    "object_gate",
    "positive_distances",
    "sort_corners",
    "teacher_better",
    "weighted_soft_bce",
]


def _up(x: torch.Tensor) -> torch.Tensor:
    """Upcast to float32 unless already float64."""
    return x if x.dtype == torch.float64 else x.float()


def _tempered(x: torch.Tensor, T: float) -> torch.Tensor:
    """``_up(x) / T``, without the division (a full copy, forward and backward) at the usual ``T = 1``."""
    x = _up(x)
    return x if T == 1 else x / T


def _check_pair(name: str, s: torch.Tensor, t: torch.Tensor, ndim: int, layout: str) -> None:
    """Raise ``ValueError`` unless ``s`` and ``t`` share one shape of rank ``ndim``."""
    if s.dim() != ndim:
        raise ValueError(f"{name}: student must have shape {layout} (rank {ndim}), got shape {tuple(s.shape)}")
    if s.shape != t.shape:
        raise ValueError(f"{name}: student and teacher shapes differ: {tuple(s.shape)} vs {tuple(t.shape)}")


def _zero(x: torch.Tensor) -> torch.Tensor:
    """Return a zero scalar connected to the graph of ``x`` (works for empty ``x``)."""
    return _up(x).sum() * 0.0


def _reduce(
    loss: torch.Tensor, weight: torch.Tensor | None, avg_factor: float | torch.Tensor | None, name: str
) -> torch.Tensor:
    """Apply the row weight of shape ``(n,)`` and reduce: ``sum / avg_factor`` if given, else ``mean``."""
    if weight is not None:
        if weight.shape != loss.shape[:1]:
            raise ValueError(f"{name}: weight must have shape ({loss.shape[0]},), got {tuple(weight.shape)}")
        weight = _up(weight)
        loss = loss * (weight if loss.dim() == 1 else weight.unsqueeze(-1))
    if avg_factor is None:
        return loss.mean()
    if isinstance(avg_factor, torch.Tensor):
        avg_factor = avg_factor.to(dtype=loss.dtype, device=loss.device).reshape(())
    return loss.sum() / avg_factor


def cwd(s: torch.Tensor, t: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
    r"""Channel-wise distillation (CWD) loss.

    Each channel is turned into a distribution over its ``H*W`` spatial positions and the student is matched to the
    teacher with the KL divergence (a true KL, not divided by ``H*W``):

    .. math::

        p_{n,c,i} = \operatorname{softmax}_i(x_{n,c,i} / \tau), \qquad
        L = \frac{\tau^2}{N C} \sum_{n,c,i} p^T_{n,c,i} \left(\log p^T_{n,c,i} - \log p^S_{n,c,i}\right)

    Shape:
        - s: :math:`(N, C, H, W)`
        - t: :math:`(N, C, H, W)`, same as ``s``
        - output: :math:`()`

    Args:
        s (torch.Tensor): Student feature map (logits).
        t (torch.Tensor): Teacher feature map (logits), the target; not detached here.
        tau (float): Softmax temperature. The loss is scaled by ``tau**2``.

    Returns:
        (torch.Tensor): Scalar loss, float32 (float64 for float64 inputs).

    Raises:
        ValueError: If ``s`` is not 4-D or ``s`` and ``t`` have different shapes.

    Examples:
        >>> import math
        >>> x = torch.randn(2, 3, 4, 4)
        >>> float(cwd(x, x))
        0.0
        >>> s = torch.tensor([0.0, math.log(3.0)]).view(1, 1, 1, 2)  # p_S = [1/4, 3/4]
        >>> t = torch.zeros(1, 1, 1, 2)  # p_T = [1/2, 1/2]
        >>> round(float(cwd(s, t)), 6)  # 0.5 * ln(4/3)
        0.143841

    """
    _check_pair("cwd", s, t, 4, "(N, C, H, W)")
    n, c = s.shape[:2]
    if s.numel() == 0:
        return _zero(s)
    log_ps = F.log_softmax(_tempered(s.flatten(2), tau), dim=-1)
    log_pt = F.log_softmax(_tempered(t.flatten(2), tau), dim=-1)
    kl = (log_pt.exp() * (log_pt - log_ps)).sum()
    return kl * (tau**2 / (n * c))


def kd_qfl(
    s: torch.Tensor,
    t: torch.Tensor,
    beta: float = 1.0,
    weight: torch.Tensor | None = None,
    avg_factor: float | torch.Tensor | None = None,
) -> torch.Tensor:
    r"""Quality-focal-style classification distillation loss with soft teacher targets.

    The teacher probabilities are the BCE targets and the modulating factor down-weights elements the student
    already matches:

    .. math::

        q = \sigma(t), \qquad
        l_{i,c} = \operatorname{BCE}(s_{i,c}, q_{i,c}) \, \left|\sigma(s_{i,c}) - q_{i,c}\right|^{\beta}

    The modulating factor :math:`|\sigma(s) - q|^\beta` is part of the loss as written and is **not** detached, so
    gradients flow through it as well. Reduction: :math:`\sum_{i,c} l_{i,c} w_i / \text{avg\_factor}` if
    ``avg_factor`` is given, else :math:`\operatorname{mean}_{i,c}(l_{i,c} w_i)`. The loss is zero when ``s == t``
    (for ``beta > 0``) because the modulating factor vanishes.

    Shape:
        - s: :math:`(n, C)`
        - t: :math:`(n, C)`, same as ``s``
        - weight: :math:`(n,)`, broadcast over ``C``
        - output: :math:`()`

    Args:
        s (torch.Tensor): Student classification logits.
        t (torch.Tensor): Teacher classification logits, the target; not detached here.
        beta (float): Exponent of the modulating factor. For ``0 < beta < 1`` the gradient is undefined where
            ``sigmoid(s) == sigmoid(t)`` exactly.
        weight (torch.Tensor | None): Optional per-row weight.
        avg_factor (float | torch.Tensor | None): Optional normaliser; when given the weighted sum is divided by it
            (callers clamp it to ``>= 1``).

    Returns:
        (torch.Tensor): Scalar loss, float32 (float64 for float64 inputs); zero connected to the graph if ``n == 0``.

    Raises:
        ValueError: If ``s`` is not 2-D, ``s`` and ``t`` have different shapes, or ``weight`` is not ``(n,)``.

    Examples:
        >>> x = torch.randn(5, 3)
        >>> float(kd_qfl(x, x))
        0.0
        >>> s, t = torch.zeros(1, 1), torch.full((1, 1), float("inf"))  # q = 1: BCE = ln 2, factor = 0.5
        >>> round(float(kd_qfl(s, t)), 6)  # 0.5 * ln 2
        0.346574

    """
    _check_pair("kd_qfl", s, t, 2, "(n, C)")
    if s.shape[0] == 0:
        return _zero(s)
    s, t = _up(s), _up(t)
    q = t.sigmoid()
    loss = F.binary_cross_entropy_with_logits(s, q, reduction="none") * (s.sigmoid() - q).abs().pow(beta)
    return _reduce(loss, weight, avg_factor, "kd_qfl")


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
    s, t = _up(s), _up(t)
    if s.numel() == 0:
        return s.sum() * 0.0
    bce = F.binary_cross_entropy_with_logits(s, t.sigmoid(), reduction="none")  # (N, C, A)
    total = (bce.sum(1) * weight.to(bce.dtype)).sum()
    if avg_factor is None:
        return total / (s.shape[0] * s.shape[2])
    if isinstance(avg_factor, torch.Tensor):
        avg_factor = avg_factor.to(dtype=total.dtype, device=total.device).reshape(())
    return total / avg_factor


def ld(
    s: torch.Tensor,
    t: torch.Tensor,
    T: float = 1.0,
    weight: torch.Tensor | None = None,
    avg_factor: float | torch.Tensor | None = None,
) -> torch.Tensor:
    r"""Localization distillation (LD) loss over discretised box-side distributions.

    Each row holds the logits of one box side over ``B`` bins:

    .. math::

        p_{m,b} = \operatorname{softmax}_b(x_{m,b} / T), \qquad
        l_m = T^2 \sum_b p^T_{m,b} \left(\log p^T_{m,b} - \log p^S_{m,b}\right)

    Reduction: :math:`\sum_m l_m w_m / \text{avg\_factor}` if ``avg_factor`` is given, else
    :math:`\operatorname{mean}_m(l_m w_m)`.

    Shape:
        - s: :math:`(m, B)`
        - t: :math:`(m, B)`, same as ``s``
        - weight: :math:`(m,)`
        - output: :math:`()`

    Args:
        s (torch.Tensor): Student bin logits, one row per box side.
        t (torch.Tensor): Teacher bin logits, the target; not detached here.
        T (float): Softmax temperature. Each row's KL is scaled by ``T**2``.
        weight (torch.Tensor | None): Optional per-row weight.
        avg_factor (float | torch.Tensor | None): Optional normaliser; when given the weighted sum is divided by it
            (callers clamp it to ``>= 1``).

    Returns:
        (torch.Tensor): Scalar loss, float32 (float64 for float64 inputs); zero connected to the graph if ``m == 0``.

    Raises:
        ValueError: If ``s`` is not 2-D, ``s`` and ``t`` have different shapes, or ``weight`` is not ``(m,)``.

    Examples:
        >>> import math
        >>> x = torch.randn(8, 16)
        >>> float(ld(x, x))
        0.0
        >>> s = torch.tensor([[0.0, math.log(3.0)]])  # p_S = [1/4, 3/4]
        >>> t = torch.zeros(1, 2)  # p_T = [1/2, 1/2]
        >>> round(float(ld(s, t)), 6)  # 0.5 * ln(4/3)
        0.143841

    """
    _check_pair("ld", s, t, 2, "(m, B)")
    if s.shape[0] == 0:
        return _zero(s)
    log_ps = F.log_softmax(_tempered(s, T), dim=-1)
    log_pt = F.log_softmax(_tempered(t, T), dim=-1)
    loss = (log_pt.exp() * (log_pt - log_ps)).sum(dim=-1)
    return _reduce(loss if T == 1 else loss * T**2, weight, avg_factor, "ld")


def align_scale(s: torch.Tensor, t: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    r"""Re-standardise the student features to the teacher's per-channel statistics.

    For every channel ``c`` the mean and the unbiased standard deviation are taken over ``(N, H, W)``:

    .. math::

        \hat{s}_{n,c,h,w} = \frac{s_{n,c,h,w} - \mu^S_c}{\sigma^S_c + \epsilon} \, \sigma^T_c + \mu^T_c

    Shape:
        - s: :math:`(N, C, H, W)`
        - t: :math:`(N, C, H, W)`, same as ``s``
        - output: :math:`(N, C, H, W)`

    Args:
        s (torch.Tensor): Student feature map.
        t (torch.Tensor): Teacher feature map providing the target statistics; not detached here.
        eps (float): Added to the student standard deviation.

    Returns:
        (torch.Tensor): Aligned student features, float32 (float64 for float64 inputs).

    Raises:
        ValueError: If ``s`` is not 4-D, ``s`` and ``t`` have different shapes, or ``N*H*W < 2`` (the unbiased
            standard deviation needs at least two values per channel).

    Examples:
        >>> s = torch.tensor([1.0, 3.0]).view(1, 1, 1, 2)  # mean 2, std sqrt(2)
        >>> t = torch.tensor([0.0, 10.0]).view(1, 1, 1, 2)  # mean 5, std sqrt(50)
        >>> torch.allclose(align_scale(s, t), t, atol=1e-5)  # [1, 3] -> [0, 10]
        True

    """
    _check_pair("align_scale", s, t, 4, "(N, C, H, W)")
    if s.numel() // max(s.shape[1], 1) < 2 and s.numel() > 0:
        raise ValueError(f"align_scale: need at least 2 values per channel over (N, H, W), got shape {tuple(s.shape)}")
    s, t = _up(s), _up(t)
    std_s, _, d = _channel_stats(s)
    std_t, mean_t, _ = _channel_stats(t)
    # mean_t + d x (std_t / (std_s + eps)): per-channel factors, one fused multiply-add over the map
    return torch.addcmul(mean_t, d, std_t / (std_s + eps))


def _channel_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-channel unbiased std and mean of an (N, C, H, W) map over ``(N, H, W)``, and the deviations from the mean.

    Shapes: std and mean (1, C, 1, 1); the deviations ``x - mean`` like ``x`` (every caller needs them next). The std
    is ``torch.std_mean(x, dim=(0, 2, 3), correction=1, keepdim=True)``'s, in two passes (the mean, then the squared
    deviations from it): about 10x faster on CPU, where ``std_mean`` over these dimensions runs a slow reduction
    (BENCHMARKS.md, "Cost of a step").
    """
    mean = x.mean(dim=(0, 2, 3), keepdim=True)
    d = x - mean
    var = (d * d).sum(dim=(0, 2, 3), keepdim=True) / (x.numel() // max(x.shape[1], 1) - 1)
    return var.sqrt(), mean, d


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

    The gate is a strict inequality and carries no gradient; rows where it is off still count in the reduction:
    :math:`\sum_i l_i w_i / \text{avg\_factor}` if ``avg_factor`` is given, else :math:`\operatorname{mean}_i(l_i w_i)`
    (a 0/1 ``weight`` with ``avg_factor`` = its sum selects rows without indexing, hence without a host sync).

    Shape:
        - rs: :math:`(n, 4)`
        - rt: :math:`(n, 4)`
        - y: :math:`(n, 4)`
        - weight: :math:`(n,)`
        - output: :math:`()`

    Args:
        rs (torch.Tensor): Student box regression.
        rt (torch.Tensor): Teacher box regression; not detached here (it only enters the gate).
        y (torch.Tensor): Ground-truth boxes in the same encoding.
        margin (float): Margin ``m`` of the gate.
        weight (torch.Tensor | None): Optional per-row weight.
        avg_factor (float | torch.Tensor | None): Optional normaliser; when given the weighted sum is divided by it
            (callers clamp it to ``>= 1``).

    Returns:
        (torch.Tensor): Scalar loss, float32 (float64 for float64 inputs); zero connected to the graph if ``n == 0``.

    Raises:
        ValueError: If the inputs are not ``(n, 4)``, their shapes differ, or ``weight`` is not ``(n,)``.

    Examples:
        >>> rs = torch.tensor([[1.0, 1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]])  # d_S = [2, 1]
        >>> rt = torch.tensor([[1.0, 0.0, 0.0, 0.0], [2.0, 0.0, 0.0, 0.0]])  # d_T = [1, 4]
        >>> float(bounded_regression(rs, rt, torch.zeros(2, 4)))  # (2 + 0) / 2
        1.0
        >>> float(bounded_regression(rs, rt, torch.zeros(2, 4), weight=torch.tensor([1.0, 0.0]), avg_factor=1.0))
        2.0

    """
    _check_pair("bounded_regression", rs, rt, 2, "(n, 4)")
    if rs.shape[-1] != 4:
        raise ValueError(f"bounded_regression: inputs must have shape (n, 4), got {tuple(rs.shape)}")
    if y.shape != rs.shape:
        raise ValueError(f"bounded_regression: y shape {tuple(y.shape)} differs from student shape {tuple(rs.shape)}")
    if rs.shape[0] == 0:
        return _zero(rs)
    rs, rt, y = _up(rs), _up(rt), _up(y)
    d_s = (rs - y).pow(2).sum(dim=-1)
    d_t = (rt - y).pow(2).sum(dim=-1)
    gate = (d_s + margin > d_t).to(d_s.dtype)
    return _reduce(d_s * gate, weight, avg_factor, "bounded_regression")


def anchor_distances(boxes: torch.Tensor, reg_max: int, anchor_points: torch.Tensor) -> torch.Tensor:
    r"""Decoded ltrb distances (grid units of each anchor's level) of a Detect head's box output at every anchor.

    DFL expectation ``softmax over bins @ arange(reg_max)`` when ``reg_max > 1``, raw values when ``reg_max == 1``
    (`yolokd.targets.decode_boxes`), then back from xyxy to ltrb with Ultralytics' ``bbox2dist``. Output is float32
    (``decode_boxes`` computes in float32; autocast is off here).

    .. math::

        d_{n,a,k} = \sum_{b=0}^{R-1} b \, \operatorname{softmax}_b(x_{n,k,b,a}) \quad (R > 1), \qquad
        d_{n,a,k} = x_{n,k,a} \quad (R = 1)

    for the sides :math:`k \in` (left, top, right, bottom), ``R = reg_max``.

    Shape:
        - boxes: :math:`(N, 4R, A)`
        - anchor_points: :math:`(A, 2)`
        - output: :math:`(N, A, 4)`, float32

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
    r"""`anchor_distances` at the positives only: (P, 4), positives in (image, anchor) row-major order.

    Selecting the positives by a boolean mask waits for the device (the count decides the shape); the terms use
    `anchor_distances` with a 0/1 weight instead.

    .. math::

        r_p = d_{n,a,:} \quad \text{for the positives } (n, a) \text{ with } \text{fg}_{n,a}, \text{ in row-major order}

    Shape:
        - boxes: :math:`(N, 4R, A)`
        - anchor_points: :math:`(A, 2)`
        - fg_mask: :math:`(N, A)`, bool
        - output: :math:`(P, 4)`, ``P`` positives

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


def sort_corners(boxes: torch.Tensor) -> torch.Tensor:
    r"""Sort the corners of xyxy boxes so that ``x1 <= x2`` and ``y1 <= y2``.

    .. math::

        (x_1, y_1, x_2, y_2) \mapsto (\min(x_1, x_2), \min(y_1, y_2), \max(x_1, x_2), \max(y_1, y_2))

    Raw YOLO26 distances may be negative; when ``l + r < 0`` the decoded box is inverted, and the GIoU of an inverted
    box can exceed 1 without bound (its negative width times negative height counts as area in the union), which would
    let the loss ``1 - GIoU`` be driven towards minus infinity. Sorting keeps the GIoU in ``[-1, 1]`` and the gradient.
    The price is a mirror symmetry per axis, ``(l, r) -> (-r, -l)``: far from the start in CrossKD, since the cross
    distances come from the teacher's own final conv on features re-standardised to the teacher's statistics.

    Shape:
        - boxes: :math:`(*, 4)`
        - output: :math:`(*, 4)`

    Args:
        boxes (torch.Tensor): Boxes, xyxy, possibly inverted.

    Returns:
        (torch.Tensor): The same boxes with sorted corners.

    Examples:
        >>> sort_corners(torch.tensor([[3.0, 0.0, 1.0, 2.0]])).tolist()  # x inverted, y in order
        [[1.0, 0.0, 3.0, 2.0]]
    """
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack((torch.minimum(x1, x2), torch.minimum(y1, y2), torch.maximum(x1, x2), torch.maximum(y1, y2)), -1)


def teacher_better(s_boxes: torch.Tensor, t_boxes: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    r"""TAR's regression gate: True where IoU(teacher box, GT) > IoU(student box, GT) (strict).

    .. math::

        g_i = \left[\operatorname{IoU}(b^T_i, y_i) > \operatorname{IoU}(b^S_i, y_i)\right]

    Uses Ultralytics' ``bbox_iou`` (xyxy); no gradient flows through the gate.

    Shape:
        - s_boxes, t_boxes, gt: :math:`(n, 4)`
        - output: :math:`(n,)`, bool

    Args:
        s_boxes (torch.Tensor): (n, 4) student boxes, xyxy.
        t_boxes (torch.Tensor): (n, 4) teacher boxes, xyxy, same units.
        gt (torch.Tensor): (n, 4) assigned ground-truth boxes, xyxy, same units.

    Returns:
        (torch.Tensor): (n,) bool gate.

    Examples:
        >>> gt = torch.tensor([[0.0, 0.0, 4.0, 4.0], [0.0, 0.0, 4.0, 4.0]])
        >>> s = torch.tensor([[0.0, 0.0, 2.0, 4.0], [0.0, 0.0, 4.0, 4.0]])
        >>> teacher_better(s, gt.flip(0), gt).tolist()  # teacher == GT beats a half box; a tie is not strict
        [True, False]
    """
    with torch.no_grad():
        s_boxes, t_boxes, gt = _up(s_boxes), _up(t_boxes), _up(gt)
        iou_t = bbox_iou(t_boxes, gt, xywh=False).squeeze(-1)
        iou_s = bbox_iou(s_boxes, gt, xywh=False).squeeze(-1)
        return iou_t > iou_s


def giou_loss(
    s_boxes: torch.Tensor, t_boxes: torch.Tensor, gate: torch.Tensor, avg_factor: float | torch.Tensor | None = None
) -> torch.Tensor:
    r"""Gated ``1 - GIoU(student box, teacher box)`` (Ultralytics' ``bbox_iou``, xyxy) over the candidate rows.

    .. math::

        L = \frac{1}{Z} \sum_i g_i \left(1 - \operatorname{GIoU}(b^S_i, b^T_i)\right), \qquad
        Z = \text{avg\_factor} \text{ if given, else } \max(n, 1)

    The divisor is the number of candidates (the ``n`` rows, or ``avg_factor`` when the rows hold more than the
    candidates, e.g. every anchor with the positives as candidates), not the number of open gates, so the loss per
    open row (and its gradient) does not swing with the fraction of open gates. A zero connected to the graph of
    ``s_boxes`` when no row is gated. The teacher boxes are targets; they are not detached here (callers detach them).

    Shape:
        - s_boxes, t_boxes: :math:`(n, 4)`
        - gate: :math:`(n,)`, bool
        - output: :math:`()`

    Args:
        s_boxes (torch.Tensor): (n, 4) student boxes, xyxy.
        t_boxes (torch.Tensor): (n, 4) teacher boxes, xyxy.
        gate (torch.Tensor): (n,) bool, rows that count.
        avg_factor (float | torch.Tensor | None): Number of candidates ``Z`` (callers clamp it to ``>= 1``).

    Returns:
        (torch.Tensor): Scalar loss, float32 (float64 for float64 inputs).

    Examples:
        >>> s = torch.tensor([[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 1.0, 1.0]])
        >>> t = torch.tensor([[0.0, 0.0, 2.0, 4.0], [5.0, 5.0, 6.0, 6.0]])
        >>> round(float(giou_loss(s, t, torch.tensor([True, False]))), 4)  # IoU 1/2, hull = union: (1 - 0.5) / 2
        0.25
        >>> round(float(giou_loss(s, t, torch.tensor([True, False]), avg_factor=1.0)), 4)
        0.5
    """
    s_boxes, t_boxes = _up(s_boxes), _up(t_boxes)
    dist = 1.0 - bbox_iou(s_boxes, t_boxes, xywh=False, GIoU=True).squeeze(-1)
    total = torch.where(gate, dist, torch.zeros_like(dist)).sum()
    if avg_factor is None:
        return total / max(dist.shape[0], 1)
    if isinstance(avg_factor, torch.Tensor):
        avg_factor = avg_factor.to(dtype=total.dtype, device=total.device).reshape(())
    return total / avg_factor


def cosine_fg(s: torch.Tensor, t: torch.Tensor, mask: torch.Tensor, gate: torch.Tensor | None = None) -> torch.Tensor:
    r"""Foreground cosine feature-distillation loss, optionally gated, normalised by all the foreground positions.

    .. math::

        L = \frac{1}{|M|} \sum_{(n,h,w) \in M} g_{n,h,w} \left(1 - \cos(s_{n,:,h,w}, t_{n,:,h,w})\right)

    with the cosine taken along ``C`` as in :func:`torch.nn.functional.cosine_similarity` (same ``eps``), :math:`M`
    the positions where ``mask`` is true and :math:`g` the gate (1 everywhere when ``gate`` is None). The divisor is
    the number of candidates :math:`|M|`, not of open gates, so the loss per open position (and its gradient) does
    not swing with the fraction of open gates. Returns a zero connected to the graph when the mask is empty.

    Shape:
        - s: :math:`(N, C, H, W)`
        - t: :math:`(N, C, H, W)`, same as ``s``
        - mask: :math:`(N, H, W)`, bool
        - gate: :math:`(N, H, W)`, bool
        - output: :math:`()`

    Args:
        s (torch.Tensor): Student feature map.
        t (torch.Tensor): Teacher feature map, the target; not detached here.
        mask (torch.Tensor): Foreground mask (the candidates).
        gate (torch.Tensor | None): Positions of the mask that count (e.g. where the teacher is better).

    Returns:
        (torch.Tensor): Scalar loss, float32 (float64 for float64 inputs).

    Raises:
        ValueError: If ``s`` is not 4-D, ``s`` and ``t`` have different shapes, or ``mask``/``gate`` is not
            ``(N, H, W)``.
        TypeError: If ``mask`` or ``gate`` is not a bool tensor.

    Examples:
        >>> s = torch.tensor([[1.0, 1.0], [0.0, 0.0]]).view(1, 2, 1, 2)  # two positions, both [1, 0]
        >>> t = torch.tensor([[0.0, -1.0], [1.0, 0.0]]).view(1, 2, 1, 2)  # [0, 1] (cos 0) and [-1, 0] (cos -1)
        >>> float(cosine_fg(s, t, torch.ones(1, 1, 2, dtype=torch.bool)))  # (1 + 2) / 2
        1.5
        >>> float(cosine_fg(s, t, torch.ones(1, 1, 2, dtype=torch.bool), gate=torch.tensor([[[False, True]]])))
        1.0

    """
    _check_pair("cosine_fg", s, t, 4, "(N, C, H, W)")
    expected = (s.shape[0], *s.shape[2:])
    for name, m in (("mask", mask), ("gate", gate)):
        if m is None:
            continue
        if m.shape != expected:
            raise ValueError(f"cosine_fg: {name} must have shape {expected} (N, H, W), got {tuple(m.shape)}")
        if m.dtype != torch.bool:
            raise TypeError(f"cosine_fg: {name} must be a bool tensor, got {m.dtype}")
    dist = 1.0 - _channel_cosine(_up(s), _up(t))
    counted = mask if gate is None else mask & gate
    total = torch.where(counted, dist, torch.zeros_like(dist)).sum()
    return total / mask.sum().clamp(min=1).to(total.dtype)


def _channel_cosine(s: torch.Tensor, t: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """``F.cosine_similarity(s, t, dim=1)`` of two (N, C, H, W) maps: ``s . t / (max(|s|, eps) max(|t|, eps))``.

    The same numbers (each norm floored at ``eps`` as PyTorch does), from sums over ``C``, which run about 3x faster
    forward and backward on CPU than the strided norms of ``cosine_similarity``. The floor is applied to the squared
    norm before the square root (no infinite derivative of the root at a zero vector), so the gradient is PyTorch's
    everywhere, ``t / (eps |t|)`` at a zero student vector included.
    """
    ns = (s * s).sum(dim=1).clamp(min=eps * eps).sqrt()
    nt = (t * t).sum(dim=1).clamp(min=eps * eps).sqrt()
    return (s * t).sum(dim=1) / (ns * nt)


def gaussian_imitation(s: torch.Tensor, t: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    r"""Gaussian-mask weighted feature imitation (TAR's feature term on one level).

    .. math::

        L = \frac{\sum_{n,c,h,w} M_{n,h,w} \, (s_{n,c,h,w} - t_{n,c,h,w})^2}{C \sum_{n,h,w} M_{n,h,w}}

    i.e. the mask-weighted mean over positions of the per-channel mean squared error. The mask is normalised first
    (``M / sum M``), so a mask whose sum is tiny but positive still gives the weighted mean; when ``sum M == 0``
    (no boxes) the loss is a zero still connected to the graph of ``s``.

    Shape:
        - s: :math:`(N, C, H, W)`, the adapted student feature
        - t: :math:`(N, C, H, W)`, same as ``s``
        - mask: :math:`(N, H, W)`, non-negative weights (broadcast over ``C``)
        - output: :math:`()`

    Args:
        s (torch.Tensor): Adapted student feature map.
        t (torch.Tensor): Teacher feature map, the target; not detached here.
        mask (torch.Tensor): Gaussian mask ``M``.

    Returns:
        (torch.Tensor): Scalar loss, float32 (float64 for float64 inputs).

    Raises:
        ValueError: If ``s`` is not 4-D, ``s`` and ``t`` differ in shape, or ``mask`` is not ``(N, H, W)``.

    Examples:
        >>> s = torch.tensor([[1.0, 3.0], [0.0, 0.0]]).view(1, 2, 1, 2)  # C = 2, two positions
        >>> t = torch.zeros(1, 2, 1, 2)
        >>> m = torch.tensor([[[1.0, 0.5]]])
        >>> round(float(gaussian_imitation(s, t, m)), 6)  # (1 * 1 + 0.5 * 9) / (2 * 1.5)
        1.833333
        >>> float(gaussian_imitation(s, t, torch.zeros(1, 1, 2)))
        0.0
    """
    if s.dim() != 4 or s.shape != t.shape:
        raise ValueError(f"gaussian_imitation: s and t must share an (N, C, H, W) shape, got {s.shape}, {t.shape}")
    if mask.shape != (s.shape[0], *s.shape[2:]):
        raise ValueError(f"gaussian_imitation: mask must be (N, H, W) = {(s.shape[0], *s.shape[2:])}, got {mask.shape}")
    s, t, mask = _up(s), _up(t), _up(mask).to(_up(s).dtype)
    w = mask / mask.sum().clamp(min=torch.finfo(mask.dtype).tiny)  # all zero when sum M == 0
    return (w.unsqueeze(1) * (s - t).pow(2)).sum() / max(s.shape[1], 1)


def binary_kl(
    s: torch.Tensor,
    t: torch.Tensor,
    weight: torch.Tensor | None = None,
    avg_factor: float | torch.Tensor | None = None,
) -> torch.Tensor:
    r"""Per-class binary KL divergence between teacher and student sigmoid class probabilities.

    Each class is a Bernoulli variable, :math:`q = \sigma(t)` for the teacher and :math:`p = \sigma(s)` for the
    student; the divergences are summed over the classes of a row:

    .. math::

        l_i = \sum_c q_{i,c} \left(\log q_{i,c} - \log p_{i,c}\right)
            + (1 - q_{i,c}) \left(\log(1 - q_{i,c}) - \log(1 - p_{i,c})\right)

    All logarithms are log-sigmoids of the logits (:math:`\log \sigma(x)` and :math:`\log(1 - \sigma(x)) =
    \log \sigma(-x)`), so the loss and its gradient stay finite for logits of :math:`\pm 10^4`. Reduction:
    :math:`\sum_i l_i w_i / \text{avg\_factor}` if ``avg_factor`` is given, else :math:`\operatorname{mean}_i(l_i w_i)`.

    Shape:
        - s: :math:`(n, C)`
        - t: :math:`(n, C)`, same as ``s``
        - weight: :math:`(n,)`
        - output: :math:`()`

    Args:
        s (torch.Tensor): Student classification logits.
        t (torch.Tensor): Teacher classification logits, the target; not detached here.
        weight (torch.Tensor | None): Optional per-row weight.
        avg_factor (float | torch.Tensor | None): Optional normaliser; when given the weighted sum is divided by it
            (callers clamp it to ``>= 1``).

    Returns:
        (torch.Tensor): Scalar loss, float32 (float64 for float64 inputs); zero connected to the graph if ``n == 0``.

    Raises:
        ValueError: If ``s`` is not 2-D, ``s`` and ``t`` have different shapes, or ``weight`` is not ``(n,)``.

    Examples:
        >>> import math
        >>> x = torch.randn(5, 3)
        >>> float(binary_kl(x, x))
        0.0
        >>> s, t = torch.zeros(1, 1), torch.full((1, 1), math.log(3.0))  # p = 1/2, q = 3/4
        >>> round(float(binary_kl(s, t)), 6)  # 0.75 ln 1.5 + 0.25 ln 0.5
        0.130812

    """
    _check_pair("binary_kl", s, t, 2, "(n, C)")
    if s.shape[0] == 0:
        return _zero(s)
    s, t = _up(s), _up(t)
    log_q, log_1q = F.logsigmoid(t), F.logsigmoid(-t)
    log_p, log_1p = F.logsigmoid(s), F.logsigmoid(-s)
    q = t.sigmoid()
    loss = (q * (log_q - log_p) + (1.0 - q) * (log_1q - log_1p)).sum(dim=-1)
    return _reduce(loss, weight, avg_factor, "binary_kl")


@torch.no_grad()
def log_quality(scores: torch.Tensor, boxes: torch.Tensor, reg_max: int, assigned: Assigned) -> torch.Tensor:
    r"""Log of the TAL alignment quality of one model's predictions against the assigned ground truth, per anchor.

    .. math::

        \log q = \alpha \log \sigma(x_{\text{label}}) + \beta \log \operatorname{IoU}(\hat b, b_{\text{gt}})

    with :math:`x_{\text{label}}` the model's logit for the assigned class, :math:`\hat b` its decoded box in pixels
    and :math:`\alpha, \beta` the assigner's exponents. The log form orders anchors exactly as
    :math:`q = \text{score}^\alpha \text{IoU}^\beta` does without float32 underflow (IoU 0 gives ``-inf``).
    Meaningful only where ``assigned.fg_mask`` is true. No gradient.

    Shape:
        - scores: :math:`(N, nc, A)` logits
        - boxes: :math:`(N, 4R, A)`, ``R = reg_max``
        - output: :math:`(N, A)`, float32

    Args:
        scores (torch.Tensor): The model's class logits.
        boxes (torch.Tensor): The model's box output (DFL logits, or distances when ``reg_max == 1``).
        reg_max (int): The model's own DFL bins per side.
        assigned (Assigned): The TAL assignment (labels, target boxes, anchors, strides, alpha, beta).

    Returns:
        (torch.Tensor): Log quality per anchor.

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


def balance_weights(
    det: torch.Tensor, raw: torch.Tensor, ratio: float | torch.Tensor, eps: float = 1e-12
) -> torch.Tensor:
    r"""Term weights that make every weighted term ``ratio`` times the detection loss (``balance=``).

    .. math::

        w_i = r \, \frac{\bar L_{det}}{\max(\bar L_i, \epsilon)}

    with :math:`\bar L_{det}` the mean detection loss and :math:`\bar L_i` the mean raw (unweighted) value of term
    ``i`` over the measured steps, so that :math:`w_i \bar L_i = r \bar L_{det}` for every term with
    :math:`\bar L_i \ge \epsilon`. A term that measured 0 gets weight :math:`r \bar L_{det} / \epsilon` only in theory:
    values below ``eps`` give weight 0 instead (a term that never fires has nothing to balance). Detached.

    Shape:
        - det: :math:`()`
        - raw: :math:`(n,)`
        - ratio: a number or :math:`(n,)`
        - output: :math:`(n,)` float32

    Args:
        det (torch.Tensor): Mean detection loss.
        raw (torch.Tensor): Mean raw value of each term.
        ratio (float | torch.Tensor): Target ratio ``r`` of each weighted term to the detection loss (one per term).
        eps (float): Raw values below it give weight 0.

    Returns:
        (torch.Tensor): The weights.

    Examples:
        >>> balance_weights(torch.tensor(6.0), torch.tensor([2.0, 0.5, 0.0]), 0.5).tolist()  # 0.5*6/2, 0.5*6/0.5, 0
        [1.5, 6.0, 0.0]
    """
    det, raw = det.detach().float(), raw.detach().float()
    return torch.where(raw >= eps, ratio * det / raw.clamp_min(eps), torch.zeros_like(raw))


@torch.no_grad()
def object_gate(
    log_q_t: torch.Tensor, log_q_s: torch.Tensor, fg_mask: torch.Tensor, gt_idx: torch.Tensor, num_objects: int
) -> torch.Tensor:
    r"""Per ground-truth object: is the teacher's mean quality over the object's positives above the student's?

    .. math::

        P_{n,j} = \{a : \text{fg}_{n,a},\ \text{gt\_idx}_{n,a} = j\}, \qquad
        g_{n,j} = \left[\frac{1}{|P_{n,j}|} \sum_{a \in P_{n,j}} q^T_{n,a}
            > \frac{1}{|P_{n,j}|} \sum_{a \in P_{n,j}} q^S_{n,a}\right]

    from log qualities :math:`\log q` (strict; false for an object without positives). Both means run over the same
    positives, so the sums are compared, each as :math:`\sum_a \exp(\log q_a - c_{n,j})` with :math:`c_{n,j}` the
    object's largest log quality of either model: no float32 underflow however small the qualities, and
    :math:`\log q = -\infty` (quality 0) is allowed. No gradient; no host synchronisation.

    Shape:
        - log_q_t, log_q_s: :math:`(N, A)`
        - fg_mask: :math:`(N, A)`, bool
        - gt_idx: :math:`(N, A)`, integer index of each positive's object in ``[0, num_objects)``
        - output: :math:`(N, \text{num\_objects})`, bool

    Args:
        log_q_t (torch.Tensor): Teacher log quality per anchor (meaningful at the positives).
        log_q_s (torch.Tensor): Student log quality per anchor.
        fg_mask (torch.Tensor): The positives.
        gt_idx (torch.Tensor): Object of each positive (TAL's ``target_gt_idx``).
        num_objects (int): Objects per image (the padded ground-truth count ``M``).

    Returns:
        (torch.Tensor): Gate per object.

    Raises:
        ValueError: If the shapes differ or ``num_objects < 1``.

    Examples:
        >>> import math
        >>> lq = lambda *q: torch.tensor([[math.log(v) for v in q]])
        >>> fg, idx = torch.tensor([[True, True, True, False]]), torch.tensor([[0, 0, 1, 0]])
        >>> # object 0: teacher [0.9, 0.1] (mean 0.5) vs student [0.4, 0.4]; object 1: 0.2 vs 0.3; object 2: no positive
        >>> object_gate(lq(0.9, 0.1, 0.2, 1.0), lq(0.4, 0.4, 0.3, 0.1), fg, idx, 3).tolist()
        [[True, False, False]]
    """
    if not (log_q_t.shape == log_q_s.shape == fg_mask.shape == gt_idx.shape) or log_q_t.dim() != 2:
        raise ValueError(
            f"object_gate: log_q_t, log_q_s, fg_mask, gt_idx must share one (N, A) shape, got {tuple(log_q_t.shape)}, "
            f"{tuple(log_q_s.shape)}, {tuple(fg_mask.shape)}, {tuple(gt_idx.shape)}"
        )
    if num_objects < 1:
        raise ValueError(f"object_gate: num_objects must be >= 1, got {num_objects}")
    fg = fg_mask.bool()
    lq_t, lq_s = _up(log_q_t), _up(log_q_s)
    idx = gt_idx.long().clamp(0, num_objects - 1)
    neg_inf = torch.full_like(lq_t, float("-inf"))
    top = torch.where(fg, torch.maximum(lq_t, lq_s), neg_inf)
    shift = torch.full((fg.shape[0], num_objects), float("-inf"), dtype=lq_t.dtype, device=lq_t.device)
    shift = shift.scatter_reduce(1, idx, top, reduce="amax")  # the object's largest log quality
    shift = torch.where(torch.isfinite(shift), shift, torch.zeros_like(shift)).gather(1, idx)  # (N, A)

    def total(lq: torch.Tensor) -> torch.Tensor:
        terms = torch.where(fg, (torch.where(fg, lq, neg_inf) - shift).exp(), torch.zeros_like(lq))
        return torch.zeros(fg.shape[0], num_objects, dtype=lq.dtype, device=lq.device).scatter_add(1, idx, terms)

    return total(lq_t) > total(lq_s)


# ---------------------------------------------------------------------------------------------- PKD, MGD, BCKD
# (appended as one block, with its own ``__all__`` extension, so that it merges cleanly with other edits above)
__all__ += ["bckd_loc", "mgd", "mgd_mask", "pkd"]


def _channel_standardise(x: torch.Tensor, eps: float) -> torch.Tensor:
    """``(x - mean_c) / (std_c + eps)`` per channel, statistics over ``(N, H, W)`` pooled, unbiased std."""
    std, _, d = _channel_stats(x)
    return d / (std + eps)


def pkd(s: torch.Tensor, t: torch.Tensor, resize_student: bool = True, eps: float = 1e-6) -> torch.Tensor:
    r"""Pearson-correlation feature distillation (PKD, Cao et al., NeurIPS 2022).

    Both maps are standardised per channel, with the mean and the unbiased standard deviation over the pooled
    ``(N, H, W)`` values, then compared with half the mean squared error:

    .. math::

        \hat{x}_{n,c,h,w} = \frac{x_{n,c,h,w} - \mu_c(x)}{\sigma_c(x) + \epsilon}, \qquad
        L = \frac{1}{2 N C H W} \sum_{n,c,h,w} \left(\hat{s}_{n,c,h,w} - \hat{t}_{n,c,h,w}\right)^2

    With :math:`M = NHW` and :math:`\epsilon \to 0` this is :math:`\frac{M-1}{M} \operatorname{mean}_c (1 - r_c)`,
    :math:`r_c` the Pearson correlation of channel ``c`` of ``s`` and ``t``: the loss is blind to any per-channel
    positive affine map (scale and offset) of either input. When the spatial sizes differ, ``s`` is resized to ``t``'s
    (``resize_student=True``) or ``t`` to ``s``'s, bilinear with ``align_corners=False`` (MMRazor's ``PKDLoss``).

    Shape:
        - s: :math:`(N, C, H_s, W_s)`
        - t: :math:`(N, C, H_t, W_t)`
        - output: :math:`()`

    Args:
        s (torch.Tensor): Student feature map (after an adapter when the widths differ).
        t (torch.Tensor): Teacher feature map, the target; not detached here.
        resize_student (bool): Resize the student to the teacher's spatial size (else the teacher to the student's).
        eps (float): Added to each channel's standard deviation.

    Returns:
        (torch.Tensor): Scalar loss, float32 (float64 for float64 inputs).

    Raises:
        ValueError: If ``s`` or ``t`` is not 4-D, their ``N`` or ``C`` differ, or ``N*H*W < 2`` (the unbiased standard
            deviation needs at least two values per channel).

    Examples:
        >>> x = torch.randn(2, 3, 4, 4)
        >>> float(pkd(x, x))
        0.0
        >>> round(float(pkd(x, 3.0 * x + 1.0)), 5)  # a per-channel positive affine map changes nothing
        0.0
        >>> s = torch.tensor([1.0, 2.0, 3.0]).view(1, 1, 1, 3)  # standardised: [-1, 0, 1]
        >>> t = torch.tensor([3.0, 2.0, 1.0]).view(1, 1, 1, 3)  # standardised: [1, 0, -1]
        >>> round(float(pkd(s, t)), 5)  # 0.5 * (4 + 0 + 4) / 3; r = -1: (M - 1) / M * (1 - r) = 2/3 * 2
        1.33333

    """
    for name, x in (("student", s), ("teacher", t)):
        if x.dim() != 4:
            raise ValueError(f"pkd: {name} must have shape (N, C, H, W) (rank 4), got shape {tuple(x.shape)}")
    if s.shape[:2] != t.shape[:2]:
        raise ValueError(f"pkd: student and teacher (N, C) differ: {tuple(s.shape[:2])} vs {tuple(t.shape[:2])}")
    s, t = _up(s), _up(t)
    if s.shape[-2:] != t.shape[-2:]:
        if resize_student:
            s = F.interpolate(s, size=t.shape[-2:], mode="bilinear", align_corners=False)
        else:
            t = F.interpolate(t, size=s.shape[-2:], mode="bilinear", align_corners=False)
    if s.numel() // max(s.shape[1], 1) < 2:
        raise ValueError(f"pkd: need at least 2 values per channel over (N, H, W), got shape {tuple(s.shape)}")
    return 0.5 * (_channel_standardise(s, eps) - _channel_standardise(t, eps)).pow(2).mean()


def mgd(gen: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    r"""Masked generative distillation loss (MGD, Yang et al., ECCV 2022): squared error summed, over the batch size.

    .. math::

        L = \frac{1}{N} \sum_{n,c,h,w} \left(g_{n,c,h,w} - t_{n,c,h,w}\right)^2

    ``g`` is the generator's output from the masked student feature (the official ``MSELoss(reduction="sum") / N``,
    no factor 1/2). The sum runs over ``C*H*W``, so the loss weight (``alpha``) depends on the widths and the image
    size.

    Shape:
        - gen: :math:`(N, C, H, W)`
        - t: :math:`(N, C, H, W)`, same as ``gen``
        - output: :math:`()`

    Args:
        gen (torch.Tensor): Generated feature map.
        t (torch.Tensor): Teacher feature map, the target; not detached here.

    Returns:
        (torch.Tensor): Scalar loss, float32 (float64 for float64 inputs); zero connected to the graph if ``N == 0``.

    Raises:
        ValueError: If ``gen`` is not 4-D or ``gen`` and ``t`` have different shapes.

    Examples:
        >>> g = torch.zeros(2, 1, 1, 2)
        >>> t = torch.tensor([1.0, 2.0, 0.0, 3.0]).view(2, 1, 1, 2)
        >>> float(mgd(g, t))  # (1 + 4 + 0 + 9) / 2
        7.0

    """
    _check_pair("mgd", gen, t, 4, "(N, C, H, W)")
    if gen.shape[0] == 0:
        return _zero(gen)
    return (_up(gen) - _up(t)).pow(2).sum() / gen.shape[0]


def mgd_mask(u: torch.Tensor, ratio: float = 0.65) -> torch.Tensor:
    r"""MGD's random spatial keep-mask from uniform noise: ``ratio`` is the expected masked fraction.

    .. math::

        m_{n,1,h,w} = \begin{cases} 0 & u_{n,1,h,w} > 1 - \lambda \\ 1 & \text{otherwise} \end{cases}

    (strict, as the official ``torch.where(mat > 1 - lambda_mgd, 0, 1)``). For ``u`` uniform on ``[0, 1)`` a position
    is masked with probability :math:`\lambda`. The caller draws ``u`` (e.g. ``torch.rand`` on the feature's device),
    so the randomness stays with the caller's generator.

    Shape:
        - u: :math:`(N, 1, H, W)`
        - output: :math:`(N, 1, H, W)`, ``u``'s dtype, values 0 or 1

    Args:
        u (torch.Tensor): Uniform noise on ``[0, 1)``.
        ratio (float): Masked fraction :math:`\lambda`, in ``[0, 1]``.

    Returns:
        (torch.Tensor): The keep-mask (1 = kept), to multiply the student feature with.

    Raises:
        ValueError: If ``u`` is not ``(N, 1, H, W)`` or ``ratio`` is outside ``[0, 1]``.

    Examples:
        >>> u = torch.tensor([0.0, 0.3, 0.35, 0.36, 0.9]).view(1, 1, 1, 5)
        >>> mgd_mask(u, 0.65).flatten().tolist()  # masked where u > 0.35
        [1.0, 1.0, 1.0, 0.0, 0.0]

    """
    if u.dim() != 4 or u.shape[1] != 1:
        raise ValueError(f"mgd_mask: u must have shape (N, 1, H, W), got shape {tuple(u.shape)}")
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"mgd_mask: ratio must be in [0, 1], got {ratio}")
    return (u <= 1.0 - ratio).to(u.dtype)


def _giou(a: torch.Tensor, b: torch.Tensor, eps: float) -> torch.Tensor:
    """Row-wise GIoU of xyxy boxes ``(n, 4)``, union and enclosing area clamped at ``eps`` (mmdet's form)."""
    wh = (torch.minimum(a[:, 2:], b[:, 2:]) - torch.maximum(a[:, :2], b[:, :2])).clamp(min=0)
    inter = wh[:, 0] * wh[:, 1]
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = (area_a + area_b - inter).clamp(min=eps)
    ewh = (torch.maximum(a[:, 2:], b[:, 2:]) - torch.minimum(a[:, :2], b[:, :2])).clamp(min=0)
    enclose = (ewh[:, 0] * ewh[:, 1]).clamp(min=eps)
    return inter / union - (enclose - union) / enclose


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
        L = \frac{1}{Z} \sum_i w_i \left(1 - \operatorname{GIoU}(b^S_i, b^T_i)\right)

    with the scores detached (the weight carries no gradient), :math:`v` the optional ``weight`` (1 when None),
    :math:`Z` = ``avg_factor`` if given, else ``n`` (mean over rows). The GIoU clamps the union and the enclosing area
    at ``eps``. When no :math:`w_i` is positive (e.g. equal score maps) the loss is exactly 0 and still connected to
    the graph of ``sb``.

    Shape:
        - sb: :math:`(n, 4)` student boxes, xyxy
        - tb: :math:`(n, 4)` teacher boxes, xyxy
        - s: :math:`(n, C)` student class logits
        - t: :math:`(n, C)` teacher class logits
        - weight: :math:`(n,)`
        - output: :math:`()`

    Args:
        sb (torch.Tensor): Student boxes (the loss's gradient goes here).
        tb (torch.Tensor): Teacher boxes, the target; not detached here.
        s (torch.Tensor): Student class logits (detached for the weight).
        t (torch.Tensor): Teacher class logits (detached for the weight).
        weight (torch.Tensor | None): Optional extra per-row weight.
        avg_factor (float | torch.Tensor | None): Optional normaliser (callers clamp it to ``>= 1``).
        eps (float): Floor of the union and the enclosing area.

    Returns:
        (torch.Tensor): Scalar loss, float32 (float64 for float64 inputs); zero connected to the graph if ``n == 0``.

    Raises:
        ValueError: If the boxes are not ``(n, 4)``, the logits not ``(n, C)`` with the same ``n``, or ``weight`` is
            not ``(n,)``.

    Examples:
        >>> sb = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
        >>> tb = torch.tensor([[1.0, 0.0, 3.0, 2.0]])  # IoU 2/6, enclosing box 6 = union: GIoU 1/3
        >>> s, t = torch.zeros(1, 2), torch.tensor([[0.0, 1e4]])  # max |sigmoid(t) - sigmoid(s)| = 0.5
        >>> round(float(bckd_loc(sb, tb, s, t)), 6)  # 0.5 * (1 - 1/3)
        0.333333
        >>> float(bckd_loc(sb, tb, t, t))  # equal scores: no weight
        0.0

    """
    _check_pair("bckd_loc", sb, tb, 2, "(n, 4)")
    if sb.shape[-1] != 4:
        raise ValueError(f"bckd_loc: boxes must have shape (n, 4), got {tuple(sb.shape)}")
    _check_pair("bckd_loc", s, t, 2, "(n, C)")
    if s.shape[0] != sb.shape[0]:
        raise ValueError(f"bckd_loc: {sb.shape[0]} boxes but {s.shape[0]} rows of logits")
    if sb.shape[0] == 0:
        return _zero(sb)
    sb, tb = _up(sb), _up(tb)
    w = (_up(t.detach()).sigmoid() - _up(s.detach()).sigmoid()).abs().amax(dim=-1).to(sb.dtype)
    loss = w * (1.0 - _giou(sb, tb, eps))
    return _reduce(loss, weight, avg_factor, "bckd_loc")


def mask_kd(s: torch.Tensor, t: torch.Tensor, region: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    r"""Mask distillation: the binary KL between the teacher's and the student's instance-mask probabilities.

    Each instance ``k`` is a mask assembled from coefficients and prototypes (logits ``s_k``, ``t_k`` over the prototype
    pixels); inside its region ``R_k`` (the assigned box, as Ultralytics' mask loss crops) the pixel-wise binary KL of
    the teacher's probability :math:`p = \sigma(t)` against the student's :math:`q = \sigma(s)` is averaged, and the
    instances are averaged with their weights:

    .. math::

        \mathcal{L} = \frac{1}{\max(\sum_k w_k, 1)} \sum_k w_k
            \frac{\sum_{x \in R_k} p \log\frac{p}{q} + (1 - p) \log\frac{1 - p}{1 - q}}{\max(|R_k|, 1)}

    Zero when the two masks are equal; the teacher's entropy, which a soft-target BCE would add, is left out.

    Shape:
        - s, t: :math:`(K, H, W)` mask logits (student, teacher)
        - region: :math:`(K, H, W)`, 1 inside each instance's region, else 0
        - weight: :math:`(K,)`, e.g. 1 for a TAL positive, 0 for padding

    Examples:
        >>> s, t = torch.zeros(1, 1, 2), torch.tensor([[[0.0, 100.0]]])  # q = 1/2 everywhere; p = 1/2 and ~1
        >>> round(float(mask_kd(s, t, torch.ones(1, 1, 2), torch.ones(1))), 4)  # (0 + ln 2) / 2 pixels
        0.3466
        >>> float(mask_kd(t, t, torch.ones(1, 1, 2), torch.ones(1)))
        0.0
    """
    _check_pair("mask_kd", s, t, 3, "(K, H, W)")
    if region.shape != s.shape or weight.shape != s.shape[:1]:
        raise ValueError(
            f"mask_kd: region must be {tuple(s.shape)} and weight ({s.shape[0]},), got {tuple(region.shape)} and "
            f"{tuple(weight.shape)}"
        )
    if s.shape[0] == 0:
        return _zero(s)
    s, t, region = _up(s), _up(t), _up(region)
    p = t.sigmoid()
    kl = p * (F.logsigmoid(t) - F.logsigmoid(s)) + (1.0 - p) * (F.logsigmoid(-t) - F.logsigmoid(-s))
    per = (kl * region).flatten(1).sum(1) / region.flatten(1).sum(1).clamp(min=1.0)
    w = _up(weight)
    return (w * per).sum() / w.sum().clamp(min=1.0)


def keypoint_kd(
    s_xy: torch.Tensor,
    t_xy: torch.Tensor,
    weight: torch.Tensor,
    s_vis: torch.Tensor | None = None,
    t_vis: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""Keypoint distillation: the student's keypoints pulled to the teacher's, weighted by the teacher's visibility.

    For each prediction ``i`` (e.g. a TAL positive) with ``K`` keypoints at :math:`x_{ik}` (student) and
    :math:`y_{ik}` (teacher), in grid units of the prediction's level, and the teacher's visibility probability
    :math:`v_{ik} = \sigma(t^{vis}_{ik})` (1 without visibility logits):

    .. math::

        \ell_i = \frac{\sum_k v_{ik} \lVert x_{ik} - y_{ik} \rVert_1}{\max(\sum_k v_{ik}, \epsilon)}
            + \frac{1}{K} \sum_k \operatorname{KL}\big(\sigma(t^{vis}_{ik}) \,\Vert\, \sigma(s^{vis}_{ik})\big),
        \qquad \mathcal{L} = \frac{\sum_i w_i \ell_i}{\max(\sum_i w_i, 1)}

    (the second, binary-KL term only with visibility logits). Zero when the two agree.

    Shape:
        - s_xy, t_xy: :math:`(n, K, 2)`
        - weight: :math:`(n,)`
        - s_vis, t_vis: :math:`(n, K)` visibility logits, or None

    Examples:
        >>> s, t = torch.zeros(1, 2, 2), torch.tensor([[[1.0, 0.0], [0.0, 3.0]]])
        >>> float(keypoint_kd(s, t, torch.ones(1)))  # (1 + 3) / 2 keypoints
        2.0
        >>> vis = torch.tensor([[100.0, -100.0]])  # only the first keypoint is visible to the teacher
        >>> round(float(keypoint_kd(s, t, torch.ones(1), vis, vis)), 4)
        1.0
    """
    _check_pair("keypoint_kd", s_xy, t_xy, 3, "(n, K, 2)")
    if weight.shape != s_xy.shape[:1]:
        raise ValueError(f"keypoint_kd: weight must have shape ({s_xy.shape[0]},), got {tuple(weight.shape)}")
    if (s_vis is None) != (t_vis is None) or (s_vis is not None and s_vis.shape != s_xy.shape[:2]):
        raise ValueError(f"keypoint_kd: s_vis and t_vis must both be None or both {tuple(s_xy.shape[:2])}")
    if s_xy.shape[0] == 0:
        return _zero(s_xy)
    s_xy, t_xy, w = _up(s_xy), _up(t_xy), _up(weight)
    dist = (s_xy - t_xy).abs().sum(-1)  # (n, K)
    if s_vis is None:
        per = dist.mean(-1)
    else:
        s_vis, t_vis = _up(s_vis), _up(t_vis)
        v = t_vis.sigmoid()
        per = (v * dist).sum(-1) / v.sum(-1).clamp(min=1e-6)
        p = v
        kl = p * (F.logsigmoid(t_vis) - F.logsigmoid(s_vis)) + (1 - p) * (F.logsigmoid(-t_vis) - F.logsigmoid(-s_vis))
        per = per + kl.mean(-1)
    return (w * per).sum() / w.sum().clamp(min=1.0)


def mask_logits(coef: torch.Tensor, proto: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Mask logits of the anchors ``idx`` of each image: ``coef[:, :, idx] . proto`` (a YOLACT-style mask assembly).

    Args:
        coef (torch.Tensor): (N, nm, A) mask coefficients.
        proto (torch.Tensor): (N, nm, H, W) prototypes.
        idx (torch.Tensor): (N, k) anchor indices per image.

    Returns:
        (torch.Tensor): (N, k, H, W) mask logits.

    Examples:
        >>> coef = torch.tensor([[[1.0, 2.0], [0.0, 1.0]]])  # nm = 2, A = 2
        >>> proto = torch.ones(1, 2, 1, 1)
        >>> mask_logits(coef, proto, torch.tensor([[1]])).flatten().tolist()  # 2 x 1 + 1 x 1
        [3.0]
    """
    n, nm, _ = coef.shape
    picked = coef.gather(2, idx.unsqueeze(1).expand(n, nm, idx.shape[1]))  # (N, nm, k)
    h, w = proto.shape[-2:]
    return torch.bmm(picked.transpose(1, 2), proto.flatten(2)).view(n, idx.shape[1], h, w)
