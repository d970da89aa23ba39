# yolokd, AGPL-3.0 License
"""The teacher: load it from a checkpoint, and check that it and a student can be distilled together.

Both raise `KDError` with a one-line message that names the fix (the CLI prints it and exits with code 2).
"""

from __future__ import annotations

import math
from pathlib import Path

from torch import nn
from ultralytics.nn.modules import Conv, Conv2
from ultralytics.nn.tasks import load_checkpoint
from ultralytics.utils.torch_utils import fuse_conv_and_bn

from yolokd.config import KDError
from yolokd.head import TASK_SUFFIX
from yolokd.taps import detect_head, model_task

LATE_GAIN = 0.12
"""The share of a teacher's best val mAP50-95 reached only in the last fifth of its epochs above which yolokd warns
that the teacher was still improving fast when its training stopped. yolokd's benchmark teachers: 0.18 for the
first 10-epoch one a converged student outgrows (it then costs the student accuracy), 0.02-0.08 for the 80-epoch ones;
a second 10-epoch teacher of the same recipe flattened at the end (0.05) and is missed."""


def late_gain(curve: list[float] | None, tail: float = 0.2) -> tuple[float, float, int] | None:
    """How much of a validation curve's best came only in its last ``tail`` of epochs.

    Args:
        curve (list[float] | None): Val mAP after each epoch, in order (a checkpoint's ``train_results``).
        tail (float): The fraction of the last epochs (at least one, fewer than all).

    Returns:
        (tuple | None): ``(share, best_before, n_tail)``: ``(best - best_before) / best`` with ``best_before`` the best
            before the tail; None without a curve of at least 2 epochs and a positive best.

    Examples:
        >>> share, before, n = late_gain([0.0, 0.1, 0.15, 0.18, 0.185, 0.2, 0.2, 0.21, 0.21, 0.25])
        >>> round(share, 2), before, n  # the last 2 of 10 epochs: 0.21 -> 0.25
        (0.16, 0.21, 2)
    """
    if not curve or len(curve) < 2 or max(curve) <= 0:
        return None
    n_tail = min(max(1, round(tail * len(curve))), len(curve) - 1)
    best, before = max(curve), max(curve[:-n_tail])
    return max(best - before, 0.0) / best, before, n_tail


def undertrained_warning(train_results: dict | None) -> str | None:
    """A one-line warning when a checkpoint's own val curve was still rising fast as its training ended, else None.

    Args:
        train_results (dict | None): An Ultralytics checkpoint's ``train_results`` (its results.csv by column); the
            curve read is ``metrics/mAP50-95(B)``. None or without it (trained without validation): no warning.

    Examples:
        >>> undertrained_warning({"metrics/mAP50-95(B)": [0.6, 0.62, 0.63, 0.64, 0.645]}) is None
        True
        >>> undertrained_warning({"metrics/mAP50-95(B)": [0.0, 0.1, 0.2, 0.3, 0.4]})[:44]
        'the teacher was still improving fast when it'
    """
    curve = [float(x) for x in (train_results or {}).get("metrics/mAP50-95(B)") or [] if math.isfinite(float(x))]
    found = late_gain(curve)
    if found is None or found[0] < LATE_GAIN:
        return None
    share, before, n_tail = found
    return (
        f"the teacher was still improving fast when its training stopped (val mAP50-95 {before:.3f} -> "
        f"{max(curve):.3f} in its last {n_tail} of {len(curve)} epochs, {share:.0%} of its best): a student that "
        f"outgrows it loses accuracy to distillation (docs/methods.md 'Catch-up'); train the teacher longer"
    )


def load_teacher(path: str | Path | None) -> nn.Module:
    """Load a teacher checkpoint (a ``.pt`` or an Ultralytics model name) in FP32 eval mode, or raise `KDError`."""
    return read_teacher(path)[0]


def read_teacher(path: str | Path | None) -> tuple[nn.Module, dict]:
    """`load_teacher`, and its checkpoint's ``train_results`` (its training curves).

    Empty where it has none, or where it was trained with ``val=False`` and so validated after its last epoch only.
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
        teacher, ckpt = load_checkpoint(p if p.exists() else str(p))
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
    info = ckpt if isinstance(ckpt, dict) else {}
    curves, train_args = info.get("train_results"), info.get("train_args")
    if isinstance(train_args, dict) and train_args.get("val", True) is False:
        curves = None  # validated after its last epoch only: Ultralytics records zeros before it, which are no curve
    return teacher.float(), curves if isinstance(curves, dict) else {}


def check_pair(
    student: nn.Module, teacher: nn.Module, names: dict | None = None, class_map: dict | list | None = None
) -> list[int] | None:
    """Raise `KDError` (one line, naming the fix) if teacher and student cannot be distilled together.

    Args:
        student (nn.Module): Student model (its head's ``nc`` already set to the data set's).
        teacher (nn.Module): Teacher model of the same task.
        names (dict, optional): The data set's class names, matched by name against the teacher's.
        class_map (dict | list, optional): Student class index -> teacher class index, for names that differ.

    Returns:
        (list[int] | None): The teacher class feeding each student class (`match_classes`), None for the identity.
    """
    s_task, t_task = model_task(student), model_task(teacher)
    if t_task != s_task:
        raise KDError(
            f"teacher is a '{t_task}' model but the student is a '{s_task}' model; pass a {s_task} teacher "
            f"(a *{TASK_SUFFIX.get(s_task, '')}.pt checkpoint trained with task={s_task})"
        )
    try:
        th = detect_head(teacher)
    except ValueError as e:
        raise KDError(
            f"teacher ({type(teacher).__name__}) has no Detect head, so it cannot be distilled here; "
            f"pass a detect, segment, pose or obb checkpoint"
        ) from e
    sh = detect_head(student)
    if s_task == "pose" and list(getattr(th, "kpt_shape", [])) != list(getattr(sh, "kpt_shape", [])):
        raise KDError(
            f"teacher predicts keypoints of shape {list(th.kpt_shape)} but the student/data set has "
            f"{list(sh.kpt_shape)}; use a teacher trained with the data set's kpt_shape"
        )
    index = match_classes(th.nc, getattr(teacher, "names", None), sh.nc, names, class_map)
    if th.nl != sh.nl:
        raise KDError(
            f"teacher has {th.nl} detection levels but the student has {sh.nl}; "
            f"use models with the same number of levels (e.g. both P3-P5)"
        )
    ts, ss = [int(s) for s in teacher.stride.tolist()], [int(s) for s in student.stride.tolist()]
    if ts != ss:
        raise KDError(f"teacher strides {ts} differ from student strides {ss}; use models with the same strides")
    return index


def _as_names(names: dict | list | None) -> dict[int, str] | None:
    """Class names as ``{index: name}`` (Ultralytics keeps them as a dict; lists are accepted), or None."""
    if names is None:
        return None
    items = names.items() if isinstance(names, dict) else enumerate(names)
    return {int(k): str(v) for k, v in items}


def match_classes(
    t_nc: int, t_names: dict | None, s_nc: int, s_names: dict | None, class_map: dict | list | None = None
) -> list[int] | None:
    """The teacher class that feeds each student class, or None when both have the same classes in the same order.

    ``class_map`` (student -> teacher index, a dict or a list in student order) wins; else classes are matched by name
    (every student name must be among the teacher's); without names, equal counts mean the same classes.

    Examples:
        >>> match_classes(6, {0: "a", 1: "b", 2: "c", 3: "d", 4: "e", 5: "f"}, 3, {0: "c", 1: "a", 2: "f"})
        [2, 0, 5]
    """
    t_names, s_names = _as_names(t_names), _as_names(s_names)
    if class_map is not None:
        index = _class_map_index(class_map, t_nc, s_nc)
    elif t_names is not None and s_names is not None:
        by_name = {v: k for k, v in sorted(t_names.items(), reverse=True)}  # the first teacher index of a name
        missing = [s_names[i] for i in range(s_nc) if s_names.get(i) not in by_name]
        if missing:
            some = "no class name of the data set is" if len(missing) == s_nc else f"class name(s) {missing} are not"
            raise KDError(
                f"{some} among the teacher's {t_nc} class names (e.g. {list(t_names.values())[:5]}); pass "
                f"class_map=[teacher index for student class 0, 1, ...] or use a teacher trained on these classes"
            )
        index = [by_name[s_names[i]] for i in range(s_nc)]
    elif t_nc == s_nc:
        index = list(range(s_nc))
    else:
        raise KDError(
            f"teacher predicts {t_nc} classes but the student/data set has {s_nc} and no class names tell which is "
            f"which; pass class_map=[teacher index for student class 0, 1, ...]"
        )
    return None if t_nc == s_nc and index == list(range(s_nc)) else index


def _class_map_index(class_map: dict | list, t_nc: int, s_nc: int) -> list[int]:
    """``class_map`` as a list in student order, checked against both class counts (`KDError` naming the fix)."""
    pairs = dict(class_map) if isinstance(class_map, dict) else dict(enumerate(class_map))
    pairs = {int(k): int(v) for k, v in pairs.items()}
    if sorted(pairs) != list(range(s_nc)):
        raise KDError(
            f"class_map must give a teacher class for every student class 0..{s_nc - 1}, got keys {sorted(pairs)}"
        )
    if bad := sorted(v for v in pairs.values() if not 0 <= v < t_nc):
        raise KDError(f"class_map teacher indices {bad} are outside the teacher's {t_nc} classes (0..{t_nc - 1})")
    return [pairs[i] for i in range(s_nc)]


def describe_classes(index: list[int], t_names: dict | None, s_names: dict | None) -> str:
    """One line saying which teacher class feeds which student class, e.g. ``teacher 2 'car' -> student 0 'car'``."""
    t_names, s_names = _as_names(t_names) or {}, _as_names(s_names) or {}
    return ", ".join(
        f"teacher {t} {t_names.get(t, '?')!r} -> student {s} {s_names.get(s, '?')!r}" for s, t in enumerate(index)
    )


def fold_batchnorm(model: nn.Module) -> int:
    """Fold every ``Conv`` block's BatchNorm into its convolution, in place, for a frozen teacher in eval mode.

    As Ultralytics' ``fuse()``, without dropping a YOLO26 head's one-to-many branch; blocks (and hooks) keep their
    identity. Returns the number of blocks folded.
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
