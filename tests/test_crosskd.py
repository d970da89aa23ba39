# yolokd, AGPL-3.0 License
"""CrossKD terms: hand computations on a fake head, layout against real Detect heads, gradient routing in KDModel.

Expected values are computed with numpy, level by level and anchor by anchor, never with the torch expressions under
test.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from helpers import assigned, build, kd_model, np_align_scale, np_giou, np_log_softmax, np_sigmoid, toy_batch
from torch import nn

from yolokd.config import resolve_method
from yolokd.losses import TERMS, DistillInputs, Probe, Side
from yolokd.losses.crosskd import CrossKDBox, CrossKDCls, cross_head_predictions
from yolokd.taps import detect_head

SIZES = ((2, 3), (2, 2))  # two levels, (H, W)
CH, NC, N = 4, 3, 2

pytestmark = pytest.mark.usefixtures("seeded")


class FakeHead(nn.Module):
    """A Detect-like head: per level ``Sequential(conv, conv, final 1x1 conv)`` for ``cv2`` (box) and ``cv3`` (cls)."""

    def __init__(self, reg_max: int = 4, nl: int = len(SIZES), scale: float = 1.0):
        super().__init__()
        self.reg_max, self.nc, self.stride = reg_max, NC, torch.tensor([8.0, 16.0][:nl])

        def seq(c_out: int, bias: float) -> nn.Sequential:
            s = nn.Sequential(nn.Conv2d(CH, CH, 1), nn.Conv2d(CH, CH, 1), nn.Conv2d(CH, c_out, 1))
            with torch.no_grad():
                s[2].weight.mul_(scale)
                s[2].bias.add_(bias)
            return s

        self.cv2 = nn.ModuleList(seq(4 * reg_max, 3.0 if reg_max == 1 else 0.0) for _ in range(nl))
        self.cv3 = nn.ModuleList(seq(NC, 0.0) for _ in range(nl))


def fake_inputs(head: FakeHead, stage: int = 1, same: bool = False, num_fg: int = 3, t_scale: float = 2.0):
    """DistillInputs whose teacher predictions are the fake head run on the teacher's stage outputs."""
    feats = [torch.randn(N, CH, h, w) for h, w in SIZES]
    s_stages, t_stages, preds = {}, {}, {"boxes": [], "scores": []}
    for branch, key in (("cv2", "boxes"), ("cv3", "scores")):
        for level, (h, w) in enumerate(SIZES):
            t = torch.randn(N, CH, h, w) * t_scale + 0.5
            s = t.clone() if same else torch.randn(N, CH, h, w) * 0.7 - 0.2
            t_stages[(branch, level, stage)] = t
            s_stages[(branch, level, stage)] = s.requires_grad_()
            with torch.no_grad():
                preds[key].append(getattr(head, branch)[level][stage + 1 :](t).flatten(2))
    preds = {k: torch.cat(v, 2) for k, v in preds.items()} | {"feats": feats}
    a = preds["scores"].shape[-1]
    fg = torch.zeros(N, a, dtype=torch.bool)
    fg.view(-1)[:num_fg] = True
    return DistillInputs(
        student=Side(feats, preds, s_stages, reg_max=head.reg_max),
        teacher=Side(feats, preds, t_stages, head, head.reg_max),
        batch={},
        assigned=assigned(fg, stride_tensor=torch.ones(a, 1)),
    )


# ------------------------------------------------------------------------------------------------ numpy references
def _np(x: torch.Tensor) -> np.ndarray:
    return x.detach().double().numpy()


def _np_conv1x1(x: np.ndarray, conv: nn.Conv2d) -> np.ndarray:
    return np.einsum("oc,nchw->nohw", _np(conv.weight)[:, :, 0, 0], x) + _np(conv.bias)[None, :, None, None]


def _np_cross(inputs: DistillInputs, branch: str, level: int) -> np.ndarray:
    """Stage-1 cross prediction of one level: the teacher's final conv on the aligned student features."""
    key = (branch, level, 1)
    x = np_align_scale(_np(inputs.student_stages[key]), _np(inputs.teacher_stages[key]))
    return _np_conv1x1(x, getattr(inputs.teacher_head, branch)[level][2])


def _np_level_preds(inputs: DistillInputs, key: str, level: int) -> np.ndarray:
    """The teacher's predictions of one level, (N, C, H, W)."""
    start = sum(h * w for h, w in SIZES[:level])
    h, w = SIZES[level]
    return _np(inputs.teacher_preds[key])[:, :, start : start + h * w].reshape(N, -1, h, w)


# ------------------------------------------------------------------------------------------------ hand computations
def test_crosskd_cls_equals_hand_kd_qfl() -> None:
    """cls = sum over anchors and classes of BCE(cross, sigmoid(t)) * |sigmoid(cross) - sigmoid(t)| / num positives."""
    head = FakeHead()
    inputs = fake_inputs(head, num_fg=3)
    total = 0.0
    for level in range(len(SIZES)):
        s, t = _np_cross(inputs, "cv3", level), _np_level_preds(inputs, "scores", level)
        q = np_sigmoid(t)
        bce = np.maximum(s, 0) - s * q + np.log1p(np.exp(-np.abs(s)))
        total += (bce * np.abs(np_sigmoid(s) - q)).sum()
    got = CrossKDCls()(inputs, None)
    assert got.dim() == 0 and got.dtype == torch.float32
    assert got.item() == pytest.approx(total / 3, rel=1e-5)
    assert CrossKDCls(beta=2.0)(inputs, None).item() != pytest.approx(got.item(), rel=1e-3)  # beta is used


def test_crosskd_cls_confidence_norm_equals_hand_weighted_mean() -> None:
    """norm=confidence: sum_a w_a sum_c l_{a,c} / sum_a w_a, w = sigmoid(max teacher class logit); no positives."""
    head = FakeHead()
    num, den = 0.0, 0.0
    for num_fg in (3, 0):  # the positives do not enter
        inputs = fake_inputs(head, num_fg=num_fg)
        num, den = 0.0, 0.0
        for level in range(len(SIZES)):
            s, t = _np_cross(inputs, "cv3", level), _np_level_preds(inputs, "scores", level)
            q = np_sigmoid(t)
            bce = np.maximum(s, 0) - s * q + np.log1p(np.exp(-np.abs(s)))
            w = np_sigmoid(t.max(1))  # (N, H, W)
            num += (w * (bce * np.abs(np_sigmoid(s) - q)).sum(1)).sum()
            den += w.sum()
        got = CrossKDCls(norm="confidence")(inputs, None)
        assert got.item() == pytest.approx(num / den, rel=1e-5)
    assert CrossKDCls(norm="confidence")(inputs, None).item() != pytest.approx(
        CrossKDCls()(fake_inputs(head, num_fg=3), None).item(), rel=1e-2
    )
    with pytest.raises(ValueError, match="norm must be one of"):
        CrossKDCls(norm="anchors")


def test_crosskd_box_ld_equals_hand_weighted_kl() -> None:
    """box (DFL) = sum_{anchor, side} w KL(p_t || p_cross) / (4 sum w), w = sigmoid(max teacher class logit)."""
    head, r = FakeHead(reg_max=4), 4
    inputs = fake_inputs(head)
    num, den = 0.0, 0.0
    for level, (h, w) in enumerate(SIZES):
        s, t = _np_cross(inputs, "cv2", level), _np_level_preds(inputs, "boxes", level)
        wts = np_sigmoid(_np_level_preds(inputs, "scores", level).max(1))  # (N, H, W)
        for n in range(N):
            for y in range(h):
                for x in range(w):
                    den += 4 * wts[n, y, x]
                    for side in range(4):
                        ls = np_log_softmax(s[n, side * r : (side + 1) * r, y, x])
                        lt = np_log_softmax(t[n, side * r : (side + 1) * r, y, x])
                        num += wts[n, y, x] * (np.exp(lt) * (lt - ls)).sum()
    got = CrossKDBox()(inputs, None)
    assert got.item() == pytest.approx(num / den, rel=1e-5)
    assert got.item() > 0


def test_crosskd_box_giou_equals_hand_weighted_giou() -> None:
    """box (reg_max 1) = giou_scale * sum w (1 - GIoU(cross box, teacher box)) / sum w, boxes from ltrb distances."""
    head = FakeHead(reg_max=1, scale=0.2)  # distances ~3 > 0
    inputs = fake_inputs(head)
    num, den = 0.0, 0.0
    for level, (h, w) in enumerate(SIZES):
        s, t = _np_cross(inputs, "cv2", level), _np_level_preds(inputs, "boxes", level)
        wts = np_sigmoid(_np_level_preds(inputs, "scores", level).max(1))
        for n in range(N):
            for y in range(h):
                for x in range(w):
                    ax, ay = x + 0.5, y + 0.5
                    bs = [ax - s[n, 0, y, x], ay - s[n, 1, y, x], ax + s[n, 2, y, x], ay + s[n, 3, y, x]]
                    bt = [ax - t[n, 0, y, x], ay - t[n, 1, y, x], ax + t[n, 2, y, x], ay + t[n, 3, y, x]]
                    num += wts[n, y, x] * (1.0 - np_giou(bs, bt))
                    den += wts[n, y, x]
    assert num > 0
    assert CrossKDBox()(inputs, None).item() == pytest.approx(0.25 * num / den, rel=1e-4)
    assert CrossKDBox(giou_scale=1.0)(inputs, None).item() == pytest.approx(num / den, rel=1e-4)


def test_crosskd_box_weight_is_exactly_zero_where_teacher_is_certain_background() -> None:
    """Anchors whose teacher class logits are all -inf (w = 0) do not count; one anchor at +inf (w = 1) is the mean."""
    head, r = FakeHead(reg_max=4), 4
    inputs = fake_inputs(head)
    scores = torch.full_like(inputs.teacher_preds["scores"], -float("inf"))
    scores[1, 2, 4] = float("inf")  # image 1, anchor 4 (level 0, y 1, x 1)
    inputs.teacher_preds = {**inputs.teacher_preds, "scores": scores}
    s, t = _np_cross(inputs, "cv2", 0)[1, :, 1, 1], _np_level_preds(inputs, "boxes", 0)[1, :, 1, 1]
    kl = [
        (np.exp(lt) * (lt - ls)).sum()
        for ls, lt in (
            (np_log_softmax(s[i * r : (i + 1) * r]), np_log_softmax(t[i * r : (i + 1) * r])) for i in range(4)
        )
    ]
    got = CrossKDBox()(inputs, None).item()
    assert got == pytest.approx(np.mean(kl), rel=1e-5)
    boxes = inputs.teacher_preds["boxes"].clone()
    boxes[0] += 5 * torch.randn_like(boxes[0])  # image 0 has weight 0 everywhere
    boxes[1, :, :4] -= 3.0
    inputs.teacher_preds = {**inputs.teacher_preds, "boxes": boxes}
    assert CrossKDBox()(inputs, None).item() == got


# ------------------------------------------------------------------------------------------------ zeros
def test_crosskd_zero_when_student_equals_teacher() -> None:
    """Identical hidden features (identity adapters) reproduce the teacher: box LD, GIoU and cls (kd_qfl(t, t)) ~ 0.

    Not bit-exact: ``align_scale`` divides by ``std + 1e-6``, so the re-standardised features differ by float32 rounding
    (kd_qfl is first order in that difference, LD and GIoU second order).
    """
    inputs = fake_inputs(FakeHead(reg_max=4), same=True)
    ident = nn.ModuleList([nn.Identity(), nn.Identity()])
    assert abs(CrossKDBox()(inputs, ident).item()) < 1e-6
    assert abs(CrossKDCls()(inputs, ident).item()) < 1e-5
    inputs = fake_inputs(FakeHead(reg_max=1, scale=0.2), same=True)
    assert abs(CrossKDBox()(inputs, None).item()) < 1e-6
    # and clearly non-zero when they differ
    assert CrossKDBox()(fake_inputs(FakeHead(reg_max=1, scale=0.2)), None).item() > 1e-3
    assert CrossKDCls()(fake_inputs(FakeHead(reg_max=4)), None).item() > 1e-2


def test_crosskd_box_giou_bounded_for_inverted_boxes() -> None:
    """Raw distances with l + r < 0 (inverted cross boxes) give 0 <= loss <= 2 * giou_scale, equal to sorted corners."""
    head = FakeHead(reg_max=1, scale=0.2)
    inputs = fake_inputs(head)  # teacher boxes: distances ~3
    with torch.no_grad():
        for seq in head.cv2:
            seq[2].bias.fill_(-3.0)  # cross distances ~ -3: every cross box is inverted
    num, den = 0.0, 0.0
    for level, (h, w) in enumerate(SIZES):
        s, t = _np_cross(inputs, "cv2", level), _np_level_preds(inputs, "boxes", level)
        wts = np_sigmoid(_np_level_preds(inputs, "scores", level).max(1))
        for n in range(N):
            for y in range(h):
                for x in range(w):
                    ax, ay = x + 0.5, y + 0.5
                    xs, ys = (
                        sorted([ax - s[n, 0, y, x], ax + s[n, 2, y, x]]),
                        sorted([ay - s[n, 1, y, x], ay + s[n, 3, y, x]]),
                    )
                    bt = [ax - t[n, 0, y, x], ay - t[n, 1, y, x], ax + t[n, 2, y, x], ay + t[n, 3, y, x]]
                    num += wts[n, y, x] * (1.0 - np_giou([xs[0], ys[0], xs[1], ys[1]], bt))
                    den += wts[n, y, x]
    got = CrossKDBox(giou_scale=1.0)(inputs, None).item()
    assert 0.0 <= got <= 2.0
    assert got == pytest.approx(num / den, rel=1e-4)


# ------------------------------------------------------------------------------------------------ gradients
def test_crosskd_gradients_reach_student_features_and_adapters_not_teacher_head() -> None:
    """Gradient flows through the teacher's layers to h_s and the adapters; teacher parameters get none."""
    head = FakeHead(reg_max=4)  # parameters left trainable on purpose: the term must not touch them
    inputs = fake_inputs(head, stage=0)
    adapters = nn.ModuleList([nn.Conv2d(CH, CH, 1), nn.Identity()])
    loss = CrossKDCls(stage=0)(inputs, adapters) + CrossKDBox(stage=0)(inputs, adapters)
    loss.backward()
    assert all(p.grad is None for p in head.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in adapters.parameters())
    assert all(x.grad is not None and x.grad.abs().sum() > 0 for x in inputs.student_stages.values())


def test_crosskd_large_logits_finite() -> None:
    """float32 cross logits and teacher logits of order 1e4 give a finite loss and finite gradients."""
    for reg_max in (4, 1):
        head = FakeHead(reg_max=reg_max, scale=3e3)
        inputs = fake_inputs(head, t_scale=10.0)
        cls, box = CrossKDCls()(inputs, None), CrossKDBox()(inputs, None)
        assert inputs.teacher_preds["scores"].abs().max() > 1e3
        assert torch.isfinite(cls) and torch.isfinite(box) and cls.item() > 0 and box.item() > 0
        (cls + box).backward()
        assert all(torch.isfinite(x.grad).all() for x in inputs.student_stages.values())


# ------------------------------------------------------------------------------------------------ real Detect heads
@pytest.mark.parametrize("yaml", ["yolov8n.yaml", "yolo11n.yaml", "yolo26n.yaml"])
def test_cross_head_predictions_match_real_head_layout(yaml: str) -> None:
    """With h_s = h_t, cross predictions equal the real head's own (N, C, A) outputs: same levels, channels, order.

    Covers the legacy (Conv, Conv) and DWConv class branches, YOLO26's one-to-many branch, and both crossing stages.
    """
    head = detect_head(build(yaml)).eval()
    with torch.no_grad():  # spread the outputs so that a layout error cannot hide behind equal biases
        for seq in [*head.cv2, *head.cv3]:
            nn.init.normal_(seq[-1].weight, std=0.5)
            nn.init.normal_(seq[-1].bias)
    x = [torch.randn(2, seq[0].conv.in_channels, s, s) for seq, s in zip(head.cv2, (8, 4, 2))]
    stages = {}
    with torch.no_grad():
        preds = head.forward_head(x, **head.one2many)
        for branch in ("cv2", "cv3"):
            for level, seq in enumerate(getattr(head, branch)):
                h0 = seq[0](x[level])
                stages[(branch, level, 0)], stages[(branch, level, 1)] = h0, seq[1](h0)
    bn = [b.clone() for m in head.modules() if isinstance(m, nn.BatchNorm2d) for b in (m.running_mean, m.running_var)]
    inputs = DistillInputs(
        student=Side(x, preds, {k: v.clone().requires_grad_() for k, v in stages.items()}),
        teacher=Side(x, preds, stages, head),
        batch={},
    )
    for (branch, key), stage in itertools.product((("cv2", "boxes"), ("cv3", "scores")), (0, 1)):
        cross = cross_head_predictions(inputs, branch, stage, None)
        assert cross.shape == preds[key].shape
        assert preds[key].std() > 0.3
        torch.testing.assert_close(cross, preds[key], atol=1e-3, rtol=1e-3)
        assert not torch.allclose(cross, preds[key].roll(1, dims=-1), atol=1e-3)
    after = [b for m in head.modules() if isinstance(m, nn.BatchNorm2d) for b in (m.running_mean, m.running_var)]
    assert all(torch.equal(a, b) for a, b in zip(bn, after))  # the teacher head's statistics are untouched


# ------------------------------------------------------------------------------------------------ KDModel, each family
def _calibrate_bn(model: nn.Module, img: torch.Tensor) -> None:
    """Give an untrained model's BatchNorm running statistics those of ``img`` (untrained eval-mode features vanish)."""
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average: one batch sets the statistics
    model.train()
    with torch.no_grad():
        model(img)
    model.eval()
    for m, mom in zip(bns, momenta):
        m.momentum = mom


@pytest.mark.parametrize("stage", [1, 0])
@pytest.mark.parametrize(
    "family, teacher",
    [("yolov8", "yolov8n.yaml"), ("yolo11", "yolo11n.yaml"), ("yolo26", "yolo26n.yaml"), ("yolov8", "yolo11n.yaml")],
)
def test_kdmodel_crosskd_gradient_routing(pico_yamls, tmp_path, family: str, teacher: str, stage: int) -> None:
    """In a real step each term's gradient reaches the student's crossed stage and adapters, not its later layers.

    Also: the loss items are present, finite and non-zero, the other branch gets nothing from a term, no teacher
    parameter gets a gradient, and an optimizer step changes every adapter. Both crossing stages (the shipped yaml's
    stage 1, and stage 0, where the teacher re-runs its last hidden stage too).
    """
    method = "crosskd"
    if stage != 1:
        method = tmp_path / "crosskd_stage.yaml"
        method.write_text(
            f"terms:\n  - {{type: crosskd_cls, weight: 1.0, params: {{stage: {stage}}}}}\n"
            f"  - {{type: crosskd_box, weight: 4.0, params: {{stage: {stage}}}}}\n"
        )
    batch = toy_batch()
    kd = kd_model(pico_yamls[family], teacher, str(method), prepare_teacher=lambda t: _calibrate_bn(t, batch["img"]))
    assert [t.stage for t in kd.terms] == [stage, stage] and kd.stage_taps == [("cv2", stage), ("cv3", stage)]
    loss, items = kd.loss(batch)
    names = list(items)
    assert names[-2:] == ["crosskd_cls_loss", "crosskd_box_loss"]
    assert all(torch.isfinite(items[n]) and items[n] > 0 for n in names[-2:])
    sh = detect_head(kd.student_model)
    for term, branch, other in (("crosskd_cls", "cv3", "cv2"), ("crosskd_box", "cv2", "cv3")):
        groups = {
            "stage": [list(seq[stage].parameters()) for seq in getattr(sh, branch)],
            "final": [list(seq[stage + 1 :].parameters()) for seq in getattr(sh, branch)],
            "other": [list(getattr(sh, other).parameters())],
            "adapters": [list(kd.projector[term].parameters())],
        }
        flat = [p for g in groups.values() for ps in g for p in ps]
        value = loss[names.index(f"{term}_loss")]
        grads = iter(torch.autograd.grad(value, flat, allow_unused=True, retain_graph=True))
        got = {k: [[next(grads) for _ in ps] for ps in g] for k, g in groups.items()}
        for level_grads in got["stage"]:  # every level's crossed stage learns from the term
            assert all(g is not None for g in level_grads) and sum(g.abs().sum() for g in level_grads) > 0
        # None, or exact zeros from the backward through the loss vector's concatenation
        assert all(g is None or not g.any() for gs in got["final"] + got["other"] for g in gs)
        assert all(g is not None and g.abs().sum() > 0 for g in got["adapters"][0])
    assert len(list(kd.projector["crosskd_cls"].parameters())) == 3  # 3 levels x weight (no bias): 32 -> 64 channels
    before = [p.detach().clone() for p in kd.projector.parameters()]
    opt = torch.optim.SGD([p for p in kd.parameters() if p.requires_grad], lr=0.1)
    loss.sum().backward()
    assert all(p.grad is None for p in kd.teacher_model.parameters())
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in kd.projector.parameters())
    opt.step()
    assert all(not torch.equal(b, p) for b, p in zip(before, kd.projector.parameters()))


# ------------------------------------------------------------------------------------------------ config, adapters
def test_crosskd_yaml_defaults() -> None:
    """The method yaml loads with the documented defaults, which equal the terms' own defaults."""
    cls, box = resolve_method("crosskd")
    assert (cls.type, cls.name, cls.weight, cls.schedule) == ("crosskd_cls", "crosskd_cls", 1.0, "constant")
    assert (box.type, box.name, box.weight, box.schedule) == ("crosskd_box", "crosskd_box", 4.0, "constant")
    assert cls.params == {"stage": 1, "beta": 1.0, "norm": "positives"}
    assert box.params == {"stage": 1, "T": 1.0, "giou_scale": 0.25}
    assert (
        repr(TERMS["crosskd_cls"](**cls.params))
        == repr(CrossKDCls())
        == "CrossKDCls(branch=cv3, stage=1, beta=1.0, norm=positives)"
    )
    assert repr(TERMS["crosskd_box"](**box.params)) == repr(CrossKDBox())
    assert CrossKDCls.needs_targets and not CrossKDBox.needs_targets
    assert (CrossKDCls(stage=0).taps(), CrossKDBox().taps()) == ([("cv3", 0)], [("cv2", 1)])
    assert [s.name for s in resolve_method("cwd+crosskd")] == ["cwd", "crosskd_cls", "crosskd_box"]


def test_crosskd_make_adapters_only_where_widths_differ() -> None:
    probe = Probe(
        student_channels=[8, 16],
        teacher_channels=[16, 32],
        strides=[8, 16],
        student_stage_channels={("cv3", 0, 1): 8, ("cv3", 1, 1): 16, ("cv2", 0, 1): 64, ("cv2", 1, 1): 64},
        teacher_stage_channels={("cv3", 0, 1): 16, ("cv3", 1, 1): 16, ("cv2", 0, 1): 64, ("cv2", 1, 1): 64},
    )
    cls = CrossKDCls().make_adapters(probe)
    assert isinstance(cls[0], nn.Conv2d) and (cls[0].in_channels, cls[0].out_channels) == (8, 16)
    assert isinstance(cls[1], nn.Identity)
    assert all(isinstance(a, nn.Identity) for a in CrossKDBox().make_adapters(probe))


def test_crosskd_invalid_arguments_and_inputs() -> None:
    for bad in (2, -1, True):
        with pytest.raises(ValueError, match="stage must be 0 or 1"):
            CrossKDCls(stage=bad)
    with pytest.raises(ValueError, match="T must be > 0"):
        CrossKDBox(T=0.0)
    inputs = fake_inputs(FakeHead())
    inputs.assigned = None
    with pytest.raises(ValueError, match="needs the TAL assignment"):
        CrossKDCls()(inputs, None)
    with pytest.raises(KeyError, match="was not tapped"):
        CrossKDBox(stage=0)(fake_inputs(FakeHead(), stage=1), None)
