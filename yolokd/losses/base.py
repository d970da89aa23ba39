# yolokd, AGPL-3.0 License
"""What every distillation term receives (`DistillInputs`) and the `Term` base class."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from yolokd.schedules import Progress


@dataclass
class Probe:
    """Shapes measured by one dummy forward of teacher and student, used to build adapters.

    Attributes:
        student_channels (list[int]): Channels of each student neck level (inputs of the Detect head).
        teacher_channels (list[int]): Channels of each teacher neck level.
        strides (list[int]): Stride of each level (identical for teacher and student).
    """

    student_channels: list[int]
    teacher_channels: list[int]
    strides: list[int]


@dataclass
class DistillInputs:
    """Everything a term may read at one training step; terms never hold teacher modules themselves.

    Attributes:
        student_feats (list[torch.Tensor]): Student neck features, one (N, Cs, H, W) tensor per level.
        teacher_feats (list[torch.Tensor]): Teacher neck features, one (N, Ct, H, W) tensor per level (no grad).
        student_preds (dict): Student head training outputs (``boxes``, ``scores``, ``feats``; one-to-many branch).
        teacher_preds (dict): Teacher head outputs in the same format (no grad).
        batch (dict): The preprocessed training batch (``img``, ``cls``, ``bboxes``, ``batch_idx``...).
        progress (Progress): Training progress, for terms whose behaviour depends on it.
    """

    student_feats: list[torch.Tensor]
    teacher_feats: list[torch.Tensor]
    student_preds: dict[str, Any]
    teacher_preds: dict[str, Any]
    batch: dict[str, Any]
    progress: Progress = field(default_factory=Progress)


class Term(nn.Module):
    """One distillation loss term: holds hyper-parameters, reads `DistillInputs`, returns an unweighted scalar.

    Subclasses set ``type`` (the registry key), take their hyper-parameters as keyword arguments with defaults (the
    yaml ``params`` are validated against that signature), may build trainable adapters in `make_adapters` (the
    distillation model stores them under its ``projector``, never inside the term), and implement `forward`.
    A term may also fill ``self.stats`` with floats (e.g. gate ratios) that are logged every epoch.
    """

    type: ClassVar[str] = ""

    def __init__(self) -> None:
        """Initialise an empty statistics dict."""
        super().__init__()
        self.stats: dict[str, float] = {}

    def make_adapters(self, probe: Probe) -> nn.Module | None:
        """Return this term's trainable adapters for the measured shapes, or None if it needs none."""
        return None

    def forward(self, inputs: DistillInputs, adapters: nn.Module | None) -> torch.Tensor:
        """Return the unweighted loss as a 0-dim float32 tensor."""
        raise NotImplementedError
