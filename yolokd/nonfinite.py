# yolokd, AGPL-3.0 License
"""The non-finite guard of a distillation step: a NaN or Inf term is skipped, never reaches the student.

Such a term adds 0, the student tensors the terms read get a finite gradient, adapter gradients are cleaned, and
skips are counted on the device. Under CUDA AMP Ultralytics' GradScaler handles it instead.
"""

from __future__ import annotations

import torch
from ultralytics.utils import LOGGER, RANK

from yolokd.config import PREFIX


class _FiniteGrad(torch.autograd.Function):
    """Identity forward; the backward sets non-finite gradient entries to 0 (on the device, no host sync)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        """Return ``x`` as a new view."""
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        """Return the gradient with NaN and +-Inf set to 0."""
        return torch.nan_to_num(grad, nan=0.0, posinf=0.0, neginf=0.0)


def cuda_autocast() -> bool:
    """Whether CUDA autocast is on (``torch.is_autocast_enabled`` takes a device type from torch 2.4 on)."""
    try:
        return torch.is_autocast_enabled("cuda")
    except TypeError:  # torch < 2.4: the no-argument form is CUDA's
        return torch.is_autocast_enabled()


def finite_grad(x: torch.Tensor) -> torch.Tensor:
    """``x`` with the same values, but the gradient the terms send back through it is kept finite.

    Examples:
        >>> x = torch.tensor([0.0, 1.0], requires_grad=True)
        >>> torch.log(finite_grad(x)).mul(0).sum().backward()  # 0 x (1 / 0) = NaN at x = 0
        >>> x.grad
        tensor([0., 0.])
    """
    return _FiniteGrad.apply(x) if x.requires_grad else x


def finite_student(out: dict, stages: dict, device: torch.device) -> dict:
    """The student's head outputs and ``stages`` (in place) through `finite_grad` (not under CUDA AMP)."""
    if device.type == "cuda" and cuda_autocast():
        return out
    out = {
        k: [finite_grad(f) for f in v] if k == "feats" else finite_grad(v) if torch.is_tensor(v) else v
        for k, v in out.items()
    }
    stages.update({k: finite_grad(v) for k, v in stages.items()})
    return out


class NonFiniteGuard:
    """`KDModel`'s skip of non-finite terms: counts per term (``nonfinite_skips``), cleaned adapter gradients.

    The host class provides ``kd_config`` (its terms), ``projector``, ``nonfinite_skips`` and ``_nonfinite``.
    """

    def _drop_nonfinite(self, values: list[torch.Tensor]) -> list[torch.Tensor]:
        """Replace non-finite term values by 0 for this step and count them on the device (not under CUDA AMP)."""
        if not values:
            return values
        v = torch.stack(values)
        ok = torch.isfinite(v.detach())
        if self._nonfinite is None or self._nonfinite.device != v.device:
            self._nonfinite = torch.zeros(len(values), device=v.device)
        self._nonfinite += (~ok).float()
        return list(torch.where(ok, v, torch.zeros_like(v)).unbind())

    def flush_nonfinite(self) -> dict[str, int]:
        """Add the device-side skip counts to `nonfinite_skips` (one host read), warn once per term; return the dict."""
        pending, self._nonfinite = self._nonfinite, None
        if pending is not None:
            for spec, n in zip(self.kd_config.terms, pending.tolist()):
                if n <= 0:
                    continue
                first = spec.name not in self.nonfinite_skips
                self.nonfinite_skips[spec.name] = self.nonfinite_skips.get(spec.name, 0) + int(n)
                if first and RANK in {-1, 0}:
                    LOGGER.warning(
                        f"{PREFIX}term '{spec.name}' was NaN/Inf at {int(n)} step(s) and was skipped there; further "
                        f"skips are counted (TensorBoard kd_stats/nonfinite/{spec.name}) without a warning"
                    )
        return self.nonfinite_skips

    def clean_adapter_grads(self) -> None:
        """Set non-finite adapter gradients to 0, on the device (before each optimizer step)."""
        grads = [p.grad for p in self.projector.parameters() if p.grad is not None]
        for g in grads:
            torch.nan_to_num_(g, nan=0.0, posinf=0.0, neginf=0.0)
