# yolokd, AGPL-3.0 License
"""yolokd: knowledge distillation for Ultralytics YOLO (detect, segment, pose, obb; public names only)."""

from __future__ import annotations

__version__ = "0.1.0"

from yolokd.model import YOLOKD  # noqa: E402
from yolokd.trainer import KDOBBTrainer, KDPoseTrainer, KDSegmentationTrainer, KDTrainer, KDTrainerMixin  # noqa: E402

__all__ = [
    "YOLOKD",
    "KDTrainer",
    "KDTrainerMixin",
    "KDSegmentationTrainer",
    "KDPoseTrainer",
    "KDOBBTrainer",
    "__version__",
]
