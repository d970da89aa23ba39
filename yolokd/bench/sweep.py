# yolokd, AGPL-3.0 License
"""``yolokd sweep``: choose each method's loss-weight scale on the VALIDATION split with the benchmark's own rows.

Each method's yaml is written once per factor in ``scales`` (every term weight multiplied), then trained by
`run_benchmark` on the cpu preset and evaluated on the val split only. Writes ``sweep.md`` and ``sweep.json`` in
``project``, and with ``publish=path.md`` the table between its markers in ``path.md``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from ultralytics.utils import LOGGER, YAML

from yolokd.bench.config import BENCH_DEFAULTS, as_list, format_command, publish_path
from yolokd.bench.report import fmt_stat, replace_block
from yolokd.bench.run import run_benchmark
from yolokd.bench.stats import summarize
from yolokd.config import PREFIX, KDError, available_methods, cfg_dir

SWEEP_DEFAULTS: dict[str, Any] = {
    "scales": [0.25, 1.0, 4.0],  # (list[float]) factors applied to every term weight of a method
    "balances": [],  # (list[float]) also try each method with automatic weights, every term at balance r (columns)
    "methods": None,  # (list[str], optional) built-in methods or method .yaml paths to sweep; None = all built-in
    "seeds": [0],  # (list[int]) training seeds per variant
    "min_gain": 0.002,  # (float) a factor other than 1 is chosen only if its val mAP50-95 beats x1 by more than this
    "project": "runs/yolokd-sweep",  # (str) output folder
    "publish": None,  # (str, optional) a .md file to write the table into (between the sweep markers)
}
MD_START, MD_END = "<!-- yolokd-sweep:start (written by yolokd sweep) -->", "<!-- yolokd-sweep:end -->"


def scale_tag(scale: float) -> str:
    """The file-name tag of a factor, e.g. ``x0.25``."""
    return f"x{scale:g}"


def method_name(method: str) -> str:
    """The sweep's name of a method: a built-in name as is, a yaml path by its stem."""
    return Path(method).stem if method.endswith((".yaml", ".yml")) else method


def scaled_method(method: str, scale: float, out_dir: Path, balance: float | None = None) -> Path:
    """Write a variant of a method: every term weight multiplied by ``scale``, or every term at ``balance``.

    Args:
        method (str): A built-in method name or a method yaml path.
        scale (float): Factor on every term's ``weight`` (> 0); written as ``<name>-x<scale>.yaml`` with ``balance: 0``.
        out_dir (Path): Folder for the variant.
        balance (float, optional): When given (> 0), every term gets ``balance: <balance>``
            (``<name>-b<balance>.yaml``).
    """
    src = Path(method) if method.endswith((".yaml", ".yml")) else cfg_dir() / "methods" / f"{method}.yaml"
    if not src.is_file():
        raise KDError(f"unknown method '{method}' for the sweep; built-in methods: {available_methods()} or a .yaml")
    for key, v in (("scales", scale), ("balances", 1.0 if balance is None else balance)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
            raise KDError(f"sweep {key} must be numbers > 0, got {v!r}")
    data = YAML.load(src)
    for term in data["terms"]:
        term["weight"] = float(term.get("weight", 1.0)) * float(scale)
        term["balance"] = 0.0 if balance is None else float(balance)  # x<scale>: fixed weights, whatever the yaml's
        term.setdefault("name", term["type"])  # keep the loss-item names of the built-in method
    out_dir.mkdir(parents=True, exist_ok=True)
    tag = scale_tag(scale) if balance is None else balance_tag(balance)
    path = out_dir / f"{method_name(method)}-{tag}.yaml"
    YAML.save(path, data)
    return path


def balance_tag(balance: float) -> str:
    """The file-name tag of an automatic-weight variant, e.g. ``b0.5``."""
    return f"b{balance:g}"


def best_scales(table: dict[str, dict[float, float | None]], min_gain: float = 0.0) -> dict[str, float | None]:
    """Per method, the factor with the highest mean val mAP, unless it beats x1 by ``min_gain`` or less.

    Among equal scores the factor closest to 1 wins (then the larger one).

    Examples:
        >>> best_scales({"cwd": {0.25: 0.5, 1.0: 0.7, 4.0: 0.7}, "tar": {1.0: None}})
        {'cwd': 1.0, 'tar': None}
    """
    out = {}
    for m, by_scale in table.items():
        scored = [(v, -abs(math.log(s)), s) for s, v in by_scale.items() if v is not None]
        best = max(scored)[2] if scored else None
        base = by_scale.get(1.0)
        if best is not None and base is not None and by_scale[best] - base <= min_gain:
            best = 1.0
        out[m] = best
    return out


def choose_variants(
    means: dict[str, dict[str, float | None]], scales: list[float], balances: list[float], min_gain: float = 0.0
) -> dict[str, str | None]:
    """Per method, the variant tag to ship: `best_scales`, or an automatic-weight ``bR`` above it and x1 + ``min_gain``.

    Examples:
        >>> m = {"cwd": {"x1": 0.22, "x0.25": 0.20, "b0.25": 0.24}, "crosskd": {"x1": 0.23, "b0.25": 0.19}}
        >>> choose_variants(m, [0.25, 1.0], [0.25], min_gain=0.002)
        {'cwd': 'b0.25', 'crosskd': 'x1'}
    """
    fixed = best_scales({m: {s: v.get(scale_tag(s)) for s in scales} for m, v in means.items()}, min_gain)
    out: dict[str, str | None] = {}
    for m, by_tag in means.items():
        tag = None if fixed[m] is None else scale_tag(fixed[m])
        best = by_tag.get(tag) if tag else None
        x1 = by_tag.get(scale_tag(1.0))
        for b in balances:
            v = by_tag.get(balance_tag(b))
            if v is not None and (best is None or v > best) and (x1 is None or v - x1 > min_gain):
                tag, best = balance_tag(b), v
        out[m] = tag
    return out


def render_sweep(results: dict[str, Any]) -> str:
    """Markdown of a sweep: the command, the val table (points, mean (min-max) over seeds) and the chosen factors."""
    scales = results["scales"]
    balances = results.get("balances", [])
    head = (
        "| method | "
        + " | ".join([f"weights {scale_tag(s)}" for s in scales] + [f"auto {balance_tag(b)}" for b in balances])
        + " | chosen |"
    )
    reused = results.get("reused_rows", 0)
    took = f"{results['elapsed_s'] / 60:.1f} min" + (
        f" for the rows this call ran ({reused} row(s) reused from an earlier call, reuse=True)" if reused else ""
    )
    lines = [
        f"Sweep of the loss-weight scale on the **val** split (`{results['val_split']}`), {results['date']}, {took}:",
        "",
        "```bash",
        results["command"],
        "```",
        "",
        f"Undistilled student on val: {fmt_stat(results['student'], 100, 2)}; "
        f"teacher {100 * results['teacher_val']:.2f}"
        f" (mAP50-95, points; cells are mean (min–max) over seeds {results['seeds']}).",
        "",
        head,
        "|" + "---|" * (len(scales) + len(balances) + 2),
    ]
    for m, cells in results["table"].items():
        tags = [scale_tag(s) for s in scales] + [balance_tag(b) for b in balances]
        row = [fmt_stat(cells.get(t), 100, 2) for t in tags]
        chosen = results["chosen"].get(m)
        chosen = scale_tag(chosen) if isinstance(chosen, (int, float)) else chosen  # a factor or a variant tag
        lines.append(f"| {m} | " + " | ".join(row) + f" | {chosen or '—'} |")
    lines += [
        "",
        f"Chosen: the variant with the best mean, unless it beats x1 (the documented weights) by "
        f"{100 * results['min_gain']:.2f} points or less."
        + (" `auto bR`: every term with automatic weights, balance R (`yolokd.balance`)." if balances else ""),
    ]
    return "\n".join(lines)


def sweep_config(overrides: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], list[str], list[float]]:
    """Split the overrides into (sweep keys, benchmark overrides, methods, factors), checking the methods and scales."""
    cfg = {**SWEEP_DEFAULTS, **{k: v for k, v in overrides.items() if k in SWEEP_DEFAULTS}}
    bench = {k: v for k, v in overrides.items() if k not in SWEEP_DEFAULTS}
    for k in ("combo", "builtin", "test_split"):
        if k in bench:
            raise KDError(f"'{k}' is set by the sweep itself (val split only, no combination, no built-in row)")
    cfg["publish"] = publish_path(cfg["publish"])
    methods = available_methods("detect") if cfg["methods"] in (None, "all") else as_list(cfg["methods"], "methods")
    try:
        scales = [float(s) for s in as_list(cfg["scales"], "scales")]
        cfg["balances"] = [float(b) for b in as_list(cfg["balances"] or [], "balances")]
    except (TypeError, ValueError) as e:
        raise KDError(f"scales and balances must be lists of numbers > 0, e.g. scales=[0.25,1,4], got {e}") from e
    if not scales or min(scales) <= 0 or len(set(scales)) != len(scales):
        raise KDError(f"scales must be a non-empty list of distinct factors > 0, e.g. scales=[0.25,1,4], got {scales}")
    return cfg, bench, methods, scales


def val_stats(row: dict | None) -> dict | None:
    """Summary of a benchmark row's val mAP50-95 over its finished seeds (None for a missing row)."""
    runs = (row or {}).get("runs", {}).values()
    return summarize([(r.get("val") or {}).get("map") for r in runs if r.get("ok")])


def publish_sweep(path: str | Path, md: str) -> Path:
    """Write the sweep's Markdown between its markers in ``path`` (a new section at the end when it has none)."""
    path = Path(path).resolve()
    old = path.read_text() if path.is_file() else "# Benchmarks\n"
    text = replace_block(old, MD_START, MD_END, md)
    if text is None:
        text = old.rstrip("\n") + f"\n\n## Tuning sweep (val split)\n\n{MD_START}\n{md}\n{MD_END}\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def run_sweep(**overrides: Any) -> dict[str, Any]:
    """Run the sweep (keys: `SWEEP_DEFAULTS`, benchmark keys, train arguments) and return ``sweep.json``'s content."""
    cfg, bench, methods, scales = sweep_config(overrides)
    project = Path(cfg["project"]).resolve()
    variants = {(m, scale_tag(s)): scaled_method(m, s, project / "variants") for m in methods for s in scales}
    for m in methods:
        for b in cfg["balances"]:
            variants[(m, balance_tag(b))] = scaled_method(m, 1.0, project / "variants", balance=b)
    val_split = bench.get("val_split", BENCH_DEFAULTS["val_split"])
    res = run_benchmark(
        **bench,
        methods=[str(p) for p in variants.values()],
        seeds=cfg["seeds"],
        project=str(project),
        builtin=False,
        combo=None,
        test_split=val_split,
        publish=None,
        profile=bench.get("profile"),  # none unless asked: the sweep compares accuracy
    )
    by_label = {r["label"]: r for r in res["rows"]}
    names = {m: method_name(m) for m in methods}
    table = {n: {t: val_stats(by_label.get(f"{n}-{t}")) for mm, t in variants if mm == m} for m, n in names.items()}
    means = {n: {t: (stats or {}).get("mean") for t, stats in table[n].items()} for n in names.values()}
    out = {
        "command": format_command(overrides, mode="sweep"),
        "date": res["date"],
        "elapsed_s": res["elapsed_s"],
        "seeds": res["config"]["seeds"],
        "scales": scales,
        "balances": cfg["balances"],
        "val_split": val_split,
        "teacher_val": res["teacher"]["val"]["map"],
        "student": val_stats(by_label.get("student (no KD)")),
        "table": table,
        "min_gain": cfg["min_gain"],
        "chosen": choose_variants(means, scales, cfg["balances"], float(cfg["min_gain"])),
        "reused_rows": sum(bool(r.get("reused")) for row in res["rows"] for r in row["runs"].values()),
        "benchmark": str(project / "results.json"),
    }
    (project / "sweep.json").write_text(json.dumps(out, indent=2))
    md = render_sweep(out)
    (project / "sweep.md").write_text(md + "\n")
    if cfg["publish"]:
        out["published"] = str(publish_sweep(cfg["publish"], md))
        (project / "sweep.json").write_text(json.dumps(out, indent=2))
    LOGGER.info(f"\n{PREFIX}sweep on '{val_split}':\n{md}\n{PREFIX}results: {project / 'sweep.md'}")
    return out
