# yolokd, AGPL-3.0 License
"""CLI parsing: Ultralytics' key=value syntax, close-match errors, exit codes, one-line messages."""

from __future__ import annotations

import logging

import pytest
from helpers import captured_logs

from yolokd.cli import main, parse, ultralytics_args
from yolokd.config import KDError


def test_cli_parse_splits_nothing_and_keeps_types():
    mode, o = parse(["train", "model=yolov8n.yaml", "teacher=t.pt", "epochs=3", "lr0", "=", "0.01", "amp=False"])
    assert mode == "train"
    assert o == {"model": "yolov8n.yaml", "teacher": "t.pt", "epochs": 3, "lr0": 0.01, "amp": False}
    assert parse(["train", "resume", "model=last.pt"])[1] == {"resume": True, "model": "last.pt"}


def test_cli_task_word_or_key_before_train_and_class_map():
    """'yolokd segment train ...' is 'yolokd train task=segment ...', as in 'yolo segment train ...'."""
    assert parse(["segment", "train", "model=yolov8n-seg.yaml"]) == (
        "train",
        {"task": "segment", "model": "yolov8n-seg.yaml"},
    )
    assert parse(["train", "task=pose", "class_map=[2,0]"]) == ("train", {"task": "pose", "class_map": [2, 0]})
    with pytest.raises(KDError, match="unknown argument 'segmnt'"):
        parse(["segmnt", "train"])


@pytest.mark.parametrize(
    "argv, match",
    [
        (["train", "epoch=3"], "'epoch' is not a valid YOLO argument. Similar arguments are i.e. \\['epochs=100'"),
        (["train", "techer=t.pt"], "'techer' is not a valid YOLO argument.*teacher"),
        (["demo", "teacher_epoch=3"], "teacher_epochs"),
        (["train", "blah"], "unknown argument 'blah'"),
    ],
)
def test_cli_misspelt_keys_name_the_fix(argv, match):
    with pytest.raises(KDError, match=match):
        parse(argv)


def test_cli_exit_codes(caplog):
    assert main(["help"]) == 0
    assert main(["version"]) == 0
    assert main(["train", "epoch=3"]) == 2
    assert main(["train", "data=x.yaml"]) == 2  # model= is required
    assert main(["train", "model=yolov8n.yaml", "method=cdw", "teacher=t.pt"]) == 2


def test_cli_error_is_one_line_without_traceback():
    with captured_logs() as records:
        assert main(["train", "model=yolov8n.yaml", "teacher=/no/such/teacher.pt", "data=x.yaml"]) == 2
    errors = [r.getMessage() for r in records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "\n" not in errors[0] and "Traceback" not in errors[0]
    assert "teacher file '/no/such/teacher.pt' does not exist" in errors[0]


def test_ultralytics_modes_pass_through_unchanged_and_kd_modes_stay():
    assert ultralytics_args(["val", "model=best.pt"]) == ["val", "model=best.pt"]
    assert ultralytics_args(["model=best.pt", "export", "format=onnx"]) == ["model=best.pt", "export", "format=onnx"]
    assert ultralytics_args(["segment", "track", "source=v.mp4"]) == ["segment", "track", "source=v.mp4"]
    assert ultralytics_args(["yolo", "benchmark", "model=best.pt"]) == ["benchmark", "model=best.pt"]  # Ultralytics'
    for kd in (["benchmark", "jobs=2"], ["train", "val=False"], ["demo"], [], ["val=False"], ["detect", "train"]):
        assert ultralytics_args(kd) is None, kd  # yolokd's own modes, 'val' as a key, a task before a KD mode


def test_yolokd_val_and_predict_run_ultralytics(tmp_path, teacher_pt, tiny_data):
    """'yolokd val' was read as the key val=True and printed the help; now it is Ultralytics' val, like predict."""
    common = [f"model={teacher_pt}", "imgsz=64", f"project={tmp_path}", "exist_ok=True", "plots=False"]
    with captured_logs() as records:
        assert main(["val", f"data={tiny_data}", "name=v", *common]) == 0
    text = "\n".join(r.getMessage() for r in records)
    assert "modes/val" in text and "all          8" in text  # Ultralytics' own validation, its table
    image = next((tiny_data.parent / "images" / "val").glob("*.jpg"))
    assert main(["detect", "predict", f"source={image}", "name=p", "save_txt=True", *common]) == 0
    assert (tmp_path / "p").is_dir()  # Ultralytics' predict ran and made its run folder


def test_cli_methods_prints_papers_terms_and_weights_and_one_yaml():
    with captured_logs() as records:
        assert main(["methods"]) == 0
        assert main(["methods", "crosskd"]) == 0
        assert main(["methods", "cdw"]) == 2
    listing, yaml_text, error = (r.getMessage() for r in records)
    block = next(b for b in listing.split("\n\n") if b.startswith("cwd "))
    lines = [line.split() for line in block.splitlines()]
    assert lines[0][:2] == ["cwd", "CWD:"] and "arXiv:2011.13256)." in block  # the paper
    assert lines[1] == [
        "cwd_loss",
        "weight",
        "5",
        "(used",
        "with",
        "balance=0)",
        "automatic",
        "balance",
        "0.25",
        "constant",
        "tau=1.0",
    ]
    tar = next(b for b in listing.split("\n\n") if b.startswith("tar "))
    assert [line.split()[0] for line in tar.splitlines()[1:]] == ["tar_feat_loss", "tar_cls_loss", "tar_box_loss"]
    from yolokd.config import cfg_dir

    assert yaml_text == (cfg_dir() / "methods" / "crosskd.yaml").read_text()
    assert "unknown method 'cdw'. Did you mean 'cwd'?" in error


def test_cli_term_weight_flat_key_is_a_kd_key():
    assert parse(["train", "term_weights.cwd=2.5"]) == ("train", {"term_weights.cwd": 2.5})
