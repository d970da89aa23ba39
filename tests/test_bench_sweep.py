# yolokd, AGPL-3.0 License
"""The val-split sweep of loss-weight scales: variant yamls, the choice rule, the report, errors and one micro run."""

from __future__ import annotations

import json

import pytest

from yolokd.bench.sweep import (
    MD_END,
    MD_START,
    best_scales,
    publish_sweep,
    render_sweep,
    run_sweep,
    scale_tag,
    scaled_method,
)
from yolokd.cli import main as cli_main
from yolokd.cli import parse
from yolokd.config import KDError, resolve_method


def test_scaled_method_multiplies_every_weight_and_keeps_the_rest(tmp_path):
    path = scaled_method("fgbg", 0.25, tmp_path)
    assert path.name == "fgbg-x0.25.yaml"
    base, scaled = resolve_method("fgbg"), resolve_method(str(path))
    assert [s.weight for s in base] == [0.25, 250.0]
    assert [s.weight for s in scaled] == [0.0625, 62.5]
    for b, s in zip(base, scaled):  # same names (loss items), types, schedules and parameters
        assert (s.name, s.type, s.schedule, s.params) == (b.name, b.type, b.schedule, b.params)
    assert [s.weight for s in resolve_method(str(scaled_method("cwd", 4, tmp_path)))] == [20.0]
    assert [s.weight for s in resolve_method(str(scaled_method("crosskd", 1.0, tmp_path)))] == [1.0, 4.0]


def test_scaled_method_uses_fixed_weights_even_when_the_yaml_balances(tmp_path):
    """cwd ships automatic weights (balance 0.25): its x<scale> variants must train the scaled fixed weight."""
    assert [s.balance for s in resolve_method("cwd")] == [0.25]
    fixed = resolve_method(str(scaled_method("cwd", 0.5, tmp_path)))
    assert [(s.weight, s.balance) for s in fixed] == [(2.5, 0.0)]


@pytest.mark.parametrize(
    "method, scale, match",
    [("cdw", 1.0, "unknown method 'cdw'"), ("cwd", 0.0, "> 0"), ("cwd", -1.0, "> 0"), ("cwd", True, "> 0")],
)
def test_scaled_method_errors(tmp_path, method, scale, match):
    with pytest.raises(KDError, match=match):
        scaled_method(method, scale, tmp_path)


def test_best_scales_keeps_x1_unless_clearly_better():
    table = {"cwd": {0.25: 0.010, 1.0: 0.012, 4.0: 0.015}, "tar": {0.25: 0.013, 1.0: 0.012, 4.0: None}}
    assert best_scales(table) == {"cwd": 4.0, "tar": 0.25}
    assert best_scales(table, min_gain=0.002) == {"cwd": 4.0, "tar": 1.0}  # tar gains 0.001 only
    assert best_scales(table, min_gain=0.003) == {"cwd": 1.0, "tar": 1.0}  # cwd gains exactly 0.003: not more
    assert best_scales({"a": {0.25: 0.5, 4.0: 0.5}}) == {"a": 4.0}  # tie, equally far from 1: the larger factor
    assert best_scales({"a": {1.0: None, 2.0: None}}) == {"a": None}
    assert best_scales({"a": {2.0: 0.3, 1.0: None}}, min_gain=1.0) == {"a": 2.0}  # x1 missing: nothing to compare


def test_render_sweep_table():
    stat = {"mean": 0.015, "std": 0.0, "min": 0.015, "max": 0.015, "n": 1}
    res = {
        "command": "yolokd sweep scales=[0.5,1]",
        "date": "2026-11-23 22:00 UTC",
        "elapsed_s": 90.0,
        "seeds": [0],
        "scales": [0.5, 1.0],
        "val_split": "val",
        "teacher_val": 0.1,
        "student": {**stat, "mean": 0.01, "min": 0.01, "max": 0.01},
        "table": {"cwd": {"x0.5": stat, "x1": None}},
        "min_gain": 0.002,
        "chosen": {"cwd": 0.5},
    }
    md = render_sweep(res)
    assert "| method | weights x0.5 | weights x1 | chosen |" in md
    assert "| cwd | 1.50 | — | x0.5 |" in md
    assert "Undistilled student on val: 1.00; teacher 10.00" in md and "0.20 points" in md
    assert "1.5 min:" in md and "reused" not in md and "```bash\nyolokd sweep scales=[0.5,1]\n```" in md
    assert "2 row(s) reused from an earlier call" in render_sweep({**res, "reused_rows": 2})


def test_scale_tag():
    assert [scale_tag(s) for s in (0.25, 1.0, 4, 0.1)] == ["x0.25", "x1", "x4", "x0.1"]


def test_sweep_cli_keys_and_errors():
    mode, o = parse(["sweep", "scales=[0.5,2]", "methods=[cwd]", "min_gain=0", "epochs=2"])
    assert mode == "sweep" and o == {"scales": [0.5, 2], "methods": "[cwd]", "min_gain": 0, "epochs": 2}
    with pytest.raises(KDError, match="scales"):
        parse(["sweep", "sacles=[1,2]"])
    assert cli_main(["sweep", "combo=cwd+tar"]) == 2  # set by the sweep itself
    assert cli_main(["sweep", "scales=[0,1]"]) == 2
    assert cli_main(["sweep", "scales=[1,1]"]) == 2


def test_sweep_micro_end_to_end(tmp_path, tiny_data, teacher_pt):
    out = tmp_path / "sweep"
    res = run_sweep(
        preset="micro", project=str(out), data=str(tiny_data), teacher=str(teacher_pt), scales=[0.5, 1], methods="cwd"
    )
    saved = json.loads((out / "sweep.json").read_text())
    assert saved["table"].keys() == {"cwd"} and saved["table"]["cwd"].keys() == {"x0.5", "x1"}
    for cell in saved["table"]["cwd"].values():
        assert cell["n"] == 1 and 0.0 <= cell["mean"] <= 1.0
    assert saved["chosen"]["cwd"] in ("x0.5", "x1") and saved["val_split"] == "val"
    bench = json.loads((out / "results.json").read_text())
    assert [r["label"] for r in bench["rows"]] == ["student (no KD)", "cwd-x0.5", "cwd-x1"]
    assert bench["config"]["test_split"] == "val" and bench["config"]["builtin"] is False
    variant = resolve_method(str(out / "variants" / "cwd-x0.5.yaml"))
    assert variant[0].weight == 2.5 and res["command"].startswith("yolokd sweep preset=micro")
    assert MD_START not in (out / "sweep.md").read_text() and MD_END.startswith("<!--")


def test_publish_sweep_replaces_its_block_or_appends_a_section(tmp_path):
    md = tmp_path / "docs" / "BENCH.md"
    publish_sweep(md, "table one")  # a new file
    assert md.read_text().startswith("# Benchmarks") and "## Tuning sweep (val split)" in md.read_text()
    md.write_text(md.read_text() + "\nkept by hand\n")
    publish_sweep(md, "table two")
    text = md.read_text()
    assert "table two" in text and "table one" not in text and "kept by hand" in text
    assert text.count(MD_START) == 1 and text.count(MD_END) == 1
    assert cli_main(["sweep", "publish=True"]) == 2  # a path now, not a flag


def test_scaled_method_balance_variant_and_yaml_path(tmp_path):
    from yolokd.bench.sweep import balance_tag, method_name
    from yolokd.config import build_config

    p = scaled_method("crosskd", 1.0, tmp_path, balance=0.5)
    assert p.name == "crosskd-b0.5.yaml" and balance_tag(0.5) == "b0.5"
    cfg = build_config({"method": str(p)})
    assert [(t.name, t.weight, t.balance) for t in cfg.terms] == [("crosskd_cls", 1.0, 0.5), ("crosskd_box", 4.0, 0.5)]
    own = tmp_path / "own" / "crosskd-stage0.yaml"
    own.parent.mkdir()
    own.write_text("terms:\n  - {type: crosskd_cls, weight: 2.0, params: {stage: 0}}\n")
    q = scaled_method(str(own), 0.5, tmp_path)
    assert q.name == "crosskd-stage0-x0.5.yaml" and method_name(str(own)) == "crosskd-stage0"
    (spec,) = build_config({"method": str(q)}).terms
    assert (spec.weight, spec.params, spec.balance) == (1.0, {"stage": 0}, 0.0)
    with pytest.raises(KDError, match="balances must be numbers > 0"):
        scaled_method("cwd", 1.0, tmp_path, balance=0.0)
