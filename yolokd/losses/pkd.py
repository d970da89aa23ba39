# yolokd, AGPL-3.0 License
"""PKD term: Pearson-correlation feature distillation on every neck level (Cao et al., NeurIPS 2022, arXiv:2207.02039).

The loss ignores each channel's scale and offset, so the adapter only maps widths: a bias-free 1x1 conv where they
differ, else identity.
"""

from __future__ import annotations

import torch
from torch import nn

from yolokd.adapters import per_level
from yolokd.losses import functional as kdf
from yolokd.losses import register
from yolokd.losses.base import DistillInputs, Probe, Term

__all__ = ["PKD"]


@register
class PKD(Term):
    """Sum over neck levels of ``pkd(adapter(student), teacher)``.

    Examples:
        >>> probe = Probe(student_channels=[16, 64], teacher_channels=[32, 64], strides=[8, 16])
        >>> [type(a).__name__ for a in PKD().make_adapters(probe)]
        ['Conv2d', 'Identity']
    """

    type = "pkd"
    reads_teacher_head = False  # neck features only: the teacher stops at its neck

    def make_adapters(self, probe: Probe) -> nn.Module:
        """One adapter per neck level: a 1x1 conv (no bias) where the widths differ, else the identity."""
        return per_level(probe.student_channels, probe.teacher_channels, bias=False, identity_if_equal=True)

    def forward(self, inputs: DistillInputs, adapters: nn.Module | None) -> torch.Tensor:
        """Return the unweighted PKD loss summed over levels."""
        return sum(kdf.pkd(a(s), t) for a, s, t in zip(adapters, inputs.student.feats, inputs.teacher.feats))
