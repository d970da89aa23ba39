# yolokd, AGPL-3.0 License
"""The bare-student checkpoint layout, crash-safe writes and Ctrl-C deferral: everything yolokd does to ``.pt`` files.

Every file is a plain Ultralytics checkpoint whose ``ema``/``model`` is the bare student; what resume needs (config,
fp32 adapters, progress, non-finite skips, balance state) travels under `CKPT_KEY`. `staged` lets Ultralytics
write into a hidden folder and `publish` moves each fsync'ed file over its target with ``os.replace``.
`SigintGuard` defers Ctrl-C during those writes.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn
from ultralytics.utils import LOGGER
from ultralytics.utils.patches import torch_load

from yolokd.config import KDError

CKPT_KEY = "yolokd"  # extra checkpoint key; plain Ultralytics ignores it
STAGE = ".yolokd-partial"  # hidden folder beside the files, on the same file system (os.replace is atomic there)


# ---------------------------------------------------------------------------------------------- layout
def kd_state(model: nn.Module) -> dict[str, Any]:
    """The `CKPT_KEY` entry of a live, unwrapped `KDModel`: KD config, fp32 adapters, progress, term state."""
    return {
        "config": model.kd_config.to_dict(),
        "projector": {k: v.detach().float().cpu() for k, v in model.projector.state_dict().items()},
        "progress": dataclasses.asdict(model.progress),
        "nonfinite_skips": dict(model.flush_nonfinite()),
        "balance": None if model.balance is None else model.balance.state_dict(),
        "catchup": float(getattr(model, "catchup", 1.0)),
        "catchup_first": getattr(model, "catchup_first", None),
    }


def restore_kd_state(model: nn.Module, ckpt: dict | None) -> bool:
    """Load the adapters and term state of ``ckpt[CKPT_KEY]`` into a `KDModel`; False when the entry holds none."""
    state = (ckpt or {}).get(CKPT_KEY) or {}
    if state.get("projector") is None:
        return False
    model.projector.load_state_dict(state["projector"])
    model.nonfinite_skips.update(state.get("nonfinite_skips") or {})
    if model.balance is not None and state.get("balance"):
        model.balance.load_state_dict(state["balance"])
    model.catchup = float(state.get("catchup", 1.0))
    model.catchup_first = state.get("catchup_first")
    return True


def final_entry(ckpt: dict) -> dict:
    """``ckpt`` with its `CKPT_KEY` entry reduced to the config (provenance): a final file has no adapters."""
    if isinstance(ckpt.get(CKPT_KEY), dict):
        ckpt = {**ckpt, CKPT_KEY: {"config": ckpt[CKPT_KEY].get("config")}}
    return ckpt


def saved_config(path: str | Path) -> dict[str, Any]:
    """The KD config dict stored in a checkpoint ({} if it holds none), or a one-line `KDError` naming the fix."""
    src = Path(str(path))
    if not src.is_file():
        raise KDError(f"resume checkpoint '{src}' not found; pass model=path/to/weights/last.pt of the run")
    try:
        ckpt = torch_load(src, map_location="cpu")
    except Exception as e:
        raise KDError(
            f"resume checkpoint '{src}' is not readable ({type(e).__name__}), e.g. truncated by a crash; pass the "
            f"run's intact last.pt, or start a new run from its best.pt or an epochN.pt"
        ) from e
    return dict(((ckpt if isinstance(ckpt, dict) else {}).get(CKPT_KEY) or {}).get("config") or {})


class _EMAView(nn.Module):
    """The state-dict layout of a `KDModel` EMA (student + projector), rebuilt from a bare-student checkpoint."""

    def __init__(self, student_model: nn.Module, projector: nn.Module):
        """Hold the two parts under the names `KDModel` uses."""
        super().__init__()
        self.student_model = student_model
        self.projector = projector


def as_wrapper_ckpt(ckpt: dict, projector: nn.Module) -> dict:
    """A shallow copy of ``ckpt`` whose ``ema`` has the `KDModel` layout (student + a copy of ``projector``)."""
    ema = ckpt.get("ema")
    if ema is None or hasattr(ema, "student_model"):
        return ckpt
    view_projector = copy.deepcopy(projector).cpu()
    state = (ckpt.get(CKPT_KEY) or {}).get("projector")
    if state:
        view_projector.load_state_dict(state)
    return {**ckpt, "ema": _EMAView(ema, view_projector)}


@contextlib.contextmanager
def wrapper_view(path: Path, projector: nn.Module) -> Iterator[Path]:
    """A temporary copy of checkpoint ``path`` in the wrapper layout (`as_wrapper_ckpt`), removed afterwards."""
    with tempfile.TemporaryDirectory() as d:
        view = Path(d) / path.name
        torch.save(as_wrapper_ckpt(torch_load(path, map_location="cpu"), projector), view)
        yield view


# ---------------------------------------------------------------------------------------------- crash-safe writes
def _fsync_dir(d: Path) -> None:
    """Make a rename in ``d`` durable (no-op where directories cannot be opened, e.g. Windows)."""
    with contextlib.suppress(OSError):
        fd = os.open(d, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def publish(src: Path, dst: Path) -> None:
    """Flush ``src`` to disk and rename it over ``dst`` (atomic on one file system)."""
    with open(src, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(src, dst)


class _PublishedPaths(logging.Filter):
    """Rewrite the staging folder to the folder the files are published in, in the log lines of a `staged` block."""

    def __init__(self, stage: Path, wdir: Path):
        """Remember both folders."""
        super().__init__()
        self.stage, self.wdir = str(stage), str(wdir)

    def filter(self, record: logging.LogRecord) -> bool:
        """Keep every record; name the published file (e.g. Ultralytics' final 'Validating .../best.pt...')."""
        if isinstance(record.msg, str) and self.stage in record.msg:
            record.msg = record.msg.replace(self.stage, self.wdir)
        return True


@contextlib.contextmanager
def staged(trainer: Any, carry: tuple[Path, ...] = ()) -> Iterator[Path]:
    """Let Ultralytics write the trainer's checkpoint files into a hidden folder; publish them when the block ends.

    The trainer's ``wdir``, ``last`` and ``best`` point into the folder during the block; a block that raises
    publishes nothing.

    Args:
        trainer (BaseTrainer): The trainer.
        carry (tuple[Path, ...]): Existing files to copy into the folder first, for code that rewrites them in place.

    Yields:
        (Path): The staging folder; the caller may still edit the files in it.
    """
    wdir, last, best = trainer.wdir, trainer.last, trainer.best
    stage = wdir / STAGE
    shutil.rmtree(stage, ignore_errors=True)  # leftovers of a killed save
    stage.mkdir(parents=True)
    for f in carry:
        if f.exists():
            shutil.copyfile(f, stage / f.name)
    trainer.wdir, trainer.last, trainer.best = stage, stage / last.name, stage / best.name
    names = _PublishedPaths(stage, wdir)
    LOGGER.addFilter(names)
    try:
        yield stage
    finally:
        trainer.wdir, trainer.last, trainer.best = wdir, last, best
        LOGGER.removeFilter(names)
    for f in sorted(stage.iterdir(), key=lambda p: p.name != last.name):  # last.pt first
        publish(f, wdir / f.name)
    _fsync_dir(wdir)
    stage.rmdir()


def rewrite(files: list[Path], edit) -> None:
    """Load the checkpoint all ``files`` hold, apply ``edit`` (dict -> dict) and write it back to each of them."""
    if not files:
        return
    ckpt = edit(torch_load(files[0], map_location="cpu"))
    torch.save(ckpt, files[0])
    data = files[0].read_bytes()
    for f in files[1:]:
        f.write_bytes(data)


# ---------------------------------------------------------------------------------------------- Ctrl-C
class SigintGuard:
    """One SIGINT handler for a whole run; inside `hold` a Ctrl-C is recorded and raised when the block ends.

    Outside `hold` a SIGINT goes at once to the previous handler. An ignored SIGINT (``nohup``) stays ignored; off the
    main thread the guard does nothing.

    Examples:
        >>> guard = SigintGuard()
        >>> with guard, guard.hold():
        ...     pass  # a checkpoint write that a Ctrl-C cannot cut
    """

    def __init__(self):
        """Start uninstalled, with nothing pending."""
        self.previous: Any = None
        self.installed = False
        self.depth = 0
        self.pending = False

    def __enter__(self) -> SigintGuard:
        """Install the handler (main thread, SIGINT not ignored)."""
        if threading.current_thread() is threading.main_thread():
            current = signal.getsignal(signal.SIGINT)
            if current not in (signal.SIG_IGN, None):
                self.previous = signal.signal(signal.SIGINT, self._handle)
                self.installed = True
        return self

    def __exit__(self, *exc) -> None:
        """Give the previous handler back (a SIGINT pending at that instant is handled by CPython before the swap)."""
        if self.installed:
            self.installed = False
            signal.signal(signal.SIGINT, self.previous)

    def _handle(self, signum: int, frame: Any) -> None:
        """Record the signal inside `hold`, forward it otherwise."""
        if self.depth:
            self.pending = True
        else:
            self._pass_on(signum, frame)

    def _pass_on(self, signum: int, frame: Any) -> None:
        """Act as the previous handler would have."""
        if callable(self.previous):
            self.previous(signum, frame)
        elif self.previous != signal.SIG_IGN:  # SIG_DFL: Python's default for SIGINT is to raise KeyboardInterrupt
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        """Hold a SIGINT back until the block ends (nested blocks: until the outermost ends)."""
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1
            if not self.depth and self.pending:
                self.pending = False
                self._pass_on(signal.SIGINT, None)
