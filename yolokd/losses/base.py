# yolokd, AGPL-3.0 License
"""What every distillation term receives (`DistillInputs`) and the `Term` base class."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import torch
from torch import nn

from yolokd.schedules import Progress
from yolokd.targets import Assigned, GroundTruth, ground_truth


@dataclass
class Probe:
    """Shapes measured by one dummy forward of teacher and student, used to build adapters.

    Attributes:
        student_channels (list[int]): Channels of each student neck level (inputs of the Detect head).
        teacher_channels (list[int]): Channels of each teacher neck level.
        strides (list[int]): Stride of each level (identical for teacher and student).
        student_stage_channels (dict): Output channels of each tapped student head stage, keyed like
            `DistillInputs.student_stages` (``(branch, level, stage)``).
        teacher_stage_channels (dict): The same for the teacher.
    """

    student_channels: list[int]
    teacher_channels: list[int]
    strides: list[int]
    student_stage_channels: dict[tuple, int] = field(default_factory=dict)
    teacher_stage_channels: dict[tuple, int] = field(default_factory=dict)


@dataclass
class DistillInputs:
    """Everything a term may read at one training step; terms never hold teacher modules themselves.

    Attributes:
        student_feats (list[torch.Tensor]): Student neck features, one (N, Cs, H, W) tensor per level.
        teacher_feats (list[torch.Tensor]): Teacher neck features, one (N, Ct, H, W) tensor per level (no grad).
        student_preds (dict): Student head training outputs of the one-to-many branch: ``boxes`` (N, 4*reg_max, A),
            ``scores`` (N, nc, A) logits, ``feats``.
        teacher_preds (dict): Teacher head outputs in the same format (no grad).
        batch (dict): The preprocessed training batch (``img``, ``cls``, ``bboxes``, ``batch_idx``...).
        progress (Progress): Training progress, for terms whose behaviour depends on it.
        student_head (nn.Module | None): The student's Detect head (read at call time, never stored by a term).
        teacher_head (nn.Module | None): The teacher's Detect head (frozen; a term may run its layers, e.g.
            CrossKD, so that gradients flow through it to the student).
        student_stages (dict): Outputs of the head stages the terms asked for (`Term.taps`), keyed
            ``(branch, level, stage)``, e.g. ``("cv3", 0, 1)``; with grad.
        teacher_stages (dict): The teacher's outputs at the same keys (no grad).
        assigned (Assigned | None): The student's TAL assignment, when a term sets ``needs_targets``.
        cache (dict): Per-step memo shared by the terms (see `memo`), e.g. the ground truth and masks that several
            terms derive from the same batch.
    """

    student_feats: list[torch.Tensor]
    teacher_feats: list[torch.Tensor]
    student_preds: dict[str, Any]
    teacher_preds: dict[str, Any]
    batch: dict[str, Any]
    progress: Progress = field(default_factory=Progress)
    student_head: nn.Module | None = None
    teacher_head: nn.Module | None = None
    student_stages: dict[tuple, torch.Tensor] = field(default_factory=dict)
    teacher_stages: dict[tuple, torch.Tensor] = field(default_factory=dict)
    assigned: Assigned | None = None
    cache: dict[str, Any] = field(default_factory=dict)

    def memo(self, key: str, make: Callable[[], Any]) -> Any:
        """Return ``cache[key]``, computing it with ``make()`` the first time in this step.

        Examples:
            >>> calls = []
            >>> inputs = DistillInputs([], [], {}, {}, {})
            >>> [inputs.memo("k", lambda: calls.append(1) or 7) for _ in range(2)], len(calls)
            ([7, 7], 1)
        """
        if key not in self.cache:
            self.cache[key] = make()
        return self.cache[key]

    def ground_truth(self) -> GroundTruth:
        """The batch's padded ground truth in pixels (`yolokd.targets.ground_truth`), computed once per step."""
        return self.memo("ground_truth", lambda: ground_truth(self.batch, tuple(self.batch["img"].shape[-2:])))


class Term(nn.Module):
    """One distillation loss term: holds hyper-parameters, reads `DistillInputs`, returns an unweighted scalar.

    Subclasses set ``type`` (the registry key), take their hyper-parameters as keyword arguments with defaults (the
    yaml ``params`` are validated against that signature), may build trainable adapters in `make_adapters` (the
    distillation model stores them under its ``projector``, never inside the term), and implement `forward`.
    A term may also fill ``self.stats`` with floats (e.g. gate ratios) that are logged every epoch.
    """

    type: ClassVar[str] = ""
    needs_targets: ClassVar[bool] = False  # True: the model computes the TAL assignment (``inputs.assigned``)

    def __init__(self) -> None:
        """Initialise an empty statistics dict."""
        super().__init__()
        self.stats: dict[str, float] = {}

    def taps(self) -> list[tuple[str, int]]:
        """Head stages whose outputs this term reads: ``(branch attribute, stage index)``, e.g. ``("cv3", 1)``.

        The model taps them on every level of both heads and passes them as ``student_stages``/``teacher_stages``.
        """
        return []

    def make_adapters(self, probe: Probe) -> nn.Module | None:
        """Return this term's trainable adapters for the measured shapes, or None if it needs none."""
        return None

    def forward(self, inputs: DistillInputs, adapters: nn.Module | None) -> torch.Tensor:
        """Return the unweighted loss as a 0-dim float32 tensor."""
        raise NotImplementedError
