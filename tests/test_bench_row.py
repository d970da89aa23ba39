# yolokd, AGPL-3.0 License
"""One benchmark row: its step timer, its process (a crash is a result), reuse of a finished row, its entry point."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from yolokd.bench.config import merge_config
from yolokd.bench.row import ROW_MODULE, StepTimer, finished_result, keep_superseded, launch_row, main, same_row
from yolokd.config import KDError


def test_step_timer_leaves_out_the_first_epoch_and_first_iterations():
    timer = StepTimer(epochs=2, skip=3)
    trainer = SimpleNamespace(epoch=0)
    for epoch in range(2):
        trainer.epoch = epoch
        timer.on_train_epoch_start(trainer)
        for _ in range(6):
            timer.on_train_batch_start(trainer)
            timer.on_train_batch_end(trainer)
    s = timer.step_summary()
    assert s["total"] == 12 and s["n"] == 3 and s["mean_s"] >= 0
    short = StepTimer(epochs=1, skip=3)
    for _ in range(2):
        short.on_train_batch_start(trainer)
        short.on_train_batch_end(trainer)
    assert short.step_summary()["n"] == 1 and "too few" in short.step_summary()["rule"]


def test_a_crashing_row_is_an_error_result(tmp_path):
    spec = {
        "kind": "student",
        "method": None,
        "seed": 0,
        "student": str(tmp_path / "missing.yaml"),
        "teacher": "x",
        "data": "x",
        "epochs": 1,
        "imgsz": 64,
        "batch": 2,
        "train": {},
        "dis": 6.0,
        "dir": str(tmp_path / "row"),
        "val_split": "val",
        "test_split": "test",
        "weights": "last",
        "time_teacher": False,
        "teacher_batches": 10,
    }
    r = launch_row(spec, timeout=120)
    assert r["ok"] is False and "missing.yaml" in r["error"] and r["wall_s"] > 0
    assert (tmp_path / "row" / "log.txt").exists() and r["maxrss_mib"] > 0
    # reuse=True never keeps a failed row: it runs (and fails) again
    assert launch_row(spec, timeout=120, reuse=True)["ok"] is False


def test_reuse_keeps_only_a_finished_row_with_the_same_spec(tmp_path):
    spec = {"kind": "student", "method": None, "seed": 0, "dir": str(tmp_path / "row"), "train": {"lr0": 0.004}}
    row = tmp_path / "row"
    row.mkdir()
    (row / "spec.json").write_text(json.dumps(spec))
    (row / "result.json").write_text(json.dumps({"ok": True, "val": {"map": 0.5}, "wall_s": 12.0}))
    r = launch_row(spec, timeout=1, reuse=True)  # no process is started (it would fail: the spec is incomplete)
    assert r["ok"] and r["reused"] and r["val"]["map"] == 0.5 and r["wall_s"] == 12.0
    assert finished_result({**spec, "train": {"lr0": 0.01}}) is None  # any spec change: run again
    assert finished_result({**spec, "seed": 1}) is None
    (row / "result.json").write_text("{not json")
    assert finished_result(spec) is None
    (row / "result.json").write_text(json.dumps({"ok": True, "val": {"map": 0.5}}))  # written before wall_s was kept
    assert finished_result(spec)["wall_s"] is None
    assert finished_result({**spec, "dir": str(tmp_path / "other")}) is None
    assert merge_config({"reuse": True})[0]["reuse"] is True and merge_config({})[0]["reuse"] is False
    with pytest.raises(KDError, match="reuse"):
        merge_config({"reuse": "yes"})


def test_reuse_fills_term_defaults_before_comparing(tmp_path):
    # a row stored before bckd_cls had its ``gate`` parameter: the yaml now lists gate: false, the default
    term = {"type": "bckd_cls", "name": "bckd_cls", "weight": 1.0, "balance": 0.5, "schedule": "constant"}
    old = {"kind": "yolokd", "seed": 0, "dir": str(tmp_path / "row"), "terms": [{**term, "params": {"beta": 1.0}}]}
    assert same_row(old, {**old, "terms": [{**term, "params": {"beta": 1, "gate": False}}]})
    assert same_row(old, {**old, "terms": [{**term, "params": {}}]})  # beta 1.0 is the default too
    assert not same_row(old, {**old, "terms": [{**term, "params": {"gate": True}}]})
    assert not same_row(old, {**old, "terms": [{**term, "params": {"beta": 2.0}}]})
    assert not same_row(old, {**old, "terms": [{**term, "weight": 2.0, "params": {}}]})
    assert same_row({"kind": "student", "terms": None}, {"kind": "student", "terms": None})
    row = tmp_path / "row"
    row.mkdir()
    (row / "spec.json").write_text(json.dumps(old))
    (row / "result.json").write_text(json.dumps({"ok": True, "val": {"map": 0.5}}))
    assert finished_result({**old, "terms": [{**term, "params": {"gate": False}}]})["val"]["map"] == 0.5


def test_a_changed_row_is_kept_beside_not_deleted(tmp_path):
    row = tmp_path / "row-seed0"
    assert keep_superseded(row) is None  # nothing there
    row.mkdir()
    (row / "result.json").write_text(json.dumps({"ok": False}))
    assert keep_superseded(row) is None and row.is_dir()  # a failed row is not worth keeping
    (row / "result.json").write_text(json.dumps({"ok": True, "val": {"map": 0.5}}))
    assert keep_superseded(row) == tmp_path / "row-seed0.prev1" and not row.exists()
    row.mkdir()
    (row / "result.json").write_text(json.dumps({"ok": True, "val": {"map": 0.6}}))
    assert keep_superseded(row) == tmp_path / "row-seed0.prev2"
    assert json.loads((tmp_path / "row-seed0.prev1" / "result.json").read_text())["val"]["map"] == 0.5
    # launch_row with reuse=True moves a finished row whose spec changed before it trains again
    spec = {"kind": "student", "method": None, "seed": 0, "dir": str(row), "train": {"lr0": 0.004}}
    row.mkdir()
    (row / "spec.json").write_text(json.dumps({**spec, "train": {"lr0": 0.01}}))
    (row / "result.json").write_text(json.dumps({"ok": True, "val": {"map": 0.7}}))
    assert launch_row(spec, timeout=60, reuse=True)["ok"] is False  # the spec is incomplete: the new run fails
    assert json.loads((tmp_path / "row-seed0.prev3" / "result.json").read_text())["val"]["map"] == 0.7
    assert json.loads((row / "spec.json").read_text()) == spec


def test_row_entry_point_usage():
    assert ROW_MODULE == "yolokd.bench.row"
    assert main([]) == 2 and main(["preset=micro"]) == 2 and main(["--row"]) == 2


def test_read_curve_reads_the_per_epoch_val_map_of_results_csv(tmp_path):
    from yolokd.bench.row import read_curve

    csv = tmp_path / "results.csv"
    csv.write_text(
        "epoch, train/box_loss, metrics/mAP50-95(B), metrics/mAP50(B)\n1, 2.5, 0.125, 0.3\n2, 2.1, 0.25, 0.5\n"
    )  # older Ultralytics pads the header with spaces
    assert read_curve(csv) == [0.125, 0.25]
    assert read_curve(csv, "metrics/mAP50(B)") == [0.3, 0.5]
    assert read_curve(tmp_path / "missing.csv") is None and read_curve(csv, "metrics/mAP50-95(M)") is None
    (tmp_path / "args.yaml").write_text("epochs: 2\nval: false\nplots: false\n")  # zeros but for the last epoch
    assert read_curve(csv) is None
    (tmp_path / "args.yaml").write_text("epochs: 2\nval: true\n")
    assert read_curve(csv) == [0.125, 0.25]
