# yolokd, AGPL-3.0 License
"""A profile of one distillation step: where its time goes (teacher, student, detection loss, terms, backward).

`profile_step` times the parts of ``KDModel.loss`` and the backward pass with forward hooks on the student and the
terms and thin timers around the model's own teacher forward and detection loss (on the given model instance only;
nothing of Ultralytics is touched). `profile_method` builds the pair as training does (the teacher loaded, folded and
stopped at the neck where the method allows it) on random images with a few boxes each, and adds the two parts of the
benchmark's floor measured the same way: the plain teacher's full, unfolded forward and the undistilled student's
step (its loss and backward), and the step of Ultralytics' built-in distillation on the same student, teacher and
images. The ratios ``x floor`` and ``x built-in`` compare methods without the data loading and optimizer of a training
row, so they vary less between runs than a row's ms per iteration.
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

import torch

from yolokd.bench.timing import sync

PARTS = ("teacher", "student", "detection loss", "terms", "backward")


class _Clock:
    """Accumulates the wall time of named parts over the timed steps."""

    def __init__(self, device: torch.device) -> None:
        """Start with no time."""
        self.device, self.on = device, False
        self.total: dict[str, float] = defaultdict(float)
        self._start: dict[Any, float] = {}

    def start(self, key: Any) -> None:
        """Start timing ``key`` (a part name, or a module for hooks)."""
        sync(self.device)
        self._start[key] = time.perf_counter()

    def stop(self, key: Any, part: str) -> None:
        """Stop timing ``key`` and add its time to ``part`` when the clock is on."""
        sync(self.device)
        t = time.perf_counter() - self._start.pop(key)
        if self.on:
            self.total[part] += t

    def timed(self, fn, part: str):
        """``fn`` wrapped so that each call is added to ``part``."""

        def call(*args, **kwargs):
            self.start(part)
            try:
                return fn(*args, **kwargs)
            finally:
                self.stop(part, part)

        return call


def profile_step(kd, batch: dict, steps: int = 10, warmup: int = 2) -> dict[str, float]:
    """Mean milliseconds per training step of each part of ``kd.loss(batch)`` plus the backward pass.

    Args:
        kd (KDModel): The distillation model, in train mode.
        batch (dict): A preprocessed batch (``img``, ``cls``, ``bboxes``, ``batch_idx``) on the model's device.
        steps (int): Timed steps.
        warmup (int): Untimed steps first.

    Returns:
        (dict[str, float]): ``{part: ms}`` for `PARTS`, plus ``step`` (the whole step) and ``other`` (the rest of
        ``loss``: taps, inputs, weights, the non-finite guard).
    """
    device = batch["img"].device
    clock = _Clock(device)
    hooks = [
        kd.student_model.register_forward_pre_hook(lambda m, a: clock.start(m)),
        kd.student_model.register_forward_hook(lambda m, a, o: clock.stop(m, "student")),
    ]
    for term in kd.terms:
        hooks.append(term.register_forward_pre_hook(lambda m, a: clock.start(m)))
        hooks.append(term.register_forward_hook(lambda m, a, o: clock.stop(m, "terms")))
    kd._teacher_forward = clock.timed(kd._teacher_forward, "teacher")
    kd._detection_loss = clock.timed(kd._detection_loss, "detection loss")
    try:
        for i in range(warmup + steps):
            clock.on = i >= warmup
            kd.zero_grad(set_to_none=True)
            clock.start("step")
            loss, _ = kd.loss(batch)
            clock.start("backward")
            loss.sum().backward()
            clock.stop("backward", "backward")
            clock.stop("step", "step")
    finally:
        for h in hooks:
            h.remove()
        del kd._teacher_forward, kd._detection_loss  # back to the class's methods
    ms = {k: 1000 * clock.total[k] / steps for k in (*PARTS, "step")}
    ms["other"] = ms["step"] - sum(ms[k] for k in PARTS)
    return ms


def random_batch(n: int, imgsz: int, nc: int, device: torch.device, boxes: int = 3, seed: int = 0) -> dict:
    """Random images with ``boxes`` random boxes each (normalised xywh), like a preprocessed training batch."""
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n * boxes, 2, generator=g) * 0.6 + 0.2
    wh = torch.rand(n * boxes, 2, generator=g) * 0.3 + 0.1
    return {
        "img": torch.rand(n, 3, imgsz, imgsz, generator=g).to(device),
        "cls": torch.randint(0, nc, (n * boxes, 1), generator=g).float().to(device),
        "bboxes": torch.cat([xy, wh], 1).to(device),
        "batch_idx": torch.arange(n).repeat_interleave(boxes).float().to(device),
    }


def _mean_ms(run, device: torch.device, steps: int, warmup: int, before=None) -> float:
    """Mean wall ms of ``run()`` over ``steps`` calls after ``warmup`` untimed ones; ``before()`` runs untimed first."""
    times = []
    for i in range(warmup + steps):
        if before is not None:
            before()
        sync(device)
        t = time.perf_counter()
        run()
        sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - t)
    return 1000 * sum(times) / len(times)


def _loss_step_ms(model: torch.nn.Module, batch: dict, steps: int, warmup: int) -> float:
    """Mean ms of ``model.loss(batch)`` and its backward, timed as `profile_step` times a KD step; grads cleared."""

    def step():
        loss, _ = model.loss(batch)
        loss.sum().backward()

    ms = _mean_ms(step, batch["img"].device, steps, warmup, before=lambda: model.zero_grad(set_to_none=True))
    model.zero_grad(set_to_none=True)
    return ms


def _student(student_cfg: str, nc: int, device: torch.device, **args: Any) -> torch.nn.Module:
    """The profiled student: built from its yaml with seed 0 on ``device``, with Ultralytics' default ``args``."""
    from ultralytics.cfg import get_cfg
    from ultralytics.nn.tasks import DetectionModel
    from ultralytics.utils import DEFAULT_CFG

    torch.manual_seed(0)
    student = DetectionModel(student_cfg, nc=nc, verbose=False).to(device)
    student.args = get_cfg(DEFAULT_CFG, args or None)
    return student


def plain_student_ms(student: torch.nn.Module, batch: dict, steps: int = 10, warmup: int = 2) -> float:
    """Mean ms of the undistilled student's step as `profile_step` times a KD step: its loss, then the backward.

    Args:
        student (nn.Module): The student detection model, in train mode (``args`` set, as Ultralytics' trainer does).
        batch (dict): A preprocessed batch on the model's device (`random_batch`).
        steps (int): Timed steps.
        warmup (int): Untimed steps first.
    """
    return _loss_step_ms(student, batch, steps, warmup)


def load_plain_teacher(teacher_path: str, device: torch.device) -> torch.nn.Module:
    """The teacher as the floor times it: the checkpoint's model as saved (unfolded), FP32, eval, on ``device``."""
    from ultralytics.nn.tasks import load_checkpoint

    return load_checkpoint(teacher_path)[0].float().eval().to(device)


def plain_teacher_ms(teacher_path: str, batch: dict, steps: int = 10, warmup: int = 2) -> float:
    """Mean ms of the teacher's full forward as loaded (unfolded, eval, no_grad): the teacher part of the floor."""
    device = batch["img"].device
    teacher = load_plain_teacher(teacher_path, device)
    with torch.no_grad():
        return _mean_ms(lambda: teacher(batch["img"]), device, steps, warmup)


def builtin_step_ms(
    student_cfg: str, teacher_path: str, batch: dict, nc: int, dis: float = 6.0, steps: int = 10, warmup: int = 2
) -> float:
    """Mean ms of a step of Ultralytics' built-in distillation (``DistillationModel``), timed like a yolokd step.

    As `profile_step` times a yolokd step: its loss (the unfolded teacher's full forward, the student, the projectors
    and the weighted L2), then the backward.

    Args:
        student_cfg (str): Student model yaml (built anew with seed 0, as `profile_method` builds it).
        teacher_path (str): Teacher checkpoint, loaded by Ultralytics itself.
        batch (dict): A preprocessed batch on the device the student is built on (`random_batch`).
        nc (int): Number of classes of the student.
        dis (float): The built-in loss weight (Ultralytics' default 6.0).
        steps (int): Timed steps.
        warmup (int): Untimed steps first.
    """
    from ultralytics.nn.distill_model import DistillationModel

    student = _student(student_cfg, nc, batch["img"].device, dis=dis, imgsz=int(batch["img"].shape[-1]))
    return _loss_step_ms(DistillationModel(teacher_path, student).train(), batch, steps, warmup)


def profile_method(
    student_cfg: str, teacher_path: str, method: str, imgsz: int, batch: int, nc: int, device: str = "cpu"
) -> dict[str, Any]:
    """Profile one step of ``method`` for a student yaml and a teacher checkpoint, as training builds them.

    Returns:
        (dict): ``method``, ``neck_only`` (the teacher stopped at its neck), ``ms`` (`profile_step`),
        ``plain_teacher_ms`` (`plain_teacher_ms`), ``plain_student_ms`` (`plain_student_ms`, the same student
        before it is wrapped) and ``builtin_ms`` (`builtin_step_ms`, the same student and teacher under Ultralytics'
        built-in distillation).
    """
    from yolokd.config import build_config
    from yolokd.distill_model import KDModel
    from yolokd.teacher import load_teacher

    dev = torch.device(device)
    student = _student(student_cfg, nc, dev)
    x = random_batch(batch, imgsz, nc, dev)
    student_ms = plain_student_ms(student.train(), x)
    kd = KDModel(student, load_teacher(teacher_path).to(dev), build_config({"teacher": teacher_path, "method": method}))
    kd.train()
    return {
        "method": method,
        "neck_only": kd.teacher_to_neck,
        "ms": profile_step(kd, x),
        "plain_teacher_ms": plain_teacher_ms(teacher_path, x),
        "plain_student_ms": student_ms,
        "builtin_ms": builtin_step_ms(student_cfg, teacher_path, x, nc),
    }


def format_profile(profiles: list[dict[str, Any]]) -> str:
    """Markdown table of `profile_method` results, one row per method, milliseconds per step.

    ``x floor`` is the step over the floor measured the same way: the undistilled student's step plus the plain
    teacher's forward; ``x built-in`` the step over Ultralytics' built-in distillation step (`builtin_step_ms`)
    ("—" for results without that measurement).

    Examples:
        >>> p = {"method": "cwd", "neck_only": True, "plain_teacher_ms": 20.0, "plain_student_ms": 80.0}
        >>> p["ms"] = {"teacher": 10.0, "student": 30.0, "detection loss": 5.0, "terms": 2.0, "backward": 50.0,
        ...            "other": 3.0, "step": 100.0}
        >>> p["builtin_ms"] = 125.0
        >>> print(format_profile([p]).splitlines()[2])
        | cwd | 10.0 (to the neck) | 20.0 | 30.0 | 5.0 | 2.0 | 50.0 | 3.0 | 100.0 | 80.0 | 1.00 | 125.0 | 0.80 |
    """
    head = (
        "| method | teacher | plain teacher (full, unfolded) | student forward | detection loss | terms | backward "
        "| other | step | undistilled step | x floor | built-in step | x built-in |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for p in profiles:
        ms = p["ms"]
        teacher = f"{ms['teacher']:.1f}" + (" (to the neck)" if p["neck_only"] else " (full)")
        cells = [teacher, f"{p['plain_teacher_ms']:.1f}"] + [f"{ms[k]:.1f}" for k in PARTS[1:]]
        cells += [f"{ms['other']:.1f}", f"{ms['step']:.1f}"]
        student = p.get("plain_student_ms")
        floor = None if student is None else student + p["plain_teacher_ms"]
        cells += ["—", "—"] if floor is None else [f"{student:.1f}", f"{ms['step'] / floor:.2f}"]
        builtin = p.get("builtin_ms")
        cells += ["—", "—"] if builtin is None else [f"{builtin:.1f}", f"{ms['step'] / builtin:.2f}"]
        lines.append(f"| {p['method']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def median_profiles(runs: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One `profile_method` result per method from its rounds: the median of every part's time, and one floor for all.

    The floor's parts (``plain_teacher_ms``, ``plain_student_ms``) and the built-in step (``builtin_ms``) are the same
    models for every method, so each is one quantity measured in every round of every method: its median over all of
    them gives each method the same, steadier reference.

    Examples:
        >>> runs = {"cwd": [{"method": "cwd", "plain_teacher_ms": t, "plain_student_ms": s, "ms": {"step": t * 5}}
        ...                 for t, s in ((20.0, 70.0), (30.0, 80.0), (22.0, 72.0))],
        ...         "tar": [{"method": "tar", "plain_teacher_ms": 40.0, "plain_student_ms": 90.0, "ms": {"step": 1.0}}]}
        >>> cwd, tar = median_profiles(runs)
        >>> cwd["ms"]["step"], cwd["rounds"], cwd["plain_teacher_ms"], tar["plain_teacher_ms"], tar["plain_student_ms"]
        (110.0, 3, 26.0, 26.0, 76.0)
    """
    from statistics import median

    every = [p for rounds in runs.values() for p in rounds]
    keys = [k for k in ("plain_teacher_ms", "plain_student_ms", "builtin_ms") if all(k in p for p in every)]
    floor = {k: median(p[k] for p in every) for k in keys}
    out = []
    for rounds in runs.values():
        ms = {k: median(p["ms"][k] for p in rounds) for k in rounds[0]["ms"]}
        out.append({**rounds[0], **floor, "rounds": len(rounds), "ms": ms})
    return out


def main(argv: list[str] | None = None) -> None:
    """``python -m yolokd.bench.profile --teacher T --methods cwd crosskd --rounds 3``: print the profile table.

    The methods are profiled in turn, ``rounds`` times over (interleaved, so that a slow spell of the machine falls
    on every method alike); each time is the median over the rounds, and the floor (the plain teacher's forward and
    the undistilled step, the same models for every method) and Ultralytics' built-in step the median over every
    measurement (`median_profiles`).
    """
    import argparse
    import tempfile
    from pathlib import Path

    from ultralytics.utils import TQDM

    from yolokd.config import PREFIX
    from yolokd.demo import resolve_model
    from yolokd.head import num_classes
    from yolokd.teacher import load_teacher

    ap = argparse.ArgumentParser(prog="python -m yolokd.bench.profile", description=main.__doc__.splitlines()[0])
    ap.add_argument("--teacher", required=True, help="teacher checkpoint (.pt)")
    ap.add_argument("--student", default="yolov8-pico", help="student model yaml (default: the benchmark's)")
    ap.add_argument("--methods", nargs="+", required=True, help="methods or method yamls")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds (the median is reported)")
    ap.add_argument("--imgsz", type=int, default=128)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the benchmark trains with 1)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    nc = num_classes(load_teacher(args.teacher))
    runs: dict[str, list] = {m: [] for m in args.methods}
    with tempfile.TemporaryDirectory() as tmp:
        student = resolve_model(args.student, Path(tmp))  # yolov8-pico: the benchmark's student, written here
        for m in TQDM([m for _ in range(args.rounds) for m in args.methods], desc=f"{PREFIX}profile"):
            runs[m].append(profile_method(student, args.teacher, m, args.imgsz, args.batch, nc, args.device))
    print(format_profile(median_profiles(runs)))


if __name__ == "__main__":
    main()
