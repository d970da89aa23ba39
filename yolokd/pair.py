# yolokd, AGPL-3.0 License
"""The student-teacher pair of a `KDModel`: the taps on both heads, and the shapes one dummy forward measures."""

from __future__ import annotations

from typing import Any

from torch import nn
from ultralytics.nn.distill_model import DistillationModel, FeatureHook

from yolokd.config import KDError
from yolokd.losses import Probe
from yolokd.taps import HEAD, NeckStop, clear_neck_stops, detect_head, dummy_forward


def register_taps(model: nn.Module, store: dict, stage_taps=(), to_neck: bool = False) -> list:
    """Tap the model's Detect head (under `HEAD`) and the ``stage_taps`` into ``store``; return the hook handles.

    ``to_neck`` stops the forward at the head's inputs instead (`NeckStop`).
    """
    head = detect_head(model)
    if to_neck:
        clear_neck_stops(head)
        return [head.register_forward_pre_hook(NeckStop(store, HEAD))]
    modules: list[tuple[nn.Module, Any]] = [(head, HEAD)]
    for attr, stage in stage_taps:
        branch = getattr(head, attr, None)
        if branch is None:
            raise KDError(f"{type(model).__name__} head has no '{attr}' branch to tap")
        modules += [(seq[stage], (attr, level, stage)) for level, seq in enumerate(branch)]
    handles = []
    for module, key in modules:
        DistillationModel._clear_feature_hooks(module)  # stale hooks of a pickled or copied model
        handles.append(module.register_forward_hook(FeatureHook(store, key)))
    return handles


def probe_pair(student: nn.Module, teacher: nn.Module, student_store: dict, teacher_store: dict, imgsz: int) -> Probe:
    """Measure the channels, strides and DFL bins the adapters are built from, by one dummy forward of each model."""
    gs = int(max(student.stride.max(), teacher.stride.max()))
    imgsz = max(gs, -(-int(imgsz) // gs) * gs)
    ch = student.yaml.get("channels", 3) if hasattr(student, "yaml") else 3
    s_feats, s_stages = dummy_forward(student, student_store, HEAD, imgsz, ch)
    t_feats, t_stages = dummy_forward(teacher, teacher_store, HEAD, imgsz, ch)
    return Probe(
        student_channels=[f.shape[1] for f in s_feats],
        teacher_channels=[f.shape[1] for f in t_feats],
        strides=[int(s) for s in student.stride.tolist()],
        student_reg_max=int(detect_head(student).reg_max),
        teacher_reg_max=int(detect_head(teacher).reg_max),
        student_stage_channels={k: v.shape[1] for k, v in s_stages.items()},
        teacher_stage_channels={k: v.shape[1] for k, v in t_stages.items()},
    )
