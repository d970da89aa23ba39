# yolokd, AGPL-3.0 License
"""balance=: automatic term weights from the measured sizes of the terms and the detection loss."""

from __future__ import annotations

import pytest
import torch
from helpers import build, toy_batch

from yolokd.balance import AutoBalance, balance_weights
from yolokd.config import KDError, build_config
from yolokd.distill_model import KDModel


def test_balance_weights_hand_values():
    w = balance_weights(torch.tensor(3.0), torch.tensor([1.5, 0.25, 0.0, 1e-15]), 0.2)
    assert w.tolist() == pytest.approx([0.4, 2.4, 0.0, 0.0])  # 0.2*3/1.5, 0.2*3/0.25; a silent term gets 0


def test_autobalance_running_then_frozen_means():
    b = AutoBalance([0.5, 0.5], steps=3)
    det = [torch.tensor(4.0), torch.tensor(2.0), torch.tensor(6.0)]  # mean 4
    t1 = [torch.tensor(1.0), torch.tensor(float("nan")), torch.tensor(3.0)]  # NaN not counted: mean 2
    t2 = [None, torch.tensor(0.5), torch.tensor(1.5)]  # not computed at step 1: mean 1
    w = b.weights(det[0], [t1[0], t2[0]])
    assert w.tolist() == pytest.approx([0.5 * 4 / 1, 0.0])  # running: term 2 not measured yet
    b.weights(det[1], [t1[1], t2[1]])
    assert b.frozen is None and b.steps_seen == 2
    w = b.weights(det[2], [t1[2], t2[2]])
    assert w.tolist() == pytest.approx([0.5 * 4 / 2, 0.5 * 4 / 1]) and b.frozen is not None
    # frozen: later steps change nothing
    assert b.weights(torch.tensor(100.0), [torch.tensor(1.0), torch.tensor(1.0)]).tolist() == pytest.approx([1.0, 2.0])
    c = AutoBalance([0.5, 0.5], steps=3)
    c.load_state_dict(b.state_dict())
    assert c.current().tolist() == pytest.approx([1.0, 2.0]) and c.steps_seen == 3


def test_autobalance_resume_mid_measurement_equals_uninterrupted():
    seq = [(torch.tensor(float(i + 1)), [torch.tensor(0.1 * (i + 2))]) for i in range(4)]
    a = AutoBalance([1.0], steps=4)
    for d, r in seq:
        a.weights(d, r)
    b = AutoBalance([1.0], steps=4)
    for d, r in seq[:2]:
        b.weights(d, r)
    c = AutoBalance([1.0], steps=4)
    c.load_state_dict(b.state_dict())
    for d, r in seq[2:]:
        c.weights(d, r)
    assert c.frozen.tolist() == pytest.approx(a.frozen.tolist())
    assert a.frozen.item() == pytest.approx(2.5 / 0.35)  # mean det (1+2+3+4)/4, mean term (.2+.3+.4+.5)/4


def test_kdmodel_balance_makes_each_term_ratio_times_detection_loss(pico_yaml):
    student, teacher = build(pico_yaml), build("yolov8n.yaml")
    teacher.eval()
    cfg = build_config({"teacher": "t.pt", "method": "cwd+hint", "balance": 0.25, "distill_weight": 2.0})
    model = KDModel(student, teacher, cfg, imgsz=64).train()
    _, items = model.loss(toy_batch())
    det = sum(items[k].item() for k in ("box_loss", "cls_loss", "dfl_loss"))
    raw = model.balance.sums[1:]  # this first step's raw values
    for spec, r in zip(cfg.terms, raw.tolist()):  # the running means are this step's values: w * raw = 0.25 * det
        want = 2.0 * 0.25 * det if r > 1e-12 else 0.0  # x distill_weight on top; a silent term stays 0
        assert items[f"{spec.name}_loss"].item() == pytest.approx(want, rel=1e-4, abs=1e-9)
    assert sum(r > 1e-12 for r in raw.tolist()) >= 3  # cwd, hint, hint_soft at least
    weights = model.term_weights()
    assert weights["cwd"] > 0 and weights != {s.name: s.weight * 2.0 for s in cfg.terms}  # not the yaml weights


def test_balance_key_validation_and_per_term_yaml(tmp_path):
    assert build_config({"method": "crosskd"}).balance is None
    assert [t.balance for t in build_config({"method": "crosskd"}).terms] == [0.0, 0.0]  # fixed weights in its yaml
    assert build_config({"method": "cwd"}).terms[0].balance == 0.25  # automatic weight in its yaml
    cfg = build_config({"method": "cwd+hint", "balance": 1})
    assert cfg.balance == 1.0 and all(t.balance == 1.0 for t in cfg.terms)  # the run's key sets every term
    for bad in (-0.5, "x", True):
        with pytest.raises(KDError, match="balance must be a number"):
            build_config({"method": "cwd", "balance": bad})
    y = tmp_path / "m.yaml"
    y.write_text("terms:\n  - {type: cwd, balance: 0.5}\n  - {type: hint, weight: 2.0}\n")
    cfg = build_config({"method": str(y)})
    assert [(t.balance, t.weight) for t in cfg.terms] == [(0.5, 1.0), (0.0, 2.0)]
    assert [t.balance for t in build_config({"method": str(y), "balance": 0}).terms] == [0.0, 0.0]  # 0: all fixed
    y.write_text("terms:\n  - {type: cwd, balance: -1}\n")
    with pytest.raises(KDError, match="'balance' must be a number >= 0"):
        build_config({"method": str(y)})


def test_kdmodel_mixes_automatic_and_fixed_weights(pico_yaml, tmp_path):
    y = tmp_path / "m.yaml"
    y.write_text("terms:\n  - {type: cwd, balance: 0.5}\n  - {type: hint, weight: 3.0}\n")
    student, teacher = build(pico_yaml), build("yolov8n.yaml")
    teacher.eval()
    model = KDModel(student, teacher, build_config({"teacher": "t.pt", "method": str(y)}), imgsz=64).train()
    _, items = model.loss(toy_batch())
    det = sum(items[k].item() for k in ("box_loss", "cls_loss", "dfl_loss"))
    assert items["cwd_loss"].item() == pytest.approx(0.5 * det, rel=1e-4)
    assert items["hint_loss"].item() == pytest.approx(3.0 * model.balance.sums[2].item(), rel=1e-4)  # fixed weight
    assert model.term_weights()["hint"] == 3.0
    logged = model.term_weights()["cwd"]  # the weight the step used: one rule for both (`effective_weights`)
    assert items["cwd_loss"].item() == pytest.approx(logged * model.balance.sums[1].item(), rel=1e-6)
