# yolokd, AGPL-3.0 License
"""CWD term: channel-wise distillation on every neck level (Shu et al., ICCV 2021)."""

from __future__ import annotations

import torch
from torch import nn

from yolokd.adapters import per_level
from yolokd.losses import functional as kdf
from yolokd.losses import register
from yolokd.losses.base import DistillInputs, Probe, Term


@register
class CWD(Term):
    """Sum over neck levels of ``cwd(adapter(student), teacher, tau)``.

    Args:
        tau (float): Softmax temperature over the spatial positions of each channel.
        standardise (bool): Standardise both maps per channel first (`kdf.standardise`, as PKD does), so that the
            softmax's sharpness no longer follows the teacher's feature magnitudes.
    """

    type = "cwd"
    reads_teacher_head = False  # neck features only: the teacher stops at its neck

    def __init__(self, tau: float = 1.0, standardise: bool = False) -> None:
        """Store the temperature and whether to standardise."""
        super().__init__()
        if tau <= 0:
            raise ValueError(f"cwd: tau must be > 0, got {tau}")
        self.tau = float(tau)
        self.standardise = bool(standardise)

    def extra_repr(self) -> str:
        """Show the hyper-parameters."""
        return f"tau={self.tau}, standardise={self.standardise}"

    def make_adapters(self, probe: Probe) -> nn.Module:
        """One 1x1 adapter per neck level, student -> teacher channels."""
        return per_level(probe.student_channels, probe.teacher_channels)

    def forward(self, inputs: DistillInputs, adapters: nn.Module | None) -> torch.Tensor:
        """Return the unweighted CWD loss summed over levels."""
        return sum(kdf.cwd(s, t, self.tau) for s, t in inputs.adapted_pairs(adapters, self.standardise))
