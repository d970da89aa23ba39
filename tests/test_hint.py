# yolokd, AGPL-3.0 License
"""Hint terms (Chen et al., NeurIPS 2017): hint, hint_soft, hint_bounded, on hand-built inputs and real models.

Expected values are hand computations in plain python or numpy, never the torch expression under test.
"""

from __future__ import annotations

import math

import pytest
import torch
from helpers import assigned, head_inputs, kd_model, np_soft_bce, toy_batch
from torch import nn
from ultralytics.utils.tal import bbox2dist as ultralytics_bbox2dist

from yolokd.config import resolve_method
from yolokd.losses import TERMS, DistillInputs, Probe
from yolokd.taps import head_outputs

LN2, LN3 = math.log(2.0), math.log(3.0)


# ---------------------------------------------------------------------------------------------------------------- hint
def _identity_adapter(c: int) -> nn.Conv2d:
    conv = nn.Conv2d(c, c, 1)
    with torch.no_grad():
        conv.weight.copy_(torch.eye(c).view(c, c, 1, 1))
        conv.bias.zero_()
    return conv


def test_hint_make_adapters_one_per_level_even_when_channels_match():
    adapters = TERMS["hint"]().make_adapters(Probe([8, 16], [8, 32], [8, 16]))
    assert [(a.in_channels, a.out_channels, a.kernel_size) for a in adapters] == [(8, 8, (1, 1)), (16, 32, (1, 1))]


def test_hint_zero_when_adapted_student_equals_teacher():
    feats = [torch.randn(2, 3, 4, 4), torch.randn(2, 3, 2, 2)]
    adapters = nn.ModuleList(_identity_adapter(3) for _ in feats)
    inputs = head_inputs({}, {}, s_feats=[f.clone() for f in feats], t_feats=feats)
    assert TERMS["hint"]()(inputs, adapters).item() == 0.0


def test_hint_hand_computed_sum_over_levels_of_mean_squared_error():
    # level 0: identity adapter, student = teacher + 1 everywhere -> mse 1
    # level 1: 2 -> 3 channels, zero weight and bias 0.5 -> adapted = 0.5; teacher = 2.5 everywhere -> mse 4
    zero = nn.Conv2d(2, 3, 1)
    with torch.no_grad():
        zero.weight.zero_()
        zero.bias.fill_(0.5)
    adapters = nn.ModuleList([_identity_adapter(2), zero])
    t0 = torch.randn(1, 2, 3, 3)
    s1 = torch.randn(1, 2, 2, 2, requires_grad=True)
    inputs = head_inputs({}, {}, s_feats=[t0 + 1.0, s1], t_feats=[t0, torch.full((1, 3, 2, 2), 2.5)])
    loss = TERMS["hint"]()(inputs, adapters)
    assert loss.dtype == torch.float32 and loss.dim() == 0
    assert loss.item() == pytest.approx(1.0 + 4.0, rel=1e-6)
    loss.backward()
    # d/d bias_c of mean((b - 2.5)^2) over 12 elements = 2 * (0.5 - 2.5) * 4 / 12 per channel
    assert zero.bias.grad.tolist() == pytest.approx([2 * -2.0 * 4 / 12] * 3, rel=1e-6)


def test_hint_shape_mismatch_raises():
    inputs = head_inputs({}, {}, s_feats=[torch.zeros(1, 2, 2, 2)], t_feats=[torch.zeros(1, 4, 2, 2)])
    with pytest.raises(ValueError, match="shapes differ"):
        TERMS["hint"]()(inputs, nn.ModuleList([nn.Conv2d(2, 3, 1)]))


# ----------------------------------------------------------------------------------------------------------- hint_soft
SCORE_SUM = 4.0  # the TAL target-score sum of the hand-made assignments: neither N * A nor the number of positives


def _soft_inputs(s: torch.Tensor, t: torch.Tensor, fg: list[list[bool]], score_sum: float | None = SCORE_SUM):
    n, a = len(fg), len(fg[0])
    asg = assigned(fg, [[0.5, 0.5]] * a, [8.0] * a, torch.zeros(n, a, 4).tolist())
    asg.target_scores_sum = None if score_sum is None else torch.tensor(score_sum)
    return head_inputs({"scores": s}, {"scores": t}, asg)


def test_hint_soft_hand_computed_and_gradient_zero_at_equal_logits():
    s = torch.tensor([[[0.0, LN3, 0.0], [0.0, 0.0, 0.0]]], requires_grad=True)
    t = torch.tensor([[[0.0, 0.0, 0.0], [0.0, LN3, 0.0]]])
    loss = TERMS["hint_soft"]()(_soft_inputs(s, t, [[True, False, False]]), None)
    a1 = np_soft_bce(LN3, 0.5) + np_soft_bce(0.0, 0.75)
    assert loss.item() == pytest.approx((2 * LN2 + 1.5 * a1 + 1.5 * 2 * LN2) / SCORE_SUM, rel=1e-6)
    loss.backward()
    # d/ds = w * (sigmoid(s) - sigmoid(t)) / Z: zero where s == t (the minimum), 1.5 * (3/4 - 1/2) / 4 at (0, 1)
    expected = [[[0.0, 1.5 * 0.25 / SCORE_SUM, 0.0], [0.0, 1.5 * -0.25 / SCORE_SUM, 0.0]]]
    assert torch.allclose(s.grad, torch.tensor(expected), atol=1e-7)


def test_hint_soft_divides_by_the_tal_target_score_sum_like_the_cls_loss():
    # 1 image, 5 anchors, 1 class, s == t == 0: each anchor contributes ln 2, weighted 1.0 (fg) or 1.5 (bg)
    s = t = torch.zeros(1, 1, 5)
    fg = [[True, True, False, False, False]]
    total = (2 * 1.0 + 3 * 1.5) * LN2
    for score_sum in (1.0, 1.7, 40.0):  # Ultralytics' max(target_scores.sum(), 1): not the N * A = 5 anchors
        loss = TERMS["hint_soft"]()(_soft_inputs(s, t, fg, score_sum=score_sum), None)
        assert loss.item() == pytest.approx(total / score_sum, rel=1e-6)
    # an assignment built without target scores falls back to the number of positives (2)
    loss = TERMS["hint_soft"]()(_soft_inputs(s, t, fg, score_sum=None), None)
    assert loss.item() == pytest.approx(total / 2, rel=1e-6)


@pytest.mark.parametrize(
    ("fg", "factor"),
    [([[True, True]], 1.0), ([[True, False]], (1.0 + 1.5) / 2), ([[False, False]], 1.5)],
)
def test_hint_soft_weights_background_anchors_1p5(fg, factor):
    s = t = torch.zeros(1, 3, 2)  # every anchor contributes 3 ln 2 before weighting; 2 anchors over Z = 4
    loss = TERMS["hint_soft"]()(_soft_inputs(s, t, fg), None)
    assert loss.item() == pytest.approx(factor * 2 * 3 * LN2 / SCORE_SUM, rel=1e-6)


def test_hint_soft_custom_weights_and_repr():
    term = TERMS["hint_soft"](w_bg=3.0, w_fg=0.0)
    assert repr(term) == "HintSoft(w_bg=3.0, w_fg=0.0)"
    loss = term(_soft_inputs(torch.zeros(1, 1, 2), torch.zeros(1, 1, 2), [[True, False]]), None)
    assert loss.item() == pytest.approx(3.0 * LN2 / SCORE_SUM, rel=1e-6)


def test_hint_soft_large_logits_float32_finite():
    s = torch.tensor([[[1e4, -1e4], [-3e4, 5e3]]], requires_grad=True)
    t = torch.tensor([[[-1e4, 1e4], [3e4, -5e3]]])
    loss = TERMS["hint_soft"]()(_soft_inputs(s, t, [[True, False]]), None)
    # BCE(x, q) ~ |x| for a confident wrong prediction: (1.0 * (1e4 + 3e4) + 1.5 * (1e4 + 5e3)) / Z
    assert loss.item() == pytest.approx((4e4 + 1.5 * 1.5e4) / SCORE_SUM, rel=1e-5)
    loss.backward()
    assert torch.isfinite(s.grad).all()


def test_hint_soft_requires_assignment():
    with pytest.raises(ValueError, match="needs the TAL assignment"):
        TERMS["hint_soft"]()(head_inputs({"scores": torch.zeros(1, 1, 1)}, {"scores": torch.zeros(1, 1, 1)}), None)


# -------------------------------------------------------------------------------------------------------- hint_bounded
# Four anchors of one image: a0 (0.5, 0.5) stride 8, a1 (1.5, 0.5) stride 8, a2 negative, a3 (1.5, 1.5) stride 16.
# Targets as ltrb grid distances y: a0 [1, 1, 1, 1], a1 [1, .5, 2, 1.5], a3 [.5, .5, .5, .5] (pixel boxes below).
POINTS = [[0.5, 0.5], [1.5, 0.5], [0.5, 0.5], [1.5, 1.5]]
STRIDES = [8.0, 8.0, 16.0, 16.0]
BOXES_PX = [[[-4.0, -4.0, 12.0, 12.0], [4.0, 0.0, 28.0, 16.0], [0.0, 0.0, 0.0, 0.0], [16.0, 16.0, 32.0, 32.0]]]
Y = [[1.0, 1.0, 1.0, 1.0], [1.0, 0.5, 2.0, 1.5], [0.0, 0.0, 0.0, 0.0], [0.5, 0.5, 0.5, 0.5]]
# student: a0 d_s = 4 (b off by 2), a1 d_s = 1, a3 d_s = 2; teacher: a0 d_t = 0, a1 d_t = 4, a3 d_t = 2 (a tie)
RS = [[1.0, 1.0, 1.0, 3.0], [2.0, 0.5, 2.0, 1.5], [9.0, 9.0, 9.0, 9.0], [0.5, 0.5, 1.5, 1.5]]
RT = [[1.0, 1.0, 1.0, 1.0], [1.0, 0.5, 2.0, 3.5], [0.0, 0.0, 0.0, 0.0], [1.5, 1.5, 0.5, 0.5]]


def _bounded_inputs(rs=RS, rt=RT, fg=(True, True, False, True), requires_grad=False) -> DistillInputs:
    s = torch.tensor(rs).t()[None].clone().requires_grad_(requires_grad)  # (1, 4, A): reg_max 1, raw distances
    t = torch.tensor(rt).t()[None]
    return head_inputs({"boxes": s}, {"boxes": t}, assigned([list(fg)], POINTS, STRIDES, BOXES_PX))


@pytest.mark.parametrize(
    ("margin", "expected", "open_frac"),
    [
        (0.0, 4.0 / 3, 1 / 3),  # a0 open (4 > 0); a1 student better (1 < 4): off; a3 tie (2 > 2 false): off
        (0.5, (4.0 + 2.0) / 3, 2 / 3),  # a3 opens (2.5 > 2)
        (3.5, (4.0 + 1.0 + 2.0) / 3, 1.0),  # a1 opens (4.5 > 4)
        (-4.5, 0.0, 0.0),  # nothing open (a0: -0.5 > 0 false)
    ],
)
def test_hint_bounded_hand_computed_gates_and_open_fraction(margin, expected, open_frac):
    term = TERMS["hint_bounded"](margin=margin)
    loss = term(_bounded_inputs(), None)
    assert loss.item() == pytest.approx(expected, rel=1e-6, abs=1e-7)
    assert term.stats["open"] == pytest.approx(open_frac, rel=1e-6)


def test_hint_bounded_gradient_only_at_open_positives():
    inputs = _bounded_inputs(requires_grad=True)
    TERMS["hint_bounded"]()(inputs, None).backward()
    grad = inputs.student_preds["boxes"].grad[0].t()  # (A, 4)
    # only a0 is open: d/dr of (r - y)^2 summed, / 3 positives -> 2 * 2 / 3 on its bottom side; a1 (gated off),
    # a2 (negative) and a3 (tie, off) get exactly zero
    expected = torch.zeros(4, 4)
    expected[0, 3] = 4.0 / 3
    assert torch.allclose(grad, expected, atol=1e-7)


def test_hint_bounded_teacher_strictly_better_everywhere_opens_all():
    term = TERMS["hint_bounded"]()
    loss = term(_bounded_inputs(rt=Y), None)  # teacher exact: d_t = 0 < d_s at every positive
    assert term.stats["open"] == 1.0
    assert loss.item() == pytest.approx((4.0 + 1.0 + 2.0) / 3, rel=1e-6)
    loss = term(_bounded_inputs(rs=Y), None)  # student exact: d_s = 0, never > d_t
    assert loss.item() == 0.0
    assert term.stats["open"] == 0.5  # a mean since the last reset: (3 + 0 open) / (3 + 3 positives)
    term.reset_stats()
    term(_bounded_inputs(rs=Y), None)
    assert term.stats["open"] == 0.0


def test_hint_bounded_dfl_student_and_plain_teacher_hand_computed():
    # one positive at (0.5, 0.5), stride 8, target box [0, 0, 8, 8] px -> y = [.5, .5, .5, .5]
    # student reg_max 2: bins [0, 0] -> 0.5, [0, ln3] -> 0.75, [ln3, 0] -> 0.25: rs = [.5, .5, .75, .25], d_s = 1/8
    s = torch.tensor([0.0, 0.0, 0.0, 0.0, 0.0, LN3, LN3, 0.0]).view(1, 8, 1)
    t = torch.tensor([0.5, 0.5, 0.5, 0.75]).view(1, 4, 1)  # teacher reg_max 1: d_t = 1/16 < d_s: open
    asg = assigned([[True]], [[0.5, 0.5]], [8.0], [[[0.0, 0.0, 8.0, 8.0]]])
    term = TERMS["hint_bounded"]()
    loss = term(head_inputs({"boxes": s}, {"boxes": t}, asg, s_reg=2, t_reg=1), None)
    assert loss.item() == pytest.approx(0.125, rel=1e-6)
    assert term.stats["open"] == 1.0


def _dfl(dists: list[float], reg_max: int) -> list[float]:
    """DFL logits (4 * reg_max) decoding to ``dists``: integer d on one bin, k + 0.5 split over bins k and k + 1."""
    logits = []
    for d in dists:
        row = [-1e4] * reg_max
        row[math.floor(d)] = row[math.ceil(d)] = 0.0
        logits += row
    return logits


def test_hint_bounded_dfl_student_targets_clamped_to_the_bin_range_like_ultralytics():
    # one positive at (0.5, 0.5), stride 8, box [0, 0, 44, 8] px: y = [.5, .5, 5, .5] grid units, beyond a reg_max-4
    # student's range [0, 3]: Ultralytics' DFL target is bbox2dist(..., reg_max - 1) = y clamped to [0, 2.99]
    asg = assigned([[True]], [[0.5, 0.5]], [8.0], [[[0.0, 0.0, 44.0, 8.0]]])
    s = torch.tensor(_dfl([0.5, 0.5, 3.0, 0.5], 4)).view(1, 16, 1)  # the student at its last bin on the right side
    t = torch.tensor([0.5, 0.5, 5.0, 0.5]).view(1, 4, 1)  # a reg_max-1 teacher exactly on the (unclamped) box
    term = TERMS["hint_bounded"]()
    loss = term(head_inputs({"boxes": s}, {"boxes": t}, asg, s_reg=4, t_reg=1), None)
    # y -> [.5, .5, 2.99, .5]: d_s = (3 - 2.99)^2 = 1e-4 (unclamped: (3 - 5)^2 = 4); the teacher clamped to the same
    # range: d_t = 0 < d_s, the gate is open (unclamped teacher: d_t = 4.04, closed, loss 0)
    assert loss.item() == pytest.approx(1e-4, rel=1e-3)
    assert term.stats["open"] == 1.0
    assert ultralytics_bbox2dist(torch.tensor([0.5, 0.5]), torch.tensor([0.0, 0.0, 5.5, 1.0]), 3).tolist()[2] == (
        pytest.approx(2.99)
    )  # the clamp this test mirrors


def test_hint_bounded_reg_max_1_student_not_clamped():
    asg = assigned([[True]], [[0.5, 0.5]], [8.0], [[[0.0, 0.0, 44.0, 8.0]]])  # y = [.5, .5, 5, .5]
    s = torch.tensor([0.5, 0.5, 5.5, 0.5]).view(1, 4, 1)  # d_s = 0.25
    t = torch.tensor([0.5, 0.5, 5.0, 0.5]).view(1, 4, 1)  # d_t = 0
    loss = TERMS["hint_bounded"]()(head_inputs({"boxes": s}, {"boxes": t}, asg, s_reg=1, t_reg=1), None)
    assert loss.item() == pytest.approx(0.25, rel=1e-6)


def test_hint_bounded_no_positives_zero_in_graph():
    term = TERMS["hint_bounded"](margin=1.0)
    loss = term(_bounded_inputs(fg=(False,) * 4, requires_grad=True), None)
    assert loss.item() == 0.0 and loss.requires_grad and term.stats["open"] == 0.0
    assert repr(term) == "HintBounded(margin=1.0)"


def test_hint_bounded_large_dfl_logits_float32_finite():
    s = torch.tensor([1e4, -1e4] * 4).view(1, 8, 1).requires_grad_(True)  # all mass on bin 0: rs = 0
    t = torch.tensor([-3e4, 3e4] * 4).view(1, 8, 1)  # all mass on bin 1: rt = 1, clamped to 0.99 like y
    asg = assigned([[True]], [[0.5, 0.5]], [8.0], [[[-4.0, -4.0, 12.0, 12.0]]])  # y = [1, 1, 1, 1] -> 0.99 (reg_max 2)
    term = TERMS["hint_bounded"]()
    loss = term(head_inputs({"boxes": s}, {"boxes": t}, asg, s_reg=2, t_reg=2), None)
    assert loss.item() == pytest.approx(4 * 0.99**2, rel=1e-6) and term.stats["open"] == 1.0  # d_s > d_t = 0
    loss.backward()
    assert torch.isfinite(s.grad).all()


# ---------------------------------------------------------------------------------------------------- yaml and models
def test_hint_yaml_defaults():
    specs = resolve_method("hint")
    assert [(s.type, s.name, s.weight, s.schedule, s.params) for s in specs] == [
        ("hint", "hint", 0.25, "constant", {}),  # the paper's gamma 0.5, halved by the grid's worst cell
        ("hint_soft", "hint_soft", 0.25, "constant", {"w_bg": 1.5, "w_fg": 1.0}),
        ("hint_bounded", "hint_bounded", 0.25, "constant", {"margin": 0.0}),
    ]
    assert TERMS["hint_soft"].needs_targets and TERMS["hint_bounded"].needs_targets and not TERMS["hint"].needs_targets


@pytest.mark.parametrize(("family", "teacher"), [("yolov8", "yolov8n.yaml"), ("yolo26", "yolo26n.yaml")])
def test_hint_soft_real_step_normalised_by_the_assigners_target_scores(pico_yamls, family, teacher):
    """The item is weight x sum(w * soft BCE) / max(sum of the TAL target scores, 1), as Ultralytics' cls loss."""
    kd = kd_model(pico_yamls[family], teacher, "hint")
    crit = kd.student_model.init_criterion()
    kd.student_model.criterion = crit
    assigner = getattr(crit, "one2many", crit).assigner
    seen = []
    handle = assigner.register_forward_hook(lambda m, a, out: seen.append((out[2].sum().item(), out[3].clone())))
    batch = toy_batch()
    try:
        _, items = kd.loss(batch)
    finally:
        handle.remove()
    score_sum, fg = seen[-1]  # the one-to-many assignment (YOLO26's loss also assigns its one-to-one branch first)
    assert fg.any() and 0 < score_sum < fg.sum().item()  # below the number of positives, far below N * A
    with torch.no_grad():
        kd.teacher_model(batch["img"])
        kd.student_model(batch["img"])  # train mode, as in the step: the same batch statistics
        t_scores = head_outputs(kd._teacher_feats.pop("head"))["scores"]
        s_scores = head_outputs(kd._student_feats.pop("head"))["scores"]
    w = torch.where(fg, 1.0, 1.5)
    bce = nn.functional.binary_cross_entropy_with_logits(s_scores, t_scores.sigmoid(), reduction="none").sum(1)
    weight = next(t.weight for t in resolve_method("hint") if t.type == "hint_soft")  # the shipped 0.25
    expected = weight * (bce * w).sum().item() / max(score_sum, 1.0)
    assert items["hint_soft_loss"].item() == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize(
    ("family", "teacher"),
    [("yolov8", "yolov8n.yaml"), ("yolo11", "yolo11n.yaml"), ("yolo26", "yolo26n.yaml"), ("yolov8", "yolo11n.yaml")],
)
def test_hint_real_models_items_and_gradients(pico_yamls, family, teacher):
    kd = kd_model(pico_yamls[family], teacher, "hint")
    assert [(a.in_channels, a.out_channels) for a in kd.projector["hint"]] == list(
        zip(kd.probe.student_channels, kd.probe.teacher_channels)
    )
    loss, items = kd.loss(toy_batch())
    for k in ("hint_loss", "hint_soft_loss", "hint_bounded_loss"):
        assert math.isfinite(items[k].item()) and items[k].item() > 0, k
    assert 0.0 < kd.term_stats()["hint_bounded/open"] <= 1.0
    loss.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in kd.projector.parameters())
    assert all(p.grad is None for p in kd.teacher_model.parameters())
