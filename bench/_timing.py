"""The one timer of the benchmarks in bench/: warm-up runs, CUDA synchronisation around
every timed interval, and the median and spread of the timed runs.

    from _timing import measure, measure_laps
    t = measure({"reference": f, "native": g}, repeats=5, warmup=2, device="cuda")
    t["native"].median, t["native"].spread, t["native"].result

Several functions are timed alternately, one run of each per repeat, so that they see
the same machine load. A run may be cut into laps (forward, then backward):
measure_laps passes each step a lap(label) function that ends the current interval;
what a step does after its last lap is not timed. collect=True starts every run from
gc.collect(); gc_off=True switches Python's cyclic GC off during the run (timeit's
convention), both for benchmarks whose results are large object graphs.
"""
from __future__ import annotations

import gc
import statistics
import time
from dataclasses import dataclass, field


@dataclass
class Timing:
    """Seconds of the timed runs (warm-up excluded) and the last run's result."""
    times: list = field(default_factory=list)
    result: object = None

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def spread(self) -> float:
        """(slowest - fastest) / median of the timed runs: 0.1 = a 10% range."""
        return (max(self.times) - min(self.times)) / self.median if self.median > 0 else 0.0


def _synchronizer(device):
    """The function that waits for the device's queued work: torch.cuda.synchronize on CUDA."""
    if device is not None and str(device).startswith("cuda"):
        import torch
        return torch.cuda.synchronize
    return lambda: None


def measure_laps(steps: dict, repeats: int, warmup: int = 0, device=None, collect: bool = False,
                 gc_off: bool = False) -> dict:
    """{(name, label): Timing}: steps maps a name to step(lap), one run; lap(label, result=None)
    ends the interval that began at the run's start or at the previous lap."""
    sync = _synchronizer(device)
    out: dict = {}
    for r in range(warmup + repeats):
        for name, step in steps.items():
            _one_run(name, step, sync, out if r >= warmup else {}, collect, gc_off)
    return out


def _one_run(name, step, sync, out: dict, collect: bool, gc_off: bool) -> None:
    if collect:
        gc.collect()
    if gc_off:
        gc.disable()
    try:
        sync()
        start = [time.perf_counter()]

        def lap(label, result=None):
            sync()
            now = time.perf_counter()
            timing = out.setdefault((name, label), Timing())
            timing.times.append(now - start[0])
            timing.result = result
            start[0] = time.perf_counter()

        step(lap)
    finally:
        gc.enable()


def measure(fns: dict, repeats: int, warmup: int = 0, device=None, collect: bool = False,
            gc_off: bool = False) -> dict:
    """{name: Timing} of the functions fns (no arguments), timed alternately."""
    steps = {name: (lambda lap, f=f: lap("run", f())) for name, f in fns.items()}
    laps = measure_laps(steps, repeats, warmup, device, collect, gc_off)
    return {name: laps[(name, "run")] for name in fns}
