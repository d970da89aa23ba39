# yolokd, AGPL-3.0 License
"""Small builders shared by the tests."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from ultralytics.cfg import get_cfg
from ultralytics.nn.tasks import DetectionModel
from ultralytics.utils import DEFAULT_CFG

IMGSZ = 64
KL_TOLERANCE = 1e-6  # how far below 0 float32 rounding may put a divergence (near equality it reaches about 1e-7)


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


def head_inputs(s_preds: dict, t_preds: dict, assigned=None, s_reg: int = 1, t_reg: int = 1, s_feats=(), t_feats=()):
    """`DistillInputs` holding head outputs (student, teacher), the TAL assignment and each head's reg_max (the
    probe's), and optionally neck features: what a head term such as hint_soft or bckd_box reads."""
    from yolokd.losses import DistillInputs, Side

    return DistillInputs(
        Side(list(s_feats), s_preds, reg_max=s_reg), Side(list(t_feats), t_preds, reg_max=t_reg), {}, assigned=assigned
    )


def plain_python(code: str, cwd) -> str:
    """Run ``code`` (dedented) in a fresh interpreter that does not get yolokd's path; return its output.

    The code itself asserts ``"yolokd" not in sys.modules`` where it checks that plain Ultralytics suffices.
    """
    env = {**os.environ, "PYTHONPATH": ""}
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env, cwd=cwd)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    return r.stdout + r.stderr


# ---------------------------------------------------------------------------------------- independent references
# Expected values in numpy or plain python, never the torch expression under test.


def np_sigmoid(x):
    """Logistic function, numpy (also on plain floats)."""
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))


def np_log_softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable log-softmax, numpy."""
    z = x - x.max(axis=axis, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=axis, keepdims=True))


def np_standardise(x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Per channel over (N, H, W): ``(x - mean) / (unbiased std + eps)``, numpy."""
    return (x - x.mean(axis=(0, 2, 3), keepdims=True)) / (x.std(axis=(0, 2, 3), ddof=1, keepdims=True) + eps)


def np_align_scale(s: np.ndarray, t: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """``s`` re-standardised to ``t``'s per-channel mean and unbiased std over (N, H, W), numpy."""
    ms, ss = s.mean((0, 2, 3), keepdims=True), s.std((0, 2, 3), ddof=1, keepdims=True)
    mt, st = t.mean((0, 2, 3), keepdims=True), t.std((0, 2, 3), ddof=1, keepdims=True)
    return (s - ms) / (ss + eps) * st + mt


def np_bernoulli_kl(s, t):
    """``KL(Bernoulli(sigmoid t) || Bernoulli(sigmoid s))`` elementwise, numpy (also on plain floats)."""
    p, q = np_sigmoid(s), np_sigmoid(t)
    return q * np.log(q / p) + (1 - q) * np.log((1 - q) / (1 - p))


def np_soft_bce(x, q):
    """Binary cross-entropy of logit ``x`` against the probability ``q``, numpy (also on plain floats)."""
    p = np_sigmoid(x)
    return -q * np.log(p) - (1.0 - q) * np.log(1.0 - p)


def np_giou(a, b):
    """GIoU of proper xyxy boxes along the last axis (``(..., 4)``: one pair, or rows of pairs), numpy."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    iw = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    ih = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = iw * ih
    union = (
        (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1]) + (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1]) - inter
    )
    ew = np.maximum(a[..., 2], b[..., 2]) - np.minimum(a[..., 0], b[..., 0])
    eh = np.maximum(a[..., 3], b[..., 3]) - np.minimum(a[..., 1], b[..., 1])
    return inter / union - (ew * eh - union) / (ew * eh)


def np_rotated_distance(a, b, eps: float = 1e-7):
    """Hellinger distance of rotated boxes xywhr as Gaussians (``(..., 5)``), numpy, with explicit 2 x 2 matrices:
    ``B = 1/8 d^T S^-1 d + 1/2 ln(det S / sqrt(det S_a det S_b))``, ``S = (S_a + S_b) / 2``, ``sqrt(1 - e^-B)``."""
    a, b = np.asarray(a, dtype=np.float64).reshape(-1, 5), np.asarray(b, dtype=np.float64).reshape(-1, 5)
    out = []
    for x, y in zip(a, b):
        covs = []
        for box in (x, y):
            c, s = np.cos(box[4]), np.sin(box[4])
            rot = np.array([[c, -s], [s, c]])
            covs.append(rot @ np.diag([box[2] ** 2 / 12, box[3] ** 2 / 12]) @ rot.T)
        mean = (covs[0] + covs[1]) / 2
        d = x[:2] - y[:2]
        bd = d @ np.linalg.inv(mean) @ d / 8 + 0.5 * np.log(
            np.linalg.det(mean) / np.sqrt(np.linalg.det(covs[0]) * np.linalg.det(covs[1]))
        )
        out.append(np.sqrt(1 - np.exp(-max(bd, eps)) + eps))
    return np.array(out)


def grads_finite(loss: torch.Tensor, *inputs: torch.Tensor) -> bool:
    """Backpropagate ``loss`` and check that it and the gradients of ``inputs`` are finite."""
    loss.backward()
    return bool(torch.isfinite(loss)) and all(bool(torch.isfinite(x.grad).all()) for x in inputs)


def logit_draws(shape: tuple[int, ...], draws: int = 50, seed: int = 0):
    """``draws`` (student, teacher) float32 logit pairs of ``shape`` from a fixed seed, for properties of a formula.

    The scale sweeps 1e-3 to 1e4 over the draws; of every three pairs one is independent, one nearly equal (teacher =
    student + 1e-3 x scale noise, where rounding is most likely to push a divergence below 0) and one has only the
    extreme logits +-1e4 (every sigmoid and softmax saturated).
    """
    g = torch.Generator().manual_seed(seed)
    for i, scale in enumerate(torch.logspace(-3, 4, draws).tolist()):
        s = torch.randn(shape, generator=g) * scale
        if i % 3 == 0:
            t = torch.randn(shape, generator=g) * scale
        elif i % 3 == 1:
            t = s + torch.randn(shape, generator=g) * (1e-3 * scale)
        else:
            s = torch.randn(shape, generator=g).sign() * 1e4
            t = torch.randn(shape, generator=g).sign() * 1e4
        yield s, t


# ------------------------------------------------------------------------------------------- hand-made term inputs
def assigned(fg, anchor_points=None, stride_tensor=None, target_bboxes=None):
    """A hand-made TAL assignment of the (N, A) positives ``fg`` (nested lists or a bool tensor).

    Ground-truth index and labels are 0; unspecified geometry is anchors at (0, 0), stride 8 and zero boxes. The
    geometry may be given as tensors or nested lists: ``anchor_points`` (A, 2), ``stride_tensor`` (A,) or (A, 1),
    ``target_bboxes`` (N, A, 4) xyxy pixels.
    """
    from yolokd.targets import Assigned

    fg_mask = torch.as_tensor(fg, dtype=torch.bool)
    n, a = fg_mask.shape
    as_float = lambda x: torch.as_tensor(x, dtype=torch.float32)  # noqa: E731
    return Assigned(
        fg_mask=fg_mask,
        target_gt_idx=torch.zeros(n, a, dtype=torch.long),
        target_bboxes=torch.zeros(n, a, 4) if target_bboxes is None else as_float(target_bboxes),
        anchor_points=torch.zeros(a, 2) if anchor_points is None else as_float(anchor_points),
        stride_tensor=torch.full((a, 1), 8.0) if stride_tensor is None else as_float(stride_tensor).view(-1, 1),
        target_labels=torch.zeros(n, a, dtype=torch.long),
    )


# -------------------------------------------------------------------------------------------- end-to-end loss items
def divergence_terms() -> tuple[type, ...]:
    """The terms whose value is a divergence (docs/methods.md), which float rounding may put just below 0.

    CWD (spatial softmax KL), CrossKD's box term (LD, a KL of the DFL bins; 1 - GIoU on heads without DFL), FG/BG's
    background term (binary KL), and the mask (binary KL) and keypoint (L1 plus the visibility KL) terms.
    """
    from yolokd.losses.crosskd import CrossKDBox
    from yolokd.losses.cwd import CWD
    from yolokd.losses.fgbg import FGBGBackground
    from yolokd.losses.keypoint import KeypointKD
    from yolokd.losses.mask import MaskKD

    return CWD, CrossKDBox, FGBGBackground, MaskKD, KeypointKD


def check_loss_items(values: dict[str, float], specs) -> None:
    """Each term's epoch-mean item ``<name>_loss`` in ``values`` is finite and non-zero; a divergence is at least
    ``-KL_TOLERANCE`` (with a barely trained teacher CrossKD's LD sits within rounding of 0), every other term > 0.

    Args:
        values (dict[str, float]): The trainer's ``tloss`` as floats, before results.csv rounds them.
        specs (list[TermSpec]): The run's terms (`yolokd.config.resolve_method`).
    """
    from yolokd.losses import TERMS

    divergences = divergence_terms()
    for spec in specs:
        value = values[f"{spec.name}_loss"]
        assert value != 0 and math.isfinite(value), (spec.name, value)
        if issubclass(TERMS[spec.type], divergences):
            assert value >= -KL_TOLERANCE, (spec.name, value)
        else:
            assert value > 0, (spec.name, value)
