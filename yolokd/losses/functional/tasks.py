# yolokd, AGPL-3.0 License
"""Task-output formulas: mask and keypoint distillation, and the mask logits they read."""

from __future__ import annotations

import torch

from yolokd.losses.functional._shared import bernoulli_kl, check_shapes, graph_zero, upcast

__all__ = ["keypoint_kd", "mask_kd", "mask_logits"]


def mask_kd(s: torch.Tensor, t: torch.Tensor, region: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    r"""Mask distillation: the binary KL of the teacher's against the student's instance-mask probabilities.

    .. math::

        \mathcal{L} = \frac{1}{\max(\sum_k w_k, 1)} \sum_k w_k
            \frac{\sum_{x \in R_k} p \log\frac{p}{q} + (1 - p) \log\frac{1 - p}{1 - q}}{\max(|R_k|, 1)}

    with :math:`p = \sigma(t)`, :math:`q = \sigma(s)` and :math:`R_k` instance ``k``'s region (its assigned box).

    Args:
        s (torch.Tensor): Student mask logits, ``(K, H, W)``.
        t (torch.Tensor): Teacher mask logits, same shape.
        region (torch.Tensor): 1 inside each instance's region, else 0, ``(K, H, W)``.
        weight (torch.Tensor): Instance weight, ``(K,)`` (e.g. 1 for a TAL positive, 0 for padding).

    Examples:
        >>> s, t = torch.zeros(1, 1, 2), torch.tensor([[[0.0, 100.0]]])  # q = 1/2 everywhere; p = 1/2 and ~1
        >>> round(float(mask_kd(s, t, torch.ones(1, 1, 2), torch.ones(1))), 4)  # (0 + ln 2) / 2 pixels
        0.3466
    """
    check_shapes("mask_kd", s, t, 3, "(K, H, W)")
    if region.shape != s.shape or weight.shape != s.shape[:1]:
        raise ValueError(
            f"mask_kd: region must be {tuple(s.shape)} and weight ({s.shape[0]},), got {tuple(region.shape)} and "
            f"{tuple(weight.shape)}"
        )
    if s.shape[0] == 0:
        return graph_zero(s)
    s, t, region = upcast(s), upcast(t), upcast(region)
    per = (bernoulli_kl(s, t) * region).flatten(1).sum(1) / region.flatten(1).sum(1).clamp(min=1.0)
    w = upcast(weight)
    return (w * per).sum() / w.sum().clamp(min=1.0)


def keypoint_kd(
    s_xy: torch.Tensor,
    t_xy: torch.Tensor,
    weight: torch.Tensor,
    s_vis: torch.Tensor | None = None,
    t_vis: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""Keypoint distillation: the student's keypoints pulled to the teacher's, weighted by the teacher's visibility.

    .. math::

        \ell_i = \frac{\sum_k v_{ik} \lVert x_{ik} - y_{ik} \rVert_1}{\max(\sum_k v_{ik}, \epsilon)}
            + \frac{1}{K} \sum_k \operatorname{KL}\big(\sigma(t^{vis}_{ik}) \,\Vert\, \sigma(s^{vis}_{ik})\big),
        \qquad \mathcal{L} = \frac{\sum_i w_i \ell_i}{\max(\sum_i w_i, 1)}

    with :math:`x, y` the student's and teacher's keypoints in grid units and :math:`v = \sigma(t^{vis})`; without
    visibility logits :math:`v = 1` and the KL term is dropped.

    Args:
        s_xy (torch.Tensor): Student keypoints, ``(n, K, 2)``.
        t_xy (torch.Tensor): Teacher keypoints, same shape.
        weight (torch.Tensor): Prediction weight, ``(n,)``.
        s_vis (torch.Tensor | None): Student visibility logits, ``(n, K)``.
        t_vis (torch.Tensor | None): Teacher visibility logits, ``(n, K)``.

    Examples:
        >>> s, t = torch.zeros(1, 2, 2), torch.tensor([[[1.0, 0.0], [0.0, 3.0]]])
        >>> float(keypoint_kd(s, t, torch.ones(1)))  # (1 + 3) / 2 keypoints
        2.0
    """
    check_shapes("keypoint_kd", s_xy, t_xy, 3, "(n, K, 2)")
    if weight.shape != s_xy.shape[:1]:
        raise ValueError(f"keypoint_kd: weight must have shape ({s_xy.shape[0]},), got {tuple(weight.shape)}")
    if (s_vis is None) != (t_vis is None) or (s_vis is not None and s_vis.shape != s_xy.shape[:2]):
        raise ValueError(f"keypoint_kd: s_vis and t_vis must both be None or both {tuple(s_xy.shape[:2])}")
    if s_xy.shape[0] == 0:
        return graph_zero(s_xy)
    s_xy, t_xy, w = upcast(s_xy), upcast(t_xy), upcast(weight)
    dist = (s_xy - t_xy).abs().sum(-1)  # (n, K)
    if s_vis is None:
        per = dist.mean(-1)
    else:
        s_vis, t_vis = upcast(s_vis), upcast(t_vis)
        v = t_vis.sigmoid()
        per = (v * dist).sum(-1) / v.sum(-1).clamp(min=1e-6)
        per = per + bernoulli_kl(s_vis, t_vis).mean(-1)
    return (w * per).sum() / w.sum().clamp(min=1.0)


def mask_logits(coef: torch.Tensor, proto: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Mask logits of the anchors ``idx`` of each image: ``coef[:, :, idx] . proto`` (YOLACT-style assembly).

    Args:
        coef (torch.Tensor): Mask coefficients, ``(N, nm, A)``.
        proto (torch.Tensor): Prototypes, ``(N, nm, H, W)``.
        idx (torch.Tensor): Anchor indices per image, ``(N, k)``.

    Returns:
        (torch.Tensor): Mask logits, ``(N, k, H, W)``.

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
