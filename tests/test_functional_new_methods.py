# yolokd, AGPL-3.0 License
"""Tests for the PKD, MGD and BCKD formulas of ``yolokd.losses.functional``: pkd, mgd, mgd_mask, bckd_loc.

Expected values are computed independently with numpy or plain python arithmetic, never with the torch expression
under test.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from ultralytics.utils.metrics import bbox_iou

from yolokd.losses import functional as kdf


@pytest.fixture(autouse=True)
def _seed() -> None:
    """Make every test deterministic."""
    torch.manual_seed(0)


def _np_standardise(x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Per channel over (N, H, W), unbiased std."""
    mean = x.mean(axis=(0, 2, 3), keepdims=True)
    std = x.std(axis=(0, 2, 3), ddof=1, keepdims=True)
    return (x - mean) / (std + eps)


def _np_giou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise GIoU of proper xyxy boxes, plain numpy."""
    iw = np.clip(np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]), 0, None)
    ih = np.clip(np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]), 0, None)
    inter = iw * ih
    union = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]) + (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) - inter
    enclose = (np.maximum(a[:, 2], b[:, 2]) - np.minimum(a[:, 0], b[:, 0])) * (
        np.maximum(a[:, 3], b[:, 3]) - np.minimum(a[:, 1], b[:, 1])
    )
    return inter / union - (enclose - union) / enclose


def _boxes(n: int, dtype=torch.float32, generator=None) -> torch.Tensor:
    """``n`` proper xyxy boxes with positive widths and heights."""
    xy = torch.rand(n, 2, generator=generator, dtype=dtype) * 10
    wh = torch.rand(n, 2, generator=generator, dtype=dtype) * 5 + 0.5
    return torch.cat([xy, xy + wh], dim=1)


# --------------------------------------------------------------------------------------------------------------- pkd
def test_pkd_hand_computed_numpy() -> None:
    """pkd = 0.5 x mean of the squared difference of the per-channel standardised maps (numpy, ddof=1)."""
    rng = np.random.default_rng(0)
    s_np, t_np = rng.normal(size=(2, 3, 4, 5)), rng.normal(size=(2, 3, 4, 5)) * 4 + 2
    expected = 0.5 * ((_np_standardise(s_np) - _np_standardise(t_np)) ** 2).mean()
    got = kdf.pkd(torch.tensor(s_np, dtype=torch.float32), torch.tensor(t_np, dtype=torch.float32))
    assert float(got) == pytest.approx(expected, rel=1e-5)


def test_pkd_equals_one_minus_pearson() -> None:
    """With eps -> 0, pkd = (M - 1)/M x mean over channels of (1 - Pearson r), M = N*H*W (docs/methods.md)."""
    rng = np.random.default_rng(1)
    s_np, t_np = rng.normal(size=(2, 4, 3, 3)), rng.normal(size=(2, 4, 3, 3))
    m = 2 * 3 * 3
    r = [np.corrcoef(s_np[:, c].ravel(), t_np[:, c].ravel())[0, 1] for c in range(4)]
    expected = (m - 1) / m * np.mean([1 - x for x in r])
    got = kdf.pkd(torch.tensor(s_np), torch.tensor(t_np), eps=0.0)
    assert float(got) == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("shape", [(1, 1, 1, 2), (2, 3, 4, 4), (3, 8, 2, 5)])
def test_pkd_zero_at_equality(shape: tuple[int, ...]) -> None:
    x = torch.randn(shape)
    assert float(kdf.pkd(x, x)) == 0.0


@pytest.mark.parametrize("which", ["student", "teacher"])
def test_pkd_invariant_to_per_channel_positive_affine_map(which: str) -> None:
    """Scaling each channel by a positive factor and shifting it leaves the loss unchanged (up to eps)."""
    s, t = torch.randn(2, 5, 6, 6, dtype=torch.float64), torch.randn(2, 5, 6, 6, dtype=torch.float64)
    a = torch.tensor([0.01, 0.5, 1.0, 7.0, 300.0], dtype=torch.float64).view(1, 5, 1, 1)
    b = torch.tensor([-100.0, 3.0, 0.0, -2.0, 50.0], dtype=torch.float64).view(1, 5, 1, 1)
    base = kdf.pkd(s, t)
    moved = kdf.pkd(a * s + b, t) if which == "student" else kdf.pkd(s, a * t + b)
    assert float(base) > 0.1
    assert float(moved) == pytest.approx(float(base), rel=1e-4)
    # a negative scale is not a symmetry: it flips the correlation
    assert float(kdf.pkd(-s, t)) != pytest.approx(float(base), rel=1e-2)


def test_pkd_resizes_the_student_or_the_teacher_bilinearly() -> None:
    s, t = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 8, 8)
    up = TF.interpolate(s, size=(8, 8), mode="bilinear", align_corners=False)
    down = TF.interpolate(t, size=(4, 4), mode="bilinear", align_corners=False)
    assert float(kdf.pkd(s, t)) == pytest.approx(float(kdf.pkd(up, t)), rel=1e-6)
    assert float(kdf.pkd(s, t, resize_student=False)) == pytest.approx(float(kdf.pkd(s, down)), rel=1e-6)
    assert float(kdf.pkd(s, t)) != pytest.approx(float(kdf.pkd(s, t, resize_student=False)), rel=1e-3)


def test_pkd_gradcheck() -> None:
    """float64 gradcheck w.r.t. both inputs, also through the resize."""
    s = torch.randn(2, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    t = torch.randn(2, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(kdf.pkd, (s, t))
    s2 = torch.randn(1, 2, 2, 3, dtype=torch.float64, requires_grad=True)
    t2 = torch.randn(1, 2, 4, 6, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda x: kdf.pkd(x, t2), (s2,))


def test_pkd_half_precision_runs_in_float32() -> None:
    s, t = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    got = kdf.pkd(s.half(), t.bfloat16())
    assert got.dtype == torch.float32
    assert float(got) == pytest.approx(float(kdf.pkd(s.half().float(), t.bfloat16().float())), rel=1e-6)


def test_pkd_invalid_inputs() -> None:
    with pytest.raises(ValueError, match="rank 4"):
        kdf.pkd(torch.randn(2, 3, 4), torch.randn(2, 3, 4))
    with pytest.raises(ValueError, match=r"\(N, C\) differ"):
        kdf.pkd(torch.randn(2, 3, 4, 4), torch.randn(2, 4, 4, 4))
    with pytest.raises(ValueError, match="at least 2 values"):
        kdf.pkd(torch.randn(1, 3, 1, 1), torch.randn(1, 3, 1, 1))


# --------------------------------------------------------------------------------------------------------------- mgd
def test_mgd_hand_computed_numpy() -> None:
    """Squared error summed over C*H*W and the batch, divided by N only (no 1/2)."""
    rng = np.random.default_rng(2)
    g_np, t_np = rng.normal(size=(3, 2, 4, 5)), rng.normal(size=(3, 2, 4, 5))
    expected = ((g_np - t_np) ** 2).sum() / 3
    got = kdf.mgd(torch.tensor(g_np, dtype=torch.float32), torch.tensor(t_np, dtype=torch.float32))
    assert float(got) == pytest.approx(expected, rel=1e-5)


def test_mgd_zero_at_equality_and_empty_batch() -> None:
    x = torch.randn(2, 3, 4, 4)
    assert float(kdf.mgd(x, x)) == 0.0
    g = torch.zeros(0, 3, 4, 4, requires_grad=True)
    z = kdf.mgd(g, torch.zeros(0, 3, 4, 4))
    assert z.item() == 0.0 and z.requires_grad


def test_mgd_gradcheck() -> None:
    g = torch.randn(2, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    t = torch.randn(2, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(kdf.mgd, (g, t))


def test_mgd_invalid_inputs() -> None:
    with pytest.raises(ValueError, match="shapes differ"):
        kdf.mgd(torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 5))


# ---------------------------------------------------------------------------------------------------------- mgd_mask
@pytest.mark.parametrize("ratio", [0.65, 0.45, 0.2])
def test_mgd_mask_masked_fraction_is_the_ratio(ratio: float) -> None:
    """For uniform u from a seeded generator the masked fraction is ratio (65,536 draws: 5 sigma < 0.01)."""
    u = torch.rand(16, 1, 64, 64, generator=torch.Generator().manual_seed(3))
    mask = kdf.mgd_mask(u, ratio)
    assert mask.shape == u.shape and mask.dtype == u.dtype
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    assert float(1.0 - mask.mean()) == pytest.approx(ratio, abs=0.01)


def test_mgd_mask_threshold_is_strict_and_extremes() -> None:
    u = torch.tensor([0.25, 0.5, 0.5001, 0.75]).view(1, 1, 2, 2)
    assert kdf.mgd_mask(u, 0.5).flatten().tolist() == [1.0, 1.0, 0.0, 0.0]  # u = 1 - ratio is kept
    r = torch.rand(4, 1, 8, 8) * 0.999 + 0.0005  # strictly inside (0, 1)
    assert kdf.mgd_mask(r, 0.0).eq(1).all() and kdf.mgd_mask(r, 1.0).eq(0).all()


def test_mgd_mask_invalid_inputs() -> None:
    with pytest.raises(ValueError, match=r"\(N, 1, H, W\)"):
        kdf.mgd_mask(torch.rand(2, 3, 4, 4))
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        kdf.mgd_mask(torch.rand(2, 1, 4, 4), 1.5)


# ---------------------------------------------------------------------------------------------------------- bckd_loc
def test_bckd_loc_hand_computed_numpy() -> None:
    """sum_i w_i (1 - GIoU_i) with w_i = max_c |sigmoid(t) - sigmoid(s)|, mean or / avg_factor, times the weight."""
    g = torch.Generator().manual_seed(4)
    sb, tb = _boxes(6, generator=g), _boxes(6, generator=g)
    s, t = torch.randn(6, 3, generator=g), torch.randn(6, 3, generator=g) * 3
    v = torch.rand(6, generator=g)
    sig = lambda x: 1.0 / (1.0 + np.exp(-x))  # noqa: E731
    w = np.abs(sig(t.numpy()) - sig(s.numpy())).max(axis=1)
    per_row = w * (1.0 - _np_giou(sb.numpy().astype(np.float64), tb.numpy().astype(np.float64)))
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
    """Point boxes (zero area) stay finite thanks to the eps clamps; no rows gives a zero in the graph."""
    p = torch.tensor([[1.0, 1.0, 1.0, 1.0]], requires_grad=True)
    loss = kdf.bckd_loc(p, torch.tensor([[3.0, 3.0, 3.0, 3.0]]), torch.zeros(1, 2), torch.ones(1, 2))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(p.grad).all()
    e = torch.zeros(0, 4, requires_grad=True)
    z = kdf.bckd_loc(e, torch.zeros(0, 4), torch.zeros(0, 2), torch.zeros(0, 2))
    assert z.item() == 0.0 and z.requires_grad


def test_bckd_loc_invalid_inputs() -> None:
    with pytest.raises(ValueError, match=r"\(n, 4\)"):
        kdf.bckd_loc(torch.zeros(2, 5), torch.zeros(2, 5), torch.zeros(2, 1), torch.zeros(2, 1))
    with pytest.raises(ValueError, match="rows of logits"):
        kdf.bckd_loc(torch.zeros(2, 4), torch.zeros(2, 4), torch.zeros(3, 1), torch.zeros(3, 1))
    with pytest.raises(ValueError, match="weight must have shape"):
        kdf.bckd_loc(torch.zeros(2, 4), torch.zeros(2, 4), torch.zeros(2, 1), torch.ones(2, 1), weight=torch.ones(3))
