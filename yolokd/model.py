# yolokd, AGPL-3.0 License
"""`YOLOKD`: an Ultralytics `YOLO` whose training distils from a teacher (the KD trainer of the model's task)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ultralytics import YOLO

from yolokd.config import KDError, build_config, split_kd_args
from yolokd.trainer import TRAINERS, KDTrainerMixin


class YOLOKD(YOLO):
    """A `YOLO` model that trains with knowledge distillation; ``val``, ``predict`` and ``export`` are YOLO's own.

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
            method (str, optional): A built-in method name, names joined by '+', or a method yaml.
            task (str, optional): Ultralytics task, inferred from the model when omitted.
            verbose (bool): Print model information on load.
            **kd (Any): Further KD keys (``distill_weight``, ``balance``, ``class_map``, ``term_weights``...).
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

    def _kd_trainer(self, trainer: type | None = None) -> type:
        """The KD trainer for this student's task (or ``trainer``, which must be one), else a one-line `KDError`."""
        if self.task not in TRAINERS:
            raise KDError(
                f"yolokd distils models with a Detect head ({', '.join(TRAINERS)}); this student is a '{self.task}' "
                f"model"
            )
        if trainer is not None and not issubclass(trainer, KDTrainerMixin):
            raise KDError(
                f"trainer={trainer.__name__} would train without the teacher; pass a KDTrainerMixin subclass "
                f"(e.g. yolokd.trainer.{TRAINERS[self.task].__name__}) or leave trainer= out"
            )
        return trainer or TRAINERS[self.task]

    def train(self, trainer=None, **kwargs: Any):
        """Train with distillation; KD keys given here override the constructor's (a list of data sets distils too).

        Args:
            trainer (type, optional): A KD trainer subclass (`yolokd.trainer.KDTrainerMixin`) instead of the task's.
            **kwargs (Any): Every ``yolo train`` argument plus the KD keys.

        Returns:
            (DetMetrics | SegmentMetrics | PoseMetrics | OBBMetrics | dict | None): As ``YOLO.train``.
        """
        trainer = self._kd_trainer(trainer)
        kd = {k: v for k, v in self.kd_overrides.items() if v is not None}
        return super().train(trainer=trainer, **{**kd, **kwargs})

    def tune(self, use_ray: bool = False, iterations: int = 300, *args: Any, **kwargs: Any):
        """Tune the hyper-parameters of a distillation run: every trial trains with the teacher and the method.

        The space may hold ``distill_weight``, ``balance`` and ``term_weights.<term>`` beside Ultralytics' keys
        (default: Ultralytics' space plus `yolokd.tune.KD_SPACE`).

        Args:
            use_ray (bool): Tune with Ray Tune (``pip install "yolokd[ray]"``) instead of Ultralytics' tuner.
            iterations (int): Number of trials.
            *args (Any): With ``use_ray=True``, Ray's positional arguments (``space``, ``grace_period``, ...).
            **kwargs (Any): Tuner and ``yolo train`` arguments plus the KD keys.

        Returns:
            (ray.tune.ResultGrid | None): As ``YOLO.tune``.
        """
        from yolokd.tune import KDTuner

        trainer = self._kd_trainer()
        kd_args, kwargs = split_kd_args(kwargs)
        kd = {**{k: v for k, v in self.kd_overrides.items() if v is not None}, **kd_args}
        if not kd.get("teacher"):
            raise KDError("tune() needs a teacher: pass teacher=path/to/teacher.pt to YOLOKD(...) or to tune()")
        build_config(kd)  # a bad method or key fails now, before any trial
        if use_ray:
            return self._tune_with_ray(kd, iterations, *args, **kwargs)
        if args:
            raise KDError(f"positional tune() arguments {args} need use_ray=True; pass the tuner's options as keywords")
        if "optimizer" not in (kwargs.get("space") or {}):
            kwargs.setdefault("optimizer", "AdamW")  # as YOLO.tune
        tune_args = {**self.overrides, **kd, **kwargs, "mode": "train"}
        return KDTuner(tune_args, trainer, _callbacks=self.callbacks, model=self.model)(iterations=iterations)

    def _tune_with_ray(self, kd: dict, iterations: int, *args: Any, **kwargs: Any):
        """``YOLO.tune(use_ray=True)`` with the KD keys in `kd_overrides`, where each trial's ``train`` reads them."""
        try:
            import ray.tune  # noqa: F401
        except ImportError as e:
            raise KDError('use_ray=True needs Ray Tune: pip install "yolokd[ray]" (or "ray[tune]")') from e
        saved = self.kd_overrides
        self.kd_overrides = {**saved, **kd}
        try:
            return super().tune(True, iterations, *args, **kwargs)
        finally:
            self.kd_overrides = saved
