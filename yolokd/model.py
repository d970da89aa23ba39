# yolokd, AGPL-3.0 License
"""`YOLOKD`: an Ultralytics `YOLO` whose training distils from a teacher (the KD trainer of the model's task)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ultralytics import YOLO

from yolokd.config import KDError, build_config
from yolokd.trainer import TRAINERS


class YOLOKD(YOLO):
    """A `YOLO` model that trains with knowledge distillation; ``val``, ``predict`` and ``export`` are YOLO's own.

    The task (detect, segment, pose, obb) comes from the model as Ultralytics infers it, or from ``task=``; training
    uses that task's KD trainer (`yolokd.trainer.TRAINERS`).

    Examples:
        >>> from yolokd import YOLOKD
        >>> model = YOLOKD("yolov8n.yaml", teacher="runs/detect/teacher/weights/best.pt", method="cwd")
        >>> model.train(data="data.yaml", epochs=10, imgsz=320)  # doctest: +SKIP
    """

    def __init__(
        self,
        model: str | Path = "yolov8n.yaml",
        teacher: str | Path | None = None,
        method: str | None = None,
        task: str | None = None,
        verbose: bool = False,
        **kd: Any,
    ):
        """Load or build the student as `YOLO` does and remember the distillation keys for `train`.

        Args:
            model (str | Path): Student: a ``.yaml`` to train from scratch, or a ``.pt`` / model name to fine-tune.
            teacher (str | Path, optional): Teacher checkpoint (may also be given to `train`).
            method (str, optional): Distillation method: a built-in name, names joined by '+', or a method yaml
                (default ``cwd``).
            task (str, optional): Ultralytics task, as in `YOLO` (``detect``, ``segment``, ``pose``, ``obb``); inferred
                from the model when omitted.
            verbose (bool): Print model information on load.
            **kd (Any): Further KD keys (``distill_weight``, ``balance``, ``teacher_val``, ``class_map``).
        """
        try:
            super().__init__(model=model, task=task, verbose=verbose)
        except ConnectionError as e:
            raise KDError(
                f"student '{model}' is not a local file and could not be downloaded; pass a local .pt, "
                f"or a .yaml such as yolov8n.yaml to train from scratch"
            ) from e
        except Exception as e:
            if not (Path(str(model)).suffix == ".pt" and Path(str(model)).is_file()):
                raise
            raise KDError(
                f"student checkpoint '{model}' is not a readable Ultralytics checkpoint ({type(e).__name__}), e.g. "
                f"truncated by a crash; pass an intact .pt (for a run: its best.pt or an epochN.pt) or a model .yaml"
            ) from e
        self.kd_overrides = {"teacher": None if teacher is None else str(teacher), "method": method, **kd}
        build_config({**self.kd_overrides, "teacher": None})  # unknown keys, method: fail now, not after data loading

    @property
    def task_map(self) -> dict[str, dict[str, Any]]:
        """`YOLO`'s task map with the KD trainer of each task that has a Detect head."""
        return {t: {**v, "trainer": TRAINERS[t]} if t in TRAINERS else v for t, v in super().task_map.items()}

    def train(self, trainer=None, **kwargs: Any):
        """Train with distillation; KD keys given here override those given to the constructor.

        Args:
            trainer (type, optional): A KD trainer subclass (`yolokd.trainer.KDTrainerMixin`) to use instead of the
                task's.
            **kwargs (Any): Every ``yolo train`` argument plus the KD keys.

        Returns:
            (DetMetrics | SegmentMetrics | PoseMetrics | OBBMetrics | None): As ``YOLO.train``.
        """
        if self.task not in TRAINERS:
            raise KDError(
                f"yolokd distils models with a Detect head ({', '.join(TRAINERS)}); this student is a '{self.task}' "
                f"model"
            )
        kd = {k: v for k, v in self.kd_overrides.items() if v is not None}
        return super().train(trainer=trainer, **{**kd, **kwargs})
