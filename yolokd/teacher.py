# yolokd, AGPL-3.0 License
"""The teacher: load it from a checkpoint, and check that it and a student can be distilled together.

Both raise `KDError` with a one-line message that names the fix (the CLI prints it and exits with code 2).
"""

from __future__ import annotations

from pathlib import Path

from torch import nn
from ultralytics.nn.modules import Conv, Conv2
from ultralytics.nn.tasks import load_checkpoint
from ultralytics.utils.torch_utils import fuse_conv_and_bn

from yolokd.config import KDError
from yolokd.taps import detect_head, model_task


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


def check_pair(student: nn.Module, teacher: nn.Module, names: dict | None = None) -> None:
    """Raise `KDError` (one line, naming the fix) if teacher and student cannot be distilled together.

    Args:
        student (nn.Module): Student detection model (its head's ``nc`` already set to the data set's).
        teacher (nn.Module): Teacher model.
        names (dict, optional): The data set's class names; the teacher's must match when given.
    """
    task = model_task(teacher)
    if task != "detect":
        raise KDError(f"teacher is a '{task}' model, not a detection model; pass a detection checkpoint (task=detect)")
    try:
        th = detect_head(teacher)
    except ValueError as e:
        raise KDError(
            f"teacher ({type(teacher).__name__}) has no Detect head, so it is not a detection model; "
            f"pass a detection checkpoint (task=detect)"
        ) from e
    sh = detect_head(student)
    if th.nc != sh.nc:
        raise KDError(
            f"teacher predicts {th.nc} classes but the student/data set has {sh.nc}; "
            f"train or fine-tune the teacher on the same data set first"
        )
    if names is not None and getattr(teacher, "names", None) is not None:
        t_names = {int(k): v for k, v in dict(teacher.names).items()}
        d_names = {int(k): v for k, v in dict(names).items()}
        if t_names != d_names:
            diff = next((i for i in sorted(d_names) if t_names.get(i) != d_names[i]), None)
            raise KDError(
                f"teacher class names differ from the data set's (class {diff}: teacher "
                f"{t_names.get(diff)!r} vs data {d_names.get(diff)!r}); use a teacher trained on this data"
            )
    if th.nl != sh.nl:
        raise KDError(
            f"teacher has {th.nl} detection levels but the student has {sh.nl}; "
            f"use models with the same number of levels (e.g. both P3-P5)"
        )
    ts, ss = [int(s) for s in teacher.stride.tolist()], [int(s) for s in student.stride.tolist()]
    if ts != ss:
        raise KDError(f"teacher strides {ts} differ from student strides {ss}; use models with the same strides")


def fold_batchnorm(model: nn.Module) -> int:
    """Fold every ``Conv`` block's BatchNorm into its convolution, in place, for a frozen teacher in eval mode.

    The same folding as Ultralytics' ``BaseModel.fuse()`` (its public ``fuse_conv_and_bn``), but only that: ``fuse()``
    also drops a Detect head's one-to-many branch on end-to-end models (YOLO26), which the head terms read. The block
    keeps its identity (hooks on head stages stay), its output equals the unfolded one up to float rounding, and the
    folded convolution's parameters are frozen. The teacher is never saved, so checkpoints are unaffected.

    Args:
        model (nn.Module): The teacher (eval mode: BatchNorm uses its running statistics).

    Returns:
        (int): The number of blocks folded.
    """
    n = 0
    for m in model.modules():
        if isinstance(m, Conv) and hasattr(m, "bn"):
            if isinstance(m, Conv2):
                m.fuse_convs()
            m.conv = fuse_conv_and_bn(m.conv, m.bn)
            delattr(m, "bn")
            m.forward = m.forward_fuse
            n += 1
    return n
