"""Benchmark of snico_loss: reference vs native (vs triton on CUDA), forward, backward and
forward+backward, median time and peak memory.

    python bench/snico.py                  # CPU, writes bench/results/snico_cpu.md
    python bench/snico.py --device cuda    # GPU, writes bench/results/snico_cuda.md

Shapes (B, T, D, k_easy, k_hard): (16, 750, 2048, 150, 37) THUMOS'14 and (256, 50, 2048, 5, 6)
ActivityNet 1.2. The forward runs with emb.requires_grad (as in training, saving what the
backward needs); "bwd" times the backward alone after an untimed forward.

Time: median of --repeats runs after --warmup runs; the backends alternate within each
repeat so that they see the same machine load; speed-up = reference median / backend median.

Peak memory, CPU: the peak resident memory *above* what is resident just before the phase
(inputs, and for "bwd" the forward's outputs and saved tensors), read as VmHWM - VmRSS from
/proc/self/status after resetting the high-water mark (echo 5 > /proc/self/clear_refs). Each
(shape, backend, phase) is measured on its first call in a fresh subprocess with glibc's mmap
threshold pinned (MALLOC_MMAP_THRESHOLD_=65536), so that large blocks are mapped on allocation
and unmapped on free and neither an earlier phase nor the allocator's reuse hides the peak.
The d(emb) output (B*T*D*4 bytes) is included in bwd and fwd+bwd.
Peak memory, CUDA: torch.cuda.max_memory_allocated() - memory_allocated() before the phase.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _timing import measure_laps  # noqa: E402

SHAPES = [(16, 750, 2048, 150, 37), (256, 50, 2048, 5, 6)]
PHASES = ("fwd", "bwd", "fwd+bwd")


def _inputs(shape, device, dtype_name="float32", seed=0):
    import torch
    B, T, D, kE, kH = shape
    g = torch.Generator().manual_seed(seed)
    emb = torch.randn(B, T, D, generator=g, dtype=getattr(torch, dtype_name)).to(device).requires_grad_(True)
    idx = [torch.randint(0, T, (B, k), generator=g).to(device) for k in (kE, kE, kH, kH)]
    return emb, idx


def _fn(backend):
    from cola_fast.ops import snico_loss
    return lambda emb, idx: snico_loss(emb, *idx, backend=backend)


def _proc_mem():
    s = open("/proc/self/status").read()
    return {k: int(re.search(k + r":\s+(\d+)", s).group(1)) * 1024 for k in ("VmRSS", "VmHWM")}


def _cpu_peak_child(shape, backend, phase):
    """Runs in a fresh subprocess: peak resident bytes above the pre-phase level."""
    f = _fn(backend)
    # touch the code paths once on a tiny input (first-use page-ins are not the op's memory)
    B, T, D, kE, kH = shape
    e0, i0 = _inputs((2, min(T, 8), 16, kE, kH), "cpu")
    f(e0, i0).backward()
    del e0, i0
    emb, idx = _inputs(shape, "cpu")
    loss = None
    if phase == "bwd":
        loss = f(emb, idx)
    before = _proc_mem()["VmRSS"]
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
    if phase == "fwd":
        loss = f(emb, idx)
    elif phase == "bwd":
        loss.backward()
    else:
        f(emb, idx).backward()
    peak = _proc_mem()["VmHWM"]
    del loss
    return max(0, peak - before)


def cpu_peak(shape, backend, phase):
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    import torch
    cmd = [sys.executable, os.path.abspath(__file__), "--_child", ",".join(map(str, shape)), backend, phase,
           str(torch.get_num_threads())]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    m = re.search(r"PEAK (\d+)", out.stdout)
    if not m:
        raise RuntimeError(f"memory subprocess failed:\n{out.stdout}\n{out.stderr}")
    return int(m.group(1))


def cuda_peak(shape, backend, phase, dtype_name):
    import torch
    f = _fn(backend)
    emb, idx = _inputs(shape, "cuda", dtype_name)
    f(emb, idx).backward()  # warm (compilation, autotuning) outside the measurement
    emb.grad = None
    torch.cuda.synchronize()
    loss = f(emb, idx) if phase == "bwd" else None
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    if phase == "fwd":
        loss = f(emb, idx)
    elif phase == "bwd":
        loss.backward()
    else:
        f(emb, idx).backward()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - before
    del loss
    emb.grad = None
    return peak


def time_all(shape, backends, device, repeats, warmup, dtype_name):
    """Median seconds per (backend, phase): a repeat runs, for each backend in turn, forward
    then backward (laps "fwd", "bwd"), then forward+backward in one go."""
    emb, idx = _inputs(shape, device, dtype_name)
    steps = {}
    for b in backends:
        f = _fn(b)

        def split(lap, f=f):
            loss = f(emb, idx)
            lap("fwd")
            loss.backward()
            lap("bwd")
            emb.grad = None

        def whole(lap, f=f):
            f(emb, idx).backward()
            lap("fwd+bwd")
            emb.grad = None

        steps[(b, "split")], steps[(b, "whole")] = split, whole
    laps = measure_laps(steps, repeats, warmup, device)
    return {(b, phase): t.median for ((b, _), phase), t in laps.items()}


def _commit():
    try:
        h = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True).stdout.strip()
        return h + ("+dirty" if dirty else "")
    except OSError:
        return "unknown"


def main():
    if len(sys.argv) == 6 and sys.argv[1] == "--_child":  # memory measurement in a fresh process
        import torch
        torch.set_num_threads(int(sys.argv[5]))
        shape = tuple(int(v) for v in sys.argv[2].split(","))
        print("PEAK", _cpu_peak_child(shape, sys.argv[3], sys.argv[4]))
        return
    args = _parser().parse_args()
    text = table(measure_all(args))
    print(text)
    from cola_fast.ops import describe
    print(json.dumps({"native_cuda": describe().get("native_cuda")}))
    if not args.no_write:
        write(text, args)


def _parser():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--repeats", type=int, default=None, help="timed repeats (default 5 CPU, 20 CUDA)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed repeats (default 2 CPU, 5 CUDA)")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--backends", default=None, help="comma list (default: reference,native[,triton on CUDA])")
    ap.add_argument("--shapes", default=None, help="semicolon list of B,T,D,kE,kH")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU; default: torch's)")
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--out", default=None, help="markdown output (default bench/results/snico_<device>[_dtype].md)")
    return ap


def measure_all(args) -> dict:
    """Times and peak memory of every (shape, backend, phase), then what backend="auto"
    chooses at each shape (recorded for the table's header)."""
    import torch
    from cola_fast.ops import resolve, snico_loss

    dev = args.device
    if args.threads:
        torch.set_num_threads(args.threads)
    if dev == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device visible")
    repeats = args.repeats or (5 if dev == "cpu" else 20)
    warmup = args.warmup if args.warmup is not None else (2 if dev == "cpu" else 5)
    backends = args.backends.split(",") if args.backends else (
        ["reference", "native"] + (["triton"] if dev == "cuda" else []))
    for b in backends:  # fail loudly for a missing backend
        resolve(b, torch.device(dev), "snico_loss_fwd")
    shapes = [tuple(int(v) for v in s.split(",")) for s in args.shapes.split(";")] if args.shapes else SHAPES
    rows = []
    for shape in shapes:
        med = time_all(shape, backends, dev, repeats, warmup, args.dtype)
        for b in backends:
            for p in PHASES:
                mem = cpu_peak(shape, b, p) if dev == "cpu" else cuda_peak(shape, b, p, args.dtype)
                rows.append(dict(shape=shape, backend=b, phase=p, ms=med[(b, p)] * 1e3,
                                 speedup=med[("reference", p)] / med[(b, p)] if "reference" in backends else float("nan"),
                                 mib=mem / 2**20))
    for B, T, D, ke, kh in shapes:  # what backend="auto" chooses at each shape (measured once)
        emb = torch.randn(B, T, D, device=dev, requires_grad=True)
        idx = [torch.randint(0, T, (B, k), device=dev) for k in (ke, ke, kh, kh)]
        snico_loss(emb, *idx, backend="auto").backward()
    return dict(rows=rows, device=dev, dtype=args.dtype, repeats=repeats, warmup=warmup)


def table(m: dict) -> str:
    import torch
    from machine import auto_lines, machine_lines

    dev, repeats, warmup = m["device"], m["repeats"], m["warmup"]
    head = [
        f"# snico_loss benchmark ({dev}, {m['dtype']})",
        "",
        *machine_lines(dev),
        *auto_lines(),
        "",
        f"commit {_commit()}; torch {torch.__version__}; "
        + (f"{torch.get_num_threads()} CPU threads" if dev == "cpu" else torch.cuda.get_device_name())
        + f"; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        f"median of {repeats} repeats after {warmup} warm-up, backends alternating; speed-up = reference / backend "
        "in the same run.",
        "peak memory: " + ("extra resident memory above the pre-phase level (VmHWM - VmRSS after clear_refs), "
                           "first call at this shape in a fresh process (after a tiny warm-up call), glibc mmap threshold pinned; includes d(emb)"
                           if dev == "cpu" else "torch.cuda.max_memory_allocated() above the pre-phase allocation; "
                           "includes d(emb)"),
        "",
        "| (B,T,D,k_easy,k_hard) | backend | phase | median ms | speed-up | peak MiB |",
        "|---|---|---|---:|---:|---:|",
    ]
    lines = [f"| {r['shape']} | {r['backend']} | {r['phase']} | {r['ms']:.2f} | {r['speedup']:.2f}x | {r['mib']:.1f} |"
             for r in m["rows"]]
    return "\n".join(head + lines) + "\n"


def write(text: str, args) -> None:
    os.makedirs(os.path.join(ROOT, "bench", "results"), exist_ok=True)
    suffix = "cpu" if args.device == "cpu" else "cuda"
    name = f"snico_{suffix}" + ("" if args.dtype == "float32" else f"_{args.dtype}") + (
        f"_{args.threads}thread" if args.threads else "") + ".md"
    path = args.out or os.path.join(ROOT, "bench", "results", name)
    with open(path, "w") as fh:
        fh.write(text)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
