# yolokd, AGPL-3.0 License
"""``yolokd benchmark``: yolokd's methods side by side with Ultralytics' built-in distillation, accuracy and cost.

One run trains (or reuses) a teacher, then, for every seed and with the same data, epochs and hyper-parameters: the
student without distillation, the student with Ultralytics' built-in distillation (``distill_model=teacher.pt``,
``dis=6``: a score-weighted L2 on the neck features), the student with every yolokd method, and a combination of two
methods (by default the two best single methods on the VALIDATION split). Every training runs in its own process
(``python -m yolokd.benchmark --row spec.json``) so its peak memory is its own and a crash costs one row only.

Each final student is evaluated on the val split (used for choices such as the combination) and on the test split
(the reported one). Cost is measured in the same run: the mean wall time of a training iteration (between the
``on_train_batch_start`` and ``on_train_batch_end`` callbacks, without the first epoch and the first iterations of
every epoch) relative to the undistilled student's, and relative to the floor: the undistilled step plus one teacher
forward (timed in the undistilled row's process: eval, ``no_grad``, same batch size and image size).

Outputs in ``project``: ``results.json``, ``results.md`` and ``plot.png`` (test mAP50-95 against cost); with
``publish=True`` also ``BENCHMARKS.md`` at the repository root and ``benchmarks/<preset>.png``.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
import traceback
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ultralytics import __version__ as ULTRALYTICS_VERSION
from ultralytics.utils import DEFAULT_CFG_DICT, LOGGER, TQDM, colorstr

from yolokd import __version__
from yolokd.config import KD_DEFAULTS, KDError, available_methods, resolve_method, suggest
from yolokd.demo import resolve_model, train_teacher

PREFIX = colorstr("yolokd: ")

# Every benchmark key with its default (the ``cpu`` preset); any other key must be an Ultralytics train argument, and
# is passed to every training (teacher and students).
BENCH_DEFAULTS: dict[str, Any] = {
    "preset": "cpu",  # (str) cpu | gpu | micro: a named set of the values below; any key given overrides it
    "data": None,  # (str, optional) a data.yaml; None generates the built-in synthetic set (n_train, n_val, n_test)
    "n_train": 400,  # (int) synthetic training images
    "n_val": 150,  # (int) synthetic validation images (the split used for choices: combination, defaults)
    "n_test": 150,  # (int) synthetic test images (the reported split)
    "data_seed": 0,  # (int) seed of the synthetic data set
    "nc": 6,  # (int) classes of the synthetic data set (1-8)
    "max_objects": 8,  # (int) most objects per synthetic image
    "imgsz": 96,  # (int) training and evaluation image size (also the synthetic images' size)
    "batch": 8,  # (int) batch size (the cpu preset also sets nbs=batch: one optimizer step per batch)
    "epochs": 7,  # (int) student epochs, every row
    "teacher_epochs": 20,  # (int) teacher epochs (the teacher is reused when its stamp matches)
    "teacher_model": "yolov8n.yaml",  # (str) teacher model to train when teacher= is not given
    "teacher": None,  # (str, optional) a trained teacher .pt to reuse instead of training one
    "student_model": "yolov8-pico",  # (str) student model; yolov8-pico = YOLOv8 layers at width 0.125
    "seeds": [0, 1],  # (list[int]) training seeds; every row is trained once per seed
    "methods": None,  # (list[str], optional) yolokd methods; None = every built-in method (yolokd methods)
    "combo": "auto",  # (str, optional) 'auto' = the two best methods on the val split joined by '+'; 'a+b'; None = no
    "builtin": True,  # (bool) include Ultralytics' built-in distillation (distill_model=teacher.pt, dis=...)
    "dis": 6.0,  # (float) weight of Ultralytics' built-in distillation loss (its default)
    "val_split": "val",  # (str) split for choices (combination)
    "test_split": "test",  # (str) reported split
    "weights": "last",  # (str) last | best: which checkpoint of each row is evaluated
    "teacher_batches": 30,  # (int) batches over which the teacher forward is timed (>= 10)
    "timeout": None,  # (float, optional) seconds after which one row's process is stopped (reported as an error)
    "project": "runs/yolokd-benchmark",  # (str) output folder
    "publish": True,  # (bool) also write BENCHMARKS.md at the repository root and benchmarks/<preset>.png
    "reuse": False,  # (bool) keep rows an earlier run in this project finished with the same spec (arguments, terms)
}

PRESETS: dict[str, dict[str, Any]] = {
    # 2 CPU cores: the whole table (8 rows x 2 seeds + a 20-epoch teacher) measured at 27.6 minutes wall (rows of
    # 62-64 s undistilled, 84-98 s distilled; the teacher 4 minutes). 96 px and batch 8 give twice the optimizer
    # steps of 128 px / batch 16 in the same time: a pico student needs a few hundred steps to leave mAP 0.
    "cpu": {},
    # For GPU users (never run on the project's CPU machines): COCO, a pretrained YOLOv8x teacher, a YOLOv8s student
    # from scratch. COCO has no labelled test split, so val doubles as test (the combination choice is then optimistic).
    "gpu": {
        "data": "coco.yaml",
        "imgsz": 640,
        "batch": 16,
        "epochs": 100,
        "teacher": "yolov8x.pt",
        "student_model": "yolov8s.yaml",
        "test_split": "val",
        "teacher_batches": 50,
    },
    # A smoke test (tests and a first try): seconds per row, numbers meaningless.
    "micro": {
        "n_train": 16,
        "n_val": 8,
        "n_test": 8,
        "imgsz": 64,
        "batch": 8,
        "epochs": 1,
        "teacher_epochs": 1,
        "seeds": [0],
        "methods": ["cwd"],
        "combo": None,
        "teacher_batches": 10,
        "publish": False,
    },
}
# Ultralytics arguments each preset changes (any can be overridden): short CPU runs use one warm-up epoch, skip the
# per-epoch validation (each row is evaluated once at the end, on both splits) and the plots.
PRESET_TRAIN: dict[str, dict[str, Any]] = {
    # AdamW at lr0=0.004 instead of optimizer=auto (AdamW at 0.001 for 6 classes and few steps): in a check run the
    # undistilled pico student reached val mAP50-95 1.52 points after 7 epochs (AdamW at 0.01: 1.04, SGD at 0.02:
    # 0.56), against 0.33-0.56 with auto in an earlier recorded run, so the table compares students off mAP 0.
    "cpu": {"warmup_epochs": 1.0, "val": False, "plots": False, "optimizer": "AdamW", "lr0": 0.004},
    "gpu": {},
    "micro": {"warmup_epochs": 1.0, "val": False, "plots": False, "workers": 0},
}
NBS_FOLLOWS_BATCH = {"cpu", "micro"}  # nbs=batch as the demo does, unless nbs= is given
# Ultralytics arguments the benchmark sets itself, with the key to use instead.
RESERVED = {
    "model": "student_model= / teacher_model=",
    "seed": "seeds=[...]",
    "name": "project=",
    "exist_ok": "project=",
    "distill_model": "builtin=True (the teacher is teacher= or the trained one)",
    "resume": "a new run",
    "split": "val_split= / test_split=",
    "mode": "yolokd benchmark",
    "task": "a detection data set",
}
STAT_KEYS = ("val_map", "val_map50", "test_map", "test_map50", "gap", "step_ms", "x_student", "x_floor", "maxrss_mib")
MD_START, MD_END = "<!-- yolokd-benchmark:start (written by yolokd benchmark) -->", "<!-- yolokd-benchmark:end -->"
HANDWRITTEN = """## How to read / what was tried

- Rows: `student (no KD)` is the student trained alone; `ultralytics dis=6` is Ultralytics' built-in distillation
  (`distill_model=teacher.pt`, a score-weighted L2 on the neck features); the others are yolokd methods (`method=`)
  and a combination `a+b` of the two best single methods on the val split. The table reports the test split. Every
  row uses the same data, seeds, epochs and hyper-parameters; cells are `mean (min–max)` over the seeds.
- Gap recovered = (student_kd - student) / (teacher - student) on test mAP50-95, per seed against the same seed's
  undistilled student; 1 means the student reached the teacher. It is noisy when the gap is small.
- Cost: mean wall time of one training iteration (callbacks `on_train_batch_start` to `on_train_batch_end`, data
  loading outside; first epoch and first 3 iterations of every epoch left out), measured in the same run.
  `x floor` divides by the undistilled step plus one teacher forward (eval, no_grad, same batch and size), the least
  any feature distillation can cost; the target is <= 1.10. Both are noisy by several percent on a shared CPU.
- Peak memory is the row process's own peak resident size (`VmHWM`): `ru_maxrss` was tried first, but a child
  process reports at least its parent's size at the fork (a child of a 300 MB process reported 312 MB).
- The cpu preset is sized for 40 minutes on 2 cores: 96 px and batch 8 (nbs 8) give twice the optimizer steps of
  128 px / batch 16 in the same time, and every training (teacher and students) uses AdamW at `lr0=0.004` instead of
  Ultralytics' `optimizer=auto` (which picks AdamW at 0.001 for 6 classes and few steps): see "What was tried".
  7 epochs (350 steps) are early training on a toy data set, not converged COCO accuracy (`preset=gpu` is that
  setting). The seed spread is wide; differences smaller than it are ties.
- Method weights: the papers' values or the documented choices in `cfg/methods/`, then one factor per method chosen
  by `yolokd sweep` on the val split (below); the test split was not looked at for any choice.
"""


# ---------------------------------------------------------------------------------------------------- pure helpers
def gap_recovered(student_kd: float | None, student: float | None, teacher: float | None, eps: float = 1e-6):
    """Fraction of the teacher-student gap a distilled student recovers.

    Args:
        student_kd (float | None): Metric of the distilled student.
        student (float | None): Metric of the undistilled student.
        teacher (float | None): Metric of the teacher on the same split.
        eps (float): Gaps smaller than this (teacher == student) give None: the ratio is undefined.

    Returns:
        (float | None): ``(student_kd - student) / (teacher - student)``, or None.

    Examples:
        >>> gap_recovered(0.25, 0.0, 0.5)
        0.5
        >>> gap_recovered(0.3, 0.2, 0.2) is None
        True
    """
    if student_kd is None or student is None or teacher is None or abs(teacher - student) < eps:
        return None
    return (student_kd - student) / (teacher - student)


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


def cost_ratios(step_s: float | None, student_step_s: float | None, teacher_forward_s: float | None):
    """Time per iteration relative to the undistilled student's and to the floor (student step + teacher forward).

    Args:
        step_s (float | None): Mean iteration time of the row.
        student_step_s (float | None): Mean iteration time of the undistilled student (same seed).
        teacher_forward_s (float | None): Mean teacher forward time at the same batch size and image size.

    Returns:
        (tuple[float | None, float | None]): ``(x_student, x_floor)``; None where an input is missing.

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


def fmt_stat(s: dict[str, float] | None, scale: float = 1.0, digits: int = 1) -> str:
    """Format a `summarize` dict as ``mean (min-max)``, or just ``mean`` for one value; ``—`` for None.

    Examples:
        >>> fmt_stat({"mean": 0.2, "std": 0.01, "min": 0.19, "max": 0.21, "n": 2}, scale=100)
        '20.0 (19.0–21.0)'
    """
    if s is None:
        return "—"
    f = f"{{:.{digits}f}}"
    mean = f.format(s["mean"] * scale)
    if s["n"] < 2:
        return mean
    return f"{mean} ({f.format(s['min'] * scale)}–{f.format(s['max'] * scale)})"


def _as_list(value: Any, key: str) -> list:
    """Accept a list/tuple, a single value, or a string such as '[a,b]' / 'a,b' (the CLI's unquoted lists)."""
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, str):
        return [p.strip().strip("'\"") for p in value.strip().strip("[]").split(",") if p.strip()]
    if value is None:
        raise KDError(f"{key} must be a list, e.g. {key}=[0,1]")
    return [value]


def _pos_int(cfg: dict[str, Any], key: str, minimum: int = 1) -> None:
    """Check that ``cfg[key]`` is an int >= ``minimum``."""
    v = cfg[key]
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise KDError(f"{key} must be an integer >= {minimum}, got {v!r}")


def merge_config(overrides: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Merge the preset and the overrides, validate them, and split off the Ultralytics train arguments.

    Args:
        overrides (dict): Benchmark keys (`BENCH_DEFAULTS`) and Ultralytics train arguments.

    Returns:
        (tuple[dict, dict]): The benchmark configuration and the Ultralytics arguments for every training.

    Raises:
        KDError: For an unknown preset or key, a key the benchmark sets itself, or a value of the wrong type.
    """
    preset = overrides.get("preset", BENCH_DEFAULTS["preset"])
    if preset not in PRESETS:
        raise KDError(f"unknown preset {preset!r}.{suggest(preset, PRESETS)} Available: {sorted(PRESETS)}")
    for k in overrides:
        if k in RESERVED:
            raise KDError(f"'{k}' is set by the benchmark itself; use {RESERVED[k]}")
        if k not in BENCH_DEFAULTS and k not in DEFAULT_CFG_DICT:
            hint = suggest(k, list(BENCH_DEFAULTS) + list(DEFAULT_CFG_DICT))
            extra = " (the benchmark runs every method: use methods=[...] or combo=)" if k in KD_DEFAULTS else ""
            raise KDError(f"'{k}' is not a benchmark or Ultralytics train argument.{hint}{extra}")
    cfg = {**BENCH_DEFAULTS, **PRESETS[preset], **{k: v for k, v in overrides.items() if k in BENCH_DEFAULTS}}
    train = {**PRESET_TRAIN[preset], **{k: v for k, v in overrides.items() if k not in BENCH_DEFAULTS}}
    if preset in NBS_FOLLOWS_BATCH and "nbs" not in overrides:
        train["nbs"] = cfg["batch"]

    for k in ("n_train", "n_val", "imgsz", "batch", "epochs", "teacher_epochs", "nc", "max_objects"):
        _pos_int(cfg, k)
    if cfg["nc"] > 8:
        raise KDError(f"nc must be between 1 and 8 (the synthetic data set has 8 shapes), got {cfg['nc']}")
    _pos_int(cfg, "n_test", 0)
    _pos_int(cfg, "data_seed", 0)
    _pos_int(cfg, "teacher_batches", 10)
    seeds = _as_list(cfg["seeds"], "seeds")
    try:
        seeds = [int(s) for s in seeds]
    except (TypeError, ValueError) as e:
        raise KDError(f"seeds must be a list of integers >= 0, e.g. seeds=[0,1], got {cfg['seeds']!r}") from e
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise KDError(f"seeds must be a non-empty list of distinct integers >= 0, got {cfg['seeds']!r}")
    cfg["seeds"] = seeds
    methods = available_methods() if cfg["methods"] in (None, "all") else _as_list(cfg["methods"], "methods")
    for m in methods:
        if "+" in str(m):
            raise KDError(f"methods lists single methods; pass the combination '{m}' as combo={m}")
        resolve_method(str(m))  # raises KDError with a close match
    if len(set(methods)) != len(methods):
        raise KDError(f"methods lists a method twice: {methods}")
    # method yamls as absolute paths: the rows run in their own processes
    cfg["methods"] = [str(Path(m).resolve()) if str(m).endswith((".yaml", ".yml")) else str(m) for m in methods]
    combo = cfg["combo"]
    if combo in (None, False, "", "none", "None"):
        cfg["combo"] = None
    elif combo != "auto":
        resolve_method(str(combo))
        cfg["combo"] = str(combo)
    for k in ("builtin", "publish", "reuse"):
        if not isinstance(cfg[k], bool):
            raise KDError(f"{k} must be True or False, got {cfg[k]!r}")
    dis = cfg["dis"]
    if isinstance(dis, bool) or not isinstance(dis, (int, float)) or dis < 0:
        raise KDError(f"dis must be a number >= 0, got {dis!r}")
    if cfg["weights"] not in {"last", "best"}:
        raise KDError(f"weights must be 'last' or 'best', got {cfg['weights']!r}")
    t = cfg["timeout"]
    if t is not None and (isinstance(t, bool) or not isinstance(t, (int, float)) or t <= 0):
        raise KDError(f"timeout must be a number of seconds > 0 or None, got {t!r}")
    for k in ("val_split", "test_split"):
        if not isinstance(cfg[k], str) or not cfg[k]:
            raise KDError(f"{k} must be a split name such as 'val' or 'test', got {cfg[k]!r}")
    return cfg, train


def format_command(overrides: dict[str, Any]) -> str:
    """The ``yolokd benchmark`` command line that reproduces a run with these overrides.

    Examples:
        >>> format_command({"seeds": [0, 1], "methods": ["cwd", "tar"], "epochs": 3})
        'yolokd benchmark seeds=[0,1] methods=[cwd,tar] epochs=3'
    """

    def fmt(v: Any) -> str:
        if isinstance(v, (list, tuple)):
            return "[" + ",".join(str(x) for x in v) + "]"
        s = str(v)
        return f"'{s}'" if any(c.isspace() for c in s) else s

    return " ".join(["yolokd benchmark", *(f"{k}={fmt(v)}" for k, v in overrides.items())])


# ---------------------------------------------------------------------------------------------------- summaries
def seed_metrics(run: dict | None, student: dict | None, teacher_test: float | None) -> dict[str, Any]:
    """Per-seed metrics of one row from its process's result, against the same seed's undistilled student.

    Args:
        run (dict | None): The row's result (``ok``, ``val``, ``test``, ``step``, ``maxrss_mib``...).
        student (dict | None): The undistilled student's result for the same seed (it holds the teacher forward).
        teacher_test (float | None): Teacher mAP50-95 on the test split.

    Returns:
        (dict): ``STAT_KEYS`` values (None where not measurable).
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
    return out


def summarize_row(row: dict[str, Any], student_runs: dict, teacher_test: float | None, seeds: list[int]) -> dict:
    """Add ``per_seed`` metrics and their ``summary`` (mean, std, min, max, n per key) to a row dict."""
    runs = row["runs"]
    per_seed = {str(s): seed_metrics(runs.get(str(s)), student_runs.get(str(s)), teacher_test) for s in seeds}
    row["per_seed"] = per_seed
    row["summary"] = {k: summarize([m[k] for m in per_seed.values()]) for k in STAT_KEYS}
    row["seeds_ok"] = sum(bool((runs.get(str(s)) or {}).get("ok")) for s in seeds)
    errors = sorted({r.get("error") for r in runs.values() if r and not r.get("ok") and r.get("error")})
    row["errors"] = errors
    return row


def format_table(rows: list[dict], teacher: dict | None = None) -> str:
    """Markdown table of the summarised rows (mAP in points, i.e. x100; cells ``mean (min-max)`` over seeds).

    Args:
        rows (list[dict]): Rows with ``label``, ``summary``, ``seeds_ok``, ``runs`` and ``errors``.
        teacher (dict, optional): ``{"label", "val": {"map", "map50"}, "test": {...}, "forward": summary}``.

    Returns:
        (str): The table, one line per row, the teacher first.
    """
    head = (
        "| row | val mAP50-95 | test mAP50-95 | test mAP50 | gap recovered | ms / iter | x student | x floor "
        "| peak RSS MiB | seeds |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    if teacher:
        fwd = teacher.get("forward")
        lines.append(
            f"| {teacher['label']} | {100 * teacher['val']['map']:.1f} | {100 * teacher['test']['map']:.1f} "
            f"| {100 * teacher['test']['map50']:.1f} | 1 | {'fwd ' + fmt_stat(fwd, 1000, 0) if fwd else '—'} "
            f"| — | — | — | — |"
        )
    for r in rows:
        s = r["summary"]
        n = len(r["runs"])
        seeds = f"{r['seeds_ok']}/{n}"
        if r.get("errors"):
            err = " ".join(str(r["errors"][0]).split())[:120].replace("|", "/")
            seeds += f" (error: {err})"
        rss = "—" if s["maxrss_mib"] is None else f"{s['maxrss_mib']['max']:.0f}"
        lines.append(
            f"| {r['label']} | {fmt_stat(s['val_map'], 100)} | {fmt_stat(s['test_map'], 100)} "
            f"| {fmt_stat(s['test_map50'], 100)} | {fmt_stat(s['gap'], 1, 2)} | {fmt_stat(s['step_ms'], 1, 0)} "
            f"| {fmt_stat(s['x_student'], 1, 2)} | {fmt_stat(s['x_floor'], 1, 2)} "
            f"| {rss} | {seeds} |"
        )
    return "\n".join(lines)


def check_targets(rows: list[dict]) -> list[dict[str, Any]]:
    """The project's targets against the summarised rows: met (True/False) or not measurable (None), with details.

    Targets: every yolokd row beats the undistilled student (test mAP50-95); the best yolokd row recovers at least
    half the gap and beats Ultralytics' built-in distillation by at least 1.0 mAP50-95 point; every yolokd row's
    iteration costs at most 1.10x the floor.
    """

    def mean(r, k):
        s = r["summary"].get(k)
        return None if s is None else s["mean"]

    base = next((r for r in rows if r["kind"] == "student"), None)
    builtin = next((r for r in rows if r["kind"] == "builtin"), None)
    kd = [r for r in rows if r["kind"] in {"yolokd", "combo"} and mean(r, "test_map") is not None]
    out = []
    b = None if base is None else mean(base, "test_map")
    if b is None or not kd:
        out.append({"target": "every method beats the undistilled student", "met": None, "detail": "not measured"})
    else:
        losers = [r["label"] for r in kd if mean(r, "test_map") <= b]
        clear = [r["label"] for r in kd if r["summary"]["test_map"]["min"] > base["summary"]["test_map"]["max"]]
        detail = f"below or equal: {', '.join(losers)}" if losers else "all above on the mean"
        detail += f"; above on every seed (min > student's max): {', '.join(clear) or 'none'}"
        out.append({"target": "every method beats the undistilled student", "met": not losers, "detail": detail})
    best = max(kd, key=lambda r: mean(r, "test_map")) if kd else None
    gap = None if best is None else mean(best, "gap")
    out.append(
        {
            "target": "the best recovers >= half the gap",
            "met": None if gap is None else gap >= 0.5,
            "detail": "not measured" if gap is None else f"{best['label']}: {gap:.2f}",
        }
    )
    bi = None if builtin is None else mean(builtin, "test_map")
    if best is None or bi is None:
        out.append(
            {
                "target": "the best beats the built-in by >= 1.0 mAP50-95 point",
                "met": None,
                "detail": "built-in not measured" if best is not None else "not measured",
            }
        )
    else:
        d = 100 * (mean(best, "test_map") - bi)
        out.append(
            {
                "target": "the best beats the built-in by >= 1.0 mAP50-95 point",
                "met": d >= 1.0,
                "detail": f"{best['label']} - built-in = {d:+.2f} points",
            }
        )
    xf = {r["label"]: mean(r, "x_floor") for r in kd}
    measured = {k: v for k, v in xf.items() if v is not None}
    if not measured:
        out.append({"target": "distillation step <= 1.10x the floor", "met": None, "detail": "not measured"})
    else:
        over = [f"{k} {v:.2f}x" for k, v in measured.items() if v > 1.10]
        detail = "above: " + ", ".join(over) if over else "all within"
        if best is not None and best["label"] in measured:
            detail += f"; best row {best['label']} {measured[best['label']]:.2f}x"
        out.append({"target": "distillation step <= 1.10x the floor", "met": not over, "detail": detail})
    return out


def format_targets(targets: list[dict[str, Any]]) -> str:
    """Markdown list of `check_targets` results."""
    word = {True: "met", False: "NOT met", None: "not measured"}
    return "\n".join(f"- {t['target']}: **{word[t['met']]}** ({t['detail']})" for t in targets)


def machine_info() -> dict[str, Any]:
    """CPU model, cores, GPU, torch, Ultralytics and Python versions of this machine."""
    import torch
    import ultralytics

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "ultralytics": ultralytics.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


# ---------------------------------------------------------------------------------------------------- row process
class StepTimer:
    """Callbacks that time each training iteration and, optionally, a teacher forward at the same batch and size.

    Iterations are timed from ``on_train_batch_start`` to ``on_train_batch_end`` (data loading is outside). The teacher
    forward (eval, ``no_grad``, random images at the batch size and image size) is timed at the start of timed
    iterations, before the step's clock starts, so that it runs under the same conditions as the steps.

    Args:
        epochs (int): Training epochs (the first is left out of the mean when there are more).
        skip (int): Iterations left out at the start of every epoch.
        teacher (str | None): Teacher checkpoint whose forward to time, or None.
        teacher_batches (int): Teacher forwards to time.
    """

    def __init__(self, epochs: int, skip: int = 3, teacher: str | None = None, teacher_batches: int = 20):
        """Set up empty records."""
        self.epochs, self.skip = epochs, skip
        self.teacher_path, self.teacher_batches = teacher, teacher_batches
        self.samples: list[tuple[int, int, float]] = []  # (epoch, iteration, seconds)
        self.forwards: list[float] = []
        self._teacher = self._x = None
        self._i, self._t0, self._device, self._amp = 0, 0.0, None, False

    def _sync(self) -> None:
        """Wait for queued GPU work, so that wall times are real."""
        import torch

        if self._device is not None and self._device.type == "cuda":
            torch.cuda.synchronize(self._device)

    def _timed(self, epoch: int, i: int) -> bool:
        """Whether iteration ``i`` of ``epoch`` counts (not the first epoch unless it is the only one)."""
        return (epoch > 0 or self.epochs == 1) and i >= self.skip

    def teacher_forward(self, batch: int, imgsz: int) -> float:
        """Time one teacher forward (loading the teacher and warming it up on the first call)."""
        import torch
        from ultralytics.nn.tasks import load_checkpoint

        device = self._device or torch.device("cpu")
        if self._teacher is None:
            self._teacher = load_checkpoint(self.teacher_path)[0].float().eval().to(device)
            g = torch.Generator().manual_seed(0)  # a private generator: the training's random streams are untouched
            self._x = torch.rand(batch, 3, imgsz, imgsz, generator=g).to(device)
            for _ in range(2):
                self.teacher_forward(batch, imgsz)
        self._sync()
        t = time.perf_counter()
        with torch.no_grad(), torch.autocast(device.type, enabled=self._amp and device.type == "cuda"):
            self._teacher(self._x)
        self._sync()
        return time.perf_counter() - t

    def on_train_start(self, trainer) -> None:
        """Remember the device and AMP of the run."""
        self._device, self._amp = trainer.device, bool(getattr(trainer, "amp", False))

    def on_train_epoch_start(self, trainer) -> None:
        """Reset the iteration counter."""
        self._i = 0

    def on_train_batch_start(self, trainer) -> None:
        """Time a teacher forward if wanted, then start the step's clock."""
        if self.teacher_path and len(self.forwards) < self.teacher_batches and self._timed(trainer.epoch, self._i):
            self.forwards.append(self.teacher_forward(trainer.batch_size, int(trainer.args.imgsz)))
        self._sync()
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer) -> None:
        """Stop the step's clock."""
        self._sync()
        self.samples.append((trainer.epoch, self._i, time.perf_counter() - self._t0))
        self._i += 1

    def attach(self, model) -> None:
        """Register the callbacks on a `YOLO` model (before ``train``)."""
        for e in ("on_train_start", "on_train_epoch_start", "on_train_batch_start", "on_train_batch_end"):
            model.add_callback(e, getattr(self, e))

    def step_summary(self) -> dict[str, Any]:
        """Mean iteration time over the timed iterations (all but the first when none qualifies)."""
        timed = [t for e, i, t in self.samples if self._timed(e, i)]
        rule = "epochs after the first" if self.epochs > 1 else "the only epoch"
        rule += f", without the first {self.skip} iterations of each"
        if not timed:
            timed = [t for _, _, t in self.samples[1:]] or [t for _, _, t in self.samples]
            rule = "all iterations but the first (too few for the rule)"
        s = summarize(timed) or {}
        return {
            "mean_s": s.get("mean"),
            "std_s": s.get("std"),
            "n": len(timed),
            "total": len(self.samples),
            "rule": rule,
        }


def _metrics(weights: Path, data: str, split: str, imgsz: int, batch: int, out: Path) -> dict[str, float]:
    """mAP50-95 and mAP50 of a checkpoint on one split (Ultralytics' validator, its files under ``out``)."""
    from ultralytics import YOLO

    m = YOLO(str(weights)).val(
        data=data,
        split=split,
        imgsz=imgsz,
        batch=batch,
        plots=False,
        verbose=False,
        project=str(out),
        name=f"val-{split}",
        exist_ok=True,
    )
    return {"map": float(m.box.map), "map50": float(m.box.map50)}


def _maxrss_mib() -> float | None:
    """Peak resident memory of this process in MiB.

    ``ru_maxrss`` (``resource.getrusage(RUSAGE_SELF)``) survives ``fork``/``exec``: a child started by a large parent
    reports at least the parent's resident size at the fork. On Linux the peak of the process's own memory map,
    ``VmHWM`` of ``/proc/self/status``, is reset at ``exec`` and is used instead; elsewhere ``ru_maxrss``.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    try:
        import resource
    except ImportError:  # Windows
        return None
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 2**20 if sys.platform == "darwin" else r / 1024  # bytes on macOS, KiB on Linux


def run_row(spec: dict[str, Any]) -> dict[str, Any]:
    """Train and evaluate one row for one seed (in its own process); never raises.

    Args:
        spec (dict): ``kind`` (student | builtin | yolokd | combo), ``method``, ``seed``, ``student``, ``teacher``,
            ``data``, ``epochs``, ``imgsz``, ``batch``, ``train`` (Ultralytics arguments), ``dis``, ``dir``,
            ``val_split``, ``test_split``, ``weights``, ``time_teacher``, ``teacher_batches``.

    Returns:
        (dict): ``ok``, ``error``, ``val``/``test`` metrics, ``step``, ``teacher_forward``, ``maxrss_mib``, ``train_s``.
    """
    from ultralytics import YOLO

    from yolokd.model import YOLOKD

    out = Path(spec["dir"])
    result: dict[str, Any] = {"ok": False, "error": None, "kind": spec["kind"], "seed": spec["seed"]}
    try:
        timer = StepTimer(
            spec["epochs"],
            teacher=spec["teacher"] if spec.get("time_teacher") else None,
            teacher_batches=spec["teacher_batches"],
        )
        extra: dict[str, Any] = {}
        if spec["kind"] in {"yolokd", "combo"}:
            model = YOLOKD(spec["student"], teacher=spec["teacher"], method=spec["method"], teacher_val=False)
        else:
            model = YOLO(spec["student"])
            if spec["kind"] == "builtin":
                extra = {"distill_model": spec["teacher"], "dis": spec["dis"]}
        timer.attach(model)
        t0 = time.perf_counter()
        model.train(
            data=spec["data"],
            epochs=spec["epochs"],
            imgsz=spec["imgsz"],
            batch=spec["batch"],
            seed=spec["seed"],
            project=str(out),
            name="train",
            exist_ok=True,
            **spec["train"],
            **extra,
        )
        result["train_s"] = time.perf_counter() - t0
        result["step"] = timer.step_summary()
        if spec.get("time_teacher"):
            while len(timer.forwards) < timer.teacher_batches:  # too few timed iterations: top up after training
                timer.forwards.append(timer.teacher_forward(spec["batch"], spec["imgsz"]))
            s = summarize(timer.forwards) or {}
            result["teacher_forward"] = {"mean_s": s.get("mean"), "std_s": s.get("std"), "n": len(timer.forwards)}
        weights = out / "train" / "weights" / f"{spec['weights']}.pt"
        for key in ("val", "test"):
            split = spec[f"{key}_split"]
            result[key] = _metrics(weights, spec["data"], split, spec["imgsz"], spec["batch"], out)
        result["weights"] = str(weights)
        result["ok"] = True
    except BaseException as e:  # a row's failure is a table cell, not a crash (KeyboardInterrupt re-raised below)
        msg = " ".join(str(e).split()) or type(e).__name__
        result["error"] = f"{type(e).__name__}: {msg}"[:500]
        LOGGER.error(f"{PREFIX}row failed:\n{traceback.format_exc()}")
        if isinstance(e, KeyboardInterrupt):
            raise
    finally:
        import torch

        result["maxrss_mib"] = _maxrss_mib()
        if torch.cuda.is_available():
            result["gpu_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
        (out / "result.json").write_text(json.dumps(result, indent=2))
    return result


# ---------------------------------------------------------------------------------------------------- driver
def _model_name(path: str) -> str:
    """A short model name: the file stem, or the run folder for Ultralytics' ``.../weights/best.pt``."""
    p = Path(path)
    if p.stem in {"best", "last"} and p.parent.name == "weights":
        return f"{p.parent.parent.name}/{p.name}"
    return p.stem


def _slug(text: str) -> str:
    """A folder-safe name for a row."""
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in text.replace("+", "-"))


def _finished(spec: dict[str, Any]) -> dict[str, Any] | None:
    """The stored result of a row that finished (ok) in ``spec["dir"]`` with exactly this spec, else None."""
    out = Path(spec["dir"])
    try:
        same = json.loads((out / "spec.json").read_text()) == json.loads(json.dumps(spec))
        result = json.loads((out / "result.json").read_text()) if same else None
    except (OSError, json.JSONDecodeError):
        return None
    if not (result and result.get("ok")):
        return None
    return {"wall_s": None, **result, "reused": True, "log": str(out / "log.txt")}


def _launch(spec: dict[str, Any], timeout: float | None, reuse: bool = False) -> dict[str, Any]:
    """Run one row in a child process; its result, or an error result built from the exit status and the log.

    With ``reuse``, a row that an earlier run finished with the same spec is not run again (`_finished`).
    """
    if reuse and (done := _finished(spec)) is not None:
        return done
    out = Path(spec["dir"])
    out.mkdir(parents=True, exist_ok=True)
    spec_file, result_file, log_file = out / "spec.json", out / "result.json", out / "log.txt"
    spec_file.write_text(json.dumps(spec, indent=2))
    result_file.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "yolokd.benchmark", "--row", str(spec_file)]
    t0 = time.perf_counter()
    with open(log_file, "w") as log:
        try:
            rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            rc = f"timeout after {timeout:g} s"
    wall = time.perf_counter() - t0
    result = None
    if result_file.exists():
        try:
            result = json.loads(result_file.read_text())
        except json.JSONDecodeError:
            result = None
    if result is None:
        tail = [ln for ln in log_file.read_text(errors="replace").splitlines() if ln.strip()][-1:] or ["no output"]
        result = {"ok": False, "error": f"process ended ({rc}) without a result: {tail[0][:300]}"}
    result["wall_s"] = wall
    if result.get("ok"):
        result_file.write_text(json.dumps(result, indent=2))  # with its wall time, for reuse=True
    result["log"] = str(log_file)
    return result


def _label(kind: str, method: str | None, dis: float) -> str:
    """The row's name in the table."""
    if kind in {"student", "builtin"}:
        return "student (no KD)" if kind == "student" else f"ultralytics dis={dis:g}"
    return "+".join(Path(p).stem if p.endswith((".yaml", ".yml")) else p for p in str(method).split("+"))


def write_plot(rows: list[dict], teacher: dict | None, path: Path, title: str) -> Path:
    """Plot test mAP50-95 (points) against time per iteration relative to the undistilled student, one point per row.

    Error bars are the seed range (min-max). Matplotlib's object API with the Agg canvas: no global backend change.

    Returns:
        (Path): ``path``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 5), tight_layout=True)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    colors = {"student": "black", "builtin": "tab:red", "yolokd": "tab:blue", "combo": "tab:purple"}
    for r in rows:
        x, y = r["summary"]["x_student"], r["summary"]["test_map"]
        if x is None or y is None:
            continue
        ax.errorbar(
            x["mean"],
            100 * y["mean"],
            xerr=[[x["mean"] - x["min"]], [x["max"] - x["mean"]]],
            yerr=[[100 * (y["mean"] - y["min"])], [100 * (y["max"] - y["mean"])]],
            fmt="s" if r["kind"] != "yolokd" else "o",
            color=colors.get(r["kind"], "tab:blue"),
            capsize=3,
        )
        ax.annotate(r["label"], (x["mean"], 100 * y["mean"]), textcoords="offset points", xytext=(6, 4), fontsize=8)
    if teacher:
        ax.axhline(100 * teacher["test"]["map"], color="tab:green", ls="--", lw=1, label=f"{teacher['label']}")
    floors = [
        r["summary"]["x_student"]["mean"] / r["summary"]["x_floor"]["mean"]
        for r in rows
        if r["kind"] == "student" and r["summary"]["x_floor"] and r["summary"]["x_student"]
    ]
    if floors:
        ax.axvline(floors[0], color="gray", ls=":", lw=1, label="floor: student step + teacher forward")
        ax.axvline(1.10 * floors[0], color="gray", ls="-.", lw=0.8, label="1.10x floor")
    ax.margins(x=0.2, y=0.15)  # room for the labels
    ax.set_xlabel("time per training iteration (x undistilled student)")
    ax.set_ylabel("test mAP50-95 (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    if teacher or floors:
        ax.legend(fontsize=8, loc="best")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path


def _repo_root() -> Path:
    """The source tree's root for an editable install, else the current folder."""
    root = Path(__file__).resolve().parent.parent
    return root if (root / "pyproject.toml").is_file() and (root / "yolokd").is_dir() else Path.cwd()


def render_report(results: dict[str, Any], plot_rel: str | None) -> str:
    """The generated part of BENCHMARKS.md / results.md: what ran, where, the table, the plot and the targets."""
    cfg, m = results["config"], results["machine"]
    teacher = results["teacher"]
    rows = results["rows"]
    student = next((r for r in rows if r["kind"] == "student"), None)
    floor = ""
    if student and student["summary"]["step_ms"] and teacher.get("forward"):
        f = student["summary"]["step_ms"]["mean"] + 1000 * teacher["forward"]["mean"]
        floor = (
            f"Floor = undistilled step {student['summary']['step_ms']['mean']:.0f} ms + teacher forward "
            f"{1000 * teacher['forward']['mean']:.0f} ms = {f:.0f} ms per iteration (eval, no_grad, batch "
            f"{cfg['batch']}, {cfg['imgsz']} px, {teacher['forward_n']} forwards per seed).\n\n"
        )
    data = cfg["data"] or (
        f"built-in synthetic shapes (train {cfg['n_train']}, val {cfg['n_val']}, test {cfg['n_test']} images, "
        f"data_seed {cfg['data_seed']})"
    )
    lines = [
        f"Preset `{cfg['preset']}`, recorded {results['date']} in {results['elapsed_s'] / 60:.1f} min.",
        "",
        "```bash",
        results["command"],
        "```",
        "",
        f"- Machine: {m['cpu']}, {m['usable_cores']} usable of {m['cores']} cores, torch {m['torch']} "
        f"({m['torch_threads']} torch thread(s) while training), ultralytics {m['ultralytics']}, Python {m['python']}"
        + (f", GPU {m['gpu']}" if m.get("gpu") else "")
        + ".",
        f"- Data: {data}; imgsz {cfg['imgsz']}, batch {cfg['batch']}, {cfg['epochs']} student epoch(s), "
        f"seeds {cfg['seeds']}; Ultralytics arguments {results['train_args']}.",
        f"- Teacher: {teacher['label']} ({teacher['source']}); student: {cfg['student_model']}; evaluated: "
        f"`{cfg['weights']}.pt` of each row on `{cfg['val_split']}` (choices) and `{cfg['test_split']}` (reported).",
        f"- Combination: {results.get('combo_reason', 'none')}.",
        "",
        format_table(rows, teacher),
        "",
        floor + "mAP in points (x100); cells are mean (min–max) over the seeds; gap recovered and the cost ratios are "
        "computed per seed against the same seed's undistilled student.",
        "",
    ]
    if plot_rel:
        lines += [f"![test mAP50-95 vs cost]({plot_rel})", ""]
    lines += ["Targets:", "", format_targets(results["targets"]), ""]
    return "\n".join(lines)


def replace_block(text: str, start: str, end: str, body: str) -> str | None:
    """``text`` with everything between the ``start`` and ``end`` markers replaced by ``body``; None without markers.

    Examples:
        >>> replace_block("a[old]b", "[", "]", "new").split()  # the body goes on its own lines
        ['a[', 'new', ']b']
        >>> replace_block("no markers", "<s>", "<e>", "new") is None
        True
    """
    if start not in text or end not in text:
        return None
    head, rest = text.split(start, 1)
    return f"{head}{start}\n{body.strip()}\n{end}{rest.split(end, 1)[1]}"


def write_benchmarks_md(path: Path, generated: str) -> Path:
    """Write the generated block between the markers of ``path``, keeping the hand-written rest (created if missing).

    Returns:
        (Path): ``path``.
    """
    text = replace_block(path.read_text() if path.exists() else "", MD_START, MD_END, generated)
    if text is None:
        block = f"{MD_START}\n{generated.strip()}\n{MD_END}"
        text = (
            "# Benchmarks\n\nyolokd's methods against the undistilled student and Ultralytics' built-in distillation\n"
            "(`distill_model=`, `dis=`), measured by `yolokd benchmark` (`benchmarks/run.py`); the block below is\n"
            "rewritten by every run with `publish=True`, the rest is kept.\n\n" + block + "\n\n" + HANDWRITTEN
        )
    path.write_text(text)
    return path


def _save(results: dict[str, Any], project: Path) -> None:
    """Write ``results.json`` (also after every row, so an interrupted run keeps what it measured)."""
    (project / "results.json").write_text(json.dumps(results, indent=2, default=str))


def run_benchmark(**overrides: Any) -> dict[str, Any]:
    """Run the benchmark table; see `BENCH_DEFAULTS` for the keys and `PRESETS` for their preset values.

    Args:
        **overrides (Any): Benchmark keys and Ultralytics train arguments (passed to every training).

    Returns:
        (dict): The content of ``results.json``.
    """
    cfg, train = merge_config(overrides)
    project = Path(cfg["project"]).resolve()
    project.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    imgsz, batch, seeds = cfg["imgsz"], cfg["batch"], cfg["seeds"]
    if cfg["data"]:
        data = str(Path(cfg["data"]).resolve()) if Path(cfg["data"]).exists() else str(cfg["data"])
    else:
        from yolokd.data.synthetic import make_dataset

        data = str(
            make_dataset(
                project / "data",
                n_train=cfg["n_train"],
                n_val=cfg["n_val"],
                n_test=cfg["n_test"],
                imgsz=imgsz,
                seed=cfg["data_seed"],
                nc=cfg["nc"],
                max_objects=cfg["max_objects"],
            )
        )
    if cfg["val_split"] == cfg["test_split"] and cfg["combo"] == "auto":
        LOGGER.warning(
            f"{PREFIX}val_split == test_split ('{cfg['test_split']}'): the combination is chosen on the reported "
            f"split, so its numbers are optimistic"
        )
    student = resolve_model(cfg["student_model"], project / "models")
    t0 = time.perf_counter()
    if cfg["teacher"]:
        teacher = resolve_model(str(cfg["teacher"]), project / "models")
        source = f"given: {cfg['teacher']}"
    else:
        teacher_model = resolve_model(cfg["teacher_model"], project / "models")
        teacher = str(
            train_teacher(
                Path(data), project, teacher_model, cfg["teacher_epochs"], imgsz, batch, seed=seeds[0], **train
            )
        )
        source = f"trained {cfg['teacher_epochs']} epoch(s), seed {seeds[0]}"
    teacher_s = time.perf_counter() - t0
    t_eval = {
        k: _metrics(Path(teacher), data, cfg[f"{k}_split"], imgsz, batch, project / "teacher-eval")
        for k in ("val", "test")
    }
    teacher_info: dict[str, Any] = {
        "label": f"teacher ({_model_name(str(cfg['teacher'] or cfg['teacher_model']))})",
        "weights": teacher,
        "source": source,
        "train_or_load_s": teacher_s,
        **t_eval,
    }
    LOGGER.info(f"{PREFIX}teacher {teacher}: val mAP50-95 {t_eval['val']['map']:.4f}, test {t_eval['test']['map']:.4f}")

    results: dict[str, Any] = {
        "config": cfg,
        "train_args": train,
        "command": format_command(overrides),
        "machine": machine_info(),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "teacher": teacher_info,
        "rows": [],
        "elapsed_s": 0.0,
    }
    kinds: list[tuple[str, str | None]] = [("student", None)]
    kinds += [("builtin", None)] if cfg["builtin"] else []
    kinds += [("yolokd", m) for m in cfg["methods"]]
    rows = [
        {
            "id": _slug(_label(k, m, 0) if m else k),
            "label": _label(k, m, cfg["dis"]),
            "kind": k,
            "method": m,
            "runs": {},
        }
        for k, m in kinds
    ]
    results["rows"] = rows
    n_jobs = len(rows) * len(seeds) + (len(seeds) if cfg["combo"] else 0)
    pbar = TQDM(total=n_jobs, desc="benchmark")

    def job(row: dict, seed: int) -> None:
        spec = {
            "kind": row["kind"],
            "method": row["method"],
            "seed": seed,
            "student": student,
            "teacher": teacher,
            "data": data,
            "epochs": cfg["epochs"],
            "imgsz": imgsz,
            "batch": batch,
            "train": train,
            "dis": cfg["dis"],
            "dir": str(project / "rows" / f"{row['id']}-seed{seed}"),
            "val_split": cfg["val_split"],
            "test_split": cfg["test_split"],
            "weights": cfg["weights"],
            "time_teacher": row["kind"] == "student",
            # what the method resolves to now, so that reuse=True never keeps a row trained with other yaml values
            "terms": [asdict(t) for t in resolve_method(row["method"])] if row["method"] else None,
            "versions": {"yolokd": __version__, "ultralytics": ULTRALYTICS_VERSION},
            "teacher_batches": cfg["teacher_batches"],
        }
        pbar.set_description(f"benchmark: {row['label']}, seed {seed}")
        try:
            r = _launch(spec, cfg["timeout"], cfg["reuse"])
        except KeyboardInterrupt:
            LOGGER.warning(
                f"{PREFIX}benchmark interrupted; the rows finished so far are in {project / 'results.json'}; the same "
                f"command with reuse=True goes on where it stopped"
            )
            raise
        row["runs"][str(seed)] = r
        if r.get("ok"):
            took = "reused from an earlier run" if r.get("reused") else f"{r['wall_s']:.0f} s"
            LOGGER.info(
                f"{PREFIX}{row['label']} seed {seed}: test mAP50-95 {r['test']['map']:.4f}, val {r['val']['map']:.4f}, "
                f"{1000 * r['step']['mean_s']:.0f} ms/iter, {took}"
            )
        else:
            LOGGER.warning(f"{PREFIX}{row['label']} seed {seed} failed: {r['error']} (log: {r.get('log')})")
        results["elapsed_s"] = time.perf_counter() - t_start
        _save(results, project)
        pbar.update(1)

    for seed in seeds:
        for row in rows:
            job(row, seed)

    def val_mean(row: dict) -> float | None:
        s = summarize([(r.get("val") or {}).get("map") for r in row["runs"].values() if r.get("ok")])
        return None if s is None else s["mean"]

    if cfg["combo"] == "auto":
        scores = {r["method"]: val_mean(r) for r in rows if r["kind"] == "yolokd"}
        combo = choose_combo(scores)
        ranked = ", ".join(
            f"{m} {100 * v:.2f}" for m, v in sorted(scores.items(), key=lambda kv: -(kv[1] or -1)) if v is not None
        )
        results["combo_reason"] = (
            f"`{combo}`, the two best single methods by val mAP50-95 ({ranked})"
            if combo
            else "skipped: fewer than two methods with a validation score"
        )
    else:
        combo = cfg["combo"]
        results["combo_reason"] = f"`{combo}` (combo=)" if combo else "none (combo=None)"
    if combo:
        label = _label("combo", combo, 0)
        row = {"id": _slug(f"combo-{label}"), "label": label, "kind": "combo", "method": combo, "runs": {}}
        rows.append(row)
        for seed in seeds:
            job(row, seed)
    pbar.close()

    student_runs = rows[0]["runs"]
    for row in rows:
        summarize_row(row, student_runs, t_eval["test"]["map"], seeds)
    fwd = [(r.get("teacher_forward") or {}).get("mean_s") for r in student_runs.values() if r.get("ok")]
    teacher_info["forward"] = summarize(fwd)
    teacher_info["forward_n"] = cfg["teacher_batches"]
    results["targets"] = check_targets(rows)
    results["elapsed_s"] = time.perf_counter() - t_start
    title = (
        f"{cfg['preset']} preset: {Path(student).stem} student, {teacher_info['label']}, "
        f"seeds {seeds}, {cfg['epochs']} epoch(s), {imgsz} px, batch {batch}"
    )
    plot = write_plot(rows, teacher_info, project / "plot.png", title)
    (project / "results.md").write_text(render_report(results, "plot.png") + "\n")
    if cfg["publish"]:
        root = _repo_root()
        png = root / "benchmarks" / f"{cfg['preset']}.png"
        png.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(plot, png)
        md = write_benchmarks_md(root / "BENCHMARKS.md", render_report(results, f"benchmarks/{png.name}"))
        results["published"] = [str(md), str(png)]
        LOGGER.info(f"{PREFIX}wrote {md} and {png}")
    _save(results, project)
    LOGGER.info(
        f"\n{PREFIX}benchmark ({cfg['preset']}, test split '{cfg['test_split']}', {len(seeds)} seed(s)) in "
        f"{results['elapsed_s'] / 60:.1f} min:\n{format_table(rows, teacher_info)}\n"
        f"{format_targets(results['targets'])}"
        f"\n{PREFIX}results: {project / 'results.json'}, {project / 'results.md'}, {plot}"
    )
    return results


def main(argv: list[str] | None = None) -> int:
    """``python -m yolokd.benchmark key=value ...`` (as ``yolokd benchmark``), or ``--row spec.json`` for one row.

    Args:
        argv (list[str], optional): Arguments after the program name; defaults to ``sys.argv[1:]``.

    Returns:
        (int): Exit code (0 ok; 1 a failed row; 2 a usage error; 130 interrupted).
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--row"]:
        if len(argv) != 2:
            LOGGER.error(f"{PREFIX}usage: python -m yolokd.benchmark --row path/to/spec.json")
            return 2
        return 0 if run_row(json.loads(Path(argv[1]).read_text()))["ok"] else 1
    from yolokd.cli import main as cli_main

    return cli_main(["benchmark", *argv])


if __name__ == "__main__":
    sys.exit(main())
