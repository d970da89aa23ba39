# yolokd, AGPL-3.0 License
"""Student -> teacher channel adapters, built from probed shapes; the distillation model owns them (``projector``)."""

from __future__ import annotations

from torch import nn


def conv1x1(c_in: int, c_out: int, bias: bool = True) -> nn.Conv2d:
    """A 1x1 convolution mapping ``c_in`` student channels to ``c_out`` teacher channels.

    It is kept even when the channel counts match: Chen et al. (2017) found the adaptation layer essential, and the
    Ultralytics projector does the same.

    Args:
        c_in (int): Student channels.
        c_out (int): Teacher channels.
        bias (bool): Add a bias; pointless (it would never train) when a per-channel normalisation follows.

    Returns:
        (nn.Conv2d): The adapter.

    Examples:
        >>> conv1x1(16, 64).weight.shape
        torch.Size([64, 16, 1, 1])
    """
    return nn.Conv2d(c_in, c_out, kernel_size=1, stride=1, padding=0, bias=bias)


def per_level(
    student_channels: list[int], teacher_channels: list[int], bias: bool = True, identity_if_equal: bool = False
) -> nn.ModuleList:
    """One `conv1x1` adapter per level (neck levels, or the levels of a head stage): every term builds its own here.

    Args:
        student_channels (list[int]): Student channels per level.
        teacher_channels (list[int]): Teacher channels per level, same length.
        bias (bool): Give the convolutions a bias (see `conv1x1`).
        identity_if_equal (bool): An ``nn.Identity`` where the widths match, instead of a convolution.

    Returns:
        (nn.ModuleList): Adapters, level order.

    Examples:
        >>> [a.out_channels for a in per_level([16, 32], [64, 128])]
        [64, 128]
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
