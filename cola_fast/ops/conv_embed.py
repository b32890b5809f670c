"""temporal_conv_embed: channels-last Conv1d + bias + ReLU (the CoLA embedding).

    y[b, t, :] = ReLU(bias + sum_k W[:, :, k] @ x[b, t + k - K//2, :])     (zero padding
                                                                            inside each video)

Backends (see cola_fast.ops._backend):
  reference  torch conv1d + ReLU with the (B,T,C) <-> (B,C,T) permutes (cola_fast.reference)
  native     the compiled op torch.ops.cola_fast.temporal_conv_embed: C++ CPU kernel
             (float32/float64, implicit GEMM through BLAS on shifted row views) and CUDA
             kernel (WMMA implicit GEMM: bf16/fp16, tf32 for float32 when torch lets
             its cuDNN convolutions use TF32 (conv_allows_tf32 below),
             float64 exact)
  triton     kernels/temporal_conv_embed.py through the custom op
             cola_fast_triton::temporal_conv_embed (GPU, or CPU under TRITON_INTERPRET=1)

The backward is fused: the ReLU mask is applied once, then dx, dweight and dbias; the
gradients that autograd does not ask for are not computed. The mask is torch's
threshold_backward: zero gradient where out <= 0 (a pre-activation of exactly 0 included),
the gradient passes everywhere else, a NaN output included (every backend, tested against
torch in tests/test_temporal_conv_embed.py).

Empty dimensions (every backend, the reference included): B=0 or T=0 gives an empty
(B,T,Cout) output and zero gradients; Cout=0 an empty (B,T,0) output; Cin=0 a conv over no
channels, i.e. ReLU(bias) at every step (zeros without bias), with db the masked sum of dy.

Autocast: on CUDA the inputs are cast to the autocast dtype (bf16 / fp16) and the kernels
accumulate in fp32. On the CPU the native kernel computes in float32 only: under CPU
autocast (bf16) the inputs are cast to float32 and the output stays float32; plain bf16 /
fp16 CPU tensors are computed in float32 and the result is cast back to their dtype.
"""
from __future__ import annotations

import torch

from .. import reference
from ._backend import resolve

OP = "temporal_conv_embed"
_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def conv_allows_tf32() -> bool:
    """Whether torch lets its own cuDNN convolutions use TF32 for float32: since torch 2.9 the
    per-operation precision of cuDNN conv (torch.backends.cudnn.conv.fp32_precision, "none"
    inheriting from torch.backends.cudnn and torch.backends), before that the legacy
    torch.backends.cudnn.allow_tf32. Reading the legacy flag on a newer torch raises once the
    conv and RNN precisions differ (e.g. after cudnn.conv.fp32_precision = "ieee")."""
    get = getattr(torch._C, "_get_fp32_precision_getter", None)
    if get is not None:
        return get("cuda", "conv") == "tf32"
    return bool(torch.backends.cudnn.allow_tf32)


def _validate(x, weight, bias) -> None:
    for name, t in (("x", x), ("weight", weight)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"temporal_conv_embed: {name} must be a torch.Tensor, got {type(t).__name__}")
    if bias is not None and not isinstance(bias, torch.Tensor):
        raise TypeError(f"temporal_conv_embed: bias must be a torch.Tensor or None, got {type(bias).__name__}")
    if x.dim() != 3:
        raise ValueError(f"temporal_conv_embed: x must be (B,T,Cin), got shape {tuple(x.shape)}")
    if weight.dim() != 3:
        raise ValueError(f"temporal_conv_embed: weight must be (Cout,Cin,K) like nn.Conv1d's, "
                         f"got shape {tuple(weight.shape)}")
    cout, cin, k = weight.shape
    if k % 2 != 1:
        raise ValueError(f"temporal_conv_embed: kernel size K must be odd (padding K//2), got K={k}")
    if cin != x.shape[2]:
        raise ValueError(f"temporal_conv_embed: weight has Cin={cin} but x {tuple(x.shape)} has Cin={x.shape[2]}")
    if bias is not None and (bias.dim() != 1 or bias.shape[0] != cout):
        raise ValueError(f"temporal_conv_embed: bias must be (Cout,)=({cout},), got shape {tuple(bias.shape)}")
    tensors = [("x", x), ("weight", weight)] + ([("bias", bias)] if bias is not None else [])
    for name, t in tensors:
        if t.dtype not in _FLOATS:
            raise TypeError(f"temporal_conv_embed: {name} must be a floating tensor, got {t.dtype}")
        if t.device != x.device:
            raise ValueError(f"temporal_conv_embed: {name} is on device {t.device} but x is on device {x.device}")
    if not torch.is_autocast_enabled(x.device.type):
        for name, t in tensors[1:]:
            if t.dtype != x.dtype:
                raise TypeError(f"temporal_conv_embed: {name} dtype {t.dtype} != x dtype {x.dtype} "
                                "(cast them, or run under torch.autocast)")


# --------------------------------------------------------------------------------------
# native: torch.ops.cola_fast.temporal_conv_embed (schema in csrc/ops.cpp)
# --------------------------------------------------------------------------------------
def _bwd_fake(grad_out, out, x, weight, output_mask):
    # masked-out gradients come back as distinct empty (0,) tensors (no aliasing)
    return (x.new_empty(x.shape if output_mask[0] else (0,)),
            weight.new_empty(weight.shape if output_mask[1] else (0,)),
            weight.new_empty(weight.shape[0] if output_mask[2] else 0))


def _setup_context(ctx, inputs, output):
    x, weight, bias = inputs
    ctx.save_for_backward(x, weight, output)
    ctx.has_bias = bias is not None


def _make_backward(bwd_op):
    def backward(ctx, grad_out):
        x, weight, out = ctx.saved_tensors
        need = ctx.needs_input_grad
        mask = [bool(need[0]), bool(need[1]), bool(ctx.has_bias and need[2])]
        if not any(mask):
            return None, None, None
        dx, dw, db = bwd_op(grad_out, out, x, weight, mask)
        return (dx if mask[0] else None, dw if mask[1] else None, db if mask[2] else None)
    return backward


def _register_native() -> bool:
    """Fake kernels and autograd for the compiled op, registered once at import (outside any
    tracing) when the extension is built."""
    try:
        from cola_fast import _C  # noqa: F401  (loads the library: schemas and kernels)
    except ImportError:
        return False
    if not hasattr(torch.ops.cola_fast, "temporal_conv_embed"):
        return False

    @torch.library.register_fake("cola_fast::temporal_conv_embed")
    def _fwd_fake(x, weight, bias):
        return x.new_empty((x.shape[0], x.shape[1], weight.shape[0]))

    torch.library.register_fake("cola_fast::temporal_conv_embed_backward")(_bwd_fake)
    torch.library.register_autograd(
        "cola_fast::temporal_conv_embed",
        _make_backward(lambda *a: torch.ops.cola_fast.temporal_conv_embed_backward.default(*a)),
        setup_context=_setup_context)
    return True


_NATIVE_REGISTERED = _register_native()


def native_ops():
    """(forward, backward) OpOverloads of the native op (fake + autograd registered)."""
    if not _NATIVE_REGISTERED:
        raise RuntimeError("cola_fast._C is not built (or lacks temporal_conv_embed)")
    return (torch.ops.cola_fast.temporal_conv_embed.default,
            torch.ops.cola_fast.temporal_conv_embed_backward.default)


# --------------------------------------------------------------------------------------
# triton: the custom op cola_fast_triton::temporal_conv_embed (kernels imported on first run,
# so that TRITON_INTERPRET is read when the caller wants it)
# --------------------------------------------------------------------------------------
def _kern():
    from ._triton import kernels_module

    return kernels_module("temporal_conv_embed")


@torch.library.custom_op("cola_fast_triton::temporal_conv_embed", mutates_args=())
def _tce_triton(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return _kern().forward(x, weight, bias)


@_tce_triton.register_fake
def _(x, weight, bias):
    return x.new_empty((x.shape[0], x.shape[1], weight.shape[0]))


@torch.library.custom_op("cola_fast_triton::temporal_conv_embed_backward", mutates_args=())
def _tce_triton_bwd(grad_out: torch.Tensor, out: torch.Tensor, x: torch.Tensor, weight: torch.Tensor,
                    output_mask: list[bool]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return _kern().backward(grad_out, out, x, weight, output_mask)


_tce_triton_bwd.register_fake(_bwd_fake)
_tce_triton.register_autograd(_make_backward(_tce_triton_bwd), setup_context=_setup_context)


def _triton_op():
    return _tce_triton


# --------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------
def _autocast(x, weight, bias):
    dev = x.device.type
    if dev == "cuda" and torch.is_autocast_enabled("cuda"):
        dt = torch.get_autocast_dtype("cuda")
    elif dev == "cpu" and torch.is_autocast_enabled("cpu"):
        dt = torch.float32  # the CPU kernels compute in float32 (documented above)
    else:
        return x, weight, bias
    cast = (lambda t: t if t is None or t.dtype == dt else t.to(dt))
    return cast(x), cast(weight), cast(bias)


def temporal_conv_embed(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                        backend: str | None = None) -> torch.Tensor:
    """ReLU(Conv1d(x) + bias) on channels-last x (B,T,Cin) -> (B,T,Cout).

    weight (Cout,Cin,K) and bias (Cout,) (or None) as nn.Conv1d's; K odd, zero padding K//2
    per video. Differentiable in x, weight and bias. backend: "auto" | "reference" |
    "native" | "triton" (default: $COLA_FAST_BACKEND, else "auto")."""
    _validate(x, weight, bias)
    b = resolve(backend, x.device, OP)
    if b == "reference":
        return reference.temporal_conv_embed(x, weight, bias)
    x, weight, bias = _autocast(x, weight, bias)
    if b == "native":
        fwd = torch.ops.cola_fast.temporal_conv_embed.default
        if x.device.type == "cpu" and x.dtype in (torch.float16, torch.bfloat16):
            dt = x.dtype
            up = (lambda t: None if t is None else t.float())
            return fwd(up(x), up(weight), up(bias)).to(dt)
        return fwd(x, weight, bias)
    if b == "triton":
        return _triton_op()(x, weight, bias)
    raise AssertionError(b)
