# yolokd, AGPL-3.0 License
"""`YOLOKD.tune()`: every trial of Ultralytics' tuner (and of Ray Tune, where installed) trains with the KD trainer,
the teacher and the method, and the distillation keys can be searched."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch
from helpers import IMGSZ
from ultralytics.utils.torch_utils import unwrap_model

from yolokd import YOLOKD
from yolokd.config import KDError, build_config, split_kd_args
from yolokd.distill_model import KDModel
from yolokd.trainer import KDTrainer
from yolokd.tune import KD_SPACE, KDTuner, kd_trials, searchable_defaults

pytestmark = pytest.mark.slow

TRIAL = {"epochs": 1, "imgsz": IMGSZ, "batch": 8, "workers": 0, "plots": False, "val": True, "teacher_val": False}


def _recorder(trials: list):
    def record(trainer):
        model = unwrap_model(trainer.model)
        assert isinstance(model, KDModel), type(model)
        items = {k: float(v) for k, v in trainer.tloss.items()}  # epoch means
        weights = {s.name: s.weight for s in model.kd_config.terms}
        trials.append({"items": items, "distill_weight": model.kd_config.distill_weight, "weights": weights})

    return record


def test_internal_tuner_trials_distil_and_search_the_kd_keys(pico_yaml, teacher_pt, tiny_data, tmp_path):
    model = YOLOKD(str(pico_yaml), teacher=str(teacher_pt), method="cwd")
    trials: list = []
    model.add_callback("on_train_epoch_end", _recorder(trials))
    # only KD keys: the second trial must then differ in one of them (the tuner's mutation draws from an unseeded
    # generator and leaves each key as it is with probability 1/2, so with lr0 in the space it could change lr0 alone)
    space = {"distill_weight": (0.5, 2.0), "term_weights.cwd": (1.0, 10.0)}
    model.tune(data=str(tiny_data), iterations=2, space=space, project=str(tmp_path), name="tune", **TRIAL)

    assert len(trials) == 2
    for t in trials:
        assert t["items"]["cwd_loss"] > 0, t  # the distillation item of every trial
    first, second = trials
    assert first["distill_weight"] == 1.0 and first["weights"] == {"cwd": 5.0}  # the search starts at the method's
    rows = [json.loads(line) for line in (tmp_path / "tune" / "tune_results.ndjson").read_text().splitlines()]
    assert [r["hyperparameters"]["distill_weight"] for r in rows] == [t["distill_weight"] for t in trials]
    assert [r["hyperparameters"]["term_weights.cwd"] for r in rows] == [t["weights"]["cwd"] for t in trials]
    assert (first["distill_weight"], first["weights"]) != (second["distill_weight"], second["weights"])
    best = torch.load(tmp_path / "tune" / "weights" / "best.pt", map_location="cpu", weights_only=False)
    assert type(best["model"]).__name__ == "DetectionModel" and best["yolokd"]["config"]["method"] == "cwd"


def test_kd_trials_restores_ultralytics_multitrainer_even_on_error():
    import ultralytics.engine.trainer as engine

    plain = engine.MultiTrainer
    with pytest.raises(RuntimeError), kd_trials(KDTrainer, None):
        assert engine.MultiTrainer is not plain and issubclass(engine.MultiTrainer, plain)
        trial = engine.MultiTrainer(None, {"data": []}, None)
        assert trial.trainer is KDTrainer  # Ultralytics' None (a yolo train subprocess) becomes the KD trainer
        raise RuntimeError
    assert engine.MultiTrainer is plain


def test_search_space_defaults_and_bad_keys():
    assert searchable_defaults({"method": "tar+cwd", "distill_weight": 2}, ["distill_weight", "balance"]) == {
        "distill_weight": 2.0,
        "balance": 0.25,
    }
    assert searchable_defaults({"method": "cwd", "balance": 0.5}, ["balance"]) == {"balance": 0.5}
    with pytest.raises(KDError, match=r"'term_weights.cdw' names no term of method 'cwd'; its terms are \['cwd'\]"):
        searchable_defaults({"method": "cwd"}, ["term_weights.cdw"])
    assert set(KD_SPACE) == {"distill_weight", "balance"}


def test_term_weights_key_fixes_one_term_and_turns_its_automatic_weight_off():
    kd, rest = split_kd_args({"term_weights.tar_box": 3, "epochs": 2})
    assert kd == {"term_weights": {"tar_box": 3}} and rest == {"epochs": 2}
    terms = {t.name: t for t in build_config({"method": "tar+cwd", **kd}).terms}
    assert (terms["tar_box"].weight, terms["tar_box"].balance) == (3.0, 0.0)
    assert terms["cwd"].balance == 0.25  # the others as the yamls say
    with pytest.raises(KDError, match=r"term_weights names 'cdw', which is no term of method 'cwd'"):
        build_config({"method": "cwd", "term_weights": {"cdw": 1.0}})
    with pytest.raises(KDError, match=r"term_weights must map term names to weights >= 0"):
        build_config({"method": "cwd", "term_weights": {"cwd": -1}})


def test_tune_without_teacher_or_with_plain_trainer_refuses(pico_yaml, tiny_data):
    with pytest.raises(KDError, match=r"tune\(\) needs a teacher"):
        YOLOKD(str(pico_yaml)).tune(data=str(tiny_data), iterations=1)
    with pytest.raises(KDError, match=r"tune\(\) needs a teacher"):
        KDTuner({"data": str(tiny_data)}, KDTrainer)
    from ultralytics.models.yolo.detect import DetectionTrainer

    with pytest.raises(KDError, match=r"trainer=DetectionTrainer would train without the teacher"):
        YOLOKD(str(pico_yaml), teacher="t.pt").train(trainer=DetectionTrainer, data=str(tiny_data))


@pytest.mark.skipif(
    importlib.util.find_spec("ray") is None, reason='Ray Tune not installed (pip install "yolokd[ray]")'
)
def test_ray_tune_trials_distil(pico_yaml, teacher_pt, tiny_data, tmp_path):
    from ray import tune

    model = YOLOKD(str(pico_yaml), teacher=str(teacher_pt), method="cwd")
    space = {"distill_weight": tune.uniform(0.5, 2.0)}
    train = {k: v for k, v in TRIAL.items() if k != "teacher_val"}
    grid = model.tune(use_ray=True, iterations=2, space=space, data=str(tiny_data), project=str(tmp_path), **train)
    assert len(grid) == 2 and not grid.errors
    runs = sorted(p.parent for p in tmp_path.rglob("results.csv"))
    assert runs, list(tmp_path.rglob("*"))
    for run in runs:
        header = (run / "results.csv").read_text().splitlines()[0]
        assert "train/cwd_loss" in header, header


def test_ray_missing_is_a_one_line_error(pico_yaml, teacher_pt, tiny_data, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("no ray")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(KDError, match=r'use_ray=True needs Ray Tune: pip install "yolokd\[ray\]"'):
        YOLOKD(str(pico_yaml), teacher=str(teacher_pt), method="cwd").tune(use_ray=True, data=str(tiny_data))
