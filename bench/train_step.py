"""One CoLA training step (forward, loss, backward, Adam) at the paper's shape, three ways,
side by side in one run on the same inputs:

  published  the published code's step: permutes around nn.Conv1d + ReLU, easy mining by
             full sorts, hard mining on the host (numpy median, scipy erosion/dilation; see
             bench/mining.py:published), SniCo on gathered (B,k,D) copies (the reference).
  reference  the cola_fast model with backend="reference" (pure PyTorch, device-side mining).
  fast       the cola_fast model with the fused ops (backend "auto": native kernels).
  floor      the conv embedding alone, forward + backward (the fused op): the step's
             arithmetic floor.

    python bench/train_step.py [--device cpu|cuda] [--repeats R] [--shape B,T,D,E]
Writes bench/results/train_step_<device>.md.
"""
from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

from cola_fast import ops, reference  # noqa: E402
from cola_fast.model import CoLA, CoLALoss, ModelConfig, mining_counts  # noqa: E402
from mining import published as published_mining  # noqa: E402


def published_step(model: CoLA, opt, x, y, cfg: ModelConfig, lam=0.01):
    """The published step, written as the published code computes it."""
    k_easy, k_hard = mining_counts(x.shape[1], cfg.r_easy, cfg.r_hard)
    emb = F.relu(F.conv1d(x.permute(0, 2, 1), model.embed_weight, model.embed_bias,
                          padding=cfg.embed_kernel // 2))                      # (B,E,T)
    h = model.classifier(model.dropout(emb))
    cas = F.relu(h).permute(0, 2, 1)
    emb = emb.permute(0, 2, 1)
    actionness = cas.sum(2)
    keep = F.dropout(torch.ones_like(actionness), p=0.6) > 0
    ea, eb, ha, hb = published_mining(actionness.detach(), keep.to(actionness.dtype), k_easy, k_hard)
    scores = reference.video_scores(cas, k_easy)
    loss = reference.action_loss(scores, y) + lam * reference.snico_loss(emb, ea, eb, ha, hb)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def model_step(model: CoLA, loss_fn, opt, x, y):
    loss, _ = loss_fn(model(x), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def timeit(fn, device, repeats, warmup):
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        out.append(time.perf_counter() - t0)
    return float(np.median(out))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--shape", default="16,750,2048,2048", help="B,T,D,E")
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    B, T, D, E = (int(v) for v in args.shape.split(","))
    repeats = args.repeats or (3 if device.type == "cpu" else 30)
    warmup = 1 if device.type == "cpu" else 5
    torch.manual_seed(0)
    cfg = ModelConfig(feature_dim=D, num_classes=20, embed_dim=E)
    x = torch.randn(B, T, D, device=device)
    y = (torch.rand(B, 20, device=device) < 0.1).float()
    y[:, 0] = 1.0

    def fresh(backend):
        m = CoLA(cfg, backend=backend).to(device).train()
        return m, CoLALoss(backend=backend), torch.optim.Adam(m.parameters(), lr=1e-4, weight_decay=5e-4)

    rows = []
    m, lf, opt = fresh("reference")
    rows.append(("published (host mining, gathered SniCo)",
                 timeit(lambda: published_step(m, opt, x, y, cfg), device, repeats, warmup)))
    rows.append(("reference (pure PyTorch)", timeit(lambda: model_step(m, lf, opt, x, y), device, repeats, warmup)))
    m, lf, opt = fresh(None)
    rows.append(("fast (fused ops, backend auto)", timeit(lambda: model_step(m, lf, opt, x, y), device, repeats, warmup)))
    w = m.embed_weight.detach().clone().requires_grad_(True)
    b = m.embed_bias.detach().clone().requires_grad_(True)
    xg = x.clone()

    def floor():
        out = ops.temporal_conv_embed(xg, w, b)
        out.backward(torch.ones_like(out))
    rows.append(("floor: conv embedding fwd+bwd alone", timeit(floor, device, repeats, warmup)))

    fast, fl, pub = rows[2][1], rows[3][1], rows[0][1]
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=HERE).stdout.strip() or "unknown"
    except OSError:
        commit = "unknown"
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    lines = [f"## Training step, (B,T,D,E) = ({B},{T},{D},{E}), {device.type} ({name}, {torch.get_num_threads()} threads)",
             "", f"commit {commit}, torch {torch.__version__}, median of {repeats} steps after {warmup} warm-up", "",
             "| step | median time | vs published | vs floor |", "|---|---|---|---|"]
    for label, t in rows:
        lines.append(f"| {label} | {t * 1e3:.1f} ms | {pub / t:.2f}x | {t / fl:.2f}x floor |")
    lines += ["", f"fast step / floor = {fast / fl:.3f}; published / fast = {pub / fast:.2f}x"]
    text = "\n".join(lines)
    print(text)
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    with open(os.path.join(HERE, "results", f"train_step_{device.type}.md"), "w") as f:
        f.write(text + "\n")


if __name__ == "__main__":
    main()
