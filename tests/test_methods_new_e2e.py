# yolokd, AGPL-3.0 License
"""PKD, MGD and BCKD: one training epoch per family and on a cross-family pair.

Each run: every loss item is logged and non-zero, the adapters (PKD's 1x1 convs, MGD's align convs and generators)
change, and the files the run leaves are bare students: no teacher, adapter or generator weights, and no adapters
under the extra key either (those travel only in mid-training files, for resume).
"""

from __future__ import annotations

import pytest
import torch
from helpers import train_one_kd_epoch

from yolokd.checkpoint import CKPT_KEY
from yolokd.config import resolve_method

pytestmark = pytest.mark.slow

METHODS = ["bckd", "mgd", "pkd"]
PAIRS = [("yolov8", "yolov8"), ("yolo11", "yolo11"), ("yolo26", "yolo26"), ("yolov8", "yolo11")]  # student, teacher


@pytest.mark.parametrize(("student", "teacher"), PAIRS, ids=[f"{s}-{t}" for s, t in PAIRS])
@pytest.mark.parametrize("method", METHODS)
def test_new_method_trains_one_epoch(method, student, teacher, teachers, tiny_data, tmp_path, pico_yamls):
    def saved(tr, snap):  # the mid-training file carries the adapters for resume, under the extra key only
        ckpt = torch.load(tr.last, map_location="cpu", weights_only=False)
        snap["mid_adapters"] = set(ckpt[CKPT_KEY]["projector"])
        snap["mid_ema"] = type(ckpt["ema"]).__name__

    _, snap = train_one_kd_epoch(
        method, pico_yamls[student], str(teachers[teacher]), str(tiny_data), tmp_path, on_model_save=saved
    )

    header = (tmp_path / "run" / "results.csv").read_text().splitlines()[0].split(",")
    for spec in resolve_method(method):
        assert f"train/{spec.name}_loss" in header, spec.name
        value = snap["tloss"][f"{spec.name}_loss"]
        assert value != 0 and abs(value) < float("inf"), (spec.name, value)

    before, after = snap["before"], snap["after"]
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    if method == "bckd":  # no adapters at all
        assert not before
    else:
        assert before and changed == set(before), sorted(set(before) - changed)
    if method == "mgd":  # align conv where the widths differ (always, pico vs n) and the generator, every level
        assert {k.split(".", 2)[2] for k in before} == {
            f"{m}.{p}" for m in ("align", "generator.0", "generator.2") for p in ("weight", "bias")
        }
        assert {int(k.split(".")[1]) for k in before} == {0, 1, 2}
    assert snap["mid_adapters"] == set(before) and snap["mid_ema"] == "DetectionModel"

    for name in ("last.pt", "best.pt"):
        ckpt = torch.load(tmp_path / "run" / "weights" / name, map_location="cpu", weights_only=False)
        assert type(ckpt["model"]).__name__ == "DetectionModel", name
        keys = list(ckpt["model"].state_dict())
        assert not any(w in k for k in keys for w in ("teacher", "projector", "generator", "align")), keys[:5]
        assert "projector" not in (ckpt.get(CKPT_KEY) or {}), name
