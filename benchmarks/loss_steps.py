# yolokd, AGPL-3.0 License
"""Record the loss items of the first training steps of one distillation row, to compare two versions of yolokd.

    python benchmarks/loss_steps.py out.json [--method tar+cwd] [--steps 20] [--teacher t.pt]

Trains the cpu benchmark's row (its synthetic data, a 20-epoch yolov8n teacher or ``--teacher``, the pico student,
seed 0, workers=0, deterministic) for one epoch on ``steps`` batches (``fraction=`` of the training images) and
writes every step's loss items. Run it at two commits (a ``git worktree`` of the older one on ``PYTHONPATH``) and
compare the files: a refactoring must leave them equal.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    """Train the steps and write their loss items."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--method", default="tar+cwd")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--project", default="runs/loss-steps")
    ap.add_argument("--teacher", default=None, help="a trained teacher .pt (default: train the cpu preset's)")
    args = ap.parse_args()

    from yolokd.bench.config import merge_config
    from yolokd.data.synthetic import make_dataset
    from yolokd.demo import resolve_model, train_teacher
    from yolokd.model import YOLOKD

    cfg, train = merge_config({})
    project = Path(args.project).resolve()
    keys = ("n_train", "n_val", "n_test", "imgsz", "nc", "max_objects", "style")
    data = make_dataset(project / "data", seed=cfg["data_seed"], **{k: cfg[k] for k in keys})
    common = {"imgsz": cfg["imgsz"], "batch": cfg["batch"], "seed": 0, **train}
    teacher = args.teacher or train_teacher(
        data, project, resolve_model("yolov8n.yaml", project), cfg["teacher_epochs"], **common
    )
    steps: list[dict[str, float]] = []

    def record(trainer) -> None:
        steps.append({k: float(v) for k, v in trainer.loss_items.items()})

    model = YOLOKD(resolve_model("yolov8-pico", project), teacher=str(teacher), method=args.method)
    model.add_callback("on_train_batch_end", record)
    fraction = args.steps * cfg["batch"] / cfg["n_train"]
    model.train(
        data=str(data),
        epochs=1,
        workers=0,
        project=str(project),
        name="row",
        exist_ok=True,
        fraction=fraction,
        **{**common, "val": False},
    )
    Path(args.out).write_text(json.dumps(steps[: args.steps], indent=1))
    print(f"{len(steps)} steps written to {args.out}")


if __name__ == "__main__":
    main()
