"""Backend selection for the fused ops.

Backends: "reference" (cola_fast.reference, pure PyTorch), "native" (the compiled
extension cola_fast._C: C++ CPU kernels, CUDA kernels when built), "triton" (the kernels
in cola_fast.kernels; on a CPU only under the Triton interpreter, TRITON_INTERPRET=1).
"auto" picks, per shape class and by measurement, the fastest candidate that matches the
reference (cola_fast.ops._autotune). The default backend comes from the environment variable COLA_FAST_BACKEND when set; a backend that is asked
for but not available raises BackendUnavailable, it never falls back in silence.
"""
from __future__ import annotations

import functools
import os
import warnings

import torch

BACKENDS = ("auto", "reference", "native", "triton")


class BackendUnavailable(RuntimeError):
    pass


class NativeExtensionWarning(RuntimeWarning):
    """cola_fast._C cannot be used (or was built against another torch)."""


REBUILD = ("rebuild it against the torch you run: `pip install --no-build-isolation -e .` in the "
           "cola_fast clone (FORCE_ONLY_CPU=1 for the CPU kernels only)")


def build_record():
    """(torch version, CUDA version) that cola_fast._C was built against, from the
    _build_info.py that setup.py writes beside it; None when there is none."""
    try:
        from cola_fast import _build_info
    except ImportError:
        return None
    return getattr(_build_info, "TORCH_VERSION", None), getattr(_build_info, "CUDA_VERSION", None)


def _versions(torch_version, cuda_version) -> str:
    return f"torch {torch_version} (CUDA {cuda_version or 'none: CPU-only build'})"


def _mismatch(record) -> str:
    """'' when the running torch is the one the extension was built against, else a sentence."""
    if record is None or record == (torch.__version__, torch.version.cuda):
        return ""
    return (f"cola_fast._C was built against {_versions(*record)} but this is "
            f"{_versions(torch.__version__, torch.version.cuda)}")


@functools.lru_cache(maxsize=None)  # once: loads the library and warns once, not at every check
def _native_status():
    record = build_record()
    try:
        from cola_fast import _C  # noqa: F401  (loads the library and its registrations)
    except ImportError as e:  # not built, or built against another torch
        mismatch = _mismatch(record)
        if "No module named" in str(e) and record is None:
            why = "cola_fast._C is not built"
        else:
            why = f"cola_fast._C failed to load ({e})" + (f": {mismatch}" if mismatch else "")
        why = f"{why}; {REBUILD}"
        warnings.warn(f"{why}. Until then backend 'auto' runs the slow pure-PyTorch reference ops "
                      f"and backend 'native' is unavailable.", NativeExtensionWarning, stacklevel=2)
        return False, False, why
    mismatch = _mismatch(record)
    if mismatch:
        warnings.warn(f"{mismatch}: it may crash or compute wrong results; {REBUILD}.",
                      NativeExtensionWarning, stacklevel=2)
    # The CUDA kernels are present when the library registered a CUDA implementation of an op.
    ours = [op for op in torch._C._dispatch_get_all_op_names() if op.startswith("cola_fast::")]
    has_cuda = any(torch._C._dispatch_has_kernel_for_dispatch_key(op, "CUDA") for op in ours)
    return True, has_cuda, mismatch


def native_available(device: torch.device | str = "cpu") -> bool:
    ok, has_cuda, _ = _native_status()
    if not ok:
        return False
    return has_cuda if torch.device(device).type == "cuda" else True


def native_has_kernel(op: str, device_type: str) -> bool:
    ok, _, _ = _native_status()
    if not ok:
        return False
    key = "CUDA" if device_type == "cuda" else "CPU"
    try:
        return torch._C._dispatch_has_kernel_for_dispatch_key(f"cola_fast::{op}", key)
    except RuntimeError:  # no such operator registered
        return False


def triton_interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


@functools.lru_cache(maxsize=None)  # once: the import of triton (seconds the first time)
def _triton_status():
    try:
        import triton  # noqa: F401
    except ImportError as e:
        return False, f"triton is not installed ({e}); `pip install triton`"
    return True, ""


def triton_available(device: torch.device | str = "cpu") -> bool:
    ok, _ = _triton_status()
    if not ok:
        return False
    if torch.device(device).type == "cuda":
        return True
    return triton_interpreting()


# (backend, device type, op, interpreter setting) -> the checked backend. Saves asking the
# dispatcher on every call with a forced backend: about 5 us of the 7 us an unremembered check takes.
_RESOLVED: dict = {}

def default_backend() -> str:
    """$COLA_FAST_BACKEND, read at every call (a test or a user may change it at run time), else "auto"."""
    return os.environ.get("COLA_FAST_BACKEND", "auto")


@torch.compiler.assume_constant_result  # a Python-level choice: torch.compile treats it as a constant
def resolve(backend: str | None, device: torch.device | str, op: str | None) -> str:
    """"auto", or the forced backend ("reference", "native" or "triton") for the compiled op
    `op` on device after checking that it is there (op None: an op with no kernels of its own,
    for which only the name is checked). "auto" is then chosen per shape class (_autotune.pick)."""
    if backend is None:
        backend = default_backend()
    if backend == "auto":
        return "auto"
    dev_type = device.type if isinstance(device, torch.device) else torch.device(device).type
    key = (backend, dev_type, op, os.environ.get("TRITON_INTERPRET", "0"))
    got = _RESOLVED.get(key)
    if got is None:
        got = _resolve_uncached(backend, dev_type, op)
        _RESOLVED[key] = got
    return got


def _resolve_uncached(backend: str, dev_type: str, op: str) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    dev = torch.device(dev_type)
    if op is None:
        return backend
    if backend == "native" and not native_has_kernel(op, dev.type):
        ok, _, why = _native_status()
        raise BackendUnavailable(
            f"backend 'native' asked for {op} on {dev.type}, but "
            + (why if not ok else f"the extension was built without {dev.type.upper()} kernels for it")
        )
    if backend == "triton" and not triton_available(dev):
        ok, why = _triton_status()
        raise BackendUnavailable(
            f"backend 'triton' asked for {op} on {dev.type}, but "
            + (why if not ok else "Triton runs CPU tensors only under its interpreter (set TRITON_INTERPRET=1 "
               "before triton is imported)")
        )
    return backend


# --------------------------------------------------------------------------------------
# what this CPU can run: the instruction set our kernels may use, and the GEMM libraries
# --------------------------------------------------------------------------------------
CPU_ISAS = ("sse2", "avx2", "avx512")   # in order; each of our ISA-specific CPU kernels has a build per level
_ONEDNN_CAP = {"sse2": "SSE41", "avx2": "AVX2"}  # oneDNN's name for the same cap (SSE4.1 is its floor)


def host_cpu_isa() -> str:
    """The highest of CPU_ISAS this CPU runs (from /proc/cpuinfo's flags, the kernel's word for
    what CPUID says), by the rule of csrc/cpu/cpu_isa.cpp: avx512 needs AVX-512 F/BW/VL/DQ, avx2
    needs AVX2, FMA, BMI1/2, POPCNT and LZCNT ("abm"); "sse2" otherwise (every x86-64), and on
    other architectures (whose kernels are the portable builds)."""
    flags = set(cpuinfo().get("flags", "").split())
    if {"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= flags:
        return "avx512"
    if {"avx2", "fma", "bmi1", "bmi2", "popcnt", "abm"} <= flags:
        return "avx2"
    return "sse2"


@functools.lru_cache(maxsize=None)  # saves reading /proc/cpuinfo (about 90 us here) for each decision's key
def cpuinfo() -> dict:
    """The first processor's entry of /proc/cpuinfo ({} where there is none)."""
    try:
        with open("/proc/cpuinfo") as f:
            first = f.read().split("\n\n")[0]
    except OSError:
        return {}
    return {k.strip(): v.strip() for k, v in (line.split(":", 1) for line in first.splitlines() if ":" in line)}


def cpu_isa_cap() -> str | None:
    """$COLA_FAST_CPU_ISA (sse2 | avx2 | avx512), the highest instruction set our CPU kernels may
    use; None when unset. Anything else is refused with the allowed values."""
    cap = os.environ.get("COLA_FAST_CPU_ISA", "").strip().lower()
    if not cap:
        return None
    if cap not in CPU_ISAS:
        raise ValueError(f"COLA_FAST_CPU_ISA={cap!r}: choose one of {', '.join(CPU_ISAS)}")
    return cap


def capped_isa(host: str, cap: str | None) -> str:
    """host lowered to cap (never raised above it): the rule of $COLA_FAST_CPU_ISA."""
    return host if cap is None else CPU_ISAS[min(CPU_ISAS.index(host), CPU_ISAS.index(cap))]


def cpu_isa() -> str:
    """The instruction set our CPU kernels run with: the compiled kernels' own answer when they are
    built (torch.ops.cola_fast.cpu_isa: the host's lowered to $COLA_FAST_CPU_ISA, read once per
    process, "generic" off x86-64), else the same rule applied here."""
    if native_available("cpu") and hasattr(torch.ops.cola_fast, "cpu_isa"):
        return torch.ops.cola_fast.cpu_isa()
    return capped_isa(host_cpu_isa(), cpu_isa_cap())


def cap_onednn() -> None:
    """Give oneDNN the same cap as our kernels: ONEDNN_MAX_CPU_ISA (oneDNN's documented switch,
    read when it first runs) from $COLA_FAST_CPU_ISA, unless the user set ONEDNN_MAX_CPU_ISA."""
    cap = os.environ.get("COLA_FAST_CPU_ISA", "").strip().lower()  # a bad value is refused by cpu_isa()
    if cap in _ONEDNN_CAP and "ONEDNN_MAX_CPU_ISA" not in os.environ:
        os.environ["ONEDNN_MAX_CPU_ISA"] = _ONEDNN_CAP[cap]


def onednn_isa() -> str:
    """oneDNN's cap as the user or cap_onednn() set it ("" when oneDNN may use all the CPU has)."""
    return os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper()


@functools.lru_cache(maxsize=None)  # once: the probe runs two convolutions; auto's candidates must not change
def gemm_libraries() -> dict[str, str]:
    """The GEMM libraries of the native CPU conv ("blas", "onednn") with why each is missing
    ("" when it runs here). Decided once, by a probe: the native op runs a small float32
    convolution through the library and must give BLAS's result; an error or a different
    result means the library is not offered on this CPU (auto never meets it)."""
    if not native_has_kernel("temporal_conv_embed", "cpu"):
        why = "the native CPU kernels are not built"
        return {"blas": why, "onednn": why}
    if os.environ.get("COLA_FAST_ONEDNN", "1") == "0":
        return {"blas": "", "onednn": "turned off by COLA_FAST_ONEDNN=0"}
    if not torch.backends.mkldnn.is_available():
        return {"blas": "", "onednn": "this torch was built without oneDNN"}
    return {"blas": "", "onednn": _probe_onednn_gemm()}


def _probe_onednn_gemm() -> str:
    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(2, 8, 16, generator=g), torch.randn(8, 16, 3, generator=g)
    op = torch.ops.cola_fast.temporal_conv_embed.default
    try:
        with torch.no_grad():
            got, want = op(x, w, None, 1), op(x, w, None, 0)
    except RuntimeError as e:
        return f"its probe failed on this CPU: {str(e).splitlines()[0]}"
    if not torch.allclose(got, want, rtol=1e-4, atol=1e-4):
        return "its probe gave a result different from BLAS's on this CPU"
    return ""


def auto_candidates(op: str, device: torch.device) -> list[str]:
    """The backends "auto" may choose from for op on device: the reference, the native kernel
    when the extension has one for the device, and Triton on CUDA (on a CPU Triton runs only
    under its interpreter, for tests)."""
    names = ["reference"]
    if native_has_kernel(op, device.type):
        names.append("native")
    if device.type == "cuda" and triton_available(device):
        names.append("triton")
    return names


def describe() -> dict:
    """What is available, for logs and `python -m cola_fast.info`."""
    ok, has_cuda, why = _native_status()
    tok, twhy = _triton_status()
    return {
        "native": ok,
        "native_cuda": bool(has_cuda),
        "native_error": why,
        "native_built_with": build_record(),
        "triton": tok,
        "triton_error": twhy,
        "triton_interpreter": triton_interpreting(),
        "cuda_available": torch.cuda.is_available(),
        "mining_cpu_isa": torch.ops.cola_fast.mining_cpu_isa() if ok and hasattr(torch.ops.cola_fast, "mining_cpu_isa") else None,
        "onednn": torch.backends.mkldnn.is_available(),
        "cpu_isa": cpu_isa(),
        "cpu_isa_host": host_cpu_isa(),
        "onednn_max_cpu_isa": onednn_isa() or None,
        "gemm_libraries": {k: why or "available" for k, why in gemm_libraries().items()},
        "auto_decisions": _autotune_decisions(),
    }


def _autotune_decisions() -> list:
    from . import _autotune
    return _autotune.decisions()
