# yolokd, AGPL-3.0 License
"""Every built-in detection method, one training epoch per family and on a cross-family pair.

The methods are the registry's (``available_methods("detect")``): a method added to ``cfg/methods/`` is trained here
without a change to this file. Each run: every loss item is logged, finite and non-zero, a divergence (a KL) at least
-1e-6 and every other term above 0; every adapter (1x1 convs, MGD's align convs and generators) changes, and a method
whose terms build none has none; the files the run leaves are bare students: no teacher, adapter or generator
weights, and no adapters under the extra key either (those travel only in mid-training files, for resume).
"""

from __future__ import annotations

import pytest
import torch
from helpers import check_loss_items, divergence_terms, train_one_kd_epoch

from yolokd.checkpoint import CKPT_KEY
from yolokd.config import available_methods, resolve_method
from yolokd.losses import TERMS, Term

METHODS = available_methods("detect")
PAIRS = [("yolov8", "yolov8"), ("yolo11", "yolo11"), ("yolo26", "yolo26"), ("yolov8", "yolo11")]  # student, teacher
PAIR_IDS = [s if s == t else f"{s}-{t}" for s, t in PAIRS]


def test_every_method_is_tested_here():
    """The methods left out here are those whose every term reads another task (test_tasks_e2e.py trains them)."""
    assert METHODS
    for method in set(available_methods()) - set(METHODS):
        assert all("detect" not in TERMS[spec.type].tasks for spec in resolve_method(method)), method


def test_divergence_terms_are_registered():
    """The terms `check_loss_items` allows a rounding-negative value are registered terms (a renamed one fails here)."""
    assert set(divergence_terms()) <= set(TERMS.values())


@pytest.mark.slow
@pytest.mark.parametrize(("student", "teacher"), PAIRS, ids=PAIR_IDS)
@pytest.mark.parametrize("method", METHODS)
def test_method_trains_one_epoch(method, student, teacher, teachers, tiny_data, tmp_path, pico_yamls):
    def saved(tr, snap):  # the mid-training file carries the adapters for resume, under the extra key only
        ckpt = torch.load(tr.last, map_location="cpu", weights_only=False)
        snap["mid_adapters"] = set(ckpt[CKPT_KEY]["projector"])
        snap["mid_ema"] = type(ckpt["ema"]).__name__

    _, snap = train_one_kd_epoch(
        method, pico_yamls[student], str(teachers[teacher]), str(tiny_data), tmp_path, on_model_save=saved
    )

    specs = resolve_method(method)
    header = (tmp_path / "run" / "results.csv").read_text().splitlines()[0].split(",")
    for spec in specs:
        assert f"train/{spec.name}_loss" in header, spec.name
    check_loss_items(snap["tloss"], specs)  # epoch means, before results.csv rounds them

    before, after = snap["before"], snap["after"]
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == set(before), sorted(set(before) - changed)
    # a term builds adapters when it overrides Term.make_adapters; pico and n widths differ, so they have weights
    assert bool(before) == any(TERMS[s.type].make_adapters is not Term.make_adapters for s in specs), sorted(before)
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
