# yolokd, AGPL-3.0 License
"""Feature formulas of ``yolokd.losses.functional.feature``: cwd, align_scale, cosine_fg, gaussian_imitation, pkd, mgd
and mgd_mask.

Expected values are computed independently with numpy or plain python arithmetic, never with the torch expression
under test.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from helpers import KL_TOLERANCE, grads_finite, logit_draws, np_align_scale, np_log_softmax, np_standardise

from yolokd.losses import functional as kdf
from yolokd.losses.functional import align_scale, cosine_fg, cwd, gaussian_imitation

pytestmark = pytest.mark.usefixtures("seeded")


def _np_cwd(s: torch.Tensor, t: torch.Tensor, tau: float = 1.0) -> float:
    """CWD in float64 numpy: tau^2 / (N C) x the KL of the spatial softmaxes, summed over (N, C)."""
    n, c = s.shape[:2]
    log_ps = np_log_softmax(s.detach().double().numpy().reshape(n, c, -1) / tau)
    log_pt = np_log_softmax(t.detach().double().numpy().reshape(n, c, -1) / tau)
    return float(tau**2 / (n * c) * (np.exp(log_pt) * (log_pt - log_ps)).sum())


# -------------------------------------------------------------------------------------------------------------- cwd
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
    log_ps = np_log_softmax(s_np.reshape(1, 2, 4) / tau)
    log_pt = np_log_softmax(t_np.reshape(1, 2, 4) / tau)
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
    """CWD stays finite (loss and gradients) for float32 logits of magnitude 1e4 at tau=1, and equals the float64 KL
    (about 2e4 in a channel of mixed signs: the teacher's mass sits where the student's logits are 2e4 lower)."""
    s = (torch.randn(2, 3, 4, 4).sign() * 1e4).requires_grad_()
    t = (torch.randn(2, 3, 4, 4).sign() * -1e4).requires_grad_()
    loss = cwd(s, t)
    assert float(loss.detach()) == pytest.approx(_np_cwd(s, t), rel=1e-5)
    assert float(loss.detach()) > 1e3
    assert grads_finite(loss, s, t)


@pytest.mark.parametrize("tau", [1.0, 2.0])
def test_cwd_is_a_divergence_on_random_draws(tau: float) -> None:
    """On 50 seeded draws (scales 1e-3 to 1e4, nearly equal pairs, logits of +-1e4): never below 0 beyond float32
    rounding, and exactly 0 when the student equals the teacher."""
    for i, (s, t) in enumerate(logit_draws((2, 3, 4, 5))):
        assert float(cwd(s, t, tau=tau)) >= -KL_TOLERANCE, i
        assert float(cwd(s, s.clone(), tau=tau)) == 0.0 and float(cwd(t, t.clone(), tau=tau)) == 0.0, i


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cwd_low_precision_returns_float32(dtype: torch.dtype) -> None:
    """Half/bf16 inputs give a finite float32 result that matches the float32 computation on the same values."""
    s, t = torch.randn(2, 3, 4, 4).to(dtype), torch.randn(2, 3, 4, 4).to(dtype)
    loss = cwd(s, t)
    assert loss.dtype == torch.float32 and loss.dim() == 0 and torch.isfinite(loss)
    assert float(loss) == pytest.approx(float(cwd(s.float(), t.float())), rel=1e-6)
    big = (torch.randn(1, 2, 3, 3).sign() * 1e4).to(dtype)  # large logits stay finite in low precision too
    assert float(cwd(big, -big)) == pytest.approx(_np_cwd(big, -big), rel=1e-5)


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


# ------------------------------------------------------------------------------------------------------ align_scale
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
    """align_scale stays finite for float32 values of magnitude 1e4 and equals the float64 numpy formula."""
    s = (torch.randn(2, 3, 4, 4) * 1e4).requires_grad_()
    t = (torch.randn(2, 3, 4, 4) * 1e4).requires_grad_()
    out = align_scale(s, t)
    expected = np_align_scale(s.detach().double().numpy(), t.detach().double().numpy())
    np.testing.assert_allclose(out.detach().numpy(), expected, rtol=1e-4, atol=1.0)  # 1e-4 of the values' scale
    assert grads_finite((out * torch.randn_like(out)).sum(), s, t)


def test_align_scale_half_input_returns_float32() -> None:
    """Half inputs are computed and returned in float32: the numpy formula on the half-rounded values."""
    s, t = torch.randn(2, 3, 4, 4).half(), torch.randn(2, 3, 4, 4).half()
    out = align_scale(s, t)
    assert out.dtype == torch.float32
    expected = np_align_scale(s.double().numpy(), t.double().numpy())
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-5, atol=1e-5)


def test_align_scale_bad_shapes_raise() -> None:
    """Mismatched shapes, wrong rank or a single value per channel raise ValueError."""
    with pytest.raises(ValueError, match="align_scale"):
        align_scale(torch.randn(2, 3, 4, 4), torch.randn(2, 4, 4, 4))
    with pytest.raises(ValueError, match="align_scale"):
        align_scale(torch.randn(3, 4, 4), torch.randn(3, 4, 4))
    with pytest.raises(ValueError, match="at least 2"):
        align_scale(torch.randn(1, 3, 1, 1), torch.randn(1, 3, 1, 1))


# -------------------------------------------------------------------------------------------------------- cosine_fg
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
    """cosine_fg stays finite for float32 features of magnitude 1e4; with +-1e4 entries over C = 8 each position's
    cosine is (agreeing signs - disagreeing signs) / 8, so the loss is the mean of 1 - that."""
    s = (torch.randn(2, 8, 4, 4).sign() * 1e4).requires_grad_()
    t = (torch.randn(2, 8, 4, 4).sign() * 1e4).requires_grad_()
    mask = torch.ones(2, 4, 4, dtype=torch.bool)
    loss = cosine_fg(s, t, mask)
    agree = (s.detach().sign() * t.detach().sign()).sum(1).numpy() / 8  # (2, 4, 4)
    assert float(loss.detach()) == pytest.approx((1.0 - agree).mean(), rel=1e-6)
    assert grads_finite(loss, s, t)


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


# ----------------------------------------------------------------------------------------------- gaussian_imitation
def test_gaussian_imitation_hand_computed() -> None:
    """Two images, C = 2: sum of M x squared error over (N, C, H, W), divided by C x sum M (by hand)."""
    s = torch.tensor([[[[1.0, 2.0]], [[0.0, -1.0]]], [[[3.0, 0.0]], [[1.0, 1.0]]]])  # (2, 2, 1, 2)
    t = torch.zeros(2, 2, 1, 2)
    m = torch.tensor([[[1.0, 0.5]], [[0.0, 0.25]]])  # (2, 1, 2)
    # position sums over C of (s - t)^2: image 0 [1, 5], image 1 [10, 1]
    expected = (1.0 * 1 + 0.5 * 5 + 0.0 * 10 + 0.25 * 1) / (2 * (1.0 + 0.5 + 0.0 + 0.25))
    assert float(gaussian_imitation(s, t, m)) == pytest.approx(expected, rel=1e-6)
    assert float(gaussian_imitation(s, t, m * 1e-30)) == pytest.approx(expected, rel=1e-5)  # a tiny mask: same mean
    assert float(gaussian_imitation(s, s.clone(), m)) == 0.0
    zero = gaussian_imitation(s.clone().requires_grad_(), t, torch.zeros(2, 1, 2))
    assert float(zero.detach()) == 0.0 and zero.requires_grad  # no boxes: a zero in the graph
    with pytest.raises(ValueError, match="mask"):
        gaussian_imitation(s, t, torch.ones(2, 2))


def test_gaussian_imitation_gradcheck() -> None:
    s = torch.randn(2, 3, 3, 2, dtype=torch.float64, requires_grad=True)
    t, m = torch.randn(2, 3, 3, 2, dtype=torch.float64), torch.rand(2, 3, 2, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda x: gaussian_imitation(x, t, m), (s,))


# ------------------------------------------------------------------------------------------------------- standardise
def test_standardise_hand_computed_numpy() -> None:
    """(x - mean_c) / (std_c + eps), per channel over (N, H, W), unbiased std (numpy, ddof=1)."""
    x_np = np.random.default_rng(2).normal(size=(2, 3, 4, 5)) * np.array([1.0, 10.0, 0.1]).reshape(1, 3, 1, 1) + 3
    got = kdf.standardise(torch.tensor(x_np, dtype=torch.float32))
    assert got.shape == (2, 3, 4, 5) and got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), np_standardise(x_np), rtol=1e-5, atol=1e-5)


def test_standardise_blind_to_a_positive_affine_map_per_channel() -> None:
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    scale, shift = torch.tensor([0.5, 3.0, 40.0]).view(1, 3, 1, 1), torch.tensor([1.0, -2.0, 7.0]).view(1, 3, 1, 1)
    assert torch.allclose(kdf.standardise(x * scale + shift, eps=0.0), kdf.standardise(x, eps=0.0), atol=1e-12)


@pytest.mark.parametrize("shape", [(1, 2, 1, 1), (2, 3, 4)])
def test_standardise_rejects_too_few_values_or_wrong_rank(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="standardise"):
        kdf.standardise(torch.randn(shape))


# -------------------------------------------------------------------------------------------------------------- pkd
def test_pkd_hand_computed_numpy() -> None:
    """pkd = 0.5 x mean of the squared difference of the per-channel standardised maps (numpy, ddof=1)."""
    rng = np.random.default_rng(0)
    s_np, t_np = rng.normal(size=(2, 3, 4, 5)), rng.normal(size=(2, 3, 4, 5)) * 4 + 2
    expected = 0.5 * ((np_standardise(s_np) - np_standardise(t_np)) ** 2).mean()
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


# -------------------------------------------------------------------------------------------------------------- mgd
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


# --------------------------------------------------------------------------------------------------------- mgd_mask
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
