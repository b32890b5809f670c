"""cola_fast.reference.info_nce / snico_loss against a plain-loop oracle (Python loops over
videos and negatives, math on float64 numbers), written from COLA_SPEC 3 independently."""
import math

import numpy as np
import pytest
import torch

from cola_fast import reference


def _normalize(v):
    n = math.sqrt(sum(x * x for x in v))
    n = max(n, 1e-12)
    return [x / n for x in v]


def _dot(a, b):
    return sum(x * y for x, y in zip(a, b))


def oracle_info_nce(q, k, neg, tau):
    """q, k: lists (B) of D-vectors, neg: list (B) of lists (N) of D-vectors."""
    total = 0.0
    for b in range(len(q)):
        qn, kn = _normalize(q[b]), _normalize(k[b])
        logits = [_dot(qn, kn) / tau] + [_dot(qn, _normalize(e)) / tau for e in neg[b]]
        m = max(logits)
        lse = m + math.log(sum(math.exp(x - m) for x in logits))
        total += lse - logits[0]
    return total / len(q)


def oracle_snico(emb, ea, eb, ha, hb, tau):
    emb = np.asarray(emb, dtype=np.float64)
    B = emb.shape[0]

    def rows(b, idx):
        return [list(emb[b, int(t)]) for t in idx[b]]

    def mean(b, idx):
        r = rows(b, idx)
        return [sum(col) / len(r) for col in zip(*r)]

    t1 = oracle_info_nce([mean(b, ha) for b in range(B)], [mean(b, ea) for b in range(B)],
                         [rows(b, eb) for b in range(B)], tau)
    t2 = oracle_info_nce([mean(b, hb) for b in range(B)], [mean(b, eb) for b in range(B)],
                         [rows(b, ea) for b in range(B)], tau)
    return t1 + t2


@pytest.mark.parametrize("B,N,D,tau", [(1, 1, 3, 0.07), (3, 5, 8, 0.07), (2, 4, 16, 0.5)])
def test_info_nce_matches_loop(B, N, D, tau):
    g = torch.Generator().manual_seed(B * 100 + N)
    q, k = torch.randn(B, D, generator=g, dtype=torch.float64), torch.randn(B, D, generator=g, dtype=torch.float64)
    neg = torch.randn(B, N, D, generator=g, dtype=torch.float64)
    got = reference.info_nce(q, k, neg, tau).item()
    want = oracle_info_nce(q.tolist(), k.tolist(), neg.tolist(), tau)
    assert got == pytest.approx(want, rel=1e-12, abs=1e-12)


def test_info_nce_zero_vectors_follow_eps_rule():
    # a zero query: every cosine is 0, so the loss is log(1 + N)
    q = torch.zeros(1, 4, dtype=torch.float64)
    k = torch.randn(1, 4, dtype=torch.float64)
    neg = torch.randn(1, 3, 4, dtype=torch.float64)
    assert reference.info_nce(q, k, neg, 0.07).item() == pytest.approx(math.log(4), rel=1e-12)
    assert oracle_info_nce(q.tolist(), k.tolist(), neg.tolist(), 0.07) == pytest.approx(math.log(4), rel=1e-12)


@pytest.mark.parametrize("B,T,D,kE,kH", [(1, 6, 4, 2, 1), (3, 10, 7, 4, 2), (2, 3, 5, 6, 4)])
def test_snico_matches_loop(B, T, D, kE, kH):
    g = torch.Generator().manual_seed(T * 7 + kE)
    emb = torch.randn(B, T, D, generator=g, dtype=torch.float64)
    ea, eb = torch.randint(0, T, (B, kE), generator=g), torch.randint(0, T, (B, kE), generator=g)
    ha, hb = torch.randint(0, T, (B, kH), generator=g), torch.randint(0, T, (B, kH), generator=g)
    got = reference.snico_loss(emb, ea, eb, ha, hb, 0.07).item()
    want = oracle_snico(emb.numpy(), ea.tolist(), eb.tolist(), ha.tolist(), hb.tolist(), 0.07)
    assert got == pytest.approx(want, rel=1e-12, abs=1e-12)


def test_snico_gradient_matches_finite_differences_of_oracle():
    g = torch.Generator().manual_seed(3)
    B, T, D, kE, kH = 2, 5, 3, 3, 2
    emb = torch.randn(B, T, D, generator=g, dtype=torch.float64, requires_grad=True)
    ea, eb = torch.randint(0, T, (B, kE), generator=g), torch.randint(0, T, (B, kE), generator=g)
    ha, hb = torch.randint(0, T, (B, kH), generator=g), torch.randint(0, T, (B, kH), generator=g)
    reference.snico_loss(emb, ea, eb, ha, hb, 0.07).backward()
    base = emb.detach().numpy().copy()
    h = 1e-6
    fd = np.zeros_like(base)
    args = (ea.tolist(), eb.tolist(), ha.tolist(), hb.tolist(), 0.07)
    for i in np.ndindex(base.shape):
        p, m = base.copy(), base.copy()
        p[i] += h
        m[i] -= h
        fd[i] = (oracle_snico(p, *args) - oracle_snico(m, *args)) / (2 * h)
    np.testing.assert_allclose(emb.grad.numpy(), fd, rtol=1e-5, atol=1e-7)
