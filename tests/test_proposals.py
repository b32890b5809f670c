"""Proposals and NMS (COLA_SPEC 5): fast == reference exactly (same detections, same
order, equal floats); the shared pieces against independent oracles (scipy interp1d,
numpy's own sums, a hand-computed proposal)."""
import numpy as np
import pytest

from cola_fast.evaluation import ProposalConfig, generate_proposals
from cola_fast.evaluation import reference as R
from cola_fast.evaluation._pairwise import segment_sums, slice_sums
from cola_fast.evaluation.common import minmax_norm, upsample
from cola_fast.evaluation.proposals import nms_indices

NAMES = [f"class{i:02d}" for i in range(20)]


# ----------------------------------------------------------------------------------
# building blocks
# ----------------------------------------------------------------------------------
def test_segment_sums_bit_identical_to_numpy():
    rng = np.random.default_rng(0)
    bank = rng.standard_normal(50000) * rng.uniform(0, 100, 50000)
    m = 400
    n1 = rng.integers(0, 700, m)
    n1[:5] = [0, 1, 7, 8, 128]
    n1[5:9] = [129, 136, 4100, 30000]
    n2 = rng.integers(0, 150, m)
    n2[::3] = 0
    b1 = rng.integers(0, 50000 - 30000, m)
    b2 = rng.integers(0, 50000 - 150, m)
    got = segment_sums(bank, b1, n1, b2, n2)
    want = np.array([np.add.reduce(np.concatenate([bank[a:a + x], bank[b:b + y]]))
                     for a, x, b, y in zip(b1, n1, b2, n2)])
    np.testing.assert_array_equal(got, want)
    got = slice_sums(bank, b1, n1)  # heavily overlapping slices: fold-table branch
    want = np.array([np.sum(bank[a:a + x]) for a, x in zip(b1, n1)])
    np.testing.assert_array_equal(got, want)
    few = slice(0, 40)  # sparse slices: gather branch
    np.testing.assert_array_equal(slice_sums(bank, b1[few], n1[few]), want[few])


@pytest.mark.parametrize("T", [2, 3, 17, 250])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_upsample_equals_scipy_interp1d(T, dtype):
    scipy_interp = pytest.importorskip("scipy.interpolate")
    rng = np.random.default_rng(T)
    y = rng.random((T, 3)).astype(dtype)
    f = scipy_interp.interp1d(np.arange(T), y, kind="linear", axis=0, fill_value="extrapolate")
    want = f(np.arange(0, T, 1 / 24))
    got = upsample(y, 24)
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)


def test_minmax_norm_equals_published_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((40, 5)) * 3).astype(np.float32)
    x[:, 2] = 0.5  # constant column: delta <= 0 -> 1
    x[:, 3] = -np.abs(x[:, 3])  # all negative
    t = torch.from_numpy(x)[None]  # (1, T, C), normalised over dim 1 as the published code
    hi = torch.relu(torch.max(t, dim=1)[0])
    lo = torch.relu(torch.min(t, dim=1)[0])
    d = hi - lo
    d[d <= 0] = 1
    ret = (t - lo) / d
    ret[ret > 1] = 1
    ret[ret < 0] = 0
    np.testing.assert_array_equal(minmax_norm(x), ret[0].numpy())


def test_nms_indices_equal_reference():
    rng = np.random.default_rng(2)
    for trial in range(20):
        n = int(rng.integers(1, 300))
        s = rng.integers(0, 60, n) * 0.32
        e = s + rng.integers(1, 20, n) * 0.32
        sc = rng.integers(0, 6, n) / 5.0 if trial % 2 else rng.random(n)
        props = [[3, a, b, c] for a, b, c in zip(sc, s, e)]
        ref = R.nms(props, 0.6)
        keep = nms_indices(sc, s, e, 0.6)
        assert [[3.0, sc[i], s[i], e[i]] for i in keep] == ref


def test_hand_computed_single_bump():
    """One class, one bump, one cas threshold, no actionness thresholds: the proposal
    follows from COLA_SPEC 5 by hand."""
    T = 4
    cas = np.zeros((T, 2), np.float32)
    cas[:, 0] = [0, 1, 1, 0]
    vs = np.array([0.9, 0.1], np.float32)
    cfg = ProposalConfig(cas_thresholds=[0.5], act_thresholds=[])
    for backend in ("auto", "reference"):
        dets = generate_proposals(vs, cas, cas.sum(1), T, ["a", "b"], cfg, backend=backend)
        assert len(dets) == 1
        d = dets[0]
        # upsampled curve: x = j / 24; value 0 -> 1 on [0, 1], 1 on [1, 2], 1 -> 0 on [2, 3],
        # extrapolated below 0 past 3. Candidates: value >= 0.5 -> j in [12, 60].
        j = np.arange(12, 61)
        x = j / 24
        w = np.where(x <= 1, x, np.where(x <= 2, 1.0, 3 - x))
        inner = w.mean()
        # outer: [0, 12) and (60, 72]; all those values are < 0.5 -> thresholded to 0
        f = 16 * T / (24 * T * 25)
        assert d["label"] == "a"
        assert d["segment"] == pytest.approx([12 * f, 61 * f], abs=1e-12)
        assert d["score"] == pytest.approx(inner - 0.0 + 0.2 * 0.9, abs=1e-6)


# ----------------------------------------------------------------------------------
# fast == reference on random model-like outputs
# ----------------------------------------------------------------------------------
def _video(rng, T, C=20, ties=False, n_present=2):
    t = np.arange(T)
    cas = np.abs(rng.standard_normal((T, C))) * 0.05
    for c in rng.choice(C, size=n_present, replace=False):
        for _ in range(max(1, T // 40)):
            mu, w = rng.uniform(0, T), rng.uniform(0.5, 10)
            cas[:, c] += rng.uniform(0.3, 3) * np.exp(-0.5 * ((t - mu) / w) ** 2)
    if ties:
        cas = np.round(cas * 4) / 4  # plateaus: equal values, equal runs, tied scores
    cas = cas.astype(np.float32)
    logits = np.sort(cas, 0)[-max(1, T // 8):].mean(0)
    vs = np.exp(3 * logits)
    vs = (vs / vs.sum()).astype(np.float32)
    return vs, cas, cas.sum(1)


CASES = [(seed, T, ties) for seed, (T, ties) in enumerate(
    [(1, False), (2, True), (3, False), (5, True), (14, False), (40, True), (97, False),
     (160, True), (333, False), (600, False), (64, True), (25, False)])]


@pytest.mark.parametrize("seed,T,ties", CASES)
def test_fast_equals_reference(seed, T, ties):
    rng = np.random.default_rng(seed)
    vs, cas, act = _video(rng, T, ties=ties, n_present=1 + seed % 3)
    T_orig = T + int(rng.integers(0, 50))
    a = generate_proposals(vs, cas, act, T_orig, NAMES, backend="auto")
    b = generate_proposals(vs, cas, act, T_orig, NAMES, backend="reference")
    assert a == b  # same detections, same order, identical floats
    assert len(a) > 0 or T == 1  # T == 1: the normalised curve is all zero


@pytest.mark.parametrize("cfg_name", ["anet12", "min_run1", "no_class_above", "unsorted"])
def test_fast_equals_reference_configs(cfg_name):
    rng = np.random.default_rng(11)
    vs, cas, act = _video(rng, 120, ties=True)
    cfg = ProposalConfig.thumos14()
    if cfg_name == "anet12":
        cfg = ProposalConfig.anet12()
    elif cfg_name == "min_run1":
        cfg = ProposalConfig(min_run=1, upsample=1)
    elif cfg_name == "unsorted":
        rng2 = np.random.default_rng(0)
        cfg = ProposalConfig(cas_thresholds=rng2.permutation(np.arange(0, 0.25, 0.025)),
                             act_thresholds=[0.5, 0.1, 0.3, 0.3], outer_ratio=0.5, nms_iou=0.4)
    else:
        vs = np.full(20, 0.05, np.float32)
        vs[7] = 0.06  # nothing >= 0.2 -> argmax class only
    a = generate_proposals(vs, cas, act, 130, NAMES, cfg, backend="auto")
    b = generate_proposals(vs, cas, act, 130, NAMES, cfg, backend="reference")
    assert a == b
    if cfg_name == "no_class_above":
        assert {d["label"] for d in a} == {NAMES[7]}


def test_float64_and_torch_inputs():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    vs, cas, act = _video(rng, 80)
    a = generate_proposals(torch.from_numpy(vs), torch.from_numpy(cas), torch.from_numpy(act),
                           80, NAMES)
    b = generate_proposals(vs, cas, act, 80, NAMES, backend="reference")
    assert a == b
    c = generate_proposals(vs.astype(np.float64), cas.astype(np.float64),
                           act.astype(np.float64), 80, NAMES, backend="auto")
    d = generate_proposals(vs.astype(np.float64), cas.astype(np.float64),
                           act.astype(np.float64), 80, NAMES, backend="reference")
    assert c == d


def test_input_validation():
    vs = np.full(20, 0.05, np.float32)
    cas = np.zeros((10, 20), np.float32)
    act = np.zeros(10, np.float32)
    with pytest.raises(ValueError, match="cas has 20 classes but video_scores has 3"):
        generate_proposals(vs[:3], cas, act, 10, NAMES)
    with pytest.raises(ValueError, match="actionness must have shape"):
        generate_proposals(vs, cas, act[:5], 10, NAMES)
    with pytest.raises(ValueError, match="cas must have shape"):
        generate_proposals(vs, cas[None], act, 10, NAMES)
    with pytest.raises(ValueError, match="class_names"):
        generate_proposals(vs, cas, act, 10, NAMES[:3])
    bad = cas.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        generate_proposals(vs, bad, act, 10, NAMES)
    with pytest.raises(ValueError, match="num_snippets_orig"):
        generate_proposals(vs, cas, act, 0, NAMES)
    with pytest.raises(ValueError, match="backend"):
        generate_proposals(vs, cas, act, 10, NAMES, backend="gpu")
    with pytest.raises(ValueError, match="no snippets"):
        generate_proposals(vs, cas[:0], act[:0], 10, NAMES)
    with pytest.raises(ValueError, match="upsample"):
        ProposalConfig(upsample=0)


@pytest.mark.parametrize("thresh", [0.6, 0.3, 0.95, 1.0, 0.0, 1.5])
def test_nms_batched_equals_reference_per_group(thresh):
    from cola_fast.evaluation.proposals import nms_batched
    rng = np.random.default_rng(int(thresh * 100))
    groups, sc, x1, x2, keys = [], [], [], [], []
    for gi in range(25):
        n = int(rng.integers(1, 120))
        s = rng.integers(0, 80, n)
        e = s + rng.integers(0, 25, n)
        f = float(rng.uniform(0.01, 0.1))
        groups.append(np.full(n, gi))
        sc.append(rng.integers(0, 8, n) / 7.0 if gi % 2 else rng.random(n))
        x1.append(s * f)
        x2.append((e + 1) * f)
        keys.append(s * 1000 + e)
    g, sc, x1, x2, keys = map(np.concatenate, (groups, sc, x1, x2, keys))
    kept = nms_batched(g, sc, x1, x2, keys, thresh)
    bounds = np.flatnonzero(np.r_[True, g[1:] != g[:-1], True])
    want = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        props = [[0, a, b, c] for a, b, c in zip(sc[lo:hi], x1[lo:hi], x2[lo:hi])]
        want += R.nms(props, thresh)
    assert [[0.0, sc[i], x1[i], x2[i]] for i in kept] == want


def test_batch_equals_per_video_reference():
    from cola_fast.evaluation.proposals import generate_proposals_batch
    rng = np.random.default_rng(3)
    items = []
    for T in (1, 2, 7, 50, 120, 333):
        vs, cas, act = _video(rng, T, ties=bool(T % 2), n_present=1 + T % 3)
        items.append((vs, cas, act, T + 3))
    got = generate_proposals_batch(items, NAMES)
    want = [generate_proposals(*it, NAMES, backend="reference") for it in items]
    assert got == want
    assert generate_proposals_batch([], NAMES) == []
