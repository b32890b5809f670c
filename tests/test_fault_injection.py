"""kill -9 at random moments, then --resume: the run ends with the weights of the
uninterrupted run (resume after a kill). Moments: before the first checkpoint, several random
ones in a row (startup, mid-step, mid-write included), and during --seeds.

The random moments come from COLA_FAST_FAULT_SEED (default: a fresh seed, printed in
any failure message, so a failing sequence can be replayed)."""
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cola_fast.config import get_preset
from cola_fast.train import train

ROOT = Path(__file__).resolve().parents[1]
SEED = int(os.environ.get("COLA_FAST_FAULT_SEED", random.randrange(2**31)))
SEEDS_STEPS = 20  # the --seeds run: two seeds of 20 steps, a checkpoint every 10


def _cmd(out, *extra):
    """The tiny preset (60 steps, checkpoints at 30 and 60), as the tiny_run fixture."""
    return [sys.executable, "-m", "cola_fast.train", "--preset", "tiny", "--quiet", "--out", str(out), *extra]


def _env(cache):
    env = dict(os.environ, COLA_FAST_CACHE=str(cache),
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("WORLD_SIZE", None)
    return env


def _kill_when(cmd, env, ready, timeout=120):
    """Start cmd, kill -9 it as soon as ready() holds (or at once when it ended first).
    Returns True when it was killed while running."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + timeout
    while proc.poll() is None and not ready():
        assert time.time() < deadline, "the moment to kill never came"
        time.sleep(0.005)
    killed = proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    if not killed:
        assert proc.returncode == 0, proc.stderr.read().decode()[-2000:]
    proc.stderr.close()
    return killed


def _finish(cmd, env):
    r = subprocess.run(cmd + ["--resume"], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    return r


def _assert_same_weights(a: Path, b: Path, why: str):
    sa, sb = torch.load(a, weights_only=True), torch.load(b, weights_only=True)
    assert sa["step"] == sb["step"], why
    for k in sb["model"]:
        assert torch.equal(sa["model"][k], sb["model"][k]), f"{why}: {k} differs"


@pytest.fixture(scope="module")
def seeds_reference(cache, tmp_path_factory):
    """Uninterrupted runs of seeds 0 and 1 for the --seeds test."""
    base = tmp_path_factory.mktemp("fault_ref")
    cfg = get_preset("tiny").replace(steps=SEEDS_STEPS, eval_every=10)
    for seed in (0, 1):
        train(cfg.replace(seed=seed), base / f"seed{seed}", quiet=True)
    return base


def test_kill_before_the_first_checkpoint_then_at_random_moments(tiny_run, cache, tmp_path):
    """The first kill comes before the first checkpoint (config.json is written right
    before the first step, the first checkpoint 30 steps later); two more at random
    times on the resumed run (startup, steps, checkpoint writes alike); then a resume
    to the end gives the weights of the uninterrupted run."""
    reference = tiny_run[0] / "last.pt"
    rng = random.Random(SEED)
    out = tmp_path / "run"
    env = _env(cache)
    cmd = _cmd(out)
    assert _kill_when(cmd, env, lambda: (out / "config.json").exists())
    assert not (out / "last.pt").exists() and not (out / "best.pt").exists()
    moments = []
    for _ in range(2):
        t_kill = rng.uniform(0.0, 6.0)
        t0 = time.time()
        killed = _kill_when(cmd + ["--resume"], env, lambda: time.time() - t0 >= t_kill)
        step = torch.load(out / "last.pt", weights_only=True)["step"] if (out / "last.pt").exists() else None
        moments.append((round(t_kill, 2), killed, step))
    r = _finish(cmd, env)
    if moments[-1][2] is None:
        assert "holds no checkpoint yet: starting from step 0" in r.stderr
    _assert_same_weights(out / "last.pt", reference,
                         f"COLA_FAST_FAULT_SEED={SEED}, kills (seconds, killed, last.pt step): {moments}")


def test_kill_during_seeds(seeds_reference, cache, tmp_path):
    """--seeds 0,1 killed while seed 1 trains, at a random moment after its folder
    appears: --resume finishes seed 1 and writes the table; both seeds end as their
    uninterrupted runs."""
    rng = random.Random(SEED + 1)
    out = tmp_path / "seeds"
    env = _env(cache)
    cmd = _cmd(out, "--seeds", "0,1", "--steps", str(SEEDS_STEPS), "--eval-every", "10")
    delay = rng.uniform(0.0, 1.0)
    seen = {}

    def ready():
        if "t" not in seen and (out / "seed1" / "config.json").exists():
            seen["t"] = time.time()
        return "t" in seen and time.time() - seen["t"] >= delay

    assert _kill_when(cmd, env, ready), f"seed 1 ended within {delay:.2f}s (COLA_FAST_FAULT_SEED={SEED})"
    assert not (out / "seeds.md").exists()
    _finish(cmd, env)
    assert "| mean |" in (out / "seeds.md").read_text()
    for seed in (0, 1):
        _assert_same_weights(out / f"seed{seed}" / "last.pt", seeds_reference / f"seed{seed}" / "last.pt",
                             f"seed {seed}, killed {delay:.2f}s into seed 1 (COLA_FAST_FAULT_SEED={SEED})")


def test_sigterm_saves_last_pt_and_resumes(tiny_run, cache, tmp_path):
    """SIGTERM (as Ctrl-C) finishes the step, saves last.pt, exits 130 without a
    traceback; --resume ends with the weights of the uninterrupted run."""
    out = tmp_path / "run"
    env = _env(cache)
    cmd = _cmd(out)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (out / "config.json").exists():
        assert proc.poll() is None and time.time() < deadline, proc.stderr.read()
        time.sleep(0.005)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert torch.load(out / "last.pt", weights_only=True)["step"] < 60
    _finish(cmd, env)
    _assert_same_weights(out / "last.pt", tiny_run[0] / "last.pt", "stopped by SIGTERM")
