"""Triton kernels of snico_loss (COLA_SPEC 3): the algorithm of csrc/cpu/snico_loss.cpp (read
the derivation of the backward there), in the launches of csrc/cuda/snico_loss.cu:

    forward   _means (B, D/BLOCK_D) -> _dots (B * (2 + 2 k_easy/K_TILE),) -> _loss (B,) -> sum / B
    backward  _scalars (B,) -> _scatter (B, D/BLOCK_D)

Index sets are read K_TILE indices at a time, and the rows they point to as one
[K_TILE, BLOCK_D] block, so that a program waits for one index load and one row load per
K_TILE rows, not for two loads in series per row. Norms and dots do not overflow for large
embeddings (the scaled norm when the plain sums overflow, as the native kernels).

fp32 accumulation; fp32 / bf16 / fp16 embeddings on CUDA (fp32 only under the interpreter).
The scatter accumulates into an fp32 buffer with atomic adds, row by row: one program owns a
block of channels of one video, and its adds to a channel all come from the same thread, in
a fixed order (deterministic; a [K_TILE, BLOCK_D] atomic would spread one channel's adds
over several threads). The rows were just loaded as a block, so these reloads hit the cache.
Returns the gradient in emb's dtype. Saved tensors as the native op: means (B,4,D),
mean_norms (B,4), neg_norms (B,2,k_easy), logits (B,2,1+k_easy), lse (B,2), all float32.

Indices outside [0, T) are checked without a host sync: _means counts them into a small
per-device flag tensor, and every kernel clamps the indices it reads into [0, T), so a bad
index never reads or writes outside emb's video. raise_index_errors() reads the flag (a host
sync: the trainer calls it at its logging, every 10 steps; on a CPU tensor the wrapper calls it
at once) and raises a ValueError naming the count and T. The wrappers launch on emb's device.
Every grid axis but the first stays small (no 65535 limit on B).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import on_device

EPS = 1e-12
BLOCK_D = 128
K_TILE = 16


@triton.jit
def _clamp_eps(n):
    # NaN stays NaN: (NaN < eps) is False
    return tl.where(n < 1e-12, 1e-12, n)


@triton.jit
def _rows_in(I, ok, T):
    # the indices at I (masked by ok), clamped into [0, T): a bad one reads a row of the video,
    # never memory outside it (it was counted by _count_bad)
    rows = tl.load(I, mask=ok, other=0)
    return tl.minimum(tl.maximum(rows, 0), T - 1)


@triton.jit
def _count_bad(I, k, T, ERR, K_TILE: tl.constexpr):
    # ERR[0] += the number of indices I[0..k) outside [0, T); ERR[1] = T when there was one
    ark = tl.arange(0, K_TILE)
    for i0 in range(0, k, K_TILE):
        ok = i0 + ark < k
        rows = tl.load(I + i0 + ark, mask=ok, other=0)
        n = tl.sum((ok & ((rows < 0) | (rows >= T))).to(tl.int32), axis=0)
        if n > 0:
            tl.atomic_add(ERR, n)
            tl.store(ERR + 1, T)


@triton.jit
def _set_mean(Eb, I, k, T, D, offs, mask, BLOCK: tl.constexpr, K_TILE: tl.constexpr):
    # mean over the rows I[0..k) of the video at Eb, channels offs: K_TILE rows per block
    ark = tl.arange(0, K_TILE)
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    for i0 in range(0, k, K_TILE):
        ok = i0 + ark < k
        rows = _rows_in(I + i0 + ark, ok, T)
        v = tl.load(Eb + rows[:, None] * D + offs[None, :], mask=ok[:, None] & mask[None, :], other=0.0)
        acc += tl.sum(v.to(tl.float32), axis=0)
    return acc / k


@triton.jit
def _means(E, HA, EA, HB, EB, M, ERR, T, D, kE, kH, BLOCK: tl.constexpr, K_TILE: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < D
    Eb = E + b * T * D
    if tl.program_id(1) == 0:  # one program per video counts its bad indices
        _count_bad(HA + b * kH, kH, T, ERR, K_TILE)
        _count_bad(EA + b * kE, kE, T, ERR, K_TILE)
        _count_bad(HB + b * kH, kH, T, ERR, K_TILE)
        _count_bad(EB + b * kE, kE, T, ERR, K_TILE)
    tl.store(M + (b * 4 + 0) * D + offs, _set_mean(Eb, HA + b * kH, kH, T, D, offs, mask, BLOCK, K_TILE), mask=mask)
    tl.store(M + (b * 4 + 1) * D + offs, _set_mean(Eb, EA + b * kE, kE, T, D, offs, mask, BLOCK, K_TILE), mask=mask)
    tl.store(M + (b * 4 + 2) * D + offs, _set_mean(Eb, HB + b * kH, kH, T, D, offs, mask, BLOCK, K_TILE), mask=mask)
    tl.store(M + (b * 4 + 3) * D + offs, _set_mean(Eb, EB + b * kE, kE, T, D, offs, mask, BLOCK, K_TILE), mask=mask)


@triton.jit
def _overflowed(x):
    return tl.abs(x) == float("inf")


@triton.jit
def _rows_dot_over_norm(q, Er, ok, D, BLOCK: tl.constexpr, K_TILE: tl.constexpr):
    # For the K_TILE rows at the pointers Er (masked by ok) and the float32 vector q:
    # (q.e / max(|e|, eps), |e|) per row, as dot_over_norm in csrc/cpu/snico_loss.cpp: the
    # plain sums, recomputed on q and e divided by their largest magnitudes (the scaled norm)
    # when they overflow (embeddings of scale 1e20).
    ar = tl.arange(0, BLOCK)
    dot = tl.zeros([K_TILE, BLOCK], dtype=tl.float32)
    sq = tl.zeros([K_TILE, BLOCK], dtype=tl.float32)
    for d0 in range(0, D, BLOCK):
        offs = d0 + ar
        dm = offs < D
        a = tl.load(q + offs, mask=dm, other=0.0)
        v = tl.load(Er[:, None] + offs[None, :], mask=ok[:, None] & dm[None, :], other=0.0).to(tl.float32)
        dot += a[None, :] * v
        sq += v * v
    dot_r = tl.sum(dot, axis=1)
    sq_r = tl.sum(sq, axis=1)
    ne = tl.sqrt(sq_r)
    res = dot_r / _clamp_eps(ne)
    over = _overflowed(dot_r) | _overflowed(sq_r)
    if tl.sum(over.to(tl.int32), axis=0) > 0:
        mq = tl.zeros([BLOCK], dtype=tl.float32)
        me = tl.zeros([K_TILE, BLOCK], dtype=tl.float32)
        for d0 in range(0, D, BLOCK):
            offs = d0 + ar
            dm = offs < D
            mq = tl.maximum(mq, tl.abs(tl.load(q + offs, mask=dm, other=0.0)))
            v = tl.load(Er[:, None] + offs[None, :], mask=ok[:, None] & dm[None, :], other=0.0).to(tl.float32)
            me = tl.maximum(me, tl.abs(v))
        mq_s = tl.max(mq, axis=0)
        me_r = tl.max(me, axis=1)
        iq = tl.where(mq_s > 0, 1.0 / mq_s, 1.0)
        ie = tl.where(me_r > 0, 1.0 / me_r, 1.0)
        ds = tl.zeros([K_TILE, BLOCK], dtype=tl.float32)
        ss = tl.zeros([K_TILE, BLOCK], dtype=tl.float32)
        for d0 in range(0, D, BLOCK):
            offs = d0 + ar
            dm = offs < D
            a = tl.load(q + offs, mask=dm, other=0.0) * iq
            v = tl.load(Er[:, None] + offs[None, :], mask=ok[:, None] & dm[None, :], other=0.0).to(tl.float32)
            v = v * ie[:, None]
            ds += a[None, :] * v
            ss += v * v
        ne_s = me_r * tl.sqrt(tl.sum(ss, axis=1))
        res_s = tl.sum(ds, axis=1) * mq_s / (_clamp_eps(ne_s) * ie)
        ne = tl.where(over, ne_s, ne)
        res = tl.where(over, res_s, res)
    return res, ne


@triton.jit
def _dots(E, EA, EB, M, MN, NN, QK, QE, T, D, kE, BLOCK: tl.constexpr, K_TILE: tl.constexpr):
    # grid (B * R,), R = 2 + 2 * cdiv(kE, K_TILE) programs per video (one grid axis: no 65535
    # limit on B). r < 2: term r's mean norms and q.k / nk; then for each term, tiles of K_TILE
    # negatives: q.e_j / n_j and n_j. The loss kernel divides by nq (no product of two norms).
    R = 2 + 2 * tl.cdiv(kE, K_TILE)
    pid = tl.program_id(0).to(tl.int64)
    b = pid // R
    r = pid % R
    ark = tl.arange(0, K_TILE)
    if r < 2:
        q = M + (b * 4 + 2 * r) * D
        # row 0 of the tile: q itself, row 1: k (the two rows, one pass)
        Er = q + tl.where(ark == 1, D, 0).to(tl.int64)
        res, n = _rows_dot_over_norm(q, Er, ark < 2, D, BLOCK, K_TILE)
        nq = tl.sum(tl.where(ark == 0, n, 0.0), axis=0)
        nk = tl.sum(tl.where(ark == 1, n, 0.0), axis=0)
        qk_over_nk = tl.sum(tl.where(ark == 1, res, 0.0), axis=0)
        tl.store(MN + b * 4 + 2 * r, nq)
        tl.store(MN + b * 4 + 2 * r + 1, nk)
        tl.store(QK + b * 2 + r, qk_over_nk)
    else:
        nt = tl.cdiv(kE, K_TILE)
        t = (r - 2) // nt
        j = ((r - 2) % nt) * K_TILE + ark
        ok = j < kE
        q = M + (b * 4 + 2 * t) * D
        if t == 0:
            rows = _rows_in(EB + b * kE + j, ok, T)
        else:
            rows = _rows_in(EA + b * kE + j, ok, T)
        res, n = _rows_dot_over_norm(q, E + (b * T + rows) * D, ok, D, BLOCK, K_TILE)
        tl.store(QE + (b * 2 + t) * kE + j, res, mask=ok)
        tl.store(NN + (b * 2 + t) * kE + j, n, mask=ok)


@triton.jit
def _loss(MN, QK, QE, L, LSE, PV, kE, inv_tau, BLOCK_K: tl.constexpr):
    # per video: logits of both terms, log-sum-exp, lse - l_0 summed into PV[b]
    b = tl.program_id(0).to(tl.int64)
    j = tl.arange(0, BLOCK_K)          # j = 0: the positive, j >= 1: negative j - 1
    valid = j <= kE
    neg = (j >= 1) & valid
    total = 0.0
    for t in tl.static_range(2):
        nq = _clamp_eps(tl.load(MN + b * 4 + 2 * t))
        l0 = tl.load(QK + b * 2 + t) / nq * inv_tau
        qe = tl.load(QE + (b * 2 + t) * kE + (j - 1), mask=neg, other=0.0)
        lv = tl.where(j == 0, l0, qe / nq * inv_tau)
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
    # w_j = a_j / n_j, beta_j = [|e_j| >= eps] c_j / n_j (de_j = w_j (qn - beta_j e_j): no n_j^2,
    # which overflows for large embeddings), per term sc = {a_0, gq, gk, nq, nk}
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
        tl.store(BETA + (b * 2 + t) * kE + j, tl.where(big, cj / nj, 0.0), mask=m)
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
def _pick(x, ar, u):
    # element u of the 1-D tile x (ar = its arange): a register read, no memory access
    return tl.sum(tl.where(ar == u, x, tl.zeros_like(x)), axis=0)


@triton.jit
def _add_to_rows(Ob, I, k, T, D, offs, mask, val, K_TILE: tl.constexpr):
    # Ob[I[i]] += val for i < k: one load per K_TILE indices, then the adds row by row
    ark = tl.arange(0, K_TILE)
    for i0 in range(0, k, K_TILE):
        rows = _rows_in(I + i0 + ark, i0 + ark < k, T)
        for u in tl.static_range(K_TILE):
            row = _pick(rows, ark, u)
            tl.atomic_add(Ob + row * D + offs, val, mask=mask & (i0 + u < k), sem="relaxed")


@triton.jit
def _scatter(E, HA, EA, HB, EB, M, W, BETA, SC, O, T, D, kE, kH, BLOCK: tl.constexpr, K_TILE: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < D
    Eb = E + b * T * D
    Ob = O + b * T * D
    ark = tl.arange(0, K_TILE)
    for t in tl.static_range(2):
        sc = SC + (b * 2 + t) * 5
        a0 = tl.load(sc)
        gq = tl.load(sc + 1)
        gk = tl.load(sc + 2)
        nq = tl.load(sc + 3)
        nk = tl.load(sc + 4)
        qn = tl.load(M + (b * 4 + 2 * t) * D + offs, mask=mask, other=0.0) / nq
        kn = tl.load(M + (b * 4 + 2 * t + 1) * D + offs, mask=mask, other=0.0) / nk
        if t == 0:
            NEG = EB + b * kE
        else:
            NEG = EA + b * kE
        Wt = W + (b * 2 + t) * kE
        Bt = BETA + (b * 2 + t) * kE
        S = tl.zeros([BLOCK], dtype=tl.float32)
        for j0 in range(0, kE, K_TILE):
            ok = j0 + ark < kE
            rows = _rows_in(NEG + j0 + ark, ok, T)
            wj = tl.load(Wt + j0 + ark, mask=ok, other=0.0)
            v = tl.load(Eb + rows[:, None] * D + offs[None, :], mask=ok[:, None] & mask[None, :],
                        other=0.0).to(tl.float32)                      # [K_TILE, BLOCK]
            S += tl.sum(wj[:, None] * v, axis=0)
            bj = tl.load(Bt + j0 + ark, mask=ok, other=0.0)
            for u in tl.static_range(K_TILE):
                mu = mask & (j0 + u < kE)
                row = _pick(rows, ark, u)
                vu = tl.load(Eb + row * D + offs, mask=mu, other=0.0).to(tl.float32)  # a cache hit
                du = _pick(wj, ark, u) * (qn - _pick(bj, ark, u) * vu)
                tl.atomic_add(Ob + row * D + offs, du, mask=mu, sem="relaxed")
        dq = (a0 * kn + S - gq * qn) / (nq * kH)
        dk = (a0 * qn - gk * kn) / (nk * kE)
        if t == 0:
            _add_to_rows(Ob, HA + b * kH, kH, T, D, offs, mask, dq, K_TILE)
            _add_to_rows(Ob, EA + b * kE, kE, T, D, offs, mask, dk, K_TILE)
        else:
            _add_to_rows(Ob, HB + b * kH, kH, T, D, offs, mask, dq, K_TILE)
            _add_to_rows(Ob, EB + b * kE, kE, T, D, offs, mask, dk, K_TILE)


def _check(emb, ea, eb, ha, hb):
    """What the CUDA kernel asserts, as the ValueErrors of cola_fast.ops.snico_loss, without a
    host sync: a non-empty batch (the index range is checked by the kernels, see the module's
    docstring)."""
    if emb.dtype == torch.float64:
        raise TypeError("snico_loss (triton): float64 is not supported; use backend='native' or 'reference'")
    B, T, D = emb.shape
    if B == 0 or T == 0 or D == 0:
        raise ValueError(f"snico_loss: emb is empty, shape {tuple(emb.shape)}")
    if ea.shape[1] == 0 or ha.shape[1] == 0:
        raise ValueError(f"snico_loss: empty index sets, k_easy={ea.shape[1]} k_hard={ha.shape[1]}")


_INDEX_ERRORS: dict[torch.device, torch.Tensor] = {}  # per device: [count of bad indices, T of the last]


def _error_flag(device: torch.device) -> torch.Tensor:
    flag = _INDEX_ERRORS.get(device)
    if flag is None:
        flag = _INDEX_ERRORS[device] = torch.zeros(2, dtype=torch.int32, device=device)
    return flag


def raise_index_errors(device: torch.device | None = None) -> None:
    """Raise a ValueError if a launch since the last call was given indices outside [0, T)
    (on device, or on any device used so far), and clear the count. Reads the flag: a host
    sync, to be made where the caller syncs anyway."""
    for dev, flag in list(_INDEX_ERRORS.items()):
        if device is not None and dev != device:
            continue
        n, T = flag.tolist()
        if n:
            flag.zero_()
            raise ValueError(f"snico_loss (triton, {dev}): {n} indices outside [0, T={T}) since the last check; "
                             "the kernels clamped them into [0, T), so those losses and gradients are wrong")


def _prep(emb, ea, eb, ha, hb):
    return emb.contiguous(), ea.contiguous(), eb.contiguous(), ha.contiguous(), hb.contiguous()


def dots_programs(B: int, kE: int) -> int:
    """Programs of the _dots launch: 2 + 2 cdiv(kE, K_TILE) per video, on the grid's one axis."""
    return B * (2 + 2 * triton.cdiv(kE, K_TILE))


def snico_fwd(emb, ea, eb, ha, hb, tau):
    _check(emb, ea, eb, ha, hb)
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
    err = _error_flag(emb.device)
    with on_device(emb):
        _means[(B, triton.cdiv(D, BLOCK_D))](emb, ha, ea, hb, eb, means, err, T, D, kE, kH, BLOCK=BLOCK_D,
                                             K_TILE=K_TILE)
        _dots[(dots_programs(B, kE),)](emb, ea, eb, means, mean_norms, neg_norms, qk, qe, T, D, kE,
                                       BLOCK=BLOCK_D, K_TILE=K_TILE)
        _loss[(B,)](mean_norms, qk, qe, logits, lse, per_video, kE, 1.0 / tau,
                    BLOCK_K=max(16, triton.next_power_of_2(kE + 1)))
        loss = (per_video.sum() / B).to(emb.dtype)
    if emb.device.type == "cpu":  # no sync to save on a CPU: say it now
        raise_index_errors(emb.device)
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
    with on_device(emb):
        _scalars[(B,)](g, mean_norms, neg_norms, logits, lse, W, BETA, SC, B, kE, tau,
                       BLOCK_K=max(16, triton.next_power_of_2(kE)))
        _scatter[(B, triton.cdiv(D, BLOCK_D))](emb, ha, ea, hb, eb, means, W, BETA, SC, out, T, D, kE, kH,
                                               BLOCK=BLOCK_D, K_TILE=K_TILE)
    return out if emb.dtype == torch.float32 else out.to(emb.dtype)
