# yolokd, AGPL-3.0 License
"""What ``yolokd methods`` prints: each built-in method's paper, its terms (loss items) and their default weights."""

from __future__ import annotations

from yolokd.config import KDError, available_methods, cfg_dir, resolve_method, suggest


def method_source(name: str) -> str:
    """The first sentence of a built-in method yaml's header comment: its paper (title, authors, venue) or rationale.

    Examples:
        >>> method_source("cwd")
        'CWD: Channel-wise Knowledge Distillation for Dense Prediction (Shu et al., ICCV 2021, arXiv:2011.13256).'
    """
    lines = []
    for line in method_yaml(name).splitlines():
        if not line.startswith("#"):
            break
        text = line.lstrip("#").strip()
        if text and "License" not in text:
            lines.append(text)
    header, depth = " ".join(lines), 0
    for i, ch in enumerate(header):  # up to the first '.' outside parentheses and quotes
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if ch == "." and depth == 0 and (i + 1 == len(header) or header[i + 1] == " "):
            return header[: i + 1]
    return header


def method_yaml(name: str) -> str:
    """The text of a built-in method's yaml, or a one-line `KDError` naming the methods."""
    path = cfg_dir() / "methods" / f"{name}.yaml"
    if not path.is_file():
        raise KDError(f"unknown method '{name}'.{suggest(name, available_methods())} Available: {available_methods()}")
    return path.read_text()


def describe_methods() -> str:
    """Every built-in method: its source, then one line per term with its loss item, weights and schedule.

    Examples:
        >>> [line.split()[0] for line in describe_methods().splitlines() if line.startswith("cwd")]
        ['cwd']
    """
    blocks = []
    for name in available_methods():
        rows = [f"{name:<9} {method_source(name)}"]
        for t in resolve_method(name):
            weight = f"weight {t.weight:g}" + (" (used with balance=0)" if t.balance > 0 else "")
            auto = f"automatic balance {t.balance:g}" if t.balance > 0 else "fixed weight"
            params = " ".join(f"{k}={v}" for k, v in t.params.items())
            rows.append(f"{'':<9} {t.name + '_loss':<20} {weight:<34} {auto:<24} {t.schedule:<10} {params}".rstrip())
        blocks.append("\n".join(rows))
    usage = "yolokd methods NAME prints a method's yaml; combine methods with '+' (method=tar+cwd)"
    return "\n\n".join(["Built-in methods (cfg/methods/<name>.yaml):", *blocks, usage])
