"""One CoLA training step (forward, loss, backward, Adam) at the paper's shapes, three ways,
side by side in one run on the same inputs (interleaved: one step of each in turn per repeat):

  published  the published code's step as it computes it: nn.Conv1d + ReLU between permutes,
             nn.Dropout, the classifier as nn.Conv1d, easy mining by full sorts, hard mining on
             the host (numpy median, scipy erosion/dilation; see bench/mining.py:published),
             SniCo on gathered (B,k,D) copies (the reference).
  reference  the cola_fast model with backend="reference" (pure PyTorch, device-side mining).
  fast       the cola_fast model as a user runs it (backend "auto": chosen by measurement).
  floor      the conv embedding alone, forward + backward of the weights (the features need no
             gradient), by the fastest implementation on this machine, whoever wrote it (torch's
             conv1d, or the native kernel with either GEMM library): the step's arithmetic floor.

    python bench/train_step.py [--device cpu|cuda] [--repeats R] [--shape thumos|anet|B,T,D,E[,K]]
                               [--amp bf16] [--out FILE]
Writes bench/results/train_step_<device>_<shape>[_bf16].md (or --out).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

from cola_fast import reference  # noqa: E402
from cola_fast.model import CoLA, CoLALoss, ModelConfig, mining_counts  # noqa: E402
from cola_fast.ops import _autotune, module  # noqa: E402

conv_embed = module("temporal_conv_embed")
from machine import auto_lines, machine_lines  # noqa: E402
from mining import published as published_mining  # noqa: E402

SHAPES = {"thumos": ((16, 750, 2048, 2048, 3), "thumos"), "anet": ((256, 50, 2048, 2048, 9), "anet")}


def _autocast(device, amp: str):
    """bf16 autocast around the forward, as the trainer's --amp bf16 does (losses in float32)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp == "bf16")


def published_step(model: CoLA, opt, x, y, cfg: ModelConfig, lam=0.01, amp="none"):
    """The published step, written as the published code computes it."""
    k_easy, k_hard = mining_counts(x.shape[1], cfg.r_easy, cfg.r_hard)
    with _autocast(x.device, amp):
        emb = F.relu(F.conv1d(x.permute(0, 2, 1), model.embed_weight, model.embed_bias,
                              padding=cfg.embed_kernel // 2))                  # (B,E,T)
        h = model.classifier(model.dropout(emb))
        if model.depthwise is not None:
            h = model.depthwise(h)
    cas = F.relu(h.float()).permute(0, 2, 1)
    emb = emb.float().permute(0, 2, 1)
    actionness = cas.sum(2)
    keep = F.dropout(torch.ones_like(actionness), p=0.6) > 0
    ea, eb, ha, hb = published_mining(actionness.detach(), keep.to(actionness.dtype), k_easy, k_hard)
    scores = reference.video_scores(cas, k_easy)
    loss = reference.action_loss(scores, y) + lam * reference.snico_loss(emb, ea, eb, ha, hb)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def model_step(model: CoLA, loss_fn, opt, x, y, amp="none"):
    with _autocast(x.device, amp):
        out = model(x)
    loss, _ = loss_fn(out, y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def interleaved(fns: dict, device, repeats, warmup) -> dict:
    """Median seconds of each callable, one call of each in turn per repeat."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    sync()
    out = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            sync()
            out[name].append(time.perf_counter() - t0)
    return {name: float(np.median(ts)) for name, ts in out.items()}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--shape", default="thumos", help="thumos (16,750,2048,2048,k3), anet (256,50,2048,2048,k9) "
                   "or B,T,D,E[,K]")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--amp", default="none", choices=["none", "bf16"],
                   help="bf16 autocast around every model's forward, as the trainer's --amp bf16")
    p.add_argument("--out", default=None, help="markdown output (default bench/results/train_step_<device>_<shape>[_bf16].md)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.shape in SHAPES:
        (B, T, D, E, K), classifier = SHAPES[args.shape]
        label = args.shape
    else:
        B, T, D, E, *rest = (int(v) for v in args.shape.split(","))
        K = rest[0] if rest else 3
        classifier, label = "thumos", args.shape.replace(",", "x")
    repeats = args.repeats or (3 if device.type == "cpu" else 30)
    warmup = 1 if device.type == "cpu" else 5
    torch.manual_seed(0)
    cfg = ModelConfig(feature_dim=D, num_classes=20, embed_dim=E, embed_kernel=K, classifier=classifier)
    x = torch.randn(B, T, D, device=device)
    y = (torch.rand(B, 20, device=device) < 0.1).float()
    y[:, 0] = 1.0
    lam = 0.005 if classifier == "anet" else 0.01

    def fresh(backend):
        m = CoLA(cfg, backend=backend).to(device).train()
        return m, CoLALoss(lambda_snico=lam, backend=backend), torch.optim.Adam(m.parameters(), lr=1e-4,
                                                                                 weight_decay=5e-4)

    mp, _, op_ = fresh("reference")
    mr, lr_, or_ = fresh("reference")
    mf, lf, of = fresh(None)
    t0 = time.perf_counter()
    model_step(mf, lf, of, x, y, args.amp)  # the first step makes auto's decisions (timed here, apart)
    first = time.perf_counter() - t0
    w = mf.embed_weight.detach().clone().requires_grad_(True)
    b = mf.embed_bias.detach().clone().requires_grad_(True)

    def floor_of(impl):
        def f():
            with _autocast(device, args.amp):
                out = conv_embed.run(x, w, b, impl)
            out.backward(torch.ones_like(out))
        return f
    amp = args.amp
    fns = {"published (host mining, gathered SniCo)": lambda: published_step(mp, op_, x, y, cfg, lam, amp),
           "reference (pure PyTorch)": lambda: model_step(mr, lr_, or_, x, y, amp),
           "fast (backend auto)": lambda: model_step(mf, lf, of, x, y, amp)}
    floors = {f"floor: conv embedding fwd+bwd, {impl}": floor_of(impl)
              for impl in conv_embed.candidates(device, x.dtype)}
    times = interleaved({**fns, **floors}, device, repeats, warmup)

    pub, fast = times[next(iter(fns))], times["fast (backend auto)"]
    floor_name = min(floors, key=times.get)
    fl = times[floor_name]
    lines = [f"## Training step, (B,T,D,E,K) = ({B},{T},{D},{E},{K}), {classifier} classifier, {device.type}"
             + (", bf16 autocast" if args.amp == "bf16" else ""), "",
             *machine_lines(device),
             f"- median of {repeats} steps after {warmup} warm-up, the rows interleaved; the fast model's first step "
             f"took {first:.2f} s, of which auto's measurements "
             f"{sum(d['seconds'] for d in _autotune.decisions()):.2f} s (a fresh cache; later runs read the decisions "
             f"from it)",
             *auto_lines(), "",
             "| step | median time | vs published | vs floor |", "|---|---|---|---|"]
    for name, t in times.items():
        lines.append(f"| {name} | {t * 1e3:.1f} ms | {pub / t:.2f}x | {t / fl:.2f}x floor |")
    lines += ["", f"published / fast = **{pub / fast:.2f}x**; fast step / floor = {fast / fl:.3f} "
              f"(floor = {floor_name.split(', ')[-1]})"]
    text = "\n".join(lines)
    print(text)
    out = args.out or os.path.join(HERE, "results", f"train_step_{device.type}_{label}"
                                   + ("_bf16" if args.amp == "bf16" else "") + ".md")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
        f.write(text + "\n")


if __name__ == "__main__":
    main()
