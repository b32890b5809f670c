"""Sampling of COLA_SPEC 1 against an independent loop transcription of the spec."""
import math
import random

import numpy as np
import pytest
import torch

from cola_fast.data import DataError, sample_random_perturb, sample_random_perturb_batch, sample_uniform

scipy_stats = pytest.importorskip("scipy.stats")


def spec_ranges(T, N):
    """Per position the inclusive [lo, hi] of COLA_SPEC 1 random perturb, with the float
    expression of the published code (s_i = i*T/N, floor)."""
    if T == N:
        return [(i, i) for i in range(N)]
    s = [math.floor(i * T / N) for i in range(N + 1)]
    out = []
    for i in range(N - 1):
        out.append((s[i], s[i + 1]) if s[i] != s[i + 1] else (s[i], s[i]))
    last = s[N - 1]
    out.append((last, T - 1) if last < T - 1 else (last, last))
    return out


def spec_draw(T, N, r: random.Random):
    return [r.randint(lo, hi) for lo, hi in spec_ranges(T, N)]


SHAPES = [(1, 1), (1, 5), (3, 7), (7, 3), (10, 10), (750, 750), (100, 750), (751, 750), (1835, 750),
          (2611, 750), (13, 50), (50, 13), (333, 50), (2, 1)]


@pytest.mark.parametrize("T,N", SHAPES)
def test_random_perturb_support_and_determinism(T, N):
    rng = np.random.default_rng(0)
    ranges = np.array(spec_ranges(T, N))
    draws = np.stack([sample_random_perturb(T, N, rng) for _ in range(200)])
    assert draws.dtype == np.int64 and draws.shape == (200, N)
    assert (draws >= ranges[:, 0]).all() and (draws <= ranges[:, 1]).all()
    fixed = ranges[:, 0] == ranges[:, 1]
    assert (draws[:, fixed] == ranges[fixed, 0]).all()
    # the random positions reach both ends of their range
    free = ~fixed
    if free.any():
        assert (draws[:, free].min(0) == ranges[free, 0]).all()
        assert (draws[:, free].max(0) == ranges[free, 1]).all()
    if T == N:
        assert (draws == np.arange(N)).all()


def test_random_perturb_distribution_chi_square():
    T, N = 37, 10  # ranges of width 4-5: per position frequencies against uniform
    rng = np.random.default_rng(1)
    draws = np.stack([sample_random_perturb(T, N, rng) for _ in range(4000)])
    for i, (lo, hi) in enumerate(spec_ranges(T, N)):
        counts = np.bincount(draws[:, i] - lo, minlength=hi - lo + 1)
        assert len(counts) == hi - lo + 1
        assert scipy_stats.chisquare(counts).pvalue > 1e-4


def test_random_perturb_matches_loop_oracle_in_distribution():
    T, N = 23, 9
    r = random.Random(0)
    oracle = np.array([spec_draw(T, N, r) for _ in range(3000)])
    ours = np.stack([sample_random_perturb(T, N, np.random.default_rng(s)) for s in range(3000)])
    for i in range(N):
        vals = sorted(set(oracle[:, i]) | set(ours[:, i]))
        a = np.array([(oracle[:, i] == v).sum() for v in vals])
        b = np.array([(ours[:, i] == v).sum() for v in vals])
        if len(vals) > 1:
            assert scipy_stats.chi2_contingency(np.stack([a, b])).pvalue > 1e-4


def test_random_perturb_seeded_reproducible():
    a = sample_random_perturb(500, 75, np.random.default_rng(7))
    b = sample_random_perturb(500, 75, 7)
    assert (a == b).all()


@pytest.mark.parametrize("T,N", SHAPES)
def test_uniform(T, N):
    got = sample_uniform(T, N)
    if T <= N:
        expect = np.arange(T)
    else:
        expect = np.floor(np.arange(N) * T / N).astype(np.int64)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, expect)


@pytest.mark.parametrize("bad", [0, -3])
def test_bad_num_segments(bad):
    with pytest.raises(DataError, match="num_segments"):
        sample_random_perturb(10, bad, np.random.default_rng(0))
    with pytest.raises(DataError, match="num_segments"):
        sample_uniform(10, bad)


def test_bad_T():
    with pytest.raises(DataError, match="T must be >= 1"):
        sample_uniform(0, 5)
    with pytest.raises(DataError, match="integer"):
        sample_random_perturb(3.5, 5)


# ------------------------------------------------------------------- batched, torch
def test_batch_deterministic_rows_and_support():
    Ts = [750, 100, 1835, 1, 750, 2, 751]
    N = 750
    g = torch.Generator().manual_seed(0)
    idx = sample_random_perturb_batch(torch.tensor(Ts), N, g)
    assert idx.shape == (len(Ts), N) and idx.dtype == torch.int64
    for b, T in enumerate(Ts):
        ranges = np.array(spec_ranges(T, N))
        row = idx[b].numpy()
        assert (row >= ranges[:, 0]).all() and (row <= ranges[:, 1]).all()
        fixed = ranges[:, 0] == ranges[:, 1]
        np.testing.assert_array_equal(row[fixed], ranges[fixed, 0])
        if T == N:
            np.testing.assert_array_equal(row, np.arange(N))


def test_batch_distribution_matches_scalar():
    T, N, R = 41, 12, 3000
    g = torch.Generator().manual_seed(3)
    batched = sample_random_perturb_batch(torch.full((R,), T), N, g).numpy()
    rng = np.random.default_rng(3)
    scalar = np.stack([sample_random_perturb(T, N, rng) for _ in range(R)])
    for i in range(N):
        vals = sorted(set(batched[:, i]) | set(scalar[:, i]))
        a = np.array([(batched[:, i] == v).sum() for v in vals])
        b = np.array([(scalar[:, i] == v).sum() for v in vals])
        assert scipy_stats.chi2_contingency(np.stack([a, b])).pvalue > 1e-4
        lo, hi = spec_ranges(T, N)[i]
        assert scipy_stats.chisquare(np.bincount(batched[:, i] - lo, minlength=hi - lo + 1)).pvalue > 1e-4


def test_batch_reproducible_and_errors():
    T = torch.tensor([5, 300, 90])
    a = sample_random_perturb_batch(T, 50, torch.Generator().manual_seed(1))
    b = sample_random_perturb_batch(T, 50, torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    with pytest.raises(DataError, match="1-D"):
        sample_random_perturb_batch(torch.tensor([[5]]), 50)
    with pytest.raises(DataError, match=">= 1"):
        sample_random_perturb_batch(torch.tensor([5, 0]), 50)
    with pytest.raises(DataError, match="integer"):
        sample_random_perturb_batch(torch.tensor([5.0]), 50)
    with pytest.raises(DataError, match="num_segments"):
        sample_random_perturb_batch(torch.tensor([5]), 0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_batch_on_cuda():
    T = torch.tensor([750, 100, 1835, 3])
    g = torch.Generator(device="cuda").manual_seed(0)
    idx = sample_random_perturb_batch(T, 750, g, device="cuda")
    assert idx.device.type == "cuda"
    for b, t in enumerate(T.tolist()):
        ranges = np.array(spec_ranges(t, 750))
        row = idx[b].cpu().numpy()
        assert (row >= ranges[:, 0]).all() and (row <= ranges[:, 1]).all()
