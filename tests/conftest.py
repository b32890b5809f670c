import os

import torch

# Without a GPU, Triton kernels run only under the interpreter; the variable must be set
# before any kernel module is imported (triton.jit reads it at decoration time).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
# On a GPU, one Triton autotune config per kernel under pytest (the benchmarks tune for real):
# tuning compiles every config for every shape, minutes of compiling over the suite.
os.environ.setdefault("COLA_FAST_TRITON_AUTOTUNE", "0")


import fcntl  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _no_leaked_deterministic_mode():
    """torch.use_deterministic_algorithms is process-wide: a test that leaves it on changes
    every later test of its worker (on CUDA, ops without a deterministic kernel raise). Fail
    the test that leaks it, and reset it for the next one."""
    before = torch.are_deterministic_algorithms_enabled()
    yield
    leaked = torch.are_deterministic_algorithms_enabled() != before
    torch.use_deterministic_algorithms(before)
    assert not leaked, "this test left torch.use_deterministic_algorithms switched"


@pytest.fixture(scope="session")
def cache(tmp_path_factory):
    """A private cache for the synthetic datasets of this test session."""
    d = tmp_path_factory.mktemp("cache")
    old = os.environ.get("COLA_FAST_CACHE")
    os.environ["COLA_FAST_CACHE"] = str(d)
    yield d
    if old is None:
        os.environ.pop("COLA_FAST_CACHE", None)
    else:
        os.environ["COLA_FAST_CACHE"] = old


@pytest.fixture(scope="session")
def tiny_run(cache, tmp_path_factory):
    """One run of the `tiny` preset: (run dir, summary, seconds). Under pytest-xdist the
    workers share it: the first to ask trains (under a file lock) in the folder all workers of
    this session see, the others wait and read it, and make the run's synthetic dataset in
    their own cache (seconds, not a training run). The run folder is read-only for the tests."""
    from cola_fast.config import get_preset
    from cola_fast.data import prepare_data
    from cola_fast.train import train

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the session's folder, above each worker's own
    out, record = root / "tiny_run", root / "tiny_run.json"
    with open(root / "tiny_run.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        trained_here = not record.exists()
        if trained_here:
            t0 = time.time()
            summary = train(get_preset("tiny"), out, quiet=True)
            record.write_text(json.dumps({"summary": summary, "seconds": time.time() - t0, "cache": str(cache)}))
        rec = json.loads(record.read_text())
    if not trained_here:  # the tests find the run's data in this worker's cache, as after a run here
        prepare_data(get_preset("tiny"), log=lambda *a: None)
    return out, rec["summary"], rec["seconds"]


@pytest.fixture(scope="session")
def tiny_run_cache(tiny_run) -> Path:
    """The cache (synthetic data, auto's decisions on disk) the shared tiny run was trained
    with, maybe by another xdist worker: a run that must reproduce it bit for bit uses it, so
    that auto reads the same decisions instead of measuring again (another choice of kernel
    rounds differently)."""
    return Path(json.loads((tiny_run[0].parent / "tiny_run.json").read_text())["cache"])


@pytest.fixture(scope="session")
def synthetic_root(tiny_run, cache) -> Path:
    """The folder of the synthetic dataset that the tiny run built in the session's cache."""
    roots = sorted(Path(cache).glob("synthetic_thumos14_*"))
    assert roots, "the tiny run should have built its synthetic dataset in the cache"
    return roots[0]


@pytest.fixture(scope="session")
def video_features(synthetic_root):
    """video id -> its (T, D) test features, rgb then flow: a features file as infer reads it."""
    import numpy as np

    def features(vid: str):
        d = synthetic_root / "features" / "test"
        return np.concatenate([np.load(d / "rgb" / f"{vid}.npy"), np.load(d / "flow" / f"{vid}.npy")], axis=1)
    return features


@pytest.fixture(scope="session")
def quick():
    """quick(**fields): the tiny preset cut to 10 steps with one evaluation at the end,
    fields replaced."""
    from cola_fast.config import get_preset

    def config(**kw):
        return get_preset("tiny").replace(**{"steps": 10, "eval_every": 10, **kw})
    return config


# the P-MIL results file on THUMOS'14 test and its ground truth (tests/data), loaded once per module
DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def gt():
    from cola_fast.evaluation import load_gt
    return load_gt(str(DATA / "gt.json"))


@pytest.fixture(scope="module")
def pmil():
    from cola_fast.evaluation import load_results
    return load_results(str(DATA / "thumos14_test_pmil.json"))
