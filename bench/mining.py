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
Writes bench/results/mining_<device>.md. The native CPU kernel runs the build of the host's ISA
(SSE2, AVX2 or AVX-512), capped by COLA_FAST_CPU_ISA=sse2|avx2|avx512 (the table says which ran).

    python bench/mining.py --isa-caps [--threads N] [--repeats R] [--out FILE]
measures the native CPU kernel under every ISA cap at or below this process's ISA side by side:
one worker process per cap (the cap is read once per process), in which the published approach
and the native kernel take turns call by call on the same inputs as above; the workers take
turns in blocks of 10 rounds. Writes bench/results/mining_cpu_isa.md.
"""
from __future__ import annotations

import argparse
import json
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


# ------------------------------------------------------------------ --isa-caps: one worker per cap
CAPS = ("sse2", "avx2", "avx512")  # COLA_FAST_CPU_ISA values, increasing
LEVEL = {"generic": 0, "sse2": 0, "avx2": 1, "avx512": 2}


def _shape_inputs(B, T, seed):
    """N_INPUTS (actionness, keep) pairs of one shape, the same in every process."""
    g = torch.Generator().manual_seed(seed)
    return [(torch.rand(B, T, generator=g), (torch.rand(B, T, generator=g) < 0.4).float()) for _ in range(N_INPUTS)]


def isa_worker(threads: int):
    """Worker of --isa-caps (one per cap): builds every shape's inputs, checks the published
    approach's and the native kernel's indices against the reference on all of them, says which
    build it runs, then per request line "<shape index> <rounds>" runs that many rounds in which
    the two take turns, one call each on the next input, as main() does, and answers with the
    seconds of every call."""
    torch.set_num_threads(threads)
    inputs = [_shape_inputs(B, T, seed=i) for i, (B, T, _, _) in enumerate(SHAPES)]
    for (B, T, k_easy, k_hard), shape_inputs in zip(SHAPES, inputs):
        for a, keep in shape_inputs:
            want = R.mine_snippets(a, keep, k_easy, k_hard)
            for got in (published(a, keep, k_easy, k_hard), mine_snippets(a, keep, k_easy, k_hard, backend="native")):
                for x, y in zip(got, want):
                    assert torch.equal(x, y), f"disagreement with the reference at {(B, T)}"
    from cola_fast.ops import mining_cpu_isa
    print(json.dumps({"build": mining_cpu_isa()}), flush=True)
    turn = [0] * len(SHAPES)
    for line in sys.stdin:
        i, rounds = map(int, line.split())
        _, _, k_easy, k_hard = SHAPES[i]
        times = {"published": [], "native": [], "native_cpu": []}
        for _ in range(rounds):
            a, keep = inputs[i][turn[i] % N_INPUTS]
            turn[i] += 1
            t0 = time.perf_counter()
            published(a, keep, k_easy, k_hard)
            times["published"].append(time.perf_counter() - t0)
            c0, t0 = time.process_time(), time.perf_counter()
            mine_snippets(a, keep, k_easy, k_hard, backend="native")
            times["native"].append(time.perf_counter() - t0)
            times["native_cpu"].append(time.process_time() - c0)
        print(json.dumps(times), flush=True)


def main_isa_caps(args):
    """The native kernel under every cap at or below this process's ISA, side by side: one worker
    process per cap (the cap is read once per process), each measuring the native kernel and the
    published approach taking turns call by call as main() does; the workers take turns in blocks
    of 10 rounds (5 warm-up rounds each first), so that all see the same machine load."""
    from cola_fast.ops import mining_cpu_isa
    here = mining_cpu_isa()
    if here is None:
        sys.exit("--isa-caps: the native CPU kernel is not built")
    torch.set_num_threads(args.threads)  # as the workers (the table's head names it)
    caps = [c for c in CAPS if LEVEL[c] <= LEVEL[here]]
    workers = {}
    for cap in caps:
        cmd = [sys.executable, os.path.abspath(__file__), "--isa-worker", "--threads", str(args.threads)]
        workers[cap] = subprocess.Popen(cmd, env=dict(os.environ, COLA_FAST_CPU_ISA=cap), stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True)
    builds = {cap: json.loads(w.stdout.readline())["build"] for cap, w in workers.items()}

    def block(w, i, rounds):
        w.stdin.write(f"{i} {rounds}\n")
        w.stdin.flush()
        return json.loads(w.stdout.readline())

    block_rounds = 10
    load_before = os.getloadavg()[0]
    rows = []
    for i, (B, T, k_easy, k_hard) in enumerate(SHAPES):
        for w in workers.values():
            block(w, i, 5)  # warm-up
        times = {cap: {"published": [], "native": [], "native_cpu": []} for cap in caps}
        for _ in range((args.repeats + block_rounds - 1) // block_rounds):
            for cap, w in workers.items():
                for name, t in block(w, i, block_rounds).items():
                    times[cap][name] += t
        med = {cap: {name: float(np.median(t)) for name, t in tt.items()} for cap, tt in times.items()}
        pub = float(np.median([t for tt in times.values() for t in tt["published"]]))  # one code in every worker
        for cap in caps:
            m, m0 = med[cap], med[caps[0]]
            rows.append((f"({B},{T}) k={k_easy},{k_hard}", cap, builds[cap], m["published"] * 1e6, m["native"] * 1e6,
                         pub / m["native"], m0["native"] / m["native"], m["native_cpu"] * 1e6,
                         m0["native_cpu"] / m["native_cpu"]))
    for w in workers.values():
        w.stdin.close()
        w.wait()

    from cola_fast.ops._autotune import device_name
    n = (args.repeats + block_rounds - 1) // block_rounds * block_rounds
    lines = [
        "# mine_snippets under each CPU ISA cap (cpu)",
        "",
        *machine_lines("cpu"),
        "",
        f"`python bench/mining.py --isa-caps --threads {args.threads} --repeats {args.repeats}` on "
        f"{device_name(torch.device('cpu')).rsplit(',', 1)[0]}, {args.threads} thread(s): the native CPU kernel "
        f"under COLA_FAST_CPU_ISA = {', '.join(caps)} (every cap at or below this process's ISA, {here}), one worker "
        "process per cap. In each worker the published approach (host numpy/scipy, see bench/mining.py) and the "
        f"native kernel take turns call by call, as in mining_cpu.md; the workers take turns in blocks of "
        f"{block_rounds} rounds. Median of {n} calls each after 5 warm-up rounds; {N_INPUTS} different random "
        "inputs per shape taken in turn, the same in every worker; every worker's indices (both backends) asserted "
        "equal to the reference's on all of them. The speed-up over the published approach divides the median of "
        "all workers' published calls (the same code in each) by the native median. The native call's process CPU "
        "time (time.process_time, same calls) is less sensitive to the load of the shared machine; with more than "
        "one thread its per-call median under-counts (see mining_cpu_2threads.md). "
        f"Load average of the machine (1 min): {load_before:.1f} before, {os.getloadavg()[0]:.1f} after.",
        "",
        f"| shape | cap | build run | published, this worker (us) | native (us) | native speed-up vs published "
        f"| vs the {caps[0]} build | native CPU time (us) | CPU time vs the {caps[0]} build |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    lines += [f"| {s} | {c} | {b} | {p:.1f} | {t:.1f} | **{x:.2f}x** | {q:.2f}x | {ct:.1f} | {cq:.2f}x |"
              for s, c, b, p, t, x, q, ct, cq in rows]
    text = "\n".join(lines) + "\n"
    print(text)
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "mining_cpu_isa.md")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        f.write(text)
    print(f"written to {out}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--threads", type=int, default=1,
                    help="torch intra-op threads on CPU (default 1: the 2 shared cores give noisy multi-thread times)")
    ap.add_argument("--repeats", type=int, default=200)
    ap.add_argument("--out", default=None)
    ap.add_argument("--shapes", default="all", choices=["all", "paper"],
                    help="'paper': THUMOS'14's (16,750) only (the GPU check)")
    ap.add_argument("--isa-caps", action="store_true",
                    help="the native CPU kernel under every ISA cap at or below this process's, side by side")
    ap.add_argument("--isa-worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.isa_worker:
        return isa_worker(args.threads)
    if args.isa_caps:
        return main_isa_caps(args)
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
