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

The math (`gaussian_imitation`, `teacher_better`, `giou_loss`, `kd_qfl`) lives in `yolokd.losses.functional`; the
terms only gather inputs.
"""

from __future__ import annotations

import torch
from torch import nn

from yolokd.adapters import per_level
from yolokd.head import decode_boxes, rows
from yolokd.losses import functional as kdf
from yolokd.losses import register
from yolokd.losses.base import DistillInputs, Probe, Term
from yolokd.targets import gaussian_masks

__all__ = ["TARBox", "TARCls", "TARFeat"]


@register
class TARFeat(Term):
    """Gaussian-mask feature imitation summed over neck levels: ``sum_l gaussian_imitation(adapter_l(s), t, M_l)``.

    ``M_l`` comes from `yolokd.targets.gaussian_masks` at the level's cell centres (pixels): per box
    ``exp(-((x-cx)^2 / (2 sx^2) + (y-cy)^2 / (2 sy^2)))`` with ``sx = sigma_scale * w / 2`` and
    ``sy = sigma_scale * h / 2``, maximum over the image's boxes. The paper sets sigma proportional to the box width
    and height; ``sigma_scale`` is that proportion relative to the half size: 0.5 gives ``sigma = w / 4`` (the box
    border lies 2 sigma from the centre, mask ``exp(-2) ~ 0.14`` at the middle of each edge), 1.0 gives
    ``sigma = w / 2`` (border at 1 sigma, mask ``exp(-1/2) ~ 0.61``). The level strides are the model's
    (`DistillInputs.level_strides`).

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
        masks = gaussian_masks(gt, inputs.teacher.feats, inputs.level_strides(), self.sigma_scale)
        return sum(
            kdf.gaussian_imitation(a(s), t, m)
            for a, s, t, m in zip(adapters, inputs.student.feats, inputs.teacher.feats, masks)
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
        a = self.assigned(inputs)
        s, t = rows(inputs.student.preds["scores"]), rows(inputs.teacher.preds["scores"]).detach()
        w = a.fg_mask.reshape(-1).float()  # the positives as a 0/1 row weight: no boolean indexing, no host sync
        return kdf.kd_qfl(s, t, beta=self.beta, weight=w, avg_factor=a.num_pos)


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
        a = self.assigned(inputs)
        boxes = [  # (N, A, 4) pixels, each model's boxes decoded with its own reg_max
            decode_boxes(preds["boxes"], a.anchor_points, reg_max) * a.stride_tensor
            for preds, reg_max in zip((inputs.student.preds, inputs.teacher.preds), inputs.reg_max())
        ]
        fg = a.fg_mask.bool().reshape(-1)  # every anchor is compared, the positives kept by the gate: no host sync
        s_box, t_box = boxes[0].reshape(-1, 4), boxes[1].detach().reshape(-1, 4)
        gate = fg & kdf.teacher_better(s_box, t_box, a.target_bboxes.reshape(-1, 4))
        self.record("teacher_better", gate.sum(), fg.sum())
        return kdf.giou_loss(s_box, t_box, gate, avg_factor=a.num_pos)
