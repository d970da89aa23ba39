# yolokd, AGPL-3.0 License
"""KD keys, method yaml resolution and their one-line errors."""

from __future__ import annotations

import pytest

from yolokd.config import KD_DEFAULTS, KDConfig, KDError, build_config, resolve_method, split_kd_args
from yolokd.schedules import Progress, cosine, linear, stop_at_close_mosaic


def test_config_cwd_defaults_are_the_papers():
    (spec,) = resolve_method("cwd")
    assert (spec.type, spec.name, spec.weight, spec.schedule, spec.params) == (
        "cwd",
        "cwd",
        5.0,
        "constant",
        {"tau": 1.0},
    )


def test_config_default_keys_and_split():
    assert set(KD_DEFAULTS) == {
        "teacher",
        "method",
        "distill_weight",
        "balance",
        "teacher_val",
        "class_map",
        "term_weights",
        "catchup",
        "catchup_pace",
        "unlabeled",
        "unlabeled_ratio",
        "unlabeled_weight",
        "pseudo_conf",
    }
    kd, rest = split_kd_args({"teacher": "t.pt", "method": "cwd", "epochs": 3, "imgsz": 64})
    assert kd == {"teacher": "t.pt", "method": "cwd"} and rest == {"epochs": 3, "imgsz": 64}


def test_config_roundtrip_through_dict():
    cfg = build_config({"teacher": "t.pt", "distill_weight": 2})
    again = KDConfig.from_dict(cfg.to_dict())
    assert again == cfg and again.distill_weight == 2.0


def test_config_custom_yaml(tmp_path):
    f = tmp_path / "mine.yaml"
    f.write_text("terms:\n  - {type: cwd, name: cwd_hot, weight: 2, schedule: linear, params: {tau: 4.0}}\n")
    (spec,) = resolve_method(str(f))
    assert (spec.name, spec.weight, spec.schedule, spec.params) == ("cwd_hot", 2.0, "linear", {"tau": 4.0})
    both = resolve_method(f"cwd+{f}")
    assert [s.name for s in both] == ["cwd", "cwd_hot"]


@pytest.mark.parametrize(
    "text, match",
    [
        ("terms: []", "non-empty 'terms:' list"),
        ("stuff: 1\nterms: [{type: cwd}]", r"unknown top-level key\(s\) \['stuff'\]"),
        ("terms: [{type: cwdd}]", "unknown term type 'cwdd'. Did you mean 'cwd'?"),
        ("terms: [{type: cwd, wieght: 2}]", "unknown key 'wieght'. Did you mean 'weight'?"),
        ("terms: [{type: cwd, weight: heavy}]", "'weight' must be a number >= 0"),
        ("terms: [{type: cwd, weight: -1}]", "'weight' must be a number >= 0"),
        ("terms: [{type: cwd, schedule: linnear}]", "unknown schedule 'linnear'. Did you mean 'linear'?"),
        ("terms: [{type: cwd, params: {tau: hot}}]", "parameter 'tau' of term 'cwd' must be float, got 'hot'"),
        ("terms: [{type: cwd, params: {tua: 1.0}}]", "unknown parameter 'tua' for term 'cwd'. Did you mean 'tau'?"),
        ("terms: [{type: cwd}, {type: cwd}]", r"term name\(s\) \['cwd'\] used twice"),
        ("terms: [oops", "is not valid yaml"),
    ],
)
def test_config_bad_yaml_is_a_clear_error(tmp_path, text, match):
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(KDError, match=match):
        resolve_method(str(f))


def test_config_bad_keys_and_values():
    with pytest.raises(KDError, match="unknown method 'cdw'. Did you mean 'cwd'?"):
        build_config({"method": "cdw"})
    with pytest.raises(KDError, match="method file 'nope.yaml' does not exist"):
        build_config({"method": "nope.yaml"})
    with pytest.raises(KDError, match="distill_weight must be a number >= 0"):
        build_config({"distill_weight": -1})
    with pytest.raises(KDError, match="teacher_val must be True or False"):
        build_config({"teacher_val": "yes"})
    with pytest.raises(KDError, match="'techer' is not a yolokd argument. Did you mean 'teacher'?"):
        build_config({"techer": "t.pt"})


def test_schedules_hand_values():
    p = Progress(epoch=1, epochs=4, epoch_fraction=0.0, close_mosaic=2)
    assert linear(p) == 0.75
    assert cosine(p) == pytest.approx((1 + 2**-0.5) / 2)  # cos(pi/4)
    assert stop_at_close_mosaic(p) == 1.0
    assert stop_at_close_mosaic(Progress(epoch=2, epochs=4, close_mosaic=2)) == 0.0
    assert stop_at_close_mosaic(Progress(epoch=3, epochs=4, close_mosaic=0)) == 1.0
    assert linear(Progress(epoch=9, epochs=4)) == 0.0  # clipped


def test_run_config_chooses_ddp_worker_resume_or_new_run():
    from yolokd.config import KDError, build_config, run_config

    carried = build_config({"teacher": "t.pt", "method": "cwd", "distill_weight": 0.5})
    saved = build_config({"teacher": "old/t.pt", "method": "cwd+crosskd"}).to_dict()
    read = {"run/last.pt": saved, "plain.pt": {}}.__getitem__
    assert run_config({}, {}, carried, read) is carried  # DDP worker: the parent's exact configuration
    resumed = run_config({"teacher": "new/t.pt", "method": "tar"}, {"resume": "run/last.pt"}, None, read)
    assert resumed.teacher == "new/t.pt" and resumed.terms == build_config(saved).terms  # method=tar is ignored
    assert run_config({}, {"resume": True, "model": "run/last.pt"}, None, read).teacher == "old/t.pt"
    with pytest.raises(KDError, match="holds no yolokd configuration"):
        run_config({}, {"resume": "plain.pt"}, None, read)
    assert run_config({"teacher": "t.pt", "method": "tar"}, {}, None, read).method == "tar"  # a new run


@pytest.mark.parametrize(
    "key, value, match",
    [
        ("unlabeled", 3, "unlabeled must be a folder of images or a .txt list"),
        ("unlabeled_ratio", 0, "unlabeled_ratio must be a number > 0"),
        ("unlabeled_ratio", True, "unlabeled_ratio must be a number > 0"),
        ("unlabeled_weight", -1, "unlabeled_weight must be a number >= 0"),
        ("pseudo_conf", 1.0, "pseudo_conf must be a number > 0 and < 1"),
        ("pseudo_conf", 0, "pseudo_conf must be a number > 0 and < 1"),
    ],
)
def test_unlabeled_keys_are_checked_in_one_line(key, value, match):
    with pytest.raises(KDError, match=match):
        build_config({key: value})


def test_unlabeled_keys_travel_in_the_saved_config():
    cfg = build_config({"unlabeled": "raw/", "unlabeled_ratio": 2, "pseudo_conf": 0.3})
    assert (cfg.unlabeled, cfg.unlabeled_ratio, cfg.unlabeled_weight, cfg.pseudo_conf) == ("raw/", 2.0, 1.0, 0.3)
    back = KDConfig.from_dict(cfg.to_dict())
    assert back == cfg
    old = {k: v for k, v in cfg.to_dict().items() if not k.startswith(("unlabeled", "pseudo"))}  # an older checkpoint
    assert KDConfig.from_dict(old).unlabeled is None and KDConfig.from_dict(old).pseudo_conf == 0.5


def test_kdconfig_field_defaults_are_cfg_default_yaml():
    """KDConfig has a field for every key of cfg/default.yaml, each defaulting to that key's value there."""
    from dataclasses import fields

    own = {f.name: f.default for f in fields(KDConfig) if f.name != "terms"}
    assert set(own) == set(KD_DEFAULTS)
    assert own == KD_DEFAULTS
