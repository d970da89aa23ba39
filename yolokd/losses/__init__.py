# yolokd, AGPL-3.0 License
"""The registry of distillation terms: ``{type: Term subclass}``, filled by `register`."""

from __future__ import annotations

from yolokd.losses.base import DistillInputs, Probe, Side, Term

TERMS: dict[str, type[Term]] = {}


def register(cls: type[Term]) -> type[Term]:
    """Class decorator adding a `Term` subclass to `TERMS` under its ``type``.

    Args:
        cls (type[Term]): The term class; its ``type`` must be a new, non-empty name.

    Returns:
        (type[Term]): The same class.
    """
    if not cls.type or cls.type in TERMS:
        raise ValueError(f"term type '{cls.type}' is empty or already registered")
    TERMS[cls.type] = cls
    return cls


def _import_builtin_terms() -> None:
    """Import every module of this package but the core ones: each registers its terms with `register`."""
    import importlib
    import pkgutil

    for info in pkgutil.iter_modules(__path__):
        if info.name not in {"base", "functional"}:
            importlib.import_module(f"{__name__}.{info.name}")


_import_builtin_terms()

__all__ = ["TERMS", "DistillInputs", "Probe", "Side", "Term", "register"]
