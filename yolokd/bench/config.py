# yolokd, AGPL-3.0 License
"""The benchmark's keys, their defaults and presets, their validation, and the command line that reproduces a run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ultralytics.utils import DEFAULT_CFG_DICT

from yolokd.config import KD_DEFAULTS, KDError, available_methods, build_config, resolve_method, suggest
from yolokd.data.synthetic import STYLES

# Every benchmark key with its default (the ``cpu`` preset); any other key must be an Ultralytics train argument, and
# is passed to every training (teacher and students).
BENCH_DEFAULTS: dict[str, Any] = {
    "preset": "cpu",  # (str) cpu | converged | semi | gpu | micro: a named set of the values below (keys override)
    "data": None,  # (str, optional) a data.yaml; None generates the built-in synthetic set (n_train, n_val, n_test)
    "style": "shapes",  # (str) look of the built-in synthetic set: shapes | glyphs | aerial
    "n_train": 600,  # (int) synthetic training images
    "n_val": 150,  # (int) synthetic validation images (the split used for choices: combination, defaults)
    "n_test": 150,  # (int) synthetic test images (the reported split)
    "data_seed": 0,  # (int) seed of the synthetic data set
    "nc": 6,  # (int) classes of the synthetic data set (1-8)
    "max_objects": 6,  # (int) most objects per synthetic image
    "imgsz": 128,  # (int) training and evaluation image size (also the synthetic images' size)
    "batch": 8,  # (int) batch size (the cpu preset also sets nbs=batch: one optimizer step per batch)
    "epochs": 8,  # (int) student epochs, every row
    "teacher_epochs": 20,  # (int) teacher epochs (the teacher is reused when its stamp matches)
    "teacher_model": "yolov8n.yaml",  # (str) teacher model to train when teacher= is not given
    "teacher": None,  # (str, optional) a trained teacher .pt to reuse instead of training one
    "student_model": "yolov8-pico",  # (str) student model; yolov8-pico / yolov8-femto = YOLOv8 at width 0.125 / 0.0625
    "seeds": [0, 1, 2],  # (list[int]) training seeds; every row is trained once per seed
    "methods": None,  # (list[str], optional) yolokd methods; None = every built-in detect method (no mask, keypoint)
    "combo": "auto",  # (str, optional) 'auto' = the two best methods on the val split joined by '+'; 'a+b'; None = no
    "builtin": True,  # (bool) include Ultralytics' built-in distillation (distill_model=teacher.pt, dis=...)
    "dis": 6.0,  # (float) weight of Ultralytics' built-in distillation loss (its default)
    "val_split": "val",  # (str) split for choices (combination)
    "test_split": "test",  # (str) reported split
    "weights": "last",  # (str) last | best: which checkpoint of each row is evaluated
    "teacher_batches": 30,  # (int) batches over which the teacher forward is timed (>= 10)
    "timeout": None,  # (float, optional) seconds after which one row's process is stopped (reported as an error)
    "project": "runs/yolokd-benchmark",  # (str) output folder
    "publish": None,  # (str, optional) a .md file to write the report into (plot: benchmarks/<preset>.png beside it)
    "jobs": 1,  # (int) rows trained at once; > 1 for accuracy-only runs (sweeps): the cost columns are then not valid
    "catchup": None,  # (float, optional) catchup= of every distilled row (-1: never fade); None: yolokd's default
    "catchup_pace": None,  # (float, optional) catchup_pace= of every distilled row; None: yolokd's default
    "executor": "local",  # (str) local | ray: rows as local processes (jobs= at once) or as Ray Tune trials (a cluster)
    "ray_address": None,  # (str, optional) with executor=ray: the Ray cluster's address (None: ray.init's default)
    "profile": ["cwd", "crosskd"],  # (list[str]) methods whose step is profiled after the rows (teacher/student/terms)
    "reuse": False,  # (bool) keep rows an earlier run in this project finished with the same spec (arguments, terms)
    # semi-supervised rows: A the undistilled student and B the combination on this fraction of the training labels,
    # C = B with the other training images as unlabeled=; each over a list that repeats the labelled images, so that
    # an epoch has as many steps as one over all the labels. None: no such rows
    "labeled_fraction": None,  # (float, optional) in (0, 1)
    # B' and C' = B and C distilled from a teacher trained (same model, epochs, arguments) on the labelled view only,
    # in project/teacher-labeled: the honest semi-supervised case, where the teacher saw no more labels than B
    "semi_own_teacher": False,  # (bool) with labeled_fraction: add the rows B' and C'
    "unlabeled_extra": 0,  # (int) F = the combination on all labels plus this many extra generated unlabeled images
}

PRESETS: dict[str, dict[str, Any]] = {
    # 2 CPU cores, sized so that distillation is measurable (BENCHMARKS.md, "What was tried"): shapes of 12-50% of
    # a 128 px image, at most 6 per image, 600 training images; a 20-epoch yolov8n teacher reached about 50 test
    # mAP50-95 points and the 8-epoch pico student about 20 with a seed spread of 3.7 (3 seeds), i.e. a gap of about
    # 30 points against the noise. Batch 8 (600 steps) rather than 16: the spread over 3 seeds was 6.2 with batch 16.
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
    # Trained to convergence (BENCHMARKS.md "Converged"): the cpu preset's data and hyper-parameters with a validation
    # after every epoch (the curves in results.json; the catchup rule reads it), long budgets, and the half-width
    # femto student, since the pico student trained 60 epochs (val 59.5) came within a few points of the yolov8n
    # teacher; the default method bckd, tar+cwd and the built-in at the same budget. Run with jobs=2 on 2 cores
    # (accuracy only: the cost columns are then not valid).
    "converged": {
        "student_model": "yolov8-femto",
        "epochs": 60,
        "teacher_epochs": 80,
        "methods": ["bckd"],
        "combo": "tar+cwd",
        "profile": [],
    },
    # Semi-supervised (BENCHMARKS.md "Semi-supervised"): the converged regime's data, teacher and budget; the
    # undistilled student (D) and the default method (E) on all labels, A-C on 10% of them, B' and C' with a
    # teacher trained on those 10%, F = E plus as many extra unlabeled images as the training split has.
    "semi": {
        "student_model": "yolov8-femto",
        "epochs": 60,
        "teacher_epochs": 80,
        "methods": [],
        "builtin": False,
        "combo": "tar+cwd",
        "profile": [],
        "labeled_fraction": 0.1,
        "semi_own_teacher": True,
        "unlabeled_extra": 600,
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
        "profile": ["cwd"],
        "teacher_batches": 10,
    },
}
# Ultralytics arguments each preset changes (any can be overridden): short CPU runs use one warm-up epoch, skip the
# per-epoch validation (each row is evaluated once at the end, on both splits) and the plots.
PRESET_TRAIN: dict[str, dict[str, Any]] = {
    # AdamW at lr0=0.004 instead of optimizer=auto (AdamW at 0.001 for 6 classes and few steps): in a check run of the
    # previous cpu preset (96 px, 5-50% shapes) the undistilled pico student reached val mAP50-95 1.52 points after 7
    # epochs (AdamW at 0.01: 1.04, SGD at 0.02: 0.56), against 0.33-0.56 with auto; kept for the current preset.
    "cpu": {"warmup_epochs": 1.0, "val": False, "plots": False, "optimizer": "AdamW", "lr0": 0.004},
    "converged": {"warmup_epochs": 1.0, "val": True, "plots": False, "optimizer": "AdamW", "lr0": 0.004},
    "semi": {"warmup_epochs": 1.0, "val": True, "plots": False, "optimizer": "AdamW", "lr0": 0.004},
    "gpu": {},
    "micro": {"warmup_epochs": 1.0, "val": False, "plots": False, "workers": 0},
}
NBS_FOLLOWS_BATCH = {"cpu", "converged", "semi", "micro"}  # nbs=batch as the demo does, unless nbs= is given
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


def as_list(value: Any, key: str) -> list:
    """Accept a list/tuple, a single value, or a string such as '[a,b]' / 'a,b' (the CLI's unquoted lists).

    Examples:
        >>> as_list("[cwd, 'tar']", "methods")
        ['cwd', 'tar']
    """
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, str):
        return [p.strip().strip("'\"") for p in value.strip().strip("[]").split(",") if p.strip()]
    if value is None:
        raise KDError(f"{key} must be a list, e.g. {key}=[0,1]")
    return [value]


def publish_path(value: Any) -> str | None:
    """Check ``publish=``: None (or False, '', 'none') writes nothing outside ``project``; else a ``.md`` path."""
    if value in (None, False, "", "none", "None"):
        return None
    if value is True:
        raise KDError("publish= takes the Markdown file to write, e.g. publish=BENCHMARKS.md (True is not a path)")
    if not isinstance(value, (str, Path)) or not str(value).endswith(".md"):
        raise KDError(f"publish must be the path of a Markdown file (.md), e.g. publish=BENCHMARKS.md, got {value!r}")
    return str(value)


def _pos_int(cfg: dict[str, Any], key: str, minimum: int = 1) -> None:
    """Check that ``cfg[key]`` is an int >= ``minimum``."""
    v = cfg[key]
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise KDError(f"{key} must be an integer >= {minimum}, got {v!r}")


def _check_keys(overrides: dict[str, Any]) -> str:
    """Check the preset and every key's name; return the preset."""
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
    return preset


def _check_numbers(cfg: dict[str, Any]) -> None:
    """Check the integer keys, ``dis`` and ``timeout``."""
    for k in ("n_train", "n_val", "imgsz", "batch", "epochs", "teacher_epochs", "nc", "max_objects"):
        _pos_int(cfg, k)
    if cfg["nc"] > 8:
        raise KDError(f"nc must be between 1 and 8 (the synthetic data set has 8 shapes), got {cfg['nc']}")
    _pos_int(cfg, "n_test", 0)
    _pos_int(cfg, "data_seed", 0)
    _pos_int(cfg, "teacher_batches", 10)
    _pos_int(cfg, "jobs")
    for key in ("catchup", "catchup_pace"):  # the KD keys' own checks, before any row trains
        if cfg[key] is not None:
            build_config({key: cfg[key]})
    if cfg["executor"] not in ("local", "ray"):
        raise KDError(f"executor must be 'local' or 'ray', got {cfg['executor']!r}")
    if cfg["executor"] == "ray":
        from yolokd.bench.ray_jobs import require_ray

        require_ray()  # before any training: a one-line error naming the extra
    f = cfg["labeled_fraction"]
    if f is not None and (isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 < f < 1):
        raise KDError(f"labeled_fraction must be a fraction in (0, 1) or None, got {f!r}")
    _pos_int(cfg, "unlabeled_extra", 0)
    if (f is not None or cfg["unlabeled_extra"]) and cfg["data"] is not None:
        raise KDError("labeled_fraction= and unlabeled_extra= need the built-in synthetic data (data= not given)")
    dis = cfg["dis"]
    if isinstance(dis, bool) or not isinstance(dis, (int, float)) or dis < 0:
        raise KDError(f"dis must be a number >= 0, got {dis!r}")
    t = cfg["timeout"]
    if t is not None and (isinstance(t, bool) or not isinstance(t, (int, float)) or t <= 0):
        raise KDError(f"timeout must be a number of seconds > 0 or None, got {t!r}")


def _seeds(value: Any) -> list[int]:
    """The seeds as a non-empty list of distinct integers >= 0."""
    try:
        seeds = [int(s) for s in as_list(value, "seeds")]
    except (TypeError, ValueError) as e:
        raise KDError(f"seeds must be a list of integers >= 0, e.g. seeds=[0,1], got {value!r}") from e
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise KDError(f"seeds must be a non-empty list of distinct integers >= 0, got {value!r}")
    return seeds


def _methods(value: Any) -> list[str]:
    """The single methods to run (all built-in ones for None), method yamls as absolute paths."""
    methods = available_methods("detect") if value in (None, "all") else as_list(value, "methods")
    for m in methods:
        if "+" in str(m):
            raise KDError(f"methods lists single methods; pass the combination '{m}' as combo={m}")
        resolve_method(str(m))  # raises KDError with a close match
    if len(set(methods)) != len(methods):
        raise KDError(f"methods lists a method twice: {methods}")
    # method yamls as absolute paths: the rows run in their own processes
    return [str(Path(m).resolve()) if str(m).endswith((".yaml", ".yml")) else str(m) for m in methods]


def _profiled(value: Any) -> list[str]:
    """``profile=``: the methods (or combinations) whose step is profiled; None or [] for none."""
    if value in (None, False, "", "none", "None"):
        return []
    methods = [str(m) for m in as_list(value, "profile")]
    for m in methods:
        resolve_method(m)  # raises KDError with a close match
    return methods


def _combo(value: Any) -> str | None:
    """``combo=``: None, 'auto', or a checked combination such as 'cwd+tar'."""
    if value in (None, False, "", "none", "None"):
        return None
    if value != "auto":
        resolve_method(str(value))
    return str(value)


def _check_choices(cfg: dict[str, Any]) -> None:
    """Check the flags, ``weights``, the split names and ``style``."""
    for k in ("builtin", "reuse", "semi_own_teacher"):
        if not isinstance(cfg[k], bool):
            raise KDError(f"{k} must be True or False, got {cfg[k]!r}")
    if cfg["weights"] not in {"last", "best"}:
        raise KDError(f"weights must be 'last' or 'best', got {cfg['weights']!r}")
    for k in ("val_split", "test_split", "style"):
        if not isinstance(cfg[k], str) or not cfg[k]:
            raise KDError(f"{k} must be a non-empty name such as {BENCH_DEFAULTS[k]!r}, got {cfg[k]!r}")
    if cfg["data"] is None and cfg["style"] not in STYLES:
        raise KDError(f"style must be one of the synthetic looks {sorted(STYLES)}, got {cfg['style']!r}")


def merge_config(overrides: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Merge the preset and the overrides, validate them, and split off the Ultralytics train arguments.

    Returns:
        (tuple[dict, dict]): The benchmark configuration and the Ultralytics arguments for every training.
    """
    preset = _check_keys(overrides)
    cfg = {**BENCH_DEFAULTS, **PRESETS[preset], **{k: v for k, v in overrides.items() if k in BENCH_DEFAULTS}}
    train = {**PRESET_TRAIN[preset], **{k: v for k, v in overrides.items() if k not in BENCH_DEFAULTS}}
    if preset in NBS_FOLLOWS_BATCH and "nbs" not in overrides:
        train["nbs"] = cfg["batch"]
    _check_numbers(cfg)
    _check_choices(cfg)
    cfg["seeds"] = _seeds(cfg["seeds"])
    cfg["methods"] = _methods(cfg["methods"])
    cfg["combo"] = _combo(cfg["combo"])
    cfg["profile"] = _profiled(cfg["profile"])
    cfg["publish"] = publish_path(cfg["publish"])
    return cfg, train


def format_command(overrides: dict[str, Any], mode: str = "benchmark") -> str:
    """The ``yolokd <mode>`` command line that reproduces a run with these overrides.

    Examples:
        >>> format_command({"seeds": [0, 1], "methods": ["cwd", "tar"], "epochs": 3})
        'yolokd benchmark seeds=[0,1] methods=[cwd,tar] epochs=3'
    """

    def fmt(v: Any) -> str:
        if isinstance(v, (list, tuple)):
            return "[" + ",".join(str(x) for x in v) + "]"
        s = str(v)
        return f"'{s}'" if any(c.isspace() for c in s) else s

    return " ".join([f"yolokd {mode}", *(f"{k}={fmt(v)}" for k, v in overrides.items())])
