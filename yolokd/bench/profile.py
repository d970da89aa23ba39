# yolokd, AGPL-3.0 License
"""A profile of one distillation step: where its time goes (teacher, student, detection loss, terms, backward).

`profile_method` builds the pair as training does, on random images, and times the step's parts with hooks on the
given model only, next to the floor (the plain teacher's forward and the undistilled step) and Ultralytics'
built-in step, measured the same way.
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
    """Mean milliseconds per training step of each part of ``kd.loss(batch)`` (`PARTS`) plus the backward pass.

    Returns ``{part: ms}`` plus ``step`` (the whole step) and ``other`` (the rest of ``loss``), after ``warmup``
    untimed steps and over ``steps`` timed ones.
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
    """Mean ms of the undistilled student's step (train mode, ``args`` set) as `profile_step` times a KD step."""
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

    The student is built anew from ``student_cfg`` with seed 0; Ultralytics loads the teacher from ``teacher_path``.
    """
    from ultralytics.nn.distill_model import DistillationModel

    student = _student(student_cfg, nc, batch["img"].device, dis=dis, imgsz=int(batch["img"].shape[-1]))
    return _loss_step_ms(DistillationModel(teacher_path, student).train(), batch, steps, warmup)


def profile_method(
    student_cfg: str, teacher_path: str, method: str, imgsz: int, batch: int, nc: int, device: str = "cpu"
) -> dict[str, Any]:
    """Profile one step of ``method`` for a student yaml and a teacher checkpoint, as training builds them.

    Returns ``method``, ``neck_only``, ``ms`` (`profile_step`), ``plain_teacher_ms``, ``plain_student_ms`` and
    ``builtin_ms`` (`builtin_step_ms`).
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
    """Markdown table of `profile_method` results, one row per method: ms per step, ``x floor``, ``x built-in``."""
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
    """One `profile_method` result per method: the median of each part over its rounds, and one floor for all methods.

    The floor's parts and the built-in step are the same models for every method: their median over every
    measurement gives each method the same reference.
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

    Methods are profiled in interleaved rounds, so that a slow spell of the machine falls on every method alike.
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
