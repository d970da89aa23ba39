# yolokd, AGPL-3.0 License
"""The benchmark's keys: presets, overrides, errors that name the fix, publish=, style= and the command line."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from yolokd.bench.config import BENCH_DEFAULTS, PRESETS, format_command, merge_config, publish_path
from yolokd.config import KDError, TermSpec, available_methods, resolve_method


def _bench_method(name: str) -> list[TermSpec]:
    """The terms of benchmarks/methods/<name>.yaml, one of the benchmark's method files."""
    return resolve_method(str(Path(__file__).parents[1] / "benchmarks" / "methods" / f"{name}.yaml"))


def test_merge_config_presets_and_overrides():
    cfg, train = merge_config({})
    assert cfg["preset"] == "cpu" and cfg["seeds"] == [0, 1, 2] and cfg["methods"] == available_methods("detect")
    assert "mask" not in cfg["methods"] and "keypoint" not in cfg["methods"]  # segment and pose only
    assert cfg["combo"] == "auto" and cfg["builtin"] is True and cfg["dis"] == 6.0
    assert train["nbs"] == cfg["batch"] and train["warmup_epochs"] == 1.0
    cfg, train = merge_config({"preset": "micro", "epochs": 2, "batch": 4, "lr0": 0.02})
    assert cfg["epochs"] == 2 and cfg["imgsz"] == 64 and cfg["methods"] == ["cwd"] and cfg["combo"] is None
    assert train["nbs"] == 4 and train["lr0"] == 0.02 and not cfg["publish"]
    cfg, train = merge_config({"nbs": 64, "methods": "[cwd,tar]", "seeds": 3, "combo": "cwd+tar"})
    assert train["nbs"] == 64 and cfg["methods"] == ["cwd", "tar"] and cfg["seeds"] == [3]
    assert cfg["combo"] == "cwd+tar"
    cfg, train = merge_config({"preset": "gpu"})
    assert cfg["data"] == "coco.yaml" and cfg["teacher"] == "yolov8x.pt" and "nbs" not in train
    assert merge_config({"combo": None})[0]["combo"] is None
    assert set(BENCH_DEFAULTS) >= {"preset", "seeds", "methods", "combo", "teacher", "project"}


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"epoch": 3}, "'epoch' is not a benchmark.*Did you mean 'epochs'"),
        ({"method": "cwd"}, "methods=\\[...\\] or combo="),
        ({"seed": 1}, "seeds=\\[...\\]"),
        ({"distill_model": "t.pt"}, "set by the benchmark"),
        ({"preset": "cpuu"}, "unknown preset 'cpuu'. Did you mean 'cpu'"),
        ({"methods": ["cwd", "cdw"]}, "unknown method 'cdw'"),
        ({"methods": ["cwd+tar"]}, "combo=cwd\\+tar"),
        ({"seeds": [0, 0]}, "distinct"),
        ({"seeds": [-1]}, ">= 0"),
        ({"seeds": "[a,b]"}, "list of integers"),
        ({"combo": "cwd+nope"}, "unknown method 'nope'"),
        ({"epochs": 0}, "epochs must be an integer >= 1"),
        ({"teacher_batches": 5}, "teacher_batches must be an integer >= 10"),
        ({"weights": "mid"}, "weights must be 'last' or 'best'"),
        ({"builtin": "yes"}, "builtin must be True or False"),
        ({"timeout": -1}, "timeout"),
        ({"publish": True}, "publish=BENCHMARKS.md"),
        ({"publish": "BENCHMARKS.txt"}, "Markdown file"),
        ({"style": ""}, "style must be a non-empty name such as 'shapes'"),
        ({"catchup_pace": 1.5}, "catchup_pace must be a number >= 0 and < 1"),
        ({"semi_own_teacher": "yes"}, "semi_own_teacher must be True or False, got 'yes'"),
    ],
)
def test_merge_config_errors_name_the_fix(overrides, match):
    with pytest.raises(KDError, match=match):
        merge_config(overrides)


def test_publish_writes_nothing_outside_project_unless_given_a_path():
    assert BENCH_DEFAULTS["publish"] is None and all("publish" not in p for p in PRESETS.values())
    assert merge_config({})[0]["publish"] is None
    assert merge_config({"publish": "BENCHMARKS.md"})[0]["publish"] == "BENCHMARKS.md"
    assert merge_config({"publish": False})[0]["publish"] is None  # the CLI's publish=False
    assert publish_path("none") is None and publish_path("docs/bench.md") == "docs/bench.md"


def test_style_defaults_to_shapes():
    assert BENCH_DEFAULTS["style"] == "shapes" and merge_config({})[0]["style"] == "shapes"
    assert merge_config({"style": "aerial"})[0]["style"] == "aerial"
    with pytest.raises(KDError, match=r"style must be one of the synthetic looks \['aerial', 'glyphs', 'shapes'\]"):
        merge_config({"style": "transfer"})  # before anything is generated or trained
    assert merge_config({"style": "anything", "data": "d.yaml"})[0]["style"] == "anything"  # unused with data=


def test_format_command():
    assert format_command({}) == "yolokd benchmark"
    assert format_command({"seeds": [0, 1], "project": "a b"}) == "yolokd benchmark seeds=[0,1] project='a b'"
    assert format_command({"publish": "BENCHMARKS.md"}, mode="sweep") == "yolokd sweep publish=BENCHMARKS.md"


def test_converged_preset_validates_every_epoch_with_the_cpu_presets_data_and_student():
    cfg, train = merge_config({"preset": "converged"})
    cpu = merge_config({})[0]
    assert train["val"] is True and train["nbs"] == cfg["batch"] and train["optimizer"] == "AdamW"
    assert cfg["epochs"] > cpu["epochs"] and cfg["teacher_epochs"] > cpu["teacher_epochs"]
    same = ("n_train", "n_val", "n_test", "imgsz", "batch", "teacher_model", "seeds", "style")
    assert {k: cfg[k] for k in same} == {k: cpu[k] for k in same}
    assert cfg["combo"] == "tar+cwd" and cfg["profile"] == [] and cfg["student_model"] == "yolov8-femto"


def test_catchup_keys_are_in_the_spec_of_distilled_rows_only_where_set():
    from yolokd.bench.plan import catchup_spec, new_row

    combo, student = new_row("combo", "tar+cwd", 0), new_row("student", None, 0)
    cfg = merge_config({"catchup_pace": 0.25})[0]
    assert catchup_spec(cfg, combo) == {"catchup_pace": 0.25}
    assert catchup_spec(cfg, student) == {}
    assert catchup_spec(merge_config({})[0], combo) == {}  # unset: the specs of earlier runs stay reusable


def test_semi_own_teacher_rows_carry_their_teacher_and_leave_the_other_specs_alone(tmp_path):
    import json

    from yolokd.bench.plan import Setup, plan_semi_rows, row_spec
    from yolokd.bench.semi import is_semi

    assert BENCH_DEFAULTS["semi_own_teacher"] is False and merge_config({"preset": "semi"})[0]["semi_own_teacher"]
    cfg, train = merge_config({"preset": "semi"})
    setup = Setup(cfg, train, "s.yaml", "t.pt", "d.yaml", tmp_path)
    before = plan_semi_rows(cfg, "view.yaml", "extra", None)
    after = plan_semi_rows(cfg, "view.yaml", "extra", "own.pt")
    assert [r["id"] for r in before] == ["semi-a", "semi-b", "semi-c", "semi-f"]
    assert [r["id"] for r in after] == ["semi-a", "semi-b", "semi-c", "semi-b-own", "semi-c-own", "semi-f"]
    assert all(is_semi(r) for r in after)
    own = {r["id"]: r for r in after}
    assert own["semi-b-own"]["label"] == "B': tar+cwd, 10% labels, teacher on 10%"
    assert own["semi-c-own"]["label"] == "C': B' + the other train images unlabeled"
    specs = {r["id"]: row_spec(setup, r, 0) for r in after}
    assert specs["semi-b-own"]["teacher"] == specs["semi-c-own"]["teacher"] == "own.pt"
    for r in before:  # byte-identical: rows stored by earlier runs stay reusable
        assert json.dumps(specs[r["id"]], sort_keys=True) == json.dumps(row_spec(setup, r, 0), sort_keys=True)
        assert specs[r["id"]]["teacher"] == "t.pt"
    b, b_own = specs["semi-b"], specs["semi-b-own"]
    assert {k for k in b if b[k] != b_own[k]} == {"teacher", "dir"} and set(b) == set(b_own)
    assert b_own["dir"] == str(tmp_path / "rows" / "semi-b-own-seed0")
    assert specs["semi-c-own"]["unlabeled"] is None and b_own["unlabeled"] is False  # None: the view's unlabeled:


def test_the_one_file_tar_cwd_method_is_the_shipped_combination():
    """benchmarks/methods/tar-cwd.yaml (tar+cwd in one wave of rows) must stay equal to method=tar+cwd term by term."""
    assert _bench_method("tar-cwd") == resolve_method("tar+cwd")


@pytest.mark.parametrize(("name", "balance"), [("bckd-half", 0.125), ("bckd-double", 0.5)])
def test_the_bckd_weight_variants_differ_from_the_shipped_bckd_only_in_balance(name, balance):
    """The grid's bckd weight rows must be the shipped bckd with every term's automatic weight set to ``balance``."""
    shipped = resolve_method("bckd")
    assert [t.balance for t in shipped] == [0.25, 0.25]
    assert _bench_method(name) == [replace(t, balance=balance) for t in shipped]


GRID_CHOICE = {
    "cwd": "base",
    "crosskd": "base",
    "fgbg": "base",
    "hint": "half",
    "tar": "base",
    "pkd": "half",
    "mgd": "base",
}
"""The weight each method ships with, of the three the grid ran (BENCHMARKS.md "Every method's weight, by the worst
cell"): ``base`` the weights it shipped with then, or ``half`` / ``double`` of them."""


def _scaled(specs, factor):
    """Each term's automatic weight (``balance``), or its fixed weight where the method has none, times ``factor``."""
    return [
        replace(t, balance=t.balance * factor) if t.balance > 0 else replace(t, weight=t.weight * factor) for t in specs
    ]


@pytest.mark.parametrize("method", list(GRID_CHOICE))
def test_every_methods_weight_variants_scale_only_its_weights(method):
    """``<method>-half`` and ``-double`` are one method at half and twice the weights it shipped with when the grid
    ran (4x apart, nothing else differs), and the shipped method is the grid's choice of the three."""
    half, double = _bench_method(f"{method}-half"), _bench_method(f"{method}-double")
    base = _scaled(half, 2.0)
    assert double == _scaled(half, 4.0) and half != base
    assert resolve_method(method) == {"half": half, "base": base, "double": double}[GRID_CHOICE[method]]


def test_the_confidence_crosskd_differs_from_the_shipped_crosskd_only_in_its_class_norm():
    cls, box = resolve_method("crosskd")
    assert cls.params["norm"] == "positives"
    assert _bench_method("crosskd-conf") == [replace(cls, params={**cls.params, "norm": "confidence"}), box]


def test_the_gated_bckd_differs_from_the_shipped_bckd_only_in_its_gates():
    shipped = resolve_method("bckd")
    assert all(not t.params.get("gate", False) for t in shipped)
    assert _bench_method("bckd-gated") == [replace(t, params={**t.params, "gate": True}) for t in shipped]


def test_the_fgbg_variants_differ_from_the_shipped_fgbg_only_as_named():
    """fgbg-std: the foreground cosine on standardised maps; fgbg-fg and fgbg-bg: one of the two shipped terms alone."""
    fg, bg = resolve_method("fgbg")
    assert "standardise" not in fg.params
    assert _bench_method("fgbg-std") == [replace(fg, params={**fg.params, "standardise": True}), bg]
    assert _bench_method("fgbg-fg") == [fg] and _bench_method("fgbg-bg") == [bg]
