"""DDP on CPU with gloo and 2 processes: one step equals one process on the same global batch."""

import json
import os
import socket
import subprocess
import sys

import torch
import torch.multiprocessing as mp
from conftest import ROOT, SLOWDOWN

from helpers.clip import model
from helpers.core import config
from helpers.core.lab import LabCode
from helpers.core.storage import read_json, torch_load
from helpers.training import distributed

LAB = LabCode.shipped()  # the lab's cells, as the notebooks hold them

ARCH = model.model_config(
    config.from_params(IMAGE_BACKBONE="resnet18", IMAGE_WEIGHTS=None, HIDDEN_DIM=32, LEARNABLE_TEMPERATURE=True), embed_dim=16
)
GLOBAL_BATCH, WORLD = 8, 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _batch():
    g = torch.Generator().manual_seed(1)
    images = torch.randn(GLOBAL_BATCH, 3, 32, 32, generator=g)
    text = torch.nn.functional.normalize(torch.randn(GLOBAL_BATCH, 16, generator=g), dim=-1)
    return images, text


def _model():
    torch.manual_seed(0)
    m = model.build_model(ARCH, LAB, pretrained=False)
    return m.eval()  # BatchNorm on running statistics: identical on every rank


def _worker(rank: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank))
    ctx = distributed.init_distributed()
    m = _model()
    ddp = distributed.wrap_model(m, ctx, torch.device("cpu"))
    images, text = _batch()
    shard = slice(rank * GLOBAL_BATCH // WORLD, (rank + 1) * GLOBAL_BATCH // WORLD)
    value = distributed.global_loss(LAB.clip_loss, ctx)(ddp(images[shard]), text[shard], ddp.scale(), None)
    value.backward()  # the plain backward of the training step: the gradient factors sit inside global_loss
    torch.save({"loss": value.item(), "grads": {n: p.grad.clone() for n, p in m.named_parameters()}}, f"{out_dir}/rank{rank}.pt")
    torch.distributed.destroy_process_group()


def test_two_process_step_equals_single_process(tmp_path):
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    m = _model()
    images, text = _batch()
    reference = LAB.clip_loss(m(images), text, m.scale())
    reference.backward()
    for rank in range(WORLD):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        assert abs(got["loss"] - reference.item()) < 1e-5
        for name, p in m.named_parameters():
            assert torch.allclose(got["grads"][name], p.grad, rtol=1e-4, atol=1e-6), name
    assert m.logit_scale.grad.abs().item() > 0  # the learnable temperature is covered too


def test_gather_keeps_gradient_only_for_the_local_shard():
    ctx = distributed.DistContext()  # one process: identity
    x = torch.randn(3, 4, requires_grad=True)
    assert distributed.gather_with_local_grad(x, ctx) is x and distributed.global_loss(LAB.clip_loss, ctx) is LAB.clip_loss


def test_torchrun_trains_and_resumes(workspace, tmp_path):
    cfg, paths = workspace
    run_cfg = cfg.replace(epochs=1, run_name="ddp", batch_size=32, max_steps_per_epoch=3)
    path = run_cfg.save(tmp_path / "ddp.json")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port", str(_free_port())]
    cmd += ["-m", "helpers.train", "--config", str(path), "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    first = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600 * SLOWDOWN)
    assert first.returncode == 0, first.stderr[-3000:]
    assert len([line for line in first.stdout.splitlines() if line.startswith("{")]) == 1  # rank 0 alone reports
    assert json.loads(first.stdout.strip().splitlines()[-1])["backend"] == "gloo"  # CPU: gloo
    ckpt = torch_load(paths.runs_dir / "ddp" / "checkpoint.pt")
    assert ckpt["epoch"] == 1 and ckpt["batch_size"] == 32
    second = subprocess.run(
        [*cmd, "--set", "EPOCHS=2"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert second.returncode == 0, second.stderr[-3000:]
    history = read_json(paths.runs_dir / "ddp" / "history.json")["epochs"]
    assert [h["epoch"] for h in history] == [1, 2]
    assert json.loads(second.stdout.strip().splitlines()[-1])["skipped"] is False
