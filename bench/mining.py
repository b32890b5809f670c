"""Benchmark of mine_snippets (COLA_SPEC 2.1-2.2).

Backends, side by side in one run, same inputs:
  published  the approach of the published CoLA code, re-implemented: easy mining by full
             descending sorts of the masked rows on the tensor's device; hard mining with the
             actionness moved to the host (.cpu().numpy(), included in the time on CPU too),
             numpy median, four scipy.ndimage binary erosion / dilation passes, full sorts of
             the masked rows, masks moved back to tensors. Sorts are stable so that the tie
             rule holds; its indices are asserted equal to the reference's.
  reference  cola_fast.reference.mine_snippets (full stable sorts, PyTorch);
  native     the C++ CPU kernel (CUDA kernel with --device cuda);
  triton     the Triton kernel (CUDA only).
Shapes: (B,T) = (16,750) and (1,2613) with k_easy = T//5, k_hard = T//20 (THUMOS'14), and
(256,50) with the ActivityNet ratios r_easy 10, r_hard 8 -> k_easy 5, k_hard 6.

    python bench/mining.py [--device cpu|cuda] [--threads N] [--repeats R] [--out FILE]
Writes bench/results/mining_<device>.md. The native CPU kernel runs its AVX-512 build on CPUs
that have it; COLA_FAST_MINING_ISA=sse2 measures the SSE2 build (the table says which ran).
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

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from cola_fast import reference as R  # noqa: E402
from cola_fast.ops import mine_snippets  # noqa: E402
from cola_fast.ops._backend import native_has_kernel, triton_available  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from machine import auto_lines, machine_lines  # noqa: E402

N_INPUTS = 16
SHAPES = [(16, 750, 750 // 5, 750 // 20), (256, 50, 50 // 10, 50 // 8), (1, 2613, 2613 // 5, 2613 // 20)]


def published(actionness: torch.Tensor, keep: torch.Tensor, k_easy: int, k_hard: int, m: int = 3, M: int = 6):
    """The published code's mining, returning the index sets (it gathers embeddings with them)."""
    from scipy import ndimage

    def topk_idx(scores, k):  # full sort of every row, as select_topk_embeddings
        return scores.sort(descending=True, dim=1, stable=True)[1][:, :k]

    # easy_snippets_mining
    actionness_drop = actionness * keep
    actionness_rev = torch.max(actionness, dim=1, keepdim=True)[0] - actionness
    actionness_rev_drop = actionness_rev * keep
    ea = topk_idx(actionness_drop, k_easy)
    eb = topk_idx(actionness_rev_drop, k_easy)
    # hard_snippets_mining
    aness_np = actionness.cpu().detach().numpy()
    aness_median = np.median(aness_np, 1, keepdims=True)
    aness_bin = np.where(aness_np > aness_median, 1.0, 0.0)
    erosion_M = ndimage.binary_erosion(aness_bin, structure=np.ones((1, M))).astype(aness_np.dtype)
    erosion_m = ndimage.binary_erosion(aness_bin, structure=np.ones((1, m))).astype(aness_np.dtype)
    idx_region_inner = actionness.new_tensor(erosion_m - erosion_M)
    ha = topk_idx(actionness * idx_region_inner, k_hard)
    dilation_m = ndimage.binary_dilation(aness_bin, structure=np.ones((1, m))).astype(aness_np.dtype)
    dilation_M = ndimage.binary_dilation(aness_bin, structure=np.ones((1, M))).astype(aness_np.dtype)
    idx_region_outer = actionness.new_tensor(dilation_M - dilation_m)
    hb = topk_idx(actionness * idx_region_outer, k_hard)
    return ea, eb, ha, hb


def timeit_interleaved(fns: dict, device, repeats, warmup=5):
    """Median time of each callable; the callables take turns within every round, so that
    all see the same machine load (the CPU here is shared)."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    sync()
    times = {name: [] for name in fns}
    cpu = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            c0 = time.process_time()
            t0 = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    return ({name: float(np.median(t)) for name, t in times.items()},
            {name: float(np.median(t)) for name, t in cpu.items()})


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--threads", type=int, default=1,
                    help="torch intra-op threads on CPU (default 1: the 2 shared cores give noisy multi-thread times)")
    ap.add_argument("--repeats", type=int, default=200)
    ap.add_argument("--out", default=None)
    ap.add_argument("--shapes", default="all", choices=["all", "paper"],
                    help="'paper': THUMOS'14's (16,750) only (the GPU check)")
    args = ap.parse_args()
    shapes = SHAPES if args.shapes == "all" else SHAPES[:1]
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device")
    if device.type == "cpu":
        torch.set_num_threads(args.threads)

    backends = {"published": None, "reference": "reference"}
    if native_has_kernel("mine_snippets", device.type):
        backends["native"] = "native"
    else:
        print(f"[bench] native kernel for {device.type} not built: skipped")
    if device.type == "cuda" and triton_available(device):
        backends["triton"] = "triton"

    rows = []
    g = torch.Generator().manual_seed(0)
    for B, T, k_easy, k_hard in shapes:
        # N_INPUTS different inputs, taken in turn: with one input repeated, the branch
        # predictor learns it and the native kernel looks faster than it is in training
        inputs = []
        for _ in range(N_INPUTS):
            a = torch.rand(B, T, generator=g).to(device)
            keep = (torch.rand(B, T, generator=g) < 0.4).float().to(device)
            inputs.append((a, keep))
        fns = {}
        for name, backend in backends.items():
            def fn(name=name, backend=backend, it=iter(range(1 << 62))):
                a, keep = inputs[next(it) % N_INPUTS]
                if backend is None:
                    return published(a, keep, k_easy, k_hard)
                return mine_snippets(a, keep, k_easy, k_hard, backend=backend)
            for a, keep in inputs:
                want = R.mine_snippets(a, keep, k_easy, k_hard)
                got = published(a, keep, k_easy, k_hard) if backend is None else mine_snippets(a, keep, k_easy, k_hard, backend=backend)
                for x, y in zip(got, want):
                    assert torch.equal(x.cpu(), y.cpu()), f"{name} disagrees with the reference at {(B, T)}"
            fns[name] = fn
        times, cpu = timeit_interleaved(fns, device, args.repeats)
        for name, t in times.items():
            rows.append((f"({B},{T}) k={k_easy},{k_hard}", name, t * 1e6, times["published"] / t, times["reference"] / t,
                         cpu[name] * 1e6, cpu["published"] / max(cpu[name], 1e-9)))

    try:
        commit = subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True,
                                         cwd=os.path.dirname(os.path.abspath(__file__))).strip()
        dirty = subprocess.check_output(["git", "status", "--porcelain", "--untracked-files=no", "--", ":/", ":(top,exclude)bench/results"], text=True,
                                        cwd=os.path.dirname(os.path.abspath(__file__))).strip()
        commit += " (+ uncommitted changes)" if dirty else ""
    except Exception:  # noqa: BLE001
        commit = "unknown"
    dev = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{platform.processor() or 'cpu'}, {torch.get_num_threads()} thread(s)"
    if device.type == "cpu" and "native" in backends:
        from cola_fast.ops import mining_cpu_isa
        dev += f", native CPU build: {mining_cpu_isa()}"
    for B, T, k_easy, k_hard in shapes:  # what backend="auto" chooses at each shape (measured once)
        a = torch.rand(B, T, device=device)
        mine_snippets(a, (torch.rand(B, T, device=device) < 0.4).to(a.dtype), k_easy, k_hard, backend="auto")
    lines = [
        f"# mine_snippets benchmark ({args.device})",
        "",
        *machine_lines(device),
        *auto_lines(),
        "",
        f"commit {commit}; device: {dev}; torch {torch.__version__}; median of {args.repeats} runs after 5 warm-up runs, backends taking turns in every round; "
        f"{N_INPUTS} different random inputs per shape taken in turn (not one input repeated: the branch predictor would learn it); "
        "every backend's indices asserted equal to the reference's on all of them.",
        "",
        "The machine's 2 cores are shared with other jobs: wall times swing with their load. The "
        "process CPU time (time.process_time, same runs) is less sensitive to it and is given beside."
        + (" With more than one thread its per-call median under-counts runs this short: Linux adds the other threads' CPU time in lumps at scheduler ticks (the native op at (16,750), 2 threads: 2.0x its wall time in CPU time summed over 5000 calls, yet a per-call median close to its wall time)." if torch.get_num_threads() > 1 else ""),
        "",
        "| shape | backend | median time (us) | speed-up vs published | speed-up vs reference "
        "| median CPU time (us) | CPU-time speed-up vs published |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    lines += [f"| {s} | {n} | {t:.1f} | {p:.2f}x | {r:.2f}x | {c:.1f} | {cp:.2f}x |" for s, n, t, p, r, c, cp in rows]
    text = "\n".join(lines) + "\n"
    print(text)
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", f"mining_{args.device}.md")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        f.write(text)
    print(f"written to {out}")


if __name__ == "__main__":
    main()
