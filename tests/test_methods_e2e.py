# yolokd, AGPL-3.0 License
"""Every method, one training epoch per family: its loss items are logged and non-zero, and its adapters train."""

from __future__ import annotations

import pytest
import torch
from helpers import train_one_kd_epoch

from yolokd.config import available_methods, resolve_method

pytestmark = pytest.mark.slow

FAMILIES = {"yolov8": "yolov8n.yaml", "yolo11": "yolo11n.yaml", "yolo26": "yolo26n.yaml"}


NEW_METHODS = {"bckd", "mgd", "pkd"}  # trained in test_methods_new_e2e.py (also on a cross-family pair)
TASK_METHODS = {"mask", "keypoint"}  # segment and pose only: trained in test_tasks_e2e.py


def test_every_method_is_tested_here():
    assert set(available_methods()) == {"cwd", "crosskd", "fgbg", "hint", "tar"} | NEW_METHODS | TASK_METHODS


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("method", sorted(set(available_methods()) - NEW_METHODS - TASK_METHODS))
def test_method_trains_one_epoch(method, family, teachers, tiny_data, tmp_path, pico_yamls):
    _, snap = train_one_kd_epoch(method, pico_yamls[family], str(teachers[family]), str(tiny_data), tmp_path)
    header = (tmp_path / "run" / "results.csv").read_text().splitlines()[0].split(",")
    for spec in resolve_method(method):
        assert f"train/{spec.name}_loss" in header, spec.name
        value = snap["tloss"][f"{spec.name}_loss"]
        # non-zero and finite; with these barely trained teachers CrossKD's cross-head outputs sit within float
        # rounding of the teacher's, so a KL can come out as -1e-8 rather than +1e-8
        assert value != 0 and abs(value) < float("inf"), (spec.name, value)
    changed = [k for k in snap["before"] if not torch.equal(snap["before"][k], snap["after"][k])]
    assert snap["before"] and len(changed) == len(snap["before"]), sorted(set(snap["before"]) - set(changed))
