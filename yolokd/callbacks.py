# yolokd, AGPL-3.0 License
"""Training callbacks: schedule progress, TensorBoard logging, the teacher's validation, a dominating term's warning.

`KDCallbacks` is picklable, so it also carries the run's `KDConfig` to DDP workers.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import torch
import torch.distributed as dist
from ultralytics.cfg import TASK2METRIC
from ultralytics.utils import LOGGER, RANK
from ultralytics.utils.torch_utils import unwrap_model

from yolokd.config import PREFIX, KDConfig
from yolokd.pseudo import UNLABELED_ITEMS
from yolokd.schedules import Progress, catchup_factor, outpaces
from yolokd.taps import clear_neck_stops, detect_head

EVENTS = (
    "on_pretrain_routine_end",
    "on_train_epoch_start",
    "on_train_batch_start",
    "on_train_epoch_end",
    "on_fit_epoch_end",
    "teardown",
)


class _DropTeacherFreezeLines(logging.Filter):
    """Drop Ultralytics' one 'Freezing layer' line per teacher parameter (hundreds); one summary line replaces them."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Keep every record but the per-parameter teacher freeze lines."""
        return "Freezing layer 'teacher_model." not in record.getMessage()


QUIET_TEACHER_FREEZE = _DropTeacherFreezeLines()  # added when the KDModel is built, removed after the setup


def _ultralytics_tensorboard_active() -> bool:
    """True when Ultralytics' own TensorBoard callback is writing this run (then only KD extras are logged here)."""
    try:
        from ultralytics.utils.callbacks import tensorboard

        return tensorboard.WRITER is not None
    except Exception:
        return False


DOMINANCE = 5.0
"""A term whose epoch-mean item exceeds this multiple of the student's own loss items is warned about (once per term).
On the cpu benchmark every method that trained well stayed below 2x (hint's first epoch 1.8x, the built-in 1.1x),
and mgd at its fixed weight, 12x, collapsed its student (BENCHMARKS.md "Cost of a step")."""


def dominant_terms(means: dict[str, float], kd_items: list[str], ratio: float = DOMINANCE) -> list[tuple[str, float]]:
    """The distillation items whose epoch mean exceeds ``ratio`` x the sum of the student's own items.

    Returns ``(item, multiple of the student's loss)`` for each dominating item, in order.

    Examples:
        >>> means = {"box_loss": 2.0, "cls_loss": 3.0, "mgd_loss": 60.0, "cwd_loss": 1.0}
        >>> dominant_terms(means, ["mgd_loss", "cwd_loss"])
        [('mgd_loss', 12.0)]
    """
    own = sum(v for k, v in means.items() if k not in kd_items)
    if own <= 0:
        return []
    return [(k, means[k] / own) for k in kd_items if k in means and means[k] > ratio * own]


class KDCallbacks:
    """Callbacks of a distillation run; picklable, and the carrier of its `KDConfig` to DDP workers.

    Attributes:
        config (KDConfig): The run's distillation configuration.
        teacher_metrics (dict): The teacher's validation metrics, measured once before training (rank 0).
    """

    def __init__(self, config: KDConfig):
        """Hold the configuration; the writer is opened at the start of training."""
        self.config = config
        self.teacher_metrics: dict[str, float] = {}
        self._writer = None
        self._batch = 0
        self._warned: set[str] = set()

    def __getstate__(self) -> dict[str, Any]:
        """Pickle without the open TensorBoard writer."""
        return {**self.__dict__, "_writer": None}

    def attach(self, trainer) -> None:
        """Register the bound methods on ``trainer``."""
        for event in EVENTS:
            trainer.add_callback(event, getattr(self, event))

    def detach(self, trainer) -> None:
        """Remove this instance's bound methods from ``trainer``'s callbacks."""
        for fns in trainer.callbacks.values():
            fns[:] = [fn for fn in fns if getattr(fn, "__self__", None) is not self]

    @staticmethod
    def find(callbacks: dict | None) -> KDCallbacks | None:
        """Return the `KDCallbacks` instance registered in a callbacks dict, if any."""
        for fns in (callbacks or {}).values():
            for fn in fns:
                owner = getattr(fn, "__self__", None)
                if isinstance(owner, KDCallbacks):
                    return owner
        return None

    # ------------------------------------------------------------------ helpers
    def _scalars(self, scalars: dict[str, float], step: int) -> None:
        """Write scalars to TensorBoard (rank 0, when a writer is open)."""
        if self._writer is not None:
            for k, v in scalars.items():
                self._writer.add_scalar(k, float(v), step)

    @staticmethod
    def _kd_model(trainer):
        """The trainer's `KDModel`, unwrapped from DDP."""
        return unwrap_model(trainer.model)

    # ------------------------------------------------------------------ events
    def on_pretrain_routine_end(self, trainer) -> None:
        """Summarise the teacher freeze, open the TensorBoard writer and validate the teacher once (rank 0)."""
        LOGGER.removeFilter(QUIET_TEACHER_FREEZE)
        if RANK not in {-1, 0}:
            return
        n = sum(p.numel() for p in self._kd_model(trainer).teacher_model.parameters())
        LOGGER.info(f"{PREFIX}teacher frozen ({n:,} parameters, eval mode, no gradients)")
        try:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(trainer.save_dir))
            LOGGER.info(f"{PREFIX}TensorBoard: tensorboard --logdir {trainer.save_dir}")
        except Exception as e:  # tensorboard missing or unwritable folder: training goes on
            LOGGER.warning(f"{PREFIX}TensorBoard logging disabled: {e}")
        if self.config.teacher_val:
            self.teacher_metrics = validate_teacher(trainer)
        if self.config.catchup >= 0 and not self.teacher_metrics:
            LOGGER.info(f"{PREFIX}catchup: the teacher's mAP is not measured here, so distillation never fades")
        if self.teacher_metrics:
            LOGGER.info(
                f"{PREFIX}teacher mAP50-95 {self.teacher_metrics.get('metrics/mAP50-95(B)', 0):.4f}, "
                f"mAP50 {self.teacher_metrics.get('metrics/mAP50(B)', 0):.4f} on '{trainer.args.split}'"
            )
            self._scalars({f"teacher/{k.split('/')[-1]}": v for k, v in self.teacher_metrics.items()}, 0)

    def on_train_epoch_start(self, trainer) -> None:
        """Reset the batch counter of the epoch."""
        self._batch = 0

    def on_train_batch_start(self, trainer) -> None:
        """Give the model its training progress (every rank), which drives the weight schedules."""
        nb = max(len(trainer.train_loader), 1)
        self._kd_model(trainer).progress = Progress(
            epoch=trainer.epoch,
            epochs=trainer.epochs,
            epoch_fraction=min(self._batch / nb, 1.0),
            close_mosaic=int(trainer.args.close_mosaic or 0),
        )
        self._batch += 1

    def on_train_epoch_end(self, trainer) -> None:
        """Log losses, learning rates, term weights and the term statistics' epoch means (reset on every rank)."""
        model = self._kd_model(trainer)
        stats = model.term_stats(reset=True)
        if RANK not in {-1, 0}:
            return
        self._warn_dominant(trainer, model.item_names())
        if self._writer is None:
            return
        step = trainer.epoch + 1
        if not _ultralytics_tensorboard_active():
            self._scalars(trainer.label_loss_items(trainer.tloss, prefix="train"), step)
            self._scalars(trainer.lr, step)
        self._scalars({f"kd_weight/{k}": v for k, v in model.term_weights().items()}, step)
        self._scalars({f"kd_stats/{k}": v for k, v in stats.items()}, step)

    def _warn_dominant(self, trainer, kd_items: list[str]) -> None:
        """Warn once per term whose epoch mean exceeds `DOMINANCE` x the student's own loss (`dominant_terms`)."""
        tloss = trainer.tloss
        if not isinstance(tloss, dict):
            return
        means = {k: float(v) for k, v in tloss.items() if k not in UNLABELED_ITEMS}  # not the student's own
        for item, r in dominant_terms(means, kd_items):
            if item in self._warned:
                continue
            self._warned.add(item)
            LOGGER.warning(
                f"{PREFIX}{item} averaged {means[item]:.4g} in epoch {trainer.epoch + 1}, {r:.0f}x the student's own "
                f"loss: the term dominates training and can ruin the student; use automatic weights (balance=0.25) "
                f"or lower its weight (a method yaml, or distill_weight=)"
            )

    def on_fit_epoch_end(self, trainer) -> None:
        """Fade distillation as the student nears the teacher (every rank), then log metrics and ``kd_catchup``."""
        self._catch_up(trainer)
        if RANK not in {-1, 0} or self._writer is None:
            return
        step = trainer.epoch + 1
        if not _ultralytics_tensorboard_active():
            self._scalars(trainer.metrics or {}, step)
        self._scalars({f"teacher/{k.split('/')[-1]}": v for k, v in self.teacher_metrics.items()}, step)
        self._scalars({"kd_catchup": self._kd_model(trainer).catchup}, step)
        self._writer.flush()

    def _catch_up(self, trainer) -> None:
        """Update ``catchup`` from this epoch's validation (`catchup_factor`, `outpaces`), broadcast from rank 0."""
        model, margin = self._kd_model(trainer), self.config.catchup
        if margin < 0:
            return
        factor = model.catchup
        key = TASK2METRIC.get(trainer.args.task, "metrics/mAP50-95(B)")
        teacher, student = self.teacher_metrics.get(key, 0.0), (trainer.metrics or {}).get(key)
        if RANK in {-1, 0} and teacher > 0 and student is not None:
            factor = self._catchup_factor(model, float(student), teacher, key.split("/")[-1], trainer)
        if RANK != -1 and dist.is_available() and dist.is_initialized():
            buf = torch.tensor([factor], dtype=torch.float32, device=trainer.device)
            dist.broadcast(buf, 0)
            factor = float(buf.item())
        model.catchup = factor

    def _catchup_factor(self, model, student: float, teacher: float, name: str, trainer) -> float:
        """The next ``catchup`` factor on rank 0 (the two rules of `_catch_up`), logging a change once."""
        before, epoch, epochs = model.catchup, trainer.epoch + 1, trainer.epochs
        if getattr(model, "catchup_first", None) is None:
            model.catchup_first = student  # the student's first score: the start of the pace line
        pace = self.config.catchup_pace
        if before > 0 and outpaces(student, model.catchup_first, teacher, epoch, epochs, pace):
            LOGGER.info(
                f"{PREFIX}the student's val {name} {student:.4f} after epoch {epoch} of {epochs} is on course to reach "
                f"the teacher's {teacher:.4f} within {pace:.0%} of the run (catchup_pace): a teacher it outgrows so "
                f"early has little to teach it; distillation is off for the rest of the run"
            )
            return 0.0
        factor = catchup_factor(student, teacher, self.config.catchup, before)
        if factor == 0 < before:
            LOGGER.info(
                f"{PREFIX}the student's val {name} {student:.4f} reached the teacher's {teacher:.4f} "
                f"(epoch {epoch}): distillation is off for the rest of the run, which trains as without a teacher"
            )
        elif factor < before == 1.0:
            LOGGER.info(
                f"{PREFIX}the student's val {name} {student:.4f} is within {self.config.catchup:.0%} of the teacher's "
                f"{teacher:.4f} (epoch {epoch}): distillation fades (x{factor:.2f}), to stop at the teacher's score"
            )
        return factor

    def teardown(self, trainer) -> None:
        """Close the writer (and drop the log filter if the setup failed before removing it)."""
        LOGGER.removeFilter(QUIET_TEACHER_FREEZE)
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def validate_teacher(trainer) -> dict[str, float]:
    """Validate the teacher on the trainer's validation loader: its metrics, or {} (failed, or classes mapped)."""
    from ultralytics.models.yolo.detect import DetectionValidator

    if unwrap_model(trainer.model).teacher_classes is not None:
        LOGGER.info(f"{PREFIX}teacher trained on other classes (matched to the data's): its mAP here is not measured")
        return {}
    args = copy.copy(trainer.args)
    args.plots, args.save_json, args.save_txt, args.half = False, False, False, False
    try:  # the validator of the trainer's task (segment, pose, obb...), as Ultralytics built it for the student
        kind = type(getattr(trainer, "validator", None) or DetectionValidator(args=args))
        validator = kind(dataloader=trainer.test_loader, save_dir=trainer.save_dir, args=args)
        teacher = copy.deepcopy(unwrap_model(trainer.model).teacher_model)  # validation fuses its model
        clear_neck_stops(detect_head(teacher))  # a teacher that stops at its neck in training runs in full here
        metrics = validator(model=teacher)
        return {k: float(v) for k, v in metrics.items() if k.startswith("metrics/")}
    except Exception as e:  # the teacher's score is information, never a reason to stop training
        LOGGER.warning(f"{PREFIX}teacher validation failed, continuing without it: {e}")
        return {}
