# yolokd, AGPL-3.0 License
"""yolokd's own import graph, read with ``ast`` (lazy imports inside functions count too): no cycles, no private
names imported from another module."""

from __future__ import annotations

import ast
from pathlib import Path

import yolokd

ROOT = Path(yolokd.__file__).resolve().parent.parent


def _modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the yolokd package."""
    out = {}
    for p in (ROOT / "yolokd").rglob("*.py"):
        parts = list(p.relative_to(ROOT).with_suffix("").parts)
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    return out


def _graph() -> tuple[dict[str, set[str]], list[str]]:
    """Edges between yolokd modules, and the private names one module imports from another."""
    mods = _modules()

    def owner(name: str) -> str:
        while name not in mods:
            name = name.rpartition(".")[0]
        return name

    edges: dict[str, set[str]] = {m: set() for m in mods}
    private = []
    for m, path in mods.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                edges[m] |= {owner(a.name) for a in node.names if a.name.split(".")[0] == "yolokd"}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "yolokd":
                assert node.level == 0, f"{m}: relative import"
                for a in node.names:
                    full = f"{node.module}.{a.name}"
                    edges[m].add(full if full in mods else owner(node.module))
                    if a.name.startswith("_") and not a.name.startswith("__") and full not in mods:
                        private.append(f"{m} imports {a.name} from {node.module}")
        edges[m].discard(m)
    return edges, private


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every back edge found by a depth-first search, as the cycle it closes."""
    state: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(u: str) -> None:
        state[u] = 1
        stack.append(u)
        for v in sorted(edges[u]):
            if state.get(v) == 1:
                found.append([*stack[stack.index(v) :], v])
            elif v not in state:
                visit(v)
        stack.pop()
        state[u] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m)
    return found


def test_import_graph_has_no_cycle():
    edges, _ = _graph()
    assert "yolokd.bench.run" in edges and "yolokd.bench.config" in edges["yolokd.bench.run"]
    assert _cycles(edges) == []
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]  # the check itself finds one


def test_no_private_name_is_imported_across_modules():
    assert _graph()[1] == []


def _private_attribute_reads(mods: dict[str, Path] | None = None) -> list[str]:
    """``alias._name`` reads where ``alias`` is another yolokd module bound by an import (``kdf._up``, say)."""
    mods, out = mods or _modules(), []
    for m, path in mods.items():
        tree = ast.parse(path.read_text())
        aliases = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                aliases |= {(a.asname or a.name): a.name for a in node.names if a.name in mods}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "yolokd":
                full = {(a.asname or a.name): f"{node.module}.{a.name}" for a in node.names}
                aliases |= {k: v for k, v in full.items() if v in mods}
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
                if node.attr.startswith("_") and not node.attr.startswith("__") and aliases[node.value.id] != m:
                    out.append(f"{m} reads {aliases[node.value.id]}.{node.attr}")
    return out


def test_no_module_reads_another_modules_private_attribute(tmp_path):
    assert _private_attribute_reads() == []
    probe = tmp_path / "probe.py"  # the check itself finds one
    probe.write_text("from yolokd.losses import functional as kdf\n\nX = kdf._shared\n")
    mods = {"yolokd.losses.functional": _modules()["yolokd.losses.functional"], "yolokd.probe": probe}
    assert _private_attribute_reads(mods) == ["yolokd.probe reads yolokd.losses.functional._shared"]


def test_bench_imports_nothing_that_imports_the_cli():
    edges, _ = _graph()
    assert not any(m.startswith("yolokd.bench") and "yolokd.cli" in e for m, e in edges.items())
    assert edges["yolokd.bench"] == set()  # the package file imports nothing: `python -m yolokd.bench.row` is clean


def test_private_ultralytics_names_used_are_the_documented_ones():
    """The private Ultralytics names yolokd uses (read from its code) are exactly the list in the trainer docstring."""
    import re

    import ultralytics

    import yolokd.trainer

    seams = ("engine/trainer.py", "engine/model.py", "engine/validator.py", "models/yolo/detect/train.py")
    seams += ("nn/distill_model.py", "nn/tasks.py", "utils/torch_utils.py", "utils/loss.py", "utils/tal.py")
    theirs = set()
    for f in seams:
        theirs |= set(re.findall(r"\b(_[a-z]\w*)", (Path(ultralytics.__file__).parent / f).read_text()))
    used = set()
    for p in (ROOT / "yolokd").rglob("*.py"):
        for node in ast.walk(ast.parse(p.read_text())):
            name = getattr(node, "attr", None) if isinstance(node, ast.Attribute) else getattr(node, "name", None)
            if isinstance(name, str) and name.startswith("_") and not name.startswith("__"):
                used.add(name)
    doc = yolokd.trainer.__doc__.split("Private Ultralytics names")[1]
    listed = set(re.findall(r"``(?:\w+\.)?(_[a-z]\w*)``", doc))
    assert used & theirs == listed
