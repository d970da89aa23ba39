# yolokd, AGPL-3.0 License
"""Shared private helpers of the formulas: upcasting, temperature, shape checks, graph-connected zeros, reductions."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def upcast(x: torch.Tensor) -> torch.Tensor:
    """Upcast to float32 unless already float64."""
    return x if x.dtype == torch.float64 else x.float()


def tempered(x: torch.Tensor, T: float) -> torch.Tensor:
    """``upcast(x) / T``, without the division (a full copy, forward and backward) at the usual ``T = 1``."""
    x = upcast(x)
    return x if T == 1 else x / T


def check_shapes(name: str, s: torch.Tensor, t: torch.Tensor, ndim: int, layout: str) -> None:
    """Raise ``ValueError`` unless ``s`` and ``t`` share one shape of rank ``ndim``."""
    if s.dim() != ndim:
        raise ValueError(f"{name}: student must have shape {layout} (rank {ndim}), got shape {tuple(s.shape)}")
    if s.shape != t.shape:
        raise ValueError(f"{name}: student and teacher shapes differ: {tuple(s.shape)} vs {tuple(t.shape)}")


def graph_zero(x: torch.Tensor) -> torch.Tensor:
    """Return a zero scalar connected to the graph of ``x`` (works for empty ``x``)."""
    return upcast(x).sum() * 0.0


def reduce_rows(
    loss: torch.Tensor, weight: torch.Tensor | None, avg_factor: float | torch.Tensor | None, name: str
) -> torch.Tensor:
    """Apply the row weight of shape ``(n,)`` and reduce: ``sum / avg_factor`` if given, else ``mean``."""
    if weight is not None:
        if weight.shape != loss.shape[:1]:
            raise ValueError(f"{name}: weight must have shape ({loss.shape[0]},), got {tuple(weight.shape)}")
        weight = upcast(weight)
        loss = loss * (weight if loss.dim() == 1 else weight.unsqueeze(-1))
    if avg_factor is None:
        return loss.mean()
    if isinstance(avg_factor, torch.Tensor):
        avg_factor = avg_factor.to(dtype=loss.dtype, device=loss.device).reshape(())
    return loss.sum() / avg_factor


def bernoulli_kl(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Elementwise ``KL(sigmoid(t) || sigmoid(s))`` of two logit tensors, in log-sigmoids (finite for logits of 1e4)."""
    q = t.sigmoid()
    return q * (F.logsigmoid(t) - F.logsigmoid(s)) + (1.0 - q) * (F.logsigmoid(-t) - F.logsigmoid(-s))
