# yolokd, AGPL-3.0 License
"""KDModel: loss items, adapters that train, taps that survive deepcopy/pickle, and the pair checks."""

from __future__ import annotations

import copy
import logging
import pickle

import pytest
import torch
from helpers import IMGSZ, build, captured_logs, host_sync_allowed, kd_model, no_host_sync, toy_batch
from ultralytics.utils.torch_utils import ModelEMA

from yolokd.config import PREFIX, KDError, available_methods, build_config
from yolokd.distill_model import KDModel
from yolokd.losses import functional as kdf
from yolokd.taps import detect_head, head_outputs
from yolokd.teacher import check_pair, describe_classes, match_classes


@pytest.fixture
def kd(pico_yaml):
    student, teacher = build(pico_yaml), build("yolov8n.yaml")
    teacher.eval()
    cfg = build_config({"teacher": "t.pt", "method": "cwd", "balance": 0})  # the fixed weight 5 (balance=0)
    model = KDModel(student, teacher, cfg, imgsz=64)
    model.train()
    return model


def test_kdmodel_probe_and_adapters_match_channels(kd):
    assert kd.probe.student_channels == [32, 64, 128]  # width 0.125 of 256/512/1024
    assert kd.probe.teacher_channels == [64, 128, 256]  # width 0.25
    assert [(a.in_channels, a.out_channels) for a in kd.projector["cwd"]] == [(32, 64), (64, 128), (128, 256)]
    assert kd.teacher_model.training is False
    assert not any(p.requires_grad for p in kd.teacher_model.parameters())


def test_kdmodel_loss_items_equal_weighted_functional(kd):
    batch = toy_batch()
    loss, items = kd.loss(batch)
    assert list(items) == ["box_loss", "cls_loss", "dfl_loss", "cwd_loss"]
    assert loss.shape == (4,)
    # the cwd item is 5 x sum over levels of kdf.cwd(adapter(s), t), recomputed here from fresh forwards: the teacher's
    # neck levels from a plain, unfolded copy of it (the same seeded weights) run in full
    plain, seen = build("yolov8n.yaml").eval(), []
    detect_head(plain).register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    with torch.no_grad():
        plain(batch["img"])
        t_feats = seen[0]
        kd.student_model(batch["img"])
        s_feats = kd._student_feats.pop("head")["feats"]
        expected = 5.0 * sum(kdf.cwd(a(s), t, 1.0) for a, s, t in zip(kd.projector["cwd"], s_feats, t_feats))
    assert items["cwd_loss"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert loss[3].item() == pytest.approx(expected.item() * 2, rel=1e-5)  # x batch size, like Ultralytics' items
    assert items["cwd_loss"].item() > 0


def test_kdmodel_eval_loss_has_zero_terms(kd):
    kd.eval()
    loss, items = kd.loss(toy_batch())
    assert items["cwd_loss"].item() == 0.0 and loss[3].item() == 0.0


def test_adapters_receive_gradients_and_change_after_step(kd):
    before = [p.detach().clone() for p in kd.projector.parameters()]
    opt = torch.optim.SGD([p for p in kd.parameters() if p.requires_grad], lr=0.1)
    loss, _ = kd.loss(toy_batch())
    loss.sum().backward()
    grads = [p.grad for p in kd.projector.parameters()]
    assert all(g is not None and g.abs().sum() > 0 for g in grads)
    assert all(p.grad is None for p in kd.teacher_model.parameters())
    opt.step()
    assert all(not torch.equal(b, p) for b, p in zip(before, kd.projector.parameters()))


def test_taps_survive_deepcopy_and_pickle_mid_step(kd):
    batch = toy_batch()
    kd.student_model(batch["img"])  # the student's tap now holds tensors with a grad_fn, as in the middle of a step
    assert kd._student_feats
    ema = ModelEMA(kd)  # deepcopy, as Ultralytics' EMA does
    assert ema.ema.teacher_model is None
    clone = pickle.loads(pickle.dumps(kd))  # as checkpoints / DDP do
    for m in (clone, copy.deepcopy(kd)):
        m.train()
        _, items = m.loss(batch)  # the copy's taps are re-registered on the copy's own modules
        assert items["cwd_loss"].item() > 0
    _, items = kd.loss(batch)  # and the original still works
    assert items["cwd_loss"].item() > 0


def test_kdmodel_recreates_the_attributes_distillation_model_init_sets(kd, pico_yaml):
    """KDModel skips DistillationModel.__init__: a change to the attributes it sets must be mirrored in KDModel."""
    import inspect

    from torch import nn
    from ultralytics.nn.distill_model import DistillationModel

    student, teacher = build(pico_yaml), build("yolov8n.yaml")
    student.args.imgsz = IMGSZ
    theirs = DistillationModel(teacher, student)
    own = (set(vars(theirs)) | set(theirs._modules)) - set(vars(nn.Module())) - set(vars(student))  # not copy_attr's
    modules = {"teacher_model", "student_model", "projector"}
    plain = {"feats_idx", "teacher_feats_idx", "_teacher_feats", "_student_feats", "_teacher_hooks", "_student_hooks"}
    assert own == modules | plain | {"dis"}
    assert all(isinstance(getattr(kd, a), nn.Module) for a in modules)
    assert all(type(getattr(kd, a)) is type(getattr(theirs, a)) for a in plain)
    # dis is left out: only DistillationModel.loss reads it, and KDModel replaces that method
    readers = {n for n, f in vars(DistillationModel).items() if callable(f) and "self.dis" in inspect.getsource(f)}
    assert readers == {"__init__", "loss"}


def test_check_pair_errors(pico_yaml):
    student = build(pico_yaml)
    assert check_pair(student, build("yolov8n.yaml"), student.names) is None  # same classes: no map
    with pytest.raises(KDError, match="predicts 3 classes but the student/data set has 6 and no class names"):
        check_pair(student, build("yolov8n.yaml", nc=3))
    t = build("yolov8n.yaml")
    t.names = {**t.names, 2: "zebra"}
    with pytest.raises(KDError, match=r"class name\(s\) \['c2'\] are not among the teacher's 6 .*class_map="):
        check_pair(student, t, student.names)
    t.names = {i: f"other{i}" for i in range(6)}
    with pytest.raises(KDError, match="no class name of the data set is among the teacher's"):
        check_pair(student, t, student.names)
    assert check_pair(student, t, student.names, class_map=[5, 4, 3, 2, 1, 0]) == [5, 4, 3, 2, 1, 0]
    with pytest.raises(KDError, match="4 detection levels but the student has 3"):
        check_pair(student, build("yolov8n-p2.yaml"))
    t = build("yolov8n.yaml")
    t.stride = torch.tensor([8.0, 16.0, 64.0])
    with pytest.raises(KDError, match=r"strides \[8, 16, 64\] differ"):
        check_pair(student, t)
    cls = build("yolov8n-cls.yaml")  # a classifier layer list (no Detect head)
    with pytest.raises(KDError, match="teacher is a 'classify' model but the student is a 'detect' model"):
        check_pair(student, cls)
    seg = build("yolov8n-seg.yaml")
    seg.args = {"task": "segment"}  # as loaded from a segmentation checkpoint
    with pytest.raises(
        KDError,
        match=r"teacher is a 'segment' model but the student is a 'detect' model; pass a "
        r"detect teacher",
    ):
        check_pair(student, seg)
    with pytest.raises(KDError, match=r"teacher is a 'detect' model but the student is a 'segment' model.*-seg\.pt"):
        check_pair(seg, student)


def test_match_classes_by_name_and_by_map():
    t_names = {0: "person", 1: "bicycle", 2: "car", 3: "dog", 4: "cat", 5: "bus"}
    assert match_classes(6, t_names, 3, {0: "car", 1: "person", 2: "bus"}) == [2, 0, 5]
    assert match_classes(6, t_names, 6, dict(t_names)) is None  # same classes, same order: nothing to map
    assert match_classes(6, t_names, 6, {i: t_names[5 - i] for i in range(6)}) == [5, 4, 3, 2, 1, 0]  # reordered
    assert match_classes(6, t_names, 2, {0: "auto", 1: "human"}, class_map={0: 2, 1: 0}) == [2, 0]  # names differ
    with pytest.raises(KDError, match=r"class name\(s\) \['truck'\] are not among"):
        match_classes(6, t_names, 2, {0: "car", 1: "truck"})
    with pytest.raises(KDError, match=r"must give a teacher class for every student class 0..1, got keys \[0\]"):
        match_classes(6, t_names, 2, None, class_map={0: 1})
    with pytest.raises(KDError, match=r"teacher indices \[6\] are outside the teacher's 6 classes"):
        match_classes(6, t_names, 2, None, class_map=[0, 6])
    assert describe_classes([2, 0], t_names, {0: "car", 1: "person"}) == (
        "teacher 2 'car' -> student 0 'car', teacher 0 'person' -> student 1 'person'"
    )


def test_teacher_scores_are_reduced_to_the_matched_classes(pico_yaml):
    """A 6-class teacher feeding a 3-class student: the terms read exactly the matched teacher logits."""
    student, teacher = build(pico_yaml, nc=3), build("yolov8n.yaml", nc=6)
    config = build_config({"method": "bckd"})
    kd = KDModel(student, teacher, config, imgsz=IMGSZ, teacher_classes=[4, 1, 2])
    seen = {}

    def spy(inputs, adapters):
        seen["t"], seen["s"] = inputs.teacher_preds["scores"], inputs.student_preds["scores"]
        seen["cross"] = inputs.teacher_class_logits(torch.arange(6.0).view(1, 6, 1))
        return inputs.student_preds["scores"].sum() * 0

    kd.terms[0].forward = spy
    kd.train()
    batch = toy_batch()
    kd.loss(batch)
    full = head_outputs(kd.teacher_model.eval()(batch["img"]))["scores"]  # the whole teacher, all 6 classes
    assert seen["t"].shape == seen["s"].shape == (2, 3, full.shape[-1])
    torch.testing.assert_close(seen["t"], full[:, [4, 1, 2]], rtol=1e-4, atol=1e-4)
    assert seen["cross"].flatten().tolist() == [4.0, 1.0, 2.0]


def test_nonfinite_term_is_skipped_counted_and_warned_once(kd, monkeypatch):
    monkeypatch.setattr(kd.terms[0], "forward", lambda inputs, adapters: torch.tensor(float("nan")))
    with captured_logs() as records:
        for _ in range(3):
            kd.zero_grad()
            loss, items = kd.loss(toy_batch())
            assert torch.isfinite(loss).all() and items["cwd_loss"].item() == 0.0
            loss.sum().backward()
            grads = [p.grad for p in kd.student_model.parameters() if p.grad is not None]
            assert grads and all(torch.isfinite(g).all() for g in grads)
        assert kd.nonfinite_skips == {}  # counted on the device: read once per epoch, not at every step
        assert kd.term_stats()["nonfinite/cwd"] == 3.0  # the epoch-end read
    assert kd.nonfinite_skips == {"cwd": 3}
    warnings = [r.getMessage() for r in records if r.levelno == logging.WARNING and "cwd" in r.getMessage()]
    assert len(warnings) == 1 and "skipped" in warnings[0]


def test_terms_stay_finite_under_cpu_bfloat16_autocast_and_extreme_inputs(kd):
    batch = toy_batch()
    batch["img"] = batch["img"] * 1e4  # extreme activations all the way through
    seen = []  # cwd reads only the neck: the teacher stops at its Detect inputs
    detect_head(kd.teacher_model).register_forward_pre_hook(lambda m, args: seen.append(args[0][0].dtype), prepend=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, items = kd.loss(batch)
    assert seen == [torch.bfloat16]  # the teacher ran under the trainer's autocast
    assert items["cwd_loss"].dtype == torch.float32
    assert torch.isfinite(items["cwd_loss"]) and items["cwd_loss"].item() > 0
    assert kd.nonfinite_skips == {}


def test_composition_weights_schedules_and_global_multiplier(pico_yaml):
    from yolokd.schedules import Progress

    student, teacher = build(pico_yaml), build("yolov8n.yaml")
    teacher.eval()
    cfg = build_config({"teacher": "t.pt", "method": "cwd+tar", "distill_weight": 0.5, "balance": 0})
    kd = KDModel(student, teacher, cfg, imgsz=64).train()
    assert [t.type for t in kd.terms] == ["cwd", "tar_feat", "tar_cls", "tar_box"]
    assert kd.item_names() == ["cwd_loss", "tar_feat_loss", "tar_cls_loss", "tar_box_loss"]
    w = kd.term_weights(Progress(epoch=1, epochs=4))  # tar decays linearly: 0.75 of its weight at 1/4
    assert w == pytest.approx(
        {"cwd": 2.5, "tar_feat": 1.5 * 0.5 * 0.75, "tar_cls": 2.0 * 0.5 * 0.75, "tar_box": 7.5 * 0.5 * 0.75}
    )
    kd.progress = Progress(epoch=1, epochs=4)
    _, items = kd.loss(toy_batch())
    assert set(items) == {
        "box_loss",
        "cls_loss",
        "dfl_loss",
        "cwd_loss",
        "tar_feat_loss",
        "tar_cls_loss",
        "tar_box_loss",
    }
    kd.progress = Progress(epoch=4, epochs=4)  # the end: tar fully decayed, its terms are not even computed
    _, items = kd.loss(toy_batch())
    assert items["tar_feat_loss"].item() == 0.0 and items["tar_box_loss"].item() == 0.0
    assert items["cwd_loss"].item() > 0


# ----------------------------------------------------------------------------------------- statistics, host syncs
@pytest.mark.parametrize("method", available_methods("detect"))
@pytest.mark.parametrize(("family", "teacher"), [("yolov8", "yolov8n.yaml"), ("yolo26", "yolo26n.yaml")])
def test_terms_step_without_host_sync(pico_yamls, monkeypatch, method, family, teacher):
    """No term reads a device value on the host or selects by a boolean mask (both stall an accelerator each step)."""
    kd = kd_model(pico_yamls[family], teacher, method)
    for term in kd.terms:

        def checked(inputs, adapters, forward=term.forward):
            with no_host_sync():
                return forward(inputs, adapters)

        monkeypatch.setattr(term, "forward", checked)
    loss, _ = kd.loss(toy_batch())
    assert torch.isfinite(loss).all()


@pytest.mark.parametrize("method", ["cwd", "crosskd", "fgbg", "hint", "tar+cwd"])
def test_whole_kd_step_forward_without_host_sync_but_ultralytics_loss(pico_yaml, monkeypatch, method):
    """Teacher forward, taps, terms, automatic weights (tar+cwd balances) and the non-finite guard: no host sync.

    Only the student's detection loss (Ultralytics' own, with its boolean-mask indexing) may read device values.
    """
    kd = kd_model(pico_yaml, "yolov8n.yaml", method)
    det = kd._detection_loss

    def ultralytics_loss(batch, preds):
        with host_sync_allowed():
            return det(batch, preds)

    monkeypatch.setattr(kd, "_detection_loss", ultralytics_loss)
    batch = toy_batch()
    with no_host_sync():
        loss, _ = kd.loss(batch)
    assert torch.isfinite(loss).all() and loss[3:].abs().sum() > 0


def test_teacher_stops_at_the_neck_only_when_no_term_reads_its_head(pico_yaml):
    """cwd (neck only) skips the teacher's Detect head; tar+cwd (reads teacher scores and boxes) runs it."""
    calls = {}
    for method in ("cwd", "tar+cwd"):
        kd = kd_model(pico_yaml, "yolov8n.yaml", method)
        ran = []
        detect_head(kd.teacher_model).register_forward_hook(lambda m, i, o, ran=ran: ran.append(1))
        _, items = kd.loss(toy_batch())
        calls[method] = (kd.teacher_to_neck, len(ran))
        assert items["cwd_loss"].item() > 0
    assert calls == {"cwd": (True, 0), "tar+cwd": (False, 1)}


def test_neck_stop_and_folded_teacher_give_the_full_forward_losses(pico_yaml):
    """The same cwd loss with the folded teacher stopped at its neck as with the plain teacher run in full.

    The teacher's BatchNorm statistics are made non-trivial first, so that folding them really changes the convs.
    """
    student, teacher = build(pico_yaml), build("yolov8n.yaml")
    g = torch.Generator().manual_seed(1)
    for m in teacher.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    plain = copy.deepcopy(teacher).eval()
    cfg = build_config({"teacher": "t.pt", "method": "cwd", "balance": 0})
    kd = KDModel(student, teacher.eval(), cfg, imgsz=64).train()
    assert kd.teacher_to_neck and not any(hasattr(m, "bn") for m in kd.teacher_model.modules())
    batch = toy_batch()
    _, items = kd.loss(batch)
    full = []
    detect_head(plain).register_forward_hook(lambda m, i, o: full.append(o[1]["feats"]))
    with torch.no_grad():
        plain(batch["img"])
        kd.student_model(batch["img"])
        s_feats = kd._student_feats.pop("head")["feats"]
        kd._student_feats.clear()
        expected = 5.0 * sum(kdf.cwd(a(s), t, 1.0) for a, s, t in zip(kd.projector["cwd"], s_feats, full[0]))
    assert items["cwd_loss"].item() == pytest.approx(expected.item(), rel=1e-5)
    folded = kd._teacher_forward(batch["img"])[0]["feats"]
    for a, b in zip(folded, full[0]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)  # float32 rounding of the folded convs


def test_a_nan_in_a_term_backward_never_reaches_the_student_or_adapters(kd, monkeypatch):
    """A term whose forward is NaN with a live graph (log of 0): the step's gradients stay finite, without a sync."""
    term = kd.terms[0]

    def nan_term(inputs, adapters):
        s = adapters[0](inputs.student_feats[0])
        return torch.log(s * 0).sum()  # -inf, and 1/0 in its backward

    monkeypatch.setattr(term, "forward", nan_term)
    loss, items = kd.loss(toy_batch())
    assert torch.isfinite(loss).all() and items["cwd_loss"].item() == 0.0
    loss.sum().backward()
    kd.clean_adapter_grads()
    params = list(kd.student_model.parameters()) + list(kd.projector.parameters())
    assert all(torch.isfinite(p.grad).all() for p in params if p.grad is not None)
    assert kd.term_stats()["nonfinite/cwd"] == 1.0


class _Writer:
    """Stands in for TensorBoard's SummaryWriter: keeps the last value of each tag."""

    def __init__(self) -> None:
        self.scalars: dict[str, float] = {}

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        self.scalars[tag] = value


def test_term_stats_are_epoch_means_read_and_reset_by_the_epoch_end_callback(pico_yamls):
    from types import SimpleNamespace

    from yolokd.callbacks import KDCallbacks

    kd = kd_model(pico_yamls["yolov8"], "yolov8n.yaml", "fgbg")
    base = toy_batch()
    batches = [{**base, "img": base["img"] * k} for k in (1.0, 0.3, 3.0, 0.05)]  # same boxes: same background anchors
    per_step = []
    for batch in batches:
        kd.loss(batch)
        per_step.append(kd.term_stats(reset=True)["fgbg_bg/bg_gate_open"])
    assert len(set(per_step)) > 1  # the steps differ, so the last step's value is not the epoch's
    for batch in batches:  # the same epoch again, read only at its end
        kd.loss(batch)
    callbacks = KDCallbacks(kd.kd_config)
    callbacks._writer = _Writer()
    trainer = SimpleNamespace(model=kd, epoch=0, tloss=None, lr={}, label_loss_items=lambda *a, **k: {})
    callbacks.on_train_epoch_end(trainer)
    logged = callbacks._writer.scalars["kd_stats/fgbg_bg/bg_gate_open"]
    assert logged == pytest.approx(sum(per_step) / len(per_step), rel=1e-6)  # equal candidates: the mean of the steps
    assert "kd_stats/fgbg_fg/fg_gate_open" in callbacks._writer.scalars
    assert kd.term_stats() == {}  # read and reset once per epoch


def test_a_term_outweighing_the_student_loss_is_warned_about_once(pico_yamls):
    """Epoch means: mgd_loss 60 against box+cls+dfl 2+2+1 = 5 is 12x (> 5x): one warning, not one per epoch."""
    from types import SimpleNamespace

    from yolokd.callbacks import KDCallbacks

    kd = kd_model(pico_yamls["yolov8"], "yolov8n.yaml", "mgd+cwd")
    callbacks = KDCallbacks(kd.kd_config)
    items = {"box_loss": 2.0, "cls_loss": 2.0, "dfl_loss": 1.0, "mgd_loss": 60.0, "cwd_loss": 24.0}
    trainer = SimpleNamespace(model=kd, epoch=0, tloss={k: torch.tensor(v) for k, v in items.items()}, lr={})
    with captured_logs(logging.WARNING) as records:
        callbacks.on_train_epoch_end(trainer)
        trainer.epoch = 1
        callbacks.on_train_epoch_end(trainer)
    lines = [r.getMessage() for r in records]
    assert lines == [
        f"{PREFIX}mgd_loss averaged 60 in epoch 1, 12x the student's own loss: the term dominates training and can "
        "ruin the student; use automatic weights (balance=0.25) or lower its weight (a method yaml, or "
        "distill_weight=)"
    ], lines  # cwd_loss at 4.8x stays below the 5x line
    trainer.tloss = {**trainer.tloss, "cwd_loss": torch.tensor(26.0)}  # 5.2x: a new term crosses it later
    with captured_logs(logging.WARNING) as records:
        callbacks.on_train_epoch_end(trainer)
    assert [r.getMessage().startswith(f"{PREFIX}cwd_loss averaged 26 in epoch 2, 5x the") for r in records] == [True]


def test_channels_last_teacher_gives_the_same_taps_in_the_usual_layout(pico_yaml):
    """NHWC teacher weights and images (the default on CPU and CUDA, chosen at the first forward): the same neck
    features, scores and loss as the usual layout, handed to the terms contiguous."""
    kd = kd_model(pico_yaml, "yolov8n.yaml", "tar+cwd")
    batch = toy_batch()
    assert kd.teacher_channels_last is None  # not chosen before the device is known
    kd.set_teacher_channels_last(False)
    plain, _ = kd._teacher_forward(batch["img"])
    kd.teacher_channels_last = None
    nhwc, _ = kd._teacher_forward(batch["img"])  # the first forward on CPU chooses NHWC
    assert kd.teacher_channels_last is True
    conv = next(m for m in kd.teacher_model.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) and not conv.weight.is_contiguous()
    for a, b in zip(plain["feats"], nhwc["feats"]):
        assert b.is_contiguous()
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(plain["scores"], nhwc["scores"], rtol=1e-4, atol=1e-4)
    _, items = kd.loss(batch)
    assert torch.isfinite(items["cwd_loss"]) and items["cwd_loss"].item() > 0


@pytest.mark.parametrize("teacher_cfg", ["yolov8n.yaml", "yolo26n.yaml"])
def test_plain_detect_teacher_skips_the_decoding_with_the_same_raw_outputs(pico_yaml, teacher_cfg, monkeypatch):
    """A plain Detect teacher head (also YOLO26's end-to-end one) runs without its inference decoding and returns the
    same boxes, scores and neck levels as in eval mode; the head is left in eval mode after each forward."""
    kd = kd_model(pico_yaml, teacher_cfg, "tar+cwd")
    kd.set_teacher_channels_last(False)
    head = detect_head(kd.teacher_model)
    img = toy_batch()["img"]
    with torch.no_grad():
        expected = head_outputs(kd.teacher_model(img))  # eval mode: decoded, (y, raw) or the end-to-end dict
    decoded = []
    monkeypatch.setattr(type(head), "_inference", lambda self, x: decoded.append(1) or x)
    out, _ = kd._teacher_forward(img)
    assert decoded == [] and head.training is False and not kd.teacher_model.training
    for k in ("boxes", "scores"):
        torch.testing.assert_close(out[k], expected[k], rtol=1e-5, atol=1e-6)
    for a, b in zip(out["feats"], expected["feats"]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    _, items = kd.loss(toy_batch())
    assert all(torch.isfinite(v) for v in items.values()) and items["tar_cls_loss"].item() > 0


def test_teacher_layout_follows_ultralytics_channels_last_argument(pico_yaml):
    """``channels_last=False`` (Ultralytics' train argument) keeps the teacher in the usual layout on CPU; the default
    (None, auto) turns NHWC on at the first forward."""
    from ultralytics.cfg import get_cfg
    from ultralytics.utils import DEFAULT_CFG, WINDOWS

    chosen = {}
    for value in (False, None):
        kd = kd_model(pico_yaml, "yolov8n.yaml", "cwd")
        kd.args = get_cfg(DEFAULT_CFG, {"channels_last": value})
        _, items = kd.loss(toy_batch())
        conv = next(m for m in kd.teacher_model.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3))
        chosen[value] = (kd.teacher_channels_last, conv.weight.is_contiguous())
        assert items["cwd_loss"].item() > 0
    assert chosen == {False: (False, True), None: (not WINDOWS, WINDOWS)}  # auto: off on Windows, as Ultralytics
