# yolokd, AGPL-3.0 License
"""Student -> teacher channel adapters, built from probed shapes; the distillation model owns them (``projector``)."""

from __future__ import annotations

from torch import nn


def conv1x1(c_in: int, c_out: int, bias: bool = True) -> nn.Conv2d:
    """A 1x1 convolution from ``c_in`` student to ``c_out`` teacher channels (Chen et al., NeurIPS 2017)."""
    return nn.Conv2d(c_in, c_out, kernel_size=1, stride=1, padding=0, bias=bias)


def per_level(
    student_channels: list[int], teacher_channels: list[int], bias: bool = True, identity_if_equal: bool = False
) -> nn.ModuleList:
    """One `conv1x1` adapter per level (``nn.Identity`` at equal widths with ``identity_if_equal``).

    Examples:
        >>> per_level([8, 16], [8, 32], bias=False, identity_if_equal=True)
        ModuleList(
          (0): Identity()
          (1): Conv2d(16, 32, kernel_size=(1, 1), stride=(1, 1), bias=False)
        )
    """
    if len(student_channels) != len(teacher_channels):
        raise ValueError(f"{len(student_channels)} student levels but {len(teacher_channels)} teacher levels")
    return nn.ModuleList(
        nn.Identity() if identity_if_equal and cs == ct else conv1x1(cs, ct, bias=bias)
        for cs, ct in zip(student_channels, teacher_channels)
    )
