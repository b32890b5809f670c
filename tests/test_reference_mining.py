"""cola_fast.reference mining pieces against independent oracles: scipy.ndimage for the masks,
numpy.median for the median, a plain-Python sort with the spec's tie rule for the top-k."""
import numpy as np
import pytest
import torch

from cola_fast import reference as R

ndimage = pytest.importorskip("scipy.ndimage")


def _topk_python(row, k):
    """The spec's rule spelled out: value descending, equal values lower index first."""
    order = sorted(range(len(row)), key=lambda i: (-row[i], i))
    return order[:k]


def _topk_oracle(x: torch.Tensor, k: int) -> torch.Tensor:
    return torch.tensor([_topk_python(r.tolist(), k) for r in x], dtype=torch.int64).reshape(x.shape[0], k)


@pytest.mark.parametrize("T", [1, 2, 3, 5, 6, 7, 13, 50])
@pytest.mark.parametrize("s", [1, 2, 3, 4, 5, 6, 9])
def test_masks_vs_scipy(T, s):
    g = torch.Generator().manual_seed(T * 100 + s)
    for p in (0.3, 0.5, 0.8):
        b = (torch.rand(6, T, generator=g) < p).to(torch.float32)
        b[0] = 1.0  # an all-ones row: erosion at the borders
        if T > 2:
            b[1] = 0.0
            b[1, T // 2] = 1.0  # a single one
        bn = b.numpy().astype(bool)
        want_e = np.stack([ndimage.binary_erosion(r[None], structure=np.ones((1, s)))[0] for r in bn])
        want_d = np.stack([ndimage.binary_dilation(r[None], structure=np.ones((1, s)))[0] for r in bn])
        # and the 2-D call of the published code, all rows at once
        assert np.array_equal(want_e, ndimage.binary_erosion(bn, structure=np.ones((1, s))))
        assert np.array_equal(want_d, ndimage.binary_dilation(bn, structure=np.ones((1, s))))
        assert np.array_equal(R.binary_erosion(b, s).numpy().astype(bool), want_e)
        assert np.array_equal(R.binary_dilation(b, s).numpy().astype(bool), want_d)


@pytest.mark.parametrize("T", [1, 2, 3, 4, 5, 6, 7, 50, 51])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_median_vs_numpy(T, dtype):
    g = torch.Generator().manual_seed(T)
    for x in (torch.rand(8, T, generator=g, dtype=torch.float64),
              torch.randint(0, 3, (8, T), generator=g).to(torch.float64) / 3,
              torch.randn(8, T, generator=g, dtype=torch.float64)):
        x = x.to(dtype)
        want = np.median(x.numpy(), axis=1)
        got = R.median(x).numpy()
        assert got.dtype == want.dtype
        assert np.array_equal(got, want), (got, want)


@pytest.mark.parametrize("T", [1, 2, 5, 6, 7, 50])
def test_topk_vs_python(T):
    g = torch.Generator().manual_seed(7 + T)
    for x in (torch.rand(5, T, generator=g),
              torch.randint(0, 3, (5, T), generator=g).float(),
              torch.zeros(5, T)):
        for k in sorted({0, 1, T // 2, T}):
            assert torch.equal(R.topk_indices(x, k), _topk_oracle(x, k))


def _mine_oracle(a: torch.Tensor, keep: torch.Tensor, k_easy: int, k_hard: int, m: int, M: int):
    """COLA_SPEC 2.1-2.2 from numpy, scipy and plain Python (float64 throughout)."""
    an = a.numpy().astype(np.float64)
    kn = keep.numpy().astype(np.float64)
    ea = [_topk_python(list(r * k), k_easy) for r, k in zip(an, kn)]
    inv = an.max(axis=1, keepdims=True) - an
    eb = [_topk_python(list(r * k), k_easy) for r, k in zip(inv, kn)]
    med = np.median(an, axis=1, keepdims=True)
    b = an > med
    ero = lambda s: ndimage.binary_erosion(b, structure=np.ones((1, s))).astype(np.float64)  # noqa: E731
    dil = lambda s: ndimage.binary_dilation(b, structure=np.ones((1, s))).astype(np.float64)  # noqa: E731
    inner, outer = ero(m) - ero(M), dil(M) - dil(m)
    ha = [_topk_python(list(r * w), k_hard) for r, w in zip(an, inner)]
    hb = [_topk_python(list(r * w), k_hard) for r, w in zip(an, outer)]
    B = a.shape[0]
    t = lambda v, k: torch.tensor(v, dtype=torch.int64).reshape(B, k)  # noqa: E731
    return t(ea, k_easy), t(eb, k_easy), t(ha, k_hard), t(hb, k_hard)


@pytest.mark.parametrize("T", [1, 2, 5, 6, 7, 13, 50, 120])
@pytest.mark.parametrize("kind", ["rand", "quantised", "equal"])
def test_mine_snippets_vs_oracle(T, kind):
    g = torch.Generator().manual_seed(T)
    B = 6
    if kind == "rand":
        a = torch.rand(B, T, generator=g, dtype=torch.float64)
    elif kind == "quantised":
        a = torch.randint(0, 4, (B, T), generator=g).to(torch.float64) / 4
    else:
        a = torch.full((B, T), 0.5, dtype=torch.float64)
    keep = (torch.rand(B, T, generator=g) < 0.4).to(torch.float64)
    for k_easy, k_hard, m, M in [(max(T // 5, 1), max(T // 20, 1), 3, 6), (T, T, 3, 6), (1, 1, 2, 5)]:
        got = R.mine_snippets(a, keep, k_easy, k_hard, m, M)
        want = _mine_oracle(a, keep, k_easy, k_hard, m, M)
        for name, x, y in zip(("EA", "EB", "HA", "HB"), got, want):
            assert torch.equal(x, y), (name, T, kind, k_easy, k_hard)
