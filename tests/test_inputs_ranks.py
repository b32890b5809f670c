"""Every rank agrees on an error: 2 gloo processes (CPU), started as torchrun starts them
(RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT), each rank's stderr kept apart.
- a user error that only rank 0 can see (an --out folder holding other files): both ranks
  exit 2 with the same one line, no traceback;
- a rank that dies mid-run: the other stops within a bounded time with one line."""
import os
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ARGS = ["--preset", "tiny", "--steps", "4", "--eval-every", "2", "--threads", "1", "--quiet", "--device", "cpu"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ranks(cmd, cache, extra_env=None, timeout=300):
    """Start 2 ranks of cmd; [(exit status, stderr)] in rank order."""
    port = _free_port()
    procs = []
    for rank in (0, 1):
        env = dict(os.environ, RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", LOCAL_WORLD_SIZE="2",
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), COLA_FAST_CACHE=str(cache),
                   PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), **(extra_env or {}))
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
    out = []
    for p in procs:
        try:
            _, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise AssertionError(f"a rank did not stop within {timeout} s")
        out.append((p.returncode, err))
    return out


def test_user_error_on_rank_0_is_the_same_line_on_every_rank(cache, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("not a run")
    got = _ranks([sys.executable, "-m", "cola_fast.train", *ARGS, "--out", str(out)], cache)
    lines = [err.strip().splitlines() for _, err in got]
    assert [rc for rc, _ in got] == [2, 2], got
    assert all(len(ls) == 1 for ls in lines), lines
    assert lines[0] == lines[1] and "is not empty and holds no cola_fast run" in lines[0][0], lines
    assert not any("Traceback" in err for _, err in got)
    assert sorted(p.name for p in out.iterdir()) == [".lock", "notes.txt"]  # nothing written


def test_a_rank_that_dies_stops_the_other_with_one_line(cache, tmp_path):
    got = _ranks([sys.executable, str(Path(__file__).with_name("dist_die.py")), *ARGS, "--out", str(tmp_path / "o")],
                 cache, {"DIE_RANK": "1", "COLA_FAST_DIST_TIMEOUT": "60"})
    (rc0, err0), (rc1, _) = got
    assert rc1 == 9
    lines = err0.strip().splitlines()
    assert rc0 == 1 and len(lines) == 1 and "process group broke" in lines[0], err0[-2000:]
    assert "Traceback" not in err0
