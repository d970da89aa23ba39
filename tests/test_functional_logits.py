# yolokd, AGPL-3.0 License
"""Logit formulas of ``yolokd.losses.functional.logits``: kd_qfl, ld, binary_kl and weighted_soft_bce.

Expected values are computed independently with numpy or plain python arithmetic, never with the torch expression
under test.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from helpers import KL_TOLERANCE, grads_finite, logit_draws, np_bernoulli_kl, np_log_softmax, np_sigmoid, np_soft_bce

from yolokd.losses import functional as kdf
from yolokd.losses.functional import kd_qfl, ld, weighted_soft_bce

pytestmark = pytest.mark.usefixtures("seeded")

LN2, LN3 = math.log(2.0), math.log(3.0)


# ----------------------------------------------------------------------------------------------------------- kd_qfl
def _np_kd_qfl_elementwise(s: np.ndarray, t: np.ndarray, beta: float) -> np.ndarray:
    """Elementwise soft-target BCE times |sigmoid(s) - q|^beta, in numpy."""
    q, p = np_sigmoid(t), np_sigmoid(s)
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
    """kd_qfl stays finite for float32 logits of magnitude 1e4, including fully wrong saturated predictions, and has
    the hand value: a wrong saturated element costs |logit| = 1e4 (factor 1), a right one 0, s = 0 against q = 1 costs
    ln 2 x (1/2)^2, s = 5 against q = 0 costs softplus(5) x sigmoid(5)^2."""
    s = torch.tensor([[1e4, -1e4, 1e4], [-1e4, 0.0, 5.0]], requires_grad=True)
    t = torch.tensor([[-1e4, 1e4, 1e4], [-1e4, 1e4, -1e4]], requires_grad=True)
    loss = kd_qfl(s, t, beta=2.0)
    softplus5, sigmoid5 = 5.0 + math.log1p(math.exp(-5.0)), 1.0 / (1.0 + math.exp(-5.0))
    expected = (1e4 + 1e4 + 0.0 + 0.0 + LN2 / 4 + softplus5 * sigmoid5**2) / 6
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-6)
    assert grads_finite(loss, s, t)


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


# --------------------------------------------------------------------------------------------------------------- ld
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
    log_ps, log_pt = np_log_softmax(s_np / T), np_log_softmax(t_np / T)
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
    """LD stays finite for float32 logits of magnitude 1e4 at T=1 and equals the float64 numpy KL per row."""
    s = (torch.randn(8, 16).sign() * 1e4).requires_grad_()
    t = (torch.randn(8, 16).sign() * -1e4).requires_grad_()
    loss = ld(s, t)
    log_ps, log_pt = np_log_softmax(s.detach().double().numpy()), np_log_softmax(t.detach().double().numpy())
    expected = (np.exp(log_pt) * (log_pt - log_ps)).sum(axis=1).mean()
    assert expected > 1e3 and float(loss.detach()) == pytest.approx(expected, rel=1e-5)
    assert grads_finite(loss, s, t)


@pytest.mark.parametrize("T", [1.0, 2.0])
def test_ld_is_a_divergence_on_random_draws(T: float) -> None:
    """On 50 seeded draws (scales 1e-3 to 1e4, nearly equal pairs, logits of +-1e4): never below 0 beyond float32
    rounding, and exactly 0 when the student equals the teacher."""
    for i, (s, t) in enumerate(logit_draws((8, 16))):
        assert float(ld(s, t, T=T)) >= -KL_TOLERANCE, i
        assert float(ld(s, s.clone(), T=T)) == 0.0 and float(ld(t, t.clone(), T=T)) == 0.0, i


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


# -------------------------------------------------------------------------------------------------------- binary_kl
def test_binary_kl_equals_hand_computation():
    s = torch.tensor([[0.0, 1.0], [-2.0, 0.5]])
    t = torch.tensor([[math.log(3.0), -1.0], [1.0, 0.5]])
    rows = [
        np_bernoulli_kl(0.0, math.log(3.0)) + np_bernoulli_kl(1.0, -1.0),
        np_bernoulli_kl(-2.0, 1.0) + np_bernoulli_kl(0.5, 0.5),
    ]
    assert kdf.binary_kl(s, t).item() == pytest.approx(sum(rows) / 2, rel=1e-6)  # mean over rows, summed over classes
    w = torch.tensor([2.0, 0.5])
    assert kdf.binary_kl(s, t, weight=w).item() == pytest.approx((2 * rows[0] + 0.5 * rows[1]) / 2, rel=1e-6)
    assert kdf.binary_kl(s, t, weight=w, avg_factor=3.0).item() == pytest.approx(
        (2 * rows[0] + 0.5 * rows[1]) / 3, rel=1e-6
    )
    assert np_bernoulli_kl(0.0, math.log(3.0)) == pytest.approx(0.75 * math.log(1.5) + 0.25 * math.log(0.5))


def test_binary_kl_zero_at_equal_logits_and_empty():
    x = torch.randn(7, 4) * 5
    assert kdf.binary_kl(x, x).item() == 0.0
    e = torch.zeros(0, 3, requires_grad=True)
    z = kdf.binary_kl(e, torch.zeros(0, 3))
    z.backward()
    assert z.item() == 0.0 and e.grad is not None


def test_binary_kl_gradcheck_float64():
    s = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    t = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    w = torch.rand(4, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda a, b: kdf.binary_kl(a, b, weight=w, avg_factor=2.5), (s, t))


def test_binary_kl_large_logits_finite():
    s = torch.tensor([[-1e4, 1e4, 1e4, -1e4]], requires_grad=True)
    t = torch.tensor([[1e4, -1e4, 1e4, -1e4]], requires_grad=True)
    loss = kdf.binary_kl(s, t)
    loss.backward()
    assert loss.item() == pytest.approx(2e4, rel=1e-6)  # two classes with KL ~ 1e4 each, two with 0
    assert torch.isfinite(s.grad).all() and torch.isfinite(t.grad).all()
    assert s.grad.tolist() == [[-1.0, 1.0, 0.0, 0.0]]  # d/ds = p - q


def test_binary_kl_is_a_divergence_on_random_draws():
    """On 50 seeded draws (scales 1e-3 to 1e4, nearly equal pairs, logits of +-1e4): never below 0 beyond float32
    rounding, and exactly 0 when the student equals the teacher; the float64 value matches numpy where it is finite."""
    for i, (s, t) in enumerate(logit_draws((8, 5))):
        assert float(kdf.binary_kl(s, t)) >= -KL_TOLERANCE, i
        assert float(kdf.binary_kl(s, s.clone())) == 0.0 and float(kdf.binary_kl(t, t.clone())) == 0.0, i
        if torch.cat([s, t]).abs().max() < 30:  # numpy's plain logarithms of sigmoids stay exact there
            expected = np_bernoulli_kl(s.double().numpy(), t.double().numpy()).sum(1).mean()
            assert float(kdf.binary_kl(s.double(), t.double())) == pytest.approx(expected, rel=1e-9, abs=1e-15), i


def test_binary_kl_rejects_bad_shapes():
    with pytest.raises(ValueError, match="shapes differ"):
        kdf.binary_kl(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="weight must have shape"):
        kdf.binary_kl(torch.zeros(2, 3), torch.zeros(2, 3), weight=torch.ones(3))


# ------------------------------------------------------------------------------------------------ weighted_soft_bce
def test_weighted_soft_bce_hand_computed_not_zero_at_equal_logits():
    s = torch.tensor([[[0.0, LN3, 0.0], [0.0, 0.0, 0.0]]])  # (N=1, C=2, A=3)
    t = torch.tensor([[[0.0, 0.0, 0.0], [0.0, LN3, 0.0]]])
    w = torch.tensor([[1.0, 1.5, 1.5]])
    # anchor 0: s == t == 0, 2 classes -> 2 ln 2 (the entropy, not 0); anchor 1: BCE(ln3, 1/2) + BCE(0, 3/4)
    a1 = 0.5 * (math.log(4 / 3) + math.log(4)) + LN2
    expected = (1.0 * 2 * LN2 + 1.5 * a1 + 1.5 * 2 * LN2) / 3
    assert a1 == pytest.approx(np_soft_bce(LN3, 0.5) + np_soft_bce(0.0, 0.75))
    assert weighted_soft_bce(s, t, w).item() == pytest.approx(expected, rel=1e-6)


def test_weighted_soft_bce_avg_factor_replaces_anchor_count():
    s, t = torch.zeros(2, 1, 3), torch.full((2, 1, 3), LN3)  # BCE(0, 3/4) = ln 2 at each of the 6 anchors
    w = torch.tensor([[1.0, 1.5, 1.5], [1.0, 1.0, 0.0]])  # sum 6
    assert weighted_soft_bce(s, t, w).item() == pytest.approx(6 * LN2 / 6, rel=1e-6)
    assert weighted_soft_bce(s, t, w, avg_factor=2.5).item() == pytest.approx(6 * LN2 / 2.5, rel=1e-6)
    assert weighted_soft_bce(s, t, w, avg_factor=torch.tensor([2.5])).item() == pytest.approx(6 * LN2 / 2.5, rel=1e-6)


def test_weighted_soft_bce_gradcheck_float64():
    s = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    t = torch.randn(2, 3, 4, dtype=torch.float64)
    w = torch.rand(2, 4, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda x: weighted_soft_bce(x, t, w), (s,))
