# yolokd, AGPL-3.0 License
"""The benchmark's report: the Markdown table and targets, the plot, and the marker blocks of a published file.

``publish=path.md`` writes the report between the markers of ``path.md`` (the rest of the file is kept) and the plot
to ``benchmarks/<preset>.png`` in the folder of ``path.md``, linked relatively; nothing else outside ``project``.
"""

from __future__ import annotations

import os
import platform
import shutil
from pathlib import Path
from typing import Any

from yolokd.bench.profile import format_profile
from yolokd.bench.stats import plateau

MD_START, MD_END = "<!-- yolokd-benchmark:start (written by yolokd benchmark) -->", "<!-- yolokd-benchmark:end -->"
HANDWRITTEN = """## How to read / what was tried

- Rows: `student (no KD)` is the student trained alone; `ultralytics dis=6` is Ultralytics' built-in distillation
  (`distill_model=teacher.pt`, a score-weighted L2 on the neck features); the others are yolokd methods (`method=`)
  and a combination `a+b` of the two best single methods on the val split. The table reports the test split. Every
  row uses the same data, seeds, epochs and hyper-parameters; cells are `mean (min–max)` over the seeds.
- Gap recovered = (mean student_kd - mean student) / (teacher - mean student) on test mAP50-95, from the means over
  the seeds both rows finished (not a mean of per-seed ratios, which one seed near the teacher blows up); 1 means
  the student reached the teacher. The per-seed ratios stay in `results.json`.
- Targets: the accuracy targets get no verdict where the teacher-student gap is not larger than 5x the seed noise
  (the undistilled student's spread, max - min over the seeds); the last line says whether the run is in the regime
  the targets are meant for (teacher >= 30 points, student <= half the teacher, spread <= gap / 5, >= 3 seeds).
- Cost: mean wall time of one training iteration (callbacks `on_train_batch_start` to `on_train_batch_end`, data
  loading outside; first epoch and first 3 iterations of every epoch left out), measured in the same run.
  `x floor` divides by the undistilled step plus one full teacher forward (unfolded, eval, no_grad, same batch and
  size), the floor of earlier runs; since the teacher is folded, runs in inference mode and stops at its neck for
  feature methods, the targets are <= 1.00 for feature methods and <= 1.05 for head methods. `x built-in` divides
  by Ultralytics' built-in distillation step of the same seed (target <= 1.00, and peak memory no higher). All are
  noisy by several percent on a shared CPU, and invalid with `jobs` > 1 (rows trained at once).
- Peak memory is the row process's own peak resident size (`VmHWM`): `ru_maxrss` was tried first, but a child
  process reports at least its parent's size at the fork (a child of a 300 MB process reported 312 MB).
- The cpu preset: shapes of 12-50% of a 128 px image (600 train images), a 20-epoch yolov8n teacher, the pico
  student for 8 epochs at batch 8 (nbs 8), AdamW at `lr0=0.004`, 3 seeds: a regime where the teacher-student gap is
  several times the seed spread. 600 steps are early training on a toy data set, not converged COCO accuracy
  (`preset=gpu` is that setting); `preset=converged` trains them 80 and 60 epochs, towards a plateau not yet
  reached.
- Method weights: the papers' values or the documented choices in `cfg/methods/`, then one variant per method chosen
  by `yolokd sweep` on the val split; the test split was not looked at for any choice.
"""


def fmt_stat(s: dict[str, float] | None, scale: float = 1.0, digits: int = 1) -> str:
    """Format a `summarize` dict as ``mean (min-max)``, or just ``mean`` for one value; ``—`` for None.

    Examples:
        >>> fmt_stat({"mean": 0.2, "std": 0.01, "min": 0.19, "max": 0.21, "n": 2}, scale=100)
        '20.0 (19.0–21.0)'
    """
    if s is None:
        return "—"
    f = f"{{:.{digits}f}}"
    mean = f.format(s["mean"] * scale)
    if s["n"] < 2:
        return mean
    return f"{mean} ({f.format(s['min'] * scale)}–{f.format(s['max'] * scale)})"


def format_table(rows: list[dict], teacher: dict | None = None) -> str:
    """Markdown table of the summarised rows, teacher first (mAP in points; cells ``mean (min-max)`` over seeds)."""
    head = (
        "| row | val mAP50-95 | test mAP50-95 | test mAP50 | gap recovered | ms / iter | x student | x floor "
        "| x built-in | peak RSS MiB | seeds |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    if teacher:
        fwd = teacher.get("forward")
        lines.append(
            f"| {teacher['label']} | {100 * teacher['val']['map']:.1f} | {100 * teacher['test']['map']:.1f} "
            f"| {100 * teacher['test']['map50']:.1f} | 1 | {'fwd ' + fmt_stat(fwd, 1000, 0) if fwd else '—'} "
            f"| — | — | — | — | — |"
        )
    for r in rows:
        s = r["summary"]
        seeds = f"{r['seeds_ok']}/{len(r['runs'])}"
        if r.get("errors"):
            err = " ".join(str(r["errors"][0]).split())[:120].replace("|", "/")
            seeds += f" (error: {err})"
        rss = "—" if s["maxrss_mib"] is None else f"{s['maxrss_mib']['max']:.0f}"
        gap = "—" if r.get("gap_recovered") is None else f"{r['gap_recovered']:.2f}"
        lines.append(
            f"| {r['label']} | {fmt_stat(s['val_map'], 100)} | {fmt_stat(s['test_map'], 100)} "
            f"| {fmt_stat(s['test_map50'], 100)} | {gap} | {fmt_stat(s['step_ms'], 1, 0)} "
            f"| {fmt_stat(s['x_student'], 1, 2)} | {fmt_stat(s['x_floor'], 1, 2)} | {fmt_stat(s['x_builtin'], 1, 2)} "
            f"| {rss} | {seeds} |"
        )
    return "\n".join(lines)


def format_curves(rows: list[dict], teacher: dict | None = None) -> str:
    """Markdown table of each training's validation curve, ``best (epoch) / last`` (`plateau`); '' without curves."""

    def cell(curve: list[float] | None) -> str | None:
        p = plateau(curve)
        if p is None or p["epochs"] < 2:
            return None
        flag = "converged" if p["converged"] else "**still improving**"
        return f"{100 * p['best']:.1f} ({p['best_epoch']}) / {100 * p['last']:.1f}, {flag}"

    seeds = sorted({s for r in rows for s in r["runs"]}, key=int)
    table = [(r["label"], [cell((r["runs"].get(s) or {}).get("curve")) for s in seeds]) for r in rows]
    if teacher:
        table.insert(0, (teacher["label"], [cell(teacher.get("curve")), *[""] * (len(seeds) - 1)]))
    if not any(c for _, cells in table for c in cells):
        return ""
    head = "| val mAP50-95: best (epoch) / last | " + " | ".join(f"seed {s}" for s in seeds) + " |"
    body = [f"| {label} | " + " | ".join("—" if c is None else c for c in cells) + " |" for label, cells in table]
    return "\n".join([head, "|" + "---|" * (len(seeds) + 1), *body])


def budget_note(cfg: dict[str, Any]) -> str:
    """A line saying what a short-budget table measures, and where the converged one is; "" for the long presets.

    Examples:
        >>> budget_note({"preset": "cpu", "epochs": 8}).split(":")[0]
        'The students trained 8 epochs, far from converged'
        >>> budget_note({"preset": "converged", "epochs": 60})
        ''
    """
    if cfg.get("preset") in {"converged", "semi"}:
        return ""
    return (
        f"The students trained {cfg['epochs']} epochs, far from converged: the gains measure distillation as saved "
        "training time. What a run to convergence gets: `yolokd benchmark preset=converged` (BENCHMARKS.md "
        '"Converged: shapes", "Converged: glyphs", "Converged: aerial").'
    )


def format_targets(targets: list[dict[str, Any]]) -> str:
    """Markdown list of `check_targets` results."""
    word = {True: "met", False: "NOT met", None: "not measured"}
    return "\n".join(f"- {t['target']}: **{t.get('status') or word[t['met']]}** ({t['detail']})" for t in targets)


def machine_info() -> dict[str, Any]:
    """CPU model, cores, GPU, torch, Ultralytics and Python versions of this machine."""
    import torch
    import ultralytics

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "ultralytics": ultralytics.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def write_plot(rows: list[dict], teacher: dict | None, path: Path, title: str) -> Path:
    """Plot test mAP50-95 against time per iteration relative to the undistilled student, with seed-range error bars."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 5), tight_layout=True)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    colors = {"student": "black", "builtin": "tab:red", "yolokd": "tab:blue", "combo": "tab:purple"}
    for r in rows:
        x, y = r["summary"]["x_student"], r["summary"]["test_map"]
        if x is None or y is None:
            continue
        ax.errorbar(
            x["mean"],
            100 * y["mean"],
            xerr=[[x["mean"] - x["min"]], [x["max"] - x["mean"]]],
            yerr=[[100 * (y["mean"] - y["min"])], [100 * (y["max"] - y["mean"])]],
            fmt="s" if r["kind"] != "yolokd" else "o",
            color=colors.get(r["kind"], "tab:blue"),
            capsize=3,
        )
        ax.annotate(r["label"], (x["mean"], 100 * y["mean"]), textcoords="offset points", xytext=(6, 4), fontsize=8)
    if teacher:
        ax.axhline(100 * teacher["test"]["map"], color="tab:green", ls="--", lw=1, label=f"{teacher['label']}")
    floors = [
        r["summary"]["x_student"]["mean"] / r["summary"]["x_floor"]["mean"]
        for r in rows
        if r["kind"] == "student" and r["summary"]["x_floor"] and r["summary"]["x_student"]
    ]
    if floors:
        ax.axvline(floors[0], color="gray", ls=":", lw=1, label="floor: student step + teacher forward")
        ax.axvline(1.05 * floors[0], color="gray", ls="-.", lw=0.8, label="1.05x floor (head methods' target)")
    ax.margins(x=0.2, y=0.15)  # room for the labels
    ax.set_xlabel("time per training iteration (x undistilled student)")
    ax.set_ylabel("test mAP50-95 (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    if teacher or floors:
        ax.legend(fontsize=8, loc="best")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path


def _floor_line(results: dict[str, Any]) -> str:
    """The sentence that gives the floor's parts, or '' when they were not measured."""
    cfg, teacher = results["config"], results["teacher"]
    student = next((r for r in results["rows"] if r["kind"] == "student"), None)
    if not (student and student["summary"]["step_ms"] and teacher.get("forward")):
        return ""
    step, fwd = student["summary"]["step_ms"]["mean"], 1000 * teacher["forward"]["mean"]
    return (
        f"Floor = undistilled step {step:.0f} ms + teacher forward {fwd:.0f} ms = {step + fwd:.0f} ms per iteration "
        f"(eval, no_grad, batch {cfg['batch']}, {cfg['imgsz']} px, {teacher['forward_n']} forwards per seed).\n\n"
    )


def _setup_lines(results: dict[str, Any]) -> list[str]:
    """The bullet list of what ran where: machine, data, teacher and student, combination."""
    cfg, m, teacher = results["config"], results["machine"], results["teacher"]
    data = cfg["data"] or (
        f"built-in synthetic {cfg.get('style', 'shapes')} (train {cfg['n_train']}, val {cfg['n_val']}, test "
        f"{cfg['n_test']} images, data_seed {cfg['data_seed']})"
    )
    gpu = f", GPU {m['gpu']}" if m.get("gpu") else ""
    own = results.get("teacher_labeled")
    own_line = (
        [
            f"- Teacher of the rows B' and C': {own['label']} ({own['source']}), val mAP50-95 "
            f"{100 * own['val']['map']:.1f}, test {100 * own['test']['map']:.1f}."
        ]
        if own
        else []
    )
    return [
        f"- Machine: {m['cpu']}, {m['usable_cores']} usable of {m['cores']} cores, torch {m['torch']} "
        f"({m['torch_threads']} torch thread(s) while training), ultralytics {m['ultralytics']}, Python {m['python']}"
        f"{gpu}.",
        f"- Data: {data}; imgsz {cfg['imgsz']}, batch {cfg['batch']}, {cfg['epochs']} student epoch(s), "
        f"seeds {cfg['seeds']}; Ultralytics arguments {results['train_args']}.",
        f"- Teacher: {teacher['label']} ({teacher['source']}); student: {cfg['student_model']}; evaluated: "
        f"`{cfg['weights']}.pt` of each row on `{cfg['val_split']}` (choices) and `{cfg['test_split']}` (reported).",
        *own_line,
        f"- Combination: {results.get('combo_reason', 'none')}.",
    ]


def render_report(results: dict[str, Any], plot_rel: str | None) -> str:
    """The generated part of a published file / results.md: what ran, where, the table, the plot and the targets."""
    cfg = results["config"]
    lines = [
        f"Preset `{cfg['preset']}`, recorded {results['date']} in {results['elapsed_s'] / 60:.1f} min.",
        "",
        "```bash",
        results["command"],
        "```",
        "",
        *_setup_lines(results),
        "",
        format_table(results["rows"], results["teacher"]),
        "",
        _floor_line(results) + "mAP in points (x100); cells are mean (min–max) over the seeds; gap recovered is "
        "computed from the means over the seeds, the cost ratios per seed against the same seed's undistilled student.",
        "",
    ]
    note = budget_note(cfg)
    if note:
        lines += [note, ""]
    if cfg.get("jobs", 1) > 1:
        lines += [f"**Cost columns not valid**: {cfg['jobs']} rows were trained at once (`jobs={cfg['jobs']}`).", ""]
    curves = format_curves(results["rows"], results["teacher"])
    if curves:
        lines += [
            "Validation after every epoch (`val=True`): a training counts as converged where its last fifth of "
            "epochs stayed within 1 point of its best.",
            "",
            curves,
            "",
        ]
    if plot_rel:
        lines += [f"![test mAP50-95 vs cost]({plot_rel})", ""]
    lines += ["Targets:", "", format_targets(results["targets"]), ""]
    if results.get("profile"):
        lines += [
            "Profile of one step (ms, mean of 10 steps after 2, random images at the same batch and size, the rows "
            "finished; `yolokd.bench.profile`):",
            "",
            format_profile(results["profile"]),
            "",
        ]
    return "\n".join(lines)


def replace_block(text: str, start: str, end: str, body: str) -> str | None:
    """``text`` with everything between the ``start`` and ``end`` markers replaced by ``body``; None without markers.

    Examples:
        >>> replace_block("a[old]b", "[", "]", "new").split()  # the body goes on its own lines
        ['a[', 'new', ']b']
    """
    if start not in text or end not in text:
        return None
    head, rest = text.split(start, 1)
    return f"{head}{start}\n{body.strip()}\n{end}{rest.split(end, 1)[1]}"


def report_tag(cfg: dict[str, Any]) -> str:
    """The name of a run's block and plot: '' for the cpu preset on shapes or a given data set, else what differs.

    Examples:
        >>> report_tag({"preset": "converged", "data": None, "style": "shapes"})
        'converged-shapes'
    """
    style = "" if cfg.get("data") else str(cfg.get("style", "shapes"))
    if cfg.get("preset") in {"converged", "semi"}:
        return f"{cfg['preset']}-{style}" if style else str(cfg["preset"])
    return "" if style == "shapes" else style


def block_heading(tag: str) -> str:
    """The section heading a new tagged block is appended under.

    Examples:
        >>> block_heading("converged-aerial")
        '## Converged: aerial'
    """
    if tag.startswith("semi"):
        return f"## Semi-supervised: {tag.partition('-')[2] or 'given data'}"
    if tag.startswith("converged"):
        return f"## Converged: {tag.partition('-')[2] or 'given data'}"
    return f"## Transfer: {tag}"


def markers(tag: str = "") -> tuple[str, str]:
    """The start and end markers of a block (`MD_START`, `MD_END` for the untagged one).

    Examples:
        >>> markers("glyphs")[1]
        '<!-- yolokd-benchmark-glyphs:end -->'
    """
    if not tag:
        return MD_START, MD_END
    name = f"yolokd-benchmark-{tag}"
    return f"<!-- {name}:start (written by yolokd benchmark) -->", f"<!-- {name}:end -->"


def write_benchmarks_md(path: Path, generated: str, tag: str = "") -> Path:
    """Write the generated block between the markers of ``path`` (created if missing), keeping the hand-written rest.

    A tagged block (`report_tag`) without markers yet is appended as a section (`block_heading`).
    """
    old = path.read_text() if path.exists() else ""
    start, end = markers(tag)
    text = replace_block(old, start, end, generated)
    if text is None and tag and old:
        text = old.rstrip("\n") + f"\n\n{block_heading(tag)}\n\n{start}\n{generated.strip()}\n{end}\n"
    if text is None:
        block = f"{MD_START}\n{generated.strip()}\n{MD_END}"
        text = (
            "# Benchmarks\n\nyolokd's methods against the undistilled student and Ultralytics' built-in distillation\n"
            "(`distill_model=`, `dis=`), measured by `yolokd benchmark` (`benchmarks/run.py`); the block below is\n"
            f"rewritten by every run with `publish={path.name}`, the rest is kept.\n\n" + block + "\n\n" + HANDWRITTEN
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def publish_report(results: dict[str, Any], plot: Path, path: str | Path) -> list[str]:
    """Write the report into the Markdown file ``path`` and the plot to ``benchmarks/<preset>[-<style>].png`` beside it.

    Returns the two written files.
    """
    md = Path(path).resolve()
    tag = report_tag(results["config"])
    preset = results["config"]["preset"]
    name = tag if tag.startswith(preset) else f"{preset}{'-' + tag if tag else ''}"
    png = md.parent / "benchmarks" / f"{name}.png"
    png.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(plot, png)
    write_benchmarks_md(md, render_report(results, f"benchmarks/{png.name}"), tag)
    return [str(md), str(png)]
