"""End-to-end training on the built-in synthetic data (the `tiny` preset): the loss falls,
the mAP clears a bar, a killed run resumes to the same result, repeated runs are
bit-identical, seeds work, bad settings fail clearly (torchrun: test_composition_train.py)."""
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cola_fast.config import get_preset
from cola_fast.train import main, train

ROOT = Path(__file__).resolve().parents[1]
# the tiny preset must clear this average mAP (percent over tIoU 0.1:0.7) on the synthetic data
TINY_MAP_BAR = 5.0


def _env(cache):
    env = dict(os.environ, COLA_FAST_CACHE=str(cache), PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("WORLD_SIZE", None)
    return env


def _losses(out: Path):
    recs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in recs if r["kind"] == "train"], [r for r in recs if r["kind"] == "eval"]


@pytest.mark.gpu
def test_tiny_trains_learns_and_writes_everything(tiny_run):
    out, summary, seconds = tiny_run
    losses, evals = _losses(out)
    assert len(evals) == 2
    assert sum(losses[-2:]) / 2 < sum(losses[:2]) / 2, f"loss did not fall: {losses}"
    assert 100 * summary["best"]["average_mAP"] >= TINY_MAP_BAR, summary["best"]
    assert summary["last"]["step"] == get_preset("tiny").steps and summary["best"]["step"] <= summary["last"]["step"]
    assert summary["best"]["average_mAP"] >= summary["last"]["average_mAP"]
    for f in ("config.json", "env.json", "metrics.jsonl", "last.pt", "best.pt", "best_results.json",
              "last_results.json", "summary.json"):
        assert (out / f).exists(), f
    assert not list(out.glob("*.tmp")), "a temporary checkpoint file was left behind"
    res = json.loads((out / "best_results.json").read_text())["results"]
    assert len(res) == 210 and any(res.values())
    if not torch.cuda.is_available():  # on a GPU the first use compiles and tunes kernels: no time limit there
        assert seconds < 60, f"tiny preset took {seconds:.1f}s"


@pytest.mark.gpu
def test_killed_run_resumes_to_the_same_model(tiny_run, tiny_run_cache, tmp_path):
    """Start the tiny preset in a subprocess, kill -9 it once its first checkpoint is on
    disk, resume it, and compare with the uninterrupted run: the same final weights, bit for
    bit on the CPU (the step's randomness, batches, keep masks and dropout, is a function of
    (seed, step), re-seeded at every step).

    Both runs use the default device. On a GPU, "auto" may choose kernels that are not
    run-to-run deterministic unless asked (cuDNN's convolution algorithms, float atomicAdd in
    the reference SniCo backward), so there the weights are compared with a tolerance. The
    killed run reads the reference run's cache, hence its recorded kernel choices."""
    ref_out, _, _ = tiny_run
    cache = tiny_run_cache
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "cola_fast.train", "--preset", "tiny", "--out", str(out), "--quiet"]
    proc = subprocess.Popen(cmd, env=_env(cache), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 600  # against a hang only (a GPU's first use compiles kernels)
    while not (out / "last.pt").exists():
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.time() < deadline, "no checkpoint appeared"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = torch.load(out / "last.pt", weights_only=True)["step"]
    assert killed_at < get_preset("tiny").steps
    r = subprocess.run(cmd + ["--resume"], env=_env(cache), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    a = torch.load(out / "last.pt", weights_only=True)
    b = torch.load(ref_out / "last.pt", weights_only=True)
    assert a["step"] == b["step"] == get_preset("tiny").steps
    want = "cuda" if torch.cuda.is_available() else "cpu"  # what device "auto" resolves to
    assert {t.device.type for t in (*a["model"].values(), *b["model"].values())} == {want}
    if want == "cpu":
        for k in b["model"]:
            assert torch.equal(a["model"][k], b["model"][k]), k
        assert a["best"]["average_mAP"] == b["best"]["average_mAP"]
    else:
        for k in b["model"]:
            torch.testing.assert_close(a["model"][k], b["model"][k], rtol=1e-3, atol=1e-5, msg=k)
        assert a["best"]["average_mAP"] == pytest.approx(b["best"]["average_mAP"], abs=0.02)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device")])])
@pytest.mark.parametrize("on_device", ["no", "yes"])
def test_deterministic_repeat_is_bit_identical(cache, tmp_path, on_device, device):
    """Repeated --deterministic runs on one device give bit-identical weights, with the host
    data path and with the device feature bank (vectorised sampling). The global switch that
    train() turns on is reset whatever happens (conftest checks that no test leaks it)."""
    cfg = get_preset("tiny").replace(steps=20, eval_every=20, data_on_device=on_device, device=device)
    try:
        train(cfg, tmp_path / "a", quiet=True, deterministic=True)
        train(cfg, tmp_path / "b", quiet=True, deterministic=True)
    finally:
        torch.use_deterministic_algorithms(False)
    a = torch.load(tmp_path / "a" / "last.pt", weights_only=True, map_location="cpu")["model"]
    b = torch.load(tmp_path / "b" / "last.pt", weights_only=True, map_location="cpu")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_seeds_table(cache, tmp_path, capsys):
    rc = main(["--preset", "tiny", "--steps", "10", "--eval-every", "10", "--seeds", "0,1",
               "--out", str(tmp_path), "--quiet"])
    assert rc == 0
    table = (tmp_path / "seeds.md").read_text()
    assert "| 0 |" in table and "| 1 |" in table and "| mean |" in table and "| std |" in table
    assert "best evaluation (chosen on the test set" in table and "last step" in table
    assert table.count("| mean ± std |") == 3 and "best - last" in table
    assert (tmp_path / "report" / "index.html").exists()
    s0 = json.loads((tmp_path / "seed0" / "summary.json").read_text())
    s1 = json.loads((tmp_path / "seed1" / "summary.json").read_text())
    assert s0["seed"] == 0 and s1["seed"] == 1


# torchrun (gloo, 2 processes): tests/test_composition_train.py runs it and checks the batch
# shares, the masks per rank and the gradients against the 1-process run


@pytest.mark.parametrize("args,msg", [
    (["--preset", "nope"], "unknown preset"),
    (["--preset", "tiny", "--num-segments", "10"], "too small"),
    (["--preset", "tiny", "--set", "bogus=1"], "unknown config field"),
    (["--preset", "tiny", "--batch-size", "0"], ">= 1"),
])
def test_bad_settings_fail_clearly(args, msg, capsys, tmp_path):
    rc = main(args + ["--out", str(tmp_path / "x")])
    assert rc == 2
    assert msg in capsys.readouterr().err


def test_resume_without_checkpoint_starts_from_step_0(cache, capsys, tmp_path):
    """--resume on a folder without a checkpoint (a run killed before its first one, or
    no run yet) starts from step 0 and says so on stderr, even with --quiet."""
    rc = main(["--preset", "tiny", "--steps", "10", "--eval-every", "10", "--out", str(tmp_path / "none"),
               "--resume", "--quiet"])
    assert rc == 0
    assert "holds no checkpoint yet: starting from step 0" in capsys.readouterr().err
    assert torch.load(tmp_path / "none" / "last.pt", weights_only=True)["step"] == 10


@pytest.mark.gpu
def test_bf16_autocast_trains(cache, tmp_path):
    """--set amp=bf16: the forward runs under autocast(bfloat16); losses stay finite and fall."""
    s = train(get_preset("tiny").replace(steps=30, eval_every=30, amp="bf16"), tmp_path, quiet=True)
    losses, _ = _losses(tmp_path)
    assert all(math.isfinite(l) for l in losses) and losses[-1] < losses[0]
    assert s["best"]["average_mAP"] > 0
