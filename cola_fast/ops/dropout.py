"""dropout: x * mask / (1 - p) with mask ~ Bernoulli(1 - p), as torch.nn.functional.dropout.

On the CPU with backend "auto" or "native", the compiled op (csrc/cpu/dropout.cpp) draws the
mask from a counter-based hash of the element index and a seed taken from torch's default
generator, writing the output and the mask in one pass (torch's CPU dropout draws every
element with bernoulli_ and multiplies in further passes). Reproducible under
torch.manual_seed and across thread counts; the mask stream differs from torch's, the
distribution does not. Elsewhere (CUDA, where torch's dropout is one fused Philox kernel;
backend "reference"; no extension) it is torch.nn.functional.dropout itself. On the CPU "auto"
chooses between the two by measurement per shape class (cola_fast/ops/_autotune.py); a
candidate is eligible when its output is x / (1 - p) or 0 everywhere, with a keep rate within
six standard deviations of 1 - p, and its gradient follows the same mask.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from . import _autotune
from ._backend import native_has_kernel

OP = "dropout"
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
    variant = "train" if torch.is_grad_enabled() and x.requires_grad else "forward"
    return run(x, p, _autotune.pick(OP, "dropout_fwd", backend, x, variant, shape_class(x.shape, p)))


def shape_class(shape: tuple, p: float) -> tuple:
    """Every shape is its own class (training batches have one shape), with the drop rate."""
    return (*shape, p)


def run(x: torch.Tensor, p: float, impl: str) -> torch.Tensor:
    """Training-mode dropout through one implementation: "native" (the CPU op) or torch's."""
    if impl != "native" or not _NATIVE_REGISTERED:
        return F.dropout(x, p, True)  # "reference", "auto" without the extension, or "triton" (no Triton dropout)
    seed = int(torch.randint(-(2 ** 63), 2 ** 63 - 1, (), dtype=torch.int64))
    return torch.ops.cola_fast.dropout_fwd(x, p, seed)[0]



def _tuning(variant, device, dtype, shape, autocast) -> _autotune.Tuning:
    *dims, p = shape
    dims[0] = min(dims[0], _autotune.TUNE_BATCH)  # elementwise: a few videos rank the candidates
    grads = variant == "train"

    def make_inputs(gen):
        x = (torch.rand(dims, generator=gen) + 0.5).to(device, dtype).requires_grad_(grads)
        return x, torch.randn(dims, generator=gen).to(device, dtype)

    def runner(impl):
        def go(inp):
            y = run(inp[0], p, impl)
            return (inp[0], y, *torch.autograd.grad(y, inp[0], inp[1])) if grads else (inp[0], y)
        return go

    names = ("reference", "native") if native_available() else ("reference",)
    return _autotune.Tuning({n: runner(n) for n in names}, make_inputs, "reference",
                            lambda out, ref: _dropout_mismatch(out, p))


def _dropout_mismatch(out, p: float) -> str | None:
    """None when out = (x, y[, dx]) is a valid dropout of x: y = x / (1 - p) or 0 everywhere, the
    keep rate within six standard deviations of 1 - p, and dx following the same mask."""
    x, y = out[0].detach().double(), out[1].detach().double()
    kept = y != 0
    if not torch.allclose(y[kept], x[kept] / (1 - p), rtol=1e-3):
        return "kept values are not x / (1 - p)"
    n = x.numel()
    rate = kept.double().mean().item()
    if abs(rate - (1 - p)) > 6 * ((p * (1 - p) / n) ** 0.5) + 1e-12:
        return f"keep rate {rate:.4f}, expected {1 - p:.4f}"
    if len(out) > 2 and not torch.equal(out[2] != 0, kept):
        return "the gradient does not follow the mask"
    return None


_autotune.register(OP, _tuning)


def native_available() -> bool:
    return _NATIVE_REGISTERED and native_has_kernel("dropout_fwd", "cpu")
