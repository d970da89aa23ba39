# yolokd, AGPL-3.0 License
"""Every door that trains distils or refuses in one line: each public method of Ultralytics' `YOLO` that trains
(found by reading their code, so a new one fails here until it is handled), and every CLI mode."""

from __future__ import annotations

import ast
import inspect
import logging
import textwrap

import pytest
from helpers import IMGSZ, captured_logs
from ultralytics import YOLO
from ultralytics.engine.model import Model
from ultralytics.utils.torch_utils import unwrap_model

from yolokd import YOLOKD
from yolokd.cli import MODES, PASSTHROUGH, main
from yolokd.distill_model import KDModel

TRAINING_WORDS = ("train", "tune", "trainer", "tuner")  # a name or attribute made of these parts trains


def _trains(fn) -> bool:
    """Whether the code of ``fn`` (its docstring left out) names a trainer, a tuner, ``train`` or ``tune``."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
    body = tree.body[0].body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]
    for node in ast.walk(ast.Module(body=body, type_ignores=[])):
        word = node.attr if isinstance(node, ast.Attribute) else node.id if isinstance(node, ast.Name) else None
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.isidentifier():
            word = node.value  # e.g. self._smart_load("trainer")
        if word and any(part in TRAINING_WORDS for part in word.lower().split("_")):
            return True
        if isinstance(node, ast.ImportFrom) and (node.module or "").endswith(("tuner", "trainer")):
            return True
    return False


def _public_methods(*classes) -> dict[str, object]:
    return {n: f for c in classes for n, f in vars(c).items() if not n.startswith("_") and inspect.isfunction(f)}


def test_the_yolo_methods_that_train_are_train_and_tune_and_yolokd_overrides_both():
    methods = _public_methods(Model, YOLO)
    assert {"train", "tune", "val", "predict", "export", "benchmark"} <= set(methods)  # the scan sees the API
    training = {n for n, f in methods.items() if _trains(f)}
    # add_callback and friends only edit the callbacks dict (their code names no trainer)
    assert training == {"train", "tune"}, f"a new door trains: handle {sorted(training - {'train', 'tune'})} in YOLOKD"
    assert {"train", "tune"} <= set(vars(YOLOKD))


def test_the_scan_finds_code_that_trains():
    def builds_a_trainer(self):
        """Docs may say trainer; only the code counts."""
        return self._smart_load("trainer")

    def only_validates(self):
        """A trainer is mentioned here only."""
        return self.val()

    assert _trains(builds_a_trainer) and not _trains(only_validates)


def test_train_on_a_list_of_data_sets_distils(pico_yaml, teacher_pt, tiny_data, tmp_path):
    """Ultralytics trains a list of data sets with MultiTrainer, by default in `yolo train` subprocesses."""
    seen = []
    model = YOLOKD(str(pico_yaml), teacher=str(teacher_pt), method="cwd", teacher_val=False)
    model.add_callback(
        "on_train_epoch_end", lambda tr: seen.append((type(unwrap_model(tr.model)), float(tr.tloss["cwd_loss"])))
    )
    train = {"epochs": 1, "imgsz": IMGSZ, "batch": 8, "workers": 0, "plots": False, "val": False}
    results = model.train(data=[str(tiny_data)], project=str(tmp_path), **train)
    assert isinstance(results, dict) and len(results) == 1
    assert seen and seen[0][0] is KDModel and seen[0][1] > 0


def test_every_cli_mode_is_known():
    """Modes that train (train, demo, benchmark, sweep) distil by construction; the rest never train."""
    assert set(MODES) == {"train", "demo", "benchmark", "sweep", "help", "version", "cfg", "methods"}
    assert set(PASSTHROUGH) == {"val", "predict", "export", "track"}  # Ultralytics' modes that do not train


@pytest.mark.parametrize(
    "argv",
    [["yolo", "train", "model=yolov8n.yaml"], ["yolo", "detect", "train", "model=yolov8n.yaml"], ["yolo", "tune"]],
)
def test_cli_refuses_ultralytics_training_without_a_teacher(argv):
    with captured_logs() as records:
        assert main(argv) == 2
    errors = [r.getMessage() for r in records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "would train without a teacher" in errors[0] and "\n" not in errors[0]
