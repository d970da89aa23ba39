# yolokd, AGPL-3.0 License
"""Mask term (segment models): the teacher's instance masks taught at the student's positives.

Coefficients and prototypes are only defined up to a shared basis change, so the term compares the masks they make
(`yolokd.losses.functional.mask_kd`) at up to ``max_instances`` TAL positives per image, inside the assigned box.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from ultralytics.utils.ops import crop_mask

from yolokd.head import confidence, prototypes
from yolokd.losses import functional as kdf
from yolokd.losses import register
from yolokd.losses.base import DistillInputs, Term

__all__ = ["MaskKD"]


@register
class MaskKD(Term):
    """Binary KL between teacher and student instance masks at the student's TAL positives, inside their boxes.

    Args:
        max_instances (int): Positives per image whose masks are compared (the teacher's most confident first).
    """

    type = "mask"
    aliases = ("mask_kd",)  # its type before it took the method's name
    needs_targets = True
    tasks = ("segment",)

    def __init__(self, max_instances: int = 32) -> None:
        """Store how many positives per image are compared."""
        super().__init__()
        if isinstance(max_instances, bool) or max_instances < 1:
            raise ValueError(f"mask: max_instances must be an integer >= 1, got {max_instances!r}")
        self.max_instances = int(max_instances)

    def extra_repr(self) -> str:
        """Show the hyper-parameters."""
        return f"max_instances={self.max_instances}"

    def forward(self, inputs: DistillInputs, adapters: nn.Module | None) -> torch.Tensor:
        """Return the unweighted mask distillation loss."""
        a = self.assigned(inputs)
        s, t = inputs.student.preds, inputs.teacher.preds
        fg = a.fg_mask.float()  # (N, A)
        k = min(self.max_instances, fg.shape[1])
        conf = confidence(t)  # (N, A), in (0, 1): positives first, surest first
        idx = (fg * (1.0 + conf)).topk(k, dim=1).indices  # (N, k)
        weight = fg.gather(1, idx)  # 0 where an image has fewer than k positives
        s_proto, t_proto = prototypes(s), prototypes(t).detach()
        s_log = kdf.mask_logits(s["mask_coefficient"], s_proto, idx)
        t_log = kdf.mask_logits(t["mask_coefficient"].detach(), t_proto, idx)
        if t_log.shape[-2:] != s_log.shape[-2:]:
            t_log = F.interpolate(t_log, s_log.shape[-2:], mode="bilinear", align_corners=False)
        h, w = s_log.shape[-2:]
        img_h, img_w = inputs.batch["img"].shape[-2:]
        boxes = a.target_bboxes.gather(1, idx.unsqueeze(-1).expand(*idx.shape, 4)).float()  # (N, k, 4) pixels
        boxes = boxes * boxes.new_tensor([w / img_w, h / img_h, w / img_w, h / img_h])
        region = crop_mask(s_log.new_ones(idx.numel(), h, w, dtype=torch.float32), boxes.reshape(-1, 4))
        self.record("positives", a.fg_mask.sum(), fg.shape[0])
        self.record("compared", weight.sum(), fg.shape[0])
        return kdf.mask_kd(s_log.flatten(0, 1), t_log.flatten(0, 1), region, weight.flatten())
