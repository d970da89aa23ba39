# yolokd, AGPL-3.0 License
"""``yolokd benchmark``: the data, the teacher, every row for every seed, the combination, then the report.

Writes ``results.json`` (after every row), ``results.md`` and ``plot.png`` in ``project``, and with
``publish=path.md`` the report there.
"""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ultralytics.utils import LOGGER, TQDM

from yolokd.bench.config import format_command, merge_config
from yolokd.bench.plan import Setup, model_name, plan_combo, plan_rows, plan_semi_rows, row_spec, semi_method
from yolokd.bench.report import (
    budget_note,
    format_table,
    format_targets,
    machine_info,
    publish_report,
    render_report,
    write_plot,
)
from yolokd.bench.row import evaluate, launch_row, read_curve
from yolokd.bench.semi import is_semi, semi_targets
from yolokd.bench.stats import check_targets, summarize, summarize_row
from yolokd.config import PREFIX, KDError
from yolokd.demo import resolve_model, train_teacher


def prepare_data(cfg: dict[str, Any], project: Path) -> str:
    """The data.yaml: ``data=`` as given, or the built-in synthetic set of ``style`` made or reused in project/data."""
    if cfg["data"]:
        return str(Path(cfg["data"]).resolve()) if Path(cfg["data"]).exists() else str(cfg["data"])
    from yolokd.data.synthetic import make_dataset

    keys = ("n_train", "n_val", "n_test", "imgsz", "nc", "max_objects", "style")
    try:
        return str(make_dataset(project / "data", seed=cfg["data_seed"], **{k: cfg[k] for k in keys}))
    except ValueError as e:
        raise KDError(f"synthetic data: {e}") from None


def prepare_semi(cfg: dict[str, Any], data: str, project: Path) -> tuple[str | None, str | None]:
    """The semi-supervised rows' data: the labelled-fraction view (or None) and the extra unlabeled images (or None).

    The view repeats its labelled images so an epoch has as many steps as one over all labels; the extra images are
    the same look drawn with another seed.
    """
    view = extra = None
    if cfg["labeled_fraction"] is not None:
        from yolokd.data.semi import labeled_split

        view = str(labeled_split(data, project / "semi-data", cfg["labeled_fraction"], repeat=True))
    if cfg["unlabeled_extra"]:
        from yolokd.data.synthetic import make_dataset

        keys = ("imgsz", "nc", "max_objects", "style")
        root = make_dataset(
            project / "extra-data",
            n_train=cfg["unlabeled_extra"],
            n_val=1,  # the generator's minimum; only the training images are used
            n_test=0,
            seed=cfg["data_seed"] + 1,
            **{k: cfg[k] for k in keys},
        )
        extra = str(root.parent / "images" / "train")
    return view, extra


def prepare_teacher(
    cfg: dict[str, Any], train: dict[str, Any], data: str, project: Path, view: str | None = None
) -> dict[str, Any]:
    """Load or train the teacher and evaluate it on both splits (``label``, ``weights``, ``val``, ``test``...).

    With ``view`` (a labelled-fraction data.yaml) a teacher of the same model and budget is trained on that view
    into project/teacher-labeled instead, and evaluated on the splits of ``data``.
    """
    t0 = time.perf_counter()
    name = "teacher-labeled" if view else "teacher"
    if cfg["teacher"] and not view:
        teacher = resolve_model(str(cfg["teacher"]), project / "models")
        source = f"given: {cfg['teacher']}"
    else:
        model = resolve_model(cfg["teacher_model"], project / "models")
        seed, epochs = cfg["seeds"][0], cfg["teacher_epochs"]
        teacher = str(
            train_teacher(
                Path(view or data), project, model, epochs, cfg["imgsz"], cfg["batch"], name, seed=seed, **train
            )
        )
        source = f"trained {epochs} epoch(s), seed {seed}"
    curve = read_curve(Path(teacher).parent.parent / "results.csv")  # a run folder's weights/best.pt
    given = None if view else cfg["teacher"]
    role = f"teacher on {100 * cfg['labeled_fraction']:g}% labels" if view else "teacher"
    info: dict[str, Any] = {
        "label": f"{role} ({model_name(str(given or cfg['teacher_model']))})",
        "weights": teacher,
        "source": source,
        "train_or_load_s": time.perf_counter() - t0,
        "curve": curve,  # val mAP50-95 per epoch of a teacher trained here with per-epoch validation
    }
    for k in ("val", "test"):
        info[k] = evaluate(teacher, data, cfg[f"{k}_split"], cfg["imgsz"], cfg["batch"], project / f"{name}-eval")
    LOGGER.info(f"{PREFIX}{name} {teacher}: val mAP50-95 {info['val']['map']:.4f}, test {info['test']['map']:.4f}")
    return info


def save(results: dict[str, Any], project: Path) -> None:
    """Write ``results.json``."""
    (project / "results.json").write_text(json.dumps(results, indent=2, default=str))


def launch_job(setup: Setup, row: dict[str, Any], seed: int) -> dict[str, Any]:
    """Run (or reuse) one row for one seed in its own process and return its result."""
    return launch_row(row_spec(setup, row, seed), setup.cfg["timeout"], setup.cfg["reuse"])


def run_job(setup: Setup, row: dict[str, Any], seed: int) -> None:
    """Run (or reuse) one row for one seed and record it (`record_job`)."""
    try:
        r = launch_job(setup, row, seed)
    except KeyboardInterrupt:
        LOGGER.warning(
            f"{PREFIX}benchmark interrupted; the rows finished so far are in {setup.project / 'results.json'}; the "
            f"same command with reuse=True goes on where it stopped"
        )
        raise
    record_job(row, seed, r)


def record_job(row: dict[str, Any], seed: int, r: dict[str, Any]) -> None:
    """Put one row's result for one seed into ``row["runs"]`` and log its outcome."""
    row["runs"][str(seed)] = r
    if r.get("ok"):
        took = "reused from an earlier run" if r.get("reused") else f"{r['wall_s']:.0f} s"
        LOGGER.info(
            f"{PREFIX}{row['label']} seed {seed}: test mAP50-95 {r['test']['map']:.4f}, val {r['val']['map']:.4f}, "
            f"{1000 * r['step']['mean_s']:.0f} ms/iter, {took}"
        )
    else:
        LOGGER.warning(f"{PREFIX}{row['label']} seed {seed} failed: {r['error']} (log: {r.get('log')})")


def run_rows(setup: Setup, rows: list[dict[str, Any]], results: dict[str, Any], t_start: float) -> None:
    """Run the planned rows seed by seed, then the combination (chosen on the val split), saving after every row."""
    seeds, n_jobs = setup.cfg["seeds"], setup.cfg["jobs"]
    pbar = TQDM(total=len(rows) * len(seeds) + (len(seeds) if setup.cfg["combo"] else 0), desc="benchmark")
    lock = threading.Lock()

    def saved(row: dict, seed: int) -> None:
        with lock:
            results["elapsed_s"] = time.perf_counter() - t_start
            save(results, setup.project)
            pbar.set_description(f"benchmark: {row['label']}, seed {seed} done")
            pbar.update(1)

    def one(row: dict, seed: int) -> None:
        run_job(setup, row, seed)
        saved(row, seed)

    def jobs(todo: list[tuple[dict, int]]) -> None:
        if setup.cfg["executor"] == "ray":  # every (row, seed) a Ray Tune trial, on a cluster where there is one
            from yolokd.bench.ray_jobs import run_on_ray

            def record(job: tuple[dict, int], r: dict) -> None:
                record_job(*job, r)
                saved(*job)

            run_on_ray(todo, lambda job: launch_job(setup, *job), record, setup.cfg["ray_address"])
            return
        if n_jobs == 1:
            for row, seed in todo:
                one(row, seed)
            return
        with ThreadPoolExecutor(n_jobs) as pool:  # each job is a row subprocess; the threads only wait for them
            for f in [pool.submit(one, row, seed) for row, seed in todo]:
                f.result()

    jobs([(row, seed) for seed in seeds for row in rows])
    combo, results["combo_reason"] = plan_combo(setup.cfg, rows)
    if combo:
        rows.append(combo)
        jobs([(combo, seed) for seed in seeds])
    pbar.close()


def profile_methods(setup: Setup) -> list[dict[str, Any]]:
    """Profile one step of each ``profile=`` method, after the rows (nothing else runs beside it), on the teacher."""
    cfg, out = setup.cfg, []
    if not cfg["profile"]:
        return out
    from ultralytics.utils.torch_utils import select_device

    from yolokd.bench.profile import profile_method
    from yolokd.head import num_classes
    from yolokd.teacher import load_teacher

    device = str(select_device(setup.train.get("device", ""), verbose=False))
    nc = num_classes(load_teacher(setup.teacher))
    for method in TQDM(cfg["profile"], desc=f"{PREFIX}profile"):
        out.append(profile_method(setup.student, setup.teacher, method, cfg["imgsz"], cfg["batch"], nc, device))
    return out


def summarize_run(results: dict[str, Any]) -> None:
    """Summarise every row against the undistilled student, the teacher forward, and check the targets."""
    cfg, teacher, rows = results["config"], results["teacher"], results["rows"]
    student_runs = rows[0]["runs"]
    builtin_runs = next((r["runs"] for r in rows if r["kind"] == "builtin"), None)
    for row in rows:
        summarize_row(row, student_runs, teacher["test"]["map"], cfg["seeds"], builtin_runs)
    fwd = [(r.get("teacher_forward") or {}).get("mean_s") for r in student_runs.values() if r.get("ok")]
    teacher["forward"] = summarize(fwd)
    teacher["forward_n"] = cfg["teacher_batches"]
    plain = [r for r in rows if not is_semi(r)]  # the semi-supervised rows have their own targets
    results["targets"] = check_targets(plain, teacher["test"]["map"], cfg.get("jobs", 1))
    fwd_s = (teacher["forward"] or {}).get("mean")
    results["targets"] += semi_targets(rows, semi_method(cfg), fwd_s, cfg.get("jobs", 1))


def write_outputs(results: dict[str, Any], setup: Setup) -> Path:
    """Write the plot and ``results.md`` in ``project``, and the published report where ``publish=`` says."""
    cfg = setup.cfg
    title = (
        f"{cfg['preset']} preset: {Path(setup.student).stem} student, {results['teacher']['label']}, "
        f"seeds {cfg['seeds']}, {cfg['epochs']} epoch(s), {cfg['imgsz']} px, batch {cfg['batch']}"
    )
    plot = write_plot(results["rows"], results["teacher"], setup.project / "plot.png", title)
    (setup.project / "results.md").write_text(render_report(results, "plot.png") + "\n")
    if cfg["publish"]:
        results["published"] = publish_report(results, plot, cfg["publish"])
        LOGGER.info(f"{PREFIX}wrote {' and '.join(results['published'])}")
    return plot


def run_benchmark(**overrides: Any) -> dict[str, Any]:
    """Run the benchmark (keys: `BENCH_DEFAULTS`, `PRESETS`, train arguments) and return ``results.json``'s content."""
    cfg, train = merge_config(overrides)
    project = Path(cfg["project"]).resolve()
    project.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    data = prepare_data(cfg, project)
    if cfg["val_split"] == cfg["test_split"] and cfg["combo"] == "auto":
        LOGGER.warning(
            f"{PREFIX}val_split == test_split ('{cfg['test_split']}'): the combination is chosen on the reported "
            f"split, so its numbers are optimistic"
        )
    student = resolve_model(cfg["student_model"], project / "models")
    teacher = prepare_teacher(cfg, train, data, project)
    setup = Setup(cfg, train, student, teacher["weights"], data, project)
    view, extra = prepare_semi(cfg, data, project)
    own = prepare_teacher(cfg, train, data, project, view) if view and cfg["semi_own_teacher"] else None
    results: dict[str, Any] = {
        "config": cfg,
        "train_args": train,
        "command": format_command(overrides),
        "machine": machine_info(),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "teacher": teacher,
        **({"teacher_labeled": own} if own else {}),
        "rows": plan_rows(cfg) + plan_semi_rows(cfg, view, extra, own and own["weights"]),
        "elapsed_s": 0.0,
    }
    run_rows(setup, results["rows"], results, t_start)
    results["profile"] = profile_methods(setup)
    summarize_run(results)
    results["elapsed_s"] = time.perf_counter() - t_start
    plot = write_outputs(results, setup)
    save(results, project)
    note = budget_note(cfg)
    note = f"{note}\n" if note else ""
    LOGGER.info(
        f"\n{PREFIX}benchmark ({cfg['preset']}, test split '{cfg['test_split']}', {len(cfg['seeds'])} seed(s)) in "
        f"{results['elapsed_s'] / 60:.1f} min:\n{format_table(results['rows'], teacher)}\n"
        f"{format_targets(results['targets'])}\n{note}{PREFIX}results: {project / 'results.json'}, "
        f"{project / 'results.md'}, {plot}"
    )
    return results
