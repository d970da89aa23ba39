# yolokd, AGPL-3.0 License
"""``yolokd MODE key=value ...``: Ultralytics' own key=value parsing, with the KD keys split off.

Modes: ``train``, ``demo``, ``benchmark``, ``sweep``, ``help``, ``version``, ``cfg`` and ``methods [NAME]``.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from typing import Any

from ultralytics.cfg import CLI_HELP_MSG, check_dict_alignment, merge_equals_args, parse_key_value_pair
from ultralytics.utils import DEFAULT_CFG_DICT, LOGGER

from yolokd.config import KD_DEFAULTS, PREFIX, TERM_WEIGHT, KDError, available_methods, cfg_dir, split_kd_args

MODES = ("train", "demo", "benchmark", "sweep", "help", "version", "cfg", "methods")
# Ultralytics modes yolokd runs unchanged through Ultralytics' own CLI ('yolokd val ...' is 'yolo val ...'); any
# other Ultralytics command, its own 'benchmark' mode included, is 'yolokd yolo <command> ...'.
PASSTHROUGH = ("val", "predict", "export", "track")
TASKS = ("detect", "segment", "pose", "obb", "classify", "semantic", "depth")
KD_TASKS = ("detect", "segment", "pose", "obb")  # the tasks with a Detect head, which yolokd distils
TRAINING_MODES = ("train", "tune")  # never passed through: 'yolokd yolo train' would train without the teacher

HELP = f"""
yolokd: knowledge distillation for Ultralytics YOLO.

    yolokd MODE key=value ...

    MODE     train | demo | benchmark | sweep | help | version | cfg | methods | val | predict | export | track | yolo
    train    every 'yolo train' argument, plus the distillation keys (see 'yolokd cfg'):
               yolokd train model=yolov8s.yaml teacher=path/to/teacher.pt method=cwd data=data.yaml epochs=100
               yolokd train model=yolov8n-seg.yaml teacher=yolov8x-seg.pt method=tar+cwd+mask data=seg.yaml
               yolokd train resume model=runs/detect/train/weights/last.pt
             the task (detect, segment, pose, obb) comes from the models, or task= / a task word ('yolokd pose
             train ...'); a teacher trained on more classes is matched by class name, or class_map=[...]
    demo     offline: synthetic data, a YOLOv8n teacher, a narrow YOLOv8 student alone and distilled, the gain:
               yolokd demo
               yolokd demo task=segment          # the same with masks (also pose, obb)
               yolokd demo method=crosskd baseline=False   # another method, without the undistilled student
               yolokd demo unlabeled=True        # 10% of the labels, and the rest as unlabeled images
    benchmark  every method vs no distillation vs Ultralytics' built-in (distill_model=, dis=): test mAP, gap
               recovered, time per iteration, peak memory; writes results.json, a table and a plot in project=:
               yolokd benchmark                         # preset=cpu: the whole table, 3 seeds, on 2 CPU cores
               yolokd benchmark jobs=2 style=glyphs     # two rows at once; the second synthetic look (transfer)
               yolokd benchmark preset=micro            # a smoke test in about a minute
               yolokd benchmark publish=BENCHMARKS.md   # also the report in that file, its plot in benchmarks/
               yolokd benchmark reuse=True              # go on where an interrupted run stopped
               yolokd benchmark seeds=[0,1,2] methods=[cwd,tar] combo=cwd+tar teacher=path/to/teacher.pt
    sweep    the benchmark's rows with every term weight of each method scaled (or automatic: balances=), scored on
             the val split only:
               yolokd sweep scales=[0.25,1] balances=[0.25] seeds=[0,1] teacher=path/to/teacher.pt
    methods  built-in methods ({", ".join(available_methods())}): each one's paper, terms (loss items) and default
             weights; 'yolokd methods cwd' prints one method's yaml (combine with '+', or pass a method .yaml)
    val | predict | export | track   Ultralytics' own modes, unchanged (a distilled best.pt is a plain checkpoint):
               yolokd val model=runs/detect/train/weights/best.pt data=data.yaml
    yolo     any other Ultralytics command but training, as 'yolo' runs it; Ultralytics' own speed benchmark is
             told apart from the distillation benchmark above this way:
               yolokd yolo benchmark model=best.pt imgsz=640     yolokd yolo checks

Docs: README.md and cfg/default.yaml. Ultralytics' own arguments: https://docs.ultralytics.com/usage/cfg/
"""


class _DropRecords(logging.Filter):
    """Drop log records whose message starts with a given text (used to silence Ultralytics' long CLI help)."""

    def __init__(self, text: str):
        """Remember the text to drop."""
        super().__init__()
        self.text = text.strip()[:40]

    def filter(self, record: logging.LogRecord) -> bool:
        """Keep records that do not start with the text."""
        return not record.getMessage().strip().startswith(self.text)


@contextlib.contextmanager
def _without(text: str) -> Iterator[None]:
    """Temporarily drop LOGGER records starting with ``text``."""
    f = _DropRecords(text)
    LOGGER.addFilter(f)
    try:
        yield
    finally:
        LOGGER.removeFilter(f)


def ultralytics_args(argv: list[str]) -> list[str] | None:
    """The arguments for Ultralytics' CLI when ``argv`` asks for one of its commands (``val``...), else None.

    Examples:
        >>> ultralytics_args(["detect", "predict", "source=a.jpg"])
        ['detect', 'predict', 'source=a.jpg']
    """
    words = [(i, a.lower()) for i, a in enumerate(argv) if "=" not in a]
    if not words:
        return None
    (i, first), second = words[0], words[1][1] if len(words) > 1 else None
    if first == "yolo":
        return argv[i + 1 :]
    if first in PASSTHROUGH or (first in TASKS and second in PASSTHROUGH):
        return list(argv)
    return None


def run_ultralytics(args: list[str]) -> None:
    """Run Ultralytics' own CLI (``yolo``) on ``args``, exactly as the command line gave them when it did."""
    from ultralytics.cfg import entrypoint as yolo

    if args == sys.argv[1:]:
        yolo()  # Ultralytics reads sys.argv itself: arguments with spaces arrive intact
    else:
        yolo(debug=" ".join(["yolo", *args]))


def parse(argv: list[str]) -> tuple[str, dict[str, Any]]:
    """Parse ``MODE key=value ...`` with Ultralytics' parser and check every key; return the mode and the overrides."""
    from yolokd.bench.config import BENCH_DEFAULTS
    from yolokd.bench.sweep import SWEEP_DEFAULTS
    from yolokd.demo import DEMO_DEFAULTS

    mode, overrides = None, {}
    for a in merge_equals_args(argv):
        a = a[2:] if a.startswith("--") else a
        if "=" in a:
            try:
                k, v = parse_key_value_pair(a)
            except (NameError, SyntaxError, ValueError, AssertionError) as e:
                raise KDError(f"cannot parse '{a}': {e}") from e
            overrides[k] = v
        elif mode is None and "task" not in overrides and a.lower() in KD_TASKS:
            overrides["task"] = a.lower()  # 'yolokd segment train ...', as 'yolo segment train ...'
        elif mode is None and a.lower() in MODES + ("-h", "h"):
            mode = "help" if a.lower() in {"-h", "h"} else a.lower()
        elif mode == "methods" and "name" not in overrides:
            overrides["name"] = a  # 'yolokd methods cwd': one method's yaml
        elif a in DEFAULT_CFG_DICT and isinstance(DEFAULT_CFG_DICT[a], bool) or a in {"resume", "baseline"}:
            overrides[a] = True  # bare boolean flags, as in 'yolo train resume'
        else:
            raise KDError(f"unknown argument '{a}'; use key=value pairs after one of the modes {list(MODES)}")
    mode = mode or "help"
    sweep = {**BENCH_DEFAULTS, **SWEEP_DEFAULTS}
    if mode == "methods":
        return mode, overrides  # only the optional method name
    extra = {"demo": DEMO_DEFAULTS, "benchmark": BENCH_DEFAULTS, "sweep": sweep}.get(mode, {})
    term_weights = {k: None for k in overrides if k.startswith(TERM_WEIGHT)}  # term_weights.<name>=w
    valid = {**DEFAULT_CFG_DICT, **KD_DEFAULTS, **term_weights, **extra}
    try:
        with _without(CLI_HELP_MSG):
            check_dict_alignment(valid, overrides)
    except SyntaxError as e:
        raise KDError(" ".join(str(e).split())) from e
    return mode, overrides


def main(argv: list[str] | None = None) -> int:
    """Run the CLI on ``argv`` (default ``sys.argv[1:]``); return the exit code (0 ok, 2 for a usage or input error)."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        if (args := ultralytics_args(argv)) is not None:
            words = [a.lower() for a in args if "=" not in a]
            if any(w in TRAINING_MODES for w in words[:2]):
                raise KDError(
                    f"'yolokd yolo {' '.join(words[:2])}' would train without a teacher; distil with 'yolokd train "
                    f"model=... teacher=... data=...', or run Ultralytics' own 'yolo' for a plain training"
                )
            run_ultralytics(args)
            return 0
        mode, overrides = parse(argv)
        if mode == "help":
            LOGGER.info(HELP)
        elif mode == "version":
            from yolokd import __version__

            LOGGER.info(__version__)
        elif mode == "cfg":
            LOGGER.info((cfg_dir() / "default.yaml").read_text())
        elif mode == "methods":
            from yolokd.catalog import describe_methods, method_yaml

            if set(overrides) - {"name"}:
                raise KDError(
                    f"'yolokd methods' takes at most a method name, e.g. 'yolokd methods cwd'; got {overrides}"
                )
            LOGGER.info(method_yaml(overrides["name"]) if "name" in overrides else describe_methods())
        elif mode == "demo":
            from yolokd.demo import run_demo

            run_demo(**overrides)
        elif mode == "benchmark":
            from yolokd.bench.run import run_benchmark

            run_benchmark(**overrides)
        elif mode == "sweep":
            from yolokd.bench.sweep import run_sweep

            run_sweep(**overrides)
        elif mode == "train":
            from yolokd.model import YOLOKD

            model = overrides.pop("model", None)
            if model is None:
                raise KDError("model= is required, e.g. model=yolov8s.yaml (from scratch) or model=yolov8s.pt")
            kd, overrides = split_kd_args(overrides)
            method, task = kd.pop("method", None), overrides.pop("task", None)
            YOLOKD(model, method=method, task=task, **kd).train(**overrides)
        return 0
    except KDError as e:
        LOGGER.error(f"{PREFIX}error: {e}")
        return 2
    except (FileNotFoundError, ConnectionError) as e:
        LOGGER.error(f"{PREFIX}error: {' '.join(str(e).split())}")
        return 2
    except KeyboardInterrupt:
        LOGGER.error(
            f"{PREFIX}interrupted; 'last.pt' of the run holds the latest epoch (resume with "
            f"'yolokd train resume model=.../weights/last.pt')"
        )
        return 130


def entrypoint() -> None:
    """Console-script entry point."""
    sys.exit(main())
