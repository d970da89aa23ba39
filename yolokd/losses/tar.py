# yolokd, AGPL-3.0 License
"""TAR terms: Task Adaptive Regularization (Sun et al., 2020, arXiv:2006.13108).

Three terms, each with its own weight and schedule (the paper's *distillation decay* is the ``linear`` schedule of
``cfg/methods/tar.yaml``; ``cosine`` is the smooth option):

- ``tar_feat``: Gaussian-mask feature imitation on every neck level. The mask is the maximum over the image's ground
  truth boxes of a 2D Gaussian centred on the box with sigma proportional to its width and height.
- ``tar_cls``: classification-head distillation at the shared positives. The paper shares region proposals between
  teacher and student; a one-stage YOLO head has no proposals, so the *assignment* is shared instead: both heads are
  compared at the student's TAL positives, the teacher's sigmoid scores being soft targets (``kd_qfl``).
- ``tar_box``: regression-head distillation at the same positives, adaptive: the teacher's box is an extra target
  only where it overlaps the assigned ground truth strictly better than the student's box does.

The pure helpers (`gaussian_imitation`, `teacher_better`, `giou_loss`) hold the math; the terms only gather inputs.
"""

from __future__ import annotations

import torch
from torch import nn
from ultralytics.utils.metrics import bbox_iou

from yolokd.adapters import per_level
from yolokd.losses import functional as F
from yolokd.losses import register
from yolokd.losses.base import DistillInputs, Probe, Term
from yolokd.targets import decode_boxes, gaussian_masks

__all__ = ["TARBox", "TARCls", "TARFeat", "gaussian_imitation", "giou_loss", "teacher_better"]


def _up(x: torch.Tensor) -> torch.Tensor:
    """Upcast to float32 unless already float64."""
    return x if x.dtype == torch.float64 else x.float()


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


def teacher_better(s_boxes: torch.Tensor, t_boxes: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """TAR's regression gate: True where IoU(teacher box, GT) > IoU(student box, GT) (strict).

    Uses Ultralytics' ``bbox_iou`` (xyxy); no gradient flows through the gate.

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


def _level_strides(inputs: DistillInputs) -> list[float]:
    """Stride of each neck level: the input height over the level height (exact: inputs are stride multiples)."""
    h = inputs.batch["img"].shape[-2]
    return [h / f.shape[-2] for f in inputs.teacher_feats]


def _rows(x: torch.Tensor) -> torch.Tensor:
    """(N, K, A) head output -> (N * A, K) rows, one per anchor in (image, anchor) order."""
    return x.permute(0, 2, 1).reshape(-1, x.shape[1])


@register
class TARFeat(Term):
    """Gaussian-mask feature imitation summed over neck levels: ``sum_l gaussian_imitation(adapter_l(s), t, M_l)``.

    ``M_l`` comes from `yolokd.targets.gaussian_masks` at the level's cell centres (pixels): per box
    ``exp(-((x-cx)^2 / (2 sx^2) + (y-cy)^2 / (2 sy^2)))`` with ``sx = sigma_scale * w / 2`` and
    ``sy = sigma_scale * h / 2``, maximum over the image's boxes. The paper sets sigma proportional to the box width
    and height; ``sigma_scale`` is that proportion relative to the half size: 0.5 gives ``sigma = w / 4`` (the box
    border lies 2 sigma from the centre, mask ``exp(-2) ~ 0.14`` at the middle of each edge), 1.0 gives
    ``sigma = w / 2`` (border at 1 sigma, mask ``exp(-1/2) ~ 0.61``). The level strides are the input height over
    the level height.

    Args:
        sigma_scale (float): Gaussian sigma as a fraction of the box half width/height.
    """

    type = "tar_feat"
    reads_teacher_head = False  # neck features only

    def __init__(self, sigma_scale: float = 0.5) -> None:
        """Store the Gaussian width."""
        super().__init__()
        if sigma_scale <= 0:
            raise ValueError(f"tar_feat: sigma_scale must be > 0, got {sigma_scale}")
        self.sigma_scale = float(sigma_scale)

    def extra_repr(self) -> str:
        """Show the hyper-parameters."""
        return f"sigma_scale={self.sigma_scale}"

    def make_adapters(self, probe: Probe) -> nn.Module:
        """One 1x1 adapter per neck level, student -> teacher channels."""
        return per_level(probe.student_channels, probe.teacher_channels)

    def forward(self, inputs: DistillInputs, adapters: nn.Module | None) -> torch.Tensor:
        """Return the unweighted Gaussian-mask imitation loss summed over levels."""
        gt = inputs.ground_truth()
        masks = gaussian_masks(gt, inputs.teacher_feats, _level_strides(inputs), self.sigma_scale)
        return sum(
            gaussian_imitation(a(s), t, m)
            for a, s, t, m in zip(adapters, inputs.student_feats, inputs.teacher_feats, masks)
        )


@register
class TARCls(Term):
    """Classification distillation at the shared (student TAL) positives: ``kd_qfl(s[pos], t[pos], beta)``.

    Normalised by the number of positives (at least 1); anchors outside the positives do not contribute.

    Args:
        beta (float): Exponent of the ``|sigmoid(s) - sigmoid(t)|`` modulating factor.
    """

    type = "tar_cls"
    needs_targets = True

    def __init__(self, beta: float = 1.0) -> None:
        """Store the modulating exponent."""
        super().__init__()
        if beta < 0:
            raise ValueError(f"tar_cls: beta must be >= 0, got {beta}")
        self.beta = float(beta)

    def extra_repr(self) -> str:
        """Show the hyper-parameters."""
        return f"beta={self.beta}"

    def forward(self, inputs: DistillInputs, adapters: nn.Module | None) -> torch.Tensor:
        """Return the unweighted soft-target classification loss at the positives."""
        a = inputs.assigned
        if a is None:
            raise ValueError("tar_cls needs the TAL assignment (inputs.assigned)")
        s, t = _rows(inputs.student_preds["scores"]), _rows(inputs.teacher_preds["scores"]).detach()
        w = a.fg_mask.reshape(-1).float()  # the positives as a 0/1 row weight: no boolean indexing, no host sync
        return F.kd_qfl(s, t, beta=self.beta, weight=w, avg_factor=a.num_pos)


@register
class TARBox(Term):
    """Adaptive box distillation at the shared positives: ``1 - GIoU(student, teacher)`` where the teacher is better.

    Both heads' boxes are decoded with their own ``reg_max`` into input pixels; the gate is open where
    ``IoU(teacher, GT) > IoU(student, GT)`` (strict, Ultralytics' ``bbox_iou``); the loss is the sum over the open
    positives divided by all the positives (the candidates: the loss per open positive does not swing with the
    fraction of open gates; 0, connected to the graph, when none is open). ``stats["teacher_better"]``: the fraction
    of open positives since the last reset.
    """

    type = "tar_box"
    needs_targets = True

    def forward(self, inputs: DistillInputs, adapters: nn.Module | None) -> torch.Tensor:
        """Return the unweighted gated GIoU loss."""
        a = inputs.assigned
        if a is None:
            raise ValueError("tar_box needs the TAL assignment (inputs.assigned)")
        boxes = []
        for preds, head in ((inputs.student_preds, inputs.student_head), (inputs.teacher_preds, inputs.teacher_head)):
            b = preds["boxes"]
            reg_max = int(getattr(head, "reg_max", 0) or b.shape[1] // 4)
            boxes.append(decode_boxes(b, a.anchor_points, reg_max) * a.stride_tensor)  # (N, A, 4) pixels
        fg = a.fg_mask.bool().reshape(-1)  # every anchor is compared, the positives kept by the gate: no host sync
        s_box, t_box = boxes[0].reshape(-1, 4), boxes[1].detach().reshape(-1, 4)
        gate = fg & teacher_better(s_box, t_box, a.target_bboxes.reshape(-1, 4))
        self.record("teacher_better", gate.sum(), fg.sum())
        return giou_loss(s_box, t_box, gate, avg_factor=a.num_pos)
