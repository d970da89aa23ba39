# yolokd, AGPL-3.0 License
"""The plan of a benchmark: its rows (student, built-in, methods, combination), their names and each run's spec."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ultralytics import __version__ as ULTRALYTICS_VERSION

from yolokd import __version__
from yolokd.bench.stats import choose_combo, summarize
from yolokd.config import KD_DEFAULTS, resolve_method
from yolokd.losses import TERMS


@dataclass
class Setup:
    """What every row of one benchmark run shares: the models, the data and the folders.

    Attributes:
        cfg (dict): The merged benchmark configuration (`merge_config`).
        train (dict): The Ultralytics arguments of every training.
        student (str): The student model (a yaml path or name).
        teacher (str): The teacher checkpoint.
        data (str): The data.yaml.
        project (Path): The output folder.
    """

    cfg: dict[str, Any]
    train: dict[str, Any]
    student: str
    teacher: str
    data: str
    project: Path


def model_name(path: str) -> str:
    """A short model name: the file stem, or the run folder for Ultralytics' ``.../weights/best.pt``.

    Examples:
        >>> model_name("runs/x/teacher/weights/best.pt")
        'teacher/best.pt'
    """
    p = Path(path)
    if p.stem in {"best", "last"} and p.parent.name == "weights":
        return f"{p.parent.parent.name}/{p.name}"
    return p.stem


def slug(text: str) -> str:
    """A folder-safe name for a row, e.g. ``combo-cwd-tar``."""
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in text.replace("+", "-"))


def row_label(kind: str, method: str | None, dis: float) -> str:
    """The row's name in the table.

    Examples:
        >>> row_label("combo", "/a/cwd-x0.5.yaml+tar", 0)
        'cwd-x0.5+tar'
    """
    if kind in {"student", "builtin"}:
        return "student (no KD)" if kind == "student" else f"ultralytics dis={dis:g}"
    return "+".join(Path(p).stem if p.endswith((".yaml", ".yml")) else p for p in str(method).split("+"))


def neck_only(method: str | None) -> bool:
    """Whether no term of ``method`` reads the teacher's head, so its teacher stops at the neck (a feature method)."""
    if not method:
        return False
    return not any(TERMS[t.type].reads_teacher_head for t in resolve_method(method))


def new_row(kind: str, method: str | None, dis: float) -> dict[str, Any]:
    """An empty row: ``id`` (its folder name), ``label``, ``kind``, ``method``, ``neck_only`` and ``runs``."""
    label = row_label(kind, method, dis)
    ident = f"combo-{label}" if kind == "combo" else row_label(kind, method, 0) if method else kind
    return {
        "id": slug(ident),
        "label": label,
        "kind": kind,
        "method": method,
        "neck_only": neck_only(method),
        "runs": {},
    }


def semi_method(cfg: dict[str, Any]) -> str:
    """The method of the semi-supervised rows B, C and F: ``combo=`` where it names one, else yolokd's default."""
    combo = cfg["combo"]
    return str(combo) if combo and combo != "auto" else str(KD_DEFAULTS["method"])


def plan_semi_rows(
    cfg: dict[str, Any], view: str | None, extra: str | None, own_teacher: str | None = None
) -> list[dict[str, Any]]:
    """The semi-supervised rows: A-C and (with ``own_teacher``) B', C' on the labelled ``view``, F with ``extra``."""
    method, rows = semi_method(cfg), []
    pct = f"{100 * cfg['labeled_fraction']:g}%" if view else ""
    if view:
        for key, kind, unlabeled, label in (
            ("a", "student", None, f"A: student, {pct} labels"),
            ("b", "combo", False, f"B: {row_label('combo', method, 0)}, {pct} labels"),
            ("c", "combo", "view", "C: B + the other train images unlabeled"),
            ("b-own", "combo", False, f"B': {row_label('combo', method, 0)}, {pct} labels, teacher on {pct}"),
            ("c-own", "combo", "view", "C': B' + the other train images unlabeled"),
        ):
            if key.endswith("-own") and not own_teacher:
                continue
            row = new_row(kind, None if kind == "student" else method, 0)
            row.update(id=f"semi-{key}", label=label, data=view, unlabeled=unlabeled)
            row.update({"teacher": own_teacher} if key.endswith("-own") else {})
            rows.append(row)
    if extra:
        row = new_row("combo", method, 0)
        row.update(id="semi-f", label=f"F: {row_label('combo', method, 0)} + {cfg['unlabeled_extra']} extra unlabeled")
        row["unlabeled"] = extra
        rows.append(row)
    return rows


def plan_rows(cfg: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows run before the combination: the undistilled student, the built-in distillation, each method."""
    kinds: list[tuple[str, str | None]] = [("student", None)]
    kinds += [("builtin", None)] if cfg["builtin"] else []
    kinds += [("yolokd", m) for m in cfg["methods"]]
    return [new_row(k, m, cfg["dis"]) for k, m in kinds]


def row_spec(setup: Setup, row: dict[str, Any], seed: int) -> dict[str, Any]:
    """The spec of one row's process for one seed (`yolokd.bench.row.run_row`)."""
    cfg = setup.cfg
    return {
        "kind": row["kind"],
        "method": row["method"],
        "seed": seed,
        "student": setup.student,
        "teacher": row.get("teacher") or setup.teacher,  # B' and C': the teacher trained on the labelled view
        "data": setup.data,
        "epochs": cfg["epochs"],
        "imgsz": cfg["imgsz"],
        "batch": cfg["batch"],
        "train": setup.train,
        "dis": cfg["dis"],
        "dir": str(setup.project / "rows" / f"{row['id']}-seed{seed}"),
        "val_split": cfg["val_split"],
        "test_split": cfg["test_split"],
        "weights": cfg["weights"],
        "time_teacher": row["kind"] == "student",
        # what the method resolves to now, so that reuse=True never keeps a row trained with other yaml values
        "terms": [asdict(t) for t in resolve_method(row["method"])] if row["method"] else None,
        "versions": {"yolokd": __version__, "ultralytics": ULTRALYTICS_VERSION},
        "teacher_batches": cfg["teacher_batches"],
        # only distilled rows fade (catchup=): the other rows stay reusable across catchup= values
        "catchup": cfg["catchup"] if row["kind"] in {"yolokd", "combo"} else None,
        **catchup_spec(cfg, row),
        **semi_spec(row),
    }


def catchup_spec(cfg: dict[str, Any], row: dict[str, Any]) -> dict[str, Any]:
    """A distilled row's ``catchup_pace`` where set; {} otherwise (the specs of earlier runs stay reusable)."""
    if row["kind"] not in {"yolokd", "combo"}:
        return {}
    return {} if cfg["catchup_pace"] is None else {"catchup_pace": cfg["catchup_pace"]}


def semi_spec(row: dict[str, Any]) -> dict[str, Any]:
    """A semi-supervised row's own data and ``unlabeled=`` (``"view"``: the view's ``unlabeled:`` key); {} otherwise."""
    extra = {"data": row["data"]} if row.get("data") else {}
    if "unlabeled" in row:
        extra["unlabeled"] = None if row["unlabeled"] == "view" else row["unlabeled"]
    return extra


def val_mean(row: dict[str, Any]) -> float | None:
    """The row's mean validation mAP50-95 over its finished seeds."""
    s = summarize([(r.get("val") or {}).get("map") for r in row["runs"].values() if r.get("ok")])
    return None if s is None else s["mean"]


def plan_combo(cfg: dict[str, Any], rows: list[dict[str, Any]]) -> tuple[dict[str, Any] | None, str]:
    """The combination row (or None) and the report's sentence for it; ``combo='auto'``: the two best on val."""
    combo = cfg["combo"]
    if not combo:
        return None, "none (combo=None)"
    if combo != "auto":
        return new_row("combo", combo, 0), f"`{combo}` (combo=)"
    scores = {r["method"]: val_mean(r) for r in rows if r["kind"] == "yolokd"}
    combo = choose_combo(scores)
    if not combo:
        return None, "skipped: fewer than two methods with a validation score"
    ranked = ", ".join(
        f"{row_label('yolokd', m, 0)} {100 * v:.2f}"
        for m, v in sorted(scores.items(), key=lambda kv: -(kv[1] or -1))
        if v is not None
    )
    reason = f"`{row_label('combo', combo, 0)}`, the two best single methods by val mAP50-95 ({ranked})"
    return new_row("combo", combo, 0), reason
