# yolokd, AGPL-3.0 License
"""The KD trainers: Ultralytics' task trainers with a teacher, a stack of distillation terms and bare checkpoints.

`KDTrainerMixin` adds the teacher to each Ultralytics trainer of a model with a Detect head: `KDTrainer` (detect),
`KDSegmentationTrainer`, `KDPoseTrainer` and `KDOBBTrainer` (`TRAINERS` maps a task to its class). Its overrides
are short and delegate to the module that owns the concern (`yolokd.config`, `yolokd.teacher`, `yolokd.unlabeled`,
`yolokd.checkpoint`).

Private Ultralytics names yolokd uses (all of them; tests/test_import_graph.py keeps this list true):
- ``BaseTrainer._load_checkpoint_state``, ``BaseTrainer._handle_nan_recovery`` (overridden here: they read ``ema``
  in the wrapper layout, and no public method reads a checkpoint back);
- ``DistillationModel._remove_feature_hooks``, ``_register_feature_hooks``, ``_clear_feature_hooks``,
  ``_freeze_teacher`` and the attributes ``_teacher_feats``, ``_student_feats``, ``_teacher_hooks``,
  ``_student_hooks`` (the seam `KDModel` extends, yolokd/distill_model.py).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
from ultralytics.models.yolo.detect import DetectionTrainer
from ultralytics.models.yolo.obb import OBBTrainer
from ultralytics.models.yolo.pose import PoseTrainer
from ultralytics.models.yolo.segment import SegmentationTrainer
from ultralytics.utils import DEFAULT_CFG, LOCAL_RANK, LOGGER, RANK
from ultralytics.utils.torch_utils import unwrap_model

from yolokd import checkpoint
from yolokd.callbacks import QUIET_TEACHER_FREEZE, KDCallbacks
from yolokd.config import PREFIX, KDConfig, KDError, run_config, split_kd_args
from yolokd.distill_model import KDModel
from yolokd.pseudo import UNLABELED_ITEMS
from yolokd.teacher import check_pair, describe_classes, read_teacher, undertrained_warning
from yolokd.unlabeled import UnlabeledStream, check_unlabeled, resolve_unlabeled


def _same_weights(a, b) -> bool:
    """True when two models have identical state-dict keys, shapes and values."""
    sa, sb = a.state_dict(), b.state_dict()
    if sa.keys() != sb.keys() or any(sa[k].shape != sb[k].shape for k in sa):
        return False
    return all(sa[k].float().cpu().equal(sb[k].float().cpu()) for k in sa)


_STUDENT_ATTRS = ("nc", "names", "args", "kpt_shape", "kpt_oks_sigmas", "kpt_names")  # what the loss/validator read


def launched_world_size(devices: int, env: dict | None = None) -> int:
    """The number of DDP processes: ``devices`` (Ultralytics' count on this machine), or torchrun's ``WORLD_SIZE``.

    Under ``torchrun`` (``LOCAL_RANK`` set) the world is every process of every node; on CPU (``devices == 0``) there
    is no DDP.

    Examples:
        >>> launched_world_size(8, {"LOCAL_RANK": "3", "WORLD_SIZE": "16"}), launched_world_size(8, {})
        (16, 8)
    """
    env = os.environ if env is None else env
    world = int(env.get("WORLD_SIZE", "1"))
    return world if devices > 0 and "LOCAL_RANK" in env and world > 1 else devices


class KDTrainerMixin:
    """Knowledge distillation for an Ultralytics task trainer: every ``yolo train`` argument plus the KD keys.

    Put it first: ``class KDTrainer(KDTrainerMixin, DetectionTrainer)``.

    Attributes:
        kd (KDConfig): The run's distillation configuration (``kd.teacher`` is the teacher checkpoint's path).
        teacher_model (nn.Module): The loaded teacher; it becomes the `KDModel`'s ``teacher_model``.

    Examples:
        >>> from yolokd import KDTrainer
        >>> args = dict(model="yolov8n.yaml", teacher="teacher.pt", method="cwd", data="data.yaml", epochs=1)
        >>> KDTrainer(overrides=args).train()  # doctest: +SKIP
    """

    def __init__(self, cfg=DEFAULT_CFG, overrides: dict[str, Any] | None = None, _callbacks: dict | None = None):
        """Split and validate the KD keys, initialise Ultralytics' trainer, then load and check the teacher.

        ``_callbacks`` carry the KD configuration into a DDP worker.
        """
        kd_args, overrides = split_kd_args(dict(overrides or {}))
        carried = KDCallbacks.find(_callbacks)
        self.kd: KDConfig = run_config(
            kd_args, overrides, None if carried is None else carried.config, checkpoint.saved_config
        )
        self.sigint = checkpoint.SigintGuard()
        if self.kd.teacher is None:
            raise KDError("no teacher given: pass teacher=path/to/teacher.pt (a trained detection checkpoint)")
        self.teacher_model, teacher_curves = read_teacher(self.kd.teacher)  # before the data: a bad teacher fails fast
        late = undertrained_warning(teacher_curves)
        if late and RANK in {-1, 0} and carried is None:
            LOGGER.warning(f"{PREFIX}{late}")
        super().__init__(cfg, overrides, _callbacks)
        self.world_size = launched_world_size(self.world_size)  # several machines under torchrun
        self.unlabeled_source = resolve_unlabeled(self.kd.unlabeled, self.data)
        self.unlabeled_stream: UnlabeledStream | None = None  # built at the first step, in each DDP process
        if self.unlabeled_source is not None:
            n = len(check_unlabeled(self.unlabeled_source, self.args.task))
            if RANK in {-1, 0}:
                LOGGER.info(
                    f"{PREFIX}unlabeled: {n} images from {self.unlabeled_source}, {self.kd.unlabeled_ratio:g} per "
                    f"labeled image; pseudo-boxes from teacher score {self.kd.pseudo_conf:g}"
                )
        if self.args.compile:
            LOGGER.warning(f"{PREFIX}'compile' is not supported with distillation and is disabled")
            self.args.compile = False
        if carried is None or kd_args:  # kd_args: a new run, even where the dict holds an earlier run's callbacks
            if carried is not None:  # e.g. a second train() of one model, or a tuner's next trial
                carried.detach(self)
            KDCallbacks(self.kd).attach(self)
        if RANK in {-1, 0}:
            terms = ", ".join(f"{s.name}(w={s.weight:g}, {s.schedule})" for s in self.kd.terms)
            LOGGER.info(f"{PREFIX}teacher={self.kd.teacher} method={self.kd.method} terms: {terms}")

    def get_dataset(self):
        """Ultralytics' data set check, with its error turned into a one-line `KDError` that names the fix."""
        try:
            return super().get_dataset()
        except RuntimeError as e:
            msg = " ".join(str(e).split())
            raise KDError(f"{msg}; pass data=path/to/data.yaml (or run 'yolokd demo' for a generated data set)") from e

    def build_dataset(self, img_path: str, mode: str = "train", batch: int | None = None):
        """Ultralytics' data set; a training split without a single label is an error (nothing to distil)."""
        fix = (
            f"the training split '{img_path}' has no labels; put one YOLO-format .txt per image in the 'labels' "
            f"folder beside 'images' (see https://docs.ultralytics.com/datasets/detect/)"
        )
        try:
            dataset = super().build_dataset(img_path, mode, batch)
        except ValueError as e:  # Ultralytics raises this one while training when it finds no label file at all
            if mode == "train" and "No labels found" in str(e):
                raise KDError(fix) from e
            raise
        if mode == "train" and not any(len(lb.get("cls", [])) for lb in getattr(dataset, "labels", [])):
            raise KDError(fix)  # label files exist but are all empty
        return dataset

    def preprocess_batch(self, batch: dict) -> dict:
        """Ultralytics' preprocessing; while training with unlabeled images, the next ones as ``unlabeled_img``."""
        batch = super().preprocess_batch(batch)
        if self.unlabeled_source is not None and unwrap_model(self.model).training:
            batch["unlabeled_img"] = super().preprocess_batch(self._unlabeled().next())["img"]
        return batch

    def _unlabeled(self) -> UnlabeledStream:
        """The unlabeled stream (built on first use), with mosaic closed when the training loader's is."""
        if self.unlabeled_stream is None:
            per_rank = max(self.batch_size // max(self.world_size, 1), 1)
            self.unlabeled_stream = UnlabeledStream(
                self.unlabeled_source,
                self.args,
                self.data,
                batch=max(1, round(per_rank * self.kd.unlabeled_ratio)),
                stride=max(int(unwrap_model(self.model).stride.max()), 32),
                rank=LOCAL_RANK,
            )
        stream, close = self.unlabeled_stream, self.args.close_mosaic
        if close and not stream.mosaic_closed and self.epoch >= self.epochs - close:
            stream.close_mosaic(self.args)
        return stream

    # ------------------------------------------------------------------ model
    def setup_model(self):
        """Build or load the student as Ultralytics does, check it against the teacher and wrap it in a `KDModel`."""
        ckpt = super().setup_model()
        if not isinstance(unwrap_model(self.model), KDModel):
            student = self.model
            student.args = self.args
            classes = check_pair(student, self.teacher_model, self.data.get("names"), self.kd.class_map)
            if classes is not None and RANK in {-1, 0}:
                pairs = describe_classes(classes, self.teacher_model.names, self.data["names"])
                LOGGER.info(f"{PREFIX}teacher classes: {pairs}")
            if _same_weights(student, self.teacher_model) and RANK in {-1, 0}:
                LOGGER.warning(
                    f"{PREFIX}the teacher has the student's architecture and weights: distillation adds "
                    f"cost without a better model to learn from; pass a larger, trained teacher"
                )
            self.model = KDModel(
                student, self.teacher_model, self.kd, imgsz=min(int(self.args.imgsz), 128), teacher_classes=classes
            )
            LOGGER.addFilter(QUIET_TEACHER_FREEZE)  # until on_pretrain_routine_end: one line, not one per parameter
        if self.resume and checkpoint.restore_kd_state(unwrap_model(self.model), ckpt):
            LOGGER.info(f"{PREFIX}restored adapters and term state from {self.args.model}")
        return ckpt

    def set_model_attributes(self):
        """Set the task's attributes (``nc``, ``names``, ``args``, pose keypoints) on the wrapper and on the student."""
        super().set_model_attributes()
        wrapper = unwrap_model(self.model)
        for attr in _STUDENT_ATTRS:
            if hasattr(wrapper, attr):
                setattr(wrapper.student_model, attr, getattr(wrapper, attr))

    def label_loss_items(self, loss_items=None, prefix="train"):
        """Ultralytics' labelled loss items, without the distillation items under the ``val`` prefix (not computed)."""
        items = super().label_loss_items(loss_items, prefix)
        if prefix != "val":
            return items
        kd = {f"{prefix}/{name}" for name in (*unwrap_model(self.model).item_names(), *UNLABELED_ITEMS)}
        if loss_items is None:
            return [k for k in items if k not in kd]
        return {k: v for k, v in items.items() if k not in kd}

    # ------------------------------------------------------------------ checkpoints
    def train(self):
        """Ultralytics' training, with one SIGINT handler for the run so that a Ctrl-C never cuts a checkpoint."""
        with self.sigint:
            return super().train()

    def optimizer_step(self):
        """Zero a skipped term's NaN/Inf adapter gradients (on the device, not under AMP), then Ultralytics' step."""
        if not self.scaler.is_enabled():
            unwrap_model(self.model).clean_adapter_grads()
        super().optimizer_step()

    def save_model(self):
        """Save as Ultralytics does (bare student as EMA, adapters under ``yolokd``), published atomically."""
        wrapper = self.ema.ema
        with self.sigint.hold(), checkpoint.staged(self) as stage:
            wrapper._remove_feature_hooks()  # no hook objects inside saved modules
            self.ema.ema = wrapper.student_model
            try:
                saved = super().save_model()
            finally:
                self.ema.ema = wrapper
                wrapper._register_feature_hooks()
            state = checkpoint.kd_state(unwrap_model(self.model))
            files = sorted(stage.iterdir(), key=lambda p: p.name != self.last.name)  # the files Ultralytics wrote
            checkpoint.rewrite(files, lambda ckpt: {**ckpt, checkpoint.CKPT_KEY: state})
        return saved

    def _load_checkpoint_state(self, ckpt):
        """Load optimizer/EMA/fitness state from a bare-student checkpoint."""
        projector = unwrap_model(self.model).projector
        super()._load_checkpoint_state(checkpoint.as_wrapper_ckpt(ckpt, projector))

    def _handle_nan_recovery(self, epoch):
        """Ultralytics' NaN recovery, reading a wrapper-layout copy of ``last.pt`` when it reloads it."""
        loss_bad = self.loss is not None and not torch.isfinite(self.loss).all()
        fit_bad = self.fitness is not None and not np.isfinite(self.fitness)
        suspect = [bool(RANK in {-1, 0} and (loss_bad or fit_bad))]
        if RANK != -1:  # Ultralytics decides on rank 0 and broadcasts; follow the same decision
            torch.distributed.broadcast_object_list(suspect, 0)
        if not suspect[0] or not self.last.exists() or epoch == self.start_epoch:
            return super()._handle_nan_recovery(epoch)
        last = self.last
        with checkpoint.wrapper_view(last, unwrap_model(self.model).projector) as self.last:
            try:
                return super()._handle_nan_recovery(epoch)
            finally:
                self.last = last

    def final_eval(self):
        """Ultralytics' final evaluation on staged copies of the files; they keep the KD config but no adapters."""
        if RANK not in {-1, 0}:
            return super().final_eval()
        with checkpoint.staged(self, carry=(self.last, self.best)) as stage:
            super().final_eval()
            for f in stage.iterdir():
                checkpoint.rewrite([f], checkpoint.final_entry)


class KDTrainer(KDTrainerMixin, DetectionTrainer):
    """Distillation of detection models: `KDTrainerMixin` over Ultralytics' ``DetectionTrainer``."""


class KDSegmentationTrainer(KDTrainerMixin, SegmentationTrainer):
    """Distillation of segmentation models: `KDTrainerMixin` over Ultralytics' ``SegmentationTrainer``."""


class KDPoseTrainer(KDTrainerMixin, PoseTrainer):
    """Distillation of pose models: `KDTrainerMixin` over Ultralytics' ``PoseTrainer``."""


class KDOBBTrainer(KDTrainerMixin, OBBTrainer):
    """Distillation of oriented-box models: `KDTrainerMixin` over Ultralytics' ``OBBTrainer``."""


TRAINERS: dict[str, type] = {
    "detect": KDTrainer,
    "segment": KDSegmentationTrainer,
    "pose": KDPoseTrainer,
    "obb": KDOBBTrainer,
}
"""The KD trainer of each Ultralytics task with a Detect head."""
