# yolokd, AGPL-3.0 License
"""`KDTrainer`: Ultralytics' `DetectionTrainer` with a teacher, a stack of distillation terms and bare checkpoints.

Overrides (each small, each calling Ultralytics):
- ``__init__``: pop and validate the KD keys before Ultralytics' ``get_cfg`` sees them, load and check the teacher.
- ``setup_model``: wrap the student built by Ultralytics into a `KDModel` (before the optimizer is built).
- ``set_model_attributes``: also set ``nc``/``names``/``args`` on the student, which builds the loss.
- ``save_model``: every file is a bare student; adapters and KD config go under the extra ``yolokd`` key.
- ``_load_checkpoint_state`` / ``_handle_nan_recovery``: read that layout back (resume, NaN recovery).
- ``final_eval``: drop the adapters from the final files, keep the KD config as provenance.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import os
import signal
import tempfile
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from ultralytics.models.yolo.detect import DetectionTrainer
from ultralytics.nn.tasks import load_checkpoint
from ultralytics.utils import DEFAULT_CFG, LOGGER, RANK, colorstr
from ultralytics.utils.patches import torch_load
from ultralytics.utils.torch_utils import unwrap_model

from yolokd.callbacks import KDCallbacks
from yolokd.config import KDConfig, KDError, build_config, split_kd_args
from yolokd.distill_model import KDModel, check_pair

PREFIX = colorstr("yolokd: ")
CKPT_KEY = "yolokd"  # extra checkpoint key; plain Ultralytics ignores it


def load_teacher(path: str | Path | None) -> nn.Module:
    """Load a teacher checkpoint (FP32, eval), raising `KDError` with the fix when that is impossible.

    Args:
        path (str | Path | None): A local ``.pt`` or an Ultralytics model name such as ``yolov8x.pt`` (downloaded when
            online).

    Returns:
        (nn.Module): The teacher model.
    """
    if path is None or str(path).strip() == "":
        raise KDError("no teacher given: pass teacher=path/to/teacher.pt (a trained detection checkpoint)")
    p = Path(str(path))
    if p.suffix.lower() in {".yaml", ".yml"}:
        raise KDError(f"teacher '{p}' is a model yaml; the teacher must be a trained checkpoint (.pt)")
    if p.suffix == "" and len(p.parts) == 1:
        p = p.with_suffix(".pt")  # yolov8x -> yolov8x.pt, as Ultralytics resolves model names
    if not p.exists() and len(p.parts) > 1:
        raise KDError(f"teacher file '{p}' does not exist; check the path")
    try:
        teacher, _ = load_checkpoint(p if p.exists() else str(p))
    except (ConnectionError, FileNotFoundError) as e:
        raise KDError(
            f"teacher '{p}' is not a local file and could not be downloaded ({type(e).__name__}); "
            f"pass a local checkpoint, e.g. teacher=runs/detect/train/weights/best.pt"
        ) from e
    except Exception as e:
        raise KDError(
            f"teacher file '{p}' is not a readable Ultralytics checkpoint ({type(e).__name__}: "
            f"{str(e).strip().splitlines()[0] if str(e).strip() else ''}); re-export or retrain it"
        ) from e
    return teacher.float()


def _resume_kd(resume: Any, model: Any) -> dict[str, Any]:
    """Return the KD config dict stored in the checkpoint a resumed run continues from ({} if it holds none)."""
    src = Path(str(resume if isinstance(resume, (str, Path)) else model))
    if not src.is_file():
        raise KDError(f"resume checkpoint '{src}' not found; pass model=path/to/weights/last.pt of the run")
    try:
        ckpt = torch_load(src, map_location="cpu")
    except Exception as e:
        raise KDError(f"resume checkpoint '{src}' is not readable ({type(e).__name__}); pass the run's last.pt") from e
    return dict((ckpt.get(CKPT_KEY) or {}).get("config") or {})


@contextlib.contextmanager
def _defer_sigint():
    """Hold a Ctrl-C (SIGINT) back until the block ends, so checkpoint files are never half-written."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if received:
            raise KeyboardInterrupt


def _atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file beside ``path``, then rename it over ``path``."""
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _same_weights(a: nn.Module, b: nn.Module) -> bool:
    """True when two models have identical state-dict keys, shapes and values."""
    sa, sb = a.state_dict(), b.state_dict()
    if sa.keys() != sb.keys() or any(sa[k].shape != sb[k].shape for k in sa):
        return False
    return all(torch.equal(sa[k].float().cpu(), sb[k].float().cpu()) for k in sa)


class _EMAView(nn.Module):
    """The state-dict layout of a `KDModel` EMA (student + projector), rebuilt from a bare-student checkpoint."""

    def __init__(self, student_model: nn.Module, projector: nn.Module):
        """Hold the two parts under the names `KDModel` uses."""
        super().__init__()
        self.student_model = student_model
        self.projector = projector


class _DropTeacherFreezeLines(logging.Filter):
    """Drop Ultralytics' one 'Freezing layer' line per teacher parameter (hundreds); one summary line replaces them."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Keep every record but the per-parameter teacher freeze lines."""
        return "Freezing layer 'teacher_model." not in record.getMessage()


class KDTrainer(DetectionTrainer):
    """Knowledge-distillation trainer: every ``yolo train`` argument plus the KD keys of ``cfg/default.yaml``.

    Examples:
        >>> from yolokd import KDTrainer
        >>> args = dict(model="yolov8n.yaml", teacher="teacher.pt", method="cwd", data="data.yaml", epochs=1)
        >>> KDTrainer(overrides=args).train()  # doctest: +SKIP
    """

    def __init__(self, cfg=DEFAULT_CFG, overrides: dict[str, Any] | None = None, _callbacks: dict | None = None):
        """Split and validate the KD keys, initialise Ultralytics' trainer, then load and check the teacher.

        Args:
            cfg (str | dict | SimpleNamespace): Ultralytics default configuration.
            overrides (dict, optional): Ultralytics arguments plus KD keys.
            _callbacks (dict, optional): Callbacks; in a DDP worker they carry the KD configuration.
        """
        kd_args, overrides = split_kd_args(dict(overrides or {}))
        carried = KDCallbacks.find(_callbacks)
        resuming = bool(overrides.get("resume"))
        if carried is not None and not kd_args:  # DDP worker rebuild: the parent's exact configuration
            self.kd: KDConfig = carried.config
        elif resuming:  # the configuration saved with the checkpoint; an explicit teacher= may relocate the file
            saved = _resume_kd(overrides.get("resume"), overrides.get("model"))
            if not saved and "teacher" not in kd_args:
                raise KDError("resume checkpoint holds no yolokd configuration; pass teacher= and method=")
            ignored = sorted(k for k in kd_args if k != "teacher")
            if ignored:
                LOGGER.warning(f"{PREFIX}resume ignores {ignored}, using the checkpoint's distillation configuration")
            self.kd = build_config({**saved, **({"teacher": kd_args["teacher"]} if "teacher" in kd_args else {})})
        else:
            self.kd = build_config(kd_args)
        if self.kd.teacher is None:
            raise KDError("no teacher given: pass teacher=path/to/teacher.pt (a trained detection checkpoint)")
        self.teacher = load_teacher(self.kd.teacher)  # before the data set: a bad teacher fails fast
        super().__init__(cfg, overrides, _callbacks)
        if self.args.compile:
            LOGGER.warning(f"{PREFIX}'compile' is not supported with distillation and is disabled")
            self.args.compile = False
        if carried is None:
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

    # ------------------------------------------------------------------ model
    def setup_model(self):
        """Build or load the student as Ultralytics does, check it against the teacher and wrap it in a `KDModel`."""
        ckpt = super().setup_model()
        if not isinstance(unwrap_model(self.model), KDModel):
            student = self.model
            student.args = self.args
            check_pair(student, self.teacher, self.data.get("names"))
            if _same_weights(student, self.teacher) and RANK in {-1, 0}:
                LOGGER.warning(
                    f"{PREFIX}the teacher has the student's architecture and weights: distillation adds "
                    f"cost without a better model to learn from; pass a larger, trained teacher"
                )
            self.model = KDModel(student, self.teacher, self.kd, imgsz=min(int(self.args.imgsz), 128))
        state = (ckpt or {}).get(CKPT_KEY) if self.resume else None
        if state and state.get("projector") is not None:
            model = unwrap_model(self.model)
            model.projector.load_state_dict(state["projector"])
            model.nonfinite_skips.update(state.get("nonfinite_skips") or {})
            if model.balance is not None and state.get("balance"):
                model.balance.load_state_dict(state["balance"])
            LOGGER.info(f"{PREFIX}restored adapters and term state from {self.args.model}")
        return ckpt

    def _setup_train(self):
        """Ultralytics' setup, with its per-parameter teacher freeze lines summarised in one line."""
        quiet = _DropTeacherFreezeLines()
        LOGGER.addFilter(quiet)
        try:
            super()._setup_train()
        finally:
            LOGGER.removeFilter(quiet)
        if RANK in {-1, 0}:
            n = sum(p.numel() for p in unwrap_model(self.model).teacher_model.parameters())
            LOGGER.info(f"{PREFIX}teacher frozen ({n:,} parameters, eval mode, no gradients)")

    def set_model_attributes(self):
        """Set ``nc``, ``names`` and ``args`` on the wrapper (validator) and on the student (its loss reads them)."""
        super().set_model_attributes()
        student = unwrap_model(self.model).student_model
        student.nc, student.names, student.args = self.data["nc"], self.data["names"], self.args

    # ------------------------------------------------------------------ checkpoints
    def _kd_state(self) -> dict[str, Any]:
        """The extra checkpoint entry: KD config, live adapters (fp32) and schedule progress."""
        model = unwrap_model(self.model)
        return {
            "config": self.kd.to_dict(),
            "projector": {k: v.detach().float().cpu() for k, v in model.projector.state_dict().items()},
            "progress": dataclasses.asdict(model.progress),
            "nonfinite_skips": dict(model.nonfinite_skips),
            "balance": None if model.balance is None else model.balance.state_dict(),
        }

    def save_model(self):
        """Save as Ultralytics does, but with the bare student as the EMA and the adapters under ``yolokd``.

        Ctrl-C is held back until every file is complete.
        """
        with _defer_sigint():
            wrapper = self.ema.ema
            wrapper._remove_feature_hooks()  # no hook objects inside saved modules
            self.ema.ema = wrapper.student_model
            try:
                saved = super().save_model()
            finally:
                self.ema.ema = wrapper
                wrapper._register_feature_hooks()
            ckpt = torch_load(self.last, map_location="cpu")
            ckpt[CKPT_KEY] = self._kd_state()
            _atomic_save(ckpt, self.last)
            written = [self.best] if self.best_fitness == self.fitness else []  # the files Ultralytics just wrote
            if self.save_period > 0 and self.epoch % self.save_period == 0:
                written.append(self.wdir / f"epoch{self.epoch}.pt")
            data = self.last.read_bytes()
            for f in written:
                tmp = f.with_name(f".{f.name}.tmp")
                tmp.write_bytes(data)
                os.replace(tmp, f)
        return saved

    def _as_wrapper_ckpt(self, ckpt: dict) -> dict:
        """Return ``ckpt`` with ``ema`` reshaped to the `KDModel` EMA layout (student + projector)."""
        ema = ckpt.get("ema")
        if ema is None or hasattr(ema, "student_model"):
            return ckpt
        view_projector = copy.deepcopy(unwrap_model(self.model).projector).cpu()
        state = (ckpt.get(CKPT_KEY) or {}).get("projector")
        if state:
            view_projector.load_state_dict(state)
        return {**ckpt, "ema": _EMAView(ema, view_projector)}

    def _load_checkpoint_state(self, ckpt):
        """Load optimizer/EMA/fitness state from a bare-student checkpoint."""
        super()._load_checkpoint_state(self._as_wrapper_ckpt(ckpt))

    def _handle_nan_recovery(self, epoch):
        """Run Ultralytics' NaN recovery against a wrapper-layout copy of ``last.pt`` when it is going to reload it."""
        loss_bad = self.loss is not None and not torch.isfinite(self.loss).all()
        fit_bad = self.fitness is not None and not np.isfinite(self.fitness)
        suspect = [bool(RANK in {-1, 0} and (loss_bad or fit_bad))]
        if RANK != -1:  # Ultralytics decides on rank 0 and broadcasts; follow the same decision
            torch.distributed.broadcast_object_list(suspect, 0)
        if not suspect[0] or not self.last.exists() or epoch == self.start_epoch:
            return super()._handle_nan_recovery(epoch)
        last = self.last
        with tempfile.TemporaryDirectory() as d:
            tmp = Path(d) / "last.pt"
            torch.save(self._as_wrapper_ckpt(torch_load(last, map_location="cpu")), tmp)
            self.last = tmp
            try:
                return super()._handle_nan_recovery(epoch)
            finally:
                self.last = last

    def final_eval(self):
        """Ultralytics' final evaluation; then the final files keep the KD config but no adapter weights."""
        super().final_eval()
        if RANK in {-1, 0}:
            for f in (self.last, self.best):
                if f.exists():
                    with contextlib.suppress(Exception):
                        ckpt = torch_load(f, map_location="cpu")
                        if isinstance(ckpt.get(CKPT_KEY), dict):
                            ckpt[CKPT_KEY] = {"config": ckpt[CKPT_KEY].get("config")}
                            _atomic_save(ckpt, f)
