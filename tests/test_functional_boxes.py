# yolokd, AGPL-3.0 License
"""Box formulas of ``yolokd.losses.functional.boxes``: bounded_regression, teacher_better, giou_loss and bckd_loc;
and the box readers of ``yolokd.head`` they build on: anchor_distances and sort_corners.

Expected values are computed independently with numpy or plain python arithmetic, never with the torch expression
under test.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from helpers import grads_finite, np_giou, np_rotated_distance, np_sigmoid
from ultralytics.utils.metrics import bbox_iou, probiou

from yolokd.head import anchor_distances, sort_corners
from yolokd.losses import functional as kdf
from yolokd.losses.functional import bounded_regression, giou_loss, teacher_better

pytestmark = pytest.mark.usefixtures("seeded")


def _boxes(n: int, dtype=torch.float32, generator=None) -> torch.Tensor:
    """``n`` proper xyxy boxes with positive widths and heights."""
    xy = torch.rand(n, 2, generator=generator, dtype=dtype) * 10
    wh = torch.rand(n, 2, generator=generator, dtype=dtype) * 5 + 0.5
    return torch.cat([xy, xy + wh], dim=1)


# ----------------------------------------------------------------------------------------------- bounded_regression
def test_bounded_regression_hand_computed_gate() -> None:
    """Three rows, one gated off: d_S = [2, 1, 9], d_T = [1, 4, 9] -> gate [1, 0, 0], loss (2 + 0 + 0) / 3."""
    y = torch.tensor([[1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    rs = torch.tensor([[2.0, 2.0, 1.0, 1.0], [1.0, 0.0, 0.0, 0.0], [3.0, 0.0, 0.0, 0.0]])
    rt = torch.tensor([[2.0, 1.0, 1.0, 1.0], [0.0, 2.0, 0.0, 0.0], [0.0, 0.0, 0.0, -3.0]])
    assert float(bounded_regression(rs, rt, y)) == pytest.approx(2.0 / 3.0, rel=1e-6)
    # margin 0.5: row 3 (9 + 0.5 > 9) turns on, row 2 (1 + 0.5 > 4) stays off -> (2 + 0 + 9) / 3
    assert float(bounded_regression(rs, rt, y, margin=0.5)) == pytest.approx(11.0 / 3.0, rel=1e-6)
    # margin 3.0: row 2 (1 + 3 > 4) is still off because the inequality is strict
    assert float(bounded_regression(rs, rt, y, margin=3.0)) == pytest.approx(11.0 / 3.0, rel=1e-6)
    assert float(bounded_regression(rs, rt, y, margin=3.5)) == pytest.approx(12.0 / 3.0, rel=1e-6)


@pytest.mark.parametrize("n", [1, 5, 64])
def test_bounded_regression_zero_when_equal(n: int) -> None:
    """With rs == rt and margin 0 the strict gate d_S > d_T is false everywhere, so the loss is 0."""
    rs, y = torch.randn(n, 4), torch.randn(n, 4)
    loss = bounded_regression(rs, rs.clone(), y)
    assert loss.dim() == 0 and loss.dtype == torch.float32
    assert float(loss) == 0.0
    assert float(bounded_regression(y.clone(), rs, y)) == 0.0  # student perfect: d_S = 0


def test_bounded_regression_gradcheck() -> None:
    """bounded_regression passes float64 gradcheck w.r.t. the student, far from the gate's discontinuity."""
    y = torch.randn(6, 4, dtype=torch.float64)
    rs = (y + torch.randn(6, 4, dtype=torch.float64)).requires_grad_()
    # teacher rows alternate between exact (gate on, d_T = 0 << d_S) and far off (gate off, d_T >> d_S)
    far = torch.tensor([0.0, 50.0, 0.0, 50.0, 0.0, 50.0], dtype=torch.float64)[:, None]
    rt = y + far
    assert torch.autograd.gradcheck(lambda x: bounded_regression(x, rt, y, margin=0.1), (rs,))


def test_bounded_regression_large_values_finite() -> None:
    """bounded_regression stays finite for float32 values of magnitude 1e4 and equals the numpy gate and mean: every
    squared side error is 0 or 4e8, exact in float32, so ties (gate closed) are exact too."""
    rs = (torch.randn(8, 4).sign() * 1e4).requires_grad_()
    rt = torch.randn(8, 4).sign() * 1e4
    y = torch.randn(8, 4).sign() * -1e4
    loss = bounded_regression(rs, rt, y)
    d_s = ((rs.detach().double().numpy() - y.double().numpy()) ** 2).sum(1)
    d_t = ((rt.double().numpy() - y.double().numpy()) ** 2).sum(1)
    expected = (d_s * (d_s > d_t)).mean()
    assert expected > 0 and float(loss.detach()) == pytest.approx(expected, rel=1e-7)
    assert grads_finite(loss, rs)


def test_bounded_regression_empty_is_connected_zero() -> None:
    """An empty input (n == 0) gives a 0-dim zero that still supports backward."""
    rs = torch.zeros(0, 4, requires_grad=True)
    loss = bounded_regression(rs, torch.zeros(0, 4), torch.zeros(0, 4))
    assert loss.dim() == 0 and float(loss.detach()) == 0.0
    loss.backward()
    assert rs.grad is not None


def test_bounded_regression_bad_shapes_raise() -> None:
    """Mismatched shapes or not (n, 4) raise ValueError."""
    with pytest.raises(ValueError, match="bounded_regression"):
        bounded_regression(torch.randn(3, 4), torch.randn(2, 4), torch.randn(3, 4))
    with pytest.raises(ValueError, match="bounded_regression"):
        bounded_regression(torch.randn(3, 4), torch.randn(3, 4), torch.randn(3, 5))
    with pytest.raises(ValueError, match="bounded_regression"):
        bounded_regression(torch.randn(3, 5), torch.randn(3, 5), torch.randn(3, 5))
    with pytest.raises(ValueError, match="bounded_regression"):
        bounded_regression(torch.randn(4), torch.randn(4), torch.randn(4))


# ------------------------------------------------------------------------------------------------- anchor_distances
def test_anchor_distances_at_the_positives_raw_and_target_round_trip():
    """reg_max 1: the raw ltrb sides come back at the positives (decoded to xyxy and back), in row-major order."""
    rs = [[1.0, 1.0, 1.0, 3.0], [2.0, 0.5, 2.0, 1.5], [9.0, 9.0, 9.0, 9.0], [0.5, 0.5, 1.5, 1.5]]  # (A, 4)
    y = [[1.0, 1.0, 1.0, 1.0], [1.0, 0.5, 2.0, 1.5], [0.0, 0.0, 0.0, 0.0], [0.5, 0.5, 0.5, 0.5]]
    points = torch.tensor([[0.5, 0.5], [1.5, 0.5], [0.5, 0.5], [1.5, 1.5]])
    fg = torch.tensor([[True, True, False, True]])
    r = anchor_distances(torch.tensor(rs).t()[None], 1, points)[fg]
    assert r.tolist() == [rs[0], rs[1], rs[3]]
    assert anchor_distances(torch.tensor(y).t()[None], 1, points)[fg].tolist() == [y[0], y[1], y[3]]
    # two images: image 0's positives first, then image 1's, each in anchor order
    two = torch.stack([torch.tensor(rs).t(), torch.tensor(y).t()])  # (2, 4, A)
    fg2 = torch.tensor([[False, False, True, True], [True, False, False, True]])
    assert anchor_distances(two, 1, points)[fg2].tolist() == [rs[2], rs[3], y[0], y[3]]


def test_anchor_distances_dfl_expectation_by_hand():
    """reg_max 4: each side is the expectation of its bin softmax (bins 0..3), at every anchor."""
    low = -1e4
    sides = [
        [0.0, 0.0, 0.0, 0.0],  # uniform: 1.5
        [float(np.log(3.0)), 0.0, low, low],  # 3/4 on bin 0, 1/4 on bin 1: 0.25
        [low, low, 0.0, 0.0],  # 2.5
        [low, low, low, 0.0],  # 3
    ]
    boxes = torch.tensor(sides).view(1, 16, 1).expand(1, 16, 2).contiguous()  # two anchors, the same logits
    points = torch.tensor([[2.5, 1.5], [0.5, 7.5]])
    d = anchor_distances(boxes, 4, points)
    assert d.shape == (1, 2, 4) and d.dtype == torch.float32
    for anchor in range(2):
        assert d[0, anchor].tolist() == pytest.approx([1.5, 0.25, 2.5, 3.0], abs=1e-6)
    with pytest.raises(ValueError, match="4 \\* reg_max"):
        anchor_distances(boxes, 2, points)
    with pytest.raises(ValueError, match="anchor_points"):
        anchor_distances(boxes, 4, points[:1])


# ----------------------------------------------------------------------------------------------------- sort_corners
def test_sort_corners_hand_computed():
    """Inverted x, inverted y, both, and a proper box (unchanged); any leading shape."""
    boxes = torch.tensor([[3.0, 0.0, 1.0, 2.0], [0.0, 5.0, 4.0, 1.0], [2.0, 2.0, -1.0, -3.0], [1.0, 1.0, 2.0, 2.0]])
    want = [[1.0, 0.0, 3.0, 2.0], [0.0, 1.0, 4.0, 5.0], [-1.0, -3.0, 2.0, 2.0], [1.0, 1.0, 2.0, 2.0]]
    assert sort_corners(boxes).tolist() == want
    assert sort_corners(boxes.view(2, 2, 4)).tolist() == [want[:2], want[2:]]


# ---------------------------------------------------------------------------------------- teacher_better, giou_loss
def test_giou_loss_divides_by_the_candidates_not_the_open_gates() -> None:
    s = torch.tensor([[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 4.0, 4.0]])
    t = torch.tensor([[0.0, 0.0, 2.0, 4.0], [5.0, 5.0, 6.0, 6.0], [0.0, 0.0, 4.0, 4.0]])
    d0 = 1 - np_giou(s[0].tolist(), t[0].tolist())  # 1/2
    d1 = 1 - np_giou(s[1].tolist(), t[1].tolist())  # disjoint: 1 + (hull - union) / hull
    assert giou_loss(s, t, torch.tensor([True, False, False])).item() == pytest.approx(d0 / 3, rel=1e-5)
    assert giou_loss(s, t, torch.tensor([True, True, True])).item() == pytest.approx((d0 + d1) / 3, rel=1e-5)
    assert giou_loss(s, t, torch.tensor([True, True, False]), avg_factor=5.0).item() == pytest.approx(
        (d0 + d1) / 5, rel=1e-5
    )
    assert giou_loss(s[:0], t[:0], torch.zeros(0, dtype=torch.bool)).item() == 0.0


def test_teacher_better_is_strict_and_giou_loss_gradcheck() -> None:
    gt = torch.tensor([[0.0, 0.0, 4.0, 4.0]])
    assert teacher_better(gt, gt.clone(), gt).tolist() == [False]  # a tie is not strictly better
    s = torch.tensor([[0.0, 0.0, 2.0, 3.0], [1.0, 1.0, 5.0, 4.0]], dtype=torch.float64, requires_grad=True)
    t = torch.tensor([[0.5, 0.0, 3.0, 4.0], [0.0, 2.0, 4.0, 6.0]], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda x: giou_loss(x, t, torch.tensor([True, True])), (s,))


# ------------------------------------------------------------------------------------------------- rotated_distance
R12 = 12**0.5  # a side whose Gaussian variance is 1


def _rboxes(n: int, generator: torch.Generator, dtype=torch.float32) -> torch.Tensor:
    """(n, 5) random rotated boxes xywhr: centres in [0, 20), sides in [0.5, 10.5), angles in [-pi/4, 3pi/4)."""
    r = torch.rand(n, 5, generator=generator, dtype=dtype)
    return torch.cat((r[:, :2] * 20, r[:, 2:4] * 10 + 0.5, (r[:, 4:] - 0.25) * math.pi), 1)


def test_rotated_distance_by_hand() -> None:
    """Sigma = I shifted by 2: B = 4/8, d = sqrt(1 - e^-0.5); a 2:1 box (variances 4 and 1) against itself turned
    90 degrees: mean covariance 2.5 I, B = ln(6.25 / 4) / 2, e^-B = 0.8, d = sqrt(0.2) (eps aside)."""
    unit = torch.tensor([[0.0, 0.0, R12, R12, 0.0]])
    got = kdf.rotated_distance(unit, unit + torch.tensor([[2.0, 0, 0, 0, 0]]))
    assert float(got) == pytest.approx(math.sqrt(1 - math.exp(-0.5)), abs=1e-6)
    long = torch.tensor([[0.0, 0.0, 2 * R12, R12, 0.0]])
    turned = long + torch.tensor([[0.0, 0, 0, 0, math.pi / 2]])
    assert float(kdf.rotated_distance(long, turned)) == pytest.approx(math.sqrt(0.2), abs=1e-6)
    # the same rectangle: half a turn, or the sides swapped with a quarter turn; only eps is left
    swapped = torch.tensor([[0.0, 0.0, R12, 2 * R12, math.pi / 2]])
    for same in (long + torch.tensor([[0.0, 0, 0, 0, math.pi]]), swapped, long):
        assert float(kdf.rotated_distance(long, same)) < 1e-3
    assert float(kdf.rotated_distance(long, turned)) > 0.4  # the angle is compared, not only the sides


def test_rotated_distance_matches_numpy_and_ultralytics_probiou() -> None:
    g = torch.Generator().manual_seed(7)
    a, b = _rboxes(64, g, torch.float64), _rboxes(64, g, torch.float64)
    b[:32] = a[:32] + torch.randn(32, 5, generator=g, dtype=torch.float64) * 0.3  # near pairs as well as far ones
    b[:32, 2:4] = b[:32, 2:4].abs() + 0.1
    got = kdf.rotated_distance(a, b)
    assert got.dtype == torch.float64 and got.shape == (64,)
    exact = kdf.rotated_distance(a, b, eps=0.0)  # the formula alone, against the numpy matrices
    np.testing.assert_allclose(exact.numpy(), np_rotated_distance(a.numpy(), b.numpy(), eps=0.0), rtol=1e-9)
    np.testing.assert_allclose(got.numpy(), exact.numpy(), rtol=1e-3)  # eps (1e-7) moves it little
    torch.testing.assert_close(got, 1 - probiou(a, b).squeeze(-1), rtol=1e-5, atol=1e-5)
    assert ((got > 0) & (got <= 1 + 1e-7)).all()  # 1 + eps under the root at most


def test_rotated_distance_shapes_and_gradients() -> None:
    g = torch.Generator().manual_seed(8)
    a = _rboxes(6, g, torch.float64).view(2, 3, 5).requires_grad_()
    b = _rboxes(6, g, torch.float64).view(2, 3, 5)
    assert kdf.rotated_distance(a, b).shape == (2, 3)
    assert torch.autograd.gradcheck(lambda x: kdf.rotated_distance(x, b), (a,))
    assert grads_finite(kdf.rotated_distance(a, a.detach().clone()).sum(), a)  # at equal boxes (B clamped at eps)
    # degenerate boxes (a side of 0, a hair-thin box, both lines along one axis): finite values and gradients
    flat = torch.tensor([[1.0, 1.0, 4.0, 0.0, 0.3], [0.0, 0.0, 1e-6, 5.0, 0.0], [0.0, 0.0, 3.0, 0.0, 0.0]])
    flat = flat.double().requires_grad_()
    other = torch.tensor([[1.5, 1.0, 4.0, 2.0, 0.3], [0.5, 0.0, 2.0, 5.0, 0.1], [1.0, 0.0, 5.0, 0.0, 0.0]]).double()
    d = kdf.rotated_distance(flat, other)
    assert torch.isfinite(d).all() and ((d > 0) & (d <= 1 + 1e-7)).all()
    assert grads_finite(d.sum(), flat)
    # in float32 a side of 0 loses nothing to cancellation: det S_a det S_b comes from the sides, not p q - r^2
    thin = kdf.rotated_distance(flat[:1].detach().float(), other[:1].float())
    assert float(thin) == pytest.approx(d[0].item(), abs=1e-5)
    with pytest.raises(ValueError, match=r"\(\*, 5\)"):
        kdf.rotated_distance(torch.zeros(2, 4), torch.zeros(2, 4))


# --------------------------------------------------------------------------------------------------------- bckd_loc
def test_bckd_loc_rotated_boxes_by_hand() -> None:
    """(n, 5) boxes: w_i times the rotated distance. Row 0 is the 2:1 box turned 90 degrees (sqrt(0.2)), with
    w = sigmoid(1e4) - sigmoid(0) = 0.5; row 1 the unit box shifted by 2 (sqrt(1 - e^-0.5)), with w = 0.25 from
    logits ln 3 and 0; / avg_factor 2."""
    sb = torch.tensor([[0.0, 0.0, 2 * R12, R12, 0.0], [0.0, 0.0, R12, R12, 0.0]])
    tb = torch.tensor([[0.0, 0.0, 2 * R12, R12, math.pi / 2], [2.0, 0.0, R12, R12, 0.0]])
    s, t = torch.zeros(2, 2), torch.tensor([[1e4, 0.0], [math.log(3), 0.0]])
    want = (0.5 * math.sqrt(0.2) + 0.25 * math.sqrt(1 - math.exp(-0.5))) / 2
    assert float(kdf.bckd_loc(sb, tb, s, t, avg_factor=2.0)) == pytest.approx(want, abs=1e-6)


def test_bckd_loc_hand_computed_numpy() -> None:
    """sum_i w_i (1 - GIoU_i) with w_i = max_c |sigmoid(t) - sigmoid(s)|, mean or / avg_factor, times the weight."""
    g = torch.Generator().manual_seed(4)
    sb, tb = _boxes(6, generator=g), _boxes(6, generator=g)
    s, t = torch.randn(6, 3, generator=g), torch.randn(6, 3, generator=g) * 3
    v = torch.rand(6, generator=g)
    w = np.abs(np_sigmoid(t.numpy()) - np_sigmoid(s.numpy())).max(axis=1)
    per_row = w * (1.0 - np_giou(sb.numpy().astype(np.float64), tb.numpy().astype(np.float64)))
    assert float(kdf.bckd_loc(sb, tb, s, t)) == pytest.approx(per_row.mean(), rel=1e-5)
    got = kdf.bckd_loc(sb, tb, s, t, weight=v, avg_factor=torch.tensor(2.5))
    assert float(got) == pytest.approx((per_row * v.numpy()).sum() / 2.5, rel=1e-5)


def test_bckd_loc_giou_matches_ultralytics() -> None:
    """Unit weights: the per-row value is 1 - Ultralytics' bbox_iou(GIoU=True) (an independent implementation)."""
    g = torch.Generator().manual_seed(5)
    sb, tb = _boxes(8, dtype=torch.float64, generator=g), _boxes(8, dtype=torch.float64, generator=g)
    s, t = torch.zeros(8, 1, dtype=torch.float64), torch.full((8, 1), 1e4, dtype=torch.float64)  # w = 0.5
    ref = 0.5 * (1.0 - bbox_iou(sb, tb, xywh=False, GIoU=True, eps=1e-12).squeeze(-1))
    assert float(kdf.bckd_loc(sb, tb, s, t, avg_factor=1.0)) == pytest.approx(float(ref.sum()), rel=1e-6)


def test_bckd_loc_exactly_zero_and_in_graph_when_scores_are_equal() -> None:
    sb = _boxes(5).requires_grad_()
    tb = _boxes(5)
    s = torch.randn(5, 4)
    loss = kdf.bckd_loc(sb, tb, s, s.clone(), avg_factor=3.0)
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert sb.grad is not None and torch.equal(sb.grad, torch.zeros_like(sb))


def test_bckd_loc_zero_at_equal_boxes_and_weight_carries_no_gradient() -> None:
    sb = _boxes(4)
    s = torch.randn(4, 3, requires_grad=True)
    t = torch.randn(4, 3, requires_grad=True)
    assert float(kdf.bckd_loc(sb, sb.clone(), s, t)) == pytest.approx(0.0, abs=1e-7)
    sb2 = _boxes(4).requires_grad_()
    kdf.bckd_loc(sb2, sb, s, t).backward()
    assert s.grad is None and t.grad is None and sb2.grad.abs().sum() > 0


def test_bckd_loc_gradcheck() -> None:
    g = torch.Generator().manual_seed(6)
    sb = _boxes(4, dtype=torch.float64, generator=g).requires_grad_()
    tb = _boxes(4, dtype=torch.float64, generator=g).requires_grad_()
    s, t = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
    v = torch.rand(4, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda a, b: kdf.bckd_loc(a, b, s, t, weight=v, avg_factor=2.0), (sb, tb))


def test_bckd_loc_degenerate_and_empty() -> None:
    """Point boxes (zero area) stay finite thanks to the eps clamps: no overlap, union eps, enclosing box 2 x 2, so
    GIoU = -(4 - eps) / 4 and the loss is w x (2 - eps / 4), w = sigmoid(1) - sigmoid(0); no rows gives a zero in
    the graph."""
    p = torch.tensor([[1.0, 1.0, 1.0, 1.0]], requires_grad=True)
    loss = kdf.bckd_loc(p, torch.tensor([[3.0, 3.0, 3.0, 3.0]]), torch.zeros(1, 2), torch.ones(1, 2))
    loss.backward()
    w = float(np_sigmoid(1.0) - 0.5)
    assert float(loss.detach()) == pytest.approx(w * (2.0 - 1e-6 / 4), rel=1e-6)
    assert torch.isfinite(p.grad).all()
    e = torch.zeros(0, 4, requires_grad=True)
    z = kdf.bckd_loc(e, torch.zeros(0, 4), torch.zeros(0, 2), torch.zeros(0, 2))
    assert z.item() == 0.0 and z.requires_grad


def test_bckd_loc_invalid_inputs() -> None:
    with pytest.raises(ValueError, match=r"\(n, 4\) or \(n, 5\)"):
        kdf.bckd_loc(torch.zeros(2, 6), torch.zeros(2, 6), torch.zeros(2, 1), torch.zeros(2, 1))
    with pytest.raises(ValueError, match="rows of logits"):
        kdf.bckd_loc(torch.zeros(2, 4), torch.zeros(2, 4), torch.zeros(3, 1), torch.zeros(3, 1))
    with pytest.raises(ValueError, match="weight must have shape"):
        kdf.bckd_loc(torch.zeros(2, 4), torch.zeros(2, 4), torch.zeros(2, 1), torch.ones(2, 1), weight=torch.ones(3))
