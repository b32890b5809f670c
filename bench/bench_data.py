"""Batch assembly: VideoDataset (per-video numpy sampling + torch.stack) against
DeviceFeatureBank.random_batch (one vectorised sampling + one index_select).

    PYTHONPATH=. python bench/bench_data.py [--device cpu] [--out bench/results/data_cpu.md]
"""
import argparse
import shutil
import subprocess
import tempfile

import numpy as np
import torch

from cola_fast.data import DeviceFeatureBank, SyntheticSpec, VideoDataset, make_synthetic_dataset
from _timing import measure  # bench/ is on sys.path when this script runs
from machine import machine_lines


def measure_batches(dev: torch.device, reps: int) -> list:
    """One row per (B, N): the two ways of assembling a batch, timed alternately."""
    tmp = tempfile.mkdtemp(prefix="cola_bench_data_")
    try:
        root = make_synthetic_dataset(f"{tmp}/d", SyntheticSpec(feature_dim=1024, max_videos=60))
        ds = VideoDataset(root, "train", num_segments=750)
        bank = DeviceFeatureBank(ds, device=dev)
        return [_measure_one(ds, bank, dev, B, N, reps) for B, N in ((16, 750), (64, 750), (16, 50))]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _measure_one(ds, bank, dev, B: int, N: int, reps: int) -> dict:
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

    t = measure({"loader": loader, "bank": banked}, reps, warmup=1, device=dev)
    return dict(B=B, N=N, D=ds.feature_dim, loader=t["loader"], bank=t["bank"])


def table(rows: list, dev, reps: int, threads: int) -> str:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    lines = [f"# Batch assembly, device {dev} (commit {commit}; median of {reps} after 1 warm-up, the two "
             f"alternating; torch threads {threads}; shared 2-core CPU)", "", *machine_lines(dev), "",
             "| B | N | D | VideoDataset+stack ms | spread | DeviceFeatureBank ms | spread | speed-up |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        x, y = r["loader"], r["bank"]
        lines.append(f"| {r['B']} | {r['N']} | {r['D']} | {x.median * 1e3:.2f} | {100 * x.spread:.0f}% "
                     f"| {y.median * 1e3:.2f} | {100 * y.spread:.0f}% | {x.median / y.median:.1f}x |")
    return "\n".join(lines) + "\n"


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
    text = table(measure_batches(dev, a.reps), dev, a.reps, a.threads)
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
