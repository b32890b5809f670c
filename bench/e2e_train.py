"""A short end-to-end training run, timed: the trainer CLI on the built-in synthetic data
(default: the thumos14 preset, D = 2 x 1024 = 2048 features, its 6000 steps and an evaluation
every 100), stopped with SIGINT after --seconds of training (the trainer finishes its step,
saves last.pt and exits). From the run's metrics.jsonl it reports the training steps per second
(evaluations excluded), the seconds of each evaluation, and the projected time of the preset's
full run: steps / (steps/s) + (steps / eval_every) x the mean evaluation time.

    python bench/e2e_train.py --device cuda --seconds 60          # the GPU check's run
    python bench/e2e_train.py --preset tiny --device cpu --seconds 5 --no-write   # a dry run
    python bench/e2e_train.py --prepare-data      # only synthesise the preset's data into the cache

Writes bench/results/e2e_<preset>_<device>.md (or --out) unless --no-write.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def read_metrics(path: Path) -> list:
    if not path.exists():
        return []
    recs = []
    for line in path.read_text().splitlines():
        try:
            recs.append(json.loads(line))
        except json.JSONDecodeError:  # a line being written
            break
    return recs


def run_trainer(cmd: list, run_dir: Path, seconds: float, startup_limit: float, deadline: float = float("inf"),
                grace: float = 120.0) -> tuple[list, float, int]:
    """Start the trainer, let it train `seconds` after its first logged step, SIGINT it (at the
    latest `deadline` seconds after the launch), then wait at most `grace` seconds for it to save
    and exit before killing it. Returns (metrics records, seconds from launch to the first
    logged step, exit status)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    t0 = time.time()
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    metrics = run_dir / "metrics.jsonl"
    first = None
    while proc.poll() is None:
        if first is None and any(r["kind"] == "train" for r in read_metrics(metrics)):
            first = time.time()
        if first is None and time.time() - t0 > startup_limit:
            break
        if first is not None and time.time() - first >= seconds:
            break
        if time.time() - t0 >= deadline:
            break
        time.sleep(0.2)
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    err = proc.stderr.read()
    if proc.returncode not in (0, 130, -signal.SIGINT) and err:
        print(err[-2000:], file=sys.stderr)
    startup = (first - t0) if first is not None else float("nan")
    return read_metrics(metrics), startup, proc.returncode


def summarise(recs: list, steps: int, eval_every: int) -> dict:
    train = [r for r in recs if r["kind"] == "train"]
    evals = [r for r in recs if r["kind"] == "eval"]
    out = {"steps_done": train[-1]["step"] if train else 0, "evals": [r["eval_seconds"] for r in evals]}
    if len(train) >= 2:
        a, b = train[0], train[-1]
        eval_s = sum(r["eval_seconds"] for r in evals if a["step"] < r["step"] <= b["step"])
        out["steps_per_s"] = (b["step"] - a["step"]) / max(b["time"] - a["time"] - eval_s, 1e-9)
    if "steps_per_s" in out and evals:
        out["eval_mean_s"] = sum(out["evals"]) / len(out["evals"])
        out["projected_s"] = steps / out["steps_per_s"] + (steps // eval_every) * out["eval_mean_s"]
    return out


def table(preset: str, device: str, steps: int, eval_every: int, startup: float, s: dict) -> str:
    from machine import machine_lines  # the machine and libraries (imports torch)

    fmt = (lambda v, f: format(v, f) if v is not None else "n/a")
    lines = [f"# End-to-end training: preset {preset} on {device} (built-in synthetic data)", "",
             *machine_lines(device if device != "auto" else "cpu"), "",
             "| measure | value |", "|---|---|",
             f"| start-up (data, first 10 steps) | {fmt(startup, '.1f')} s |",
             f"| steps trained | {s['steps_done']} |",
             f"| training steps/s (evaluations excluded) | {fmt(s.get('steps_per_s'), '.2f')} |",
             f"| evaluation seconds (each) | {', '.join(f'{v:.2f}' for v in s['evals']) or 'n/a (none reached)'} |",
             f"| projected full run ({steps} steps, {steps // eval_every} evaluations) | "
             f"{fmt(s.get('projected_s'), '.0f')} s |"]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="thumos14")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--seconds", type=float, default=60.0, help="training seconds after the first logged step")
    ap.add_argument("--startup-limit", type=float, default=300.0, help="give up if no step is logged by then")
    ap.add_argument("--deadline", type=float, default=float("inf"),
                    help="stop the trainer this many seconds after its launch, whatever it has done")
    ap.add_argument("--grace", type=float, default=120.0, help="seconds the stopped trainer gets to save and exit")
    ap.add_argument("--prepare-data", action="store_true",
                    help="only build the preset's synthetic dataset in the cache (the GPU check runs this "
                         "in the background during its build) and exit")
    ap.add_argument("--out", default=None)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from cola_fast.config import get_preset

    cfg = get_preset(args.preset)
    if args.prepare_data:
        from cola_fast.train import prepare_data
        prepare_data(cfg)
        return 0
    with tempfile.TemporaryDirectory(prefix="e2e_") as tmp:
        run_dir = Path(tmp) / "run"
        cmd = [sys.executable, "-m", "cola_fast.train", "--preset", args.preset, "--device", args.device,
               "--out", str(run_dir), "--quiet"]
        recs, startup, rc = run_trainer(cmd, run_dir, args.seconds, args.startup_limit, args.deadline, args.grace)
    s = summarise(recs, cfg.steps, cfg.eval_every)
    md = table(args.preset, args.device, cfg.steps, cfg.eval_every, startup, s)
    print(md)
    if not args.no_write:
        out = Path(args.out or ROOT / "bench" / "results" / f"e2e_{args.preset}_{args.device.split(':')[0]}.md")
        out.write_text(md + "\n")
    return 0 if "steps_per_s" in s else 1


if __name__ == "__main__":
    sys.exit(main())
