"""Benchmark of temporal_conv_embed against torch's own conv1d + ReLU with the permutes.

    python bench/conv_embed.py                      # CPU, float32 (writes bench/results/conv_embed_cpu.md)
    python bench/conv_embed.py --device cuda        # fp32 (tf32 as cuDNN's default) and bf16 vs cuDNN,
                                                    # plus torch.mm of the same M,N,K ("% of GEMM")

Shapes: the paper's embedding layers, THUMOS'14 (16,750,2048->2048,k=3) and ActivityNet 1.2
(256,50,2048->2048,k=9). The baseline is exactly reference.temporal_conv_embed:
F.relu(F.conv1d(x.transpose(1,2), w, b, padding=K//2)).transpose(1,2).contiguous().
Passes: forward (no grad); forward+backward of the weights only (training: the features need no
gradient); forward+backward with d(x) too. FLOPs: forward 2*B*T*Cin*Cout*K; each backward GEMM
(dx, dweight) as much again.
Implementations: `torch` (the baseline), `auto` (what backend="auto" runs: its choice per pass is
listed above the table) and, on the CPU, every candidate auto chooses from. They are timed
interleaved (one call of each in turn per repeat), medians reported.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from cola_fast import reference  # noqa: E402
from cola_fast.ops import module, temporal_conv_embed  # noqa: E402

conv_embed = module("temporal_conv_embed")
conv_allows_tf32 = conv_embed.conv_allows_tf32
from machine import auto_lines, machine_lines  # noqa: E402

SHAPES = [(16, 750, 2048, 2048, 3), (256, 50, 2048, 2048, 9)]


def _sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()


def _timer(dev, fn, cpu_times=None):
    _sync(dev)
    c0 = time.process_time()
    t0 = time.perf_counter()
    fn()
    _sync(dev)
    dt = time.perf_counter() - t0
    if cpu_times is not None:
        cpu_times.append(time.process_time() - c0)
    return dt


def make_passes(impl, x, w, b):
    """{pass name: (FLOP multiple of the forward, callable)} for one implementation."""
    xg = x.detach().clone().requires_grad_(True)

    def fwd():
        with torch.no_grad():
            impl(x, w, b)

    def train():
        y = impl(x, w, b)
        torch.autograd.grad(y, (w, b), torch.ones_like(y))

    def train_dx():
        y = impl(xg, w, b)
        torch.autograd.grad(y, (xg, w, b), torch.ones_like(y))

    return {"forward": (1, fwd), "fwd+bwd, weights": (2, train), "fwd+bwd, weights and dx": (3, train_dx)}


def bench_shape(dev, dtype, shape, impls, repeats, warmup):
    B, T, Cin, Cout, K = shape
    g = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn(B, T, Cin, generator=g).to(dev, dtype)
    w = (torch.randn(Cout, Cin, K, generator=g) / (Cin * K) ** 0.5).to(dev, dtype).requires_grad_(True)
    b = (0.1 * torch.randn(Cout, generator=g)).to(dev, dtype).requires_grad_(True)
    flop_fwd = 2.0 * B * T * Cin * Cout * K
    rows = []
    passes = {name: make_passes(fn, x, w, b) for name, fn in impls.items()}
    for pname in passes["torch"]:
        mult = passes["torch"][pname][0]
        times = {name: [] for name in impls}
        cpu_times = {name: [] for name in impls}
        for name in impls:
            for _ in range(warmup):
                passes[name][pname][1]()
        for _ in range(repeats):
            for name in impls:
                times[name].append(_timer(dev, passes[name][pname][1], cpu_times[name]))
        base = statistics.median(times["torch"])
        cbase = statistics.median(cpu_times["torch"])
        for name in impls:
            med = statistics.median(times[name])
            cmed = statistics.median(cpu_times[name])
            rows.append(dict(shape=shape, dtype=dtype, pass_=pname, impl=name, ms=med * 1e3,
                             tflops=mult * flop_fwd / med / 1e12, speedup=base / med, n=len(times[name]),
                             cpu_s=cmed, cpu_speedup=cbase / cmed))
    return rows, (x, w, b)


def gemm_rate(dev, dtype, shape, repeats):
    """Dense GEMM rate of torch.mm with M=B*T, N=Cout, K=Cin*K (one GEMM of the conv's size)."""
    B, T, Cin, Cout, K = shape
    a = torch.randn(B * T, Cin * K, device=dev, dtype=dtype)
    m = torch.randn(Cin * K, Cout, device=dev, dtype=dtype)
    for _ in range(3):
        torch.mm(a, m)
    ts = [_timer(dev, lambda: torch.mm(a, m)) for _ in range(repeats)]
    return 2.0 * B * T * Cin * Cout * K / statistics.median(ts) / 1e12


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--repeats", type=int, default=None, help="timed repeats per pass (default cpu 3, cuda 20)")
    ap.add_argument("--warmup", type=int, default=None)
    ap.add_argument("--shapes", default="all", help="'all', 'thumos' or 'anet'")
    ap.add_argument("--out", default=None, help="markdown output (default bench/results/conv_embed_<device>.md)")
    ap.add_argument("--backends", default=None,
                    help="comma list of implementations besides torch and auto (default: every candidate of auto)")
    args = ap.parse_args()
    dev = torch.device(args.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda asked for but torch.cuda.is_available() is False")
    repeats = args.repeats or (3 if dev.type == "cpu" else 20)
    warmup = args.warmup if args.warmup is not None else (1 if dev.type == "cpu" else 5)
    shapes = {"all": SHAPES, "thumos": SHAPES[:1], "anet": SHAPES[1:]}[args.shapes]
    dtypes = [torch.float32] if dev.type == "cpu" else [torch.float32, torch.bfloat16]
    impls = {"torch": reference.temporal_conv_embed, "auto": temporal_conv_embed}
    names = args.backends.split(",") if args.backends else [
        n for n in conv_embed.candidates(dev, torch.float32) if n != "reference"]
    for bk in names:
        impls[bk] = (lambda bk: (lambda x, w, b: conv_embed.run(x, w, b, bk)))(bk)

    lines = []
    head = (f"# temporal_conv_embed benchmark ({dev.type})\n\n"
            + "\n".join(machine_lines(dev))
            + f"\n- medians of {repeats} interleaved repeats after {warmup} warm-up.\n\n"
            "Baseline `torch` = F.conv1d on x.transpose(1,2) + F.relu + transpose back "
            "(cola_fast.reference). TFLOP/s: forward 2*B*T*Cin*Cout*K, each backward GEMM (dW; dx) as much "
            "again. These are direct-convolution FLOP counts: on the CPU, kernel size 3 with an even T "
            "takes the Winograd F(2,3) path, which does 2/3 of those multiply-adds, so its TFLOP/s are "
            "direct-equivalent rates (set COLA_FAST_CONV_WINOGRAD=0 for the shifted-GEMM path).\n")
    if dev.type == "cuda":
        head += (f"fp32 runs use TF32 where torch allows it for convolutions "
                 f"(cuDNN conv TF32 allowed: {conv_allows_tf32()}). "
                 "'% GEMM' = achieved TFLOP/s over torch.mm's rate for one dense GEMM of the same "
                 "M=B*T, N=Cout, K=Cin*K.\n")
    print(head)
    lines.append(head)
    cols = "| shape (B,T,Cin->Cout,k) | dtype | pass | impl | median ms | TFLOP/s | speed-up vs torch |"
    sep = "|---|---|---|---|---|---|---|"
    if dev.type == "cuda":
        cols += " % GEMM |"
        sep += "---|"
    else:
        cols += " process CPU s | CPU-time ratio vs torch |"
        sep += "---|---|"
        lines.append("The machine's 2 cores are shared with other jobs, so wall times are noisy; the "
                     "process CPU time (both threads, time.process_time) is given beside them.\n")
    lines += [cols, sep]
    print(cols)
    for dtype in dtypes:
        for shape in shapes:
            if dev.type == "cuda":
                prev = torch.backends.cuda.matmul.allow_tf32
                torch.backends.cuda.matmul.allow_tf32 = conv_allows_tf32()
                rate = gemm_rate(dev, dtype, shape, repeats)
                torch.backends.cuda.matmul.allow_tf32 = prev
            rows, _ = bench_shape(dev, dtype, shape, impls, repeats, warmup)
            for r in rows:
                B, T, Cin, Cout, K = r["shape"]
                line = (f"| ({B},{T},{Cin}->{Cout},{K}) | {str(dtype).replace('torch.', '')} | {r['pass_']} | "
                        f"{r['impl']} | {r['ms']:.1f} | {r['tflops']:.3f} | {r['speedup']:.2f}x |")
                if dev.type == "cuda":
                    pct = 100.0 * r["tflops"] / rate if r["pass_"] == "forward" else float("nan")
                    line += f" {pct:.0f}% |" if pct == pct else " |"
                else:
                    line += f" {r['cpu_s']:.2f} | {r['cpu_speedup']:.2f}x |"
                print(line, flush=True)
                lines.append(line)
            if dev.type == "cuda":
                line = (f"| ({shape[0]},{shape[1]},{shape[2]}->{shape[3]},{shape[4]}) | "
                        f"{str(dtype).replace('torch.', '')} | dense GEMM torch.mm | - | - | {rate:.1f} | - | 100% |")
                print(line)
                lines.append(line)
            if dev.type == "cuda":
                torch.cuda.empty_cache()
            _write(args, dev, lines + ["", "What `auto` chose (timed on its tuning inputs):", *auto_lines()])


def _write(args, dev, lines):
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                   f"conv_embed_{dev.type}.md")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"written to {out}", flush=True)


if __name__ == "__main__":
    main()
