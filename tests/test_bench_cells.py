# yolokd, AGPL-3.0 License
"""Gains across benchmark cells and the worst case (`yolokd.bench.cells`), against hand-computed values."""

from __future__ import annotations

import json

import pytest

from yolokd.bench import cells
from yolokd.config import KDError


def _run(val: float, test: float, ok: bool = True) -> dict:
    return {"ok": ok, "val": {"map": val}, "test": {"map": test}}


def _results(teacher: float, student: list[float], rows: dict[str, list[float]]) -> dict:
    """A results.json with val = test scores (fractions), seeds 0..n-1."""
    out = [{"kind": "student", "label": "student (no KD)", "runs": {str(i): _run(v, v) for i, v in enumerate(student)}}]
    for label, vals in rows.items():
        out.append({"kind": "yolokd", "label": label, "runs": {str(i): _run(v, v) for i, v in enumerate(vals)}})
    return {"teacher": {"val": {"map": teacher}, "test": {"map": teacher}}, "rows": out}


def test_cell_gains_per_seed_mean_and_gap():
    res = _results(0.60, [0.40, 0.30, 0.50], {"a": [0.42, 0.33, 0.49]})
    g = cells.cell_gains(res, "test")
    a = g["rows"]["a"]
    assert a["gains"] == pytest.approx({0: 2.0, 1: 3.0, 2: -1.0})
    assert a["mean"] == pytest.approx(4.0 / 3.0)
    assert a["gap"] == pytest.approx((4.0 / 3.0) / (60.0 - 40.0))  # student mean 40 points
    assert g["teacher"] == pytest.approx(60.0)


def test_cell_gains_skips_failed_seeds_and_compares_like_with_like():
    res = _results(0.60, [0.40, 0.30], {"a": [0.45, 0.90]})
    res["rows"][1]["runs"]["1"]["ok"] = False  # seed 1 of the distilled row failed: only seed 0 counts
    a = cells.cell_gains(res)["rows"]["a"]
    assert a["gains"] == pytest.approx({0: 5.0})
    assert a["gap"] == pytest.approx(5.0 / 20.0)  # against seed 0's student only


def test_cell_gains_no_gap_below_a_weak_teacher():
    a = cells.cell_gains(_results(0.20, [0.40], {"a": [0.38]}))["rows"]["a"]
    assert a["mean"] == pytest.approx(-2.0)
    assert a["gap"] is None


def test_worst_cases_across_cells():
    c1 = cells.cell_gains(_results(0.6, [0.4, 0.4], {"a": [0.45, 0.43], "b": [0.41, 0.41]}))
    c2 = cells.cell_gains(_results(0.6, [0.4, 0.4], {"a": [0.39, 0.47], "b": [0.42, 0.42]}))
    w = cells.worst_cases({"one": c1, "two": c2})
    assert w["a"]["means"] == pytest.approx({"one": 4.0, "two": 3.0})
    assert w["a"]["worst_cell"] == ("two", pytest.approx(3.0))
    assert w["a"]["worst_seed"] == ("two", 0, pytest.approx(-1.0))
    assert w["b"]["worst_cell"] == ("one", pytest.approx(1.0))
    assert w["b"]["gap"] == pytest.approx((1.0 / 20 + 2.0 / 20) / 2)
    table = cells.format_cells({"one": c1, "two": c2})
    lines = [line for line in table.splitlines() if line.startswith("| a ") or line.startswith("| b ")]
    assert lines[0].startswith("| a | +4.0 (+5.0, +3.0) | +3.0 (-1.0, +7.0) | two +3.0 | two seed 0 -1.0 | 0.17 |")
    assert lines[1].startswith("| b |")  # sorted by the worst cell, best first


def test_a_row_missing_from_a_cell_is_flagged():
    c1 = cells.cell_gains(_results(0.6, [0.4], {"a": [0.45], "builtin": [0.38]}))
    c2 = cells.cell_gains(_results(0.6, [0.4], {"a": [0.41]}))
    w = cells.worst_cases({"one": c1, "two": c2})
    assert w["a"]["complete"] and not w["builtin"]["complete"]
    assert "(not in every cell)" in cells.format_cells({"one": c1, "two": c2})


def test_main_reads_projects_and_refuses_in_one_line(tmp_path, capsys):
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "results.json").write_text(json.dumps(_results(0.6, [0.4], {"a": [0.45]})))
    assert cells.main([f"c={tmp_path / 'p'}", "split=test"]) == 0
    assert "| a | +5.0 (+5.0) |" in capsys.readouterr().out
    for bad in ([f"c={tmp_path / 'missing'}"], ["nonsense"], [], [f"c={tmp_path / 'p'}", "split=train"]):
        assert cells.main(bad) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1


def test_no_undistilled_row_is_an_error():
    res = _results(0.6, [0.4], {})
    res["rows"][0]["kind"] = "yolokd"
    with pytest.raises(KDError, match="no undistilled student"):
        cells.cell_gains(res)
