# yolokd, AGPL-3.0 License
"""Wall-clock timing on any device: `sync` waits for queued GPU work, so that a clock read after it is real."""

from __future__ import annotations

import torch


def sync(device: torch.device | None) -> None:
    """Wait for the work queued on a CUDA ``device``; nothing for another device or None."""
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)
