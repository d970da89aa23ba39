# yolokd, AGPL-3.0 License
"""Gate formulas of ``yolokd.losses.functional.gates``: object_gate (per object) and anchor_gate (per anchor)."""

from __future__ import annotations

import math

import pytest
import torch

from yolokd.losses import functional as kdf


def _lq(*rows: list[float]) -> torch.Tensor:
    """Log qualities (N, A) from qualities by hand."""
    return torch.tensor([[math.log(q) if q > 0 else float("-inf") for q in row] for row in rows])


def test_object_gate_compares_mean_qualities_per_object_and_image():
    """Two images of two objects: each gate is the strict comparison of the mean qualities over the object's own
    positives; anchors that are no positive do not count, whatever their quality."""
    fg = torch.tensor([[True, True, True, False], [False, True, True, True]])
    idx = torch.tensor([[0, 0, 1, 0], [0, 0, 0, 1]])
    q_t = _lq([0.9, 0.1, 0.2, 1.0], [1.0, 0.5, 0.5, 0.7])
    q_s = _lq([0.4, 0.4, 0.3, 0.0], [0.0, 0.6, 0.4, 0.6])
    # image 0: object 0 (0.9 + 0.1) / 2 = 0.5 > 0.4: open; object 1 0.2 < 0.3: closed
    # image 1: object 0 (0.5 + 0.5) / 2 = 0.5 = (0.6 + 0.4) / 2: a tie, closed; object 1 0.7 > 0.6: open
    assert kdf.object_gate(q_t, q_s, fg, idx, 2).tolist() == [[True, False], [False, True]]
    assert kdf.object_gate(q_s, q_t, fg, idx, 2).tolist() == [[False, True], [False, False]]
    # a third, padded object slot has no positives: closed in both images
    assert kdf.object_gate(q_t, q_s, fg, idx, 3).tolist() == [[True, False, False], [False, True, False]]
    with pytest.raises(ValueError, match="num_objects must be >= 1"):
        kdf.object_gate(q_t, q_s, fg, idx, 0)


def test_object_gate_tiny_qualities_and_objects_without_positives():
    # log qualities far below float32's exp range still compare by their means; an object without positives is closed
    fg = torch.tensor([[True, True, True, False]])
    idx = torch.tensor([[0, 0, 1, 2]])
    lq_t = torch.tensor([[-500.0, -900.0, float("-inf"), 0.0]])  # object 0: mean ~ e^-500 / 2; object 1: quality 0
    lq_s = torch.tensor([[-501.0, -501.0, -700.0, -1.0]])  # object 0: mean ~ e^-501 < e^-500 / 2
    assert kdf.object_gate(lq_t, lq_s, fg, idx, 3).tolist() == [[True, False, False]]
    assert kdf.object_gate(lq_s, lq_t, fg, idx, 3).tolist() == [[False, True, False]]
    with pytest.raises(ValueError, match="one \\(N, A\\) shape"):
        kdf.object_gate(lq_t, lq_s, fg, idx[:, :2], 3)


def test_anchor_gate_background_by_summed_softplus_and_positives_by_quality():
    """Background anchors compare sum_c softplus (BCE against "no object") by hand; positives the log qualities;
    every comparison strict."""
    s = torch.tensor([[0.0, 0.0], [1.0, -1.0], [0.0, 0.0], [3.0, 3.0], [0.0, 0.0]])
    t = torch.tensor([[-1.0, 0.5], [1.0, -1.0], [0.5, 0.5], [9.0, 9.0], [-9.0, -9.0]])
    fg = torch.tensor([False, False, False, True, True])
    lq_s = torch.tensor([0.0, 0.0, 0.0, -2.0, -1.0])
    lq_t = torch.tensor([5.0, 5.0, 5.0, -1.0, float("-inf")])  # read at the positives only
    sp = lambda x: math.log1p(math.exp(x))  # noqa: E731
    # anchor 0: sp(-1) + sp(0.5) = 1.2873 < 2 sp(0) = 1.3863: open; anchor 1: equal logits, a tie: closed;
    # anchor 2: 2 sp(0.5) = 1.9485 > 1.3863: closed; anchor 3: -1 > -2: open, whatever the logits say;
    # anchor 4: log q = -inf (IoU 0) is never above the student's: closed, whatever the logits say
    assert sp(-1) + sp(0.5) < 2 * sp(0) < 2 * sp(0.5)
    assert kdf.anchor_gate(s, t, lq_s, lq_t, fg).tolist() == [True, False, False, True, False]
    assert kdf.anchor_gate(t, s, lq_t, lq_s, fg).tolist() == [False, False, True, False, True]
    assert not kdf.anchor_gate(s, s, lq_s, lq_s, fg).any()  # a model is never nearer than itself
    with pytest.raises(ValueError, match="anchor_gate: s and t must share one"):
        kdf.anchor_gate(s, t[:, :1], lq_s, lq_t, fg)
    with pytest.raises(ValueError, match="fg_mask be \\(n,\\)"):
        kdf.anchor_gate(s, t, lq_s, lq_t, fg[:4])
