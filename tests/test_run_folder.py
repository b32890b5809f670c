"""The run folder protects itself (cola_fast/run.py): a fresh run refuses a
used folder, --overwrite moves the old run aside, one trainer per folder (a stale lock
never blocks), --resume without a checkpoint / from best.pt, changed settings reported
and --steps extending a finished run, --seeds resuming seed by seed (a seed finished before
the last step was recorded still enters the table), env.json and the changed environment
noted on --resume, a full disk."""
import errno
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cola_fast.config import get_preset
from cola_fast.data import DataError, SyntheticSpec, make_synthetic_dataset
from cola_fast.data.dataset import check_video_id
from cola_fast.run import RunError, RunFolder, atomic_torch_save
from cola_fast.train import main, train

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_synthetic_dataset(tmp_path_factory.mktemp("rf") / "data",
                                  SyntheticSpec(feature_dim=8, time_scale=0.2, max_videos=12))


def _args(data, out, *extra, steps=4):
    return ["--preset", "tiny", "--data-root", str(data), "--steps", str(steps), "--eval-every", "2",
            "--quiet", "--out", str(out), *extra]


def _cfg(data, steps=4, **kw):
    return get_preset("tiny").replace(data_root=str(data), steps=steps, eval_every=2, **kw)


def _weights(path):
    return torch.load(path, weights_only=True)["model"]


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_fresh_run_refuses_a_used_folder_and_overwrite_moves_it_aside(data, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_args(data, out, steps=2)) == 0
    before = {f: (out / f).read_bytes() for f in ("best.pt", "last.pt", "metrics.jsonl", "summary.json")}
    assert main(_args(data, out, "--set", "lr=0.5", steps=2)) == 2
    err = capsys.readouterr().err
    assert "add --resume" in err and "--overwrite" in err and "step 2" in err
    assert {f: (out / f).read_bytes() for f in before} == before  # nothing overwritten or appended
    assert main(_args(data, out, "--overwrite", "--set", "lr=0.5", steps=2)) == 0
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("run.replaced-")]
    assert len(aside) == 1 and f"moved to {aside[0]}" in capsys.readouterr().err
    assert {f: (aside[0] / f).read_bytes() for f in before} == before  # the old run, whole
    assert json.loads((out / "config.json").read_text())["lr"] == 0.5


def test_overwrite_never_moves_a_folder_that_holds_no_run(data, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    assert main(_args(data, tmp_path, "--overwrite")) == 2
    assert "holds no cola_fast run" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", "notes.txt"]


def test_lock_keeps_a_second_trainer_out_and_a_stale_lock_never_blocks(tmp_path):
    """A process holding the lock keeps others out; once it is killed (kill -9, no
    clean-up), the folder opens at once: the kernel dropped the flock."""
    code = ("import sys, time; from cola_fast.run import RunFolder; "
            "RunFolder(sys.argv[1]).open('new'); print('locked', flush=True); time.sleep(120)")
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "r")], env=env, stdout=subprocess.PIPE)
    try:
        assert proc.stdout.readline().strip() == b"locked"
        with pytest.raises(RunError, match=f"in use by another trainer \\(pid {proc.pid}\\)"):
            RunFolder(tmp_path / "r").open("resume")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    folder = RunFolder(tmp_path / "r")
    folder.open("resume")  # the lock file is still there, with the dead pid in it
    folder.close()


def test_resume_from_best_pt_when_last_pt_is_missing(data, tmp_path, capsys):
    """Killed between writing best.pt and last.pt: --resume continues from best.pt and
    ends with the weights of the uninterrupted run."""
    train(_cfg(data), tmp_path / "ref", quiet=True)
    out = tmp_path / "run"
    train(_cfg(data, steps=2), out, quiet=True)
    (out / "last.pt").unlink()
    assert torch.load(out / "best.pt", weights_only=True)["step"] == 2
    capsys.readouterr()
    assert main(_args(data, out, "--resume")) == 0
    assert "starting from step 0" not in capsys.readouterr().err  # it did start from best.pt's step 2
    assert torch.load(out / "last.pt", weights_only=True)["step"] == 4
    assert _same(_weights(out / "last.pt"), _weights(tmp_path / "ref" / "last.pt"))


def test_changed_settings_on_resume_are_reported_and_steps_extend_a_finished_run(data, tmp_path, capsys):
    train(_cfg(data), tmp_path / "ref", quiet=True)
    out = tmp_path / "run"
    assert main(_args(data, out, steps=2)) == 0
    capsys.readouterr()
    assert main(_args(data, out, "--resume", "--lr", "0.5", "--seed", "3", steps=4)) == 0
    err = capsys.readouterr().err
    assert "steps changed from 2 to 4" in err
    assert "kept the run's own" in err and "lr=0.01 (given 0.5)" in err and "seed=0 (given 3)" in err
    assert torch.load(out / "last.pt", weights_only=True)["step"] == 4
    assert _same(_weights(out / "last.pt"), _weights(tmp_path / "ref" / "last.pt"))
    # metrics.jsonl holds each record once, in step order
    steps = [(r["kind"], r["step"]) for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())]
    assert steps == sorted(set(steps), key=lambda s: (s[1], s[0] == "eval"))
    # a finished run resumed without a larger --steps: nothing to do, said so; its summary kept
    summary = (out / "summary.json").read_bytes()
    assert main(_args(data, out, "--resume", steps=4)) == 0
    assert "is finished (step 4 of 4); raise --steps" in capsys.readouterr().err
    assert (out / "summary.json").read_bytes() == summary


def test_resume_without_preset_continues_with_the_runs_settings(data, tmp_path, capsys):
    """--resume builds on the run's own configuration: no --preset needed, nothing reported."""
    out = tmp_path / "run"
    assert main(_args(data, out, steps=2)) == 0
    capsys.readouterr()
    assert main(["--out", str(out), "--resume", "--quiet"]) == 0
    assert capsys.readouterr().err == "resume: the run in " + str(out) + \
        " is finished (step 2 of 2); raise --steps to extend it\n"


def test_seeds_resume_seed_by_seed_and_write_the_table(data, tmp_path, capsys):
    """--seeds interrupted during seed 1 (its folder holds only config.json): --resume
    keeps seed 0, trains seed 1 from step 0, writes the table."""
    out = tmp_path / "seeds"
    assert main(_args(data, out, "--seeds", "0,1", steps=2)) == 0
    seed0 = (out / "seed0" / "last.pt").read_bytes()
    for f in (out / "seed1").iterdir():
        if f.name != "config.json" and f.is_file():
            f.unlink()
    (out / "seeds.md").unlink()
    assert main(_args(data, out, "--seeds", "0,1", steps=2)) == 2  # a fresh run is refused
    assert "add --resume" in capsys.readouterr().err
    assert main(_args(data, out, "--seeds", "0,1", "--resume", steps=2)) == 0
    assert "seed1 holds no checkpoint yet: starting from step 0" in capsys.readouterr().err
    assert (out / "seed0" / "last.pt").read_bytes() == seed0
    assert torch.load(out / "seed1" / "last.pt", weights_only=True)["step"] == 2
    table = (out / "seeds.md").read_text()
    assert "| 0 |" in table and "| 1 |" in table and "| mean |" in table
    # --overwrite moves the whole --seeds folder aside, then trains every seed afresh
    assert main(_args(data, out, "--seeds", "0,1", "--overwrite", steps=2)) == 0
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("seeds.replaced-")]
    assert len(aside) == 1 and (aside[0] / "seeds.md").read_text() == table
    assert sorted(p.name for p in out.iterdir()) == [".lock", "report", "seed0", "seed1", "seeds.md"]
    # a seed finished before the last step was recorded: resumes, and enters the table marked
    old = out / "seed1" / "summary.json"
    old.write_text(json.dumps({k: v for k, v in json.loads(old.read_text()).items() if k != "last"}))
    assert main(_args(data, out, "--seeds", "0,1", "--resume", steps=2)) == 0
    table = (out / "seeds.md").read_text()
    assert "| 1 | - | - |" in table and "missing: its summary.json has no last step" in table
    assert "n=1" in table and "n=2" in table  # the last step's mean over seed 0 only, the best's over both


def test_resume_notes_each_changed_field_of_the_environment(data, tmp_path, capsys):
    """env.json is written at the start; --resume with another thread count says so in one
    line (a note: the run continues) and records the new environment."""
    out = tmp_path / "run"
    assert main(_args(data, out, "--set", "report=false", steps=2)) == 0
    env = json.loads((out / "env.json").read_text())
    assert env["threads"] == 1 and env["torch"] == torch.__version__ and env["deterministic"] is False
    for field in ("cola_fast", "git_commit", "python", "cuda", "cudnn", "triton", "numpy", "cpu",
                  "cpu_family_model", "cpu_isa", "cpu_isa_host", "gpu", "backend", "eval_backend"):
        assert field in env
    capsys.readouterr()
    assert main(_args(data, out, "--resume", "--threads", "2", "--set", "report=false", steps=4)) == 0
    err = capsys.readouterr().err
    assert "resume: environment: threads changed from 1 to 2" in err
    assert [line for line in err.splitlines() if "environment:" in line] == [
        "resume: environment: threads changed from 1 to 2"]
    assert json.loads((out / "env.json").read_text())["threads"] == 2
    assert json.loads((out / "summary.json").read_text())["last"]["step"] == 4


def test_metrics_are_cut_back_to_the_resumed_step(tmp_path):
    folder = RunFolder(tmp_path)
    recs = [{"step": s, "kind": "train"} for s in (10, 20, 30)]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs) + '{"step": 40, "ki')
    folder.trim_metrics(20)
    assert [json.loads(x)["step"] for x in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [10, 20]


@pytest.mark.parametrize("exc", [OSError(errno.ENOSPC, "No space left on device"),
                                 RuntimeError("[enforce fail at inline_container.cc] unexpected pos 512")])
def test_full_disk_leaves_no_tmp_and_the_old_file_intact(tmp_path, monkeypatch, exc):
    path = tmp_path / "last.pt"
    torch.save({"step": 1}, path)
    old = path.read_bytes()

    def full_disk(obj, f):
        Path(f).write_bytes(b"partial")
        raise exc

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(RunError, match="cannot write .*last.pt: .*(No space left|unexpected pos)"):
        atomic_torch_save({"step": 2}, path)
    assert path.read_bytes() == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_full_disk_during_training_is_one_line_and_resumable(data, tmp_path, monkeypatch, capsys):
    """The disk fills at the second checkpoint: one line, exit 2, no .tmp file; the
    first checkpoint is intact and, the disk freed, --resume finishes the run."""
    real_save, calls = torch.save, []

    def fills_up(obj, f, *a, **k):
        calls.append(f)
        if len(calls) > 2:  # best.pt and last.pt of step 2 fit, then the disk is full
            Path(f).write_bytes(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *a, **k)

    out = tmp_path / "run"
    monkeypatch.setattr(torch, "save", fills_up)
    assert main(_args(data, out)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "No space left on device" in err
    assert not list(out.glob("*.tmp"))
    assert torch.load(out / "last.pt", weights_only=True)["step"] == 2
    monkeypatch.setattr(torch, "save", real_save)
    assert main(_args(data, out, "--resume")) == 0
    assert torch.load(out / "last.pt", weights_only=True)["step"] == 4


@pytest.mark.parametrize("vid", ["../../../x", "/etc/passwd", "a/b", "a\\b", "..", "", "x\0y"])
def test_video_ids_must_be_plain_file_names(vid):
    with pytest.raises(DataError, match="not a plain file name"):
        check_video_id(vid, "split_train.txt")


def test_plain_video_ids_pass():
    assert check_video_id("video_test_0000004", "split") == "video_test_0000004"
    assert check_video_id("v_-ab.c d", "split") == "v_-ab.c d"
