# yolokd, AGPL-3.0 License
"""The helpers every formula shares, ``yolokd.losses.functional._shared``: precision policy, temperature, shape checks,
graph-connected zeros, row reductions and the elementwise Bernoulli KL.

Expected values are computed independently with numpy or plain python arithmetic, never with the torch expression
under test.
"""

from __future__ import annotations

import math

import pytest
import torch
from helpers import KL_TOLERANCE, logit_draws, np_bernoulli_kl

from yolokd.losses.functional import _shared

pytestmark = pytest.mark.usefixtures("seeded")


@pytest.mark.parametrize(
    ("dtype", "want"),
    [(torch.float16, torch.float32), (torch.bfloat16, torch.float32), (torch.float32, torch.float32)]
    + [(torch.float64, torch.float64), (torch.int64, torch.float32)],
)
def test_upcast_follows_the_precision_policy(dtype: torch.dtype, want: torch.dtype) -> None:
    """Everything but float64 runs in float32; float32 and float64 inputs are returned as they are (no copy)."""
    x = torch.tensor([2.0, -1.0, 3.0]).to(dtype)
    out = _shared.upcast(x)
    assert out.dtype == want and out.tolist() == [2.0, -1.0, 3.0]
    assert (out is x) == (dtype in (torch.float32, torch.float64))


def test_tempered_divides_by_t_and_skips_the_copy_at_one() -> None:
    x = torch.tensor([1.0, -3.0, 4.5])
    assert _shared.tempered(x, 1.0) is x
    assert _shared.tempered(x, 2.0).tolist() == [0.5, -1.5, 2.25]
    half = _shared.tempered(x.half(), 4.0)
    assert half.dtype == torch.float32 and half.tolist() == [0.25, -0.75, 1.125]


def test_check_shapes_names_the_formula_and_the_layout() -> None:
    _shared.check_shapes("f", torch.zeros(2, 3), torch.zeros(2, 3), 2, "(n, C)")  # matching: no error
    with pytest.raises(ValueError, match=r"^f: student must have shape \(n, C\) \(rank 2\), got shape \(2, 3, 1\)$"):
        _shared.check_shapes("f", torch.zeros(2, 3, 1), torch.zeros(2, 3, 1), 2, "(n, C)")
    with pytest.raises(ValueError, match=r"^f: student and teacher shapes differ: \(2, 3\) vs \(2, 4\)$"):
        _shared.check_shapes("f", torch.zeros(2, 3), torch.zeros(2, 4), 2, "(n, C)")


@pytest.mark.parametrize("shape", [(0, 4), (3, 4)])
def test_graph_zero_is_a_connected_zero(shape: tuple[int, ...]) -> None:
    x = torch.randn(shape, requires_grad=True)
    z = _shared.graph_zero(x)
    assert z.dim() == 0 and z.item() == 0.0 and z.dtype == torch.float32
    z.backward()
    assert x.grad is not None and x.grad.shape == x.shape and not x.grad.any()
    assert _shared.graph_zero(torch.ones(2, dtype=torch.float64)).dtype == torch.float64


def test_reduce_rows_hand_computed() -> None:
    """Rows (3,) or rows of classes (3, 2): weight per row, then the mean or the sum over avg_factor."""
    loss = torch.tensor([1.0, 2.0, 4.0])
    w = torch.tensor([0.5, 1.0, 2.0])
    assert _shared.reduce_rows(loss, None, None, "f").item() == pytest.approx(7.0 / 3)
    assert _shared.reduce_rows(loss, w, None, "f").item() == pytest.approx((0.5 + 2.0 + 8.0) / 3)
    assert _shared.reduce_rows(loss, w, 2.0, "f").item() == pytest.approx(10.5 / 2)
    tensor_af = _shared.reduce_rows(loss, w, torch.tensor([2.0], dtype=torch.float64), "f")
    assert tensor_af.dim() == 0 and tensor_af.dtype == torch.float32 and tensor_af.item() == pytest.approx(10.5 / 2)
    per_class = torch.tensor([[1.0, 3.0], [2.0, 0.0], [4.0, 4.0]])
    assert _shared.reduce_rows(per_class, w, None, "f").item() == pytest.approx((0.5 * 4 + 2.0 + 2.0 * 8) / 6)
    assert _shared.reduce_rows(per_class, w, 4.0, "f").item() == pytest.approx((0.5 * 4 + 2.0 + 2.0 * 8) / 4)
    with pytest.raises(ValueError, match=r"^f: weight must have shape \(3,\), got \(2,\)$"):
        _shared.reduce_rows(loss, torch.ones(2), None, "f")


def test_bernoulli_kl_hand_computed_and_saturated() -> None:
    """KL(q || p) with q = sigmoid(t), p = sigmoid(s): hand values, and |s| for a saturated wrong prediction."""
    s = torch.tensor([0.0, 1.0, -2.0, 1e4, -1e4, 1e4])
    t = torch.tensor([math.log(3.0), -1.0, 1.0, -1e4, 1e4, 1e4])
    got = _shared.bernoulli_kl(s, t)
    want = [0.75 * math.log(1.5) + 0.25 * math.log(0.5), float(np_bernoulli_kl(1.0, -1.0))]
    want += [float(np_bernoulli_kl(-2.0, 1.0)), 1e4, 1e4, 0.0]
    assert got.tolist() == pytest.approx(want, rel=1e-6)


def test_bernoulli_kl_is_a_divergence_on_random_draws() -> None:
    """Elementwise over 50 seeded draws (scales 1e-3 to 1e4, nearly equal pairs, logits of +-1e4): never below 0
    beyond float32 rounding, exactly 0 where the logits are equal; in float64 the numpy value where numpy's plain
    logarithms stay finite."""
    for i, (s, t) in enumerate(logit_draws((8, 5))):
        assert _shared.bernoulli_kl(s, t).min().item() >= -KL_TOLERANCE, i
        assert not _shared.bernoulli_kl(s, s.clone()).any() and not _shared.bernoulli_kl(t, t.clone()).any(), i
        if torch.cat([s, t]).abs().max() < 30:
            want = np_bernoulli_kl(s.double().numpy(), t.double().numpy())
            got = _shared.bernoulli_kl(s.double(), t.double()).numpy()
            assert got == pytest.approx(want, rel=1e-9, abs=1e-15), i
