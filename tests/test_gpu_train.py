"""GPU-only checks of the training step (skipped without CUDA): the steady-state step of
the fast path never synchronises with the host; torchrun over two GPUs (NCCL)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cola_fast.model import CoLA, CoLALoss, ModelConfig

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def test_fast_step_has_no_host_sync(cache):
    from cola_fast.config import get_preset
    from cola_fast.data import BatchStream, prepare_data

    dev = torch.device("cuda")
    cfg = get_preset("tiny")
    _, train_ds, _ = prepare_data(cfg, log=lambda *a: None)
    stream = BatchStream(train_ds, 16, 128, 0, device=dev)
    model = CoLA(ModelConfig(feature_dim=train_ds.feature_dim, num_classes=len(train_ds.class_names),
                             embed_dim=64)).to(dev).train()
    loss_fn = CoLALoss()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=5e-4)
    run = torch.zeros((), device=dev)

    def step(s):
        x, y = stream.batch(s)
        loss, parts = loss_fn(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        run.add_(parts["loss"])

    for s in range(3):  # warm-up: first chunk upload, allocator, lazy init
        step(s)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for s in range(3, 13):
            step(s)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(run).item()


needs_two_gpus = pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")


@needs_two_gpus
def test_torchrun_two_processes_nccl(cache, tmp_path):
    """The GPU twin of test_train.py's gloo test: one process per GPU (cuda:<local_rank>), NCCL."""
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, COLA_FAST_CACHE=str(cache),
               PYTHONPATH=str(root) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("WORLD_SIZE", None)
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29519",
           "-m", "cola_fast.train", "--preset", "tiny", "--steps", "20", "--eval-every", "20",
           "--out", str(out), "--quiet", "--device", "cuda"]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    s = json.loads((out / "summary.json").read_text())
    assert s["processes"] == 2 and s["steps"] == 20 and s["best"]["step"] == 20
