# yolokd, AGPL-3.0 License
"""Small builders shared by the tests."""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import textwrap

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from ultralytics.cfg import get_cfg
from ultralytics.nn.tasks import DetectionModel
from ultralytics.utils import DEFAULT_CFG

IMGSZ = 64


def build(cfg, nc: int = 6) -> DetectionModel:
    """A detection model from a yaml, with Ultralytics' default hyper-parameters attached (for its loss)."""
    torch.manual_seed(0)
    m = DetectionModel(str(cfg), nc=nc, verbose=False)
    m.args = get_cfg(DEFAULT_CFG)
    m.names = {i: f"c{i}" for i in range(nc)}
    return m


def toy_batch(n: int = 2, imgsz: int = IMGSZ) -> dict:
    """A deterministic batch with two boxes per image."""
    g = torch.Generator().manual_seed(0)
    boxes = torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.7, 0.6, 0.3, 0.4]]).repeat(n, 1)
    return {
        "img": torch.rand(n, 3, imgsz, imgsz, generator=g),
        "cls": torch.tensor([[0.0], [1.0]]).repeat(n, 1),
        "bboxes": boxes,
        "batch_idx": torch.arange(n).repeat_interleave(2).float(),
    }


def kd_model(
    student_cfg,
    teacher_cfg,
    method: str,
    nc: int = 6,
    imgsz: int = IMGSZ,
    balance: float | None = None,
    prepare_teacher=None,
):
    """A `KDModel` (train mode) for two yamls and a method string or yaml path, teacher in eval mode.

    ``balance`` is the run's key (None: as the method yaml says; 0: the yaml's fixed weights). ``prepare_teacher``
    is called on the teacher before the model is built (which folds its BatchNorm), e.g. to set its statistics.
    """
    from yolokd.config import build_config
    from yolokd.distill_model import KDModel

    student, teacher = build(student_cfg, nc), build(teacher_cfg, nc)
    if prepare_teacher is not None:
        prepare_teacher(teacher)
    teacher.eval()
    cfg = build_config({"teacher": "t.pt", "method": method, "balance": balance})
    model = KDModel(student, teacher, cfg, imgsz=imgsz)
    return model.train()


@contextlib.contextmanager
def captured_logs(level: int = logging.INFO):
    """Collect Ultralytics LOGGER records (the tests run it with YOLO_VERBOSE=False, so its level is lowered here)."""
    from ultralytics.utils import LOGGER

    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    old = LOGGER.level
    LOGGER.addHandler(handler)
    LOGGER.setLevel(level)
    try:
        yield records
    finally:
        LOGGER.removeHandler(handler)
        LOGGER.setLevel(old)


class _NoHostSync(TorchDispatchMode):
    """Fail on the operators that make the host wait for the device: reading a value, ``nonzero``, boolean masks."""

    aten = torch.ops.aten
    READS = {aten._local_scalar_dense.default, aten.nonzero.default, aten.masked_select.default}

    paused = 0  # > 0 inside `host_sync_allowed`

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if _NoHostSync.paused:
            return func(*args, **(kwargs or {}))
        indices = args[1] if func in (self.aten.index.Tensor, self.aten.index_put_.default) else ()
        if func in self.READS or any(i is not None and i.dtype == torch.bool for i in indices):
            raise AssertionError(f"host sync: {func} (a value read on the host, or a size that depends on values)")
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def no_host_sync():
    """Inside the block, raise on operations that would synchronise the host with an accelerator.

    Checked on any device through the dispatcher: ``item``/``float``/``bool`` of a tensor (``_local_scalar_dense``),
    ``nonzero``, ``masked_select``, indexing or assigning with a boolean mask; and ``Tensor.tolist``.
    """
    tolist = torch.Tensor.tolist

    def refuse(self, *args, **kwargs):
        if _NoHostSync.paused:
            return tolist(self, *args, **kwargs)
        raise AssertionError("host sync: Tensor.tolist")

    torch.Tensor.tolist = refuse
    try:
        with _NoHostSync():
            yield
    finally:
        torch.Tensor.tolist = tolist


@contextlib.contextmanager
def host_sync_allowed():
    """Inside `no_host_sync`, allow syncs again for a block that is not yolokd's own (e.g. Ultralytics' loss)."""
    _NoHostSync.paused += 1
    try:
        yield
    finally:
        _NoHostSync.paused -= 1


def train_one_kd_epoch(method: str, model: str, teacher: str, data: str, project, **callbacks):
    """Train one KD epoch (the e2e tests' settings) and snapshot the adapters before and after and the epoch losses.

    Args:
        method (str): The method.
        model (str): Student yaml.
        teacher (str): Teacher checkpoint.
        data (str): data.yaml.
        project (Path): Output folder (the run is ``project/run``).
        **callbacks: Extra trainer callbacks, ``event=fn(trainer, snap)``.

    Returns:
        (tuple): The trainer and ``snap``: ``before``/``after`` projector states and ``tloss`` (epoch means).
    """
    from yolokd.trainer import KDTrainer

    train = {"imgsz": IMGSZ, "batch": 8, "workers": 0, "plots": False, "seed": 0, "epochs": 1, "teacher_val": False}
    run = dict(model=model, teacher=teacher, method=method, data=data, project=str(project), name="run")
    trainer = KDTrainer(overrides={**run, **train})
    snap: dict = {}

    def first(tr):
        snap["before"] = {k: v.detach().clone() for k, v in tr.model.projector.state_dict().items()}

    def last(tr):
        snap["after"] = {k: v.detach().clone() for k, v in tr.model.projector.state_dict().items()}
        snap["tloss"] = {k: float(v) for k, v in tr.tloss.items()}  # epoch means, before results.csv rounding

    trainer.add_callback("on_train_start", first)
    trainer.add_callback("on_train_epoch_end", last)
    for event, fn in callbacks.items():
        trainer.add_callback(event, lambda tr, fn=fn: fn(tr, snap))
    trainer.train()
    return trainer, snap


def neck_inputs(s_feats, t_feats):
    """`DistillInputs` holding only neck features (student, teacher): what a neck term such as pkd or mgd reads."""
    from yolokd.losses import DistillInputs, Side

    return DistillInputs(Side(list(s_feats)), Side(list(t_feats)), batch={})


def plain_python(code: str, cwd) -> str:
    """Run ``code`` (dedented) in a fresh interpreter that does not get yolokd's path; return its output.

    The code itself asserts ``"yolokd" not in sys.modules`` where it checks that plain Ultralytics suffices.
    """
    env = {**os.environ, "PYTHONPATH": ""}
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env, cwd=cwd)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    return r.stdout + r.stderr
