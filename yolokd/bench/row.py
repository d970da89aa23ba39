# yolokd, AGPL-3.0 License
"""One benchmark row for one seed: its own process, its training with timed iterations, its evaluation.

``python -m yolokd.bench.row --row spec.json`` runs `run_row` and writes ``result.json`` beside the spec.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from ultralytics.utils import LOGGER, YAML

from yolokd.bench.profile import load_plain_teacher
from yolokd.bench.stats import summarize
from yolokd.bench.timing import sync
from yolokd.config import PREFIX

ROW_MODULE = "yolokd.bench.row"  # run with ``python -m`` by `launch_row`


class StepTimer:
    """Callbacks that time each training iteration and, optionally, a teacher forward at the same batch and size.

    Iterations run from ``on_train_batch_start`` to ``on_train_batch_end`` (data loading is outside); the teacher
    forward (eval, ``no_grad``, random images) is timed before a step's clock starts.

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

    def _timed(self, epoch: int, i: int) -> bool:
        """Whether iteration ``i`` of ``epoch`` counts (not the first epoch unless it is the only one)."""
        return (epoch > 0 or self.epochs == 1) and i >= self.skip

    def teacher_forward(self, batch: int, imgsz: int) -> float:
        """Time one teacher forward (loading the teacher and warming it up on the first call)."""
        import torch

        device = self._device or torch.device("cpu")
        if self._teacher is None:
            self._teacher = load_plain_teacher(self.teacher_path, device)
            g = torch.Generator().manual_seed(0)  # a private generator: the training's random streams are untouched
            self._x = torch.rand(batch, 3, imgsz, imgsz, generator=g).to(device)
            for _ in range(2):
                self.teacher_forward(batch, imgsz)
        sync(self._device)
        t = time.perf_counter()
        with torch.no_grad(), torch.autocast(device.type, enabled=self._amp and device.type == "cuda"):
            self._teacher(self._x)
        sync(self._device)
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
        sync(self._device)
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer) -> None:
        """Stop the step's clock."""
        sync(self._device)
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

    def forward_summary(self, batch: int, imgsz: int) -> dict[str, Any]:
        """Mean teacher forward time, topping up after training when too few iterations were timed."""
        while len(self.forwards) < self.teacher_batches:
            self.forwards.append(self.teacher_forward(batch, imgsz))
        s = summarize(self.forwards) or {}
        return {"mean_s": s.get("mean"), "std_s": s.get("std"), "n": len(self.forwards)}


def evaluate(weights: str | Path, data: str, split: str, imgsz: int, batch: int, out: Path) -> dict[str, float]:
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


def read_curve(results_csv: Path, key: str = "metrics/mAP50-95(B)") -> list[float] | None:
    """The per-epoch validation metric from ``results.csv``; None without it, the column, or with ``val=False``."""
    args = Path(results_csv).parent / "args.yaml"
    if args.is_file() and YAML.load(args).get("val") is False:
        return None
    try:
        with open(results_csv, newline="") as f:
            rows = [{k.strip(): v for k, v in r.items() if k} for r in csv.DictReader(f)]
        return [float(r[key]) for r in rows if (r.get(key) or "").strip()] or None
    except (OSError, KeyError, ValueError):
        return None


def maxrss_mib() -> float | None:
    """Peak resident memory of this process in MiB: ``VmHWM`` on Linux (reset at ``exec``), else ``ru_maxrss``."""
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


def _model(spec: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """The row's model and the extra Ultralytics arguments of its kind (the built-in distillation's)."""
    from ultralytics import YOLO

    from yolokd.model import YOLOKD

    if spec["kind"] in {"yolokd", "combo"}:
        # the teacher is validated once, as for a user: the catchup rule reads its score
        kd = {k: spec[k] for k in ("catchup", "catchup_pace") if spec.get(k) is not None}
        if spec.get("unlabeled") is not None:  # a semi-supervised row: False, or a folder (None: the data yaml's key)
            kd["unlabeled"] = spec["unlabeled"]
        return YOLOKD(spec["student"], teacher=spec["teacher"], method=spec["method"], teacher_val=True, **kd), {}
    extra = {"distill_model": spec["teacher"], "dis": spec["dis"]} if spec["kind"] == "builtin" else {}
    return YOLO(spec["student"]), extra


def _train_and_evaluate(spec: dict[str, Any], out: Path, result: dict[str, Any]) -> None:
    """Train the row with its timer, then evaluate its checkpoint on both splits; fills ``result``."""
    timer = StepTimer(
        spec["epochs"],
        teacher=spec["teacher"] if spec.get("time_teacher") else None,
        teacher_batches=spec["teacher_batches"],
    )
    model, extra = _model(spec)
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
        result["teacher_forward"] = timer.forward_summary(spec["batch"], spec["imgsz"])
    weights = out / "train" / "weights" / f"{spec['weights']}.pt"
    for key in ("val", "test"):
        result[key] = evaluate(weights, spec["data"], spec[f"{key}_split"], spec["imgsz"], spec["batch"], out)
    result["weights"] = str(weights)
    result["curve"] = read_curve(out / "train" / "results.csv")  # val mAP50-95 per epoch (val=True)


def run_row(spec: dict[str, Any]) -> dict[str, Any]:
    """Train and evaluate one row for one seed (in its own process); never raises but for KeyboardInterrupt.

    Args:
        spec (dict): ``kind`` (student | builtin | yolokd | combo), ``method``, ``seed``, ``student``, ``teacher``,
            ``data``, ``epochs``, ``imgsz``, ``batch``, ``train`` (Ultralytics arguments), ``dis``, ``dir``,
            ``val_split``, ``test_split``, ``weights``, ``time_teacher``, ``teacher_batches``.

    Returns:
        (dict): ``ok``, ``error``, ``val``/``test`` metrics, ``step``, ``teacher_forward``, ``maxrss_mib``, ``train_s``.
    """
    out = Path(spec["dir"])
    result: dict[str, Any] = {"ok": False, "error": None, "kind": spec["kind"], "seed": spec["seed"]}
    try:
        _train_and_evaluate(spec, out, result)
        result["ok"] = True
    except BaseException as e:  # a row's failure is a table cell, not a crash (KeyboardInterrupt re-raised below)
        msg = " ".join(str(e).split()) or type(e).__name__
        result["error"] = f"{type(e).__name__}: {msg}"[:500]
        LOGGER.error(f"{PREFIX}row failed:\n{traceback.format_exc()}")
        if isinstance(e, KeyboardInterrupt):
            raise
    finally:
        import torch

        result["maxrss_mib"] = maxrss_mib()
        if torch.cuda.is_available():
            result["gpu_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
        out.mkdir(parents=True, exist_ok=True)
        (out / "result.json").write_text(json.dumps(result, indent=2))
    return result


def _filled(spec: dict[str, Any]) -> dict[str, Any]:
    """``spec`` as plain JSON, each term's ``params`` completed with the term's defaults (unknown types as they are)."""
    from yolokd.config import term_param_defaults
    from yolokd.losses import TERMS

    spec = json.loads(json.dumps(spec))
    for t in spec.get("terms") or []:
        if isinstance(t, dict) and t.get("type") in TERMS:
            t["params"] = {**term_param_defaults(TERMS[t["type"]]), **(t.get("params") or {})}
    return spec


def same_row(stored: dict[str, Any], spec: dict[str, Any]) -> bool:
    """Whether a stored row spec trains what ``spec`` trains: equal once each term's defaults are filled in.

    A method yaml that starts to list a parameter at its default value (``gate: false``) is still the same row.
    """
    return _filled(stored) == _filled(spec)


def finished_result(spec: dict[str, Any]) -> dict[str, Any] | None:
    """The stored result of a row that finished (ok) in ``spec["dir"]`` with the same spec (`same_row`), else None."""
    out = Path(spec["dir"])
    try:
        same = same_row(json.loads((out / "spec.json").read_text()), spec)
        result = json.loads((out / "result.json").read_text()) if same else None
    except (OSError, json.JSONDecodeError):
        return None
    if not (result and result.get("ok")):
        return None
    return {"wall_s": None, **result, "reused": True, "log": str(out / "log.txt")}


def keep_superseded(out: Path) -> Path | None:
    """Move a finished (ok) row in ``out`` to ``out.prev<n>`` (the first free n) before it is trained again; its path.

    With reuse=True a row whose spec changed is trained again: its earlier result is kept beside, not deleted.
    """
    try:
        ok = json.loads((out / "result.json").read_text()).get("ok")
    except (OSError, json.JSONDecodeError, AttributeError):
        return None
    if not ok:
        return None
    n = 1
    while (dest := out.with_name(f"{out.name}.prev{n}")).exists():
        n += 1
    out.rename(dest)
    LOGGER.info(f"{PREFIX}row {out.name}: its settings changed, so it is trained again; the earlier run kept in {dest}")
    return dest


def _read_result(result_file: Path, log_file: Path, rc: int | str) -> dict[str, Any]:
    """The row's ``result.json``, or an error result from the exit status and the log's last line."""
    try:
        return json.loads(result_file.read_text())
    except (OSError, json.JSONDecodeError):
        tail = [ln for ln in log_file.read_text(errors="replace").splitlines() if ln.strip()][-1:] or ["no output"]
        return {"ok": False, "error": f"process ended ({rc}) without a result: {tail[0][:300]}"}


def launch_row(spec: dict[str, Any], timeout: float | None, reuse: bool = False) -> dict[str, Any]:
    """Run one row in a child process (or reuse an identical finished one); its result, or an error result."""
    if reuse and (done := finished_result(spec)) is not None:
        return done
    out = Path(spec["dir"])
    if reuse:
        keep_superseded(out)
    out.mkdir(parents=True, exist_ok=True)
    spec_file, result_file, log_file = out / "spec.json", out / "result.json", out / "log.txt"
    spec_file.write_text(json.dumps(spec, indent=2))
    result_file.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", ROW_MODULE, "--row", str(spec_file)]
    t0 = time.perf_counter()
    with open(log_file, "w") as log:
        try:
            rc: int | str = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            rc = f"timeout after {timeout:g} s"
    result = _read_result(result_file, log_file, rc)
    result["wall_s"] = time.perf_counter() - t0
    if result.get("ok"):
        result_file.write_text(json.dumps(result, indent=2))  # with its wall time, for reuse=True
    result["log"] = str(log_file)
    return result


def main(argv: list[str] | None = None) -> int:
    """``python -m yolokd.bench.row --row spec.json``: run one row; exit code 0 ok, 1 a failed row, 2 a usage error."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if len(argv) != 2 or argv[0] != "--row":
        LOGGER.error(f"{PREFIX}usage: python -m {ROW_MODULE} --row path/to/spec.json")
        return 2
    return 0 if run_row(json.loads(Path(argv[1]).read_text()))["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
