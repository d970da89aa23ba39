# yolokd, AGPL-3.0 License
"""Gates: the teacher-confidence weighting of foreground anchors."""

from __future__ import annotations

import torch

from yolokd.losses.functional._shared import upcast

__all__ = ["object_gate"]


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
