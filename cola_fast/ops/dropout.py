"""dropout: x * mask / (1 - p) with mask ~ Bernoulli(1 - p), as torch.nn.functional.dropout.

On the CPU with backend "auto" or "native", the compiled op (csrc/cpu/dropout.cpp) draws the
mask from a counter-based hash of the element index and a seed taken from torch's default
generator, writing the output and the mask in one pass (torch's CPU dropout draws every
element with bernoulli_ and multiplies in further passes). Reproducible under
torch.manual_seed and across thread counts; the mask stream differs from torch's, the
distribution does not. Elsewhere (CUDA, where torch's dropout is one fused Philox kernel;
backend "reference"; no extension) it is torch.nn.functional.dropout itself.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ._backend import native_has_kernel, resolve

_NATIVE_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _register_native() -> bool:
    try:
        from cola_fast import _C  # noqa: F401
    except ImportError:
        return False
    if not hasattr(torch.ops.cola_fast, "dropout_fwd"):
        return False

    @torch.library.register_fake("cola_fast::dropout_fwd")
    def _(x, p, seed):
        return torch.empty_like(x), torch.empty_like(x, dtype=torch.uint8)

    @torch.library.register_fake("cola_fast::dropout_bwd")
    def _(grad, mask, p):
        return torch.empty_like(grad)

    def setup_context(ctx, inputs, output):
        _, p, _ = inputs
        ctx.p = p
        ctx.save_for_backward(output[1])
        ctx.mark_non_differentiable(output[1])

    def backward(ctx, grad_out, _grad_mask):
        (mask,) = ctx.saved_tensors
        return torch.ops.cola_fast.dropout_bwd.default(grad_out, mask, ctx.p), None, None

    torch.library.register_autograd("cola_fast::dropout_fwd", backward, setup_context=setup_context)
    return True


_NATIVE_REGISTERED = _register_native()


def dropout(x: torch.Tensor, p: float, training: bool = True, backend: str | None = None) -> torch.Tensor:
    """x * mask / (1 - p), mask ~ Bernoulli(1 - p) per element, when training; x otherwise."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"dropout: x must be a torch.Tensor, got {type(x).__name__}")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout: p must lie in [0, 1], got {p}")
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu" or p == 1.0 or x.dtype not in _NATIVE_DTYPES:
        return F.dropout(x, p, True)
    if resolve(backend, x.device, "dropout_fwd") != "native" or not _NATIVE_REGISTERED:
        return F.dropout(x, p, True)  # "reference", or "triton" (no Triton dropout kernel)
    seed = int(torch.randint(-(2 ** 63), 2 ** 63 - 1, (), dtype=torch.int64))
    return torch.ops.cola_fast.dropout_fwd(x, p, seed)[0]


def native_available() -> bool:
    return _NATIVE_REGISTERED and native_has_kernel("dropout_fwd", "cpu")
