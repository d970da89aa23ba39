# yolokd, AGPL-3.0 License
"""Where to read: locate the Detect head structurally and tap its outputs with picklable hooks.

The hook class is Ultralytics' own picklable ``FeatureHook`` (it stores a module's output in a shared dict), so a
module that still carries one unpickles with plain Ultralytics. The Detect head's training output already holds its
inputs (``feats``: the neck levels) next to ``boxes`` and ``scores``, so one tap per model gives every term the neck
features and the head predictions without hard-coded layer indices or channel counts.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from ultralytics.nn.modules.head import Detect
from ultralytics.nn.tasks import guess_model_task

HEAD = "head"  # key of the Detect-output tap in the feature dicts


def detect_head(model: nn.Module) -> Detect:
    """Return the model's Detect head (the last ``Detect`` instance of ``model.model``).

    Args:
        model (nn.Module): An Ultralytics model with a ``model`` layer list.

    Returns:
        (Detect): The head.
    """
    heads = [m for m in getattr(model, "model", []) if isinstance(m, Detect)]
    if not heads:
        raise ValueError(f"{type(model).__name__} has no Detect head")
    return heads[-1]


def model_task(model: nn.Module) -> str:
    """Return an Ultralytics model's task (``detect``, ``segment``, ...)."""
    return getattr(model, "task", None) or guess_model_task(model)


def head_outputs(out: Any, branch: str = "one2many") -> dict[str, Any]:
    """Normalise a Detect head's output to its training dict (``boxes``, ``scores``, ``feats``).

    Handles the eval-mode ``(y, preds)`` tuple and the end-to-end ``{"one2many", "one2one"}`` dict.

    Args:
        out (Any): What the head returned.
        branch (str): Which branch of an end-to-end head to take.

    Returns:
        (dict): ``{"boxes": (N, 4*reg_max, A), "scores": (N, nc, A), "feats": [(N, C, H, W), ...]}``.
    """
    if isinstance(out, tuple):
        out = out[1]
    if isinstance(out, dict) and branch in out:
        out = out[branch]
    if not isinstance(out, dict) or "feats" not in out:
        raise TypeError(f"unexpected Detect output of type {type(out).__name__}")
    return out


@torch.no_grad()
def dummy_forward(model: nn.Module, store: dict, key: Any, imgsz: int, ch: int = 3) -> tuple[list[torch.Tensor], dict]:
    """Run one dummy forward in eval mode; return the tapped neck features and the other taps (mode restored).

    `yolokd.pair.probe_pair` builds a `KDModel`'s `Probe` (the measured shapes) from what it returns.

    Args:
        model (nn.Module): A model whose head is tapped into ``store[key]`` (and maybe head stages under other keys).
        store (dict): The taps' shared dict (emptied).
        key (Any): The head tap's key.
        imgsz (int): Square dummy input size (a multiple of the largest stride).
        ch (int): Input channels.

    Returns:
        (tuple[list[torch.Tensor], dict]): The neck features of the dummy input, and every other tap's output.
    """
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
    """Forward pre-hook for a Detect head: record its inputs (the neck levels) as ``{"feats": [...]}``, then stop.

    A teacher whose head outputs no term reads need not run its head: the forward ends here with `NeckReached`, which
    the caller catches. Picklable like Ultralytics' ``FeatureHook`` (a plain class holding the shared dict).

    Args:
        store (dict): The taps' shared dict.
        key (Any): The key under which the neck levels are stored (the head tap's key, so readers need no change).
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
