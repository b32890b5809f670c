"""Triton kernel of mine_snippets (COLA_SPEC 2.1-2.2): one program per video.

The whole row lives in one block of BLOCK = next_power_of_2(T) lanes:
- values are mapped to order-preserving int32 keys (NaN largest as in torch.sort, -0 == +0);
- max over t: a max of keys (NaN propagates as in torch.max);
- median: tl.sort of the keys (ascending, padding at +inf), the two middle keys decoded back
  to values, med = 0.5 * (lo + hi) rounded to the input dtype like the reference;
- bin = a > med and the erosion / dilation windows by shifted loads (2 min(M, T-1) + 1 of them), scipy
  semantics (outside [0, T) counts as 0);
- each top-k: one tl.sort of int64 composites (~key << 32 | t), ascending, which orders by
  value descending and, for equal values, lower index first (the spec's rule); the first k
  lanes hold the answer.
Values are computed in float32 and rounded to the input dtype after every operation, which
reproduces the reference's float16 / bfloat16 arithmetic exactly.

Limits: float16, bfloat16 and float32 (float64 goes to the native or reference backend; a
64-bit value key does not pack with an index into one sort key), T <= MAX_T = 2048: a row
lives in registers, and at BLOCK 8192 (16 warps) the sorts spill and one compile takes about
two minutes (sm_90), so longer rows go to the native kernel ("auto" does not offer Triton there).
The integer arguments are not specialised (do_not_specialize): Triton would otherwise compile
again for each pattern of "== 1" and "divisible by 16" among T, the counts and the windows.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import on_device

MAX_T = 2048
DTYPES = (torch.float16, torch.bfloat16, torch.float32)

_I32_MAX: tl.constexpr = tl.constexpr(0x7FFFFFFF)  # a global read by @triton.jit code must be constexpr


@triton.jit
def _key(v):
    """float32 -> int32 key, monotone in the value; NaN -> INT32_MAX, -0 -> 0."""
    bits = v.to(tl.int32, bitcast=True)
    mag = bits & 0x7FFFFFFF
    key = tl.where(bits < 0, bits ^ 0x7FFFFFFF, bits)
    key = tl.where(mag == 0, 0, key)
    key = tl.where(mag > 0x7F800000, 0x7FFFFFFF, key)
    return key


@triton.jit
def _value(key):
    """Inverse of _key (NaN key -> a NaN)."""
    bits = tl.where(key < 0, key ^ 0x7FFFFFFF, key)
    return bits.to(tl.float32, bitcast=True)


@triton.jit
def _rnd(x, DT: tl.constexpr):
    """Round a float32 result to the input dtype (exact no-op for float32)."""
    return x.to(DT).to(tl.float32)


@triton.jit
def _topk_store(v, offs, T, k, out_ptr, BLOCK: tl.constexpr):
    key = _key(v)
    comp = ((-1 - key).to(tl.int64) << 32) | offs.to(tl.int64)
    comp = tl.where(offs < T, comp, tl.full([BLOCK], 0x7FFFFFFFFFFFFFFF, tl.int64))
    comp = tl.sort(comp)
    idx = comp - ((comp >> 32) << 32)
    tl.store(out_ptr + offs, idx, mask=offs < k)


@triton.jit(do_not_specialize=["T", "k_easy", "k_hard", "m", "M", "cm", "cM", "DR"])
def _mine_kernel(a_ptr, keep_ptr, ea_ptr, eb_ptr, ha_ptr, hb_ptr, T, k_easy, k_hard, m, M, cm, cM, DR,
                 BLOCK: tl.constexpr):
    DT: tl.constexpr = a_ptr.dtype.element_ty
    pid = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK)
    valid = offs < T
    row = a_ptr + pid * T
    a = tl.load(row + offs, mask=valid, other=0.0).to(tl.float32)
    kp = tl.load(keep_ptr + pid * T + offs, mask=valid, other=0.0).to(tl.float32)
    ka = _key(a)

    # 2.1 easy mining
    kmax = tl.max(tl.where(valid, ka, -_I32_MAX - 1), axis=0)
    mx = _value(kmax)
    _topk_store(_rnd(a * kp, DT), offs, T, k_easy, ea_ptr + pid * k_easy, BLOCK)
    inv = _rnd(mx - a, DT)
    _topk_store(_rnd(inv * kp, DT), offs, T, k_easy, eb_ptr + pid * k_easy, BLOCK)

    # 2.2 median: ascending keys, padding last
    sk = tl.sort(tl.where(valid, ka, _I32_MAX))
    lo = (T - 1) // 2
    hi = T // 2
    klo = tl.sum(tl.where(offs == lo, sk, 0), axis=0)
    khi = tl.sum(tl.where(offs == hi, sk, 0), axis=0)
    med = _rnd(0.5 * _rnd(_value(klo) + _value(khi), DT), DT)
    kmed = _key(med)

    # erosion / dilation window counts over bin = a > med
    c_em = tl.zeros([BLOCK], tl.int32)
    c_eM = tl.zeros([BLOCK], tl.int32)
    c_dm = tl.zeros([BLOCK], tl.int32)
    c_dM = tl.zeros([BLOCK], tl.int32)
    for d in range(-DR, DR + 1):  # DR = min(M, T-1): farther offsets land outside the row
        pos = offs + d
        ok = (pos >= 0) & (pos < T)
        x = tl.load(row + pos, mask=ok, other=0.0).to(tl.float32)
        kx = _key(x)
        b = (ok & (kx > kmed) & (kx != _I32_MAX)).to(tl.int32)
        c_em += tl.where((d >= -cm) & (d <= m - 1 - cm), b, 0)
        c_eM += tl.where((d >= -cM) & (d <= M - 1 - cM), b, 0)
        c_dm += tl.where((d >= -(m - 1 - cm)) & (d <= cm), b, 0)
        c_dM += tl.where((d >= -(M - 1 - cM)) & (d <= cM), b, 0)
    inner = (c_em == m).to(tl.float32) - (c_eM == M).to(tl.float32)
    outer = (c_dM > 0).to(tl.float32) - (c_dm > 0).to(tl.float32)
    _topk_store(_rnd(a * inner, DT), offs, T, k_hard, ha_ptr + pid * k_hard, BLOCK)
    _topk_store(_rnd(a * outer, DT), offs, T, k_hard, hb_ptr + pid * k_hard, BLOCK)


def mine_snippets(actionness: torch.Tensor, keep: torch.Tensor, k_easy: int, k_hard: int, m: int, M: int):
    """(EA, EB, HA, HB) for contiguous (B,T) actionness and keep of the same dtype (checked by
    cola_fast.ops.mine_snippets; re-checked here for direct callers)."""
    if actionness.dtype not in DTYPES:
        raise TypeError(f"mine_snippets (triton): dtype {actionness.dtype} is not supported "
                        "(float16, bfloat16, float32); use backend='native' or 'reference'")
    if actionness.dim() != 2 or keep.shape != actionness.shape or keep.dtype != actionness.dtype:
        raise ValueError("mine_snippets (triton): need (B,T) actionness and keep of the same shape and dtype")
    B, T = actionness.shape
    if T > MAX_T:
        raise ValueError(f"mine_snippets (triton): T={T} exceeds the kernel's limit MAX_T={MAX_T}; "
                         "use backend='native'")
    if not (0 <= k_easy <= T and 0 <= k_hard <= T and 1 <= m < M and T >= 1):
        raise ValueError(f"mine_snippets (triton): bad k_easy={k_easy}, k_hard={k_hard}, m={m}, M={M} for T={T}")
    # windows longer than 2T+2 give the masks of a 2T+2 window (erosion: never all inside the
    # row; dilation: always the whole row), as in the native kernels; keeps m, M within int32
    m, M = min(m, 2 * T + 2), min(M, 2 * T + 2)
    a = actionness.contiguous()
    kp = keep.contiguous()
    opts = dict(dtype=torch.int64, device=a.device)
    ea = torch.empty((B, k_easy), **opts)
    eb = torch.empty((B, k_easy), **opts)
    ha = torch.empty((B, k_hard), **opts)
    hb = torch.empty((B, k_hard), **opts)
    if B == 0:
        return ea, eb, ha, hb
    BLOCK = max(16, triton.next_power_of_2(T))
    num_warps = 4 if BLOCK <= 1024 else 8
    with on_device(a):
        _mine_kernel[(B,)](a, kp, ea, eb, ha, hb, T, k_easy, k_hard, m, M, m // 2, M // 2, min(M, T - 1),
                           BLOCK=BLOCK, num_warps=num_warps)
    return ea, eb, ha, hb
