"""classifier_1x1: the THUMOS'14 classifier, a bias-free Conv1d(E -> C, kernel 1), on (B,T,E).

Two correct ways to compute it with torch's own kernels:
  conv1d  the published layer: F.conv1d on h.transpose(1, 2), transposed back (oneDNN / cuDNN);
  linear  the same map as F.linear(h, W[:, :, 0]) on the channels-last embeddings (a GEMM,
          no transposes).
backend "reference" is the published conv1d; "native" and "triton" (no kernel of their own)
take linear; "auto" chooses by measurement per shape class (cola_fast/ops/_autotune.py).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from . import _autotune

OP = "classifier_1x1"


def run(h: torch.Tensor, weight: torch.Tensor, impl: str) -> torch.Tensor:
    """(B,T,E) @ (C,E,1) -> (B,T,C) through "conv1d" or "linear"."""
    if impl == "conv1d":
        return F.conv1d(h.transpose(1, 2), weight).transpose(1, 2)
    if impl == "linear":
        return F.linear(h, weight.squeeze(-1))
    raise ValueError(f"classifier_1x1: unknown implementation {impl!r}")


def classifier_1x1(h: torch.Tensor, weight: torch.Tensor, backend: str | None = None) -> torch.Tensor:
    """h (B,T,E), weight (C,E,1) as nn.Conv1d's -> (B,T,C), no bias."""
    if h.dim() != 3 or weight.dim() != 3 or weight.shape[2] != 1 or weight.shape[1] != h.shape[2]:
        raise ValueError(f"classifier_1x1: need h (B,T,E) and weight (C,E,1), got {tuple(h.shape)} "
                         f"and {tuple(weight.shape)}")
    variant = "train" if torch.is_grad_enabled() and (h.requires_grad or weight.requires_grad) else "forward"
    b = _autotune.pick(OP, None, backend, h, variant, shape_class(*h.shape, weight.shape[0]))
    return run(h, weight, _IMPL_OF_BACKEND.get(b, b))  # a backend's implementation, or auto's choice


_IMPL_OF_BACKEND = {"reference": "conv1d", "native": "linear", "triton": "linear"}


def shape_class(B: int, T: int, E: int, C: int) -> tuple:
    """Training batches have one shape, their own class; single videos (evaluation, inference)
    come in every length: T rounded up to a power of two, so that an evaluation over a test
    set measures a handful of classes, not one per video length."""
    if B == 1 and T > 16:
        T = 1 << (T - 1).bit_length()
    return (B, T, E, C)


def _tuning(variant, device, dtype, shape, autocast) -> _autotune.Tuning:
    B, T, E, C = shape
    B = min(B, _autotune.TUNE_BATCH)  # the cost is linear in B: a few videos rank the candidates
    grads = variant == "train"

    def make_inputs(gen):
        h = torch.randn(B, T, E, generator=gen).to(device, dtype).requires_grad_(grads)
        w = (torch.randn(C, E, 1, generator=gen) / E ** 0.5).to(device, dtype).requires_grad_(grads)
        return h, w, torch.randn(B, T, C, generator=gen).to(device, dtype)

    def runner(impl):
        def go(inp):
            h, w, gout = inp
            with torch.autocast(device.type, dtype=getattr(torch, autocast, None), enabled=autocast != "none"):
                y = run(h, w, impl)
            return (y, *torch.autograd.grad(y, (h, w), gout.to(y.dtype))) if grads else (y,)
        return go

    return _autotune.Tuning({n: runner(n) for n in ("conv1d", "linear")}, make_inputs, "conv1d",
                            _autotune.mismatch_tolerance(dtype, device, autocast))


_autotune.register(OP, _tuning)
