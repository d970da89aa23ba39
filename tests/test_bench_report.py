# yolokd, AGPL-3.0 License
"""The benchmark's report: cells, the Markdown table, the targets list, the marker blocks and publish=path.md."""

from __future__ import annotations

from bench_helpers import fake_rows

from yolokd.bench.config import merge_config
from yolokd.bench.report import (
    HANDWRITTEN,
    MD_END,
    MD_START,
    fmt_stat,
    format_table,
    format_targets,
    publish_report,
    write_benchmarks_md,
)
from yolokd.bench.stats import check_targets, summarize


def test_fmt_stat():
    assert fmt_stat(None) == "—"
    assert fmt_stat(summarize([0.123]), 100) == "12.3"
    assert fmt_stat(summarize([0.1, 0.3]), 100) == "20.0 (10.0–30.0)"
    assert fmt_stat(summarize([1.234, 1.0]), 1, 2) == "1.12 (1.00–1.23)"


def _teacher():
    return {
        "label": "teacher (yolov8n)",
        "val": {"map": 0.41},
        "test": {"map": 0.40, "map50": 0.6},
        "forward": summarize([0.25, 0.26]),
    }


def test_format_table_markdown():
    rows = fake_rows()
    lines = format_table(rows, _teacher()).splitlines()
    assert lines[0].startswith("| row | val mAP50-95 | test mAP50-95 |") and set(lines[1]) == {"|", "-"}
    assert len({ln.count("|") for ln in lines}) == 1  # every line has the same number of cells
    assert lines[2].startswith("| teacher (yolov8n) | 41.0 | 40.0 | 60.0 | 1 | fwd 255 (250–260) |")
    # gap recovered from the means: (29 - 21) / (40 - 21) = 0.42
    assert lines[5].startswith("| cwd | 29.0 (28.0–30.0) | 29.0 (28.0–30.0) | 58.0 (56.0–60.0) | 0.42 |")
    assert "| 1.30 (1.30–1.30) | 1.04 (1.04–1.04) | 0.93 (0.93–0.93) | 900 | 2/2 |" in lines[5]  # 1.3 / 1.4 built-in
    assert lines[6].startswith("| tar | — | — |") and "0/2 (error: RuntimeError: boom / bad)" in lines[6]


def test_format_targets_says_no_verdict():
    rows = fake_rows(student_maps=(0.20, 0.30), teacher=0.45)
    text = format_targets(check_targets(rows, 0.45)).splitlines()
    assert text[0].startswith("- every method above the undistilled student on every seed")
    assert "**no verdict** (no verdict: the teacher-student gap 20.00 points" in text[0]
    assert text[-1].startswith("- regime: ") and "**NOT met**" in text[-1]
    assert format_targets([{"target": "old", "met": None, "detail": "x"}]) == "- old: **not measured** (x)"


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


def test_write_benchmarks_md_tagged_block_is_its_own_section(tmp_path):
    from yolokd.bench.report import markers

    md = tmp_path / "BENCHMARKS.md"
    write_benchmarks_md(md, "main table")
    write_benchmarks_md(md, "glyphs table", "glyphs")
    write_benchmarks_md(md, "main table 2")
    write_benchmarks_md(md, "glyphs table 2", "glyphs")
    text = md.read_text()
    start, end = markers("glyphs")
    assert text.count("## Transfer: glyphs") == 1 and text.count(start) == 1 and text.count(end) == 1
    assert "main table 2" in text and "glyphs table 2" in text and "table\n" not in text.replace("table 2\n", "")
    assert text.index(MD_END) < text.index(start)  # the main block stays first


def _results(rows, preset="micro"):
    return {
        "config": merge_config({"preset": preset})[0],
        "train_args": {},
        "command": "yolokd benchmark preset=micro publish=docs/bench.md",
        "machine": {
            "cpu": "x",
            "usable_cores": 2,
            "cores": 2,
            "torch": "2",
            "torch_threads": 1,
            "ultralytics": "8",
            "python": "3",
        },
        "date": "2026-11-24 10:00 UTC",
        "elapsed_s": 60.0,
        "teacher": {**_teacher(), "source": "given", "forward_n": 10},
        "rows": rows,
        "targets": check_targets(rows, 0.40),
    }


def test_publish_report_writes_the_given_file_and_the_plot_beside_it(tmp_path):
    results = _results(fake_rows())
    (tmp_path / "plot.png").write_bytes(b"png")
    md, png = publish_report(results, tmp_path / "plot.png", tmp_path / "docs" / "bench.md")
    assert md == str(tmp_path / "docs" / "bench.md") and png == str(tmp_path / "docs" / "benchmarks" / "micro.png")
    text = (tmp_path / "docs" / "bench.md").read_text()
    assert "![test mAP50-95 vs cost](benchmarks/micro.png)" in text and "| cwd |" in text
    assert "built-in synthetic shapes (train 16" in text and "publish=bench.md" in text
    assert (tmp_path / "docs" / "benchmarks" / "micro.png").read_bytes() == b"png"
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["bench.md", "micro.png", "plot.png"]


def test_report_gives_the_labelled_teacher_in_one_line_where_there_is_one():
    from yolokd.bench.report import render_report

    results = _results(fake_rows(), "semi")
    assert "rows B' and C'" not in render_report(results, None)
    own = {"label": "teacher on 10% labels (yolov8n)", "source": "trained 80 epoch(s), seed 0"}
    results["teacher_labeled"] = {**own, "val": {"map": 0.312}, "test": {"map": 0.288, "map50": 0.5}}
    lines = [ln for ln in render_report(results, None).splitlines() if "rows B' and C'" in ln]
    assert lines == [
        "- Teacher of the rows B' and C': teacher on 10% labels (yolov8n) (trained 80 epoch(s), seed 0), "
        "val mAP50-95 31.2, test 28.8."
    ]


def test_report_says_a_short_budget_measures_saved_time_and_names_the_converged_run():
    from yolokd.bench.report import render_report

    short = [ln for ln in render_report(_results(fake_rows(), "cpu"), None).splitlines() if "far from converged" in ln]
    assert short == [
        f"The students trained {_results(fake_rows(), 'cpu')['config']['epochs']} epochs, far from converged: the "
        "gains measure distillation as saved training time. What a run to convergence gets: `yolokd benchmark "
        'preset=converged` (BENCHMARKS.md "Converged: shapes", "Converged: glyphs", "Converged: aerial").'
    ]
    assert "far from converged" not in render_report(_results(fake_rows(), "converged"), None)


def test_format_curves_marks_each_training_converged_or_still_improving():
    from yolokd.bench.report import format_curves

    rows = fake_rows()
    assert format_curves(rows, _teacher()) == ""  # no run validated every epoch: no table
    flat = [0.1, 0.3] + [0.40] * 8  # best 40.0 at epoch 3, the last two epochs equal to it
    rising = [i / 20 for i in range(1, 11)]  # best 50.0 at epoch 10, epoch 9 is 5 points below it
    rows[0]["runs"]["0"]["curve"], rows[0]["runs"]["1"]["curve"] = flat, rising
    lines = format_curves(rows, {**_teacher(), "curve": flat}).splitlines()
    assert lines[0] == "| val mAP50-95: best (epoch) / last | seed 0 | seed 1 |" and set(lines[1]) == {"|", "-"}
    assert lines[2] == "| teacher (yolov8n) | 40.0 (3) / 40.0, converged |  |"
    assert lines[3] == "| student (no KD) | 40.0 (3) / 40.0, converged | 50.0 (10) / 50.0, **still improving** |"
    assert lines[4].startswith("| ultralytics dis=6 | — | — |")
    assert len({ln.count("|") for ln in lines}) == 1


def test_converged_preset_has_its_own_block_and_plot(tmp_path):
    from yolokd.bench.report import block_heading, report_tag

    cfg = merge_config({"preset": "converged", "style": "aerial"})[0]
    assert report_tag(cfg) == "converged-aerial" and block_heading(report_tag(cfg)) == "## Converged: aerial"
    assert report_tag(merge_config({})[0]) == "" and report_tag(merge_config({"preset": "converged"})[0]) == (
        "converged-shapes"
    )
    md = tmp_path / "BENCHMARKS.md"
    write_benchmarks_md(md, "cpu block")
    write_benchmarks_md(md, "converged block", "converged-shapes")
    write_benchmarks_md(md, "cpu block 2")
    text = md.read_text()
    assert "cpu block 2" in text and "converged block" in text and "cpu block\n" not in text
    assert text.count("## Converged: shapes") == 1
