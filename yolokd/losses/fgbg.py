# yolokd, AGPL-3.0 License
"""FG/BG terms: foreground cosine on neck features, background binary KL on class predictions, teacher-better gating.

From the seed thesis "Distilling one-stage object detection network via decoupling foreground and background
features": the foreground matches feature direction, the background the class predictions, and in both the teacher
guides only where it is better than the student. Open-gate fractions are logged as ``fg_gate_open``,
``fg_cell_open`` and ``bg_gate_open``. See docs/methods.md.
"""

from __future__ import annotations

import torch
from torch import nn

from yolokd.adapters import per_level
from yolokd.losses import functional as kdf
from yolokd.losses import register
from yolokd.losses.base import DistillInputs, Probe, Term
from yolokd.targets import foreground_masks, level_sizes


def fg_masks(inputs: DistillInputs) -> list[torch.Tensor]:
    """Per level, the (N, H, W) bool mask of neck cells whose centre lies inside a ground-truth box of the image."""
    return inputs.memo(
        "fg_masks", lambda: foreground_masks(inputs.ground_truth(), inputs.teacher.feats, inputs.level_strides())
    )


@register
class FGBGForeground(Term):
    """Foreground term: sum over levels of ``cosine_fg(adapter(student), teacher, fg_mask, gate=open cells)``.

    Foreground cells are the neck cells whose centre lies inside a ground-truth box. With ``gate``, an object's gate
    opens when the teacher's mean quality over its TAL positives is above the student's (`functional.object_gate`),
    and then opens all of the object's foreground cells at every level; a cell inside several boxes counts if any of
    their gates is open.

    Args:
        gate (bool): Apply the per-object teacher-better gate.
        keep_unassigned (bool): Keep (ungated) the cells of objects without a TAL positive.
        standardise (bool): Standardise both maps per channel over ``(N, H, W)`` first (`kdf.standardise`, as PKD
            does): the cosine then compares each cell's deviations from the channels' means, not a direction that
            the channels' mean activations (the teacher's feature magnitudes) dominate.
    """

    type = "fgbg_fg"
    needs_targets = True

    def __init__(self, gate: bool = True, keep_unassigned: bool = True, standardise: bool = False) -> None:
        """Store the gating options and whether to standardise."""
        super().__init__()
        self.gate = bool(gate)
        self.keep_unassigned = bool(keep_unassigned)
        self.standardise = bool(standardise)

    def extra_repr(self) -> str:
        """Show the hyper-parameters."""
        return f"gate={self.gate}, keep_unassigned={self.keep_unassigned}, standardise={self.standardise}"

    def make_adapters(self, probe: Probe) -> nn.Module:
        """One 1x1 adapter per neck level, student -> teacher channels."""
        return per_level(probe.student_channels, probe.teacher_channels)

    def open_objects(self, inputs: DistillInputs) -> torch.Tensor:
        """The (N, M) objects whose foreground cells count, and record ``fg_gate_open`` (no host sync)."""
        a = self.assigned(inputs)
        gt = inputs.ground_truth()
        n, m = gt.mask.shape
        pos = a.fg_mask.bool()
        if pos.shape[1] != (cells := sum(level_sizes(inputs.teacher.feats))):
            raise ValueError(f"fgbg_fg: assignment has {pos.shape[1]} anchors, the neck levels {cells}")
        idx = a.target_gt_idx.long().clamp(0, m - 1)
        assigned = torch.zeros(n, m, device=pos.device).scatter_add(1, idx, pos.float()) > 0  # objects with positives
        if self.gate:
            lq_s, lq_t = inputs.log_qualities()
            open_ = kdf.object_gate(lq_t, lq_s, pos, idx, m)
        else:
            open_ = assigned
        self.record("fg_gate_open", (open_ & assigned).sum(), assigned.sum())
        if self.keep_unassigned or not self.gate:
            open_ = open_ | ~assigned
        return open_ & gt.mask

    def forward(self, inputs: DistillInputs, adapters: nn.Module | None) -> torch.Tensor:
        """Return the unweighted foreground cosine loss summed over levels; record the open fractions."""
        masks = fg_masks(inputs)
        cells = foreground_masks(
            inputs.ground_truth(), inputs.teacher.feats, inputs.level_strides(), self.open_objects(inputs)
        )
        self.record("fg_cell_open", sum(c.sum() for c in cells), sum(m.sum() for m in masks))
        loss = 0.0
        for (s, t), m, c in zip(inputs.adapted_pairs(adapters, self.standardise), masks, cells):
            loss = loss + kdf.cosine_fg(s, t, m, gate=c)  # over all the level's foreground cells, not the open ones
        return loss.float().reshape(())


@register
class FGBGBackground(Term):
    """Background term: ``binary_kl(student_scores, teacher_scores)`` at gated background anchors.

    Summed over the open anchors and divided by all background anchors (cells inside no box). With ``gate``, an anchor
    is open where the teacher's maximum class probability is strictly lower than the student's.

    Args:
        gate (bool): Apply the teacher-better gate.
    """

    type = "fgbg_bg"
    needs_targets = True

    def __init__(self, gate: bool = True) -> None:
        """Store the gating option."""
        super().__init__()
        self.gate = bool(gate)

    def extra_repr(self) -> str:
        """Show the hyper-parameters."""
        return f"gate={self.gate}"

    def forward(self, inputs: DistillInputs, adapters: nn.Module | None) -> torch.Tensor:
        """Return the unweighted background KL (open anchors over all background anchors); record ``bg_gate_open``."""
        s = inputs.student.preds["scores"].float().transpose(1, 2)  # (N, A, nc)
        t = inputs.teacher.preds["scores"].float().transpose(1, 2)
        bg = ~torch.cat([m.flatten(1) for m in fg_masks(inputs)], dim=1)  # (N, A)
        if bg.shape[1] != s.shape[1]:
            raise ValueError(f"fgbg_bg: head has {s.shape[1]} anchors, the neck levels {bg.shape[1]}")
        open_ = bg & (t.detach().amax(-1) < s.detach().amax(-1)) if self.gate else bg
        self.record("bg_gate_open", open_.sum(), bg.sum())
        w = open_.reshape(-1).float()  # a 0/1 weight over every anchor: no boolean indexing, no host sync
        kl = kdf.binary_kl(
            s.reshape(-1, s.shape[-1]), t.reshape(-1, t.shape[-1]), weight=w, avg_factor=bg.sum().clamp(min=1)
        )
        return kl.float().reshape(())
