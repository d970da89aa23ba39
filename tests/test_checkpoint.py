# yolokd, AGPL-3.0 License
"""The checkpoint layout, staged atomic writes and the SIGINT guard, without training."""

from __future__ import annotations

import os
import signal
import threading
import time
from types import SimpleNamespace

import pytest
import torch
from helpers import kd_model

from yolokd import checkpoint
from yolokd.checkpoint import CKPT_KEY, SigintGuard


def test_checkpoint_kd_state_round_trip_keeps_adapters_and_balance(pico_yaml):
    a = kd_model(pico_yaml, "yolov8n.yaml", "cwd")
    a.kd_config.terms[0].balance = 1.0
    from yolokd.balance import AutoBalance

    a.balance = AutoBalance([1.0])
    a.balance.steps_seen = 7
    a.balance.frozen = torch.tensor([3.5])
    a.nonfinite_skips["cwd"] = 2
    with torch.no_grad():
        for p in a.projector.parameters():
            p.add_(0.25)
    state = checkpoint.kd_state(a)
    b = kd_model(pico_yaml, "yolov8n.yaml", "cwd")
    b.balance = AutoBalance([1.0])
    assert checkpoint.restore_kd_state(b, {CKPT_KEY: state})
    sa, sb = a.projector.state_dict(), b.projector.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert b.balance.steps_seen == 7 and torch.equal(b.balance.frozen, torch.tensor([3.5]))
    assert b.nonfinite_skips == {"cwd": 2}
    assert not checkpoint.restore_kd_state(b, {CKPT_KEY: checkpoint.final_entry({CKPT_KEY: state})[CKPT_KEY]})
    assert checkpoint.final_entry({CKPT_KEY: state, "epoch": 3}) == {CKPT_KEY: {"config": state["config"]}, "epoch": 3}


def test_checkpoint_staged_publishes_every_file_or_none(tmp_path):
    wdir = tmp_path / "weights"
    wdir.mkdir()
    (wdir / "last.pt").write_bytes(b"old last")
    trainer = SimpleNamespace(wdir=wdir, last=wdir / "last.pt", best=wdir / "best.pt")
    with checkpoint.staged(trainer) as stage:
        assert trainer.wdir == stage and trainer.last == stage / "last.pt" and stage.parent == wdir
        trainer.last.write_bytes(b"new last")
        (trainer.wdir / "epoch3.pt").write_bytes(b"epoch 3")
    assert trainer.last == wdir / "last.pt" and trainer.best == wdir / "best.pt"
    assert (wdir / "last.pt").read_bytes() == b"new last" and (wdir / "epoch3.pt").read_bytes() == b"epoch 3"
    assert sorted(p.name for p in wdir.iterdir()) == ["epoch3.pt", "last.pt"]  # the staging folder is gone

    with pytest.raises(RuntimeError), checkpoint.staged(trainer, carry=(trainer.last,)):
        assert trainer.last.read_bytes() == b"new last"  # carried: code that rewrites in place finds the file
        trainer.last.write_bytes(b"half")
        raise RuntimeError("killed mid-save")
    assert (wdir / "last.pt").read_bytes() == b"new last"  # nothing published
    with checkpoint.staged(trainer):  # a later save clears the leftovers first
        assert list(trainer.wdir.iterdir()) == []


def test_checkpoint_saved_config_errors_name_the_file(tmp_path):
    from yolokd.config import KDError

    bad = tmp_path / "last.pt"
    bad.write_bytes(b"PK\x03\x04truncated")
    with pytest.raises(KDError, match=r"resume checkpoint '.*last.pt' is not readable .*truncated by a crash"):
        checkpoint.saved_config(bad)
    torch.save({"epoch": 1}, bad)
    assert checkpoint.saved_config(bad) == {}


@pytest.fixture
def python_sigint():
    """Python's own SIGINT handler for the test, even where the suite runs with SIGINT ignored (a shell's background
    job, nohup), as an interactive training process has it."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_sigint_guard_holds_a_signal_until_the_block_ends(python_sigint):
    with SigintGuard() as guard:
        with pytest.raises(KeyboardInterrupt):
            with guard.hold():
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.05)  # the handler runs here and only records it
                reached = True
        assert reached
        with pytest.raises(KeyboardInterrupt):  # outside a hold: at once, like Python's default
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_sigint_guard_leaves_an_ignored_sigint_ignored():
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # as in a background job or under nohup
    try:
        with SigintGuard() as guard, guard.hold():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


def test_sigint_guard_never_loses_a_signal_sent_at_random_moments(python_sigint):
    """A thread sends SIGINTs at random instants while the main thread enters and leaves holds: each one arrives."""
    import random

    rng = random.Random(0)
    n, got = 200, 0
    acked = threading.Event()

    def sender():
        for _ in range(n):
            if not acked.wait(5):
                return  # the last signal was lost: the main thread's loop ends at its deadline
            acked.clear()
            time.sleep(rng.uniform(0, 0.002))
            os.kill(os.getpid(), signal.SIGINT)

    with SigintGuard() as guard:
        t = threading.Thread(target=sender, daemon=True)
        t.start()
        deadline, ack = time.time() + 20, True
        while got < n and time.time() < deadline:
            try:  # a signal is sent only after the ack, and from then on the main thread is inside this try
                if ack:
                    ack = False
                    acked.set()
                while time.time() < deadline:
                    with guard.hold():
                        sum(range(50))
                    sum(range(50))
            except KeyboardInterrupt:
                got += 1
                ack = True
        t.join(1)
    assert got == n
