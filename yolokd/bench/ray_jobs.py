# yolokd, AGPL-3.0 License
"""Benchmark and sweep rows as Ray Tune trials (``executor=ray``): each (row, seed) runs `launch_row` in a trial.

On a cluster, the data, the teacher and ``project`` must be on a file system every node sees.
"""

from __future__ import annotations

import json
from typing import Any, Callable

from yolokd.config import KDError


def require_ray():
    """Import Ray Tune, or a one-line `KDError` naming the extra."""
    try:
        import ray
        from ray import tune
    except ImportError as e:
        raise KDError(
            'executor=ray needs Ray Tune: pip install "yolokd[ray]" (or "ray[tune]"); or executor=local'
        ) from e
    return ray, tune


def run_on_ray(
    todo: list[Any], launch: Callable[[Any], dict], record: Callable[[Any, dict], None], address: str | None = None
) -> None:
    """Run ``launch(job)`` for every job as a Ray Tune trial (one CPU) and ``record(job, result)`` in the driver."""
    ray, tune = require_ray()
    if not ray.is_initialized():
        ray.init(address=address, ignore_reinit_error=True)

    def trial(config: dict) -> dict:
        return {"row_json": json.dumps(launch(todo[config["job"]]), default=str)}

    grid = tune.Tuner(
        tune.with_resources(trial, {"cpu": 1}),
        param_space={"job": tune.grid_search(list(range(len(todo))))},
        tune_config=tune.TuneConfig(num_samples=1),
    ).fit()
    for result in sorted(grid, key=lambda r: r.config["job"]):
        job = todo[result.config["job"]]
        if result.error is not None:
            record(job, {"ok": False, "error": f"Ray trial failed: {' '.join(str(result.error).split())[:300]}"})
        else:
            record(job, json.loads(result.metrics["row_json"]))
