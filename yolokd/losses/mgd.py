# yolokd, AGPL-3.0 License
"""MGD term: masked generative distillation on every neck level (Yang et al., ECCV 2022, arXiv:2205.01529).

Per level: student feature -> align (1x1 conv where the widths differ) -> x `mgd_mask` -> generator (conv3x3, ReLU,
conv3x3) -> ``mgd(generated, teacher)``. The align convs and generators are the term's adapters (kept under the
model's ``projector``, never in the student's checkpoint). Masks come from the device's global generator.
"""

from __future__ import annotations

import torch
from torch import nn

from yolokd.adapters import conv1x1
from yolokd.losses import functional as kdf
from yolokd.losses import register
from yolokd.losses.base import DistillInputs, Probe, Term

__all__ = ["MGD", "MGDLevel"]


GENERATORS = ("teacher", "student")  # the width the generator's hidden convolution runs at


class MGDLevel(nn.Module):
    """One level's trainable part: ``align`` (1x1 conv with bias, or identity) and ``generator`` (conv3x3-ReLU-conv3x3).

    Args:
        c_s (int): Student channels.
        c_t (int): Teacher channels.
        width (str): ``teacher`` (the paper's: align to ``c_t``, both convs at ``c_t``) or ``student`` (no align;
            conv3x3 ``c_s -> c_s``, ReLU, conv3x3 ``c_s -> c_t``).

    Examples:
        >>> m = MGDLevel(16, 32)
        >>> m(torch.zeros(2, 16, 4, 4), torch.ones(2, 1, 4, 4)).shape
        torch.Size([2, 32, 4, 4])
    """

    def __init__(self, c_s: int, c_t: int, width: str = "teacher") -> None:
        """Build the align conv (where the widths differ, paper's generator only) and the generator."""
        super().__init__()
        if width not in GENERATORS:
            raise ValueError(f"mgd: generator must be one of {list(GENERATORS)}, got {width!r}")
        hidden = c_t if width == "teacher" else c_s
        self.align = nn.Identity() if hidden == c_s else conv1x1(c_s, c_t, bias=True)
        self.generator = nn.Sequential(
            nn.Conv2d(hidden, hidden, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, c_t, kernel_size=3, padding=1),
        )

    def forward(self, s: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """Generate the teacher feature from the aligned student feature ``s`` masked by ``keep`` (N, 1, H, W)."""
        return self.generator(self.align(s) * keep)


@register
class MGD(Term):
    """Sum over neck levels of ``mgd(generator(align(student) x mask), teacher)``, per element by default.

    Args:
        ratio (float): Masked fraction of each level's positions (the official 0.65 for one-stage detectors).
        per_element (bool): Divide by the teacher-feature elements per image, ``sum_l C_l H_l W_l`` (the yaml weight
            is then alpha x that count at the official sizes); False: the official sum (weight = alpha).
        generator (str): ``teacher`` (the paper's generator width) or ``student`` (about 2.7x fewer multiply-adds for a
            student half as wide).
    """

    type = "mgd"
    reads_teacher_head = False  # neck features only: the teacher stops at its neck

    def __init__(self, ratio: float = 0.65, per_element: bool = True, generator: str = "teacher") -> None:
        """Validate and store the masked fraction, the normalisation and the generator's width."""
        super().__init__()
        if isinstance(ratio, bool) or not 0.0 <= ratio < 1.0:
            raise ValueError(f"mgd: ratio (the masked fraction) must be in [0, 1), got {ratio!r}")
        if generator not in GENERATORS:
            raise ValueError(f"mgd: generator must be one of {list(GENERATORS)}, got {generator!r}")
        self.ratio = float(ratio)
        self.per_element = bool(per_element)
        self.generator = generator

    def extra_repr(self) -> str:
        """Show the hyper-parameters."""
        return f"ratio={self.ratio}, per_element={self.per_element}, generator={self.generator}"

    def make_adapters(self, probe: Probe) -> nn.Module:
        """One `MGDLevel` (align conv where needed, and generator at the chosen width) per neck level."""
        if len(probe.student_channels) != len(probe.teacher_channels):
            raise ValueError(
                f"mgd: {len(probe.student_channels)} student levels but {len(probe.teacher_channels)} teacher levels"
            )
        pairs = zip(probe.student_channels, probe.teacher_channels)
        return nn.ModuleList(MGDLevel(cs, ct, self.generator) for cs, ct in pairs)

    def forward(self, inputs: DistillInputs, adapters: nn.Module | None) -> torch.Tensor:
        """Return the unweighted MGD loss summed over levels (divided by the elements per image if ``per_element``)."""
        total, elements = 0.0, 0
        for level, s, t in zip(adapters, inputs.student.feats, inputs.teacher.feats):
            n, _, h, w = s.shape
            u = torch.rand(n, 1, h, w, device=s.device)  # fresh per level and step, the device's global generator
            total = total + kdf.mgd(level(s, kdf.mgd_mask(u, self.ratio)), t)
            elements += t[0].numel()
        return total / max(elements, 1) if self.per_element else total
