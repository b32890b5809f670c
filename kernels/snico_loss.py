"""Triton kernels of snico_loss (COLA_SPEC 3): the algorithm of csrc/cpu/snico_loss.cpp (read
the derivation of the backward there), in the launches of csrc/cuda/snico_loss.cu:

    forward   _means (B, D/BLOCK_D) -> _dots (2 + 2 k_easy, B) -> _loss (B,) -> sum / B
    backward  _scalars (B,) -> _scatter (B, D/BLOCK_D)

fp32 accumulation; fp32 / bf16 / fp16 embeddings on CUDA (fp32 only under the interpreter).
The scatter accumulates into an fp32 buffer with atomic adds (one program owns a block of
channels of one video, so the order of its adds is fixed: deterministic) and returns it in
emb's dtype. Saved tensors as the native op: means (B,4,D), mean_norms (B,4), neg_norms
(B,2,k_easy), logits (B,2,1+k_easy), lse (B,2), all float32.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

EPS = 1e-12
BLOCK_D = 128


@triton.jit
def _clamp_eps(n):
    # NaN stays NaN: (NaN < eps) is False
    return tl.where(n < 1e-12, 1e-12, n)


@triton.jit
def _means(E, HA, EA, HB, EB, M, T, D, kE, kH, BLOCK: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < D
    base = E + b * T * D + offs
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    for i in range(kH):
        acc += tl.load(base + tl.load(HA + b * kH + i) * D, mask=mask, other=0.0).to(tl.float32)
    tl.store(M + (b * 4 + 0) * D + offs, acc / kH, mask=mask)
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    for i in range(kE):
        acc += tl.load(base + tl.load(EA + b * kE + i) * D, mask=mask, other=0.0).to(tl.float32)
    tl.store(M + (b * 4 + 1) * D + offs, acc / kE, mask=mask)
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    for i in range(kH):
        acc += tl.load(base + tl.load(HB + b * kH + i) * D, mask=mask, other=0.0).to(tl.float32)
    tl.store(M + (b * 4 + 2) * D + offs, acc / kH, mask=mask)
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    for i in range(kE):
        acc += tl.load(base + tl.load(EB + b * kE + i) * D, mask=mask, other=0.0).to(tl.float32)
    tl.store(M + (b * 4 + 3) * D + offs, acc / kE, mask=mask)


@triton.jit
def _dots(E, EA, EB, M, MN, NN, QK, QE, T, D, kE, BLOCK: tl.constexpr):
    # grid (2 + 2 kE, B): the long axis first (a GPU grid's second axis stops at 65535)
    r = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    ar = tl.arange(0, BLOCK)
    if r < 2:
        q = M + (b * 4 + 2 * r) * D
        k = q + D
        qq = tl.zeros([BLOCK], dtype=tl.float32)
        kk = tl.zeros([BLOCK], dtype=tl.float32)
        qk = tl.zeros([BLOCK], dtype=tl.float32)
        for d0 in range(0, D, BLOCK):
            offs = d0 + ar
            mask = offs < D
            a = tl.load(q + offs, mask=mask, other=0.0)
            c = tl.load(k + offs, mask=mask, other=0.0)
            qq += a * a
            kk += c * c
            qk += a * c
        tl.store(MN + b * 4 + 2 * r, tl.sqrt(tl.sum(qq, axis=0)))
        tl.store(MN + b * 4 + 2 * r + 1, tl.sqrt(tl.sum(kk, axis=0)))
        tl.store(QK + b * 2 + r, tl.sum(qk, axis=0))
    else:
        t = (r - 2) // kE
        j = (r - 2) % kE
        q = M + (b * 4 + 2 * t) * D
        if t == 0:
            row = tl.load(EB + b * kE + j)
        else:
            row = tl.load(EA + b * kE + j)
        e = E + (b * T + row) * D
        dot = tl.zeros([BLOCK], dtype=tl.float32)
        sq = tl.zeros([BLOCK], dtype=tl.float32)
        for d0 in range(0, D, BLOCK):
            offs = d0 + ar
            mask = offs < D
            v = tl.load(e + offs, mask=mask, other=0.0).to(tl.float32)
            dot += tl.load(q + offs, mask=mask, other=0.0) * v
            sq += v * v
        tl.store(QE + (b * 2 + t) * kE + j, tl.sum(dot, axis=0))
        tl.store(NN + (b * 2 + t) * kE + j, tl.sqrt(tl.sum(sq, axis=0)))


@triton.jit
def _loss(MN, NN, QK, QE, L, LSE, PV, kE, inv_tau, BLOCK_K: tl.constexpr):
    # per video: logits of both terms, log-sum-exp, lse - l_0 summed into PV[b]
    b = tl.program_id(0).to(tl.int64)
    j = tl.arange(0, BLOCK_K)          # j = 0: the positive, j >= 1: negative j - 1
    valid = j <= kE
    neg = (j >= 1) & valid
    total = 0.0
    for t in tl.static_range(2):
        nq = _clamp_eps(tl.load(MN + b * 4 + 2 * t))
        nk = _clamp_eps(tl.load(MN + b * 4 + 2 * t + 1))
        qk = tl.load(QK + b * 2 + t)
        qe = tl.load(QE + (b * 2 + t) * kE + (j - 1), mask=neg, other=0.0)
        nj = _clamp_eps(tl.load(NN + (b * 2 + t) * kE + (j - 1), mask=neg, other=1.0))
        l0 = qk / (nq * nk) * inv_tau
        lv = tl.where(j == 0, l0, qe / (nq * nj) * inv_tau)
        lm = tl.where(valid, lv, float("-inf"))
        mx = tl.max(lm, axis=0)
        s = tl.sum(tl.where(valid, tl.exp(lm - mx), 0.0), axis=0)
        lse = mx + tl.log(s)
        tl.store(L + (b * 2 + t) * (kE + 1) + j, lv, mask=valid)
        tl.store(LSE + b * 2 + t, lse)
        total += lse - l0
    tl.store(PV + b, total)


@triton.jit
def _scalars(G, MN, NN, L, LSE, W, BETA, SC, B, kE, tau, BLOCK_K: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    j = tl.arange(0, BLOCK_K)
    m = j < kE
    gt = tl.load(G).to(tl.float32) / B / tau
    for t in tl.static_range(2):
        lse = tl.load(LSE + b * 2 + t)
        l0 = tl.load(L + (b * 2 + t) * (kE + 1))
        lj = tl.load(L + (b * 2 + t) * (kE + 1) + 1 + j, mask=m, other=0.0)
        aj = tl.where(m, gt * tl.exp(lj - lse), 0.0)
        cj = tau * lj
        raw = tl.load(NN + (b * 2 + t) * kE + j, mask=m, other=1.0)
        nj = _clamp_eps(raw)
        tl.store(W + (b * 2 + t) * kE + j, aj / nj, mask=m)
        big = ~(raw < 1e-12)
        tl.store(BETA + (b * 2 + t) * kE + j, tl.where(big, aj * cj / (nj * nj), 0.0), mask=m)
        a0 = gt * (tl.exp(l0 - lse) - 1.0)
        c0 = tau * l0
        gamma = a0 * c0 + tl.sum(aj * cj, axis=0)
        rq = tl.load(MN + b * 4 + 2 * t)
        rk = tl.load(MN + b * 4 + 2 * t + 1)
        sc = SC + (b * 2 + t) * 5
        tl.store(sc, a0)
        tl.store(sc + 1, tl.where(rq < 1e-12, 0.0, gamma))
        tl.store(sc + 2, tl.where(rk < 1e-12, 0.0, a0 * c0))
        tl.store(sc + 3, _clamp_eps(rq))
        tl.store(sc + 4, _clamp_eps(rk))


@triton.jit
def _scatter(E, HA, EA, HB, EB, M, W, BETA, SC, O, T, D, kE, kH, BLOCK: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < D
    Eb = E + b * T * D + offs
    Ob = O + b * T * D + offs
    for t in tl.static_range(2):
        sc = SC + (b * 2 + t) * 5
        a0 = tl.load(sc)
        gq = tl.load(sc + 1)
        gk = tl.load(sc + 2)
        nq = tl.load(sc + 3)
        nk = tl.load(sc + 4)
        qn = tl.load(M + (b * 4 + 2 * t) * D + offs, mask=mask, other=0.0) / nq
        kn = tl.load(M + (b * 4 + 2 * t + 1) * D + offs, mask=mask, other=0.0) / nk
        S = tl.zeros([BLOCK], dtype=tl.float32)
        for j in range(kE):
            if t == 0:
                row = tl.load(EB + b * kE + j)
            else:
                row = tl.load(EA + b * kE + j)
            wj = tl.load(W + (b * 2 + t) * kE + j)
            bj = tl.load(BETA + (b * 2 + t) * kE + j)
            v = tl.load(Eb + row * D, mask=mask, other=0.0).to(tl.float32)
            S += wj * v
            tl.atomic_add(Ob + row * D, wj * qn - bj * v, mask=mask, sem="relaxed")
        dq = (a0 * kn + S - gq * qn) / (nq * kH)
        dk = (a0 * qn - gk * kn) / (nk * kE)
        for i in range(kH):
            if t == 0:
                row = tl.load(HA + b * kH + i)
            else:
                row = tl.load(HB + b * kH + i)
            tl.atomic_add(Ob + row * D, dq, mask=mask, sem="relaxed")
        for i in range(kE):
            if t == 0:
                row = tl.load(EA + b * kE + i)
            else:
                row = tl.load(EB + b * kE + i)
            tl.atomic_add(Ob + row * D, dk, mask=mask, sem="relaxed")


def _prep(emb, ea, eb, ha, hb):
    if emb.dtype == torch.float64:
        raise TypeError("snico_loss (triton): float64 is not supported; use backend='native' or 'reference'")
    return emb.contiguous(), ea.contiguous(), eb.contiguous(), ha.contiguous(), hb.contiguous()


def snico_fwd(emb, ea, eb, ha, hb, tau):
    emb, ea, eb, ha, hb = _prep(emb, ea, eb, ha, hb)
    B, T, D = emb.shape
    kE, kH = ea.shape[1], ha.shape[1]
    f32 = dict(dtype=torch.float32, device=emb.device)
    means = torch.empty((B, 4, D), **f32)
    mean_norms = torch.empty((B, 4), **f32)
    neg_norms = torch.empty((B, 2, kE), **f32)
    logits = torch.empty((B, 2, 1 + kE), **f32)
    lse = torch.empty((B, 2), **f32)
    qk = torch.empty((B, 2), **f32)
    qe = torch.empty((B, 2, kE), **f32)
    per_video = torch.empty((B,), **f32)
    _means[(B, triton.cdiv(D, BLOCK_D))](emb, ha, ea, hb, eb, means, T, D, kE, kH, BLOCK=BLOCK_D)
    _dots[(2 + 2 * kE, B)](emb, ea, eb, means, mean_norms, neg_norms, qk, qe, T, D, kE, BLOCK=BLOCK_D)
    _loss[(B,)](mean_norms, neg_norms, qk, qe, logits, lse, per_video, kE, 1.0 / tau,
                BLOCK_K=max(16, triton.next_power_of_2(kE + 1)))
    loss = (per_video.sum() / B).to(emb.dtype)
    return loss, means, mean_norms, neg_norms, logits, lse


def snico_bwd(grad, emb, ea, eb, ha, hb, means, mean_norms, neg_norms, logits, lse, tau):
    emb, ea, eb, ha, hb = _prep(emb, ea, eb, ha, hb)
    B, T, D = emb.shape
    kE, kH = ea.shape[1], ha.shape[1]
    f32 = dict(dtype=torch.float32, device=emb.device)
    means, mean_norms, neg_norms, logits, lse = (x.to(torch.float32).contiguous() for x in
                                                 (means, mean_norms, neg_norms, logits, lse))
    g = grad.reshape(1).to(torch.float32).contiguous()
    W = torch.empty((B, 2, kE), **f32)
    BETA = torch.empty((B, 2, kE), **f32)
    SC = torch.empty((B, 2, 5), **f32)
    out = torch.zeros((B, T, D), **f32)
    _scalars[(B,)](g, mean_norms, neg_norms, logits, lse, W, BETA, SC, B, kE, tau,
                   BLOCK_K=max(16, triton.next_power_of_2(kE)))
    _scatter[(B, triton.cdiv(D, BLOCK_D))](emb, ha, ea, hb, eb, means, W, BETA, SC, out, T, D, kE, kH,
                                           BLOCK=BLOCK_D)
    return out if emb.dtype == torch.float32 else out.to(emb.dtype)
