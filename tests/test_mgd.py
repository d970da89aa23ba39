# yolokd, AGPL-3.0 License
"""MGD term: align conv and generator under the adapters, fresh masks from the global generator, normalisation."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from helpers import kd_model, neck_inputs, toy_batch
from torch import nn

from yolokd.config import resolve_method
from yolokd.losses import TERMS, Probe
from yolokd.losses import functional as kdf
from yolokd.losses.mgd import MGD, MGDLevel

pytestmark = pytest.mark.usefixtures("seeded")


def test_mgd_adapters_hold_align_where_widths_differ_and_the_generator() -> None:
    probe = Probe(student_channels=[8, 16], teacher_channels=[16, 16], strides=[8, 16])
    levels = MGD().make_adapters(probe)
    assert all(isinstance(m, MGDLevel) for m in levels)
    a0, a1 = levels[0].align, levels[1].align
    assert isinstance(a0, nn.Conv2d) and (a0.in_channels, a0.out_channels, a0.kernel_size) == (8, 16, (1, 1))
    assert a0.bias is not None and isinstance(a1, nn.Identity)
    gen = levels[0].generator
    assert [type(m).__name__ for m in gen] == ["Conv2d", "ReLU", "Conv2d"]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.bias is not None) for c in (gen[0], gen[2])] == [
        (16, 16, (3, 3), True),
        (16, 16, (3, 3), True),
    ]


def test_mgd_masks_the_aligned_feature_with_the_ratio() -> None:
    """The generator sees the aligned student feature with about `ratio` of its positions zeroed, all channels alike."""
    level = MGDLevel(4, 4)
    seen = {}
    level.generator[0].register_forward_pre_hook(lambda m, args: seen.setdefault("x", args[0].detach()))
    s = torch.randn(8, 4, 32, 32).abs() + 0.1  # no exact zeros of its own
    MGD(ratio=0.65)(neck_inputs([s], [torch.randn(8, 4, 32, 32)]), nn.ModuleList([level]))
    zero = seen["x"].eq(0)
    assert torch.equal(zero.all(1), zero.any(1))  # a position is masked in every channel or in none
    assert float(zero.all(1).float().mean()) == pytest.approx(0.65, abs=0.02)  # 8192 positions


def test_mgd_value_hand_computed_and_per_element_normalisation() -> None:
    """With ratio 0 nothing is masked: the term is sum_l mgd(generator(align(s_l)), t_l) / sum_l C_l H_l W_l."""
    s = [torch.randn(2, 3, 6, 6), torch.randn(2, 5, 3, 3)]
    t = [torch.randn(2, 4, 6, 6), torch.randn(2, 8, 3, 3)]
    levels = MGD().make_adapters(Probe(student_channels=[3, 5], teacher_channels=[4, 8], strides=[8, 16]))
    with torch.no_grad():
        gens = [lv.generator(lv.align(x)) for lv, x in zip(levels, s)]
        total = sum(((g - y) ** 2).sum() / 2 for g, y in zip(gens, t))  # squared error / N, no 1/2
        summed = MGD(ratio=0.0, per_element=False)(neck_inputs(s, t), levels)
        mean = MGD(ratio=0.0)(neck_inputs(s, t), levels)
    assert float(summed) == pytest.approx(float(total), rel=1e-5)
    assert float(mean) == pytest.approx(float(total) / (4 * 36 + 8 * 9), rel=1e-5)


def test_mgd_masks_are_fresh_per_step_and_follow_the_global_seed() -> None:
    s, t = [torch.randn(2, 4, 8, 8)], [torch.randn(2, 4, 8, 8)]
    levels = MGD().make_adapters(Probe(student_channels=[4], teacher_channels=[4], strides=[8]))
    term = MGD()
    with torch.no_grad():
        torch.manual_seed(1)
        a, b = term(neck_inputs(s, t), levels), term(neck_inputs(s, t), levels)
        torch.manual_seed(1)
        c = term(neck_inputs(s, t), levels)
    assert float(a) != float(b)  # a new mask at every step
    assert float(a) == float(c)  # drawn from torch's global generator: a seeded run repeats


def test_mgd_invalid_ratio() -> None:
    for bad in (-0.1, 1.0, True):
        with pytest.raises(ValueError, match="ratio"):
            MGD(ratio=bad)


def test_mgd_kd_step_trains_align_and_generator(pico_yamls) -> None:
    """A real step on a cross-family pair (every method trains an epoch per family in test_methods_e2e.py)."""
    model = kd_model(pico_yamls["yolov8"], "yolo11n.yaml", "mgd")
    loss, items = model.loss(toy_batch(n=4))  # 4 x 2x2 P5 cells: all 16 masked with probability 0.65^16
    assert list(items)[-1] == "mgd_loss" and 0 < float(items["mgd_loss"]) < math.inf
    loss[-1].backward()
    assert all(p.grad is None for p in model.teacher_model.parameters())
    named = dict(model.projector["mgd"].named_parameters())
    assert {k.split(".", 1)[1] for k in named} == {
        f"{m}.{p}" for m in ("align", "generator.0", "generator.2") for p in ("weight", "bias")
    }
    assert all(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in named.values()), [
        k for k, p in named.items() if p.grad is None or not p.grad.any()
    ]
    assert any(p.grad is not None and p.grad.any() for p in model.student_model.parameters())


def test_mgd_yaml_defaults() -> None:
    (spec,) = resolve_method("mgd")
    assert (spec.type, spec.weight, spec.schedule, spec.balance) == ("mgd", 114.7, "constant", 0.25)
    assert spec.params == {"ratio": 0.65, "per_element": True, "generator": "teacher"}
    assert spec.weight == pytest.approx(2e-5 * 256 * (168 * 100 + 84 * 50 + 42 * 25 + 21 * 13 + 11 * 7), abs=0.05)
    assert repr(TERMS["mgd"](**spec.params)) == repr(MGD()) == "MGD(ratio=0.65, per_element=True, generator=teacher)"
    assert kdf.mgd_mask(torch.full((1, 1, 1, 1), 0.5), spec.params["ratio"]).item() == 0.0


def _macs(level: MGDLevel, h: int, w: int) -> int:
    """Multiply-adds of one level's align and generator convolutions on an (h, w) feature."""
    convs = [m for m in level.modules() if isinstance(m, nn.Conv2d)]
    return sum(c.weight.numel() * h * w for c in convs)


def test_mgd_student_width_generator_shapes_value_and_cost() -> None:
    """generator='student': no align, conv3x3 Cs->Cs, ReLU, conv3x3 Cs->Ct on the masked student feature."""
    probe = Probe(student_channels=[8, 16], teacher_channels=[16, 32], strides=[8, 16])
    levels = MGD(generator="student").make_adapters(probe)
    for level, (cs, ct) in zip(levels, [(8, 16), (16, 32)]):
        assert isinstance(level.align, nn.Identity)
        g = level.generator
        assert [(c.in_channels, c.out_channels, c.kernel_size) for c in (g[0], g[2])] == [
            (cs, cs, (3, 3)),
            (cs, ct, (3, 3)),
        ]
    paper = MGD().make_adapters(probe)
    ratio = _macs(paper[1], 8, 8) / _macs(levels[1], 8, 8)  # (16x32 + 18x32^2) / (9 x (16^2 + 16x32)) = 2.74
    assert ratio == pytest.approx((16 * 32 + 18 * 32 * 32) / (9 * (16 * 16 + 16 * 32)))
    assert ratio > 2.7
    s, t = [torch.randn(2, 8, 4, 4), torch.randn(2, 16, 2, 2)], [torch.randn(2, 16, 4, 4), torch.randn(2, 32, 2, 2)]
    s = [x.requires_grad_(True) for x in s]
    torch.manual_seed(3)
    got = MGD(generator="student")(neck_inputs(s, t), levels)
    torch.manual_seed(3)
    want, elements = 0.0, 0
    for level, x, y in zip(levels, s, t):
        keep = kdf.mgd_mask(torch.rand(x.shape[0], 1, *x.shape[2:]), 0.65)
        want = want + kdf.mgd(level.generator(x * keep), y)  # the student feature itself is masked
        elements += y[0].numel()
    torch.testing.assert_close(got, want / elements)
    got.backward()
    assert all(x.grad is not None and x.grad.any() for x in s)
    assert all(p.grad is not None for p in levels.parameters())


def test_mgd_generator_value_is_checked() -> None:
    with pytest.raises(ValueError, match=r"mgd: generator must be one of \['teacher', 'student'\], got 'tiny'"):
        MGD(generator="tiny")


def test_mgd_student_example_is_the_default_but_for_the_generator() -> None:
    """examples/mgd-student.yaml (the benchmark's `mgd-student` row) differs from the shipped mgd only in the width."""
    example = Path(__file__).resolve().parents[1] / "examples" / "mgd-student.yaml"
    (got,) = resolve_method(str(example))
    (default,) = resolve_method("mgd")
    assert (got.type, got.weight, got.schedule, got.balance) == (default.type, default.weight, "constant", 0.25)
    assert got.params == {**default.params, "generator": "student"}
    assert repr(TERMS["mgd"](**got.params)) == "MGD(ratio=0.65, per_element=True, generator=student)"
