# yolokd, AGPL-3.0 License
"""TAR terms: Task Adaptive Regularization (Sun et al., 2020, arXiv:2006.13108).

``tar_feat`` (Gaussian-mask feature imitation), ``tar_cls`` (``kd_qfl`` at the student's TAL positives, which stand
in for the paper's shared proposals) and ``tar_box`` (GIoU to the teacher's box where it beats the student's). The
paper's distillation decay is the ``linear`` schedule of ``cfg/methods/tar.yaml``. See docs/methods.md.
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

    ``M_l`` is `yolokd.targets.gaussian_masks` at the level's cell centres: the maximum over the boxes of a Gaussian
    with ``sigma = sigma_scale x`` half the box width and height.

    Args:
        sigma_scale (float): Gaussian sigma as a fraction of the box half width/height.
        standardise (bool): Standardise both maps per channel first (`kdf.standardise`, as PKD does), so that the
            loss no longer scales with the teacher's feature magnitudes.
    """

    type = "tar_feat"
    reads_teacher_head = False  # neck features only

    def __init__(self, sigma_scale: float = 0.5, standardise: bool = False) -> None:
        """Store the Gaussian width and whether to standardise."""
        super().__init__()
        if sigma_scale <= 0:
            raise ValueError(f"tar_feat: sigma_scale must be > 0, got {sigma_scale}")
        self.sigma_scale = float(sigma_scale)
        self.standardise = bool(standardise)

    def extra_repr(self) -> str:
        """Show the hyper-parameters."""
        return f"sigma_scale={self.sigma_scale}, standardise={self.standardise}"

    def make_adapters(self, probe: Probe) -> nn.Module:
        """One 1x1 adapter per neck level, student -> teacher channels."""
        return per_level(probe.student_channels, probe.teacher_channels)

    def forward(self, inputs: DistillInputs, adapters: nn.Module | None) -> torch.Tensor:
        """Return the unweighted Gaussian-mask imitation loss summed over levels."""
        gt = inputs.ground_truth()
        masks = gaussian_masks(gt, inputs.teacher.feats, inputs.level_strides(), self.sigma_scale)
        pairs = inputs.adapted_pairs(adapters, self.standardise)
        return sum(kdf.gaussian_imitation(s, t, m) for (s, t), m in zip(pairs, masks))


@register
class TARCls(Term):
    """Classification distillation at the student's TAL positives: ``kd_qfl(s[pos], t[pos], beta)`` / positives."""

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
    """Adaptive box distillation at the positives: ``1 - GIoU(student, teacher)`` where the teacher is better.

    Boxes decoded in pixels, each with its own ``reg_max``; gated by `teacher_better`, divided by all the positives.
    Records ``stats["teacher_better"]``.
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
