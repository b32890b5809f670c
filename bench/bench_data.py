"""Batch assembly: VideoDataset (per-video numpy sampling + torch.stack) against
DeviceFeatureBank.random_batch (one vectorised sampling + one index_select).

    PYTHONPATH=. python bench/bench_data.py [--device cpu] [--out bench/results/data_cpu.md]
"""
import argparse
import statistics
import subprocess
import tempfile
import time

import numpy as np
import torch

from cola_fast.data import DeviceFeatureBank, SyntheticSpec, VideoDataset, make_synthetic_dataset
from machine import machine_lines  # bench/ is on sys.path when this script runs


def timeit(fn, reps, sync):
    fn()
    ts = []
    for _ in range(reps):
        sync()
        t = time.perf_counter()
        fn()
        sync()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--out", default=None)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads (on a shared, oversubscribed CPU, 2 threads made even a small "
                         "torch.stack take ~120 ms from OpenMP waits)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    sync = (lambda: torch.cuda.synchronize()) if dev.type == "cuda" else (lambda: None)
    tmp = tempfile.mkdtemp(prefix="cola_bench_data_")
    root = make_synthetic_dataset(f"{tmp}/d", SyntheticSpec(feature_dim=1024, max_videos=60))
    ds = VideoDataset(root, "train", num_segments=750)
    bank = DeviceFeatureBank(ds, device=dev)
    rows = []
    for B, N in ((16, 750), (64, 750), (16, 50)):
        ds.num_segments = N
        rng = np.random.default_rng(0)
        g = torch.Generator(device=dev).manual_seed(0)

        def loader():
            ids = rng.integers(0, len(ds), B)
            x = torch.stack([ds.get(int(i), rng)["features"] for i in ids])
            return x.to(dev)

        def banked():
            vids = torch.randint(0, len(bank), (B,), generator=g, device=dev)
            return bank.random_batch(vids, N, g)["features"]

        t1, t2 = timeit(loader, a.reps, sync), timeit(banked, a.reps, sync)
        rows.append((B, N, ds.feature_dim, t1 * 1e3, t2 * 1e3, t1 / t2))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    lines = [f"# Batch assembly, device {dev} (commit {commit}; median of {a.reps}; torch threads {a.threads}; "
             "shared 2-core CPU)", "", *machine_lines(dev), "",
             "| B | N | D | VideoDataset+stack ms | DeviceFeatureBank ms | speed-up |", "|---|---|---|---|---|---|"]
    lines += [f"| {B} | {N} | {D} | {x:.2f} | {y:.2f} | {r:.1f}x |" for B, N, D, x, y, r in rows]
    text = "\n".join(lines) + "\n"
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text)
    import shutil
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
