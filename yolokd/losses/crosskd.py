# yolokd, AGPL-3.0 License
"""CrossKD terms: cross-head knowledge distillation (Wang et al., CVPR 2024, arXiv:2306.11369).

Instead of pulling the student's predictions towards the teacher's (which conflicts with the ground truth), the
student's *head hidden features* are fed through the teacher's remaining head layers and these cross-head predictions
are made to match the teacher's own predictions. The student's own head output is trained only by the ground truth;
the distillation gradient reaches the student's head features through the frozen teacher head.

YOLO mapping: a Detect branch (``cv2`` box, ``cv3`` class) is ``Sequential(stage0, stage1, Conv2d 1x1)`` per level.
For stage ``k`` (default 1, the last hidden stage) and every level ``l``::

    h_s = student cv[l][k] output -> adapter (1x1 conv where the widths differ)
        -> align_scale(., teacher cv[l][k] output) -> teacher cv[l][k + 1:] (frozen; the gradient flows to h_s)

The cross predictions of all levels are flattened and concatenated like the head's own output (P3, P4, P5, each H*W
row-major), then compared with the teacher's predictions:

- `CrossKDCls` (``crosskd_cls``): ``kd_qfl(cross, teacher, beta=1)`` over all anchors, normalised by the number of
  TAL positives (the official GFL recipe, ``KDQualityFocalLoss``). With a teacher trained on more (or other)
  classes, the cross predictions are reduced to the matched classes exactly as the teacher's scores are.
- `CrossKDBox` (``crosskd_box``): DFL heads (``reg_max > 1``): ``ld`` on the per-side bin distributions, T = 1, each
  anchor weighted by ``sigmoid(max teacher class logit)`` over its 4 sides, normalised by 4 x the sum of the weights
  (the official GFL recipe, ``KnowledgeDistillationKLDivLoss``). Heads without DFL (``reg_max == 1``, YOLO26): GIoU
  between the decoded cross and teacher boxes with the same weights, ``sum w (1 - GIoU) / sum w``, times
  ``giou_scale``; inverted boxes (``l + r < 0`` from raw distances) have their corners sorted first, which keeps
  ``1 - GIoU`` in ``[0, 2]``.

Differences from the official code (github.com/jbwang1997/CrossKD, ``CrossKDGFL``): its GFL head crosses at the
*pre-activation* output of a hidden conv and applies the ReLU after ``align_scale``; an Ultralytics stage ends with its
activation, so the tapped (post-activation) output is aligned and fed to the next teacher stage directly. Its config
crosses after hidden conv 3 of 4 (the teacher re-runs its last hidden conv and the predictor); Ultralytics branches
have two hidden stages, and the default here (``stage=1``) re-runs only the teacher's final conv; ``stage=0`` re-runs
the teacher's last hidden stage as well.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from yolokd.adapters import per_level
from yolokd.head import confidence, head_boxes, rows
from yolokd.losses import functional as kdf
from yolokd.losses import register
from yolokd.losses.base import DistillInputs, Probe, Term

__all__ = ["CrossKDBox", "CrossKDCls", "cross_head_predictions"]

_EPS = 1e-12  # floor of the box-weight normaliser (the weights are sigmoids, so it only bites if all are ~0)


def _frozen_forward(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Run ``module`` on ``x`` with its parameters detached: gradients reach ``x`` but never the parameters.

    This holds whether or not the teacher's parameters have ``requires_grad`` set; buffers (BatchNorm running
    statistics) are the module's own, so the module must be in eval mode for the teacher to stay untouched.
    """
    # in the usual layout even for a channels-last teacher: the student's features are, and mixing the two layouts
    # made the cross-head step slower on CPU (a copy of the few head weights is cheaper)
    params = {n: p.detach().clone(memory_format=torch.contiguous_format) for n, p in module.named_parameters()}
    if params:
        x = x.to(next(iter(params.values())).dtype)
    return torch.func.functional_call(module, params, (x,))


def cross_head_predictions(inputs: DistillInputs, branch: str, stage: int, adapters: nn.Module | None) -> torch.Tensor:
    """Feed the student's stage-``stage`` features of ``branch`` through the teacher's remaining layers.

    Per level: ``teacher_branch[l][stage + 1:](align_scale(adapter_l(h_s), h_t))`` with ``h_s``/``h_t`` the student's
    and teacher's outputs of stage ``stage``; the teacher's parameters are detached, ``h_s`` keeps its graph.

    Args:
        inputs (DistillInputs): Step inputs with ``teacher.head`` and the tapped ``student.stages``/``teacher.stages``.
        branch (str): ``"cv2"`` (box) or ``"cv3"`` (class).
        stage (int): Index of the crossed stage in each ``Sequential`` of the branch.
        adapters (nn.Module | None): One adapter per level (e.g. ``nn.Identity``), or None for identity.

    Returns:
        (torch.Tensor): Cross predictions (N, C, A), float32, levels concatenated like the head's outputs.
    """
    head = inputs.teacher.head
    if head is None or not hasattr(head, branch):
        raise ValueError(f"crosskd: inputs.teacher.head must be a Detect head with a '{branch}' branch")
    outs = []
    for level, seq in enumerate(getattr(head, branch)):
        if stage + 1 >= len(seq):
            raise ValueError(f"crosskd: stage {stage} leaves no teacher layer to run in {branch}[{level}]")
        key = (branch, level, stage)
        if key not in inputs.student.stages or key not in inputs.teacher.stages:
            raise KeyError(f"crosskd: head stage {key} was not tapped; taps() must list ({branch!r}, {stage})")
        h_s, h_t = inputs.student.stages[key], inputs.teacher.stages[key].detach()
        h_s = adapters[level](h_s) if adapters is not None else h_s
        x = kdf.align_scale(h_s, h_t)
        outs.append(_frozen_forward(seq[stage + 1 :], x).float().flatten(2))
    return torch.cat(outs, dim=2)


class _CrossKD(Term):
    """Shared part of the CrossKD terms: the tap, the per-level adapters and the cross-head forward.

    Args:
        stage (int): Cross after stage ``k`` of each branch ``Sequential(stage0, stage1, final conv)``: 0 or 1
            (1, the default, is the last hidden stage: only the teacher's final 1x1 conv is run).
    """

    branch: ClassVar[str] = ""
    pred_key: ClassVar[str] = ""

    def __init__(self, stage: int = 1) -> None:
        """Validate and store the crossing stage."""
        super().__init__()
        if isinstance(stage, bool) or stage not in (0, 1):
            raise ValueError(f"{self.type}: stage must be 0 or 1 (a hidden stage of the head branch), got {stage!r}")
        self.stage = int(stage)

    def extra_repr(self) -> str:
        """Show the hyper-parameters."""
        return f"branch={self.branch}, stage={self.stage}"

    def taps(self) -> list[tuple[str, int]]:
        """The crossed stage of this term's branch, on every level."""
        return [(self.branch, self.stage)]

    def make_adapters(self, probe: Probe) -> nn.Module:
        """One adapter per level: a 1x1 conv where the student's stage width differs from the teacher's, else identity.

        Args:
            probe (Probe): Measured shapes, with the stage widths keyed ``(branch, level, stage)``.

        Returns:
            (nn.ModuleList): Adapters in level order.
        """
        keys = [(self.branch, level, self.stage) for level in range(len(probe.strides))]
        # no bias: align_scale removes every per-channel offset, so a bias would get exactly zero gradient
        return per_level(
            [probe.student_stage_channels[k] for k in keys],
            [probe.teacher_stage_channels[k] for k in keys],
            bias=False,
            identity_if_equal=True,
        )

    def cross(self, inputs: DistillInputs, adapters: nn.Module | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the cross predictions and the teacher's predictions of this branch, both (N, C, A) float32."""
        cross = cross_head_predictions(inputs, self.branch, self.stage, adapters)
        if self.pred_key == "scores":  # the teacher's class layers give all its classes: keep the matched ones
            cross = inputs.teacher_class_logits(cross)
        teacher = inputs.teacher.preds[self.pred_key].detach().float()
        if cross.shape != teacher.shape:
            raise ValueError(
                f"{self.type}: cross predictions {tuple(cross.shape)} do not match the teacher's "
                f"'{self.pred_key}' {tuple(teacher.shape)}"
            )
        return cross, teacher


@register
class CrossKDCls(_CrossKD):
    """CrossKD on the class branch (``cv3``): ``kd_qfl(cross, teacher, beta)`` over all anchors / TAL positives.

    Args:
        stage (int): Crossed stage, 0 or 1 (default 1, the last hidden stage).
        beta (float): Exponent of the ``kd_qfl`` modulating factor ``|sigmoid(s) - sigmoid(t)|^beta``.

    Examples:
        >>> CrossKDCls().taps()
        [('cv3', 1)]
    """

    type = "crosskd_cls"
    needs_targets = True  # avg_factor = number of TAL positives
    branch = "cv3"
    pred_key = "scores"

    def __init__(self, stage: int = 1, beta: float = 1.0) -> None:
        """Store the crossing stage and the focal exponent."""
        super().__init__(stage)
        if beta < 0:
            raise ValueError(f"crosskd_cls: beta must be >= 0, got {beta}")
        self.beta = float(beta)

    def extra_repr(self) -> str:
        """Show the hyper-parameters."""
        return f"{super().extra_repr()}, beta={self.beta}"

    def forward(self, inputs: DistillInputs, adapters: nn.Module | None) -> torch.Tensor:
        """Return the unweighted class-branch CrossKD loss."""
        num_pos = self.assigned(inputs).num_pos  # the avg_factor
        cross, teacher = self.cross(inputs, adapters)
        return kdf.kd_qfl(rows(cross), rows(teacher), beta=self.beta, avg_factor=num_pos)


@register
class CrossKDBox(_CrossKD):
    """CrossKD on the box branch (``cv2``): LD on the DFL bins, or GIoU of decoded boxes for heads without DFL.

    Each anchor is weighted by ``w = sigmoid(max_c teacher class logit)`` (detached). With ``R = reg_max > 1``:
    ``sum_{anchor, side} w * KL_T(teacher bins || cross bins) / (4 * sum w)``. With ``R == 1`` (YOLO26, boxes are
    plain distances): ``giou_scale * sum w * (1 - GIoU(cross box, teacher box)) / sum w``, with the corners of
    inverted boxes sorted first (otherwise the GIoU of an inverted box is unbounded above).

    Args:
        stage (int): Crossed stage, 0 or 1 (default 1, the last hidden stage).
        T (float): LD softmax temperature (the KL of each side is scaled by ``T**2``).
        giou_scale (float): Factor applied only in the GIoU case. The method yaml's weight (4.0) is the official LD
            weight while the GIoU weight this mapping calls for is 1.0, so the default 0.25 makes the effective GIoU
            weight 4.0 x 0.25 = 1.0.

    Examples:
        >>> CrossKDBox()
        CrossKDBox(branch=cv2, stage=1, T=1.0, giou_scale=0.25)
    """

    type = "crosskd_box"
    branch = "cv2"
    pred_key = "boxes"

    def __init__(self, stage: int = 1, T: float = 1.0, giou_scale: float = 0.25) -> None:
        """Store the crossing stage, the LD temperature and the GIoU scale."""
        super().__init__(stage)
        if T <= 0:
            raise ValueError(f"crosskd_box: T must be > 0, got {T}")
        if giou_scale < 0:
            raise ValueError(f"crosskd_box: giou_scale must be >= 0, got {giou_scale}")
        self.T = float(T)
        self.giou_scale = float(giou_scale)

    def extra_repr(self) -> str:
        """Show the hyper-parameters."""
        return f"{super().extra_repr()}, T={self.T}, giou_scale={self.giou_scale}"

    def forward(self, inputs: DistillInputs, adapters: nn.Module | None) -> torch.Tensor:
        """Return the unweighted box-branch CrossKD loss."""
        cross, teacher = self.cross(inputs, adapters)
        reg_max = inputs.reg_max()[1]  # the teacher's: the cross predictions come out of its final conv
        w = confidence(inputs.teacher.preds)  # (N, A)
        if reg_max > 1:
            n, _, a = cross.shape
            s = rows(cross).reshape(-1, reg_max)  # (N*A*4, reg_max), sides in Ultralytics' (4, R) order
            t = rows(teacher).reshape(-1, reg_max)
            w4 = w.unsqueeze(-1).expand(n, a, 4).reshape(-1)
            return kdf.ld(s, t, T=self.T, weight=w4, avg_factor=(4.0 * w.sum()).clamp(min=_EPS))
        # both boxes of an anchor share its centre and GIoU is translation (and scale) invariant, so decoding around
        # the origin gives the same GIoU; make_anchors would read the head's stride tensor on the host at every step
        origin = cross.new_zeros(cross.shape[-1], 2)
        box_s = head_boxes(cross, origin, 1)  # (N, A, 4) xyxy, grid units, relative to the anchor, corners sorted
        box_t = head_boxes(teacher, origin, 1)
        return self.giou_scale * (w * kdf.giou_distance(box_s, box_t)).sum() / w.sum().clamp(min=_EPS)
