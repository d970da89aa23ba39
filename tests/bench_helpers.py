# yolokd, AGPL-3.0 License
"""Hand-made benchmark rows (the results of row processes) for the bench tests."""

from __future__ import annotations

from yolokd.bench.stats import summarize_row


def fake_run(test_map, step, val_map=None, tf=None):
    """A finished row process's result with these metrics."""
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


def fake_rows(kd_maps=(0.28, 0.30), builtin_maps=(0.25, 0.27), kd_step=1.3, student_maps=(0.20, 0.22), teacher=0.40):
    """Summarised rows: the student, the built-in, cwd (kd_maps per seed) and a failed tar row."""
    seeds = list(range(len(student_maps)))
    student = {"label": "student (no KD)", "kind": "student", "method": None}
    student["runs"] = {str(i): fake_run(m, 1.0, tf=0.25) for i, m in enumerate(student_maps)}
    builtin = {"label": "ultralytics dis=6", "kind": "builtin", "method": None}
    builtin["runs"] = {str(i): fake_run(m, 1.4) for i, m in enumerate(builtin_maps)}
    cwd = {"label": "cwd", "kind": "yolokd", "method": "cwd", "neck_only": True}
    cwd["runs"] = {str(i): fake_run(m, kd_step) for i, m in enumerate(kd_maps)}
    broken = {"label": "tar", "kind": "yolokd", "method": "tar"}
    broken["runs"] = {str(i): {"ok": False, "error": "RuntimeError: boom | bad" if i == 0 else "x"} for i in seeds}
    rows = [student, builtin, cwd, broken]
    for r in rows:
        summarize_row(r, student["runs"], teacher, seeds, builtin["runs"])
    return rows
