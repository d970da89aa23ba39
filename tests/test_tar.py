# yolokd, AGPL-3.0 License
"""TAR terms: Gaussian-mask imitation, positives-only class distillation, teacher-gated box distillation, decay."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from helpers import assigned, kd_model, np_giou, toy_batch
from torch import nn

from yolokd.config import resolve_method
from yolokd.losses import TERMS, DistillInputs, Side
from yolokd.losses import functional as kdf
from yolokd.losses.tar import TARBox, TARCls, TARFeat
from yolokd.schedules import Progress

ITEMS = ["tar_feat_loss", "tar_cls_loss", "tar_box_loss"]

pytestmark = pytest.mark.usefixtures("seeded")


def _inputs(
    s_feats=(), t_feats=(), s_preds=None, t_preds=None, batch=None, assigned=None, s_reg=0, t_reg=0
) -> DistillInputs:
    """A hand-built `DistillInputs` (only the fields a TAR term reads); strides as the probe finds them."""
    img_h = (batch or {}).get("img", torch.zeros(0, 0, 0, 0)).shape[-2]
    return DistillInputs(
        student=Side(list(s_feats), s_preds or {}, reg_max=s_reg),
        teacher=Side(list(t_feats), t_preds or {}, reg_max=t_reg),
        batch=batch or {},
        assigned=assigned,
        strides=[img_h / f.shape[-2] for f in t_feats] if img_h else [],
    )


# ----------------------------------------------------------------------------------------------------------- tar_feat
def _one_box_batch(img_hw=(32, 32), box_xywh=(0.4, 0.5, 0.5, 0.25)) -> dict:
    return {
        "img": torch.zeros(1, 3, *img_hw),
        "cls": torch.tensor([[0.0]]),
        "bboxes": torch.tensor([box_xywh]),
        "batch_idx": torch.tensor([0.0]),
    }


def _hand_mask(h: int, w: int, stride: float, img_hw, box_xywh, sigma_scale: float) -> np.ndarray:
    """The Gaussian of targets.py, written out: sigma = sigma_scale * half size, evaluated at cell centres (pixels)."""
    cx, cy = box_xywh[0] * img_hw[1], box_xywh[1] * img_hw[0]
    sx, sy = sigma_scale * box_xywh[2] * img_hw[1] / 2, sigma_scale * box_xywh[3] * img_hw[0] / 2
    m = np.zeros((h, w))
    for i in range(h):
        for j in range(w):
            x, y = (j + 0.5) * stride, (i + 0.5) * stride
            m[i, j] = math.exp(-((x - cx) ** 2 / (2 * sx**2) + (y - cy) ** 2 / (2 * sy**2)))
    return m


@pytest.mark.parametrize("sigma_scale", [0.5, 1.0])
def test_tar_feat_hand_computed_one_level_one_box(sigma_scale: float) -> None:
    box = (0.4, 0.5, 0.5, 0.25)  # xywh normalised: centre (12.8, 16) px, 16 x 8 px on a 32 x 32 image
    s, t = torch.randn(1, 3, 4, 4), torch.randn(1, 3, 4, 4)  # stride 8
    term = TARFeat(sigma_scale=sigma_scale)
    got = term(_inputs([s], [t], batch=_one_box_batch(box_xywh=box)), nn.ModuleList([nn.Identity()]))
    m = _hand_mask(4, 4, 8.0, (32, 32), box, sigma_scale)
    sq = ((s - t).numpy().astype(np.float64) ** 2).sum(1)[0]  # (H, W), summed over C
    expected = (m * sq).sum() / (3 * m.sum())
    assert got.dim() == 0 and got.dtype == torch.float32
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_tar_feat_sums_levels_each_normalised_by_its_own_mask() -> None:
    box = (0.5, 0.5, 0.5, 0.5)
    feats = [(torch.randn(1, 2, 4, 4), torch.randn(1, 2, 4, 4)), (torch.randn(1, 2, 2, 2), torch.randn(1, 2, 2, 2))]
    got = TARFeat()(
        _inputs([f[0] for f in feats], [f[1] for f in feats], batch=_one_box_batch(box_xywh=box)),
        nn.ModuleList([nn.Identity(), nn.Identity()]),
    )
    expected = 0.0
    for (s, t), stride in zip(feats, (8.0, 16.0)):
        h = s.shape[-1]
        m = _hand_mask(h, h, stride, (32, 32), box, 0.5)
        expected += (m * ((s - t).numpy().astype(np.float64) ** 2).sum(1)[0]).sum() / (2 * m.sum())
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_tar_feat_zero_when_adapted_student_equals_teacher() -> None:
    t = torch.randn(2, 4, 4, 4)
    batch = {**toy_batch(2, 32)}
    adapter = nn.Conv2d(4, 4, 1)
    with torch.no_grad():
        adapter.weight.copy_(torch.eye(4).view(4, 4, 1, 1) * 2.0)
        adapter.bias.fill_(1.0)
    s = (t - 1.0) / 2.0  # adapter(s) == t
    loss = TARFeat()(_inputs([s], [t], batch=batch), nn.ModuleList([adapter]))
    assert loss.item() == pytest.approx(0.0, abs=1e-10)


def test_tar_feat_zero_and_connected_without_boxes() -> None:
    batch = {"img": torch.zeros(2, 3, 32, 32), "cls": torch.zeros(0, 1), "bboxes": torch.zeros(0, 4)}
    batch["batch_idx"] = torch.zeros(0)
    s = torch.randn(2, 3, 4, 4, requires_grad=True)
    loss = TARFeat()(_inputs([s], [torch.randn(2, 3, 4, 4)], batch=batch), nn.ModuleList([nn.Identity()]))
    assert loss.item() == 0.0
    loss.backward()
    assert s.grad is not None and float(s.grad.abs().sum()) == 0.0


def test_tar_feat_standardise_hand_computed_and_blind_to_the_teachers_scale() -> None:
    box = (0.4, 0.5, 0.5, 0.25)
    s, t = torch.randn(2, 3, 4, 4, dtype=torch.float64), torch.randn(2, 3, 4, 4, dtype=torch.float64)
    batch = _one_box_batch(box_xywh=box)
    batch = {**batch, "img": torch.zeros(2, 3, 32, 32)}  # the one box on image 0, none on image 1
    term, ident = TARFeat(standardise=True), nn.ModuleList([nn.Identity()])
    got = term(_inputs([s], [t], batch=batch), ident)
    m = np.stack([_hand_mask(4, 4, 8.0, (32, 32), box, 0.5), np.zeros((4, 4))])  # (N, H, W)
    z = [(x - x.mean(dim=(0, 2, 3), keepdim=True)) / (x.std(dim=(0, 2, 3), keepdim=True) + 1e-6) for x in (s, t)]
    sq = ((z[0] - z[1]).numpy() ** 2).sum(1)  # (N, H, W), summed over C
    assert got.item() == pytest.approx((m * sq).sum() / (3 * m.sum()), rel=1e-6)
    assert term(_inputs([s], [t * 50.0 + 3.0], batch=batch), ident).item() == pytest.approx(got.item(), rel=1e-5)
    assert TARFeat()(_inputs([s], [t * 50.0], batch=batch), ident).item() > 100 * got.item()  # without: it scales


def test_tar_feat_rejects_bad_sigma() -> None:
    with pytest.raises(ValueError, match="sigma_scale must be > 0"):
        TARFeat(sigma_scale=0.0)


# ------------------------------------------------------------------------------------------------------------ tar_cls
def test_tar_cls_equals_kd_qfl_on_positives_only() -> None:
    s, t = torch.randn(2, 3, 5), torch.randn(2, 3, 5)  # (N, nc, A)
    fg = [[True, False, False, True, False], [False, False, True, False, False]]
    a = assigned(fg)
    term = TARCls()
    got = term(_inputs(s_preds={"scores": s}, t_preds={"scores": t}, assigned=a), None)
    rows = [(0, 0), (0, 3), (1, 2)]
    s_pos = torch.stack([s[n, :, i] for n, i in rows])
    t_pos = torch.stack([t[n, :, i] for n, i in rows])
    assert got.item() == pytest.approx(float(kdf.kd_qfl(s_pos, t_pos, beta=1.0, avg_factor=3.0)), rel=1e-6)
    # and by hand: sum over positives and classes of BCE(s, q) |sigmoid(s) - q|, over 3 positives
    sn, q = s_pos.double().numpy(), 1 / (1 + np.exp(-t_pos.double().numpy()))
    ps = 1 / (1 + np.exp(-sn))
    bce = -(q * np.log(ps) + (1 - q) * np.log(1 - ps))
    assert got.item() == pytest.approx((bce * np.abs(ps - q)).sum() / 3, rel=1e-5)
    # anchors outside the positives must not matter
    s2, t2 = s.clone(), t.clone()
    neg = ~a.fg_mask
    s2.permute(0, 2, 1)[neg] = 7.0
    t2.permute(0, 2, 1)[neg] = -9.0
    assert float(term(_inputs(s_preds={"scores": s2}, t_preds={"scores": t2}, assigned=a), None)) == got.item()


def test_tar_cls_zero_when_student_equals_teacher_and_without_positives() -> None:
    s = torch.randn(1, 4, 6, requires_grad=True)
    a = assigned([[True, True, False, False, True, False]])
    assert (
        TARCls()(_inputs(s_preds={"scores": s}, t_preds={"scores": s.detach().clone()}, assigned=a), None).item() == 0
    )
    inp = _inputs(s_preds={"scores": s}, t_preds={"scores": torch.randn(1, 4, 6)}, assigned=assigned([[False] * 6]))
    loss = TARCls()(inp, None)
    assert loss.item() == 0.0
    loss.backward()  # still connected
    assert s.grad is not None


# ------------------------------------------------------------------------------------------------------------ tar_box
# Two positive anchors at grid (2.5, 2.5) and (5.5, 1.5), stride 8; reg_max 1 boxes are ltrb distances in grid units.
_AP = torch.tensor([[2.5, 2.5], [5.5, 1.5]])
_GT_DIST = torch.tensor([[1.0, 1.0, 1.0, 1.0], [2.0, 1.0, 1.0, 0.5]])  # (A, 4)


def _to_px(dist: torch.Tensor) -> torch.Tensor:
    """(A, 4) ltrb grid distances -> (A, 4) xyxy pixels at the anchors above, stride 8."""
    return torch.cat([_AP - dist[:, :2], _AP + dist[:, 2:]], 1) * 8.0


def _box_inputs(s_dist: torch.Tensor, t_boxes: torch.Tensor, t_reg_max: int = 1, fg=((True, True),)) -> DistillInputs:
    gt = _to_px(_GT_DIST).unsqueeze(0)
    a = assigned([list(f) for f in fg], anchor_points=_AP, target_bboxes=gt)
    return _inputs(
        s_preds={"boxes": s_dist.T.unsqueeze(0)},  # (1, 4, A)
        t_preds={"boxes": t_boxes},
        assigned=a,
        s_reg=1,
        t_reg=t_reg_max,
    )


def _dfl_logits(dist: torch.Tensor, low: float = -1e4) -> torch.Tensor:
    """(A, 4) grid distances -> (1, 64, A) DFL logits (reg_max 16) whose expectation is exactly ``dist``.

    Integer distances get one bin, ``k + 0.5`` two equal bins; every other bin has logit ``low``.
    """
    logits = torch.full((1, 4, 16, dist.shape[0]), low)
    for a in range(dist.shape[0]):
        for side in range(4):
            d = float(dist[a, side])
            logits[0, side, math.floor(d), a] = 0.0
            logits[0, side, math.ceil(d), a] = 0.0
    return logits.view(1, 64, dist.shape[0])


def test_tar_box_gate_one_where_teacher_is_gt_and_loss_by_hand() -> None:
    s_dist = _GT_DIST + torch.tensor([[0.0, 0.0, 1.0, 0.0], [0.5, 0.5, 0.0, 0.0]])  # student off, teacher == GT
    term = TARBox()
    s = s_dist.clone().requires_grad_(True)
    loss = term(_box_inputs(s, _GT_DIST.T.unsqueeze(0)), None)
    assert term.stats["teacher_better"] == 1.0
    s_px, gt_px = _to_px(s_dist).tolist(), _to_px(_GT_DIST).tolist()
    expected = sum(1 - np_giou(sb, gb) for sb, gb in zip(s_px, gt_px)) / 2
    assert expected > 0.1
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert loss.item() == pytest.approx((1 - 256 / 384 + 1 - 288 / 448) / 2, rel=1e-5)  # hull == union: GIoU = IoU
    loss.backward()
    assert s.grad is not None and float(s.grad.abs().sum()) > 0


def test_tar_box_gate_zero_where_student_is_gt() -> None:
    t_dist = _GT_DIST + torch.tensor([[0.0, 0.0, 1.0, 0.0], [0.5, 0.5, 0.0, 0.0]])
    s = _GT_DIST.clone().requires_grad_(True)
    term = TARBox()
    loss = term(_box_inputs(s, t_dist.T.unsqueeze(0)), None)
    assert term.stats["teacher_better"] == 0.0
    assert loss.item() == 0.0
    loss.backward()  # a zero still connected to the graph
    assert s.grad is not None and float(s.grad.abs().sum()) == 0.0


def test_tar_box_mixed_gate_and_teacher_decoded_with_its_own_reg_max() -> None:
    # anchor 0: teacher == GT, student off (gate open); anchor 1: student == GT, teacher off (closed)
    s_dist = torch.stack([_GT_DIST[0] + torch.tensor([0.0, 0.0, 1.0, 0.0]), _GT_DIST[1]])
    t_dist = torch.stack([_GT_DIST[0], _GT_DIST[1] + 0.5])
    term = TARBox()
    loss = term(_box_inputs(s_dist, _dfl_logits(t_dist), t_reg_max=16), None)
    assert term.stats["teacher_better"] == 0.5
    # over both positives (the candidates), not over the one open gate: (1 - 2/3) / 2
    expected = (1 - np_giou(_to_px(s_dist)[0].tolist(), _to_px(_GT_DIST)[0].tolist())) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_tar_box_no_positives_zero() -> None:
    s = _GT_DIST.clone().requires_grad_(True)
    term = TARBox()
    loss = term(_box_inputs(s, (_GT_DIST + 1).T.unsqueeze(0), fg=((False, False),)), None)
    assert loss.item() == 0.0 and term.stats["teacher_better"] == 0.0
    loss.backward()


# ------------------------------------------------------------------------------------------------- numerical safety
def test_tar_terms_large_logits_finite() -> None:
    s_sc = torch.full((1, 3, 4), 1e4).requires_grad_(True)
    t_sc = torch.tensor([-1e4, 1e4, -1e4]).view(1, 3, 1).expand(1, 3, 4).clone()
    a = assigned([[True, True, False, True]])
    loss = TARCls()(_inputs(s_preds={"scores": s_sc}, t_preds={"scores": t_sc}, assigned=a), None)
    loss.backward()
    # at each of the 3 positives: two classes confidently wrong (BCE 1e4, factor 1), one right (0); over 3 positives
    assert loss.item() == pytest.approx(2e4, rel=1e-6) and torch.isfinite(s_sc.grad).all()

    s_box = (torch.randn(1, 64, 2) * 1e4).requires_grad_(True)  # DFL logits, reg_max 16
    t_box = _dfl_logits(_GT_DIST, low=-1e4) + 1e4  # the teacher is the GT, logits around 1e4
    gt = _to_px(_GT_DIST).unsqueeze(0)
    inp = _inputs(
        s_preds={"boxes": s_box},
        t_preds={"boxes": t_box},
        assigned=assigned([[True, True]], anchor_points=_AP, target_bboxes=gt),
        s_reg=16,
        t_reg=16,
    )
    term = TARBox()
    loss = term(inp, None)
    loss.backward()
    assert term.stats["teacher_better"] == 1.0
    # logits 1e4 apart put each side's whole mass on its largest bin: the student's distances are the argmax bins
    s_dist = s_box.detach().view(4, 16, 2).argmax(1).T.float()  # (A, 4)
    expected = sum(1 - np_giou(sb, gb) for sb, gb in zip(_to_px(s_dist).tolist(), gt[0].tolist())) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-5) and torch.isfinite(s_box.grad).all()

    s_f = (torch.randn(1, 2, 4, 4) * 1e4).requires_grad_(True)
    t_f = torch.randn(1, 2, 4, 4) * 1e4
    loss = TARFeat()(_inputs([s_f], [t_f], batch=_one_box_batch()), nn.ModuleList([nn.Identity()]))
    loss.backward()
    m = _hand_mask(4, 4, 8.0, (32, 32), (0.4, 0.5, 0.5, 0.25), 0.5)  # _one_box_batch's box, sigma_scale 0.5
    sq = ((s_f.detach() - t_f).double().numpy() ** 2).sum(1)[0]
    assert loss.item() == pytest.approx((m * sq).sum() / (2 * m.sum()), rel=1e-5) and torch.isfinite(s_f.grad).all()


# ------------------------------------------------------------------------------------------------ real models, yaml
@pytest.mark.parametrize(
    "student, teacher",
    [("yolov8", "yolov8n.yaml"), ("yolo11", "yolo11n.yaml"), ("yolo26", "yolo26n.yaml"), ("yolov8", "yolo11n.yaml")],
)
def test_tar_kd_step_items_and_gradients(pico_yamls, student: str, teacher: str) -> None:
    model = kd_model(pico_yamls[student], teacher, "tar")
    loss, items = model.loss(toy_batch())
    names = list(items)
    assert names[-3:] == ITEMS
    assert all(float(items[k]) > 0 and math.isfinite(float(items[k])) for k in ITEMS)
    assert 0.0 <= model.term_stats()["tar_box/teacher_better"] <= 1.0
    n_det = len(names) - 3
    # each TAR term alone sends gradient to the student and none to the teacher
    for i, branch in ((n_det, None), (n_det + 1, "cv3"), (n_det + 2, "cv2")):
        model.zero_grad(set_to_none=True)
        loss[i].backward(retain_graph=True)
        assert all(p.grad is None for p in model.teacher_model.parameters())
        if branch is None:  # the feature term trains its adapters
            assert all(
                p.grad is not None and float(p.grad.abs().sum()) > 0 for p in model.projector["tar_feat"].parameters()
            )
        else:  # the head terms reach the student's class / box branch
            head = model.student_model.model[-1]
            assert sum(float(p.grad.abs().sum()) for p in getattr(head, branch).parameters() if p.grad is not None) > 0
    assert list(model.projector) == ["tar_feat"]


def test_tar_yaml_defaults_and_linear_decay(pico_yamls) -> None:
    specs = resolve_method("tar")
    assert [(s.type, s.name, s.schedule) for s in specs] == [
        ("tar_feat", "tar_feat", "linear"),
        ("tar_cls", "tar_cls", "linear"),
        ("tar_box", "tar_box", "linear"),
    ]
    assert [s.weight for s in specs] == [1.5, 2.0, 7.5]
    assert [s.balance for s in specs] == [0.25, 0.25, 0.25]  # automatic weights by default (the sweep's choice)
    assert specs[0].params == {"sigma_scale": 0.5} and specs[1].params == {"beta": 1.0}
    assert all(TERMS[s.type].__name__ in {"TARFeat", "TARCls", "TARBox"} for s in specs)

    model = kd_model(pico_yamls["yolov8"], "yolov8n.yaml", "tar", balance=0)  # the fixed weights
    start = model.term_weights(Progress(epoch=0, epochs=10))
    mid = model.term_weights(Progress(epoch=5, epochs=10))
    end = model.term_weights(Progress(epoch=10, epochs=10))
    assert start == {"tar_feat": 1.5, "tar_cls": 2.0, "tar_box": 7.5}
    assert mid == pytest.approx({k: v / 2 for k, v in start.items()})
    assert end == {"tar_feat": 0.0, "tar_cls": 0.0, "tar_box": 0.0}
    model.progress = Progress(epoch=10, epochs=10)
    _, items = model.loss(toy_batch())
    assert all(float(items[k]) == 0.0 for k in ITEMS)  # scheduled off at the end
