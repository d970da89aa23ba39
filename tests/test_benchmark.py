# yolokd, AGPL-3.0 License
"""The benchmark: its pure parts (gap, spread, cost ratios, table, targets, presets, errors) and one micro run."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest

from yolokd.benchmark import (
    BENCH_DEFAULTS,
    HANDWRITTEN,
    MD_END,
    MD_START,
    StepTimer,
    _finished,
    _launch,
    check_targets,
    choose_combo,
    cost_ratios,
    fmt_stat,
    format_command,
    format_table,
    gap_recovered,
    merge_config,
    run_benchmark,
    summarize,
    summarize_row,
    write_benchmarks_md,
)
from yolokd.cli import main as cli_main
from yolokd.cli import parse
from yolokd.config import KDError, available_methods


def test_gap_recovered_values_and_edge_cases():
    assert gap_recovered(0.30, 0.20, 0.40) == pytest.approx(0.5)
    assert gap_recovered(0.40, 0.20, 0.40) == pytest.approx(1.0)
    assert gap_recovered(0.10, 0.20, 0.40) == pytest.approx(-0.5)  # worse than no distillation
    assert gap_recovered(0.25, 0.20, 0.20) is None  # teacher == student: undefined, not a division by zero
    assert gap_recovered(0.25, 0.20, 0.2 + 1e-9) is None
    assert gap_recovered(None, 0.2, 0.4) is None and gap_recovered(0.3, None, 0.4) is None


def test_summarize_mean_and_spread():
    s = summarize([0.1, 0.3])
    assert s["mean"] == pytest.approx(0.2) and s["min"] == 0.1 and s["max"] == 0.3 and s["n"] == 2
    assert s["std"] == pytest.approx(math.sqrt(0.02))  # sample standard deviation
    assert summarize([0.5])["std"] == 0.0
    assert summarize([None, float("nan")]) is None and summarize([]) is None
    assert summarize([1.0, None, 3.0])["n"] == 2


def test_cost_ratios():
    assert cost_ratios(1.5, 1.0, 0.25) == pytest.approx((1.5, 1.2))
    assert cost_ratios(1.5, 1.0, None) == (1.5, None)
    assert cost_ratios(None, 1.0, 0.25) == (None, None) and cost_ratios(1.0, 0.0, 0.25) == (None, None)


def test_choose_combo_takes_the_two_best_on_val():
    assert choose_combo({"cwd": 0.2, "hint": 0.3, "tar": 0.1}) == "hint+cwd"
    assert choose_combo({"cwd": 0.2, "hint": None}) is None


def test_fmt_stat():
    assert fmt_stat(None) == "—"
    assert fmt_stat(summarize([0.123]), 100) == "12.3"
    assert fmt_stat(summarize([0.1, 0.3]), 100) == "20.0 (10.0–30.0)"
    assert fmt_stat(summarize([1.234, 1.0]), 1, 2) == "1.12 (1.00–1.23)"


def _run(test_map, step, val_map=None, tf=None):
    r = {
        "ok": True,
        "val": {"map": test_map if val_map is None else val_map, "map50": 0.5},
        "test": {"map": test_map, "map50": 2 * test_map},
        "step": {"mean_s": step},
        "maxrss_mib": 900.0,
    }
    if tf is not None:
        r["teacher_forward"] = {"mean_s": tf}
    return r


def _rows(kd_maps=(0.28, 0.30), builtin_maps=(0.25, 0.27), kd_step=1.3):
    student = {"label": "student (no KD)", "kind": "student", "method": None}
    student["runs"] = {"0": _run(0.20, 1.0, tf=0.25), "1": _run(0.22, 1.0, tf=0.25)}
    builtin = {"label": "ultralytics dis=6", "kind": "builtin", "method": None}
    builtin["runs"] = {str(i): _run(m, 1.4) for i, m in enumerate(builtin_maps)}
    cwd = {"label": "cwd", "kind": "yolokd", "method": "cwd"}
    cwd["runs"] = {str(i): _run(m, kd_step) for i, m in enumerate(kd_maps)}
    broken = {"label": "tar", "kind": "yolokd", "method": "tar"}
    broken["runs"] = {"0": {"ok": False, "error": "RuntimeError: boom | bad"}, "1": {"ok": False, "error": "x"}}
    rows = [student, builtin, cwd, broken]
    for r in rows:
        summarize_row(r, student["runs"], 0.40, [0, 1])
    return rows


def test_summarize_row_gap_and_cost_per_seed():
    student, builtin, cwd, broken = _rows()
    assert cwd["per_seed"]["0"]["gap"] == pytest.approx((0.28 - 0.20) / (0.40 - 0.20))
    assert cwd["per_seed"]["1"]["gap"] == pytest.approx((0.30 - 0.22) / (0.40 - 0.22))
    assert cwd["summary"]["x_student"]["mean"] == pytest.approx(1.3)
    assert cwd["summary"]["x_floor"]["mean"] == pytest.approx(1.3 / 1.25)
    assert student["summary"]["gap"]["mean"] == 0.0
    assert broken["seeds_ok"] == 0 and broken["summary"]["test_map"] is None and broken["errors"]


def test_format_table_markdown():
    rows = _rows()
    teacher = {
        "label": "teacher (yolov8n)",
        "val": {"map": 0.41},
        "test": {"map": 0.40, "map50": 0.6},
        "forward": summarize([0.25, 0.26]),
    }
    lines = format_table(rows, teacher).splitlines()
    assert lines[0].startswith("| row | val mAP50-95 | test mAP50-95 |") and set(lines[1]) == {"|", "-"}
    assert len({ln.count("|") for ln in lines}) == 1  # every line has the same number of cells
    assert lines[2].startswith("| teacher (yolov8n) | 41.0 | 40.0 | 60.0 | 1 | fwd 255 (250–260) |")
    assert lines[5].startswith("| cwd | 29.0 (28.0–30.0) | 29.0 (28.0–30.0) | 58.0 (56.0–60.0) | 0.42 (0.40–0.44) |")
    assert "| 1.30 (1.30–1.30) | 1.04 (1.04–1.04) | 900 | 2/2 |" in lines[5]
    assert lines[6].startswith("| tar | — | — |") and "0/2 (error: RuntimeError: boom / bad)" in lines[6]


def test_check_targets():
    met = {t["target"]: t["met"] for t in check_targets(_rows())}
    assert met == {
        "every method beats the undistilled student": True,  # the failed row is not counted as a method result
        "the best recovers >= half the gap": False,  # (0.4 + 0.444) / 2 = 0.42
        "the best beats the built-in by >= 1.0 mAP50-95 point": True,  # 29.0 - 26.0 = 3 points
        "distillation step <= 1.10x the floor": True,  # 1.3 / 1.25 = 1.04
    }
    met = {t["target"]: t["met"] for t in check_targets(_rows(kd_maps=(0.19, 0.21), builtin_maps=(0.2, 0.2)))}
    assert met["every method beats the undistilled student"] is False
    assert met["the best beats the built-in by >= 1.0 mAP50-95 point"] is False
    assert {t["met"] for t in check_targets(_rows(kd_step=1.5))} >= {False}
    no_builtin = [r for r in _rows() if r["kind"] != "builtin"]
    assert check_targets(no_builtin)[2]["met"] is None  # not measurable, not "met"


def test_merge_config_presets_and_overrides():
    cfg, train = merge_config({})
    assert cfg["preset"] == "cpu" and cfg["seeds"] == [0, 1] and cfg["methods"] == available_methods()
    assert cfg["combo"] == "auto" and cfg["builtin"] is True and cfg["dis"] == 6.0
    assert train["nbs"] == cfg["batch"] and train["warmup_epochs"] == 1.0
    cfg, train = merge_config({"preset": "micro", "epochs": 2, "batch": 4, "lr0": 0.02})
    assert cfg["epochs"] == 2 and cfg["imgsz"] == 64 and cfg["methods"] == ["cwd"] and cfg["combo"] is None
    assert train["nbs"] == 4 and train["lr0"] == 0.02 and not cfg["publish"]
    cfg, train = merge_config({"nbs": 64, "methods": "[cwd,tar]", "seeds": 3, "combo": "cwd+tar"})
    assert train["nbs"] == 64 and cfg["methods"] == ["cwd", "tar"] and cfg["seeds"] == [3]
    assert cfg["combo"] == "cwd+tar"
    cfg, train = merge_config({"preset": "gpu"})
    assert cfg["data"] == "coco.yaml" and cfg["teacher"] == "yolov8x.pt" and "nbs" not in train
    assert merge_config({"combo": None})[0]["combo"] is None
    assert set(BENCH_DEFAULTS) >= {"preset", "seeds", "methods", "combo", "teacher", "project"}


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"epoch": 3}, "'epoch' is not a benchmark.*Did you mean 'epochs'"),
        ({"method": "cwd"}, "methods=\\[...\\] or combo="),
        ({"seed": 1}, "seeds=\\[...\\]"),
        ({"distill_model": "t.pt"}, "set by the benchmark"),
        ({"preset": "cpuu"}, "unknown preset 'cpuu'. Did you mean 'cpu'"),
        ({"methods": ["cwd", "cdw"]}, "unknown method 'cdw'"),
        ({"methods": ["cwd+tar"]}, "combo=cwd\\+tar"),
        ({"seeds": [0, 0]}, "distinct"),
        ({"seeds": [-1]}, ">= 0"),
        ({"seeds": "[a,b]"}, "list of integers"),
        ({"combo": "cwd+nope"}, "unknown method 'nope'"),
        ({"epochs": 0}, "epochs must be an integer >= 1"),
        ({"teacher_batches": 5}, "teacher_batches must be an integer >= 10"),
        ({"weights": "mid"}, "weights must be 'last' or 'best'"),
        ({"builtin": "yes"}, "builtin must be True or False"),
        ({"timeout": -1}, "timeout"),
    ],
)
def test_merge_config_errors_name_the_fix(overrides, match):
    with pytest.raises(KDError, match=match):
        merge_config(overrides)


def test_format_command():
    assert format_command({}) == "yolokd benchmark"
    assert format_command({"seeds": [0, 1], "project": "a b"}) == "yolokd benchmark seeds=[0,1] project='a b'"


def test_cli_benchmark_mode():
    mode, o = parse(["benchmark", "preset=micro", "seeds=[0,1]", "methods=[cwd,tar]", "lr0=0.02"])
    assert mode == "benchmark" and o == {"preset": "micro", "seeds": [0, 1], "methods": "[cwd,tar]", "lr0": 0.02}
    assert merge_config(o)[0]["methods"] == ["cwd", "tar"]
    with pytest.raises(KDError, match="teacher_epochs"):
        parse(["benchmark", "teacher_epoch=3"])
    assert cli_main(["benchmark", "seed=1"]) == 2
    assert cli_main(["benchmark", "preset=nope"]) == 2


def test_write_benchmarks_md_keeps_the_handwritten_part(tmp_path):
    md = tmp_path / "BENCHMARKS.md"
    write_benchmarks_md(md, "first table")
    text = md.read_text()
    assert MD_START in text and "first table" in text and HANDWRITTEN.strip() in text
    md.write_text(text.replace("## How to read", "## How to read (edited by hand)"))
    write_benchmarks_md(md, "second table")
    text = md.read_text()
    assert "second table" in text and "first table" not in text and "(edited by hand)" in text
    assert text.count(MD_START) == 1 and text.count(MD_END) == 1


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
    r = _launch(spec, timeout=120)
    assert r["ok"] is False and "missing.yaml" in r["error"] and r["wall_s"] > 0
    assert (tmp_path / "row" / "log.txt").exists() and r["maxrss_mib"] > 0
    # reuse=True never keeps a failed row: it runs (and fails) again
    assert _launch(spec, timeout=120, reuse=True)["ok"] is False


def test_reuse_keeps_only_a_finished_row_with_the_same_spec(tmp_path):
    spec = {"kind": "student", "method": None, "seed": 0, "dir": str(tmp_path / "row"), "train": {"lr0": 0.004}}
    row = tmp_path / "row"
    row.mkdir()
    (row / "spec.json").write_text(json.dumps(spec))
    (row / "result.json").write_text(json.dumps({"ok": True, "val": {"map": 0.5}, "wall_s": 12.0}))
    r = _launch(spec, timeout=1, reuse=True)  # no process is started (it would fail: the spec is incomplete)
    assert r["ok"] and r["reused"] and r["val"]["map"] == 0.5 and r["wall_s"] == 12.0
    assert _finished({**spec, "train": {"lr0": 0.01}}) is None  # any spec change: run again
    assert _finished({**spec, "seed": 1}) is None
    (row / "result.json").write_text("{not json")
    assert _finished(spec) is None
    (row / "result.json").write_text(json.dumps({"ok": True, "val": {"map": 0.5}}))  # written before wall_s was kept
    assert _finished(spec)["wall_s"] is None
    assert _finished({**spec, "dir": str(tmp_path / "other")}) is None
    assert merge_config({"reuse": True})[0]["reuse"] is True and merge_config({})[0]["reuse"] is False
    with pytest.raises(KDError, match="reuse"):
        merge_config({"reuse": "yes"})


@pytest.mark.slow
def test_benchmark_micro_end_to_end(tmp_path, tiny_data, teacher_pt):
    res = run_benchmark(preset="micro", project=str(tmp_path / "bench"), data=str(tiny_data), teacher=str(teacher_pt))
    out = tmp_path / "bench"
    saved = json.loads((out / "results.json").read_text())
    assert [r["kind"] for r in saved["rows"]] == ["student", "builtin", "yolokd"]
    for row in saved["rows"]:
        run = row["runs"]["0"]
        assert run["ok"], run.get("error")
        for key in ("val", "test"):
            assert 0.0 <= run[key]["map"] <= 1.0 and 0.0 <= run[key]["map50"] <= 1.0
        assert run["step"]["mean_s"] > 0 and run["maxrss_mib"] > 100
        assert row["summary"]["x_student"]["mean"] > 0 and row["summary"]["x_floor"]["mean"] > 0
    assert saved["rows"][0]["runs"]["0"]["teacher_forward"]["n"] >= 10
    assert saved["teacher"]["forward"]["mean"] > 0 and len(saved["targets"]) == 4
    assert (out / "plot.png").stat().st_size > 1000 and (out / "results.md").exists()
    assert "| ultralytics dis=6 |" in (out / "results.md").read_text()
    assert res["command"].startswith("yolokd benchmark preset=micro") and "published" not in res
    spec = json.loads((out / "rows" / "cwd-seed0" / "spec.json").read_text())
    assert spec["terms"] == [
        {"type": "cwd", "name": "cwd", "weight": 5.0, "schedule": "constant", "params": {"tau": 1.0}}
    ]
    assert spec["versions"]["ultralytics"].startswith("8.4")
    again = run_benchmark(
        preset="micro", project=str(out), data=str(tiny_data), teacher=str(teacher_pt), reuse=True, builtin=False
    )
    assert all(r["runs"]["0"].get("reused") for r in again["rows"])  # same specs: nothing trained again
