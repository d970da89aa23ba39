# yolokd, AGPL-3.0 License
"""DDP: a distillation step under torch.distributed (gloo, 2 CPU processes), and Ultralytics' worker rebuild."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from helpers import kd_model, toy_batch

from yolokd.demo import scaled_yaml


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_step(rank: int, world: int, port: int, student_yaml: str, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        model = kd_model(student_yaml, "yolov8n.yaml", "cwd")
        ddp = torch.nn.parallel.DistributedDataParallel(model, find_unused_parameters=True)
        opt = torch.optim.SGD([p for p in ddp.parameters() if p.requires_grad], lr=0.1)
        batch = toy_batch()
        batch["img"] = torch.rand(batch["img"].shape, generator=torch.Generator().manual_seed(100 + rank))  # own data
        loss, items = ddp(batch)
        loss.sum().backward()
        grads = {k: p.grad.clone() for k, p in model.projector.named_parameters()}
        opt.step()
        torch.save(
            {
                "cwd": items["cwd_loss"].item(),
                "grads": grads,
                "params": {k: p.detach().clone() for k, p in model.projector.named_parameters()},
                "teacher_grads": [p.grad for p in model.teacher_model.parameters() if p.grad is not None],
            },
            os.path.join(out_dir, f"rank{rank}.pt"),
        )
    finally:
        dist.destroy_process_group()


def test_ddp_gloo_two_ranks_nonzero_kd_and_identical_adapters(tmp_path):
    student = scaled_yaml(tmp_path / "s.yaml", width=0.125)
    mp.spawn(_ddp_step, args=(2, _free_port(), str(student), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{i}.pt", weights_only=False) for i in range(2))
    assert r0["cwd"] > 0 and r1["cwd"] > 0
    assert r0["cwd"] != pytest.approx(r1["cwd"], rel=1e-6)  # each rank saw its own images
    for k in r0["grads"]:
        assert r0["grads"][k].abs().sum() > 0
        assert torch.allclose(r0["grads"][k], r1["grads"][k], atol=1e-7), k  # all-reduced
        assert torch.equal(r0["params"][k], r1["params"][k]), k
    assert r0["teacher_grads"] == [] and r1["teacher_grads"] == []


def _ddp_unlabeled(rank: int, world: int, port: int, student_yaml: str, folder: str, out_dir: str) -> None:
    from ultralytics.cfg import get_cfg
    from ultralytics.utils import DEFAULT_CFG

    from yolokd.unlabeled import UnlabeledStream

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        args = get_cfg(DEFAULT_CFG, {"imgsz": 64, "workers": 0})
        data = {"names": {i: str(i) for i in range(6)}, "nc": 6, "channels": 3}
        torch.manual_seed(0)  # the sampler's seed: Ultralytics' init_seeds makes it the same on every rank
        stream = UnlabeledStream(folder, args, data, batch=2, stride=32, rank=rank)
        files = [f for _ in range(len(stream.loader)) for f in stream.next()["im_file"]]  # one pass
        model = kd_model(student_yaml, "yolov8n.yaml", "cwd")
        ddp = torch.nn.parallel.DistributedDataParallel(model, find_unused_parameters=True)
        batch = toy_batch()
        batch["unlabeled_img"] = stream.next()["img"].float() / 255
        loss, items = ddp(batch)
        loss.sum().backward()
        grads = {k: p.grad.clone() for k, p in model.projector.named_parameters()}
        torch.save(
            {"files": files, "grads": grads, "unl_cls": items["unl_cls"].item()}, os.path.join(out_dir, f"u{rank}.pt")
        )
    finally:
        dist.destroy_process_group()


def test_ddp_gloo_each_rank_draws_its_own_unlabeled_images_and_adapters_agree(tmp_path):
    from PIL import Image

    folder = tmp_path / "raw"
    folder.mkdir()
    for i in range(8):
        Image.new("RGB", (48, 40 + i), (30 * i, 60, 90)).save(folder / f"im{i}.png")
    student = scaled_yaml(tmp_path / "s.yaml", width=0.125)
    mp.spawn(_ddp_unlabeled, args=(2, _free_port(), str(student), str(folder), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"u{i}.pt", weights_only=False) for i in range(2))
    assert len(r0["files"]) == len(r1["files"]) == 4 and not set(r0["files"]) & set(r1["files"])  # its own share
    assert {f.rsplit("/", 1)[-1] for f in r0["files"] + r1["files"]} == {f"im{i}.png" for i in range(8)}
    assert r0["unl_cls"] > 0 and r1["unl_cls"] > 0
    for k in r0["grads"]:
        assert r0["grads"][k].abs().sum() > 0 and torch.allclose(r0["grads"][k], r1["grads"][k], atol=1e-7), k


def test_ddp_worker_rebuild_reproduces_the_kd_configuration(tmp_path, tiny_data, pico_yaml, teacher_pt):
    from ultralytics.utils import DEFAULT_CFG_DICT
    from ultralytics.utils.dist import ddp_cleanup, generate_ddp_file
    from ultralytics.utils.patches import torch_load

    from yolokd import YOLOKD
    from yolokd.callbacks import KDCallbacks
    from yolokd.trainer import KDTrainer

    custom = tmp_path / "m.yaml"
    custom.write_text("terms:\n  - {type: cwd, name: cwd_a, weight: 2.5, schedule: cosine, params: {tau: 2.0}}\n")
    parent = KDTrainer(
        overrides=dict(
            model=str(pico_yaml),
            teacher=str(teacher_pt),
            method=f"cwd+{custom}",
            distill_weight=0.5,
            data=str(tiny_data),
            epochs=1,
            imgsz=64,
            project=str(tmp_path),
            name="p",
            plots=False,
        )
    )
    parent.model = YOLOKD(str(pico_yaml)).model  # what Model.train hands the trainer before DDP spawns workers
    file = generate_ddp_file(parent)
    try:
        state = torch_load(file.replace(".py", ".pt"), map_location="cpu")  # exactly what the worker script does
        cfg = DEFAULT_CFG_DICT.copy()
        cfg.update(save_dir="")
        worker = state["trainer"](cfg=cfg, overrides=state["args"], _callbacks=state["callbacks"])
    finally:
        ddp_cleanup(parent, file)
    assert type(worker) is KDTrainer
    assert worker.kd == parent.kd
    assert [(t.name, t.weight, t.schedule, t.params) for t in worker.kd.terms] == [
        ("cwd", 5.0, "constant", {"tau": 1.0}),
        ("cwd_a", 2.5, "cosine", {"tau": 2.0}),
    ]
    assert worker.kd.distill_weight == 0.5 and worker.kd.teacher == str(teacher_pt)
    p_sd, w_sd = parent.teacher_model.state_dict(), worker.teacher_model.state_dict()
    assert p_sd.keys() == w_sd.keys() and all(torch.equal(p_sd[k], w_sd[k]) for k in p_sd)
    # the callbacks travelled once: no second KDCallbacks was attached in the worker
    owners = {
        id(fn.__self__)
        for fns in worker.callbacks.values()
        for fn in fns
        if hasattr(fn, "__self__") and isinstance(fn.__self__, KDCallbacks)
    }
    assert len(owners) == 1


TWO_NODE_WORKER = """
import os, sys
import torch, torch.distributed as dist
sys.path.insert(0, {tests!r})
from helpers import kd_model, toy_batch

dist.init_process_group("gloo")  # torchrun's env: MASTER_ADDR/PORT, RANK, WORLD_SIZE
rank = dist.get_rank()
model = kd_model({student!r}, "yolov8n.yaml", "tar+cwd", balance=0.25)  # automatic weights
model.balance.steps = 1  # freeze (and reduce over the ranks) after the first step
ddp = torch.nn.parallel.DistributedDataParallel(model, find_unused_parameters=True)
batch = toy_batch()
batch["img"] = torch.rand(batch["img"].shape, generator=torch.Generator().manual_seed(100 + rank))  # its own images
loss, items = ddp(batch)
loss.sum().backward()
torch.save(
    {{
        "env": {{k: os.environ[k] for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "GROUP_RANK")}},
        "items": {{k: float(v) for k, v in items.items()}},
        "grads": {{k: p.grad.clone() for k, p in model.projector.named_parameters()}},
        "weights": model.term_weights(),
    }},
    os.path.join({out!r}, f"node{{os.environ['GROUP_RANK']}}.pt"),
)
dist.destroy_process_group()
"""


def test_torchrun_two_nodes_on_loopback_distil_alike(tmp_path):
    """Two torchrun nodes (node ranks 0 and 1, one process each, gloo over 127.0.0.1), as on two machines."""
    import subprocess
    import sys
    from pathlib import Path

    student = scaled_yaml(tmp_path / "s.yaml", width=0.125)
    script = tmp_path / "worker.py"
    script.write_text(TWO_NODE_WORKER.format(tests=str(Path(__file__).parent), student=str(student), out=str(tmp_path)))
    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    nodes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--nnodes=2",
                f"--node_rank={node}",
                "--nproc_per_node=1",
                "--master_addr=127.0.0.1",
                f"--master_port={port}",
                str(script),
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for node in (0, 1)
    ]
    outs = [p.communicate(timeout=300)[0] for p in nodes]
    assert [p.returncode for p in nodes] == [0, 0], "\n".join(o[-3000:] for o in outs)
    r0, r1 = (torch.load(tmp_path / f"node{i}.pt", weights_only=False) for i in range(2))
    assert [r["env"]["RANK"] for r in (r0, r1)] == ["0", "1"] and r0["env"]["WORLD_SIZE"] == "2"
    assert [r["env"]["LOCAL_RANK"] for r in (r0, r1)] == ["0", "0"]  # one process on each node
    for name in ("tar_feat_loss", "tar_cls_loss", "tar_box_loss", "cwd_loss"):
        assert r0["items"][name] > 0 and r1["items"][name] > 0, name
    assert r0["items"]["cwd_loss"] != pytest.approx(r1["items"]["cwd_loss"], rel=1e-6)  # each its own images
    for k in r0["grads"]:
        assert r0["grads"][k].abs().sum() > 0, k
        assert torch.allclose(r0["grads"][k], r1["grads"][k], atol=1e-7), k  # all-reduced across the nodes
    assert r0["weights"] == r1["weights"] and all(w > 0 for w in r0["weights"].values())  # reduced once, frozen


def test_torchrun_world_size_spans_every_node():
    from yolokd.trainer import launched_world_size

    torchrun = {"LOCAL_RANK": "1", "WORLD_SIZE": "16"}  # 2 nodes x 8 GPUs, device=0,...,7 on each
    assert launched_world_size(8, torchrun) == 16
    assert launched_world_size(8, {}) == 8  # Ultralytics' own launch: its device count
    assert launched_world_size(0, torchrun) == 0  # CPU: Ultralytics trains without DDP
    assert launched_world_size(1, {"LOCAL_RANK": "0", "WORLD_SIZE": "2"}) == 2  # one GPU on each of two nodes
