"""temporal_conv_embed: channels-last Conv1d + bias + ReLU (the CoLA embedding).

    y[b, t, :] = ReLU(bias + sum_k W[:, :, k] @ x[b, t + k - K//2, :])     (zero padding
                                                                            inside each video)

Backends (see cola_fast.ops._backend):
  reference  torch conv1d + ReLU with the (B,T,C) <-> (B,C,T) permutes (cola_fast.reference):
             torch's own path (oneDNN on a CPU, cuDNN on a GPU)
  native     the compiled op torch.ops.cola_fast.temporal_conv_embed: C++ CPU kernel
             (float32/float64, Winograd F(2,3) or implicit GEMM on shifted row views, its GEMMs
             through BLAS or oneDNN: the op's `gemm` argument; a library is offered only where
             the probe at import found it running, _backend.gemm_libraries) and CUDA
             kernel (one cuBLASLt GEMM per tap; bias + ReLU in the last GEMM's epilogue for
             float32/float64, in one small kernel for bf16/fp16, which accumulate in fp32;
             TF32 for float32 when torch lets its cuDNN convolutions use TF32
             (conv_allows_tf32 below), float64 exact; see csrc/cuda/temporal_conv_embed.cu)
  triton     kernels/temporal_conv_embed.py through the custom op
             cola_fast_triton::temporal_conv_embed (GPU, or CPU under TRITON_INTERPRET=1)

"auto" chooses by measurement per shape class (cola_fast/ops/_autotune.py) among
"reference", "native:blas", "native:onednn" (CPU, float32) / "native:cublaslt", "triton" (CUDA), timing
the forward alone under no_grad and forward+backward when gradients are wanted.

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
from . import _autotune
from ._backend import gemm_libraries, native_has_kernel, triton_available

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
def _bwd_fake(grad_out, out, x, weight, output_mask, gemm=0):
    # masked-out gradients come back as distinct empty (0,) tensors (no aliasing)
    return (x.new_empty(x.shape if output_mask[0] else (0,)),
            weight.new_empty(weight.shape if output_mask[1] else (0,)),
            weight.new_empty(weight.shape[0] if output_mask[2] else 0))


def _setup_context(ctx, inputs, output):
    x, weight, bias = inputs[:3]
    ctx.save_for_backward(x, weight, output)
    ctx.has_bias = bias is not None
    ctx.gemm = inputs[3] if len(inputs) > 3 else None  # the native op's GEMM library; Triton has none


def _make_backward(bwd_op):
    def backward(ctx, grad_out):
        x, weight, out = ctx.saved_tensors
        need = ctx.needs_input_grad
        mask = [bool(need[0]), bool(need[1]), bool(ctx.has_bias and need[2])]
        if not any(mask):
            return (None,) * len(need)
        extra = () if ctx.gemm is None else (ctx.gemm,)
        dx, dw, db = bwd_op(grad_out, out, x, weight, mask, *extra)
        return (dx if mask[0] else None, dw if mask[1] else None, db if mask[2] else None) + (None,) * (len(need) - 3)
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
    def _fwd_fake(x, weight, bias, gemm=0):
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


GEMM_LIBRARIES = {"blas": 0, "onednn": 1}  # the native CPU op's `gemm` argument
CUDA_NATIVE = "native:cublaslt"  # the native CUDA op (its GEMMs are cuBLASLt's; it ignores `gemm`)


def candidates(device: torch.device, dtype: torch.dtype) -> list[str]:
    """The implementations "auto" may choose from for this device and dtype."""
    names = ["reference"]
    if native_has_kernel(OP, device.type):
        if device.type == "cpu":
            # each GEMM library that the probe at import found running on this CPU (float64: BLAS only)
            libs = [lib for lib, why in gemm_libraries().items() if not why]
            names += [f"native:{lib}" for lib in libs if lib == "blas" or dtype != torch.float64]
        else:
            names.append(CUDA_NATIVE)
    if device.type == "cuda" and triton_available(device):
        names.append("triton")
    return names


def run(x, weight, bias, impl: str) -> torch.Tensor:
    """The op through one named implementation (a backend, or a candidate of candidates())."""
    if impl == "reference":
        return reference.temporal_conv_embed(x, weight, bias)
    x, weight, bias = _autocast(x, weight, bias)
    if impl.startswith("native"):
        fwd = torch.ops.cola_fast.temporal_conv_embed.default
        gemm = GEMM_LIBRARIES[impl.split(":")[1]] if ":" in impl and impl != CUDA_NATIVE else 0
        if x.device.type == "cpu" and x.dtype in (torch.float16, torch.bfloat16):
            dt = x.dtype
            up = (lambda t: None if t is None else t.float())
            return fwd(up(x), up(weight), up(bias), gemm).to(dt)
        return fwd(x, weight, bias, gemm)
    if impl == "triton":
        return _triton_op()(x, weight, bias)
    raise ValueError(f"temporal_conv_embed: unknown implementation {impl!r}")


def _variant(x, weight, bias) -> str:
    if not torch.is_grad_enabled():
        return "forward"
    if x.requires_grad:
        return "train_dx"
    if weight.requires_grad or (bias is not None and bias.requires_grad):
        return "train"
    return "forward"


def shape_class(B: int, T: int, cin: int, cout: int, k: int, has_bias: bool) -> tuple:
    """Training shapes are fixed, so they are their own class; single videos (evaluation,
    inference) come in every length: T is rounded up to a power of two, its parity kept (the
    CPU kernel's Winograd path needs an even T)."""
    if B == 1 and T > 16:
        t = 1 << (T - 1).bit_length()
        T = t if T % 2 == 0 else t - 1
    return (B, T, cin, cout, k, int(has_bias))


_TUNE_ROWS = 768  # rows (B*T) of the inputs the candidates are timed on a CPU (at least one video):
# a measurement of about a second at the paper's shapes; per-call costs (the weight transform) weigh
# more there than in the real batch, which can only favour torch's conv. On a GPU the whole batch
# (12000 rows at THUMOS'14's shape, milliseconds): the Triton kernels tune per power-of-2 bucket
# of the rows, so a smaller tuning batch would tune them for a bucket training never uses.


def tuning_batch(device: torch.device, B: int, T: int) -> int:
    """The videos the candidates are timed on: the class's whole batch on a GPU, about
    _TUNE_ROWS rows on a CPU."""
    if device.type == "cuda":
        return B
    return max(1, min(B, -(-_TUNE_ROWS // max(T, 1))))


def _tuning(variant, device, dtype, shape, autocast) -> _autotune.Tuning:
    B, T, cin, cout, k, has_bias = shape
    b = tuning_batch(device, B, T)
    grads = variant != "forward"

    def make_inputs(gen):
        # Pre-activations of about unit spread, pushed to +-8 by the bias (or by a shift of x's
        # first channel without bias): every output channel is either always on or always off,
        # so no pre-activation lies within rounding of 0, where the ReLU mask would differ
        # between correct implementations (one such flip moves dW by up to |dy x|: 5% of its
        # largest entry at (31,50,2048->2048,k9)), and both sides of the mask are still tested.
        x = torch.randn(b, T, cin, generator=gen).to(device, dtype)
        w = (torch.randn(cout, cin, k, generator=gen) / (cin * k) ** 0.5).to(device, dtype)
        side = 8.0 * (1 - 2 * (torch.arange(cout) % 2)).to(device, dtype)  # +8, -8, +8, ...
        bias = side if has_bias else None
        if not has_bias and cin > 0:  # the same through the weights: a constant first channel
            x[..., 0] = 1.0
            w[:, 0, :] = side[:, None] / k
        gout = torch.randn(b, T, cout, generator=gen).to(device, dtype)
        x.requires_grad_(variant == "train_dx")
        for t in (w, bias):
            if t is not None:
                t.requires_grad_(grads)
        return x, w, bias, gout

    def runner(impl):
        def go(inp):
            x, w, bias, gout = inp
            with torch.autocast(device.type, dtype=getattr(torch, autocast, None), enabled=autocast != "none"):
                if not grads:
                    with torch.no_grad():
                        return (run(x, w, bias, impl),)
                y = run(x, w, bias, impl)
            wrt = [t for t in (x, w, bias) if t is not None and t.requires_grad]
            return (y, *torch.autograd.grad(y, wrt, gout.to(y.dtype)))
        return go

    def oracle(inp):  # the reference in float64 on the same inputs
        x, w, bias, gout = (None if t is None else t.detach().double().requires_grad_(t.requires_grad) for t in inp)
        y = reference.temporal_conv_embed(x, w, bias)
        wrt = [t for t in (x, w, bias) if t is not None and t.requires_grad]
        return (y, *torch.autograd.grad(y, wrt, gout)) if grads else (y,)

    return _autotune.Tuning({n: runner(n) for n in candidates(device, dtype)}, make_inputs, "reference",
                            _autotune.mismatch_tolerance(dtype, device, autocast),
                            oracle if dtype != torch.float64 else None)


_autotune.register(OP, _tuning)


def temporal_conv_embed(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                        backend: str | None = None) -> torch.Tensor:
    """ReLU(Conv1d(x) + bias) on channels-last x (B,T,Cin) -> (B,T,Cout).

    weight (Cout,Cin,K) and bias (Cout,) (or None) as nn.Conv1d's; K odd, zero padding K//2
    per video. Differentiable in x, weight and bias. backend: "auto" | "reference" |
    "native" | "triton" (default: $COLA_FAST_BACKEND, else "auto": the fastest candidate for
    this shape class, by measurement)."""
    _validate(x, weight, bias)
    B, T, cin = x.shape
    cout, _, k = weight.shape
    impl = _autotune.pick(OP, OP, backend, x, _variant(x, weight, bias), shape_class(B, T, cin, cout, k, bias is not None))
    return run(x, weight, bias, impl)
