"""The native (C++) proposal path (csrc/cpu/proposals.cpp) against numpy and the reference:
numpy's own reductions bit for bit, common.minmax_norm + upsample bit for bit, and whole
detection lists equal (==) to evaluation/reference.py. The numpy path is checked here too
(backend="numpy"), since the default path is the native one whenever the extension is built.
"""
import numpy as np
import pytest

from cola_fast.evaluation import ProposalConfig
from cola_fast.evaluation import reference as R
from cola_fast.evaluation.common import prepare_curves
from cola_fast.evaluation.proposals import (_native_ops, _prepare, _prepare_native,
                                            generate_proposals_batch, proposal_backend)
from test_proposals import CASES, NAMES, _video

torch = pytest.importorskip("torch")
OPS = _native_ops()
native = pytest.mark.skipif(OPS is None, reason="cola_fast._C (with the proposal ops) is not built")
PATHS = ["numpy", pytest.param("native", marks=native)]

LENGTHS = sorted(set(range(1, 300)) | {7, 8, 9, 127, 128, 129, 255, 256, 257, 383, 384, 385, 511, 512,
                                       513, 1000, 1023, 1024, 1025, 1500, 1999, 2000, 4097, 8191, 8192,
                                       8193, 20011})


@native
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("offset", [0, 1, 3, 5, 8, 13])
def test_pairwise_sum_equals_numpy_reduce(dtype, offset):
    rng = np.random.default_rng(offset + (dtype == np.float64) * 100)
    # values of very different magnitudes make the summation order visible in the last bits
    x = (rng.standard_normal(25000) * 10.0 ** rng.integers(-3, 4, 25000)).astype(dtype)
    starts = np.array([offset + (7 * n) % 97 for n in LENGTHS], dtype=np.int64)
    counts = np.array(LENGTHS, dtype=np.int64)
    got = OPS.pairwise_sum(torch.from_numpy(x), torch.from_numpy(starts), torch.from_numpy(counts)).numpy()
    want = np.array([np.add.reduce(x[s:s + n]) for s, n in zip(starts, counts)], dtype=dtype)
    assert got.dtype == dtype
    np.testing.assert_array_equal(got, want)
    # np.mean as the reference uses it: the sum divided by the count, in float64
    if dtype == np.float64:
        means = np.array([np.mean(x[s:s + n]) for s, n in zip(starts, counts)])
        np.testing.assert_array_equal(got / counts, means)
    # the order matters: a plain sequential sum differs somewhere (the test can fail)
    seq = np.array([np.cumsum(x[s:s + n])[-1] for s, n in zip(starts, counts)], dtype=dtype)
    assert np.any(seq != want)


@native
def test_pairwise_sum_input_checks():
    x = torch.zeros(10, dtype=torch.float64)
    with pytest.raises(RuntimeError, match="outside x"):
        OPS.pairwise_sum(x, torch.tensor([5]), torch.tensor([6]))
    with pytest.raises(RuntimeError, match="float32 or float64"):
        OPS.pairwise_sum(torch.zeros(10, dtype=torch.int64), torch.tensor([0]), torch.tensor([1]))
    with pytest.raises(RuntimeError, match="differ in length"):
        OPS.pairwise_sum(x, torch.tensor([0, 1]), torch.tensor([1]))
    assert OPS.pairwise_sum(x, torch.tensor([3]), torch.tensor([0])).item() == 0.0


@native
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_norm_upsample_equals_common(dtype):
    """The curves the native path builds == common.prepare_curves (minmax_norm, upsample)."""
    rng = np.random.default_rng(7)
    items = []
    for T in (1, 2, 3, 5, 7, 24, 25, 97, 250, 333, 1001):
        vs, cas, act = _video(rng, T, ties=bool(T % 2), n_present=1 + T % 3)
        cas = (cas - 0.05 * rng.random(cas.shape)).astype(dtype)  # some negatives: relu(min)
        items.append((vs, cas, act.astype(dtype), T))
    cfg = ProposalConfig.thumos14()
    vids, Ls, cas_bank, act_bank = _prepare_native(items, NAMES, cfg)
    ref = _prepare(items, NAMES, cfg)
    want_cas = np.concatenate([np.ascontiguousarray(v[2].T).reshape(-1) for v in ref])
    want_act = np.concatenate([v[3] for v in ref])
    assert list(Ls) == [v[2].shape[0] for v in ref]
    np.testing.assert_array_equal(cas_bank, want_cas)
    np.testing.assert_array_equal(act_bank, want_act)
    for (vs, pred, *_), (vs2, pred2, *_) in zip(vids, ref):
        np.testing.assert_array_equal(pred, pred2)
    # the reference's prepare_curves itself, for one video
    pred, cu, au = prepare_curves(items[-1][0], items[-1][1], items[-1][2], cfg)
    np.testing.assert_array_equal(act_bank[-len(au):], au)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("seed,T,ties", CASES)
def test_path_equals_reference(path, seed, T, ties):
    rng = np.random.default_rng(seed)
    vs, cas, act = _video(rng, T, ties=ties, n_present=1 + seed % 3)
    T_orig = T + int(rng.integers(0, 50))
    got = generate_proposals_batch([(vs, cas, act, T_orig)], NAMES, backend=path)[0]
    want = R.generate_proposals(vs, cas, act, T_orig, NAMES)
    assert got == want  # same detections, same order, identical floats
    assert len(got) > 0 or T == 1


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("cfg_name", ["thumos14", "anet12", "min_run1", "unsorted", "nms_above_1", "nms_0"])
def test_path_equals_reference_batch_configs(path, cfg_name):
    rng = np.random.default_rng(21)
    items = []
    for T in (1, 2, 7, 31, 64, 120, 250):
        ties = bool(T % 2)
        vs, cas, act = _video(rng, T, ties=ties, n_present=1 + T % 3)
        if T == 64:  # float64 inputs for one video (the batch then mixes dtypes)
            vs, cas, act = vs.astype(np.float64), cas.astype(np.float64), act.astype(np.float64)
        items.append((vs, cas, act, T + 5))
    cfg = {"thumos14": ProposalConfig.thumos14(), "anet12": ProposalConfig.anet12(),
           "min_run1": ProposalConfig(min_run=1, upsample=1),
           "unsorted": ProposalConfig(cas_thresholds=np.random.default_rng(0).permutation(
               np.arange(0, 0.25, 0.025)), act_thresholds=[0.5, 0.1, 0.3, 0.3], outer_ratio=0.5,
               nms_iou=0.4),
           "nms_above_1": ProposalConfig(nms_iou=1.5), "nms_0": ProposalConfig(nms_iou=0.0)}[cfg_name]
    got = generate_proposals_batch(items, NAMES, cfg, backend=path)
    want = [R.generate_proposals(*it, NAMES, cfg) for it in items]
    assert got == want


@native
def test_native_equals_numpy_many_videos():
    rng = np.random.default_rng(99)
    items = []
    for n in range(30):
        T = int(rng.integers(1, 400))
        vs, cas, act = _video(rng, T, ties=n % 3 == 0, n_present=1 + n % 4)
        items.append((vs, cas, act, T + int(rng.integers(0, 9))))
    a = generate_proposals_batch(items, NAMES, backend="native")
    b = generate_proposals_batch(items, NAMES, backend="numpy")
    assert a == b
    assert sum(map(len, a)) > 100
    # and the reference for a few of them
    for i in (0, 7, 19):
        assert a[i] == R.generate_proposals(*items[i], NAMES)


@native
@pytest.mark.parametrize("thresh", [0.6, 0.3, 0.95, 1.0])
def test_nms_groups_equals_reference(thresh):
    rng = np.random.default_rng(int(thresh * 100))
    groups, sc, x1, x2, keys = [], [], [], [], []
    for gi in range(25):
        n = int(rng.integers(1, 150))
        s = rng.integers(0, 80, n)
        e = s + rng.integers(0, 25, n)
        f = float(rng.uniform(0.01, 0.1))
        sc_g = rng.random(n)
        if gi % 3 == 1:  # copies of rows (same segment and score)
            dup = rng.integers(0, n, n // 3)
            s[: len(dup)], e[: len(dup)], sc_g[: len(dup)] = s[dup], e[dup], sc_g[dup]
        if gi % 3 == 2:  # ties between different segments
            sc_g = rng.integers(0, 8, n) / 7.0
        groups.append(np.full(n, gi))
        sc.append(sc_g)
        x1.append(s * f)
        x2.append((e + 1) * f)
        keys.append(s * 1000 + e)
    g, sc, x1, x2, keys = map(np.concatenate, (groups, sc, x1, x2, keys))
    bounds = np.flatnonzero(np.r_[True, g[1:] != g[:-1], True])
    t = torch.from_numpy
    kept, ties = OPS.nms_groups(t(sc), t(x1), t(x2), t(keys), t(bounds), t(np.zeros(0, np.int64)), thresh)
    kept, ties = kept.numpy(), ties.numpy()
    assert set(ties.tolist()) >= {gi for gi in range(25) if gi % 3 == 2 and bounds[gi + 1] - bounds[gi] > 8}
    # with the reference's own rank order given, every group
    order = np.concatenate([lo + sc[lo:hi].argsort()[::-1] for lo, hi in zip(bounds[:-1], bounds[1:])])
    kept_all, none = OPS.nms_groups(t(sc), t(x1), t(x2), t(keys), t(bounds), t(order), thresh)
    assert none.numel() == 0
    kept_all = kept_all.numpy()
    at = 0
    for gi, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])):
        props = [[0, a, b, c] for a, b, c in zip(sc[lo:hi], x1[lo:hi], x2[lo:hi])]
        want = R.nms(props, thresh)
        got_all = [[0.0, sc[i], x1[i], x2[i]] for i in kept_all if lo <= i < hi]
        assert got_all == want
        if gi not in ties:
            got = [[0.0, sc[i], x1[i], x2[i]] for i in kept if lo <= i < hi]
            assert got == want
            at += 1
    assert at > 10


def test_proposal_backend_setting():
    """The proposal path of each backend: numpy is numpy, auto the native ops when they are
    built, native those ops or an error; another name is refused."""
    assert proposal_backend("numpy") == "numpy"
    with pytest.raises(ValueError, match="proposal backend"):
        proposal_backend("gpu")
    assert proposal_backend() == ("native" if OPS is not None else "numpy")
    if OPS is None:
        with pytest.raises(RuntimeError, match="not available"):
            proposal_backend("native")
    else:
        assert proposal_backend("native") == "native"


@native
@pytest.mark.parametrize("dtypes", ["float32", "float64", "mixed"])
def test_fused_and_bank_routes_equal_reference(dtypes):
    """Uniform dtypes go through the fused op (proposal_runs_raw), mixed ones through the
    upsampled banks (norm_upsample + proposal_runs): both == the reference."""
    from cola_fast.evaluation.proposals import _native_arrays
    rng = np.random.default_rng(5)
    items = []
    for n, T in enumerate((1, 3, 17, 90, 211)):
        vs, cas, act = _video(rng, T, ties=n % 2 == 0, n_present=1 + n % 3)
        dt = {"float32": np.float32, "float64": np.float64, "mixed": (np.float32, np.float64)[n % 2]}[dtypes]
        items.append((vs, cas.astype(dt), act.astype(dt), T + 2))
    cfg = ProposalConfig.thumos14()
    raw = _prepare_native(items, NAMES, cfg, banks=False)
    assert isinstance(raw[2], dict) == (dtypes != "mixed")
    bank = _prepare_native(items, NAMES, cfg, banks=True)
    P1, k1 = _native_arrays(*raw, cfg)
    P2, k2 = _native_arrays(*bank, cfg)
    for name in ("seg", "f", "score", "start", "end"):
        np.testing.assert_array_equal(P1[name], P2[name])
    np.testing.assert_array_equal(k1, k2)
    got = generate_proposals_batch(items, NAMES, cfg, backend="native")
    assert got == [R.generate_proposals(*it, NAMES, cfg) for it in items]
