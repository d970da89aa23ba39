# yolokd, AGPL-3.0 License
"""Automatic term weights (``balance=``): each term's weight from its measured size relative to the detection loss.

A term with ``balance: r > 0`` gets ``r x mean detection loss / mean raw term value`` over the first
`BALANCE_STEPS` steps, then frozen (reduced over DDP ranks once, kept in the checkpoint); ``distill_weight`` and
the schedules multiply on top. Terms with ``balance: 0`` keep their yaml ``weight``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

BALANCE_STEPS = 50  # training steps over which the term sizes are measured before the weights freeze


def balance_weights(
    det: torch.Tensor, raw: torch.Tensor, ratio: float | torch.Tensor, eps: float = 1e-12
) -> torch.Tensor:
    r"""Term weights that make every weighted term ``ratio`` times the detection loss (``balance=``).

    .. math::

        w_i = r \, \frac{\bar L_{det}}{\bar L_i} \quad (\bar L_i \ge \epsilon), \qquad w_i = 0 \text{ otherwise}

    with :math:`\bar L_{det}` the mean detection loss and :math:`\bar L_i` the mean raw value of term ``i``. Detached.

    Args:
        det (torch.Tensor): Mean detection loss, ``()``.
        raw (torch.Tensor): Mean raw value of each term, ``(n,)``.
        ratio (float | torch.Tensor): Target ratio ``r`` of each weighted term to the detection loss, or ``(n,)``.
        eps (float): Raw values below it give weight 0 (a term that never fires has nothing to balance).

    Returns:
        (torch.Tensor): The weights, ``(n,)`` float32.

    Examples:
        >>> balance_weights(torch.tensor(6.0), torch.tensor([2.0, 0.5, 0.0]), 0.5).tolist()  # 0.5*6/2, 0.5*6/0.5, 0
        [1.5, 6.0, 0.0]
    """
    det, raw = det.detach().float(), raw.detach().float()
    return torch.where(raw >= eps, ratio * det / raw.clamp_min(eps), torch.zeros_like(raw))


def effective_weights(specs: list, factors: list, auto: Any = None) -> list:
    """Each term's effective weight: its weight (the yaml's, or ``auto``'s where ``balance > 0``) times its factor.

    Args:
        specs (list[TermSpec]): The configured terms.
        factors (list): Each term's ``distill_weight x catchup x schedule`` (`KDModel.schedule_factors`).
        auto (Sequence, optional): The automatic weights (`AutoBalance`), one per term; None: every weight is fixed.

    Examples:
        >>> from yolokd.config import TermSpec
        >>> specs = [TermSpec("cwd", "cwd", weight=5.0, balance=0.25), TermSpec("hint", "hint", weight=2.0)]
        >>> effective_weights(specs, [0.5, 0.5], auto=[3.0, 0.0])
        [1.5, 1.0]
    """
    if auto is None:
        return [s.weight * f for s, f in zip(specs, factors)]
    return [(a if s.balance > 0 else s.weight) * f for s, a, f in zip(specs, auto, factors)]


class AutoBalance:
    """Running measurement of the detection loss and each raw term value, and the weights they give.

    Args:
        ratios (list[float]): Each term's ``balance``; 0 for a term with a fixed weight.
        steps (int): Training steps to measure over before freezing.

    Attributes:
        steps_seen (int): Steps measured so far.
        frozen (torch.Tensor | None): The frozen weights, ``(n_terms,)``, once ``steps_seen == steps``.
    """

    def __init__(self, ratios: list[float], steps: int = BALANCE_STEPS) -> None:
        """Start with no measurement."""
        if not ratios or min(ratios) < 0 or max(ratios) <= 0 or steps < 1:
            raise ValueError(f"AutoBalance: ratios must be >= 0, one > 0, and steps >= 1, got {ratios}, {steps}")
        self.n, self.ratios, self.steps = len(ratios), [float(r) for r in ratios], int(steps)
        self.sums: torch.Tensor | None = None  # (1 + n,): detection loss, then each raw term value
        self.counts: torch.Tensor | None = None  # (1 + n,): finite values added
        self.steps_seen = 0
        self.frozen: torch.Tensor | None = None

    def weights(self, det: torch.Tensor, raws: list[torch.Tensor | None]) -> torch.Tensor:
        """Add one step's values (while measuring) and return this step's ``(n_terms,)`` detached float32 weights.

        Args:
            det (torch.Tensor): The step's detection loss.
            raws (list[torch.Tensor | None]): Each term's unweighted value, None where not computed; non-finite ones
                are not counted.
        """
        if self.frozen is not None:
            return self.frozen.to(det.device)
        values = torch.stack([det.detach().float().reshape(())] + [_value(r, det) for r in raws])
        seen = torch.isfinite(values) & torch.tensor([True] + [r is not None for r in raws], device=det.device)
        if self.sums is None:
            self.sums, self.counts = torch.zeros_like(values), torch.zeros_like(values)
        self.sums = self.sums.to(det.device) + torch.where(seen, values, torch.zeros_like(values))
        self.counts = self.counts.to(det.device) + seen.float()
        self.steps_seen += 1
        if self.steps_seen >= self.steps:
            self._freeze()
        return self.current()

    def current(self) -> torch.Tensor:
        """The weights now: frozen, else from the running means (0 for a term not measured yet), ``(n_terms,)``."""
        if self.frozen is not None:
            return self.frozen
        if self.sums is None:
            return torch.zeros(self.n)
        means = self.sums / self.counts.clamp_min(1)
        ratios = torch.tensor(self.ratios, device=means.device)
        return balance_weights(means[0], means[1:], ratios) * (self.counts[1:] > 0)

    def _freeze(self) -> None:
        """Reduce the sums over the DDP ranks (once) and freeze the weights."""
        if dist.is_available() and dist.is_initialized():
            both = torch.cat([self.sums, self.counts])
            dist.all_reduce(both)
            self.sums, self.counts = both[: self.n + 1], both[self.n + 1 :]
        self.frozen = self.current()

    def state_dict(self) -> dict[str, Any]:
        """Plain, CPU state for the checkpoint."""
        cpu = lambda t: None if t is None else t.detach().cpu()  # noqa: E731
        return {
            "ratios": self.ratios,
            "steps": self.steps,
            "steps_seen": self.steps_seen,
            "sums": cpu(self.sums),
            "counts": cpu(self.counts),
            "frozen": cpu(self.frozen),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore `state_dict` output (a resumed run keeps its measurement or its frozen weights)."""
        self.steps_seen = int(state.get("steps_seen", 0))
        self.sums, self.counts, self.frozen = state.get("sums"), state.get("counts"), state.get("frozen")


def _value(raw: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    """A term's detached float32 scalar, or NaN (not counted) where it was not computed."""
    if raw is None:
        return torch.full((), float("nan"), device=like.device)
    return raw.detach().float().reshape(())
