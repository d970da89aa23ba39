# yolokd, AGPL-3.0 License
"""CrossKD terms: cross-head knowledge distillation (Wang et al., CVPR 2024, arXiv:2306.11369).

The student's head features after stage ``k`` of a branch go, through an adapter and `align_scale`, into the frozen
teacher's remaining head layers; these cross-head predictions are pulled to the teacher's own (`CrossKDCls`:
``kd_qfl``; `CrossKDBox`: ``ld``, or GIoU without DFL). An Ultralytics stage ends with its activation, so the tapped
post-activation output is crossed (the official code crosses before the ReLU). See docs/methods.md.
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
    """Run ``module`` (eval mode) on ``x`` with its parameters detached: gradients reach ``x``, not the parameters."""
    # in the usual layout even for a channels-last teacher: the student's features are, and mixing the two layouts
    # made the cross-head step slower on CPU (a copy of the few head weights is cheaper)
    params = {n: p.detach().clone(memory_format=torch.contiguous_format) for n, p in module.named_parameters()}
    if params:
        x = x.to(next(iter(params.values())).dtype)
    return torch.func.functional_call(module, params, (x,))


def cross_head_predictions(inputs: DistillInputs, branch: str, stage: int, adapters: nn.Module | None) -> torch.Tensor:
    """Feed the student's stage-``stage`` features of ``branch`` through the teacher's remaining layers.

    Per level: ``teacher_branch[l][stage + 1:](align_scale(adapter_l(h_s), h_t))``; ``h_s`` keeps its graph.

    Args:
        inputs (DistillInputs): Step inputs with ``teacher.head`` and the tapped ``student.stages``/``teacher.stages``.
        branch (str): ``"cv2"`` (box) or ``"cv3"`` (class).
        stage (int): Index of the crossed stage in each ``Sequential`` of the branch.
        adapters (nn.Module | None): One adapter per level, or None for identity.

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
        stage (int): Cross after stage 0 or 1 of each branch (1: only the teacher's final 1x1 conv is run).
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
        """One adapter per level: a 1x1 conv where the stage widths differ, else identity."""
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

    ``norm="confidence"`` weights each anchor by the teacher's confidence ``w = sigmoid(max_c t)`` (detached) and
    divides by ``sum w`` instead of the positives, as the box term does: the loss is then a confidence-weighted mean
    over the anchors, whatever the number of positives.

    Examples:
        >>> CrossKDCls().taps()
        [('cv3', 1)]
    """

    type = "crosskd_cls"
    needs_targets = True  # avg_factor = number of TAL positives
    branch = "cv3"
    pred_key = "scores"
    NORMS: ClassVar[tuple[str, ...]] = ("positives", "confidence")

    def __init__(self, stage: int = 1, beta: float = 1.0, norm: str = "positives") -> None:
        """Store the crossing stage, the focal exponent and the normalisation."""
        super().__init__(stage)
        if beta < 0:
            raise ValueError(f"crosskd_cls: beta must be >= 0, got {beta}")
        if norm not in self.NORMS:
            raise ValueError(f"crosskd_cls: norm must be one of {self.NORMS}, got {norm!r}")
        self.beta, self.norm = float(beta), norm

    def extra_repr(self) -> str:
        """Show the hyper-parameters."""
        return f"{super().extra_repr()}, beta={self.beta}, norm={self.norm}"

    def forward(self, inputs: DistillInputs, adapters: nn.Module | None) -> torch.Tensor:
        """Return the unweighted class-branch CrossKD loss."""
        cross, teacher = self.cross(inputs, adapters)
        if self.norm == "confidence":
            w = confidence(inputs.teacher.preds).reshape(-1)  # (N * A,)
            return kdf.kd_qfl(rows(cross), rows(teacher), beta=self.beta, weight=w, avg_factor=w.sum().clamp(_EPS))
        num_pos = self.assigned(inputs).num_pos  # the avg_factor
        return kdf.kd_qfl(rows(cross), rows(teacher), beta=self.beta, avg_factor=num_pos)


@register
class CrossKDBox(_CrossKD):
    """CrossKD on the box branch (``cv2``): LD on the DFL bins, or GIoU of decoded boxes for heads without DFL.

    Each anchor is weighted by ``w = sigmoid(max_c teacher class logit)`` (detached): ``sum w KL_T / (4 sum w)`` over
    the sides with ``reg_max > 1``, else ``giou_scale * sum w (1 - GIoU) / sum w`` with inverted boxes' corners sorted.

    Args:
        stage (int): Crossed stage, 0 or 1.
        T (float): LD softmax temperature.
        giou_scale (float): Factor of the GIoU case only: the yaml weight 4.0 x 0.25 = the GIoU weight 1.0.
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
        w = w.reshape(-1)
        return self.giou_scale * kdf.giou_loss(box_s.reshape(-1, 4), box_t.reshape(-1, 4), w, w.sum().clamp(min=_EPS))
