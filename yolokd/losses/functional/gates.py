# yolokd, AGPL-3.0 License
"""Gates: where the teacher is nearer the labels than the student, per object or per anchor."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from yolokd.losses.functional._shared import upcast

__all__ = ["anchor_gate", "object_gate"]


@torch.no_grad()
def object_gate(
    log_q_t: torch.Tensor, log_q_s: torch.Tensor, fg_mask: torch.Tensor, gt_idx: torch.Tensor, num_objects: int
) -> torch.Tensor:
    r"""Per ground-truth object: is the teacher's mean quality over the object's positives above the student's?

    .. math::

        P_{n,j} = \{a : \text{fg}_{n,a},\ \text{gt\_idx}_{n,a} = j\}, \qquad
        g_{n,j} = \left[\frac{1}{|P_{n,j}|} \sum_{a \in P_{n,j}} q^T_{n,a}
            > \frac{1}{|P_{n,j}|} \sum_{a \in P_{n,j}} q^S_{n,a}\right]

    from log qualities (strict; false for an object without positives). The sums are shifted by the object's largest
    log quality, so tiny qualities do not underflow and :math:`\log q = -\infty` is allowed. No gradient.

    Args:
        log_q_t (torch.Tensor): Teacher log quality per anchor, ``(N, A)``.
        log_q_s (torch.Tensor): Student log quality per anchor, ``(N, A)``.
        fg_mask (torch.Tensor): The positives, bool ``(N, A)``.
        gt_idx (torch.Tensor): Object of each positive (TAL's ``target_gt_idx``), ``(N, A)``.
        num_objects (int): Objects per image (the padded ground-truth count ``M``).

    Returns:
        (torch.Tensor): Gate per object, bool ``(N, num_objects)``.

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
    lq_t, lq_s = upcast(log_q_t), upcast(log_q_s)
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


@torch.no_grad()
def anchor_gate(
    s: torch.Tensor, t: torch.Tensor, log_q_s: torch.Tensor, log_q_t: torch.Tensor, fg_mask: torch.Tensor
) -> torch.Tensor:
    r"""Per anchor: is the teacher's prediction nearer the labels than the student's?

    .. math::

        g_i = \begin{cases}
            \left[\log q^T_i > \log q^S_i\right] & \text{fg}_i \\
            \left[\sum_c \operatorname{softplus}(t_{i,c}) < \sum_c \operatorname{softplus}(s_{i,c})\right]
                & \text{otherwise}
        \end{cases}

    At a positive, the TAL quality of each model's prediction against its ground truth (`log_quality`: the assigned
    class's score and the IoU); at any other anchor, each model's binary cross-entropy against "no object of any
    class", :math:`-\log(1 - \sigma(x)) = \operatorname{softplus}(x)`. Strict: a tie closes the gate. No gradient.

    Args:
        s (torch.Tensor): Student class logits, ``(n, C)``.
        t (torch.Tensor): Teacher class logits, same shape.
        log_q_s (torch.Tensor): Student log quality per anchor, ``(n,)`` (read at the positives only).
        log_q_t (torch.Tensor): Teacher log quality per anchor, ``(n,)``.
        fg_mask (torch.Tensor): The positives, bool ``(n,)``.

    Returns:
        (torch.Tensor): Gate per anchor, bool ``(n,)``.

    Examples:
        >>> s, t = torch.tensor([[0.0], [0.0], [0.0]]), torch.tensor([[-2.0], [2.0], [5.0]])
        >>> lq_s, lq_t = torch.tensor([0.0, 0.0, -1.0]), torch.tensor([0.0, 0.0, -0.5])
        >>> # background: softplus(-2) < softplus(0) opens, softplus(2) does not; positive: -0.5 > -1.0 opens
        >>> anchor_gate(s, t, lq_s, lq_t, torch.tensor([False, False, True])).tolist()
        [True, False, True]
    """
    n = s.shape[0]
    if s.dim() != 2 or t.shape != s.shape or not (log_q_s.shape == log_q_t.shape == fg_mask.shape == (n,)):
        raise ValueError(
            f"anchor_gate: s and t must share one (n, C) shape and log_q_s, log_q_t, fg_mask be (n,), got "
            f"{tuple(s.shape)}, {tuple(t.shape)}, {tuple(log_q_s.shape)}, {tuple(log_q_t.shape)}, "
            f"{tuple(fg_mask.shape)}"
        )
    s, t = upcast(s), upcast(t)
    background = F.softplus(t).sum(1) < F.softplus(s).sum(1)
    return torch.where(fg_mask.bool(), upcast(log_q_t) > upcast(log_q_s), background)
