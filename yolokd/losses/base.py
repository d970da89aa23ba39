# yolokd, AGPL-3.0 License
"""What every distillation term receives (`DistillInputs`) and the `Term` base class."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import torch
from torch import nn

from yolokd.losses.functional.boxes import log_quality as _log_quality
from yolokd.losses.functional.feature import standardise as _standardise
from yolokd.schedules import Progress
from yolokd.targets import Assigned, GroundTruth, ground_truth


@dataclass
class Probe:
    """Shapes measured by one dummy forward of teacher and student, used to build adapters.

    Attributes:
        student_channels (list[int]): Channels of each student neck level (inputs of the Detect head).
        teacher_channels (list[int]): Channels of each teacher neck level.
        strides (list[int]): Stride of each level (identical for teacher and student).
        student_reg_max (int): DFL bins per box side of the student's head (1: plain distances; 0: not measured).
        teacher_reg_max (int): The same for the teacher.
        student_stage_channels (dict): Output channels of each tapped student head stage, keyed like `Side.stages`.
        teacher_stage_channels (dict): The same for the teacher.
    """

    student_channels: list[int]
    teacher_channels: list[int]
    strides: list[int]
    student_reg_max: int = 0
    teacher_reg_max: int = 0
    student_stage_channels: dict[tuple, int] = field(default_factory=dict)
    teacher_stage_channels: dict[tuple, int] = field(default_factory=dict)


@dataclass
class Side:
    """One model's side of a training step, the student's or the teacher's: what its neck and Detect head gave.

    Attributes:
        feats (list[torch.Tensor]): Neck features, one (N, C, H, W) tensor per level.
        preds (dict): Head training outputs (``boxes``, ``scores``, task outputs), read through `yolokd.head`.
        stages (dict): Outputs of the head stages the terms asked for (`Term.taps`), keyed ``(branch, level, stage)``.
        head (nn.Module | None): The Detect head (read at call time, never stored by a term).
        reg_max (int): DFL bins per box side of the head (0 when not given).
    """

    feats: list[torch.Tensor] = field(default_factory=list)
    preds: dict[str, Any] = field(default_factory=dict)
    stages: dict[tuple, torch.Tensor] = field(default_factory=dict)
    head: nn.Module | None = None
    reg_max: int = 0


def _alias(path: str) -> property:
    """A read-write property for the attribute at the dotted ``path`` of the instance (``"student.preds"``)."""
    *owners, attr = path.split(".")

    def owner(obj: Any) -> Any:
        for name in owners:
            obj = getattr(obj, name)
        return obj

    def get(self: Any) -> Any:
        return getattr(owner(self), attr)

    def set_(self: Any, value: Any) -> None:
        setattr(owner(self), attr, value)

    return property(get, set_, doc=f"The same as ``{path}``.")


@dataclass
class DistillInputs:
    """Everything a term may read at one training step; terms never hold teacher modules themselves.

    Attributes:
        student (Side): The student's side, with gradients.
        teacher (Side): The teacher's, in the same format, without gradients.
        batch (dict): The preprocessed training batch (``img``, ``cls``, ``bboxes``, ``batch_idx``...).
        progress (Progress): Training progress.
        assigned (Assigned | None): The student's TAL assignment, when a term sets ``needs_targets``.
        cache (dict): Per-step memo shared by the terms (see `memo`).
        strides (list[int]): Stride of each neck level (read through `level_strides`).
        classes (torch.Tensor | None): (nc,) the teacher class feeding each student class when the two differ
            (``teacher.preds["scores"]`` is already reduced; see `teacher_class_logits`); None when they match.

    Flat names such as ``student_feats`` or ``teacher_reg_max`` (and ``teacher_classes``) alias these attributes.

    Examples:
        >>> inputs = DistillInputs(Side(), Side(reg_max=16), {})
        >>> inputs.student_preds = {"scores": None}
        >>> inputs.student.preds, inputs.teacher_reg_max
        ({'scores': None}, 16)
    """

    student: Side
    teacher: Side
    batch: dict[str, Any]
    progress: Progress = field(default_factory=Progress)
    assigned: Assigned | None = None
    cache: dict[str, Any] = field(default_factory=dict)
    strides: list[int] = field(default_factory=list)
    classes: torch.Tensor | None = None

    student_feats = _alias("student.feats")
    student_preds = _alias("student.preds")
    student_stages = _alias("student.stages")
    student_head = _alias("student.head")
    student_reg_max = _alias("student.reg_max")
    teacher_feats = _alias("teacher.feats")
    teacher_preds = _alias("teacher.preds")
    teacher_stages = _alias("teacher.stages")
    teacher_head = _alias("teacher.head")
    teacher_reg_max = _alias("teacher.reg_max")
    teacher_classes = _alias("classes")

    def level_strides(self) -> list[float]:
        """The stride of each neck level as host numbers, checked against the neck levels."""
        if len(self.strides) != len(self.teacher.feats):
            raise ValueError(
                f"DistillInputs.strides {self.strides} must give one stride per neck level "
                f"({len(self.teacher.feats)}); the model passes its probe's"
            )
        return [float(s) for s in self.strides]

    def adapted_pairs(self, adapters: nn.Module, standardise: bool = False) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per neck level, ``(adapter(student), teacher)``; with ``standardise`` both standardised per channel."""
        pairs = [(a(s), t) for a, s, t in zip(adapters, self.student.feats, self.teacher.feats)]
        return [(_standardise(s), _standardise(t)) for s, t in pairs] if standardise else pairs

    def reg_max(self) -> tuple[int, int]:
        """The student's and the teacher's DFL bins per box side."""
        if self.student.reg_max < 1 or self.teacher.reg_max < 1:
            raise ValueError(
                f"DistillInputs.student.reg_max/teacher.reg_max must be >= 1, got {self.student.reg_max}, "
                f"{self.teacher.reg_max}; the model passes its probe's"
            )
        return self.student.reg_max, self.teacher.reg_max

    def memo(self, key: str, make: Callable[[], Any]) -> Any:
        """Return ``cache[key]``, computing it with ``make()`` the first time in this step."""
        if key not in self.cache:
            self.cache[key] = make()
        return self.cache[key]

    def teacher_class_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Reduce (N, teacher nc, ...) class outputs of the teacher's layers to the student's classes (dim 1)."""
        return x if self.classes is None else x.index_select(1, self.classes.to(x.device))

    def log_qualities(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The student's and the teacher's TAL log quality per anchor, ``(N, A)`` each, computed once per step.

        `functional.log_quality` of each model's head output with its own ``reg_max``; needs ``assigned``.
        """

        def make() -> tuple[torch.Tensor, torch.Tensor]:
            (r_s, r_t), s, t = self.reg_max(), self.student.preds, self.teacher.preds
            return (
                _log_quality(s["scores"], s["boxes"], r_s, self.assigned),
                _log_quality(t["scores"], t["boxes"], r_t, self.assigned),
            )

        return self.memo("log_qualities", make)

    def ground_truth(self) -> GroundTruth:
        """The batch's padded ground truth in pixels (`yolokd.targets.ground_truth`), computed once per step."""
        return self.memo("ground_truth", lambda: ground_truth(self.batch, tuple(self.batch["img"].shape[-2:])))


class Term(nn.Module):
    """One distillation loss term: holds hyper-parameters, reads `DistillInputs`, returns an unweighted scalar.

    Subclasses set ``type`` (the registry key; ``aliases``: its old names), take their hyper-parameters as keyword
    arguments with defaults, may build adapters in `make_adapters` (stored by the model under ``projector``), and
    implement `forward`. Statistics are recorded with `record` and read as epoch means through `stats`.
    """

    type: ClassVar[str] = ""
    # Old type names that keep working in method yamls (the loss item of a term whose yaml says ``type: <alias>``
    # keeps its old name ``<alias>_loss``)
    aliases: ClassVar[tuple[str, ...]] = ()
    needs_targets: ClassVar[bool] = False  # True: the model computes the TAL assignment (``inputs.assigned``)
    # True: the term reads the teacher's head outputs (``teacher.preds`` boxes/scores) or head stages. When no term of
    # a stack does, the teacher's forward stops at its Detect inputs (the neck) and ``teacher.preds`` holds only feats.
    reads_teacher_head: ClassVar[bool] = True
    # The Ultralytics tasks whose models the term can read (a mask term needs a segment model, ...).
    tasks: ClassVar[tuple[str, ...]] = ("detect", "segment", "pose", "obb")

    def __init__(self) -> None:
        """Initialise empty statistics."""
        super().__init__()
        self._stat_sums: dict[str, tuple[torch.Tensor | float, torch.Tensor | float]] = {}

    def record(self, name: str, value: torch.Tensor | float, count: torch.Tensor | float = 1.0) -> None:
        """Add ``value`` to the statistic's running sum and ``count`` to its running count (detached, on device).

        `stats` reports ``sum of values / sum of counts``: the mean over steps with ``count = 1``, an open fraction
        with ``value`` = open gates and ``count`` = candidates.

        Examples:
            >>> term = Term()
            >>> term.record("open", torch.tensor(3), torch.tensor(4))  # 3 of 4 candidates open
            >>> term.record("open", torch.tensor(5), torch.tensor(8))
            >>> term.stats  # (3 + 5) / (4 + 8)
            {'open': 0.6666666666666666}
        """
        value = value.detach().float() if isinstance(value, torch.Tensor) else float(value)
        count = count.detach().float() if isinstance(count, torch.Tensor) else float(count)
        total, n = self._stat_sums.get(name, (0.0, 0.0))
        self._stat_sums[name] = (total + value, n + count)

    @property
    def stats(self) -> dict[str, float]:
        """Each recorded statistic's ``sum / count`` since the last `reset_stats` (a host sync: read once per epoch)."""
        out = {}
        for name, (total, n) in self._stat_sums.items():
            n = float(n)
            out[name] = float(total) / n if n > 0 else 0.0
        return out

    def reset_stats(self) -> None:
        """Forget the recorded statistics (start a new epoch's means)."""
        self._stat_sums.clear()

    def assigned(self, inputs: DistillInputs) -> Assigned:
        """``inputs.assigned`` (computed when a term sets ``needs_targets``), or the error a term without it raises."""
        if inputs.assigned is None:
            raise ValueError(
                f"{self.type or type(self).__name__}: needs the TAL assignment (inputs.assigned), which is None; the "
                f"model computes it when a term sets needs_targets = True"
            )
        return inputs.assigned

    def taps(self) -> list[tuple[str, int]]:
        """Head stages this term reads on every level of both heads: ``(branch attribute, stage index)``."""
        return []

    def make_adapters(self, probe: Probe) -> nn.Module | None:
        """Return this term's trainable adapters for the measured shapes, or None if it needs none."""
        return None

    def forward(self, inputs: DistillInputs, adapters: nn.Module | None) -> torch.Tensor:
        """Return the unweighted loss as a 0-dim float32 tensor."""
        raise NotImplementedError
