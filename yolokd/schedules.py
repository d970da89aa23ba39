# yolokd, AGPL-3.0 License
"""Weight schedules: pure functions of training progress returning a multiplier in [0, 1].

A term's effective weight at a step is ``weight x distill_weight x schedule(progress)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Progress:
    """Where training is.

    Attributes:
        epoch (int): Current epoch, 0-based.
        epochs (int): Total number of epochs of the run.
        epoch_fraction (float): Fraction of the current epoch already done, in [0, 1).
        close_mosaic (int): Number of final epochs trained without mosaic (Ultralytics' ``close_mosaic``).

    Examples:
        >>> Progress(epoch=1, epochs=4, epoch_fraction=0.5).fraction
        0.375
    """

    epoch: int = 0
    epochs: int = 1
    epoch_fraction: float = 0.0
    close_mosaic: int = 0

    @property
    def fraction(self) -> float:
        """Fraction of the whole run done, clipped to [0, 1]."""
        return min(max((self.epoch + self.epoch_fraction) / max(self.epochs, 1), 0.0), 1.0)


def constant(p: Progress) -> float:
    """Always 1."""
    return 1.0


def linear(p: Progress) -> float:
    """Linear decay from 1 at the start to 0 at the end of training: ``1 - fraction``.

    Examples:
        >>> linear(Progress(epoch=1, epochs=4))
        0.75
    """
    return 1.0 - p.fraction


def cosine(p: Progress) -> float:
    """Cosine decay from 1 to 0 over training: ``(1 + cos(pi * fraction)) / 2``.

    Examples:
        >>> round(cosine(Progress(epoch=2, epochs=4)), 6)
        0.5
    """
    return 0.5 * (1.0 + math.cos(math.pi * p.fraction))


def stop_at_close_mosaic(p: Progress) -> float:
    """1 while mosaic augmentation is on, 0 in the last ``close_mosaic`` epochs (the RTMDet recipe).

    Examples:
        >>> stop_at_close_mosaic(Progress(epoch=7, epochs=10, close_mosaic=3))
        0.0
    """
    return 0.0 if p.close_mosaic and p.epoch >= p.epochs - p.close_mosaic else 1.0


SCHEDULES: dict[str, Callable[[Progress], float]] = {
    "constant": constant,
    "linear": linear,
    "cosine": cosine,
    "stop_at_close_mosaic": stop_at_close_mosaic,
}


def catchup_factor(student: float, teacher: float, margin: float, previous: float = 1.0) -> float:
    r"""Distillation's multiplier once the student nears the teacher: fades from 1 to 0, never comes back.

    .. math::

        f = \min\left(f_{\text{prev}}, \operatorname{clip}\left(\frac{T - S}{\text{margin} \cdot T}, 0, 1\right)\right)

    with :math:`S`, :math:`T` the student's and the teacher's validation metric. ``margin = 0`` stops at ``S >= T``;
    a teacher score of 0 (not measured) leaves ``previous``.

    Args:
        student (float): The student's validation metric this epoch (e.g. mAP50-95).
        teacher (float): The teacher's, measured once before training on the same split.
        margin (float): The fraction of the teacher's metric over which distillation fades out.
        previous (float): The factor so far.

    Returns:
        (float): The factor for the next epoch, in ``[0, previous]``.

    Examples:
        >>> catchup_factor(0.30, 0.50, 0.1), round(catchup_factor(0.475, 0.50, 0.1), 6), catchup_factor(0.52, 0.50, 0.1)
        (1.0, 0.5, 0.0)
    """
    if teacher <= 0:
        return previous
    if margin <= 0:
        f = 0.0 if student >= teacher else 1.0
    else:
        f = min(max((teacher - student) / (margin * teacher), 0.0), 1.0)
    return min(previous, f)


def outpaces(student: float, first: float, teacher: float, epoch: int, epochs: int, pace: float) -> bool:
    r"""Whether the student is on course to reach the teacher within the first ``pace`` of its run.

    .. math::

        \frac{S - S_1}{T - S_1} \ge \frac{e - 1}{\text{pace} \cdot E}

    after epoch :math:`e \ge 2` of :math:`E`, with :math:`S_1` the student's first score. Never true for ``pace = 0``,
    an unmeasured teacher (``T <= S_1``) or a student that starts at ``pace x T`` or more (pretrained).

    Args:
        student (float): The student's validation metric after this epoch.
        first (float): Its metric after its first epoch.
        teacher (float): The teacher's, measured once before training on the same split.
        epoch (int): Epochs done (1-based).
        epochs (int): Epochs of the run.
        pace (float): The fraction of the run within which reaching the teacher stops distillation.

    Returns:
        (bool): True when the student is ahead of the line.

    Examples:
        >>> outpaces(0.044, 0.001, 0.225, 3, 60, 0.25), outpaces(0.163, 0.0, 0.645, 7, 60, 0.25)
        (True, False)
    """
    if pace <= 0 or epoch < 2 or teacher <= first or first >= pace * teacher:
        return False
    return (student - first) / (teacher - first) >= (epoch - 1) / (pace * epochs)
