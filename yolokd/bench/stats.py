# yolokd, AGPL-3.0 License
"""The benchmark's statistics: gap recovered, seed summaries, cost ratios, the combination choice and the targets.

Accuracy verdicts need a teacher-student gap above ``NOISE_FACTOR`` x the undistilled student's seed spread.
"""

from __future__ import annotations

import math
from typing import Any

# Per-seed metrics of a row; ``gap`` is the per-seed ratio (kept for reference: the table reports `Row gap_recovered`,
# computed from the means over seeds).
STAT_KEYS = (
    "val_map",
    "val_map50",
    "test_map",
    "test_map50",
    "gap",
    "step_ms",
    "x_student",
    "x_floor",
    "x_builtin",
    "maxrss_mib",
)
NOISE_FACTOR = 5.0  # a verdict needs a teacher-student gap > NOISE_FACTOR x the undistilled student's seed spread
# The regime the accuracy targets are meant for: a strong teacher, a student far below it, quiet seeds.
REGIME = {"teacher_min": 0.30, "student_max_frac": 0.5, "spread_max_frac": 1 / NOISE_FACTOR, "min_seeds": 3}
TARGET_NAMES = {
    "above": "every method above the undistilled student on every seed (min > student's max)",
    "half": "the best single method recovers >= half the gap (from the means)",
    "builtin": "the best single method beats the built-in by >= 2.0 mAP50-95 points",
    "cost_neck": "feature methods (teacher to its neck) <= 1.00x the floor per iteration",
    "cost_head": "head methods <= 1.05x the floor per iteration",
    "cost_builtin": "every yolokd row no slower per iteration than the built-in",
    "memory": "every yolokd row's peak memory no higher than the built-in's",
    "regime": "regime: teacher >= 30 points, student <= half the teacher, seed spread <= gap / 5, >= 3 seeds",
}


def gap_recovered(student_kd: float | None, student: float | None, teacher: float | None, eps: float = 1e-6):
    """Fraction of the teacher-student gap recovered: ``(student_kd - student) / (teacher - student)``.

    Args:
        student_kd (float | None): Metric of the distilled student.
        student (float | None): Metric of the undistilled student.
        teacher (float | None): Metric of the teacher on the same split.
        eps (float): Gaps smaller than this give None (the ratio is undefined).

    Examples:
        >>> gap_recovered(0.25, 0.0, 0.5)
        0.5
    """
    if student_kd is None or student is None or teacher is None or abs(teacher - student) < eps:
        return None
    return (student_kd - student) / (teacher - student)


def gap_from_means(kd: list[float | None], student: list[float | None], teacher: float | None) -> float | None:
    """Gap recovered from the means over the paired seeds: ``(mean(kd) - mean(student)) / (teacher - mean(student))``.

    Only seeds where both rows have a value count. Unlike the mean of per-seed ratios, a seed whose student lands near
    the teacher cannot blow it up; None without a paired seed or with a zero gap.

    Examples:
        >>> round(gap_from_means([0.30, 0.30], [0.10, 0.30], 0.50), 4)  # the mean of per-seed ratios is 0.25
        0.3333
    """
    pairs = [(k, s) for k, s in zip(kd, student) if k is not None and s is not None]
    if not pairs:
        return None
    return gap_recovered(sum(k for k, _ in pairs) / len(pairs), sum(s for _, s in pairs) / len(pairs), teacher)


def summarize(values: list[float | None]) -> dict[str, float] | None:
    """Mean, sample standard deviation, min, max and count of the finite values (None when there are none).

    Examples:
        >>> summarize([1.0, 3.0, None])
        {'mean': 2.0, 'std': 1.4142135623730951, 'min': 1.0, 'max': 3.0, 'n': 2}
    """
    v = [float(x) for x in values if x is not None and math.isfinite(float(x))]
    if not v:
        return None
    mean = sum(v) / len(v)
    std = math.sqrt(sum((x - mean) ** 2 for x in v) / (len(v) - 1)) if len(v) > 1 else 0.0
    return {"mean": mean, "std": std, "min": min(v), "max": max(v), "n": len(v)}


def plateau(curve: list[float] | None, tail: float = 0.2, tol: float = 0.01) -> dict[str, Any] | None:
    """Whether a validation curve stopped improving: its last ``tail`` of epochs all within ``tol`` of its best.

    Args:
        curve (list[float] | None): Validation mAP50-95 after each epoch (fractions), in order.
        tail (float): The fraction of the last epochs that must stay near the best (at least one epoch).
        tol (float): How far below the best they may be (0.01 = 1 mAP point).

    Returns:
        (dict | None): ``epochs``, ``best``, ``best_epoch`` (1-based), ``last`` and ``converged``; None without a curve.

    Examples:
        >>> plateau([0.1, 0.3, 0.40, 0.41, 0.405])["converged"]  # the last fifth: one epoch, 0.5 points below the best
        True
    """
    if not curve:
        return None
    best = max(curve)
    n_tail = max(1, round(tail * len(curve)))
    return {
        "epochs": len(curve),
        "best": best,
        "best_epoch": curve.index(best) + 1,
        "last": curve[-1],
        "converged": min(curve[-n_tail:]) >= best - tol,
    }


def epochs_to_reach(curve: list[float] | None, value: float | None) -> int | None:
    """The first epoch (1-based) at which ``curve`` reaches ``value``; None if it never does or either is missing.

    Examples:
        >>> epochs_to_reach([0.1, 0.2, 0.3], 0.2), epochs_to_reach([0.1, 0.2], 0.5) is None
        (2, True)
    """
    if not curve or value is None:
        return None
    return next((i + 1 for i, v in enumerate(curve) if v >= value), None)


def cost_ratios(step_s: float | None, student_step_s: float | None, teacher_forward_s: float | None):
    """Time per iteration relative to the undistilled student's and to the floor (student step + teacher forward).

    Returns ``(x_student, x_floor)``, None where an input is missing.

    Examples:
        >>> cost_ratios(1.5, 1.0, 0.25)
        (1.5, 1.2)
    """
    if not step_s or not student_step_s:
        return None, None
    x_student = step_s / student_step_s
    x_floor = step_s / (student_step_s + teacher_forward_s) if teacher_forward_s else None
    return x_student, x_floor


def choose_combo(val_scores: dict[str, float | None], k: int = 2) -> str | None:
    """Join the ``k`` best methods by validation score with '+' (None with fewer than ``k`` scored methods).

    Examples:
        >>> choose_combo({"cwd": 0.2, "hint": 0.3, "tar": 0.1, "fgbg": None})
        'hint+cwd'
    """
    ranked = sorted((m for m, v in val_scores.items() if v is not None), key=lambda m: -val_scores[m])
    return "+".join(ranked[:k]) if len(ranked) >= k else None


def seed_metrics(
    run: dict | None, student: dict | None, teacher_test: float | None, builtin: dict | None = None
) -> dict[str, Any]:
    """Per-seed `STAT_KEYS` of one row from its process's result, against the same seed's undistilled student.

    Args:
        run (dict | None): The row's result (``ok``, ``val``, ``test``, ``step``, ``maxrss_mib``...).
        student (dict | None): The undistilled student's result for the same seed (it holds the teacher forward).
        teacher_test (float | None): Teacher mAP50-95 on the test split.
        builtin (dict | None): The built-in distillation's result for the same seed (``x_builtin``).
    """
    out: dict[str, Any] = dict.fromkeys(STAT_KEYS)
    if not run or not run.get("ok"):
        if run:
            out["maxrss_mib"] = run.get("maxrss_mib")
        return out
    out.update(
        val_map=run["val"]["map"],
        val_map50=run["val"]["map50"],
        test_map=run["test"]["map"],
        test_map50=run["test"]["map50"],
        maxrss_mib=run.get("maxrss_mib"),
    )
    step = (run.get("step") or {}).get("mean_s")
    out["step_ms"] = None if step is None else step * 1000
    if student and student.get("ok"):
        out["gap"] = gap_recovered(out["test_map"], student["test"]["map"], teacher_test)
        tf = (student.get("teacher_forward") or {}).get("mean_s")
        out["x_student"], out["x_floor"] = cost_ratios(step, (student.get("step") or {}).get("mean_s"), tf)
    builtin_step = (builtin or {}).get("step", {}).get("mean_s") if (builtin or {}).get("ok") else None
    if step and builtin_step:
        out["x_builtin"] = step / builtin_step
    return out


def summarize_row(
    row: dict[str, Any],
    student_runs: dict,
    teacher_test: float | None,
    seeds: list[int],
    builtin_runs: dict | None = None,
) -> dict:
    """Add ``per_seed`` metrics, their ``summary`` and ``gap_recovered`` (from the means) to a row dict."""
    runs, bi = row["runs"], builtin_runs or {}
    per_seed = {
        str(s): seed_metrics(runs.get(str(s)), student_runs.get(str(s)), teacher_test, bi.get(str(s))) for s in seeds
    }
    row["per_seed"] = per_seed
    row["summary"] = {k: summarize([m[k] for m in per_seed.values()]) for k in STAT_KEYS}
    student_test = [((student_runs.get(str(s)) or {}).get("test") or {}).get("map") for s in seeds]
    ok_student = [t if (student_runs.get(str(s)) or {}).get("ok") else None for s, t in zip(seeds, student_test)]
    row["gap_recovered"] = gap_from_means([m["test_map"] for m in per_seed.values()], ok_student, teacher_test)
    row["seeds_ok"] = sum(bool((runs.get(str(s)) or {}).get("ok")) for s in seeds)
    row["errors"] = sorted({r.get("error") for r in runs.values() if r and not r.get("ok") and r.get("error")})
    return row


def target_result(name: str, met: bool | None, detail: str, status: str | None = None) -> dict[str, Any]:
    """One target's result: its ``target`` text, ``met`` True/False/None and its ``status`` word for the report."""
    word = {True: "met", False: "NOT met", None: "not measured"}[met]
    return {"target": name, "met": met, "status": status or word, "detail": detail}


def _target(key: str, met: bool | None, detail: str, status: str | None = None) -> dict[str, Any]:
    """The result of one of `TARGET_NAMES` (`target_result`)."""
    return target_result(TARGET_NAMES[key], met, detail, status)


def seed_noise(student: dict | None, teacher_test: float | None) -> dict[str, Any]:
    """The teacher-student gap, the undistilled student's seed spread, and whether accuracy verdicts can be given.

    Returns ``gap``, ``spread``, ``n`` (seeds) and ``refusal``: None when a verdict can be given, else the reason.

    Examples:
        >>> row = {"summary": {"test_map": {"mean": 0.2, "min": 0.1, "max": 0.3, "n": 2}}}
        >>> seed_noise(row, 1.5)["refusal"] is None  # gap 1.3 > 5 x 0.2
        True
    """
    s = None if student is None else student["summary"].get("test_map")
    if s is None or teacher_test is None:
        return {"gap": None, "spread": None, "n": 0, "refusal": "not measured"}
    gap, spread = teacher_test - s["mean"], s["max"] - s["min"]
    out = {"gap": gap, "spread": spread, "n": s["n"], "refusal": None}
    if s["n"] < 2:
        out["refusal"] = "no verdict: one seed, so the seed noise (the undistilled student's spread) is not measured"
    elif not gap > NOISE_FACTOR * spread:
        out["refusal"] = (
            f"no verdict: the teacher-student gap {100 * gap:.2f} points is within the seed noise {100 * spread:.2f} "
            f"points (the undistilled student's spread over {s['n']} seeds; a verdict needs gap > "
            f"{NOISE_FACTOR:g} x spread = {100 * NOISE_FACTOR * spread:.2f})"
        )
    return out


def _mean(row: dict | None, key: str) -> float | None:
    """The mean over seeds of one summary key, or None."""
    s = None if row is None else row["summary"].get(key)
    return None if s is None else s["mean"]


def _above_target(kd: list[dict], base: dict | None) -> dict[str, Any]:
    """Every distilled row (methods and combination) above the undistilled student on every seed."""
    if _mean(base, "test_map") is None or not kd:
        return _target("above", None, "not measured")
    top = base["summary"]["test_map"]["max"]
    losers = [r["label"] for r in kd if r["summary"]["test_map"]["min"] <= top]
    detail = f"not above on every seed: {', '.join(losers)}" if losers else "all above on every seed"
    detail += f"; student's max {100 * top:.2f} points"
    return _target("above", not losers, detail)


def _half_gap_target(best: dict | None) -> dict[str, Any]:
    """The best single method recovers at least half the gap, from the means over seeds."""
    gap = None if best is None else best.get("gap_recovered")
    if gap is None:
        return _target("half", None, "not measured")
    return _target("half", gap >= 0.5, f"{best['label']}: {gap:.2f}")


def _builtin_target(best: dict | None, builtin: dict | None) -> dict[str, Any]:
    """The best single method beats Ultralytics' built-in distillation by at least 2.0 points."""
    bi = _mean(builtin, "test_map")
    if best is None or bi is None:
        return _target("builtin", None, "built-in not measured" if best is not None else "not measured")
    d = 100 * (_mean(best, "test_map") - bi)
    return _target("builtin", d >= 2.0, f"{best['label']} - built-in = {d:+.2f} points")


def _cost_targets(kd: list[dict], builtin: dict | None, jobs: int = 1) -> list[dict[str, Any]]:
    """The cost targets: x floor per kind of method (``neck_only``: feature), step and memory vs the built-in."""
    keys = ("cost_neck", "cost_head", "cost_builtin", "memory")
    if jobs > 1:
        return [_target(k, None, f"not measured: jobs={jobs} trained rows at once") for k in keys]
    out = []
    for key, neck, limit in (("cost_neck", True, 1.00), ("cost_head", False, 1.05)):
        rows = {r["label"]: _mean(r, "x_floor") for r in kd if bool(r.get("neck_only")) == neck}
        measured = {k: v for k, v in rows.items() if v is not None}
        if not measured:
            out.append(_target(key, None, "not measured" if rows else "no such row"))
            continue
        over = [k for k, v in measured.items() if v > limit]
        detail = ", ".join(f"{k} {v:.2f}x" for k, v in measured.items())
        out.append(_target(key, not over, detail))
    for key, stat, unit in (("cost_builtin", "step_ms", "ms"), ("memory", "maxrss_mib", "MiB")):
        ref = None if builtin is None else builtin["summary"].get(stat)
        if ref is None:
            out.append(_target(key, None, "built-in not measured"))
            continue
        pick = "mean" if stat == "step_ms" else "max"
        measured = {r["label"]: r["summary"][stat][pick] for r in kd if r["summary"].get(stat) is not None}
        if not measured:
            out.append(_target(key, None, "not measured"))
            continue
        over = {k: v for k, v in measured.items() if v > ref[pick]}
        detail = f"built-in {ref[pick]:.0f} {unit}; " + (
            "above: " + ", ".join(f"{k} {v:.0f}" for k, v in over.items()) if over else "none above"
        )
        out.append(_target(key, not over, detail))
    return out


def _regime_target(noise: dict[str, Any], base: dict | None, teacher_test: float | None) -> dict[str, Any]:
    """Whether the run is in the regime the accuracy targets are meant for, each condition with its numbers."""
    student = _mean(base, "test_map")
    if student is None or teacher_test is None:
        return _target("regime", None, "not measured")
    r = REGIME
    checks = [
        (teacher_test >= r["teacher_min"], f"teacher {100 * teacher_test:.1f} (>= {100 * r['teacher_min']:.0f})"),
        (
            student <= r["student_max_frac"] * teacher_test,
            f"student {100 * student:.2f} (<= {100 * r['student_max_frac'] * teacher_test:.2f})",
        ),
        (
            noise["spread"] <= r["spread_max_frac"] * noise["gap"],
            f"spread {100 * noise['spread']:.2f} (<= gap {100 * noise['gap']:.2f} / {NOISE_FACTOR:g} = "
            f"{100 * r['spread_max_frac'] * noise['gap']:.2f})",
        ),
        (noise["n"] >= r["min_seeds"], f"{noise['n']} seed(s) (>= {r['min_seeds']})"),
    ]
    detail = "; ".join(f"{text}: {'yes' if ok else 'no'}" for ok, text in checks) + " (mAP50-95 points on test)"
    return _target("regime", all(ok for ok, _ in checks), detail)


def check_targets(rows: list[dict], teacher_test: float | None, jobs: int = 1) -> list[dict[str, Any]]:
    """The project's targets (`TARGET_NAMES`) against the summarised rows: met, not met or not measurable (None).

    The accuracy targets get ``status`` 'no verdict' when the gap is within `NOISE_FACTOR` x the seed spread.

    Args:
        rows (list[dict]): Rows summarised by `summarize_row`.
        teacher_test (float | None): Teacher mAP50-95 on the test split (None: no accuracy verdict).
        jobs (int): Rows trained at once; above 1 the cost targets are not measured.

    Returns:
        (list[dict]): ``target``, ``met``, ``status`` and ``detail`` per target.
    """
    base = next((r for r in rows if r["kind"] == "student"), None)
    builtin = next((r for r in rows if r["kind"] == "builtin"), None)
    kd = [r for r in rows if r["kind"] in {"yolokd", "combo"} and _mean(r, "test_map") is not None]
    single = [r for r in kd if r["kind"] == "yolokd"]
    best = max(single, key=lambda r: _mean(r, "test_map")) if single else None
    accuracy = [_above_target(kd, base), _half_gap_target(best), _builtin_target(best, builtin)]
    noise = seed_noise(base, teacher_test)
    if noise["refusal"] is not None:
        status = "no verdict" if noise["refusal"].startswith("no verdict") else "not measured"
        accuracy = [{**t, "met": None, "status": status, "detail": noise["refusal"]} for t in accuracy]
    return [*accuracy, *_cost_targets(kd, builtin, jobs), _regime_target(noise, base, teacher_test)]
