# yolokd, AGPL-3.0 License
"""FG/BG: the foreground cosine and background KL terms, their teacher-better gates, and real steps."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import kd_model, np_bernoulli_kl, np_standardise, toy_batch
from torch import nn
from ultralytics.utils.tal import make_anchors

from yolokd.config import resolve_method
from yolokd.losses import TERMS, DistillInputs, Side
from yolokd.losses import functional as kdf
from yolokd.losses.fgbg import fg_masks
from yolokd.targets import Assigned

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
        student=Side(s_feats, {"boxes": s_boxes, "scores": s_sc, "feats": s_feats}, reg_max=1),
        teacher=Side(t_feats, {"boxes": t_boxes, "scores": t_sc, "feats": t_feats}, reg_max=16),
        batch=batch,
        strides=[4, 8],
        assigned=assigned,
    )


IDENTITY = nn.ModuleList([nn.Identity(), nn.Identity()])


def _cos_dist(s: torch.Tensor, t: torch.Tensor, anchor: int) -> float:
    """1 - cos(s, t) at one anchor (global index), by hand in float64."""
    level, idx = (0, anchor) if anchor < 16 else (1, anchor - 16)
    u = s[level].detach().double().flatten(2)[0, :, idx]
    v = t[level].double().flatten(2)[0, :, idx]
    return 1.0 - float(u @ v / (u.norm() * v.norm()))


def _expected_fg(inputs: DistillInputs, counted: list[int]) -> float:
    """Sum over levels (anchors 0-15 and 16-19) of the cosine distances at the counted cells of the level, divided by
    the number of the level's foreground cells (the candidates, counted or not)."""
    fg = torch.cat([m.flatten(1) for m in fg_masks(inputs)], 1)[0].nonzero().flatten().tolist()
    total = 0.0
    for level in (range(16), range(16, 20)):
        d = [_cos_dist(inputs.student_feats, inputs.teacher_feats, a) for a in counted if a in level]
        total += sum(d) / max(sum(a in level for a in fg), 1)
    return total


def test_hand_inputs_foreground_cells():
    masks = fg_masks(make_inputs())
    assert torch.cat([m.flatten(1) for m in masks], 1)[0].nonzero().flatten().tolist() == FG


def _sqrt_sigmoid(x: float) -> float:
    """Quality of a positive whose box is exact (IoU 1): sigmoid(logit)^alpha with alpha = 0.5."""
    return (1 / (1 + math.exp(-x))) ** 0.5


# ---------------------------------------------------------------------------------------------------- fgbg_fg


@pytest.mark.parametrize(
    "t_better, is_open",
    [([True] * 4, True), ([False] * 4, False), ([True, False, False, True], False), ([True, True, True, False], True)],
)
def test_fgbg_fg_gate_per_object_opens_all_its_foreground_cells(t_better, is_open):
    # same boxes (IoU 1 for both); the better model has logit 2 at a positive, the worse one logit 0. The object's
    # gate compares the mean qualities over its 4 positives: 2 of 4 each is a tie (strict: closed); 3 of 4 opens it,
    # and then every foreground cell of the box counts: the 4 positives (also anchor 5, where the student is better)
    # and anchor 16 on the second level, which is no positive
    t_logit = [2.0 if b else 0.0 for b in t_better]
    s_logit = [0.0 if b else 2.0 for b in t_better]
    inputs = make_inputs(t_logit=t_logit, s_logit=s_logit)
    term = TERMS["fgbg_fg"]()
    loss = term(inputs, IDENTITY)
    assert term.stats == {"fg_gate_open": float(is_open), "fg_cell_open": float(is_open)}
    assert loss.item() == pytest.approx(_expected_fg(inputs, FG if is_open else []), rel=1e-5, abs=1e-7)


def test_fgbg_fg_gate_is_the_mean_quality_not_a_majority_of_positives():
    # the teacher is better at 3 of the 4 positives, but its mean quality is lower: the object stays closed
    t_logit, s_logit = [0.0, 0.0, 0.0, -6.0], [-1.0, -1.0, -1.0, 6.0]
    q_t, q_s = [_sqrt_sigmoid(x) for x in t_logit], [_sqrt_sigmoid(x) for x in s_logit]
    assert sum(a > b for a, b in zip(q_t, q_s)) == 3 and sum(q_t) / 4 < sum(q_s) / 4  # 0.543 < 0.643
    inputs = make_inputs(t_logit=t_logit, s_logit=s_logit)
    term = TERMS["fgbg_fg"]()
    assert term(inputs, IDENTITY).item() == 0.0
    assert term.stats["fg_gate_open"] == 0.0
    # and the other way round: better at 1 of 4 positives, but by far: open
    inputs = make_inputs(t_logit=[6.0, -6.0, -6.0, -6.0], s_logit=[-9.0, -5.0, -5.0, -5.0])
    term.reset_stats()
    assert term(inputs, IDENTITY).item() == pytest.approx(_expected_fg(inputs, FG), rel=1e-5)
    assert term.stats["fg_gate_open"] == 1.0


def test_fgbg_fg_gate_uses_iou_and_own_reg_max():
    # teacher: higher score (logit 2 vs 0) but a box of IoU 36/64 with the GT: q_T = s(2)^.5 (9/16)^6 < q_S = s(0)^.5
    inputs = make_inputs(t_logit=[2.0] * 4, s_logit=[0.0] * 4, t_box=(1.0, 1.0, 7.0, 7.0))
    term = TERMS["fgbg_fg"]()
    assert term(inputs, IDENTITY).item() == 0.0
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


# Two objects in one 16x16 image: A = (0, 0, 8, 8) px with positives 0, 1, 4 and B = (4, 4, 16, 16) px with positives
# 10, 15. Cell 5 (centre (6, 6) px) lies inside both boxes and is the positive of neither.
GT_B = (4.0, 4.0, 16.0, 16.0)
POS_A, POS_B = [0, 1, 4], [10, 15]
CELLS_A, CELLS_B = [0, 1, 4, 5, 16], [5, 6, 7, 9, 10, 11, 13, 14, 15, 19]


def make_two_objects(open_a: bool, open_b: bool) -> DistillInputs:
    """Both models predict each object's exact box at its positives; the logits decide each object's gate."""
    inputs = make_inputs()
    a = inputs.assigned
    anchors, strides = a.anchor_points, a.stride_tensor
    fg = torch.zeros_like(a.fg_mask)
    fg[0, POS_A + POS_B] = True
    gt_idx = torch.zeros_like(a.target_gt_idx)
    gt_idx[0, POS_B] = 1
    in_b = (gt_idx[0] == 1).unsqueeze(-1)
    a.fg_mask, a.target_gt_idx = fg, gt_idx
    a.target_bboxes = torch.where(in_b, torch.tensor(GT_B), torch.tensor(GT))[None]
    s_dist = torch.where(in_b, _dist(GT_B, anchors, strides), _dist(GT, anchors, strides))
    inputs.student_preds["boxes"] = s_dist.T.unsqueeze(0)
    inputs.teacher_preds["boxes"] = _dfl_logits(s_dist.clamp(0, 14)).unsqueeze(0)  # exact at the positives
    for preds, better in ((inputs.teacher_preds, (open_a, open_b)), (inputs.student_preds, (not open_a, not open_b))):
        preds["scores"][0, 1, POS_A] = 2.0 if better[0] else 0.0
        preds["scores"][0, 1, POS_B] = 2.0 if better[1] else 0.0
    inputs.batch = {**inputs.batch, "cls": torch.tensor([[1.0], [1.0]]), "batch_idx": torch.tensor([0.0, 0.0])}
    inputs.batch["bboxes"] = torch.tensor([[0.25, 0.25, 0.5, 0.5], [0.625, 0.625, 0.75, 0.75]])
    return inputs


@pytest.mark.parametrize(
    "open_a, open_b, counted",
    [
        (True, False, CELLS_A),
        (False, True, CELLS_B),
        (True, True, sorted(set(CELLS_A) | set(CELLS_B))),
        (False, False, []),
    ],
)
def test_fgbg_fg_cell_inside_two_boxes_counts_if_either_gate_is_open(open_a, open_b, counted):
    inputs = make_two_objects(open_a, open_b)
    cells = torch.cat([m.flatten(1) for m in fg_masks(inputs)], 1)[0].nonzero().flatten().tolist()
    assert cells == sorted(set(CELLS_A) | set(CELLS_B))  # 14 foreground cells, cell 5 in both boxes
    term = TERMS["fgbg_fg"]()
    loss = term(inputs, IDENTITY)
    assert loss.item() == pytest.approx(_expected_fg(inputs, counted), rel=1e-5, abs=1e-7)
    assert term.stats == {"fg_gate_open": (open_a + open_b) / 2, "fg_cell_open": len(counted) / 14}


@pytest.mark.parametrize("keep, counted", [(True, CELLS_B), (False, [])])
def test_fgbg_fg_object_without_positives_kept_ungated_or_dropped(keep, counted):
    inputs = make_two_objects(open_a=False, open_b=False)
    inputs.assigned.fg_mask[0, POS_B] = False  # B lost its positives: no quality to compare (A's gate is closed)
    term = TERMS["fgbg_fg"](keep_unassigned=keep)
    loss = term(inputs, IDENTITY)
    assert loss.item() == pytest.approx(_expected_fg(inputs, counted), rel=1e-5, abs=1e-7)
    assert term.stats["fg_gate_open"] == 0.0  # over the objects with positives: A only
    assert term.stats["fg_cell_open"] == len(counted) / 14


def test_fgbg_fg_ungated_counts_every_foreground_cell():
    inputs = make_inputs(t_logit=[0.0] * 4, s_logit=[2.0] * 4)  # teacher worse everywhere, but no gate
    term = TERMS["fgbg_fg"](gate=False)
    assert term(inputs, IDENTITY).item() == pytest.approx(_expected_fg(inputs, FG), rel=1e-5)
    assert term.stats == {"fg_gate_open": 1.0, "fg_cell_open": 1.0}
    assert "gate=False" in repr(term) and "keep_unassigned=True" in repr(term)


def test_fgbg_fg_standardise_hand_computed_on_standardised_maps():
    """With ``standardise`` the term is the same cosine sum on maps standardised per channel (numpy) beforehand."""
    inputs = make_inputs(t_logit=[0.0] * 4, s_logit=[2.0] * 4)
    term = TERMS["fgbg_fg"](gate=False, standardise=True)
    got = term(inputs, IDENTITY).item()
    for f in (*inputs.student_feats, *inputs.teacher_feats):
        f.data.copy_(torch.from_numpy(np_standardise(f.detach().double().numpy())))
    assert got == pytest.approx(_expected_fg(inputs, FG), rel=1e-5)
    assert got != pytest.approx(
        TERMS["fgbg_fg"](gate=False)(make_inputs(t_logit=[0.0] * 4, s_logit=[2.0] * 4), IDENTITY).item(), rel=1e-3
    )
    assert "standardise=True" in repr(term)


def test_fgbg_fg_standardise_makes_the_loss_blind_to_the_teachers_scale_and_offset():
    """The raw cosine ignores a scale of the teacher's map but not an offset (a mean activation); standardised,
    neither moves the loss."""
    base = make_inputs(t_logit=[0.0] * 4, s_logit=[2.0] * 4)
    moved = make_inputs(t_logit=[0.0] * 4, s_logit=[2.0] * 4)
    for f in moved.teacher_feats:
        f.mul_(20.0).add_(3.0)
    std, raw = TERMS["fgbg_fg"](gate=False, standardise=True), TERMS["fgbg_fg"](gate=False)
    assert std(moved, IDENTITY).item() == pytest.approx(std(base, IDENTITY).item(), rel=1e-4)
    assert abs(raw(moved, IDENTITY).item() - raw(base, IDENTITY).item()) > 0.05


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
    assert loss.item() == 0.0 and term.stats == {"fg_gate_open": 0.0, "fg_cell_open": 0.0}
    assert inputs.student_feats[0].grad is not None


def test_fgbg_fg_rejects_an_assignment_of_other_anchors():
    inputs = make_inputs()
    inputs.assigned.fg_mask = inputs.assigned.fg_mask[:, :19]
    with pytest.raises(ValueError, match="assignment has 19 anchors, the neck levels 20"):
        TERMS["fgbg_fg"]()(inputs, IDENTITY)


def test_fgbg_fg_large_values_finite():
    # saturated logits of 1e4 and features scaled by 1e4: quality 1 or e^-5000, still ordered by the log form
    big = [1e4, -1e4, 1e4, -1e4]
    inputs = make_inputs(t_logit=big, s_logit=[-v for v in big])  # each model sure at 2 of 4 positives: a tie
    for f in inputs.student_feats:
        f.data.mul_(1e4)
    term = TERMS["fgbg_fg"]()
    loss = term(inputs, IDENTITY)
    loss.backward()
    assert loss.item() == 0.0 and term.stats["fg_gate_open"] == 0.0  # strict: a tie stays closed
    assert all(torch.isfinite(f.grad).all() for f in inputs.student_feats)
    inputs = make_inputs(t_logit=big, s_logit=[-1e4] * 4)  # the student is unsure everywhere: the teacher is better
    for f in inputs.student_feats:
        f.data.mul_(1e4)
    term.reset_stats()
    loss = term(inputs, IDENTITY)
    loss.backward()
    assert term.stats["fg_gate_open"] == 1.0
    assert loss.item() == pytest.approx(_expected_fg(inputs, FG), rel=1e-5)  # the cosines ignore the 1e4 scale
    assert all(torch.isfinite(f.grad).all() and f.grad.any() for f in inputs.student_feats)


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
    # every open anchor has the same student/teacher logits: KL = bkl(-2 | -3) + bkl(-1 | -4), summed over them and
    # divided by all 15 background anchors (not the open ones)
    expected = (np_bernoulli_kl(-2.0, -3.0) + np_bernoulli_kl(-1.0, -4.0)) * len(open_bg) / len(BG)
    assert loss.item() == pytest.approx(expected, rel=1e-5, abs=1e-9)
    loss.backward()
    assert (s.grad[0, :, [a for a in range(20) if a not in open_bg]] == 0).all()  # closed and fg anchors: no grad
    if open_bg:
        assert (s.grad[0, :, open_bg] != 0).all()


def test_fgbg_bg_ungated_mean_over_all_background():
    s, t = _bg_scores(BG[:5])
    term = TERMS["fgbg_bg"](gate=False)
    loss = term(make_inputs(s_scores=s, t_scores=t), None)
    open_kl = np_bernoulli_kl(-2.0, -3.0) + np_bernoulli_kl(-1.0, -4.0)
    closed_kl = np_bernoulli_kl(-5.0, -3.0) + np_bernoulli_kl(-6.0, -4.0)
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
        inputs = DistillInputs(
            Side(s_out["feats"], s_out), Side(t_out["feats"], t_out), batch, strides=kd.probe.strides
        )
        masks = fg_masks(inputs)  # the probe's strides (no assignment given)
        fg = sum(
            kdf.cosine_fg(a(s), t, m)
            for a, s, t, m in zip(kd.projector["fgbg_fg"], s_out["feats"], t_out["feats"], masks)
        )
        bg = ~torch.cat([m.flatten(1) for m in masks], 1)
        kl = kdf.binary_kl(s_out["scores"].transpose(1, 2)[bg], t_out["scores"].transpose(1, 2)[bg])
    assert 0 < bg.sum() < bg.numel()
    assert items["fgbg_fg_loss"].item() == pytest.approx(2.0 * fg.item(), rel=1e-5)
    assert items["fgbg_bg_loss"].item() == pytest.approx(3.0 * kl.item(), rel=1e-5)


def test_fgbg_yaml_defaults():
    specs = resolve_method("fgbg")
    assert [(s.type, s.name, s.schedule) for s in specs] == [
        ("fgbg_fg", "fgbg_fg", "constant"),
        ("fgbg_bg", "fgbg_bg", "constant"),
    ]
    assert [s.weight for s in specs] == [0.25, 250.0]  # the documented choices x the sweep's 0.25
    assert specs[0].params == {"gate": True, "keep_unassigned": True}
    assert specs[1].params == {"gate": True}
    assert TERMS["fgbg_fg"].needs_targets and TERMS["fgbg_bg"].needs_targets
