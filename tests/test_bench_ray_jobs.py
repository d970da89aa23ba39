# yolokd, AGPL-3.0 License
"""executor=ray: the benchmark's and the sweep's rows as Ray Tune trials (a stand-in Ray runs them in-process here;
the real Ray Tune where it is installed)."""

from __future__ import annotations

import importlib.util
import sys
import types

import pytest

from yolokd.bench.config import merge_config
from yolokd.bench.ray_jobs import run_on_ray
from yolokd.config import KDError


class _Result:
    def __init__(self, config, metrics, error=None):
        self.config, self.metrics, self.error = config, metrics, error


def _fake_ray(monkeypatch, fail_job=None):
    """A stand-in for ray and ray.tune: a grid over ``job`` run in this process, failures as errored results."""
    ray = types.ModuleType("ray")
    tune = types.ModuleType("ray.tune")
    ray.tune, ray.calls = tune, {"init": 0, "resources": None}
    ray.is_initialized = lambda: False
    ray.init = lambda **kw: ray.calls.__setitem__("init", ray.calls["init"] + 1)
    tune.grid_search = lambda values: {"grid": values}
    tune.TuneConfig = lambda **kw: kw

    def with_resources(fn, res):
        ray.calls["resources"] = res
        return fn

    class Tuner:
        def __init__(self, fn, param_space, tune_config):
            self.fn, self.jobs = fn, param_space["job"]["grid"]

        def fit(self):
            out = []
            for j in reversed(self.jobs):  # trials finish in any order
                if j == fail_job:
                    out.append(_Result({"job": j}, {}, RuntimeError("worker lost")))
                else:
                    out.append(_Result({"job": j}, self.fn({"job": j})))
            return out

    tune.with_resources, tune.Tuner = with_resources, Tuner
    monkeypatch.setitem(sys.modules, "ray", ray)
    monkeypatch.setitem(sys.modules, "ray.tune", tune)
    return ray


def test_rows_run_as_trials_and_are_recorded_in_job_order(monkeypatch):
    ray = _fake_ray(monkeypatch, fail_job=2)
    todo = [("cwd", 0), ("tar", 0), ("cwd", 1)]
    seen = []
    run_on_ray(todo, lambda job: {"ok": True, "label": job[0], "seed": job[1]}, lambda job, r: seen.append((job, r)))
    assert [job for job, _ in seen] == todo
    assert seen[0][1] == {"ok": True, "label": "cwd", "seed": 0} and seen[1][1]["label"] == "tar"
    assert seen[2][1]["ok"] is False and "Ray trial failed: worker lost" in seen[2][1]["error"]
    assert ray.calls == {"init": 1, "resources": {"cpu": 1}}


def test_executor_is_checked_and_ray_missing_names_the_extra(monkeypatch):
    with pytest.raises(KDError, match="executor must be 'local' or 'ray'"):
        merge_config({"executor": "slurm"})
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray fails
    with pytest.raises(KDError, match=r'executor=ray needs Ray Tune: pip install "yolokd\[ray\]"'):
        merge_config({"executor": "ray"})
    assert merge_config({})[0]["executor"] == "local"


@pytest.mark.skipif(
    importlib.util.find_spec("ray") is None, reason='Ray Tune not installed (pip install "yolokd[ray]")'
)
def test_real_ray_runs_the_trials():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, ignore_reinit_error=True)
    try:
        seen = []
        run_on_ray([1, 2, 3], lambda job: {"ok": True, "x": job * job}, lambda job, r: seen.append((job, r["x"])))
        assert seen == [(1, 1), (2, 4), (3, 9)]
    finally:
        ray.shutdown()
