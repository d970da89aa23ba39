# yolokd, AGPL-3.0 License
"""`yolokd demo`: offline end to end on the built-in synthetic data set.

Trains (or reuses) a YOLOv8n teacher and the narrow student alone and distilled, and prints their test mAP with the
distilled student's gain and recovered gap (one seed of the benchmark's cpu preset).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import ultralytics
from ultralytics import YOLO
from ultralytics.utils import LOGGER, YAML

from yolokd.config import KD_DEFAULTS, PREFIX, KDError
from yolokd.data.synthetic import make_dataset
from yolokd.head import TASK_SUFFIX
from yolokd.model import YOLOKD

TASK_METHODS = {
    "detect": str(KD_DEFAULTS["method"]),
    "segment": "tar+cwd+mask",
    "pose": "tar+cwd+keypoint",
    "obb": "tar+cwd",
}
"""The demo's method per task: the default method= (cfg/default.yaml) for detection; for the other tasks the
combinations measured with them (BENCHMARKS.md "Tasks"): tar+cwd, plus the task's own term where it has one."""

DEMO_DEFAULTS: dict[str, Any] = {
    "task": "detect",  # detect | segment | pose | obb: the synthetic labels, models and metric of the demo
    "method": None,  # distillation method for the student; None: the task's (TASK_METHODS: bckd, tar+cwd+mask, ...)
    "seeds": None,  # student seeds, e.g. [0, 1]: each trains alone and distilled (data, teacher: seed); None: [seed]
    "epochs": 8,  # student epochs
    "teacher_epochs": 20,  # teacher epochs (the teacher is reused when its stamp matches)
    "imgsz": 128,
    "batch": 8,
    "n_train": 600,
    "n_val": 150,
    "n_test": 150,
    "max_objects": 6,
    "seed": 0,
    "teacher_model": "yolov8n.yaml",  # for another task its -seg/-pose/-obb yaml (yolov8n-seg.yaml...)
    "student_model": "yolov8-pico",  # YOLOv8 layers at width 0.125 (derived from Ultralytics' yolov8.yaml, or -seg...)
    "project": "runs/yolokd-demo",  # for another task: runs/yolokd-demo-<task>
    "baseline": True,  # also train the student without distillation: the gain is measured against it
    # with unlabeled=True the students see labeled_fraction of the training labels, for 1 / labeled_fraction times the
    # epochs (the same number of steps), and a third student adds the other training images as unlabeled= images
    "unlabeled": False,
    "labeled_fraction": 0.1,
}
# Ordinary Ultralytics arguments the demo changes for short CPU runs (any of them can be overridden), as the
# benchmark's cpu preset: one optimizer step per batch, one warm-up epoch, AdamW at lr0=0.004, no per-epoch validation
# or plots (every model is evaluated once at the end, on the test split).
DEMO_TRAIN_DEFAULTS: dict[str, Any] = {
    "nbs": 8,
    "warmup_epochs": 1.0,
    "optimizer": "AdamW",
    "lr0": 0.004,
    "val": False,
    "plots": False,
}


def scaled_yaml(
    out: str | Path,
    family: str = "yolov8",
    depth: float = 0.33,
    width: float = 0.125,
    max_channels: int = 1024,
    task: str = "detect",
) -> Path:
    """Write a model yaml for ``family`` (``yolov8``, ``yolo11``, ``yolo26``) and ``task`` at a custom depth and width.

    The layers are read from the installed Ultralytics' yaml of that task, without a ``scales`` table. Returns ``out``.
    """
    if task not in TASK_SUFFIX:
        raise ValueError(f"task must be one of {list(TASK_SUFFIX)}, got {task!r}")
    sub = {"yolov8": "v8", "yolo11": "11", "yolo26": "26"}[family]
    d = YAML.load(Path(ultralytics.__file__).parent / "cfg" / "models" / sub / f"{family}{TASK_SUFFIX[task]}.yaml")
    d.pop("scales", None)
    d.update(depth_multiple=depth, width_multiple=width, max_channels=max_channels)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    YAML.save(out, d)
    return out


TINY_WIDTHS = {"yolov8-pico": 0.125, "yolov8-femto": 0.0625}
"""Named students smaller than Ultralytics' n scale: YOLOv8 layers at depth 0.33 and these widths."""


def resolve_model(name: str, folder: Path, task: str = "detect") -> str:
    """Resolve a model argument: ``yolov8-pico``/``-femto`` -> a generated tiny YOLOv8 yaml of ``task`` in ``folder``.

    An existing path becomes absolute; an Ultralytics detection yaml name gets the task's suffix; anything else goes
    to Ultralytics unchanged.

    Examples:
        >>> resolve_model("yolov8n.yaml", Path("."), "segment")
        'yolov8n-seg.yaml'
    """
    suffix = TASK_SUFFIX[task]
    if name in TINY_WIDTHS:
        return str(scaled_yaml(folder / f"{name}{suffix}.yaml", width=TINY_WIDTHS[name], task=task))
    p = Path(name)
    if p.exists():
        return str(p.resolve())
    if p.suffix == ".yaml" and len(p.parts) == 1 and not any(p.stem.endswith(x) for x in TASK_SUFFIX.values() if x):
        return f"{p.stem}{suffix}.yaml"
    return name


METRIC = {"detect": "box", "segment": "seg", "pose": "pose", "obb": "box"}
"""The demo's score per task: box mAP (detect, obb: rotated boxes), mask mAP (segment), keypoint mAP (pose)."""


def _test_metrics(weights: Path, data: Path, imgsz: int, batch: int, task: str = "detect") -> tuple[float, float]:
    """mAP50-95 and mAP50 of a checkpoint on the test split, for the task's main output (`METRIC`)."""
    run = Path(weights).parent.parent
    m = YOLO(str(weights)).val(
        data=str(data),
        split="test",
        imgsz=imgsz,
        batch=batch,
        plots=False,
        verbose=False,
        project=str(run),
        name="val-test",
        exist_ok=True,
    )
    part = getattr(m, METRIC[task])
    return float(part.map), float(part.map50)


def train_teacher(
    data: Path, project: Path, model: str, epochs: int, imgsz: int, batch: int, name: str = "teacher", **train: Any
) -> Path:
    """Train a teacher into ``project/name``, or reuse a finished run there with the same settings; return best.pt."""
    from yolokd.data.semi import view_stamp

    stamp = {
        "data": YAML.load(data).get("path"),
        **view_stamp(data),  # a semi-supervised view: its fraction, so another fraction trains anew
        "model": model,
        "epochs": epochs,
        "imgsz": imgsz,
        "batch": batch,
        **{k: str(v) for k, v in train.items()},
    }
    run = project / name
    best, stamp_file = run / "weights" / "best.pt", run / "yolokd_teacher.json"
    if best.exists() and stamp_file.exists() and json.loads(stamp_file.read_text()) == stamp:
        LOGGER.info(f"{PREFIX}reusing teacher {best} (delete {run} to retrain)")
        return best
    stamp_file.unlink(missing_ok=True)
    LOGGER.info(f"{PREFIX}training teacher {model} for {epochs} epochs")
    YOLO(model).train(
        data=str(data),
        epochs=epochs,
        imgsz=imgsz,
        batch=batch,
        project=str(project),
        name=name,
        exist_ok=True,
        **train,
    )
    stamp_file.write_text(json.dumps(stamp))  # last: an interrupted teacher is retrained next time
    return best


def format_results(rows: list[dict[str, Any]]) -> str:
    """The demo's table: mAP in points, and each distilled row's gain and recovered gap against its seed's student.

    Examples:
        >>> rows = [{"role": "teacher", "mAP50-95": 0.5}, {"role": "student (no KD)", "mAP50-95": 0.2},
        ...         {"role": "student (cwd)", "mAP50-95": 0.26}]
        >>> for r in rows:
        ...     r.update(model="m", mAP50=0.0, run="r")
        >>> print(format_results(rows).splitlines()[3])
        student (cwd)         m                     26.0     0.0     +6.0    0.20  r
    """
    teacher = next((r for r in rows if r["role"] == "teacher"), None)
    bases = {r.get("seed"): r for r in rows if r["role"].startswith("student (no KD)")}
    width = max([22] + [len(r["role"]) + 2 for r in rows])
    lines = [f"{'role':<{width}}{'model':<16}{'mAP50-95':>10}{'mAP50':>8}{'gain':>9}{'gap':>8}  run"]
    for r in rows:
        gain = gap = ""
        base = bases.get(r.get("seed"))
        if base is not None and r["role"] != "teacher" and r is not base:
            d = 100 * (r["mAP50-95"] - base["mAP50-95"])
            gain = f"{d:+.1f}"
            t = 100 * (teacher["mAP50-95"] - base["mAP50-95"]) if teacher else 0.0
            gap = f"{d / t:.2f}" if t > 0 else ""
        lines.append(
            f"{r['role']:<{width}}{r['model']:<16}{100 * r['mAP50-95']:>10.1f}{100 * r['mAP50']:>8.1f}{gain:>9}{gap:>8}"
            f"  {r['run']}"
        )
    return "\n".join(lines)


def _student_data(cfg: dict[str, Any], data: Path, project: Path, task: str) -> tuple[Path, int]:
    """The students' data set and epochs: all labels, or a fraction ``f`` of them for ``epochs / f`` epochs."""
    if not cfg["unlabeled"]:
        return data, int(cfg["epochs"])
    if task != "detect":
        raise KDError(f"unlabeled=True shows detection only; leave task={task} out or unlabeled=False")
    from yolokd.data.semi import labeled_split

    f = cfg["labeled_fraction"]
    if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 < f <= 1:
        raise KDError(f"labeled_fraction must be a number in (0, 1], e.g. 0.1, got {f!r}")
    return labeled_split(data, project / f"labeled-{f:g}", float(f)), max(1, round(int(cfg["epochs"]) / f))


def _students(cfg: dict[str, Any], method: str, seed: int, tagged: bool) -> list[tuple[str, str, str | None, bool]]:
    """The students of one seed: ``(role, run name, method or None, unlabeled)``."""
    tag = f" seed {seed}" if tagged else ""
    name = f"student-{method.replace('+', '-').replace('/', '_')}"
    out = [(f"student (no KD){tag}", "student-baseline", None, False)] if cfg["baseline"] else []
    out.append((f"student ({method}){tag}", name, method, False))
    if cfg["unlabeled"]:
        out.append((f"student ({method}) + unlabeled{tag}", f"{name}-unlabeled", method, True))
    return [(role, f"{n}-s{seed}" if tagged else n, m, u) for role, n, m, u in out]


def run_demo(**overrides: Any) -> list[dict[str, Any]]:
    """Run the demo (unknown keys go to every ``train`` call); one row per model: ``role``, ``model``, mAPs, ``run``."""
    cfg = {**DEMO_DEFAULTS, **{k: v for k, v in overrides.items() if k in DEMO_DEFAULTS}}
    train = {**DEMO_TRAIN_DEFAULTS, **{k: v for k, v in overrides.items() if k not in DEMO_DEFAULTS}}
    if "batch" in overrides and "nbs" not in overrides:
        train["nbs"] = cfg["batch"]  # one optimizer step per batch, whatever the batch
    task = str(cfg["task"])
    if task not in TASK_METHODS:
        raise KDError(f"task={task!r} is not one the demo draws; use one of {list(TASK_METHODS)}")
    if task != "detect" and "project" not in overrides:
        cfg["project"] = f"{cfg['project']}-{task}"
    project = Path(cfg["project"]).resolve()
    imgsz, batch = int(cfg["imgsz"]), int(cfg["batch"])
    keys = ("n_train", "n_val", "n_test", "max_objects")
    data = make_dataset(project / "data", imgsz=imgsz, seed=cfg["seed"], task=task, **{k: cfg[k] for k in keys})
    teacher_model = resolve_model(cfg["teacher_model"], project / "models", task)
    student_model = resolve_model(cfg["student_model"], project / "models", task)
    common = {"imgsz": imgsz, "batch": batch, "seed": cfg["seed"], **train}
    teacher = train_teacher(data, project, teacher_model, int(cfg["teacher_epochs"]), **common)

    rows = [{"role": "teacher", "model": Path(teacher_model).stem, "weights": teacher}]
    method = str(cfg["method"] or TASK_METHODS[task])
    seeds = [int(s) for s in (cfg["seeds"] if cfg["seeds"] is not None else [cfg["seed"]])]
    student_data, epochs = _student_data(cfg, data, project, task)
    for seed in seeds:
        for role, name, m, unlabeled in _students(cfg, method, seed, len(seeds) > 1):
            model = YOLO(student_model) if m is None else YOLOKD(student_model, teacher=str(teacher), method=m)
            kd = {} if m is None else {"unlabeled": None if unlabeled else False}  # None: the view's unlabeled: key
            model.train(
                data=str(student_data),
                epochs=epochs,
                project=str(project),
                name=name,
                exist_ok=True,
                **{**common, "seed": seed, **kd},
            )
            weights = project / name / "weights" / "last.pt"
            rows.append({"role": role, "model": Path(student_model).stem, "weights": weights, "seed": seed})

    for r in rows:
        r["mAP50-95"], r["mAP50"] = _test_metrics(r["weights"], data, imgsz, batch, task)
        r["run"] = str(Path(r["weights"]).parent.parent)
    LOGGER.info(
        f"\n{PREFIX}demo results ({task}, {METRIC[task]} mAP) on the held-out test split ({cfg['n_test']} images, "
        f"imgsz={imgsz}; mAP in points, gain = distilled - undistilled, gap = gain / (teacher - undistilled)):\n"
        f"{format_results(rows)}\n"
        f"The students trained {epochs} epochs, far from converged: the gain shows distillation as saved training "
        f"time. What a run to convergence gets: BENCHMARKS.md 'Converged: shapes', 'glyphs' and 'aerial' "
        "(yolokd benchmark preset=converged)."
    )
    return rows
