"""Triton kernels of temporal_conv_embed: ReLU(Conv1d(x) + bias) on channels-last x.

Implicit GEMM with shifted loads, no im2col buffer. Rows are the flat index r = b*T + t of
x (B*T, Cin) and y (B*T, Cout); tap k (shift s = k - K//2) reads row r + s, masked to zero
when t + s falls outside [0, T) (zero padding inside each video, nothing leaks across
videos). Accumulation in fp32 (fp64 for fp64 inputs); fp32 inputs use TF32 tensor cores on
the GPU when torch allows TF32 for its cuDNN convolutions (cola_fast.ops.temporal_conv_embed.
conv_allows_tf32; torch's default), "ieee" otherwise and always under the interpreter.

  forward  y[r, co]      = relu(bias[co] + sum_k sum_ci x[r+s_k, ci] W[co, ci, k])
  dx       dx[r, ci]     = sum_k sum_co g[r-s_k, co] W[co, ci, k]
  dW, db   dW[co, ci, k] = sum_r g[r, co] x[r+s_k, ci];   db[co] = sum_r g[r, co]
with g = (0 where y <= 0, else dy) recomputed on the fly from dy and the saved y in every kernel that
reads it (the ReLU mask is never materialised).

Weights are used as Wk (K, Cin, Cout), a small permuted copy per call.
On the GPU the kernels are autotuned over several block shapes, keyed on the channels, K, the
dot precision, the flags and the power-of-2 bucket of the row count N = B*T (ROWS_BUCKET), so
that videos of every length do not each start a new autotuning; configurations that need more
shared memory than the device has are pruned before compiling (_fits_shared_memory); under the interpreter (TRITON_INTERPRET=1), and when
COLA_FAST_TRITON_AUTOTUNE=0 (set by the tests: compile time stays bounded), a single
configuration is used. Launches run on x's device (on_device).
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from . import on_device

_INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
_ONE_CONFIG = os.environ.get("COLA_FAST_TRITON_AUTOTUNE", "1") == "0"
# what a tuned configuration is reused for (names a kernel lacks are left out by the autotuner;
# the tensors' dtypes are part of the key anyway)
_KEY = ["Cin", "Cout", "K", "ROWS_BUCKET", "PREC", "ACC_F64", "HAS_BIAS", "HAS_DB"]


def rows_bucket(n: int) -> int:
    """The autotuning key of a row count: the next power of 2 (a new tuning per doubling)."""
    return triton.next_power_of_2(max(int(n), 1))


def _configs(kind: str):
    if _INTERPRET:
        return [triton.Config({"BM": 16, "BN": 16, "BK": 16}, num_warps=1, num_stages=1)]
    if _ONE_CONFIG:  # fits every dtype's shared memory on sm_80 and sm_90 (fp64 included)
        return [triton.Config({"BM": 64, "BN": 64, "BK": 32}, num_warps=4, num_stages=2)]
    cfgs = []
    for bm, bn, bk, w, s in [(128, 128, 32, 8, 3), (128, 128, 32, 4, 4), (128, 64, 32, 4, 4),
                             (64, 128, 32, 4, 4), (128, 256, 32, 8, 3), (64, 64, 64, 4, 3),
                             (128, 128, 64, 8, 3)]:
        cfgs.append(triton.Config({"BM": bm, "BN": bn, "BK": bk}, num_warps=w, num_stages=s))
    return cfgs


def prune_to_fit(configs, element_size: int, limit: int):
    """The configurations whose pipelined operand tiles, stages x (BM x BK + BK x BN) elements,
    fit in limit bytes of shared memory (the smallest one if none does)."""
    def need(c):
        m = c.kwargs
        return c.num_stages * (m["BM"] * m["BK"] + m["BK"] * m["BN"]) * element_size
    fit = [c for c in configs if need(c) <= limit]
    return fit or [min(configs, key=need)]


def _fits_shared_memory(configs, named_args, **kwargs):
    """early_config_prune: before compiling, drop the configurations that need more shared
    memory than the device has (the fp64 ones at 128x256 ask for 288 KiB; an H100 has 227)."""
    t = next(v for v in named_args.values() if isinstance(v, torch.Tensor))
    if len(configs) <= 1 or t.device.type != "cuda":
        return configs
    limit = torch.cuda.get_device_properties(t.device).shared_memory_per_block_optin
    return prune_to_fit(configs, t.element_size(), limit)


_PRUNE = {"early_config_prune": _fits_shared_memory}


@triton.autotune(configs=_configs("fwd"), key=_KEY, prune_configs_by=_PRUNE)
@triton.jit
def _fwd_kernel(x_ptr, w_ptr, b_ptr, y_ptr, N, T, Cin, Cout, ROWS_BUCKET,
                K: tl.constexpr, HAS_BIAS: tl.constexpr, PREC: tl.constexpr, ACC_F64: tl.constexpr,
                BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    rows = pid_m * BM + tl.arange(0, BM)
    cols = pid_n * BN + tl.arange(0, BN)
    t = rows % T
    row_ok = rows < N
    col_ok = cols < Cout
    acc_t = tl.float64 if ACC_F64 else tl.float32
    acc = tl.zeros((BM, BN), dtype=acc_t)
    P: tl.constexpr = K // 2
    for k in range(K):
        s = k - P
        src_ok = row_ok & (t + s >= 0) & (t + s < T)
        src = (rows + s).to(tl.int64)
        for c0 in range(0, Cin, BK):
            ci = c0 + tl.arange(0, BK)
            ci_ok = ci < Cin
            a = tl.load(x_ptr + src[:, None] * Cin + ci[None, :], mask=src_ok[:, None] & ci_ok[None, :], other=0.0)
            w = tl.load(w_ptr + (k * Cin + ci[:, None]).to(tl.int64) * Cout + cols[None, :],
                        mask=ci_ok[:, None] & col_ok[None, :], other=0.0)
            acc += tl.dot(a, w, input_precision=PREC, out_dtype=acc_t)
    if HAS_BIAS:
        bias = tl.load(b_ptr + cols, mask=col_ok, other=0.0).to(acc_t)
        acc += bias[None, :]
    acc = tl.maximum(acc, 0.0, propagate_nan=tl.PropagateNan.ALL)  # NaN stays NaN, as in torch's relu
    tl.store(y_ptr + rows.to(tl.int64)[:, None] * Cout + cols[None, :], acc.to(y_ptr.dtype.element_ty),
             mask=row_ok[:, None] & col_ok[None, :])


@triton.autotune(configs=_configs("dx"), key=_KEY, prune_configs_by=_PRUNE)
@triton.jit
def _dx_kernel(dy_ptr, y_ptr, w_ptr, dx_ptr, N, T, Cin, Cout, ROWS_BUCKET,
               K: tl.constexpr, PREC: tl.constexpr, ACC_F64: tl.constexpr,
               BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    # dx[r, ci] = sum_k sum_co g[r - s_k, co] * W[co, ci, k]
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    rows = pid_m * BM + tl.arange(0, BM)
    ci = pid_n * BN + tl.arange(0, BN)
    t = rows % T
    row_ok = rows < N
    ci_ok = ci < Cin
    acc_t = tl.float64 if ACC_F64 else tl.float32
    acc = tl.zeros((BM, BN), dtype=acc_t)
    P: tl.constexpr = K // 2
    for k in range(K):
        s = k - P
        src_ok = row_ok & (t - s >= 0) & (t - s < T)
        src = (rows - s).to(tl.int64)
        for c0 in range(0, Cout, BK):
            co = c0 + tl.arange(0, BK)
            co_ok = co < Cout
            m = src_ok[:, None] & co_ok[None, :]
            off = src[:, None] * Cout + co[None, :]
            dy = tl.load(dy_ptr + off, mask=m, other=0.0)
            yv = tl.load(y_ptr + off, mask=m, other=0.0)
            g = tl.where(yv <= 0, tl.zeros_like(dy), dy)
            # W[co, ci, k] from the (K, Cin, Cout) copy: tile (BK co, BN ci)
            w = tl.load(w_ptr + (k * Cin + ci[None, :]).to(tl.int64) * Cout + co[:, None],
                        mask=co_ok[:, None] & ci_ok[None, :], other=0.0)
            acc += tl.dot(g, w, input_precision=PREC, out_dtype=acc_t)
    tl.store(dx_ptr + rows.to(tl.int64)[:, None] * Cin + ci[None, :], acc.to(dx_ptr.dtype.element_ty),
             mask=row_ok[:, None] & ci_ok[None, :])


@triton.autotune(configs=_configs("dw"), key=_KEY, prune_configs_by=_PRUNE)
@triton.jit
def _dw_kernel(dy_ptr, y_ptr, x_ptr, dw_ptr, db_ptr, N, T, Cin, Cout, ROWS_BUCKET,
               K: tl.constexpr, HAS_DB: tl.constexpr, PREC: tl.constexpr, ACC_F64: tl.constexpr,
               BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    # dW[co, ci, k] = sum_r g[r, co] * x[r + s_k, ci]; grid (co blocks, ci blocks, K).
    # db[co] = sum_r g[r, co], written by the programs of the centre tap and ci block 0.
    pid_co = tl.program_id(0)
    pid_ci = tl.program_id(1)
    k = tl.program_id(2)
    P: tl.constexpr = K // 2
    s = k - P
    co = pid_co * BM + tl.arange(0, BM)
    ci = pid_ci * BN + tl.arange(0, BN)
    co_ok = co < Cout
    ci_ok = ci < Cin
    acc_t = tl.float64 if ACC_F64 else tl.float32
    acc = tl.zeros((BM, BN), dtype=acc_t)
    gsum = tl.zeros((BM,), dtype=acc_t)
    for r0 in range(0, N, BK):
        r = r0 + tl.arange(0, BK)
        t = r % T
        ok = (r < N) & (t + s >= 0) & (t + s < T)
        r64 = r.to(tl.int64)
        m = ok[:, None] & co_ok[None, :]
        off = r64[:, None] * Cout + co[None, :]
        dy = tl.load(dy_ptr + off, mask=m, other=0.0)
        yv = tl.load(y_ptr + off, mask=m, other=0.0)
        g = tl.where(yv <= 0, tl.zeros_like(dy), dy)              # (BK rows, BM co)
        xv = tl.load(x_ptr + (r64 + s)[:, None] * Cin + ci[None, :], mask=ok[:, None] & ci_ok[None, :],
                     other=0.0)                                  # (BK rows, BN ci)
        acc += tl.dot(tl.trans(g), xv, input_precision=PREC, out_dtype=acc_t)
        if HAS_DB:
            gsum += tl.sum(g.to(acc_t), axis=0)
    tl.store(dw_ptr + (co.to(tl.int64)[:, None] * Cin + ci[None, :]) * K + k, acc.to(dw_ptr.dtype.element_ty),
             mask=co_ok[:, None] & ci_ok[None, :])
    if HAS_DB:
        if (k == P) & (pid_ci == 0):
            tl.store(db_ptr + co, gsum.to(db_ptr.dtype.element_ty), mask=co_ok)


def _precision(dtype: torch.dtype, device: torch.device) -> str:
    from cola_fast.ops import module

    if dtype == torch.float32 and device.type == "cuda" and not _INTERPRET and module("temporal_conv_embed").conv_allows_tf32():
        return "tf32"
    return "ieee"


def _wk(weight: torch.Tensor) -> torch.Tensor:
    return weight.permute(2, 1, 0).contiguous()  # (K, Cin, Cout)


def forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    B, T, Cin = x.shape
    Cout, _, K = weight.shape
    x = x.contiguous()
    y = torch.empty((B, T, Cout), device=x.device, dtype=x.dtype)
    N = B * T
    if N == 0 or Cout == 0:
        return y
    wk = _wk(weight)
    b = bias.contiguous() if bias is not None else wk  # dummy pointer when no bias
    grid = lambda meta: (triton.cdiv(N, meta["BM"]), triton.cdiv(Cout, meta["BN"]))  # noqa: E731
    with on_device(x):
        _fwd_kernel[grid](x, wk, b, y, N, T, Cin, Cout, rows_bucket(N), K=K, HAS_BIAS=bias is not None,
                          PREC=_precision(x.dtype, x.device), ACC_F64=x.dtype == torch.float64)
    return y


def backward(grad_out: torch.Tensor, out: torch.Tensor, x: torch.Tensor, weight: torch.Tensor,
             output_mask) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    B, T, Cin = x.shape
    Cout, _, K = weight.shape
    N = B * T
    need_dx, need_dw, need_db = (bool(v) for v in output_mask)
    dx = torch.empty_like(x, memory_format=torch.contiguous_format) if need_dx else x.new_empty(0)
    dw = torch.empty_like(weight, memory_format=torch.contiguous_format) if need_dw else weight.new_empty(0)
    db = weight.new_empty(Cout if need_db else 0)
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    if N == 0 or Cin == 0 or Cout == 0:
        for t, need in ((dx, need_dx), (dw, need_dw)):
            if need:
                t.zero_()
        if need_db:  # Cin = 0: the forward was ReLU(bias), db is the masked sum of dy
            db.copy_(grad_out.masked_fill(out <= 0, 0).sum(dim=(0, 1), dtype=acc))
        return dx, dw, db
    dy = grad_out.contiguous()
    y = out.contiguous()
    prec = _precision(x.dtype, x.device)
    f64 = x.dtype == torch.float64
    with on_device(x):
        if need_dx:
            wk = _wk(weight)
            grid = lambda meta: (triton.cdiv(N, meta["BM"]), triton.cdiv(Cin, meta["BN"]))  # noqa: E731
            _dx_kernel[grid](dy, y, wk, dx, N, T, Cin, Cout, rows_bucket(N), K=K, PREC=prec, ACC_F64=f64)
        if need_dw:
            grid = lambda meta: (triton.cdiv(Cout, meta["BM"]), triton.cdiv(Cin, meta["BN"]), K)  # noqa: E731
            _dw_kernel[grid](dy, y, x.contiguous(), dw, db if need_db else dw, N, T, Cin, Cout, rows_bucket(N),
                             K=K, HAS_DB=need_db, PREC=prec, ACC_F64=f64)
        elif need_db:  # bias alone needs a gradient (rare): not worth a kernel of its own
            db.copy_(dy.masked_fill(y <= 0, 0).sum(dim=(0, 1), dtype=acc))
    return dx, dw, db
