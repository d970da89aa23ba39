# yolokd, AGPL-3.0 License
"""Unlabeled images: the source and its errors, the data set and stream, pseudo-labels, the loss, a training run."""

from __future__ import annotations

import copy
import shutil

import pytest
import torch
from helpers import IMGSZ, build, captured_logs
from PIL import Image
from torch.utils._python_dispatch import TorchDispatchMode
from torchvision.ops import batched_nms
from ultralytics.cfg import get_cfg
from ultralytics.utils import DEFAULT_CFG

from yolokd.config import KDError, build_config
from yolokd.distill_model import KDModel
from yolokd.pseudo import UNLABELED_ITEMS, pseudo_batch, select_boxes, teacher_boxes
from yolokd.taps import detect_head
from yolokd.unlabeled import UnlabeledStream, check_unlabeled, list_images, resolve_unlabeled


def _images(folder, n: int, size: int = 48):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.new("RGB", (size + 8 * i, size), (40 * i % 255, 90, 160)).save(folder / f"im{i}.png")
    return folder


def _mosaic_p(transform) -> float:
    """The probability of the Mosaic transform inside a (nested) Compose, 0 without one."""
    if type(transform).__name__ == "Mosaic":
        return float(transform.p)
    return max([_mosaic_p(t) for t in getattr(transform, "transforms", []) or []] + [0.0])


def test_sources_folder_list_and_data_yaml_key(tmp_path):
    raw = _images(tmp_path / "raw", 3)
    (tmp_path / "list.txt").write_text("./raw/im0.png\n./raw/im2.png\n")
    assert [p.rsplit("/", 1)[-1] for p in list_images(str(raw))] == ["im0.png", "im1.png", "im2.png"]
    assert [p.rsplit("/", 1)[-1] for p in list_images(str(tmp_path / "list.txt"))] == ["im0.png", "im2.png"]
    assert resolve_unlabeled(None, {"path": str(tmp_path), "unlabeled": "raw"}) == str(raw)  # relative to path
    assert resolve_unlabeled(str(raw), {"unlabeled": "other"}) == str(raw)  # the key wins over the yaml
    assert resolve_unlabeled(None, {"path": str(tmp_path)}) is None


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda d: d / "missing", "does not exist"),
        (lambda d: (d / "empty").mkdir() or d / "empty", "holds no images"),
        (lambda d: _images(d / "one", 1) / "im0.png", "is one image; pass its folder"),
    ],
)
def test_bad_sources_are_one_line_errors(tmp_path, make, match):
    with pytest.raises(KDError, match=match) as e:
        check_unlabeled(str(make(tmp_path)), "detect")
    assert "\n" not in str(e.value)


def test_other_tasks_are_refused_and_label_files_are_named_not_used(tmp_path):
    raw = _images(tmp_path / "images", 2)
    with pytest.raises(KDError, match="unlabeled= trains detection students only.*'segment'"):
        check_unlabeled(str(raw), "segment")
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "im0.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    with captured_logs() as logs:
        assert len(check_unlabeled(str(raw), "detect")) == 2
    assert any(
        "1 of the 2 unlabeled images have label files beside them; they are not used" in r.getMessage() for r in logs
    )


def test_stream_gives_augmented_batches_without_labels_and_skips_unreadable_images(tmp_path):
    raw = _images(tmp_path / "images", 4)
    (raw / "broken.jpg").write_bytes(b"not an image")
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "im0.txt").write_text("0 0.5 0.5 0.2 0.2\n")  # never read
    args = get_cfg(DEFAULT_CFG, {"imgsz": IMGSZ, "workers": 0, "mosaic": 1.0})
    with captured_logs() as logs:
        stream = UnlabeledStream(str(raw), args, {"names": {0: "a"}, "nc": 1, "channels": 3}, batch=3, stride=32)
    assert len(stream) == 4 and any("1 unreadable image(s) left out" in r.getMessage() for r in logs)
    seen = []
    for _ in range(3):  # more batches than one pass holds: the stream goes on
        b = stream.next()
        assert b["img"].shape[1:] == (3, IMGSZ, IMGSZ) and b["img"].dtype == torch.uint8
        assert b["cls"].numel() == 0 and b["bboxes"].numel() == 0  # no label, not even im0's label file
        seen += b["im_file"]
    assert stream.passes >= 1 and {s.rsplit("/", 1)[-1] for s in seen} == {f"im{i}.png" for i in range(4)}
    assert _mosaic_p(stream.dataset.transforms) == 1.0  # Ultralytics' training pipeline, mosaic included
    stream.close_mosaic(args)
    assert stream.mosaic_closed and not _mosaic_p(stream.dataset.transforms) and stream.next()["img"].shape[-1] == IMGSZ


def test_select_boxes_thresholds_nms_by_class_and_max_det():
    probs = torch.tensor([[[0.9, 0.2, 0.6, 0.1], [0.1, 0.85, 0.1, 0.4]]])  # (1 image, 2 classes, 4 anchors)
    xyxy = torch.tensor([[[0, 0, 10, 10], [1, 1, 10, 10], [0.5, 0.5, 10, 10], [30, 30, 40, 40]]]).float()
    b, c, boxes = select_boxes(probs, xyxy, conf=0.5)
    # anchor 0 (class 0, 0.9) suppresses anchor 2 (class 0, 0.6, IoU 0.9); anchor 1 is class 1: kept; anchor 3 < 0.5
    assert b.tolist() == [0, 0] and c.tolist() == [0, 1] and boxes.tolist() == [[0, 0, 10, 10], [1, 1, 10, 10]]
    assert select_boxes(probs, xyxy, conf=0.5, max_det=1)[1].tolist() == [0]
    b, c, boxes = select_boxes(probs.repeat(2, 1, 1), xyxy.repeat(2, 1, 1), conf=0.95)
    assert b.numel() == c.numel() == 0 and boxes.shape == (0, 4)
    batch = pseudo_batch(
        torch.zeros(2, 3, 20, 20), torch.tensor([1]), torch.tensor([1]), torch.tensor([[0, 0, 10, 20]])
    )
    assert batch["bboxes"].tolist() == [[0.25, 0.5, 0.5, 1.0]] and batch["batch_idx"].tolist() == [1.0]


def _select_per_image(probs, xyxy, conf, iou, max_det):
    """The reference: each image on its own, class-wise NMS (torchvision), its ``max_det`` best kept."""
    score, cls = probs.max(1)
    out = []
    for i in range(probs.shape[0]):
        idx = (score[i] >= conf).nonzero().flatten()
        kept = idx[batched_nms(xyxy[i, idx], score[i, idx], cls[i, idx], iou)[:max_det]]
        out += [(i, int(cls[i, k]), xyxy[i, k].tolist()) for k in kept]
    return out


@pytest.mark.parametrize("max_det", [300, 3])
def test_select_boxes_of_a_batch_are_each_images_own(max_det):
    g = torch.Generator().manual_seed(0)
    probs = torch.rand(4, 3, 200, generator=g)  # 4 images, 3 classes, 200 anchors
    xy = torch.rand(4, 200, 2, generator=g) * 60
    xyxy = torch.cat([xy, xy + 10 + torch.rand(4, 200, 2, generator=g) * 20], -1)
    b, c, boxes = select_boxes(probs, xyxy, conf=0.6, iou=0.5, max_det=max_det)
    got = [(int(i), int(k), x.tolist()) for i, k, x in zip(b, c, boxes)]
    want = _select_per_image(probs, xyxy, 0.6, 0.5, max_det)
    assert got == want and len({i for i, _, _ in want}) == 4
    assert (max_det == 3) == (len(want) == 12)  # the bound applied: 3 per image


def test_select_boxes_reads_two_values_on_the_host_for_a_whole_batch():
    reads = []

    class Count(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            name = str(func)
            if any(k in name for k in ("nonzero", "_local_scalar_dense", "masked_select", "nms")):
                reads.append(name)
            return func(*args, **(kwargs or {}))

    probs, xyxy = torch.rand(8, 3, 100), torch.rand(8, 100, 2).repeat(1, 1, 2) * 50 + torch.tensor([0, 0, 9, 9])
    with Count():
        select_boxes(probs, xyxy, conf=0.5)
    assert len(reads) == 2, reads  # the candidates (nonzero) and NMS's kept boxes; one per image would be 16


def test_teacher_boxes_decode_distances_at_the_anchor_centres():
    feats = [torch.zeros(1, 4, 2, 2)]  # one level, stride 8: anchors at (4, 4), (12, 4), (4, 12), (12, 12) px
    out = {"feats": feats, "boxes": torch.ones(1, 4, 4), "scores": torch.zeros(1, 3, 4)}  # reg_max 1: distance 1
    probs, xyxy = teacher_boxes(out, [8], reg_max=1)
    assert torch.allclose(probs, torch.full((1, 3, 4), 0.5))
    assert xyxy[0, 0].tolist() == [-4.0, -4.0, 12.0, 12.0] and xyxy[0, 3].tolist() == [4.0, 4.0, 20.0, 20.0]


def _self_taught(pico_yaml, **keys):
    """A KDModel whose teacher is the student itself (same weights; BatchNorm on running statistics in both)."""
    student = build(pico_yaml)
    teacher = copy.deepcopy(student).eval()
    model = KDModel(student, teacher, build_config({"teacher": "t.pt", "method": "cwd", "balance": 0, **keys}), IMGSZ)
    model.train()
    model.student_model.eval()
    return model, student


def _cls_grad(student) -> float:
    return float(sum(p.grad.abs().sum() for p in detect_head(student).cv3.parameters() if p.grad is not None))


def test_unlabeled_images_are_never_taught_as_background(pico_yaml):
    model, student = _self_taught(pico_yaml, pseudo_conf=0.99)
    img = torch.rand(2, 3, IMGSZ, IMGSZ, generator=torch.Generator().manual_seed(0))
    loss, items = model._unlabeled_loss(img, n_labelled=2)
    assert set(items) == set(UNLABELED_ITEMS) and float(items["pseudo"]) == 0  # the teacher is sure of nothing
    assert float(items["unl_box"]) == 0 and abs(float(items["unl_cls"])) < 1e-5  # taught its own scores
    loss.sum().backward()
    ours = _cls_grad(student)
    student.zero_grad()
    background = {"img": img, "batch_idx": torch.zeros(0), "cls": torch.zeros(0, 1), "bboxes": torch.zeros(0, 4)}
    student.loss(background)[0].sum().backward()  # the same images trained as background images
    assert _cls_grad(student) > 1e-3 and ours < 1e-3 * _cls_grad(student)


def test_confident_teacher_boxes_train_the_students_boxes(pico_yaml):
    model, student = _self_taught(pico_yaml, pseudo_conf=0.001, unlabeled_weight=2.0)
    img = torch.rand(2, 3, IMGSZ, IMGSZ, generator=torch.Generator().manual_seed(0))
    loss, items = model._unlabeled_loss(img, n_labelled=4)
    assert float(items["pseudo"]) > 0 and float(items["unl_box"]) > 0 and float(items["unl_dfl"]) > 0
    parts = torch.stack([items[k] for k in ("unl_box", "unl_cls", "unl_dfl", "unl_kd")])
    assert torch.allclose(loss.detach(), parts * 2.0 * 4)  # x unlabeled_weight x the labelled batch size
    model.catchup = 0.0  # the student caught up with the teacher: nothing is learnt from it any more
    assert float(model._unlabeled_loss(img, n_labelled=4)[0].detach().abs().sum()) == 0


def test_training_with_unlabeled_images_logs_its_items_and_keeps_the_key(tmp_path, tiny_data, pico_yaml, teacher_pt):
    from yolokd.checkpoint import CKPT_KEY
    from yolokd.trainer import KDTrainer

    raw = tmp_path / "raw"
    raw.mkdir()
    for f in sorted((tiny_data.parent / "images" / "test").glob("*.*"))[:6]:
        shutil.copy(f, raw / f.name)
    trainer = KDTrainer(
        overrides=dict(
            model=str(pico_yaml),
            teacher=str(teacher_pt),
            method="cwd",
            data=str(tiny_data),
            epochs=1,
            imgsz=IMGSZ,
            batch=4,
            workers=0,
            plots=False,
            seed=0,
            teacher_val=False,
            project=str(tmp_path),
            name="run",
            unlabeled=str(raw),
            unlabeled_ratio=0.5,
            pseudo_conf=0.001,
        )
    )
    trainer.train()
    assert trainer.unlabeled_stream is not None and trainer.unlabeled_stream.loader.batch_size == 2  # 0.5 x 4
    header, *rows = [r.split(",") for r in (tmp_path / "run" / "results.csv").read_text().splitlines()]
    values = dict(zip(header, rows[0]))
    for k in UNLABELED_ITEMS:
        assert f"train/{k}" in values and f"val/{k}" not in values
    assert float(values["train/unl_cls"]) > 0 and float(values["train/pseudo"]) > 0
    assert float(values["train/unl_kd"]) > 0  # cwd also runs on the unlabeled images
    ckpt = torch.load(tmp_path / "run" / "weights" / "last.pt", map_location="cpu", weights_only=False)
    assert ckpt[CKPT_KEY]["config"]["unlabeled"] == str(raw)  # comes back on resume


def test_demo_unlabeled_shows_a_fraction_of_labels_alone_distilled_and_with_the_rest_unlabeled(tmp_path):
    from yolokd.demo import run_demo

    rows = run_demo(
        unlabeled=True,
        labeled_fraction=0.25,
        n_train=16,
        n_val=8,
        n_test=8,
        imgsz=IMGSZ,
        epochs=1,
        teacher_epochs=1,
        workers=0,
        project=str(tmp_path / "demo"),
    )
    assert [r["role"] for r in rows] == [
        "teacher",
        "student (no KD)",
        "student (bckd)",
        "student (bckd) + unlabeled",
    ]
    csv = {r["role"]: (tmp_path / "demo" / r["run"] / "results.csv").read_text().splitlines() for r in rows[1:]}
    assert all(len(lines) == 1 + 4 for lines in csv.values())  # 1 / 0.25 x the epochs: as many steps as all labels
    assert "train/unl_cls" in csv["student (bckd) + unlabeled"][0]
    assert not any("unl_" in csv[k][0] for k in ("student (no KD)", "student (bckd)"))
    assert len(list((tmp_path / "demo" / "labeled-0.25" / "images" / "train").iterdir())) == 4


def test_unlabeled_loss_stays_finite_under_cpu_bfloat16_autocast(pico_yaml):
    from helpers import kd_model, toy_batch

    model = kd_model(pico_yaml, "yolov8n.yaml", "tar+cwd")
    batch = toy_batch()
    batch["unlabeled_img"] = torch.rand(3, 3, IMGSZ, IMGSZ, generator=torch.Generator().manual_seed(1))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, items = model.loss(batch)
    assert torch.isfinite(loss).all() and all(items[k].dtype == torch.float32 for k in UNLABELED_ITEMS)
    assert float(items["unl_cls"]) > 0 and torch.isfinite(items["unl_kd"])
    loss.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.student_model.parameters() if p.grad is not None)
