# yolokd, AGPL-3.0 License
"""Pure functional core of the distillation losses, imported as ``from yolokd.losses import functional as kdf``.

Stateless tensor functions; teacher inputs are not detached here. Inputs other than float64 run in float32; losses
return a 0-dim tensor, a graph-connected zero for empty inputs. One module per family (`feature`, `logits`, `boxes`,
`gates`, `tasks`), every public formula re-exported here.
"""

from __future__ import annotations

from yolokd.losses.functional.boxes import (
    bckd_loc,
    bounded_regression,
    giou_distance,
    giou_loss,
    log_quality,
    rotated_distance,
    teacher_better,
)
from yolokd.losses.functional.feature import (
    align_scale,
    cosine_fg,
    cwd,
    gaussian_imitation,
    mgd,
    mgd_mask,
    pkd,
    standardise,
)
from yolokd.losses.functional.gates import anchor_gate, object_gate
from yolokd.losses.functional.logits import binary_kl, kd_qfl, ld, weighted_soft_bce
from yolokd.losses.functional.tasks import keypoint_kd, mask_kd, mask_logits

__all__ = [
    "align_scale",
    "anchor_gate",
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
    "rotated_distance",
    "standardise",
    "teacher_better",
    "weighted_soft_bce",
]
