# yolokd, AGPL-3.0 License
"""Pure functional core of the distillation losses.

Every function takes tensors and returns a tensor; there is no state, no module and no hidden ``detach``. Teacher
inputs are treated as targets but are *not* detached here: callers decide whether gradients may reach the teacher.

Precision policy: float16/bfloat16 (and other non-float64) inputs are upcast with ``.float()`` and the computation runs
in float32; float64 inputs are kept in float64 (so ``torch.autograd.gradcheck`` works). Loss functions return a 0-dim
tensor. Empty inputs (no rows, empty mask) give a zero that is still connected to the autograd graph.

Imported as ``from yolokd.losses import functional as kdf`` (in yolokd and its tests ``F`` always means
``torch.nn.functional``, as here).

One module per family: `feature`, `logits`, `boxes`, `gates`, `tasks`; `_shared` holds the helpers they share
(upcasting, shape checks, reductions). Every public formula is re-exported here.
"""

from __future__ import annotations

from yolokd.losses.functional.boxes import (
    bckd_loc,
    bounded_regression,
    giou_distance,
    giou_loss,
    log_quality,
    teacher_better,
)
from yolokd.losses.functional.feature import align_scale, cosine_fg, cwd, gaussian_imitation, mgd, mgd_mask, pkd
from yolokd.losses.functional.gates import object_gate
from yolokd.losses.functional.logits import binary_kl, kd_qfl, ld, weighted_soft_bce
from yolokd.losses.functional.tasks import keypoint_kd, mask_kd, mask_logits

__all__ = [
    "align_scale",
    "bckd_loc",
    "binary_kl",
    "bounded_regression",
    "cosine_fg",
    "cwd",
    "gaussian_imitation",
    "giou_distance",
    "giou_loss",
    "kd_qfl",
    "keypoint_kd",
    "ld",
    "log_quality",
    "mask_kd",
    "mask_logits",
    "mgd",
    "mgd_mask",
    "object_gate",
    "pkd",
    "teacher_better",
    "weighted_soft_bce",
]
