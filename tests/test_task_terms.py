# yolokd, AGPL-3.0 License
"""Task terms: mask (segment) and keypoint (pose), against hand computations and Ultralytics' own decoding."""

from __future__ import annotations

import inspect
import math
from pathlib import Path

import pytest
import torch
from helpers import assigned, np_sigmoid
from ultralytics.nn.modules.head import Pose, Pose26
from ultralytics.utils.tal import make_anchors

from yolokd.config import KDConfig, resolve_method
from yolokd.head import decode_keypoints
from yolokd.losses import TERM_ALIASES, TERMS, DistillInputs, Side
from yolokd.losses import functional as kdf
from yolokd.losses.keypoint import KeypointKD
from yolokd.losses.mask import MaskKD

pytestmark = pytest.mark.usefixtures("seeded")


def test_mask_term_is_blind_to_the_prototype_basis_and_compares_only_positives():
    """Prototypes mixed by an invertible map M, coefficients by M^-T: the same masks, so a zero loss."""
    n, nm, a, h, w = 2, 4, 6, 8, 8
    coef, proto = torch.randn(n, nm, a), torch.randn(n, nm, h, w)
    m = torch.randn(nm, nm) + 3 * torch.eye(nm)
    coef2 = torch.einsum("ij,njа->nia".replace("а", "a"), torch.linalg.inv(m).T, coef)
    proto2 = torch.einsum("ij,njhw->nihw", m, proto)
    fg = torch.zeros(n, a, dtype=torch.bool)
    fg[0, [1, 4]] = True  # two positives in image 0, none in image 1
    boxes = torch.tensor([0.0, 0.0, 32.0, 32.0]).expand(n, a, 4).clone()  # pixels of a 32-px image
    scores = torch.zeros(n, 3, a)
    inputs = DistillInputs(
        Side(preds={"mask_coefficient": coef2, "proto": proto2, "scores": scores}),
        Side(preds={"mask_coefficient": coef, "proto": proto, "scores": scores}),
        {"img": torch.zeros(n, 3, 32, 32)},
        assigned=assigned(fg, anchor_points=torch.zeros(a, 2), target_bboxes=boxes),
    )
    term = MaskKD(max_instances=3)
    assert term(inputs, None).item() == pytest.approx(0.0, abs=1e-5)
    # a student that differs only at negatives and in image 1 is still at zero: only positives are compared
    coef3 = coef.clone()
    coef3[0, :, [0, 2, 3, 5]] += 5.0
    coef3[1] += 5.0
    inputs.student_preds = {"mask_coefficient": coef3, "proto": proto, "scores": scores}
    assert term(inputs, None).item() == pytest.approx(0.0, abs=1e-6)
    coef3[0, :, 4] += 1.0  # now one positive differs
    want_logits = [torch.einsum("c,chw->hw", coef3[0, :, i], proto[0]) for i in (1, 4)]
    teacher_logits = [torch.einsum("c,chw->hw", coef[0, :, i], proto[0]) for i in (1, 4)]
    region = torch.zeros(h, w)
    region[:, :] = 1.0  # the 32-px box covers the whole 8x8 prototype
    want = kdf.mask_kd(torch.stack(want_logits), torch.stack(teacher_logits), region.expand(2, h, w), torch.ones(2))
    assert term(inputs, None).item() == pytest.approx(want.item(), rel=1e-5)
    assert term.stats == {"positives": 1.0, "compared": 1.0}  # 2 positives over 2 images, both compared


def test_mask_term_crops_to_the_assigned_box():
    n, nm, a, h, w = 1, 2, 1, 4, 4
    coef_t, coef_s = torch.ones(n, nm, a), torch.zeros(n, nm, a)
    proto = torch.ones(n, nm, h, w)
    fg = torch.ones(n, a, dtype=torch.bool)
    box = torch.tensor([[[0.0, 0.0, 8.0, 16.0]]])  # left half, full height of a 16-px image -> 2 x 4 proto pixels
    inputs = DistillInputs(
        Side(preds={"mask_coefficient": coef_s, "proto": proto, "scores": torch.zeros(n, 1, a)}),
        Side(preds={"mask_coefficient": coef_t, "proto": proto, "scores": torch.zeros(n, 1, a)}),
        {"img": torch.zeros(n, 3, 16, 16)},
        assigned=assigned(fg, anchor_points=torch.zeros(a, 2), target_bboxes=box),
    )
    p, q = np_sigmoid(2.0), 0.5  # teacher logit 2 (= 1 + 1) everywhere, student 0
    per_pixel = p * math.log(p / q) + (1 - p) * math.log((1 - p) / (1 - q))
    assert MaskKD()(inputs, None).item() == pytest.approx(per_pixel, rel=1e-5)  # mean over the box = each pixel


@pytest.mark.parametrize("head_cls", [Pose, Pose26])
def test_keypoints_decode_as_ultralytics_heads_do(head_cls):
    """decode_keypoints x stride equals the pixel keypoints of the head's own inference output (v8 and YOLO26 rules)."""
    head = head_cls(nc=2, kpt_shape=(4, 3), ch=(8, 16))
    head.stride = torch.tensor([8.0, 16.0])
    head.eval()
    x = [torch.randn(1, 8, 4, 4), torch.randn(1, 16, 2, 2)]
    raw = head.forward_head(x, **head.one2many)["kpts"]  # (1, 12, A)
    _ = head._inference(head.forward_head(x, **head.one2many))  # sets head.anchors / head.strides
    pixels = head.kpts_decode(raw)  # Ultralytics: (1, 12, A) x, y in pixels, visibility sigmoided
    anchors, strides = make_anchors(x, head.stride, 0.5)
    ours = decode_keypoints(head, raw, anchors)  # (1, A, 4, 3), grid units
    got = ours[..., :2] * strides.view(1, -1, 1, 1)
    want = pixels.view(1, 4, 3, -1).permute(0, 3, 1, 2)[..., :2]
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-4)


def test_keypoint_term_reads_positives_only():
    head = Pose(nc=1, kpt_shape=(2, 3), ch=(4,))
    a = 4
    s_k, t_k = torch.zeros(1, 6, a), torch.zeros(1, 6, a)
    t_k[0, 0, 1] = 0.5  # keypoint 0, x, anchor 1 (a positive): 0.5 x 2 = 1 grid unit (v8 rule)
    t_k[0, 0, 2] = 9.0  # anchor 2 is not a positive
    fg = torch.tensor([[False, True, False, False]])
    inputs = DistillInputs(
        Side(preds={"kpts": s_k}, head=head),
        Side(preds={"kpts": t_k}, head=head),
        {},
        assigned=assigned(fg, anchor_points=torch.rand(a, 2), target_bboxes=torch.zeros(1, a, 4)),
    )
    # v = sigmoid(0) = 1/2 for both keypoints: (1/2 x 1 + 1/2 x 0) / 1 = 0.5; equal visibilities: no KL
    assert KeypointKD()(inputs, None).item() == pytest.approx(0.5)


@pytest.mark.parametrize(("method", "old", "cls"), [("mask", "mask_kd", MaskKD), ("keypoint", "kpt_kd", KeypointKD)])
def test_task_terms_are_named_as_their_method_and_the_old_type_still_works(tmp_path, method, old, cls):
    """Method, module and term type share one name; a yaml or a saved config with the old type name still works."""
    assert TERMS[method] is cls and Path(inspect.getfile(cls)).stem == method
    assert old not in TERMS and TERM_ALIASES[old] == method
    (spec,) = resolve_method(method)
    assert (spec.type, spec.name) == (method, old)  # the built-in method keeps its loss item, <old>_loss
    user_yaml = tmp_path / "old.yaml"
    user_yaml.write_text(f"terms:\n  - type: {old}\n")
    (spec,) = resolve_method(str(user_yaml))
    assert (spec.type, spec.name) == (method, old)
    assert KDConfig.from_dict({"terms": [{"type": old, "name": old}]}).terms[0].type == method  # an old checkpoint
