# yolokd, AGPL-3.0 License
"""Task formulas of ``yolokd.losses.functional.tasks``: mask_kd, keypoint_kd and mask_logits.

Expected values are computed independently with numpy or plain python arithmetic, never with the torch expression
under test.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from helpers import KL_TOLERANCE, logit_draws, np_sigmoid

from yolokd.losses import functional as kdf

pytestmark = pytest.mark.usefixtures("seeded")


def test_mask_kd_matches_a_numpy_loop():
    s, t = torch.randn(3, 4, 5, dtype=torch.float64), torch.randn(3, 4, 5, dtype=torch.float64)
    region = (torch.rand(3, 4, 5) > 0.4).double()
    region[2] = 0  # an empty region counts as 0 (divided by max(|R|, 1))
    w = torch.tensor([1.0, 0.5, 1.0], dtype=torch.float64)
    p, q = np_sigmoid(t.numpy()), np_sigmoid(s.numpy())
    kl = p * np.log(p / q) + (1 - p) * np.log((1 - p) / (1 - q))
    per = [(kl[k] * region[k].numpy()).sum() / max(region[k].sum().item(), 1) for k in range(3)]
    want = sum(wk * pk for wk, pk in zip(w.tolist(), per)) / max(w.sum().item(), 1)
    assert kdf.mask_kd(s, t, region, w).item() == pytest.approx(want, rel=1e-10)
    assert kdf.mask_kd(t, t, region, w).item() == pytest.approx(0.0, abs=1e-12)
    s.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: kdf.mask_kd(x, t, region, w), (s,))


def test_keypoint_kd_matches_hand_values():
    s = torch.zeros(2, 3, 2)
    t = torch.tensor([[[1.0, 1.0], [2.0, 0.0], [0.0, 0.5]], [[4.0, 0.0], [0.0, 0.0], [0.0, 0.0]]])
    w = torch.tensor([1.0, 0.0])  # the second prediction is not a positive
    assert kdf.keypoint_kd(s, t, w).item() == pytest.approx((2.0 + 2.0 + 0.5) / 3)
    t_vis = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])  # v = 1/2 each: the plain mean again
    s_vis = torch.tensor([[0.0, 0.0, math.log(3.0)], [0.0, 0.0, 0.0]])  # one visibility differs: q = 3/4 vs p = 1/2
    kl = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)
    assert kdf.keypoint_kd(s, t, w, s_vis, t_vis).item() == pytest.approx((2.0 + 2.0 + 0.5) / 3 + kl / 3)
    assert kdf.keypoint_kd(t, t, torch.ones(2), t_vis, t_vis).item() == 0.0


def test_keypoint_kd_weights_the_distance_by_the_teachers_visibility():
    """v = sigmoid(teacher visibility logit) = 3/4, 1/2, 1/4 over distances 2, 2, 0.5: (1.5 + 1 + 0.125) / 1.5."""
    s = torch.zeros(1, 3, 2)
    t = torch.tensor([[[1.0, 1.0], [2.0, 0.0], [0.0, 0.5]]])
    vis = torch.tensor([[math.log(3.0), 0.0, -math.log(3.0)]])
    assert kdf.keypoint_kd(s, t, torch.ones(1), vis, vis.clone()).item() == pytest.approx(2.625 / 1.5, rel=1e-6)
    # all invisible to the teacher: the distances weigh nothing, only the visibility KL is left
    hidden = torch.full((1, 3), -1e4)
    assert kdf.keypoint_kd(s, t, torch.ones(1), hidden, hidden.clone()).item() == 0.0


@pytest.mark.parametrize("shape", [(4, 6, 5), (1, 1, 1)])
def test_mask_kd_is_a_divergence_on_random_draws(shape):
    """On 50 seeded draws (scales 1e-3 to 1e4, nearly equal pairs, logits of +-1e4): never below 0 beyond float32
    rounding, and exactly 0 when the student's masks equal the teacher's."""
    region, w = torch.ones(shape), torch.ones(shape[0])
    for i, (s, t) in enumerate(logit_draws(shape)):
        assert kdf.mask_kd(s, t, region, w).item() >= -KL_TOLERANCE, i
        assert kdf.mask_kd(s, s.clone(), region, w).item() == 0.0 and kdf.mask_kd(t, t.clone(), region, w).item() == 0.0


def test_keypoint_kd_visibility_kl_is_a_divergence_on_random_draws():
    """With equal keypoints only the visibility KL is left: on 50 seeded draws never below 0 beyond float32 rounding,
    and exactly 0 when the visibilities are equal too."""
    xy = torch.randn(6, 17, 2)
    w = torch.ones(6)
    for i, (s, t) in enumerate(logit_draws((6, 17))):
        assert kdf.keypoint_kd(xy, xy.clone(), w, s, t).item() >= -KL_TOLERANCE, i
        assert kdf.keypoint_kd(xy, xy.clone(), w, s, s.clone()).item() == 0.0, i


def test_mask_kd_and_keypoint_kd_reject_bad_shapes():
    with pytest.raises(ValueError, match="region must be"):
        kdf.mask_kd(torch.zeros(2, 3, 3), torch.zeros(2, 3, 3), torch.ones(2, 3, 4), torch.ones(2))
    with pytest.raises(ValueError, match="weight"):
        kdf.mask_kd(torch.zeros(2, 3, 3), torch.zeros(2, 3, 3), torch.ones(2, 3, 3), torch.ones(3))
    with pytest.raises(ValueError, match="weight must have shape"):
        kdf.keypoint_kd(torch.zeros(2, 3, 2), torch.zeros(2, 3, 2), torch.ones(3))
    with pytest.raises(ValueError, match="both be None"):
        kdf.keypoint_kd(torch.zeros(2, 3, 2), torch.zeros(2, 3, 2), torch.ones(2), torch.zeros(2, 3), None)


def test_mask_logits_picks_the_anchors_coefficients_per_image():
    """logits[n, k] = sum_m coef[n, m, idx[n, k]] proto[n, m], by hand on a 1 x 2 prototype."""
    coef = torch.tensor([[[1.0, 2.0, 0.0], [0.0, 1.0, -1.0]], [[3.0, 0.0, 1.0], [1.0, 1.0, 1.0]]])  # (N=2, nm=2, A=3)
    proto = torch.tensor([[[[1.0, 0.0]], [[0.0, 1.0]]], [[[2.0, 1.0]], [[1.0, -1.0]]]])  # (2, 2, 1, 2)
    idx = torch.tensor([[1, 2], [0, 0]])
    got = kdf.mask_logits(coef, proto, idx)
    assert got.shape == (2, 2, 1, 2)
    # image 0: anchor 1 (2, 1) -> [2, 1]; anchor 2 (0, -1) -> [0, -1]; image 1: anchor 0 (3, 1) -> [7, 2], twice
    assert got.flatten(2).tolist() == [[[2.0, 1.0], [0.0, -1.0]], [[7.0, 2.0], [7.0, 2.0]]]
