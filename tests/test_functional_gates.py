# yolokd, AGPL-3.0 License
"""Gate formulas of ``yolokd.losses.functional.gates``: object_gate, the per-object teacher-better comparison."""

from __future__ import annotations

import pytest
import torch

from yolokd.losses import functional as kdf


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
