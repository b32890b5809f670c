"""The public functional API of the fused ops.

Each op takes backend= "auto" | "reference" | "native" | "triton" (default: the
environment variable COLA_FAST_BACKEND, else "auto"); see cola_fast.ops._backend. "auto"
chooses by measurement, per shape class, among the implementations that match the reference
(cola_fast.ops._autotune; `describe()` lists the choices made so far).
"""
from ._backend import BACKENDS, BackendUnavailable, _native_status, cap_onednn, cpu_isa, describe, gemm_libraries, resolve

cap_onednn()  # before anything runs oneDNN: $COLA_FAST_CPU_ISA caps oneDNN too
from .classifier import classifier_1x1
from .conv_embed import temporal_conv_embed
from .dropout import dropout
from .mining import mine_snippets, mining_cpu_isa
from .snico import snico_loss

# Load cola_fast._C now: one loud NativeExtensionWarning at import when it cannot be used,
# rather than a silent fall-back to the reference ops at the first call.
_native_status()
# Which GEMM libraries the native CPU conv may use here: a probe now, so that auto's candidates are
# what this CPU can run (never an error met while tuning). `python -m cola_fast.info` says why one is missing.
gemm_libraries()

__all__ = ["BACKENDS", "BackendUnavailable", "classifier_1x1", "cpu_isa", "describe", "gemm_libraries", "resolve",
           "dropout", "mine_snippets", "mining_cpu_isa", "snico_loss", "temporal_conv_embed"]
