# yolokd, AGPL-3.0 License
"""Logit formulas: quality-focal and soft-BCE class distillation, LD on DFL distributions, the Bernoulli KL."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from yolokd.losses.functional._shared import bernoulli_kl, check_shapes, graph_zero, reduce_rows, tempered, upcast

__all__ = ["binary_kl", "kd_qfl", "ld", "weighted_soft_bce"]


def kd_qfl(
    s: torch.Tensor,
    t: torch.Tensor,
    beta: float = 1.0,
    weight: torch.Tensor | None = None,
    avg_factor: float | torch.Tensor | None = None,
) -> torch.Tensor:
    r"""Quality-focal-style classification distillation with the teacher's probabilities as soft BCE targets.

    .. math::

        q = \sigma(t), \qquad
        l_{i,c} = \operatorname{BCE}(s_{i,c}, q_{i,c}) \, \left|\sigma(s_{i,c}) - q_{i,c}\right|^{\beta}

    The modulating factor is not detached. Reduced as :math:`\sum_{i,c} l_{i,c} w_i / \text{avg\_factor}` if
    ``avg_factor`` is given, else :math:`\operatorname{mean}_{i,c}(l_{i,c} w_i)`.

    Args:
        s (torch.Tensor): Student class logits, ``(n, C)``.
        t (torch.Tensor): Teacher class logits, same shape; the target, not detached here.
        beta (float): Exponent of the modulating factor.
        weight (torch.Tensor | None): Optional per-row weight, ``(n,)``.
        avg_factor (float | torch.Tensor | None): Optional normaliser (callers clamp it to ``>= 1``).

    Returns:
        (torch.Tensor): Scalar loss, float32 (float64 for float64 inputs); a graph-connected zero if ``n == 0``.

    Examples:
        >>> s, t = torch.zeros(1, 1), torch.full((1, 1), float("inf"))  # q = 1: BCE = ln 2, factor = 0.5
        >>> round(float(kd_qfl(s, t)), 6)  # 0.5 * ln 2
        0.346574
    """
    check_shapes("kd_qfl", s, t, 2, "(n, C)")
    if s.shape[0] == 0:
        return graph_zero(s)
    s, t = upcast(s), upcast(t)
    q = t.sigmoid()
    loss = F.binary_cross_entropy_with_logits(s, q, reduction="none") * (s.sigmoid() - q).abs().pow(beta)
    return reduce_rows(loss, weight, avg_factor, "kd_qfl")


def weighted_soft_bce(
    s: torch.Tensor, t: torch.Tensor, weight: torch.Tensor, avg_factor: float | torch.Tensor | None = None
) -> torch.Tensor:
    r"""Anchor-weighted soft binary cross-entropy of student logits against the teacher's sigmoid probabilities.

    .. math::

        L = \frac{1}{Z} \sum_{n,a} w_{n,a} \sum_c \mathrm{BCE}\left(s_{n,c,a}, \sigma(t_{n,c,a})\right)

    with ``Z = avg_factor`` when given, else the ``N * A`` anchors. Not zero at ``s == t``: its minimum is the binary
    entropy of ``sigmoid(t)``.

    Args:
        s (torch.Tensor): Student class logits, ``(N, C, A)``.
        t (torch.Tensor): Teacher class logits, same shape; not detached here.
        weight (torch.Tensor): Weight of each anchor, ``(N, A)``.
        avg_factor (float | torch.Tensor | None): Normaliser ``Z`` (callers clamp it to ``>= 1``).

    Returns:
        (torch.Tensor): Scalar loss, float32 (float64 for float64 inputs); a graph-connected zero without anchors.

    Examples:
        >>> s = t = torch.zeros(1, 2, 2)  # BCE(0, 0.5) = ln 2 per class and anchor, two classes
        >>> round(float(weighted_soft_bce(s, t, torch.ones(1, 2))), 4)  # 2 anchors x 2 ln 2 / (N * A = 2)
        1.3863
    """
    if s.dim() != 3 or s.shape != t.shape:
        raise ValueError(
            f"weighted_soft_bce: s and t must share one (N, C, A) shape, got {tuple(s.shape)}, {tuple(t.shape)}"
        )
    if weight.shape != (s.shape[0], s.shape[2]):
        raise ValueError(
            f"weighted_soft_bce: weight must have shape {(s.shape[0], s.shape[2])}, got {tuple(weight.shape)}"
        )
    s, t = upcast(s), upcast(t)
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
    r"""Localization distillation (LD, Zheng et al., CVPR 2022) over the bin distributions of box sides.

    .. math::

        p_{m,b} = \operatorname{softmax}_b(x_{m,b} / T), \qquad
        l_m = T^2 \sum_b p^T_{m,b} \left(\log p^T_{m,b} - \log p^S_{m,b}\right)

    reduced as :math:`\sum_m l_m w_m / \text{avg\_factor}` if ``avg_factor`` is given, else
    :math:`\operatorname{mean}_m(l_m w_m)`.

    Args:
        s (torch.Tensor): Student bin logits, one row per box side, ``(m, B)``.
        t (torch.Tensor): Teacher bin logits, same shape; the target, not detached here.
        T (float): Softmax temperature.
        weight (torch.Tensor | None): Optional per-row weight, ``(m,)``.
        avg_factor (float | torch.Tensor | None): Optional normaliser (callers clamp it to ``>= 1``).

    Returns:
        (torch.Tensor): Scalar loss, float32 (float64 for float64 inputs); a graph-connected zero if ``m == 0``.

    Examples:
        >>> import math
        >>> s = torch.tensor([[0.0, math.log(3.0)]])  # p_S = [1/4, 3/4]
        >>> t = torch.zeros(1, 2)  # p_T = [1/2, 1/2]
        >>> round(float(ld(s, t)), 6)  # 0.5 * ln(4/3)
        0.143841
    """
    check_shapes("ld", s, t, 2, "(m, B)")
    if s.shape[0] == 0:
        return graph_zero(s)
    log_ps = F.log_softmax(tempered(s, T), dim=-1)
    log_pt = F.log_softmax(tempered(t, T), dim=-1)
    loss = (log_pt.exp() * (log_pt - log_ps)).sum(dim=-1)
    return reduce_rows(loss if T == 1 else loss * T**2, weight, avg_factor, "ld")


def binary_kl(
    s: torch.Tensor,
    t: torch.Tensor,
    weight: torch.Tensor | None = None,
    avg_factor: float | torch.Tensor | None = None,
) -> torch.Tensor:
    r"""Per-class Bernoulli KL between the teacher's and the student's sigmoid probabilities, summed over classes.

    .. math::

        l_i = \sum_c q_{i,c} \left(\log q_{i,c} - \log p_{i,c}\right)
            + (1 - q_{i,c}) \left(\log(1 - q_{i,c}) - \log(1 - p_{i,c})\right)

    with :math:`q = \sigma(t)`, :math:`p = \sigma(s)`, computed from log-sigmoids (finite for logits of
    :math:`\pm 10^4`). Reduced as :math:`\sum_i l_i w_i / \text{avg\_factor}` if ``avg_factor`` is given, else
    :math:`\operatorname{mean}_i(l_i w_i)`.

    Args:
        s (torch.Tensor): Student class logits, ``(n, C)``.
        t (torch.Tensor): Teacher class logits, same shape; the target, not detached here.
        weight (torch.Tensor | None): Optional per-row weight, ``(n,)``.
        avg_factor (float | torch.Tensor | None): Optional normaliser (callers clamp it to ``>= 1``).

    Returns:
        (torch.Tensor): Scalar loss, float32 (float64 for float64 inputs); a graph-connected zero if ``n == 0``.

    Examples:
        >>> import math
        >>> s, t = torch.zeros(1, 1), torch.full((1, 1), math.log(3.0))  # p = 1/2, q = 3/4
        >>> round(float(binary_kl(s, t)), 6)  # 0.75 ln 1.5 + 0.25 ln 0.5
        0.130812
    """
    check_shapes("binary_kl", s, t, 2, "(n, C)")
    if s.shape[0] == 0:
        return graph_zero(s)
    loss = bernoulli_kl(upcast(s), upcast(t)).sum(dim=-1)
    return reduce_rows(loss, weight, avg_factor, "binary_kl")
