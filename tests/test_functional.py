# yolokd, AGPL-3.0 License
"""Tests for the pure functional distillation losses in ``yolokd.losses.functional``.

Expected values are computed independently with numpy or plain python arithmetic, never with the torch expression
under test.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from yolokd.losses.functional import align_scale, bounded_regression, cosine_fg, cwd, kd_qfl, ld


def _np_log_softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable numpy log-softmax."""
    z = x - x.max(axis=axis, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=axis, keepdims=True))


def _np_sigmoid(x: np.ndarray) -> np.ndarray:
    """Numpy logistic function."""
    return 1.0 / (1.0 + np.exp(-x))


def _grads_finite(loss: torch.Tensor, *inputs: torch.Tensor) -> bool:
    """Backpropagate ``loss`` and check that it and the gradients of ``inputs`` are finite."""
    loss.backward()
    return bool(torch.isfinite(loss)) and all(bool(torch.isfinite(x.grad).all()) for x in inputs)


@pytest.fixture(autouse=True)
def _seed() -> None:
    """Make every test deterministic."""
    torch.manual_seed(0)


# --------------------------------------------------------------------------------------------------------------- cwd
def test_cwd_hand_computed_two_positions() -> None:
    """CWD on a (1,1,1,2) map equals the hand-computed KL(p_T || p_S) = 0.5 ln(4/3)."""
    s = torch.tensor([0.0, math.log(3.0)]).view(1, 1, 1, 2)  # p_S = [1/4, 3/4]
    t = torch.zeros(1, 1, 1, 2)  # p_T = [1/2, 1/2]
    expected = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    assert float(cwd(s, t)) == pytest.approx(expected, rel=1e-6)


def test_cwd_hand_computed_numpy_with_tau() -> None:
    """CWD with tau=2 over several channels matches a numpy KL, scaled by tau^2/(N*C) and not divided by H*W."""
    s_np = np.array([[[[1.0, -2.0], [0.5, 3.0]], [[0.0, 0.0], [1.0, 2.0]]]])  # (1, 2, 2, 2)
    t_np = np.array([[[[0.0, 1.0], [2.0, -1.0]], [[3.0, -3.0], [0.0, 1.0]]]])
    tau = 2.0
    log_ps = _np_log_softmax(s_np.reshape(1, 2, 4) / tau)
    log_pt = _np_log_softmax(t_np.reshape(1, 2, 4) / tau)
    expected = tau**2 / (1 * 2) * (np.exp(log_pt) * (log_pt - log_ps)).sum()
    got = cwd(torch.tensor(s_np, dtype=torch.float32), torch.tensor(t_np, dtype=torch.float32), tau=tau)
    assert float(got) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("shape", [(1, 1, 1, 2), (2, 3, 4, 5), (3, 8, 1, 7)])
def test_cwd_zero_when_equal(shape: tuple[int, ...]) -> None:
    """CWD is exactly zero (and 0-dim float32) when student == teacher."""
    x = torch.randn(shape)
    loss = cwd(x, x.clone(), tau=2.0)
    assert loss.dim() == 0 and loss.dtype == torch.float32
    assert float(loss) == 0.0


@pytest.mark.parametrize("shape", [(1, 2, 3, 3), (2, 3, 2, 4)])
def test_cwd_gradcheck(shape: tuple[int, ...]) -> None:
    """CWD passes float64 gradcheck w.r.t. the student."""
    s = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    t = torch.randn(shape, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda x: cwd(x, t, tau=1.5), (s,))


def test_cwd_large_logits_finite() -> None:
    """CWD stays finite (loss and gradients) for float32 logits of magnitude 1e4 at tau=1."""
    s = (torch.randn(2, 3, 4, 4).sign() * 1e4).requires_grad_()
    t = (torch.randn(2, 3, 4, 4).sign() * -1e4).requires_grad_()
    assert _grads_finite(cwd(s, t), s, t)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cwd_low_precision_returns_float32(dtype: torch.dtype) -> None:
    """Half/bf16 inputs give a finite float32 result that matches the float32 computation on the same values."""
    s, t = torch.randn(2, 3, 4, 4).to(dtype), torch.randn(2, 3, 4, 4).to(dtype)
    loss = cwd(s, t)
    assert loss.dtype == torch.float32 and loss.dim() == 0 and torch.isfinite(loss)
    assert float(loss) == pytest.approx(float(cwd(s.float(), t.float())), rel=1e-6)
    big = (torch.randn(1, 2, 3, 3).sign() * 1e4).to(dtype)  # large logits stay finite in low precision too
    assert torch.isfinite(cwd(big, -big))


def test_cwd_teacher_not_detached() -> None:
    """Gradients reach the teacher input (callers decide about detaching)."""
    s, t = torch.randn(1, 2, 3, 3), torch.randn(1, 2, 3, 3, requires_grad=True)
    cwd(s, t).backward()
    assert t.grad is not None and t.grad.abs().sum() > 0


@pytest.mark.parametrize(
    ("s_shape", "t_shape"), [((1, 2, 3, 3), (1, 2, 3, 4)), ((1, 2, 3, 3), (2, 2, 3, 3)), ((2, 9), (2, 9))]
)
def test_cwd_bad_shapes_raise(s_shape: tuple[int, ...], t_shape: tuple[int, ...]) -> None:
    """Mismatched shapes or a non-4D input raise ValueError."""
    with pytest.raises(ValueError, match="cwd"):
        cwd(torch.randn(s_shape), torch.randn(t_shape))


# ------------------------------------------------------------------------------------------------------------ kd_qfl
def _np_kd_qfl_elementwise(s: np.ndarray, t: np.ndarray, beta: float) -> np.ndarray:
    """Elementwise soft-target BCE times |sigmoid(s) - q|^beta, in numpy."""
    q, p = _np_sigmoid(t), _np_sigmoid(s)
    bce = -(q * np.log(p) + (1.0 - q) * np.log(1.0 - p))
    return bce * np.abs(p - q) ** beta


def test_kd_qfl_hand_computed_scalar() -> None:
    """With s=0 and q=3/4: BCE = ln 2 and factor = 1/4, so beta=2 gives ln(2)/16."""
    s, t = torch.zeros(1, 1), torch.full((1, 1), math.log(3.0))  # sigmoid(ln 3) = 3/4
    assert float(kd_qfl(s, t, beta=2.0)) == pytest.approx(math.log(2.0) / 16.0, rel=1e-6)


@pytest.mark.parametrize("beta", [1.0, 2.0])
def test_kd_qfl_hand_computed_numpy(beta: float) -> None:
    """kd_qfl (mean, weighted mean and avg_factor reductions) matches a numpy computation."""
    s_np = np.array([[0.5, -1.0, 2.0], [0.0, 3.0, -0.5]])
    t_np = np.array([[1.0, 0.0, -2.0], [0.5, 1.0, 0.0]])
    w_np = np.array([2.0, 0.5])
    l_np = _np_kd_qfl_elementwise(s_np, t_np, beta)
    s, t, w = (torch.tensor(a, dtype=torch.float32) for a in (s_np, t_np, w_np))
    assert float(kd_qfl(s, t, beta=beta)) == pytest.approx(l_np.mean(), rel=1e-5)
    assert float(kd_qfl(s, t, beta=beta, weight=w)) == pytest.approx((l_np * w_np[:, None]).mean(), rel=1e-5)
    expected_sum = (l_np * w_np[:, None]).sum() / 4.0
    assert float(kd_qfl(s, t, beta=beta, weight=w, avg_factor=4.0)) == pytest.approx(expected_sum, rel=1e-5)


@pytest.mark.parametrize("shape", [(1, 1), (7, 80), (3, 2)])
@pytest.mark.parametrize("beta", [0.5, 1.0, 2.0])
def test_kd_qfl_zero_when_equal(shape: tuple[int, int], beta: float) -> None:
    """At s == t the BCE is the (non-zero) entropy but the modulating factor vanishes, so the loss is 0 for beta > 0."""
    x = torch.randn(shape)
    loss = kd_qfl(x, x.clone(), beta=beta)
    assert loss.dim() == 0 and loss.dtype == torch.float32
    assert float(loss) == 0.0


def test_kd_qfl_beta_zero_is_plain_bce_entropy_at_equality() -> None:
    """With beta=0 the factor is 1, so at s == t the loss is the Bernoulli entropy (non-zero): ln 2 at s = t = 0."""
    assert float(kd_qfl(torch.zeros(2, 3), torch.zeros(2, 3), beta=0.0)) == pytest.approx(math.log(2.0), rel=1e-6)


@pytest.mark.parametrize("beta", [1.0, 2.0])
def test_kd_qfl_gradcheck(beta: float) -> None:
    """kd_qfl passes float64 gradcheck w.r.t. the student, including through the modulating factor."""
    s = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    t = torch.randn(4, 5, dtype=torch.float64)
    w = torch.rand(4, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda x: kd_qfl(x, t, beta=beta, weight=w, avg_factor=3.0), (s,))


def test_kd_qfl_large_logits_finite() -> None:
    """kd_qfl stays finite for float32 logits of magnitude 1e4, including fully wrong saturated predictions."""
    s = torch.tensor([[1e4, -1e4, 1e4], [-1e4, 0.0, 5.0]], requires_grad=True)
    t = torch.tensor([[-1e4, 1e4, 1e4], [-1e4, 1e4, -1e4]], requires_grad=True)
    loss = kd_qfl(s, t, beta=2.0)
    assert _grads_finite(loss, s, t)
    assert float(loss.detach()) > 0


def test_kd_qfl_weight_and_avg_factor() -> None:
    """Zero weights give 0, avg_factor=2 halves the weighted sum, and a tensor avg_factor acts like a number."""
    s, t = torch.randn(6, 4), torch.randn(6, 4)
    w = torch.rand(6)
    assert float(kd_qfl(s, t, weight=torch.zeros(6))) == 0.0
    total = float(kd_qfl(s, t, weight=w, avg_factor=1))
    assert float(kd_qfl(s, t, weight=w, avg_factor=2)) == pytest.approx(total / 2, rel=1e-6)
    tensor_af = kd_qfl(s, t, weight=w, avg_factor=torch.tensor([2.0], dtype=torch.float64))
    assert tensor_af.dim() == 0 and tensor_af.dtype == torch.float32
    assert float(tensor_af) == pytest.approx(total / 2, rel=1e-6)
    assert float(kd_qfl(s, t)) == pytest.approx(float(kd_qfl(s, t, avg_factor=24)), rel=1e-6)


def test_kd_qfl_empty_is_connected_zero() -> None:
    """An empty input (n == 0) gives a 0-dim zero that still supports backward."""
    s = torch.zeros(0, 3, requires_grad=True)
    loss = kd_qfl(s, torch.zeros(0, 3), avg_factor=1.0)
    assert loss.dim() == 0 and float(loss.detach()) == 0.0
    loss.backward()
    assert s.grad is not None and s.grad.shape == (0, 3)


def test_kd_qfl_bad_shapes_raise() -> None:
    """Mismatched shapes, wrong rank and a wrong weight shape raise ValueError."""
    with pytest.raises(ValueError, match="kd_qfl"):
        kd_qfl(torch.randn(3, 4), torch.randn(3, 5))
    with pytest.raises(ValueError, match="kd_qfl"):
        kd_qfl(torch.randn(3, 4, 1), torch.randn(3, 4, 1))
    with pytest.raises(ValueError, match="weight"):
        kd_qfl(torch.randn(3, 4), torch.randn(3, 4), weight=torch.ones(4))


# ---------------------------------------------------------------------------------------------------------------- ld
def test_ld_hand_computed_two_bins_with_temperature() -> None:
    """LD with T=2 on s=[0, 2 ln 3] vs t=[0, 0]: p_S = [1/4, 3/4], p_T = [1/2, 1/2], loss = 4 * 0.5 ln(4/3)."""
    s = torch.tensor([[0.0, 2.0 * math.log(3.0)]])
    t = torch.zeros(1, 2)
    expected = 2.0**2 * (0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75))
    assert float(ld(s, t, T=2.0)) == pytest.approx(expected, rel=1e-6)


def test_ld_hand_computed_numpy_reductions() -> None:
    """LD per-row KL with weight and avg_factor matches numpy."""
    s_np = np.array([[0.0, 1.0, 2.0, -1.0], [3.0, 0.0, 0.0, 0.0], [0.5, 0.5, -0.5, 1.5]])
    t_np = np.array([[1.0, 1.0, 0.0, 0.0], [0.0, 2.0, 1.0, 0.0], [0.5, 0.5, -0.5, 1.5]])
    w_np = np.array([1.0, 3.0, 2.0])
    T = 1.5
    log_ps, log_pt = _np_log_softmax(s_np / T), _np_log_softmax(t_np / T)
    rows = T**2 * (np.exp(log_pt) * (log_pt - log_ps)).sum(axis=1)
    assert rows[2] == pytest.approx(0.0, abs=1e-12)  # identical third row
    s, t, w = (torch.tensor(a, dtype=torch.float32) for a in (s_np, t_np, w_np))
    assert float(ld(s, t, T=T)) == pytest.approx(rows.mean(), rel=1e-5)
    assert float(ld(s, t, T=T, weight=w)) == pytest.approx((rows * w_np).mean(), rel=1e-5)
    assert float(ld(s, t, T=T, weight=w, avg_factor=5)) == pytest.approx((rows * w_np).sum() / 5, rel=1e-5)


@pytest.mark.parametrize("shape", [(1, 2), (4, 16), (12, 17)])
def test_ld_zero_when_equal(shape: tuple[int, int]) -> None:
    """LD is exactly zero (and 0-dim float32) when student == teacher."""
    x = torch.randn(shape)
    loss = ld(x, x.clone(), T=3.0)
    assert loss.dim() == 0 and loss.dtype == torch.float32
    assert float(loss) == 0.0


def test_ld_gradcheck() -> None:
    """LD passes float64 gradcheck w.r.t. the student."""
    s = torch.randn(6, 8, dtype=torch.float64, requires_grad=True)
    t = torch.randn(6, 8, dtype=torch.float64)
    w = torch.rand(6, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda x: ld(x, t, T=2.0, weight=w), (s,))


def test_ld_large_logits_finite() -> None:
    """LD stays finite for float32 logits of magnitude 1e4 at T=1."""
    s = (torch.randn(8, 16).sign() * 1e4).requires_grad_()
    t = (torch.randn(8, 16).sign() * -1e4).requires_grad_()
    assert _grads_finite(ld(s, t), s, t)


def test_ld_weight_and_avg_factor() -> None:
    """Zero weights give 0, avg_factor=2 halves the sum, and a 0-dim tensor avg_factor works."""
    s, t = torch.randn(5, 8), torch.randn(5, 8)
    w = torch.rand(5)
    assert float(ld(s, t, weight=torch.zeros(5))) == 0.0
    total = float(ld(s, t, weight=w, avg_factor=1.0))
    assert float(ld(s, t, weight=w, avg_factor=2.0)) == pytest.approx(total / 2, rel=1e-6)
    assert float(ld(s, t, weight=w, avg_factor=torch.tensor(2.0))) == pytest.approx(total / 2, rel=1e-6)
    assert float(ld(s, t)) == pytest.approx(float(ld(s, t, avg_factor=5)), rel=1e-6)


def test_ld_empty_is_connected_zero() -> None:
    """An empty input (m == 0) gives a 0-dim zero that still supports backward."""
    s = torch.zeros(0, 16, requires_grad=True)
    loss = ld(s, torch.zeros(0, 16), weight=torch.zeros(0))
    assert loss.dim() == 0 and float(loss.detach()) == 0.0
    loss.backward()
    assert s.grad is not None


def test_ld_bad_shapes_raise() -> None:
    """Mismatched shapes, wrong rank and a wrong weight shape raise ValueError."""
    with pytest.raises(ValueError, match="ld"):
        ld(torch.randn(4, 16), torch.randn(4, 17))
    with pytest.raises(ValueError, match="ld"):
        ld(torch.randn(16), torch.randn(16))
    with pytest.raises(ValueError, match="weight"):
        ld(torch.randn(4, 16), torch.randn(4, 16), weight=torch.ones(4, 1))


# ------------------------------------------------------------------------------------------------------- align_scale
def test_align_scale_hand_computed() -> None:
    """[1, 3] (mean 2, std sqrt 2) mapped onto [0, 10] (mean 5, std sqrt 50) gives [0, 10] exactly with eps=0."""
    s = torch.tensor([1.0, 3.0]).view(1, 1, 1, 2)
    t = torch.tensor([0.0, 10.0]).view(1, 1, 1, 2)
    out = align_scale(s, t, eps=0.0)
    assert out.shape == s.shape and out.dtype == torch.float32
    assert out.flatten().tolist() == pytest.approx([0.0, 10.0], abs=1e-5)


@pytest.mark.parametrize("shape", [(2, 3, 4, 4), (1, 5, 2, 3), (4, 1, 1, 1)])
def test_align_scale_matches_teacher_channel_stats(shape: tuple[int, ...]) -> None:
    """Per channel (over N, H, W) the output has the teacher's mean and unbiased std, checked with numpy."""
    s = torch.randn(shape) * 3.0 + 1.0
    t = torch.randn(shape) * 0.5 - 2.0
    out = align_scale(s, t).numpy().astype(np.float64)
    t_np = t.numpy().astype(np.float64)
    axes = (0, 2, 3)
    np.testing.assert_allclose(out.mean(axis=axes), t_np.mean(axis=axes), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out.std(axis=axes, ddof=1), t_np.std(axis=axes, ddof=1), rtol=1e-5)


def test_align_scale_identity_when_equal() -> None:
    """Aligning a tensor to itself returns it (up to eps)."""
    x = torch.randn(2, 3, 4, 4)
    torch.testing.assert_close(align_scale(x, x.clone()), x, rtol=1e-5, atol=1e-5)


def test_align_scale_gradcheck() -> None:
    """align_scale passes float64 gradcheck w.r.t. the student."""
    s = torch.randn(2, 3, 2, 2, dtype=torch.float64, requires_grad=True)
    t = torch.randn(2, 3, 2, 2, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda x: align_scale(x, t), (s,))


def test_align_scale_large_values_finite() -> None:
    """align_scale stays finite for float32 values of magnitude 1e4."""
    s = (torch.randn(2, 3, 4, 4) * 1e4).requires_grad_()
    t = (torch.randn(2, 3, 4, 4) * 1e4).requires_grad_()
    out = align_scale(s, t)
    assert torch.isfinite(out).all()
    assert _grads_finite((out * torch.randn_like(out)).sum(), s, t)


def test_align_scale_half_input_returns_float32() -> None:
    """Half inputs are computed and returned in float32."""
    out = align_scale(torch.randn(2, 3, 4, 4).half(), torch.randn(2, 3, 4, 4).half())
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


def test_align_scale_bad_shapes_raise() -> None:
    """Mismatched shapes, wrong rank or a single value per channel raise ValueError."""
    with pytest.raises(ValueError, match="align_scale"):
        align_scale(torch.randn(2, 3, 4, 4), torch.randn(2, 4, 4, 4))
    with pytest.raises(ValueError, match="align_scale"):
        align_scale(torch.randn(3, 4, 4), torch.randn(3, 4, 4))
    with pytest.raises(ValueError, match="at least 2"):
        align_scale(torch.randn(1, 3, 1, 1), torch.randn(1, 3, 1, 1))


# ------------------------------------------------------------------------------------------------ bounded_regression
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
    """bounded_regression stays finite for float32 values of magnitude 1e4."""
    rs = (torch.randn(8, 4).sign() * 1e4).requires_grad_()
    rt = torch.randn(8, 4).sign() * 1e4
    y = torch.randn(8, 4).sign() * -1e4
    loss = bounded_regression(rs, rt, y)
    assert _grads_finite(loss, rs) and float(loss.detach()) > 0


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


# --------------------------------------------------------------------------------------------------------- cosine_fg
def test_cosine_fg_hand_computed() -> None:
    """Only masked positions count: numpy cosine over C at the masked (n, h, w)."""
    s_np = np.array([[[[1.0, 2.0]], [[0.0, -1.0]], [[2.0, 0.5]]]])  # (1, 3, 1, 2)
    t_np = np.array([[[[1.0, -4.0]], [[1.0, 9.0]], [[2.0, 0.0]]]])
    mask = torch.tensor([[[True, False]]])
    a, b = s_np[0, :, 0, 0], t_np[0, :, 0, 0]
    expected = 1.0 - a.dot(b) / (np.linalg.norm(a) * np.linalg.norm(b))
    got = cosine_fg(torch.tensor(s_np, dtype=torch.float32), torch.tensor(t_np, dtype=torch.float32), mask)
    assert float(got) == pytest.approx(expected, rel=1e-5)
    # orthogonal (1 - 0) and opposite (1 - (-1)) vectors: (1 + 2) / 2
    s = torch.tensor([[1.0, 1.0], [0.0, 0.0]]).view(1, 2, 1, 2)
    t = torch.tensor([[0.0, -1.0], [1.0, 0.0]]).view(1, 2, 1, 2)
    assert float(cosine_fg(s, t, torch.ones(1, 1, 2, dtype=torch.bool))) == pytest.approx(1.5)


def test_cosine_fg_gate_counts_open_positions_over_all_masked_ones() -> None:
    """The gate selects positions of the mask; the divisor stays the number of masked positions (the candidates)."""
    s = torch.tensor([[1.0, 1.0, 1.0, 5.0], [0.0, 0.0, 0.0, 5.0]]).view(1, 2, 1, 4)  # [1, 0] at the first three
    t = torch.tensor([[0.0, -1.0, 1.0, 1.0], [1.0, 0.0, 0.0, -9.0]]).view(1, 2, 1, 4)  # cos 0, -1, 1; last unmasked
    mask = torch.tensor([[[True, True, True, False]]])
    # distances 1, 2, 0 at the 3 masked positions
    assert float(cosine_fg(s, t, mask)) == pytest.approx(3.0 / 3)
    assert float(cosine_fg(s, t, mask, gate=torch.tensor([[[False, True, True, True]]]))) == pytest.approx(2.0 / 3)
    assert float(cosine_fg(s, t, mask, gate=torch.tensor([[[True, False, False, True]]]))) == pytest.approx(1.0 / 3)
    assert float(cosine_fg(s, t, mask, gate=torch.zeros(1, 1, 4, dtype=torch.bool))) == 0.0
    with pytest.raises(ValueError, match="gate"):
        cosine_fg(s, t, mask, gate=torch.ones(1, 4, dtype=torch.bool))
    with pytest.raises(TypeError, match="gate"):
        cosine_fg(s, t, mask, gate=torch.ones(1, 1, 4))


@pytest.mark.parametrize("shape", [(1, 2, 1, 2), (2, 16, 5, 7), (3, 4, 8, 8)])
def test_cosine_fg_zero_when_equal(shape: tuple[int, ...]) -> None:
    """cosine_fg is zero (up to rounding) when student == teacher, and 0-dim float32."""
    x = torch.randn(shape)
    mask = torch.rand(shape[0], *shape[2:]) > 0.3
    mask.view(-1)[0] = True
    loss = cosine_fg(x, x.clone(), mask)
    assert loss.dim() == 0 and loss.dtype == torch.float32
    assert float(loss) == pytest.approx(0.0, abs=1e-6)


def test_cosine_fg_gradcheck() -> None:
    """cosine_fg passes float64 gradcheck w.r.t. the student."""
    s = torch.randn(2, 5, 3, 3, dtype=torch.float64, requires_grad=True)
    t = torch.randn(2, 5, 3, 3, dtype=torch.float64)
    mask = torch.rand(2, 3, 3) > 0.5
    mask[0, 0, 0] = True
    assert torch.autograd.gradcheck(lambda x: cosine_fg(x, t, mask), (s,))
    gate = torch.rand(2, 3, 3) > 0.5
    assert torch.autograd.gradcheck(lambda x: cosine_fg(x, t, mask, gate=gate), (s,))


def test_cosine_fg_large_values_finite() -> None:
    """cosine_fg stays finite for float32 features of magnitude 1e4."""
    s = (torch.randn(2, 8, 4, 4).sign() * 1e4).requires_grad_()
    t = (torch.randn(2, 8, 4, 4).sign() * 1e4).requires_grad_()
    mask = torch.ones(2, 4, 4, dtype=torch.bool)
    assert _grads_finite(cosine_fg(s, t, mask), s, t)


def test_cosine_fg_equals_torch_cosine_similarity_with_its_gradient_at_zero_vectors() -> None:
    """The per-position distance is ``1 - F.cosine_similarity`` (eps 1e-8), value and gradient, also where the student
    vector is all zero (norm floored at eps: finite gradient ``-t / (eps |t|)``, as PyTorch's)."""
    s = torch.randn(2, 7, 3, 5, dtype=torch.float64)
    t = torch.randn(2, 7, 3, 5, dtype=torch.float64)
    s[0, :, 1, 2] = 0.0  # a zero vector
    mask = torch.ones(2, 3, 5, dtype=torch.bool)
    ref = s.clone().requires_grad_()
    expected = (1.0 - torch.nn.functional.cosine_similarity(ref, t, dim=1)).sum() / mask.sum()
    expected.backward()
    s.requires_grad_()
    loss = cosine_fg(s, t, mask)
    loss.backward()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-12)
    assert torch.isfinite(s.grad).all()
    torch.testing.assert_close(s.grad, ref.grad, rtol=1e-9, atol=1e-9)
    zero = -t[0, :, 1, 2] / (1e-8 * t[0, :, 1, 2].norm()) / mask.sum()
    torch.testing.assert_close(s.grad[0, :, 1, 2], zero, rtol=1e-9, atol=0.0)


def test_cosine_fg_empty_mask_is_connected_zero() -> None:
    """An all-false mask returns a 0-dim zero that still supports backward."""
    s = torch.randn(2, 3, 4, 4, requires_grad=True)
    loss = cosine_fg(s, torch.randn(2, 3, 4, 4), torch.zeros(2, 4, 4, dtype=torch.bool))
    assert loss.dim() == 0 and float(loss.detach()) == 0.0
    loss.backward()
    assert s.grad is not None and float(s.grad.abs().sum()) == 0.0


def test_cosine_fg_bad_shapes_raise() -> None:
    """Mismatched feature shapes, wrong rank or a wrong mask shape raise ValueError; a non-bool mask TypeError."""
    with pytest.raises(ValueError, match="cosine_fg"):
        cosine_fg(torch.randn(2, 3, 4, 4), torch.randn(2, 5, 4, 4), torch.ones(2, 4, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="cosine_fg"):
        cosine_fg(torch.randn(3, 4, 4), torch.randn(3, 4, 4), torch.ones(3, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="mask"):
        cosine_fg(torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4), torch.ones(2, 3, 4, 4, dtype=torch.bool))
    with pytest.raises(TypeError, match="bool"):
        cosine_fg(torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4), torch.ones(2, 4, 4))
