# yolokd, AGPL-3.0 License
"""yolokd: knowledge distillation for Ultralytics YOLO detectors (public names only)."""

from __future__ import annotations

__version__ = "0.1.0"

from yolokd.model import YOLOKD  # noqa: E402
from yolokd.trainer import KDTrainer  # noqa: E402

__all__ = ["YOLOKD", "KDTrainer", "__version__"]
