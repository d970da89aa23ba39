# yolokd, AGPL-3.0 License
"""The frozen teacher at training time: its inference-mode forward, its memory layout, its matched classes."""

from __future__ import annotations

import torch
from torch import nn
from ultralytics.nn.modules import Detect
from ultralytics.utils import WINDOWS

from yolokd.taps import HEAD, NeckReached, detect_head, head_outputs
from yolokd.teacher import fold_batchnorm

# devices on which the frozen teacher may run channels-last (NHWC): on CPU its folded forward took 18 instead of 21 ms
# here (oneDNN convolutions, BENCHMARKS.md "Cost of a step"); on CUDA NHWC suits tensor cores under AMP (not
# measured here); never on MPS, where Ultralytics finds NHWC numerically wrong
NHWC_DEVICES = ("cpu", "cuda")


def teacher_nhwc(device: torch.device, channels_last: bool | None = None, windows: bool = WINDOWS) -> bool:
    """Whether the frozen teacher runs channels-last on ``device``, following Ultralytics' ``channels_last=`` argument.

    ``None`` ("auto") means on for CPU and CUDA, except on Windows.

    Examples:
        >>> cpu, mps = torch.device("cpu"), torch.device("mps")
        >>> teacher_nhwc(cpu), teacher_nhwc(cpu, False), teacher_nhwc(mps), teacher_nhwc(mps, True)
        (True, False, False, False)
    """
    if device.type not in NHWC_DEVICES:
        return False
    return bool(channels_last) if channels_last is not None else not windows


class TeacherRuntime:
    """`KDModel`'s teacher side: its set-up, the forward the terms read, channels-last or not, its matched classes.

    The host class provides ``_freeze_teacher`` and the taps' ``_teacher_feats``.
    """

    def _set_teacher(self, teacher: nn.Module, device: torch.device, classes: list[int] | None) -> None:
        """Hold ``teacher`` frozen on ``device`` with its BatchNorm folded (a cheaper forward), and its ``classes``."""
        self.teacher_model = teacher.to(device)
        self._freeze_teacher()
        fold_batchnorm(self.teacher_model)
        self.teacher_channels_last: bool | None = None  # None: chosen at the first forward, by the image's device
        self.teacher_classes = None if classes is None else [int(c) for c in classes]

    def _class_index(self, device: torch.device) -> torch.Tensor | None:
        """`teacher_classes` as a long tensor on ``device`` (made once per device), or None."""
        if self.teacher_classes is None:
            return None
        cached = getattr(self, "_class_index_cache", None)
        if cached is None or cached.device != device:
            cached = torch.tensor(self.teacher_classes, dtype=torch.long, device=device)
            self._class_index_cache = cached
        return cached

    def set_teacher_channels_last(self, on: bool) -> None:
        """Keep the teacher's weights channels-last and feed it NHWC images, or go back (default: `teacher_nhwc`)."""
        self.teacher_model.to(memory_format=torch.channels_last if on else torch.contiguous_format)
        self.teacher_channels_last = bool(on)

    def _teacher_forward(self, img: torch.Tensor, head: bool = False) -> tuple[dict, dict]:
        """Run the frozen teacher in inference mode, to its neck when no term reads its head; return its taps.

        The tapped outputs are copied once (inference tensors cannot be saved for backward), in the usual layout.

        Args:
            img (torch.Tensor): The batch's images.
            head (bool): Run the head even where no term reads it (the unlabeled images' pseudo-labels need it).

        Returns:
            (tuple[dict, dict]): The head outputs (``{"feats": [...]}`` when stopped at the neck) and the head stages.
        """
        self._teacher_feats.clear()
        if getattr(self, "teacher_channels_last", None) is None:
            args = getattr(self, "args", None) or getattr(self.student_model, "args", None)
            self.set_teacher_channels_last(teacher_nhwc(img.device, getattr(args, "channels_last", None)))
        if self.teacher_channels_last:
            img = img.contiguous(memory_format=torch.channels_last)
        head_module = detect_head(self.teacher_model)
        raw = type(head_module) is Detect  # a plain Detect in training mode returns the raw outputs, undecoded
        with torch.inference_mode():
            try:
                head_module.training = raw  # the head module only: its layers stay in eval mode (folded, frozen)
                self.teacher_model(img)
            except NeckReached:  # `NeckStop`: the neck levels are tapped, the head is not run
                pass
            finally:
                head_module.training = False

        def copy(v):
            return v.clone(memory_format=torch.contiguous_format) if torch.is_tensor(v) else v

        tapped = head_outputs(self._teacher_feats.pop(HEAD))
        if head and "scores" not in tapped:  # stopped at the neck: run the head on the neck levels
            with torch.inference_mode():
                try:
                    head_module.training = raw
                    tapped = head_outputs(head_module.forward(list(tapped["feats"])))  # past its `NeckStop`
                finally:
                    head_module.training = False
        out = {k: [copy(f) for f in v] if k == "feats" else copy(v) for k, v in tapped.items()}
        stages = {k: copy(v) for k, v in self._teacher_feats.items()}
        self._teacher_feats.clear()
        return out, stages
