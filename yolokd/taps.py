# yolokd, AGPL-3.0 License
"""Where to read: locate the Detect head structurally and tap its outputs with Ultralytics' picklable ``FeatureHook``.

The head's training output holds its inputs (``feats``, the neck levels) next to ``boxes`` and ``scores``, so one
tap per model serves every term without layer indices.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from ultralytics.nn.modules.head import Detect
from ultralytics.nn.tasks import guess_model_task

HEAD = "head"  # key of the Detect-output tap in the feature dicts


def detect_head(model: nn.Module) -> Detect:
    """Return the model's Detect head (the last ``Detect`` instance of ``model.model``)."""
    heads = [m for m in getattr(model, "model", []) if isinstance(m, Detect)]
    if not heads:
        raise ValueError(f"{type(model).__name__} has no Detect head")
    return heads[-1]


def model_task(model: nn.Module) -> str:
    """Return an Ultralytics model's task (``detect``, ``segment``, ...)."""
    return getattr(model, "task", None) or guess_model_task(model)


def head_outputs(out: Any, branch: str = "one2many") -> dict[str, Any]:
    """A Detect head's output (eval tuple, or ``branch`` of an end-to-end dict) as its training dict."""
    if isinstance(out, tuple):
        out = out[1]
    if isinstance(out, dict) and branch in out:
        out = out[branch]
    if not isinstance(out, dict) or "feats" not in out:
        raise TypeError(f"unexpected Detect output of type {type(out).__name__}")
    return out


@torch.no_grad()
def dummy_forward(model: nn.Module, store: dict, key: Any, imgsz: int, ch: int = 3) -> tuple[list[torch.Tensor], dict]:
    """Run one dummy forward in eval mode; return the tapped neck features and every other tap's output."""
    was_training = model.training
    p = next(model.parameters())
    model.eval()
    try:
        try:
            model(torch.zeros(1, ch, imgsz, imgsz, device=p.device, dtype=p.dtype))
        except NeckReached:  # a teacher that stops at its neck (`NeckStop`)
            pass
        feats = list(head_outputs(store.pop(key))["feats"])
        others = dict(store)
        store.clear()
        return feats, others
    finally:
        model.train(was_training)


class NeckReached(Exception):
    """Raised by `NeckStop` to end a forward at the Detect head's inputs; caught by the caller of that forward."""


class NeckStop:
    """Forward pre-hook for a Detect head: store its inputs as ``{"feats": [...]}`` under ``key``, then stop.

    Lets a teacher whose head outputs no term reads skip its head. Picklable, like ``FeatureHook``.
    """

    def __init__(self, store: dict, key: Any) -> None:
        """Remember where to store the neck levels."""
        self.store, self.key = store, key

    def __call__(self, module: nn.Module, args: tuple) -> None:
        """Store the head's input list and end the forward."""
        self.store[self.key] = {"feats": list(args[0])}
        raise NeckReached


def clear_neck_stops(module: nn.Module) -> None:
    """Remove every `NeckStop` from a module's forward pre-hooks (stale ones from a pickled or copied model)."""
    for handle_id, hook in list(module._forward_pre_hooks.items()):
        if isinstance(hook, NeckStop):
            del module._forward_pre_hooks[handle_id]
