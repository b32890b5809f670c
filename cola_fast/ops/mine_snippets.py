"""mine_snippets: easy and hard snippet mining (COLA_SPEC 2.1-2.2) as one op.

Backends (see cola_fast.ops._backend):
- "reference": cola_fast.reference.mine_snippets (pure PyTorch, full sorts);
- "native": torch.ops.cola_fast.mine_snippets from the compiled extension (C++ CPU kernel:
  median by selection, masks by window counts, top-k by bucket passes with a radix-selection
  fallback, built three times, for SSE2, AVX2 and AVX-512, the build chosen at run time (see
  mining_cpu_isa); CUDA kernel: one block per video, bitonic sorts in shared memory);
- "triton": kernels/mine_snippets.py, one program per video (CUDA, or CPU under the Triton
  interpreter), registered as the custom op cola_fast_triton::mine_snippets.

"auto" chooses among the backends available on the device by measurement, per shape class
(cola_fast/ops/_autotune.py); Triton is a candidate on CUDA only.

Every backend returns the same indices as the reference for every input (the spec's tie
rule: value descending, equal values lower index first). The op is not differentiable: it
returns index tensors; gradients flow through the embeddings gathered with them.
"""
from __future__ import annotations

import functools

import torch

from .. import reference
from . import _autotune
from ._backend import auto_candidates

OP = "mine_snippets"
TRITON_MAX_T = 2048  # kernels/mine_snippets.py's MAX_T (not imported: that imports triton); longer rows go native

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_Tensor = torch.Tensor


def _check_int(name: str, v) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        if isinstance(v, torch.Tensor) and v.dim() == 0 and not v.is_floating_point():
            return int(v)
        raise TypeError(f"mine_snippets: {name} must be an int, got {type(v).__name__}")
    return v


def _validate(actionness, keep, k_easy, k_hard, m, M):
    """Checks the arguments; returns (actionness, keep) contiguous, keep in actionness's dtype."""
    if not isinstance(actionness, torch.Tensor):
        raise TypeError(f"mine_snippets: actionness must be a torch.Tensor, got {type(actionness).__name__}")
    if not isinstance(keep, torch.Tensor):
        raise TypeError(f"mine_snippets: keep must be a torch.Tensor, got {type(keep).__name__}")
    if actionness.dim() != 2:
        raise ValueError(f"mine_snippets: actionness must be 2-D (B,T), got shape {tuple(actionness.shape)}")
    if actionness.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"mine_snippets: actionness must be a float tensor (float16, bfloat16, float32, "
                        f"float64), got {actionness.dtype}")
    if keep.shape != actionness.shape:
        raise ValueError(f"mine_snippets: keep has shape {tuple(keep.shape)}, expected the shape of "
                         f"actionness {tuple(actionness.shape)}")
    if keep.device != actionness.device:
        raise ValueError(f"mine_snippets: keep is on device {keep.device} but actionness is on device {actionness.device}")
    if keep.is_complex():
        raise TypeError(f"mine_snippets: keep must be a 0/1 mask of float or bool dtype, got {keep.dtype}")
    k_easy = _check_int("k_easy", k_easy)
    k_hard = _check_int("k_hard", k_hard)
    m = _check_int("m", m)
    M = _check_int("M", M)
    T = actionness.shape[1]
    if T < 1:
        raise ValueError(f"mine_snippets: need at least one snippet per video, got T={T}")
    for name, k in (("k_easy", k_easy), ("k_hard", k_hard)):
        if not 0 <= k <= T:
            raise ValueError(f"mine_snippets: {name}={k} must lie in [0, T={T}]")
    if not 1 <= m < M:
        raise ValueError(f"mine_snippets: need 1 <= m < M, got m={m}, M={M}")
    a = actionness.detach() if actionness.requires_grad else actionness
    a = a.contiguous()
    kp = keep.detach() if keep.requires_grad else keep
    if kp.dtype != a.dtype:
        kp = kp.to(a.dtype)
    kp = kp.contiguous()
    return a, kp, k_easy, k_hard, m, M


def _fake_outputs(actionness, k_easy, k_hard):
    B = actionness.shape[0]
    mk = functools.partial(actionness.new_empty, dtype=torch.int64)
    return mk((B, k_easy)), mk((B, k_easy)), mk((B, k_hard)), mk((B, k_hard))


# --------------------------------------------------------------------------------------
# native: torch.ops.cola_fast.mine_snippets (schema in csrc/ops.cpp); not differentiable, so a
# fake kernel only
# --------------------------------------------------------------------------------------
def _register_native() -> bool:
    """The fake kernel of the compiled op (for torch.compile / FakeTensor), registered once at
    import when the extension is built."""
    try:
        from cola_fast import _C  # noqa: F401  (loads the library: schemas and kernels)
    except ImportError:
        return False
    if not hasattr(torch.ops.cola_fast, "mine_snippets"):
        return False

    @torch.library.register_fake("cola_fast::mine_snippets")
    def _(actionness, keep, k_easy, k_hard, m, M):
        torch._check(actionness.dim() == 2, lambda: "actionness must be (B,T)")
        return _fake_outputs(actionness, k_easy, k_hard)

    return True


_NATIVE_REGISTERED = _register_native()


# --------------------------------------------------------------------------------------
# triton: the custom op cola_fast_triton::mine_snippets (kernels imported on first run)
# --------------------------------------------------------------------------------------
@torch.library.custom_op("cola_fast_triton::mine_snippets", mutates_args=())
def _mine_snippets_triton(actionness: torch.Tensor, keep: torch.Tensor, k_easy: int, k_hard: int,
                          m: int, M: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    from ._triton import kernels_module

    return kernels_module("mine_snippets").mine_snippets(actionness, keep, k_easy, k_hard, m, M)


@_mine_snippets_triton.register_fake
def _(actionness, keep, k_easy, k_hard, m, M):
    return _fake_outputs(actionness, k_easy, k_hard)


def mine_snippets(actionness: torch.Tensor, keep: torch.Tensor, k_easy: int, k_hard: int,
                  m: int = 3, M: int = 6, backend: str | None = None):
    """(EA, EB, HA, HB): int64 index tensors of shapes (B,k_easy), (B,k_easy), (B,k_hard),
    (B,k_hard) of COLA_SPEC 2.1-2.2.

    actionness: (B,T) float16/bfloat16/float32/float64; keep: (B,T) 0/1 mask of any float or
    bool dtype on the same device (converted to actionness's dtype); 0 <= k_easy, k_hard <= T;
    1 <= m < M. Non-contiguous inputs are made contiguous. backend: "auto" | "reference" |
    "native" | "triton" (None: env COLA_FAST_BACKEND, else "auto")."""
    # Fast path for the usual call (native backend, keep already in actionness's dtype, plain
    # ints): the C++ op checks shapes, dtypes, ranges and device itself, so _validate runs only
    # to turn a failure into its clear ValueError/TypeError. It matters in a training step: the
    # Python checks cost 10-30 us per call when the interpreter's caches are cold from other
    # work, up to a third of the op's time at (16,750) on a 2-core CPU (bench/mining.py
    # interleaves the backends, so it sees this).
    if (type(actionness) is _Tensor and type(keep) is _Tensor and type(k_easy) is int and type(k_hard) is int
            and type(m) is int and type(M) is int and keep.dtype is actionness.dtype and actionness.dim() == 2
            and not (actionness.requires_grad or keep.requires_grad)):
        dev = actionness.device
        if keep.device == dev and _choice(backend, actionness, k_easy, k_hard, m, M) == "native":
            try:
                return torch.ops.cola_fast.mine_snippets.default(actionness, keep, k_easy, k_hard, m, M)
            except RuntimeError:
                _validate(actionness, keep, k_easy, k_hard, m, M)  # raises the clear error, if any
                raise
    a, kp, k_easy, k_hard, m, M = _validate(actionness, keep, k_easy, k_hard, m, M)
    return run(a, kp, k_easy, k_hard, m, M, _choice(backend, a, k_easy, k_hard, m, M))


def run(a, kp, k_easy, k_hard, m, M, impl: str):
    """The op through one backend, on validated inputs."""
    if impl == "reference":
        return reference.mine_snippets(a, kp, k_easy, k_hard, m, M)
    if impl == "native":
        return torch.ops.cola_fast.mine_snippets.default(a, kp, k_easy, k_hard, m, M)
    if impl == "triton":
        return _mine_snippets_triton(a, kp, k_easy, k_hard, m, M)
    raise ValueError(f"mine_snippets: unknown implementation {impl!r}")


def _choice(backend, a, k_easy, k_hard, m, M) -> str:
    B, T = a.shape
    return _autotune.pick(OP, OP, backend, a, "indices", shape_class(B, T, k_easy, k_hard, m, M))


def shape_class(B: int, T: int, k_easy: int, k_hard: int, m: int, M: int) -> tuple:
    """Every call shape is its own class (training batches have one shape)."""
    return (B, T, k_easy, k_hard, m, M)


def candidates(device: torch.device) -> list[str]:
    return auto_candidates(OP, device)


def _tuning(variant, device, dtype, shape, autocast) -> _autotune.Tuning:
    B, T, k_easy, k_hard, m, M = shape

    def make_inputs(gen):
        a = torch.rand(B, T, generator=gen).to(device, dtype)
        keep = (torch.rand(B, T, generator=gen) < 0.4).to(device, dtype)
        return a, keep

    def mismatch(out, ref):
        for name, o, r in zip(("EA", "EB", "HA", "HB"), out, ref):
            if o.shape != r.shape or not torch.equal(o, r):
                return f"{name} differs from the reference's indices"
        return None

    def runner(impl):
        return lambda inp: run(inp[0], inp[1], k_easy, k_hard, m, M, impl)

    names = [n for n in candidates(device) if not (n == "triton" and T > TRITON_MAX_T)]
    return _autotune.Tuning({n: runner(n) for n in names}, make_inputs, "reference", mismatch)


_autotune.register(OP, _tuning)


def mining_cpu_isa() -> str | None:
    """Which build of the native CPU kernel runs here: "avx512" (AVX-512 F/BW/VL/DQ), "avx2"
    (AVX2, FMA, BMI1/2, POPCNT, LZCNT) or "sse2" (any x86-64; "generic" elsewhere): the host's
    ISA, capped by COLA_FAST_CPU_ISA=sse2|avx2|avx512 (read once per process, before the first
    call; an unknown value raises); None when the extension is not built. Every build returns
    identical indices."""
    from ._backend import native_available
    if not native_available("cpu") or not hasattr(torch.ops.cola_fast, "mining_cpu_isa"):
        return None
    return torch.ops.cola_fast.mining_cpu_isa()
