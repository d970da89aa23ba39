# yolokd, AGPL-3.0 License
"""Gains over the undistilled student across benchmark runs, and each method's worst case.

A *cell* is one ``yolokd benchmark`` project: one look of the data with one teacher. A method's defaults are chosen by
its worst cell, the smallest mean gain over the undistilled student on the val split across looks and teachers, never
by the best mean on one cell and never on test. Run from the command line::

    python -m yolokd.bench.cells shapes=runs/short-shapes glyphs=runs/short-glyphs split=val

Each ``name=path`` is a project folder (or its ``results.json``); ``split=`` is ``val`` (default) or ``test``.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

from yolokd.config import KDError

__all__ = ["cell_gains", "format_cells", "load_cells", "main", "worst_cases"]

SPLITS = ("val", "test")


def _scores(row: dict[str, Any], split: str) -> dict[int, float]:
    """A row's mAP50-95 per seed on ``split``, in points, for the seeds that trained."""
    out = {}
    for seed, run in (row.get("runs") or {}).items():
        value = (run.get(split) or {}).get("map") if run.get("ok") else None
        if value is not None:
            out[int(seed)] = 100.0 * value
    return out


def cell_gains(results: dict[str, Any], split: str = "val") -> dict[str, Any]:
    """Per row of one benchmark's ``results.json``: the gain over the same seed's undistilled student, in points.

    Args:
        results (dict): A ``results.json`` of ``yolokd benchmark`` (its ``rows`` and ``teacher``).
        split (str): ``val`` or ``test``.

    Returns:
        (dict): ``teacher`` (the teacher's score), ``student`` (per seed), and ``rows``: per row label, ``gains`` per
            seed, ``mean`` (of the gains) and ``gap`` (the mean gain over the mean teacher-student gap, None when
            the teacher is not above the student).

    Examples:
        >>> run = lambda v: {"ok": True, "val": {"map": v}}
        >>> res = {"teacher": {"val": {"map": 0.5}}, "rows": [
        ...     {"kind": "student", "label": "student (no KD)", "runs": {"0": run(0.2), "1": run(0.3)}},
        ...     {"kind": "yolokd", "label": "cwd", "runs": {"0": run(0.25), "1": run(0.29)}}]}
        >>> g = cell_gains(res)["rows"]["cwd"]
        >>> {s: round(v, 6) for s, v in g["gains"].items()}, round(g["mean"], 6), round(g["gap"], 6)
        ({0: 5.0, 1: -1.0}, 2.0, 0.08)
    """
    if split not in SPLITS:
        raise KDError(f"split must be one of {SPLITS}, got {split!r}")
    rows = results.get("rows") or []
    base = next((r for r in rows if r.get("kind") == "student"), None)
    if base is None:
        raise KDError("this benchmark has no undistilled student row to compare with")
    student = _scores(base, split)
    teacher = (results.get("teacher", {}).get(split) or {}).get("map")
    teacher = None if teacher is None else 100.0 * teacher
    out: dict[str, Any] = {"teacher": teacher, "student": student, "rows": {}}
    for row in rows:
        if row is base:
            continue
        gains = {s: v - student[s] for s, v in _scores(row, split).items() if s in student}
        if not gains:
            continue
        mean = sum(gains.values()) / len(gains)
        s_mean = sum(student[s] for s in gains) / len(gains)
        gap = mean / (teacher - s_mean) if teacher is not None and teacher > s_mean else None
        out["rows"][row["label"]] = {"gains": gains, "mean": mean, "gap": gap}
    return out


def worst_cases(cells: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per row label: its mean gain in each cell, the worst cell, the worst seed, and the mean gap over the cells.

    Args:
        cells (dict): Cell name -> `cell_gains` output.

    Returns:
        (dict): Per label: ``means`` (cell -> mean gain), ``worst_cell`` ((cell, mean)), ``worst_seed``
            ((cell, seed, gain)), ``gap`` (the mean of the cells' gap fractions, None if one is missing) and
            ``complete`` (the row is in every cell).

    Examples:
        >>> a = {"rows": {"m": {"gains": {0: 1.0, 1: 3.0}, "mean": 2.0, "gap": 0.1}}}
        >>> b = {"rows": {"m": {"gains": {0: -0.5, 1: 1.5}, "mean": 0.5, "gap": 0.3}}}
        >>> w = worst_cases({"a": a, "b": b})["m"]
        >>> w["worst_cell"], w["worst_seed"], round(w["gap"], 6), w["complete"]
        (('b', 0.5), ('b', 0, -0.5), 0.2, True)
    """
    labels = list(dict.fromkeys(label for cell in cells.values() for label in cell["rows"]))
    out = {}
    for label in labels:
        present = {name: cell["rows"][label] for name, cell in cells.items() if label in cell["rows"]}
        means = {name: r["mean"] for name, r in present.items()}
        seeds = [(name, seed, g) for name, r in present.items() for seed, g in r["gains"].items()]
        gaps = [r["gap"] for r in present.values()]
        out[label] = {
            "means": means,
            "worst_cell": min(means.items(), key=lambda kv: kv[1]),
            "worst_seed": min(seeds, key=lambda x: x[2]),
            "gap": None if None in gaps else sum(gaps) / len(gaps),
            "complete": len(present) == len(cells),
        }
    return out


def _pts(x: float | None, sign: bool = True) -> str:
    """A number of points with one decimal (and a sign), or a dash."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    return f"{x:+.1f}" if sign else f"{x:.1f}"


def format_cells(cells: dict[str, dict[str, Any]], split: str = "val") -> str:
    """A markdown table: one line per row label, each cell's mean gain (per seed), the worst cell and worst seed."""
    worst = worst_cases(cells)
    names = list(cells)
    head = ["row", *[f"{n} mean (per seed)" for n in names], "worst cell", "worst seed", "gap fraction, mean"]
    lines = [
        f"Gain over the undistilled student, {split} mAP50-95 points; cells: "
        + ", ".join(f"{n} (teacher {_pts(c['teacher'], False)})" for n, c in cells.items()),
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for label, w in sorted(worst.items(), key=lambda kv: -kv[1]["worst_cell"][1]):
        per_cell = []
        for n in names:
            r = cells[n]["rows"].get(label)
            per_cell.append(
                "—"
                if r is None
                else f"{_pts(r['mean'])} ({', '.join(_pts(r['gains'][s]) for s in sorted(r['gains']))})"
            )
        cell, seed, gain = w["worst_seed"]
        incomplete = "" if w["complete"] else " (not in every cell)"
        gap = "—" if w["gap"] is None else f"{w['gap']:.2f}"
        lines.append(
            f"| {label} | "
            + " | ".join(per_cell)
            + f" | {w['worst_cell'][0]} {_pts(w['worst_cell'][1])}{incomplete} | {cell} seed {seed} {_pts(gain)}"
            + f" | {gap} |"
        )
    return "\n".join(lines)


def load_cells(specs: list[str]) -> tuple[dict[str, dict[str, Any]], str]:
    """Parse ``name=path`` arguments and ``split=``; return (cell name -> results.json contents, split)."""
    split, paths = "val", {}
    for arg in specs:
        key, sep, value = arg.partition("=")
        if not sep or not key or not value:
            raise KDError(f"expected name=path/to/project (or split=val|test), got {arg!r}")
        if key == "split":
            split = value
            continue
        path = Path(value)
        path = path / "results.json" if path.is_dir() else path
        if not path.is_file():
            raise KDError(f"{key}: no benchmark results at {path} (run yolokd benchmark project=... first)")
        paths[key] = path
    if not paths:
        raise KDError("give at least one cell as name=path/to/project")
    return {k: json.loads(p.read_text()) for k, p in paths.items()}, split


def main(argv: list[str] | None = None) -> int:
    """Print the gain table of ``name=project`` cells; a one-line error and exit code 2 on bad input."""
    try:
        results, split = load_cells(sys.argv[1:] if argv is None else argv)
        print(format_cells({k: cell_gains(v, split) for k, v in results.items()}, split))
    except KDError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
