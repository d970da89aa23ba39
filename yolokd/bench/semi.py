# yolokd, AGPL-3.0 License
"""The semi-supervised rows' targets (A-C, B', C' on a fraction of the labels, D and E on all, F = E + unlabeled)."""

from __future__ import annotations

from typing import Any

from yolokd.bench.stats import target_result

SEMI_TARGETS = {
    "recover": "C recovers >= 60% of the way from A to D, and C beats D",
    "extra": "F beats E by >= 2.0 mAP50-95 points on the mean and on every seed",
    "cost": "an unlabeled step costs <= one extra student step + one teacher forward (C vs B, F vs E)",
    "own": "With the teacher trained on the labelled fraction only: C' above B' on every seed",
}


def is_semi(row: dict[str, Any]) -> bool:
    """Whether a row is one of the semi-supervised rows A, B, C, B', C', F."""
    return str(row.get("id", "")).startswith("semi-")


def _tests(row: dict[str, Any] | None) -> dict[str, float]:
    """The row's test mAP50-95 per seed (finished seeds only)."""
    runs = (row or {}).get("runs") or {}
    return {s: r["test"]["map"] for s, r in runs.items() if r.get("ok")}


def _mean(values: dict[str, float]) -> float | None:
    """The mean of the values, or None."""
    return sum(values.values()) / len(values) if values else None


def _step(row: dict[str, Any] | None) -> float | None:
    """The row's mean seconds per iteration over its finished seeds."""
    steps = [(r.get("step") or {}).get("mean_s") for r in ((row or {}).get("runs") or {}).values() if r.get("ok")]
    steps = [s for s in steps if s]
    return sum(steps) / len(steps) if steps else None


def _differences(base: dict | None, row: dict | None) -> list[float]:
    """``row - base`` test mAP50-95 per seed that both rows finished, in seed order."""
    tb, tr = _tests(base), _tests(row)
    return [tr[s] - tb[s] for s in sorted(set(tb) & set(tr), key=int)]


def _points(diffs: list[float]) -> str:
    """Differences in signed points, comma-separated."""
    return ", ".join(f"{100 * x:+.2f}" for x in diffs)


def _target(key: str, met: bool | None, detail: str) -> dict[str, Any]:
    """The result of one of `SEMI_TARGETS` (`yolokd.bench.stats.target_result`)."""
    return target_result(SEMI_TARGETS[key], met, detail)


def recover_target(a: dict | None, c: dict | None, d: dict | None) -> dict[str, Any]:
    """(C - A) / (D - A) >= 0.6 and C > D, from the means over seeds.

    Examples:
        >>> row = lambda *m: {"runs": {str(i): {"ok": True, "test": {"map": v}} for i, v in enumerate(m)}}
        >>> recover_target(row(0.20), row(0.45), row(0.40))["detail"]
        'A 20.00, C 45.00, D 40.00 points: C recovers 125% of A -> D, C - D = +5.00'
    """
    ma, mc, md = (_mean(_tests(r)) for r in (a, c, d))
    if None in (ma, mc, md) or md == ma:
        return _target("recover", None, "not measured")
    share = (mc - ma) / (md - ma)
    detail = f"A {100 * ma:.2f}, C {100 * mc:.2f}, D {100 * md:.2f} points: C recovers {share:.0%} of A -> D, "
    return _target("recover", share >= 0.6 and mc > md, detail + f"C - D = {100 * (mc - md):+.2f}")


def extra_target(e: dict | None, f: dict | None) -> dict[str, Any]:
    """F - E >= 2.0 points on the mean and on every seed both rows finished.

    Examples:
        >>> row = lambda *m: {"runs": {str(i): {"ok": True, "test": {"map": v}} for i, v in enumerate(m)}}
        >>> extra_target(row(0.40, 0.42), row(0.43, 0.45))["detail"]
        'F - E per seed +3.00, +3.00; mean +3.00 points'
    """
    diffs = _differences(e, f)
    if not diffs:
        return _target("extra", None, "not measured")
    mean = sum(diffs) / len(diffs)
    detail = f"F - E per seed {_points(diffs)}; mean {100 * mean:+.2f} points"
    return _target("extra", mean >= 0.02 and min(diffs) >= 0.02, detail)


def own_target(b: dict | None, c: dict | None) -> dict[str, Any]:
    """C' - B' > 0 on every seed both rows finished (B', C': the teacher trained on the labelled fraction).

    Examples:
        >>> row = lambda *m: {"runs": {str(i): {"ok": True, "test": {"map": v}} for i, v in enumerate(m)}}
        >>> own_target(row(0.30, 0.32), row(0.33, 0.31))["detail"]
        "C' - B' per seed +3.00, -1.00 points"
    """
    diffs = _differences(b, c)
    if not diffs:
        return _target("own", None, "not measured")
    return _target("own", min(diffs) > 0, f"C' - B' per seed {_points(diffs)} points")


def cost_target(rows: dict[str, dict | None], teacher_forward_s: float | None, jobs: int) -> dict[str, Any]:
    """C's and F's seconds per iteration against B's and E's plus one student step (D's) and one teacher forward."""
    if jobs > 1:
        return _target("cost", None, "not measured: jobs>1 trained rows at once")
    d, tf = _step(rows["D"]), teacher_forward_s
    pairs = [(k, _step(rows[k]), _step(rows[base])) for k, base in (("C", "B"), ("F", "E"))]
    pairs = [(k, x, y) for k, x, y in pairs if x and y]
    if not pairs or not d or not tf:
        return _target("cost", None, "not measured")
    ok = all(x <= y + d + tf for _, x, y in pairs)
    detail = "; ".join(f"{k} {1000 * x:.0f} ms vs bound {1000 * (y + d + tf):.0f} ms" for k, x, y in pairs)
    return _target("cost", ok, detail)


def semi_targets(rows: list[dict[str, Any]], method: str, teacher_forward_s: float | None, jobs: int) -> list[dict]:
    """The semi-supervised targets (none without semi-supervised rows); E is the combination row of ``method``."""
    if not any(is_semi(r) for r in rows):
        return []
    by_id = {r["id"]: r for r in rows}
    plain = [r for r in rows if not is_semi(r)]
    named = {
        "A": by_id.get("semi-a"),
        "B": by_id.get("semi-b"),
        "C": by_id.get("semi-c"),
        "D": next((r for r in plain if r["kind"] == "student"), None),
        "E": next((r for r in plain if r["kind"] == "combo" and r["method"] == method), None),
        "F": by_id.get("semi-f"),
    }
    return [
        recover_target(named["A"], named["C"], named["D"]),
        extra_target(named["E"], named["F"]),
        cost_target(named, teacher_forward_s, jobs),
        own_target(by_id.get("semi-b-own"), by_id.get("semi-c-own")),
    ]
