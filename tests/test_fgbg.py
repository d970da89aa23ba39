# yolokd, AGPL-3.0 License
"""FG/BG: binary_kl, the foreground cosine and background KL terms, their teacher-better gates, and real steps."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from helpers import kd_model, toy_batch
from torch import nn
from ultralytics.utils.tal import make_anchors

from yolokd.config import resolve_method
from yolokd.losses import TERMS, DistillInputs
from yolokd.losses import functional as F
from yolokd.losses.fgbg import fg_masks
from yolokd.targets import Assigned

# ---------------------------------------------------------------------------------------------------- binary_kl


def _bkl(s: float, t: float) -> float:
    """Binary KL of one class by hand, KL(Bernoulli(sigmoid t) || Bernoulli(sigmoid s))."""
    p, q = 1 / (1 + math.exp(-s)), 1 / (1 + math.exp(-t))
    return q * math.log(q / p) + (1 - q) * math.log((1 - q) / (1 - p))


def test_binary_kl_equals_hand_computation():
    s = torch.tensor([[0.0, 1.0], [-2.0, 0.5]])
    t = torch.tensor([[math.log(3.0), -1.0], [1.0, 0.5]])
    rows = [_bkl(0.0, math.log(3.0)) + _bkl(1.0, -1.0), _bkl(-2.0, 1.0) + _bkl(0.5, 0.5)]
    assert F.binary_kl(s, t).item() == pytest.approx(sum(rows) / 2, rel=1e-6)  # mean over rows, summed over classes
    w = torch.tensor([2.0, 0.5])
    assert F.binary_kl(s, t, weight=w).item() == pytest.approx((2 * rows[0] + 0.5 * rows[1]) / 2, rel=1e-6)
    assert F.binary_kl(s, t, weight=w, avg_factor=3.0).item() == pytest.approx(
        (2 * rows[0] + 0.5 * rows[1]) / 3, rel=1e-6
    )
    assert _bkl(0.0, math.log(3.0)) == pytest.approx(0.75 * math.log(1.5) + 0.25 * math.log(0.5))


def test_binary_kl_zero_at_equal_logits_and_empty():
    x = torch.randn(7, 4) * 5
    assert F.binary_kl(x, x).item() == 0.0
    e = torch.zeros(0, 3, requires_grad=True)
    z = F.binary_kl(e, torch.zeros(0, 3))
    z.backward()
    assert z.item() == 0.0 and e.grad is not None


def test_binary_kl_gradcheck_float64():
    s = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    t = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    w = torch.rand(4, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda a, b: F.binary_kl(a, b, weight=w, avg_factor=2.5), (s, t))


def test_binary_kl_large_logits_finite():
    s = torch.tensor([[-1e4, 1e4, 1e4, -1e4]], requires_grad=True)
    t = torch.tensor([[1e4, -1e4, 1e4, -1e4]], requires_grad=True)
    loss = F.binary_kl(s, t)
    loss.backward()
    assert loss.item() == pytest.approx(2e4, rel=1e-6)  # two classes with KL ~ 1e4 each, two with 0
    assert torch.isfinite(s.grad).all() and torch.isfinite(t.grad).all()
    assert s.grad.tolist() == [[-1.0, 1.0, 0.0, 0.0]]  # d/ds = p - q


def test_binary_kl_rejects_bad_shapes():
    with pytest.raises(ValueError, match="shapes differ"):
        F.binary_kl(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="weight must have shape"):
        F.binary_kl(torch.zeros(2, 3), torch.zeros(2, 3), weight=torch.ones(3))


# ---------------------------------------------------------------------------------------------------- hand-made inputs
# One 16x16 image, two levels: P3-like stride 4 (4x4 cells, anchors 0..15) and stride 8 (2x2, anchors 16..19).
# One ground-truth box (0, 0, 8, 8) px of class 1: foreground cells are anchors 0, 1, 4, 5 (centres 2 and 6 px) and
# anchor 16 (centre 4 px). TAL positives: anchors 0, 1, 4, 5; anchor 16 is foreground but not a positive.
GT = (0.0, 0.0, 8.0, 8.0)
POS = [0, 1, 4, 5]
FG = [0, 1, 4, 5, 16]
BG = [a for a in range(20) if a not in FG]
NC, C = 2, 3


def _dist(box: tuple[float, ...], anchors: torch.Tensor, strides: torch.Tensor) -> torch.Tensor:
    """ltrb distances (A, 4) in grid units that decode to ``box`` (pixels) at every anchor."""
    b = torch.tensor(box) / strides  # (A, 4) in grid units
    return torch.stack(
        [anchors[:, 0] - b[:, 0], anchors[:, 1] - b[:, 1], b[:, 2] - anchors[:, 0], b[:, 3] - anchors[:, 1]], 1
    )


def _dfl_logits(dist: torch.Tensor, reg_max: int = 16) -> torch.Tensor:
    """DFL logits (4 * reg_max, A) whose expectation is exactly ``dist`` (A, 4): mass on the two nearest bins."""
    a = dist.shape[0]
    logits = torch.full((a, 4, reg_max), -1e4)
    k = dist.floor().long().clamp(0, reg_max - 2)
    f = (dist - k).clamp(0, 1)
    logits.scatter_(2, k.unsqueeze(-1), (1 - f).clamp(min=1e-12).log().unsqueeze(-1))
    logits.scatter_(2, (k + 1).unsqueeze(-1), f.clamp(min=1e-12).log().unsqueeze(-1))
    return logits.view(a, 4 * reg_max).T


def make_inputs(t_logit=None, s_logit=None, t_box=None, s_box=None, same_feats=False, s_scores=None, t_scores=None):
    """Hand-made `DistillInputs`: student reg_max 1 (plain distances), teacher reg_max 16 (DFL).

    ``t_logit``/``s_logit``: class-1 logit at each positive (list of 4); ``t_box``/``s_box``: the box each model
    predicts at every anchor (pixels); ``s_scores``/``t_scores``: full (1, NC, 20) score tensors (override logits).
    """
    g = torch.Generator().manual_seed(0)
    shapes = [(4, 4), (2, 2)]
    t_feats = [torch.randn(1, C, h, w, generator=g) for h, w in shapes]
    s_feats = [f.clone() if same_feats else torch.randn(1, C, *f.shape[-2:], generator=g) for f in t_feats]
    s_feats = [f.requires_grad_(True) for f in s_feats]
    anchors, strides = make_anchors(t_feats, torch.tensor([4.0, 8.0]))
    a = anchors.shape[0]

    def scores(logits):
        x = torch.full((1, NC, a), -6.0)
        if logits is not None:
            x[0, 1, POS] = torch.tensor(logits, dtype=torch.float32)
        return x

    s_sc = s_scores if s_scores is not None else scores(s_logit)
    t_sc = t_scores if t_scores is not None else scores(t_logit)
    s_boxes = _dist(s_box or GT, anchors, strides).T.unsqueeze(0)  # (1, 4, A), reg_max 1
    t_boxes = _dfl_logits(_dist(t_box or GT, anchors, strides)).unsqueeze(0)  # (1, 64, A), reg_max 16
    fg_mask = torch.zeros(1, a, dtype=torch.bool)
    fg_mask[0, POS] = True
    assigned = Assigned(
        fg_mask=fg_mask,
        target_gt_idx=torch.zeros(1, a, dtype=torch.long),
        target_bboxes=torch.tensor(GT).expand(1, a, 4).clone(),
        anchor_points=anchors,
        stride_tensor=strides,
        target_labels=torch.ones(1, a, dtype=torch.long),
        alpha=0.5,
        beta=6.0,
    )
    x1, y1, x2, y2 = GT
    batch = {
        "img": torch.zeros(1, 3, 16, 16),
        "cls": torch.tensor([[1.0]]),
        "bboxes": torch.tensor([[(x1 + x2) / 32, (y1 + y2) / 32, (x2 - x1) / 16, (y2 - y1) / 16]]),
        "batch_idx": torch.tensor([0.0]),
    }
    return DistillInputs(
        student_feats=s_feats,
        teacher_feats=t_feats,
        student_preds={"boxes": s_boxes, "scores": s_sc, "feats": s_feats},
        teacher_preds={"boxes": t_boxes, "scores": t_sc, "feats": t_feats},
        batch=batch,
        student_head=SimpleNamespace(reg_max=1),
        teacher_head=SimpleNamespace(reg_max=16),
        assigned=assigned,
    )


IDENTITY = nn.ModuleList([nn.Identity(), nn.Identity()])


def _cos_dist(s: torch.Tensor, t: torch.Tensor, anchor: int) -> float:
    """1 - cos(s, t) at one anchor (global index), by hand in float64."""
    level, idx = (0, anchor) if anchor < 16 else (1, anchor - 16)
    u = s[level].detach().double().flatten(2)[0, :, idx]
    v = t[level].double().flatten(2)[0, :, idx]
    return 1.0 - float(u @ v / (u.norm() * v.norm()))


def _expected_fg(inputs: DistillInputs, open_pos: list[int], keep_non_positive: bool = True) -> float:
    """Sum over levels of the mean cosine distance over the counted cells (open positives + kept anchor 16)."""
    lvl0 = [_cos_dist(inputs.student_feats, inputs.teacher_feats, a) for a in open_pos]
    lvl1 = [_cos_dist(inputs.student_feats, inputs.teacher_feats, 16)] if keep_non_positive else []
    return (sum(lvl0) / len(lvl0) if lvl0 else 0.0) + (sum(lvl1) / len(lvl1) if lvl1 else 0.0)


def test_hand_inputs_foreground_cells():
    masks = fg_masks(make_inputs())
    assert torch.cat([m.flatten(1) for m in masks], 1)[0].nonzero().flatten().tolist() == FG


# ---------------------------------------------------------------------------------------------------- fgbg_fg


@pytest.mark.parametrize(
    "t_better, frac",
    [([True] * 4, 1.0), ([False] * 4, 0.0), ([True, False, False, True], 0.5), ([False, True, False, False], 0.25)],
)
def test_fgbg_fg_gate_by_construction(t_better, frac):
    # same boxes (IoU 1 for both); the better model has logit 2 for the assigned class, the worse one logit 0
    t_logit = [2.0 if b else 0.0 for b in t_better]
    s_logit = [0.0 if b else 2.0 for b in t_better]
    inputs = make_inputs(t_logit=t_logit, s_logit=s_logit)
    term = TERMS["fgbg_fg"]()
    loss = term(inputs, IDENTITY)
    assert term.stats["fg_gate_open"] == frac
    open_pos = [a for a, b in zip(POS, t_better) if b]
    assert loss.item() == pytest.approx(_expected_fg(inputs, open_pos), rel=1e-5)
    term = TERMS["fgbg_fg"](keep_non_positive=False)
    assert term(inputs, IDENTITY).item() == pytest.approx(_expected_fg(inputs, open_pos, False), rel=1e-5, abs=1e-7)
    assert term.stats["fg_gate_open"] == frac


def test_fgbg_fg_gate_uses_iou_and_own_reg_max():
    # teacher: higher score (logit 2 vs 0) but a box of IoU 36/64 with the GT: q_T = s(2)^.5 (9/16)^6 < q_S = s(0)^.5
    inputs = make_inputs(t_logit=[2.0] * 4, s_logit=[0.0] * 4, t_box=(1.0, 1.0, 7.0, 7.0))
    term = TERMS["fgbg_fg"]()
    assert term(inputs, IDENTITY).item() == pytest.approx(_expected_fg(inputs, []), rel=1e-5)
    assert term.stats["fg_gate_open"] == 0.0
    # the same student box shrunk instead: teacher better everywhere (its reg_max-16 box decodes exactly to the GT)
    inputs = make_inputs(t_logit=[0.0] * 4, s_logit=[0.0] * 4, s_box=(0.0, 0.0, 7.0, 8.0))
    term.reset_stats()
    term(inputs, IDENTITY)
    assert term.stats["fg_gate_open"] == 1.0
    # equal quality everywhere: the strict gate stays closed
    inputs = make_inputs(t_logit=[1.0] * 4, s_logit=[1.0] * 4)
    term.reset_stats()
    term(inputs, IDENTITY)
    assert term.stats["fg_gate_open"] == 0.0


def test_fgbg_fg_ungated_counts_every_foreground_cell():
    inputs = make_inputs(t_logit=[0.0] * 4, s_logit=[2.0] * 4)  # teacher worse everywhere, but no gate
    term = TERMS["fgbg_fg"](gate=False)
    assert term(inputs, IDENTITY).item() == pytest.approx(_expected_fg(inputs, POS), rel=1e-5)
    assert term.stats["fg_gate_open"] == 1.0
    assert "gate=False" in repr(term) and "keep_non_positive=True" in repr(term)


def test_fgbg_fg_zero_when_student_equals_teacher():
    inputs = make_inputs(t_logit=[1.0] * 4, s_logit=[1.0] * 4, same_feats=True)
    for gate in (True, False):
        assert abs(TERMS["fgbg_fg"](gate=gate)(inputs, IDENTITY).item()) < 1e-6


def test_fgbg_fg_no_boxes_gives_zero_and_closed_stat():
    inputs = make_inputs(t_logit=[2.0] * 4, s_logit=[0.0] * 4)
    inputs.batch = {**inputs.batch, "cls": torch.zeros(0, 1), "bboxes": torch.zeros(0, 4), "batch_idx": torch.zeros(0)}
    inputs.assigned.fg_mask[:] = False
    term = TERMS["fgbg_fg"]()
    loss = term(inputs, IDENTITY)
    loss.backward()
    assert loss.item() == 0.0 and term.stats["fg_gate_open"] == 0.0
    assert inputs.student_feats[0].grad is not None


def test_fgbg_fg_large_values_finite():
    big = [1e4, -1e4, 1e4, -1e4]
    inputs = make_inputs(t_logit=big, s_logit=[-v for v in big])
    for f in inputs.student_feats:
        f.data.mul_(1e4)
    loss = TERMS["fgbg_fg"]()(inputs, IDENTITY)
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(f.grad).all() for f in inputs.student_feats)


# ---------------------------------------------------------------------------------------------------- fgbg_bg


def _bg_scores(open_bg: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher logits [-3, -4] everywhere; the student's max is -1 (teacher lower: open) at ``open_bg`` and at every
    foreground anchor (which must still be excluded), -5 (teacher higher: closed) at the other background anchors."""
    t = torch.tensor([-3.0, -4.0]).view(1, 2, 1).repeat(1, 1, 20)
    s = torch.tensor([-5.0, -6.0]).view(1, 2, 1).repeat(1, 1, 20)
    for a in open_bg + FG:
        s[0, :, a] = torch.tensor([-2.0, -1.0])
    return s.requires_grad_(True), t


@pytest.mark.parametrize("open_bg, frac", [(BG, 1.0), ([], 0.0), (BG[:5], 1 / 3), (BG[::3], 5 / 15)])
def test_fgbg_bg_gate_by_construction(open_bg, frac):
    s, t = _bg_scores(open_bg)
    term = TERMS["fgbg_bg"]()
    loss = term(make_inputs(s_scores=s, t_scores=t), None)
    assert term.stats["bg_gate_open"] == pytest.approx(frac, abs=1e-12)
    # every open anchor has the same student/teacher logits: KL = bkl(-2 | -3) + bkl(-1 | -4), mean over them
    expected = _bkl(-2.0, -3.0) + _bkl(-1.0, -4.0) if open_bg else 0.0
    assert loss.item() == pytest.approx(expected, rel=1e-5, abs=1e-9)
    loss.backward()
    assert (s.grad[0, :, [a for a in range(20) if a not in open_bg]] == 0).all()  # closed and fg anchors: no grad
    if open_bg:
        assert (s.grad[0, :, open_bg] != 0).all()


def test_fgbg_bg_ungated_mean_over_all_background():
    s, t = _bg_scores(BG[:5])
    term = TERMS["fgbg_bg"](gate=False)
    loss = term(make_inputs(s_scores=s, t_scores=t), None)
    open_kl = _bkl(-2.0, -3.0) + _bkl(-1.0, -4.0)
    closed_kl = _bkl(-5.0, -3.0) + _bkl(-6.0, -4.0)
    assert loss.item() == pytest.approx((5 * open_kl + 10 * closed_kl) / 15, rel=1e-5)
    assert term.stats["bg_gate_open"] == 1.0
    assert repr(term) == "FGBGBackground(gate=False)"


def test_fgbg_bg_zero_when_student_equals_teacher():
    x = torch.randn(1, NC, 20)
    for gate in (True, False):
        term = TERMS["fgbg_bg"](gate=gate)
        assert term(make_inputs(s_scores=x.clone(), t_scores=x.clone()), None).item() == 0.0
    assert term.stats["bg_gate_open"] == 1.0


def test_fgbg_bg_large_logits_finite():
    s = torch.full((1, NC, 20), 1e4, requires_grad=True)
    t = torch.full((1, NC, 20), -1e4)
    term = TERMS["fgbg_bg"]()
    loss = term(make_inputs(s_scores=s, t_scores=t), None)
    loss.backward()
    assert term.stats["bg_gate_open"] == 1.0
    assert loss.item() == pytest.approx(2e4, rel=1e-6) and torch.isfinite(s.grad).all()


# ---------------------------------------------------------------------------------------------------- real models


@pytest.mark.parametrize(
    "family, teacher",
    [("yolov8", "yolov8n.yaml"), ("yolo11", "yolo11n.yaml"), ("yolo26", "yolo26n.yaml"), ("yolov8", "yolo11n.yaml")],
)
def test_fgbg_kd_model_step_trains_adapters_only(pico_yamls, family, teacher):
    kd = kd_model(pico_yamls[family], teacher, "fgbg")
    loss, items = kd.loss(toy_batch())
    assert items["fgbg_fg_loss"].item() > 0 and items["fgbg_bg_loss"].item() > 0
    assert torch.isfinite(loss).all()
    stats = kd.term_stats()
    assert 0.0 <= stats["fgbg_fg/fg_gate_open"] <= 1.0 and 0.0 < stats["fgbg_bg/bg_gate_open"] <= 1.0
    loss.sum().backward()
    assert set(kd.projector) == {"fgbg_fg"}
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in kd.projector["fgbg_fg"].parameters())
    assert all(p.grad is None for p in kd.teacher_model.parameters())


def test_fgbg_kd_model_items_equal_functional(pico_yamls, tmp_path):
    # ungated, the items are weight x (sum over levels of cosine_fg over the fg cells) and weight x binary_kl over bg
    y = tmp_path / "fgbg_ungated.yaml"
    y.write_text(
        "terms:\n"
        "  - {type: fgbg_fg, weight: 2.0, params: {gate: false}}\n"
        "  - {type: fgbg_bg, weight: 3.0, params: {gate: false}}\n"
    )
    kd = kd_model(pico_yamls["yolov8"], "yolov8n.yaml", str(y))
    batch = toy_batch()
    _, items = kd.loss(batch)
    with torch.no_grad():
        kd.teacher_model(batch["img"])
        t_out = kd._teacher_feats.pop("head")[1]
        kd.student_model(batch["img"])
        s_out = kd._student_feats.pop("head")
        inputs = DistillInputs(s_out["feats"], t_out["feats"], s_out, t_out, batch)
        masks = fg_masks(inputs)  # strides from input size / feature size (no assignment given)
        fg = sum(
            F.cosine_fg(a(s), t, m)
            for a, s, t, m in zip(kd.projector["fgbg_fg"], s_out["feats"], t_out["feats"], masks)
        )
        bg = ~torch.cat([m.flatten(1) for m in masks], 1)
        kl = F.binary_kl(s_out["scores"].transpose(1, 2)[bg], t_out["scores"].transpose(1, 2)[bg])
    assert 0 < bg.sum() < bg.numel()
    assert items["fgbg_fg_loss"].item() == pytest.approx(2.0 * fg.item(), rel=1e-5)
    assert items["fgbg_bg_loss"].item() == pytest.approx(3.0 * kl.item(), rel=1e-5)


def test_fgbg_yaml_defaults():
    specs = resolve_method("fgbg")
    assert [(s.type, s.name, s.schedule) for s in specs] == [
        ("fgbg_fg", "fgbg_fg", "constant"),
        ("fgbg_bg", "fgbg_bg", "constant"),
    ]
    assert [s.weight for s in specs] == [1.0 * 0.0625, 1000.0 * 0.0625]  # chosen scales x the sweep's factor
    assert specs[0].params == {"gate": True, "keep_non_positive": True}
    assert specs[1].params == {"gate": True}
    assert TERMS["fgbg_fg"].needs_targets and TERMS["fgbg_bg"].needs_targets
