# yolokd, AGPL-3.0 License
"""The registry of distillation terms: ``{type: Term subclass}``, filled by `register`, and the types' old names."""

from __future__ import annotations

from yolokd.losses.base import DistillInputs, Probe, Side, Term

TERMS: dict[str, type[Term]] = {}
TERM_ALIASES: dict[str, str] = {}
"""Old type names that method yamls may still use -> the registered type (each term's ``aliases``)."""


def register(cls: type[Term]) -> type[Term]:
    """Class decorator adding a `Term` subclass to `TERMS` under its ``type``, and its ``aliases`` to `TERM_ALIASES`."""
    for name in (cls.type, *cls.aliases):
        if not name or name in TERMS or name in TERM_ALIASES:
            raise ValueError(f"term type '{name}' is empty or already registered")
    TERMS[cls.type] = cls
    TERM_ALIASES.update(dict.fromkeys(cls.aliases, cls.type))
    return cls


def term_type(name: str) -> str:
    """The registered type that a method yaml's ``type`` names: the name itself, or the type of an old name.

    Examples:
        >>> term_type("kpt_kd"), term_type("cwd"), term_type("nope")
        ('keypoint', 'cwd', 'nope')
    """
    return TERM_ALIASES.get(name, name)


def _import_builtin_terms() -> None:
    """Import every module of this package but the core ones: each registers its terms with `register`."""
    import importlib
    import pkgutil

    for info in pkgutil.iter_modules(__path__):
        if info.name not in {"base", "functional"}:
            importlib.import_module(f"{__name__}.{info.name}")


_import_builtin_terms()

__all__ = ["TERMS", "TERM_ALIASES", "DistillInputs", "Probe", "Side", "Term", "register", "term_type"]
