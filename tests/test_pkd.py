# yolokd, AGPL-3.0 License
"""PKD term: identity adapters where widths match, sum over levels, scale blindness, gradients in a real step."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import kd_model, neck_inputs, toy_batch
from torch import nn

from yolokd.config import resolve_method
from yolokd.losses import TERMS, Probe
from yolokd.losses import functional as kdf
from yolokd.losses.pkd import PKD

pytestmark = pytest.mark.usefixtures("seeded")


def test_pkd_adapters_only_where_widths_differ() -> None:
    probe = Probe(student_channels=[8, 16, 32], teacher_channels=[16, 16, 64], strides=[8, 16, 32])
    adapters = PKD().make_adapters(probe)
    assert [type(a).__name__ for a in adapters] == ["Conv2d", "Identity", "Conv2d"]
    assert (adapters[0].in_channels, adapters[0].out_channels, adapters[0].bias) == (8, 16, None)
    with pytest.raises(ValueError, match="levels"):
        PKD().make_adapters(Probe(student_channels=[8], teacher_channels=[8, 16], strides=[8]))


def test_pkd_term_is_the_sum_over_levels_and_blind_to_channel_scale() -> None:
    s = [torch.randn(2, 4, 8, 8), torch.randn(2, 4, 4, 4)]
    t = [torch.randn(2, 4, 8, 8), torch.randn(2, 4, 4, 4)]
    ident = nn.ModuleList([nn.Identity(), nn.Identity()])
    value = PKD()(neck_inputs(s, t), ident)
    assert float(value) == pytest.approx(float(kdf.pkd(s[0], t[0]) + kdf.pkd(s[1], t[1])), rel=1e-6)
    scale = torch.tensor([0.1, 2.0, 30.0, 0.5]).view(1, 4, 1, 1)
    moved = PKD()(neck_inputs([x * scale + 3 for x in s], [x * scale - 1 for x in t]), ident)
    assert float(moved) == pytest.approx(float(value), rel=1e-4)
    assert float(PKD()(neck_inputs(t, t), ident)) == 0.0


def test_pkd_kd_step_trains_the_adapters(pico_yamls) -> None:
    """A real step on a cross-family pair (every method trains an epoch per family in test_methods_e2e.py)."""
    model = kd_model(pico_yamls["yolov8"], "yolo11n.yaml", "pkd")
    loss, items = model.loss(toy_batch())
    assert list(items)[-1] == "pkd_loss"
    value = float(items["pkd_loss"])
    assert 0 < value <= 2.5 * 2 * 3 and math.isfinite(value)  # weight 2.5 x at most 2 per level x 3 levels
    loss[-1].backward()
    assert all(p.grad is None for p in model.teacher_model.parameters())
    params = list(model.projector["pkd"].parameters())
    assert len(params) == 3  # width 0.125 vs 0.25: a bias-free 1x1 conv on every level
    assert all(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in params)


def test_pkd_yaml_defaults_and_composition_with_crosskd(pico_yamls) -> None:
    (spec,) = resolve_method("pkd")
    assert (spec.type, spec.name, spec.weight, spec.schedule, spec.params, spec.balance) == (
        "pkd",
        "pkd",
        1.25,
        "constant",
        {},
        0.0,
    )
    assert TERMS["pkd"] is PKD
    specs = resolve_method("crosskd+pkd")
    assert [s.name for s in specs] == ["crosskd_cls", "crosskd_box", "pkd"]
    model = kd_model(pico_yamls["yolov8"], "yolov8n.yaml", "crosskd+pkd")
    assert list(model.projector) == ["crosskd_cls", "crosskd_box", "pkd"]
    loss, items = model.loss(toy_batch())
    assert list(items)[-3:] == ["crosskd_cls_loss", "crosskd_box_loss", "pkd_loss"]
    assert all(math.isfinite(float(items[k])) for k in list(items)[-3:]) and float(items["pkd_loss"]) > 0
