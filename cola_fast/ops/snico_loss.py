"""snico_loss: the whole SniCo term (COLA_SPEC 3) as one op.

    loss = NCE(mean emb[HA], mean emb[EA], emb[EB]) + NCE(mean emb[HB], mean emb[EB], emb[EA])

Backends:
- "reference": cola_fast.reference.snico_loss (gathers (B,k,D) copies, autograd does the rest);
- "native": the ops cola_fast::snico_loss_fwd / snico_loss_bwd of the compiled extension
  (C++ CPU kernels, CUDA kernels when built); autograd and fake kernels registered here;
- "triton": kernels/snico_loss.py, wrapped as the custom ops cola_fast_triton::snico_loss_fwd / _bwd
  (CUDA, or CPU under the Triton interpreter).
"auto" chooses among the backends available on the device by measurement, per shape class
(cola_fast/ops/_autotune.py); Triton is a candidate on CUDA only.
The fused forward saves only the four means (B,4,D), norms, logits and log-sum-exp; the
backward is a hand-derived fused kernel that scatters into d(emb) (see csrc/cpu/snico_loss.cpp).
"""
from __future__ import annotations

import math

import torch

from .. import reference
from . import _autotune
from ._backend import auto_candidates

OP = "snico_loss"
KERNEL = "snico_loss_fwd"  # the compiled op whose kernel backend "native" needs


def _validate(emb, ea, eb, ha, hb, tau):
    if not isinstance(emb, torch.Tensor):
        raise TypeError(f"snico_loss: emb must be a tensor, got {type(emb).__name__}")
    if emb.dim() != 3:
        raise ValueError(f"snico_loss: emb must be (B,T,D), got shape {tuple(emb.shape)}")
    if not emb.is_floating_point():
        raise TypeError(f"snico_loss: emb must be floating point, got {emb.dtype}")
    B, T, D = emb.shape
    if B == 0 or T == 0 or D == 0:
        raise ValueError(f"snico_loss: emb is empty, shape {tuple(emb.shape)}")
    for name, x in (("ea", ea), ("eb", eb), ("ha", ha), ("hb", hb)):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"snico_loss: {name} must be a tensor, got {type(x).__name__}")
        if x.dtype != torch.int64:
            raise TypeError(f"snico_loss: {name} must be int64 indices, got {x.dtype}")
        if x.dim() != 2 or x.shape[0] != B or x.shape[1] == 0:
            raise ValueError(f"snico_loss: {name} must be (B={B}, k>0), got shape {tuple(x.shape)}")
        if x.device != emb.device:
            raise ValueError(f"snico_loss: {name} is on {x.device} but emb is on {emb.device}")
    if ea.shape != eb.shape:
        raise ValueError(f"snico_loss: ea and eb must have the same shape (B,k_easy), got "
                         f"{tuple(ea.shape)} and {tuple(eb.shape)}")
    if ha.shape != hb.shape:
        raise ValueError(f"snico_loss: ha and hb must have the same shape (B,k_hard), got "
                         f"{tuple(ha.shape)} and {tuple(hb.shape)}")
    if isinstance(tau, bool) or not isinstance(tau, (int, float)):
        raise TypeError(f"snico_loss: tau must be a number, got {type(tau).__name__}")
    if not (tau > 0 and math.isfinite(tau)):
        raise ValueError(f"snico_loss: tau must be a positive finite number, got {tau}")
    # Range check on CPU only (on CUDA it would cost a host sync) and not while torch.compile
    # traces (data-dependent); the C++ CPU op checks the range itself as well, the CUDA kernel
    # asserts, and the Triton kernels count bad indices into a flag that check_index_errors()
    # reads at the caller's next sync (the trainer's logging), clamping them meanwhile.
    if emb.device.type == "cpu" and not torch.compiler.is_compiling():
        for name, x in (("ea", ea), ("eb", eb), ("ha", ha), ("hb", hb)):
            lo, hi = int(x.min()), int(x.max())
            if lo < 0 or hi >= T:
                raise ValueError(f"snico_loss: {name} holds indices in [{lo}, {hi}], outside [0, T={T})")


# --------------------------------------------------------------------------------------
# native: autograd and fake kernels for cola_fast::snico_loss_fwd / snico_loss_bwd
# --------------------------------------------------------------------------------------
def _acc_dtype(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


def _fake_fwd(emb, ea, eb, ha, hb, tau):
    B, T, D = emb.shape
    kE = ea.shape[1]
    acc = _acc_dtype(emb.dtype)
    new = emb.new_empty
    return (new((), dtype=emb.dtype), new((B, 4, D), dtype=acc), new((B, 4), dtype=acc),
            new((B, 2, kE), dtype=acc), new((B, 2, 1 + kE), dtype=acc), new((B, 2), dtype=acc))


def _fake_bwd(grad, emb, ea, eb, ha, hb, means, mean_norms, neg_norms, logits, lse, tau):
    return torch.empty_like(emb, memory_format=torch.contiguous_format)


def _setup_context(ctx, inputs, output):
    emb, ea, eb, ha, hb, tau = inputs
    _, means, mean_norms, neg_norms, logits, lse = output
    ctx.save_for_backward(emb, ea, eb, ha, hb, means, mean_norms, neg_norms, logits, lse)
    ctx.tau = tau
    for t in output[1:]:
        ctx.mark_non_differentiable(t)


def _make_backward(bwd_op):
    def backward(ctx, grad, *unused):
        emb, ea, eb, ha, hb, means, mean_norms, neg_norms, logits, lse = ctx.saved_tensors
        if grad is None:
            return None, None, None, None, None, None
        demb = bwd_op(grad, emb, ea, eb, ha, hb, means, mean_norms, neg_norms, logits, lse, ctx.tau)
        return demb, None, None, None, None, None
    return backward


def _register_native() -> bool:
    """Fake kernels and autograd for the compiled ops, registered once at import when the
    extension is built."""
    try:
        from cola_fast import _C  # noqa: F401  (loads the library: schemas and kernels)
    except ImportError:
        return False
    if not hasattr(torch.ops.cola_fast, "snico_loss_fwd"):
        return False
    torch.library.register_fake("cola_fast::snico_loss_fwd")(_fake_fwd)
    torch.library.register_fake("cola_fast::snico_loss_bwd")(_fake_bwd)
    torch.library.register_autograd("cola_fast::snico_loss_fwd",
                                    _make_backward(torch.ops.cola_fast.snico_loss_bwd),
                                    setup_context=_setup_context)
    return True


_NATIVE_REGISTERED = _register_native()


# --------------------------------------------------------------------------------------
# triton: the custom ops cola_fast_triton::snico_loss_fwd / snico_loss_bwd around
# kernels/snico_loss.py (kernels imported on first run)
# --------------------------------------------------------------------------------------
def _kern():
    from ._triton import kernels_module

    return kernels_module("snico_loss")


_triton_ran = False  # whether a Triton SniCo forward has run in this process (check_index_errors)


@torch.library.custom_op("cola_fast_triton::snico_loss_fwd", mutates_args=())
def _snico_triton_fwd(emb: torch.Tensor, ea: torch.Tensor, eb: torch.Tensor, ha: torch.Tensor, hb: torch.Tensor,
                      tau: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                                           torch.Tensor]:
    global _triton_ran
    _triton_ran = True
    return _kern().snico_fwd(emb, ea, eb, ha, hb, tau)


@torch.library.custom_op("cola_fast_triton::snico_loss_bwd", mutates_args=())
def _snico_triton_bwd(grad: torch.Tensor, emb: torch.Tensor, ea: torch.Tensor, eb: torch.Tensor, ha: torch.Tensor,
                      hb: torch.Tensor, means: torch.Tensor, mean_norms: torch.Tensor, neg_norms: torch.Tensor,
                      logits: torch.Tensor, lse: torch.Tensor, tau: float) -> torch.Tensor:
    return _kern().snico_bwd(grad, emb, ea, eb, ha, hb, means, mean_norms, neg_norms, logits, lse, tau)


_snico_triton_fwd.register_fake(_fake_fwd)
_snico_triton_bwd.register_fake(_fake_bwd)
_snico_triton_fwd.register_autograd(_make_backward(_snico_triton_bwd), setup_context=_setup_context)


def _triton():
    """(forward, backward) of the Triton custom ops."""
    return _snico_triton_fwd, _snico_triton_bwd


def check_index_errors() -> None:
    """Raise a ValueError if a Triton snico_loss launch since the last check was given indices
    outside [0, T) (its kernels clamp them and count them on the device, without a host sync).
    A host sync when Triton SniCo has run in this process, nothing otherwise: call it where the
    caller syncs anyway (the trainer: at its logging, every 10 steps)."""
    if _triton_ran:
        _kern().raise_index_errors()


# --------------------------------------------------------------------------------------
def snico_loss(emb: torch.Tensor, ea: torch.Tensor, eb: torch.Tensor, ha: torch.Tensor,
               hb: torch.Tensor, tau: float = 0.07, backend: str | None = None) -> torch.Tensor:
    """The SniCo loss of COLA_SPEC 3 (a scalar of emb's dtype), differentiable in emb.

    emb (B,T,D) float; ea, eb (B,k_easy) and ha, hb (B,k_hard) int64 indices in [0, T)
    (repeats allowed); tau > 0. backend: "auto" | "reference" | "native" | "triton"."""
    _validate(emb, ea, eb, ha, hb, tau)
    variant = "train" if torch.is_grad_enabled() and emb.requires_grad else "forward"
    impl = _autotune.pick(OP, KERNEL, backend, emb, variant, shape_class(*emb.shape, ea.shape[1], ha.shape[1]))
    return run(emb, ea, eb, ha, hb, float(tau), impl)


def shape_class(B: int, T: int, D: int, k_easy: int, k_hard: int) -> tuple:
    """Every call shape is its own class (training batches have one shape)."""
    return (B, T, D, k_easy, k_hard)


def run(emb, ea, eb, ha, hb, tau: float, impl: str) -> torch.Tensor:
    """The loss through one backend, on validated inputs."""
    if impl == "reference":
        return reference.snico_loss(emb, ea, eb, ha, hb, tau)
    if impl == "native":
        return torch.ops.cola_fast.snico_loss_fwd(emb, ea, eb, ha, hb, tau)[0]
    if impl == "triton":
        return _triton()[0](emb, ea, eb, ha, hb, tau)[0]
    raise ValueError(f"snico_loss: unknown implementation {impl!r}")


def candidates(device: torch.device) -> list[str]:
    return auto_candidates(KERNEL, device)


def _tuning(variant, device, dtype, shape, autocast) -> _autotune.Tuning:
    B, T, D, k_easy, k_hard = shape
    B = min(B, _autotune.TUNE_BATCH)  # the cost is linear in B: a few videos rank the candidates
    grads = variant == "train"

    def make_inputs(gen):
        emb = torch.randn(B, T, D, generator=gen).relu_().to(device, dtype).requires_grad_(grads)
        idx = [torch.randint(0, T, (B, k), generator=gen).to(device) for k in (k_easy, k_easy, k_hard, k_hard)]
        return (emb, *idx)

    def runner(impl):
        def go(inp):
            with torch.autocast(device.type, dtype=getattr(torch, autocast, None), enabled=autocast != "none"):
                loss = run(*inp, 0.07, impl)
            return (loss, *torch.autograd.grad(loss, inp[0])) if grads else (loss,)
        return go

    return _autotune.Tuning({n: runner(n) for n in candidates(device)}, make_inputs, "reference",
                            _autotune.mismatch_tolerance(dtype, device, autocast))


_autotune.register(OP, _tuning)

