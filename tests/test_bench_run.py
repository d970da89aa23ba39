# yolokd, AGPL-3.0 License
"""``yolokd benchmark``: the CLI mode, the data set (style=), and one micro run end to end with reuse and publish."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from yolokd.bench.config import merge_config
from yolokd.bench.run import prepare_data, run_benchmark
from yolokd.bench.semi import SEMI_TARGETS
from yolokd.cli import main as cli_main
from yolokd.cli import parse
from yolokd.config import KDError


def test_cli_benchmark_mode():
    mode, o = parse(["benchmark", "preset=micro", "seeds=[0,1]", "methods=[cwd,tar]", "lr0=0.02"])
    assert mode == "benchmark" and o == {"preset": "micro", "seeds": [0, 1], "methods": "[cwd,tar]", "lr0": 0.02}
    assert merge_config(o)[0]["methods"] == ["cwd", "tar"]
    with pytest.raises(KDError, match="teacher_epochs"):
        parse(["benchmark", "teacher_epoch=3"])
    assert cli_main(["benchmark", "seed=1"]) == 2
    assert cli_main(["benchmark", "preset=nope"]) == 2
    assert parse(["benchmark", "publish=BENCHMARKS.md", "style=shapes"])[1] == {
        "publish": "BENCHMARKS.md",
        "style": "shapes",
    }
    assert cli_main(["benchmark", "publish=True"]) == 2  # a path now, not a flag


def test_prepare_data_passes_style_to_the_generator(tmp_path, monkeypatch):
    calls: list[dict] = []

    def fake(root, n_train=1, n_val=1, n_test=1, imgsz=1, seed=0, nc=1, max_objects=1, style="shapes"):
        calls.append({"seed": seed, "style": style, "n_train": n_train})
        return Path(root) / "data.yaml"

    monkeypatch.setattr("yolokd.data.synthetic.make_dataset", fake)
    cfg = merge_config({"style": "glyphs", "data_seed": 3})[0]
    assert prepare_data(cfg, tmp_path) == str(tmp_path / "data" / "data.yaml")
    assert calls == [{"seed": 3, "style": "glyphs", "n_train": cfg["n_train"]}]
    given = tmp_path / "given.yaml"
    given.write_text("path: .\n")
    assert prepare_data(merge_config({"data": str(given)})[0], tmp_path) == str(given)
    assert prepare_data(merge_config({"data": "coco.yaml"})[0], tmp_path) == "coco.yaml"
    monkeypatch.undo()
    with pytest.raises(KDError, match="style must be one of"):  # the generator's own check, as a one-line error
        prepare_data(merge_config({"style": "dots"})[0], tmp_path)


def test_run_rows_jobs_runs_rows_at_once(tmp_path, monkeypatch):
    """jobs=2 keeps two row processes running at once and still records every row; jobs=1 one at a time."""
    import threading
    import time

    from yolokd.bench import run as bench_run
    from yolokd.bench.plan import Setup

    active, peak, lock = [0], [0], threading.Lock()

    def fake_launch(spec, timeout, reuse=False):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.2)
        with lock:
            active[0] -= 1
        return {"ok": False, "error": "fake", "seed": spec["seed"]}

    monkeypatch.setattr(bench_run, "launch_row", fake_launch)
    monkeypatch.setattr(bench_run, "row_spec", lambda setup, row, seed: {"seed": seed})
    for jobs, want in ((1, 1), (2, 2)):
        cfg = merge_config({"jobs": jobs, "seeds": [0, 1], "combo": None, "methods": ["cwd"]})[0]
        rows = [{"label": x, "runs": {}} for x in ("a", "b")]
        peak[0] = 0
        bench_run.run_rows(Setup(cfg, {}, "s", "t", "d", tmp_path), rows, {"rows": rows}, time.perf_counter())
        assert peak[0] == want and all(set(r["runs"]) == {"0", "1"} for r in rows)
    with pytest.raises(KDError, match="jobs"):
        merge_config({"jobs": 0})


def test_train_teacher_reuses_its_named_folder_by_the_stamp(tmp_path, monkeypatch):
    """name= picks the run folder the stamp and reuse apply to; a view's fraction is part of the stamp."""
    import yolokd.demo as demo

    trained: list[str] = []

    class FakeYOLO:
        def __init__(self, model):
            pass

        def train(self, project, name, **kw):
            trained.append(name)
            (Path(project) / name / "weights").mkdir(parents=True, exist_ok=True)
            (Path(project) / name / "weights" / "best.pt").write_bytes(b"pt")

    monkeypatch.setattr(demo, "YOLO", FakeYOLO)
    full, view = tmp_path / "data" / "data.yaml", tmp_path / "semi-data" / "data.yaml"
    for y in (full, view):
        y.parent.mkdir()
        y.write_text(f"path: {y.parent}\n")
    (view.parent / ".yolokd_semi.json").write_text('{"fraction": 0.1}')
    args = (tmp_path, "yolov8n.yaml", 2, 64, 8)
    assert demo.train_teacher(full, *args, seed=0) == tmp_path / "teacher" / "weights" / "best.pt"
    assert demo.train_teacher(view, *args, "teacher-labeled", seed=0) == (
        tmp_path / "teacher-labeled" / "weights" / "best.pt"
    )
    assert trained == ["teacher", "teacher-labeled"]
    demo.train_teacher(full, *args, seed=0)
    demo.train_teacher(view, *args, "teacher-labeled", seed=0)
    assert trained == ["teacher", "teacher-labeled"]  # both reused, each by its own stamp
    assert "view" not in json.loads((tmp_path / "teacher" / "yolokd_teacher.json").read_text())  # as before
    (view.parent / ".yolokd_semi.json").write_text('{"fraction": 0.2}')  # the view rewritten for another fraction
    demo.train_teacher(view, *args, "teacher-labeled", seed=0)
    demo.train_teacher(view, *args, "teacher-labeled", seed=1)
    assert trained == ["teacher", "teacher-labeled", "teacher-labeled", "teacher-labeled"]


def test_prepare_teacher_trains_the_labelled_teacher_on_the_view_and_evaluates_it_on_the_full_data(
    tmp_path, monkeypatch
):
    from yolokd.bench import run as bench_run

    calls: list[tuple] = []

    def fake_train(data, project, model, epochs, imgsz, batch, name="teacher", **train):
        calls.append(("train", str(data), name, epochs, train["seed"], train["lr0"]))
        return project / name / "weights" / "best.pt"

    def fake_eval(weights, data, split, imgsz, batch, out):
        calls.append(("eval", data, split, out.name))
        return {"map": 0.5 if split == "val" else 0.4, "map50": 0.6}

    monkeypatch.setattr(bench_run, "train_teacher", fake_train)
    monkeypatch.setattr(bench_run, "evaluate", fake_eval)
    cfg, train = merge_config({"preset": "semi", "teacher": "given.pt", "lr0": 0.01})
    info = bench_run.prepare_teacher(cfg, train, "full.yaml", tmp_path, "view.yaml")
    assert calls == [
        ("train", "view.yaml", "teacher-labeled", 80, 0, 0.01),  # the given teacher= is the other teacher
        ("eval", "full.yaml", "val", "teacher-labeled-eval"),
        ("eval", "full.yaml", "test", "teacher-labeled-eval"),
    ]
    assert info["weights"] == str(tmp_path / "teacher-labeled" / "weights" / "best.pt")
    assert info["label"] == "teacher on 10% labels (yolov8n)" and info["source"] == "trained 80 epoch(s), seed 0"
    assert info["val"]["map"] == 0.5 and info["test"]["map"] == 0.4
    calls.clear()
    cfg = merge_config({"preset": "semi"})[0]
    assert bench_run.prepare_teacher(cfg, train, "full.yaml", tmp_path)["label"] == "teacher (yolov8n)"
    assert [c[2] for c in calls] == ["teacher", "val", "test"] and calls[1][3] == "teacher-eval"


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
    assert saved["teacher"]["forward"]["mean"] > 0 and len(saved["targets"]) == 8  # 3 accuracy, 4 cost, the regime
    assert saved["rows"][2]["summary"]["x_builtin"]["mean"] > 0 and saved["rows"][2]["neck_only"] is True  # cwd
    (prof,) = saved["profile"]  # micro profiles cwd: every part timed, the teacher stopped at its neck
    assert prof["method"] == "cwd" and prof["neck_only"] and prof["plain_teacher_ms"] > 0 < prof["plain_student_ms"]
    assert all(prof["ms"][k] > 0 for k in ("teacher", "student", "detection loss", "terms", "backward", "step"))
    assert "Profile of one step" in (out / "results.md").read_text()
    assert {t["status"] for t in saved["targets"][:3]} <= {"no verdict", "not measured"}  # one seed: no verdict
    assert (out / "plot.png").stat().st_size > 1000 and (out / "results.md").exists()
    assert "| ultralytics dis=6 |" in (out / "results.md").read_text()
    assert res["command"].startswith("yolokd benchmark preset=micro") and "published" not in res
    spec = json.loads((out / "rows" / "cwd-seed0" / "spec.json").read_text())
    assert spec["terms"] == [
        {"type": "cwd", "name": "cwd", "weight": 5.0, "balance": 0.25, "schedule": "constant", "params": {"tau": 1.0}}
    ]
    assert spec["versions"]["ultralytics"].startswith("8.4")
    publish = tmp_path / "pub" / "BENCH.md"
    again = run_benchmark(
        preset="micro",
        project=str(out),
        data=str(tiny_data),
        teacher=str(teacher_pt),
        reuse=True,
        builtin=False,
        publish=str(publish),
    )
    assert all(r["runs"]["0"].get("reused") for r in again["rows"])  # same specs: nothing trained again
    assert again["published"] == [str(publish), str(tmp_path / "pub" / "benchmarks" / "micro.png")]
    assert "![test mAP50-95 vs cost](benchmarks/micro.png)" in publish.read_text()


@pytest.mark.slow
def test_benchmark_semi_rows_train_on_their_own_data_and_unlabeled_images(tmp_path, teacher_pt):
    kw = {"preset": "micro", "project": str(tmp_path / "semi"), "teacher": str(teacher_pt), "builtin": False}
    semi = {"labeled_fraction": 0.25, "unlabeled_extra": 4, "semi_own_teacher": True}
    res = run_benchmark(**kw, methods=[], combo="cwd", profile=[], **semi)
    rows = {r["id"]: r for r in res["rows"]}
    assert list(rows) == "student semi-a semi-b semi-c semi-b-own semi-c-own semi-f combo-cwd".split()
    assert all(r["runs"]["0"]["ok"] for r in rows.values()), [r["runs"]["0"].get("error") for r in rows.values()]
    spec = {k: json.loads((tmp_path / "semi" / "rows" / f"{k}-seed0" / "spec.json").read_text()) for k in rows}
    view = str(tmp_path / "semi" / "semi-data" / "data.yaml")
    assert spec["semi-a"]["data"] == spec["semi-b"]["data"] == spec["semi-c"]["data"] == view
    assert spec["student"]["data"] == spec["semi-f"]["data"] == spec["combo-cwd"]["data"] != view
    assert spec["semi-b"]["unlabeled"] is False and spec["semi-c"]["unlabeled"] is None  # None: the view's key
    own = str(tmp_path / "semi" / "teacher-labeled" / "weights" / "best.pt")
    assert spec["semi-b-own"]["teacher"] == spec["semi-c-own"]["teacher"] == own == res["teacher_labeled"]["weights"]
    assert {spec[k]["teacher"] for k in rows if not k.endswith("-own")} == {str(teacher_pt)}
    assert spec["semi-b-own"]["data"] == spec["semi-c-own"]["data"] == view and spec["semi-c-own"]["unlabeled"] is None
    assert 0.0 <= res["teacher_labeled"]["test"]["map"] <= 1.0  # evaluated on the full data's test split
    assert "- Teacher of the rows B' and C': teacher on 25% labels" in (tmp_path / "semi" / "results.md").read_text()
    assert spec["semi-f"]["unlabeled"] == str(tmp_path / "semi" / "extra-data" / "images" / "train")
    assert "unlabeled" not in spec["student"] and "unlabeled" not in spec["combo-cwd"]  # reusable as before
    assert len(list((tmp_path / "semi" / "extra-data" / "images" / "train").iterdir())) == 4
    assert len((tmp_path / "semi" / "semi-data" / "train.txt").read_text().split()) == 16  # n_train entries
    header = {
        k: (tmp_path / "semi" / "rows" / f"{k}-seed0" / "train" / "results.csv").read_text().split("\n")[0]
        for k in rows
    }
    assert "unl_box" in header["semi-c"] and "unl_box" in header["semi-f"] and "unl_box" not in header["semi-b"]
    assert "unl_box" in header["semi-c-own"] and "unl_box" not in header["semi-b-own"]
    targets = [t["target"] for t in res["targets"]]
    assert targets[-4:] == list(SEMI_TARGETS.values()) and len(targets) == 8 + 4
    assert res["targets"][-2]["status"] in {"met", "NOT met"}  # jobs=1: the cost is measured
    assert res["targets"][-1]["detail"].startswith("C' - B' per seed ")  # C' and B' finished: measured
    with pytest.raises(KDError, match="labeled_fraction must be a fraction in"):
        merge_config({"labeled_fraction": 1.0})
    with pytest.raises(KDError, match="need the built-in synthetic data"):
        merge_config({"labeled_fraction": 0.1, "data": "coco.yaml"})
