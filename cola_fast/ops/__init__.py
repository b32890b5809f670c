"""The public functional API of the fused ops.

Each op takes backend= "auto" | "reference" | "native" | "triton" (default: the
environment variable COLA_FAST_BACKEND, else "auto"); see cola_fast.ops._backend.
"""
from ._backend import BACKENDS, BackendUnavailable, _native_status, describe, resolve
from .conv_embed import temporal_conv_embed
from .dropout import dropout
from .mining import mine_snippets, mining_cpu_isa
from .snico import snico_loss

# Load cola_fast._C now: one loud NativeExtensionWarning at import when it cannot be used,
# rather than a silent fall-back to the reference ops at the first call.
_native_status()

__all__ = ["BACKENDS", "BackendUnavailable", "describe", "resolve",
           "dropout", "mine_snippets", "mining_cpu_isa", "snico_loss", "temporal_conv_embed"]
