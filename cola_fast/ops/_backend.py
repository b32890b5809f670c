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


@functools.lru_cache(maxsize=None)
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


@functools.lru_cache(maxsize=None)
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


_RESOLVED: dict = {}

# os.environ.get runs several Python-level calls per lookup (key encoding, mapping protocol);
# on POSIX its backing dict (bytes keys, kept in step by os.environ's setters) answers the
# same in one C-level lookup. Falls back to os.environ where that dict is not there.
_ENV_DATA = getattr(os.environ, "_data", None) if os.name == "posix" else None


def default_backend() -> str:
    """$COLA_FAST_BACKEND, read at every call (a test or a user may change it at run time), else "auto"."""
    if type(_ENV_DATA) is dict:
        v = _ENV_DATA.get(b"COLA_FAST_BACKEND")
        return os.fsdecode(v) if v is not None else "auto"
    return os.environ.get("COLA_FAST_BACKEND", "auto")


@torch.compiler.assume_constant_result  # a Python-level choice: torch.compile treats it as a constant
def resolve(backend: str | None, device: torch.device | str, op: str) -> str:
    """"auto", or the forced backend ("reference", "native" or "triton") for op on device after
    checking that it is there. "auto" is then chosen per shape class by the op (_autotune).
    Remembered per (backend, device type, op, interpreter setting): asking the dispatcher costs
    microseconds, and the ops are called every step."""
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
        "auto_decisions": _autotune_decisions(),
    }


def _autotune_decisions() -> list:
    from . import _autotune
    return _autotune.decisions()
