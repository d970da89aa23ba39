# yolokd, AGPL-3.0 License
"""Feature formulas: CWD, per-channel alignment, foreground cosine, Gaussian imitation, PKD and MGD."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from yolokd.losses.functional._shared import check_shapes, graph_zero, tempered, upcast

__all__ = ["align_scale", "cosine_fg", "cwd", "gaussian_imitation", "mgd", "mgd_mask", "pkd"]


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
    check_shapes("cwd", s, t, 4, "(N, C, H, W)")
    n, c = s.shape[:2]
    if s.numel() == 0:
        return graph_zero(s)
    log_ps = F.log_softmax(tempered(s.flatten(2), tau), dim=-1)
    log_pt = F.log_softmax(tempered(t.flatten(2), tau), dim=-1)
    kl = (log_pt.exp() * (log_pt - log_ps)).sum()
    return kl * (tau**2 / (n * c))


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
    check_shapes("align_scale", s, t, 4, "(N, C, H, W)")
    if s.numel() // max(s.shape[1], 1) < 2 and s.numel() > 0:
        raise ValueError(f"align_scale: need at least 2 values per channel over (N, H, W), got shape {tuple(s.shape)}")
    s, t = upcast(s), upcast(t)
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
    check_shapes("cosine_fg", s, t, 4, "(N, C, H, W)")
    expected = (s.shape[0], *s.shape[2:])
    for name, m in (("mask", mask), ("gate", gate)):
        if m is None:
            continue
        if m.shape != expected:
            raise ValueError(f"cosine_fg: {name} must have shape {expected} (N, H, W), got {tuple(m.shape)}")
        if m.dtype != torch.bool:
            raise TypeError(f"cosine_fg: {name} must be a bool tensor, got {m.dtype}")
    dist = 1.0 - _channel_cosine(upcast(s), upcast(t))
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
    s, t, mask = upcast(s), upcast(t), upcast(mask).to(upcast(s).dtype)
    w = mask / mask.sum().clamp(min=torch.finfo(mask.dtype).tiny)  # all zero when sum M == 0
    return (w.unsqueeze(1) * (s - t).pow(2)).sum() / max(s.shape[1], 1)


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
    s, t = upcast(s), upcast(t)
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
    check_shapes("mgd", gen, t, 4, "(N, C, H, W)")
    if gen.shape[0] == 0:
        return graph_zero(gen)
    return (upcast(gen) - upcast(t)).pow(2).sum() / gen.shape[0]


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
